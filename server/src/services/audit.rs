//! The tamper-evident audit trail.
//!
//! `audit_events` is append-only. Each row carries `seq` (1, 2, 3, … with no
//! gaps), `prev_hash` (the previous row's `hash`, 64 zeros for the first)
//! and `hash` = HMAC-SHA256 under the audit key over a canonical encoding
//! (a JSON array in a fixed field order, prefixed with the tag
//! `mado-audit-v2`) of the row and `prev_hash`: without the key nobody can
//! rewrite a row and recompute the chain. (Rows written before the chain
//! was keyed carry `hash` = plain SHA-256 under the tag `mado-audit-v1`;
//! [`verify`] accepts them only as a prefix of the chain, before the first
//! keyed row, and the signed head below anchors them too.)
//! Inserts are serialised (a process-wide mutex, plus a transaction-scoped
//! advisory lock on PostgreSQL) so the chain stays linear under concurrent
//! requests. Every `checkpoint_every` events the chain head is signed with
//! HMAC-SHA256 under the audit key into `audit_checkpoints`.
//!
//! The signed head: after every committed batch the writer appends one
//! line `seq hash checkpoint_seq mac` (HMAC-SHA256 under the audit key) to
//! an append-only file on the server's own disk (`[audit] head_file`,
//! fdatasync'd before the batch is answered). A database user can delete
//! the newest rows or every checkpoint, but cannot rewrite that file, so
//! [`verify_with_head`] detects a truncated tail (the head names a row that
//! is gone or different) and deleted checkpoints (the head names the last
//! one). Threat model and limits: ARCHITECTURE.md.
//!
//! [`verify`] walks the chain and names the first edited, deleted or
//! reordered row.
//!
//! Rows hold no PHI: actors are user ids/usernames, gateway names or share
//! link ids; studies are named by their (pseudonymous) Study Instance UID.

use crate::db::entities::{audit_checkpoints, audit_events};
use actix_web::HttpRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Tag of the legacy, unkeyed row hash (SHA-256).
const HASH_TAG_V1: &[u8] = b"mado-audit-v1\n";
/// Tag of the keyed row hash (HMAC-SHA256 under the audit key).
const HASH_TAG_V2: &[u8] = b"mado-audit-v2\n";
/// Advisory lock key serialising audit inserts on PostgreSQL.
const PG_LOCK_KEY: i64 = 0x6d61_646f_6175_6474;

fn is_transient(e: &DbErr) -> bool {
    if matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        return true;
    }
    let msg = e.to_string().to_ascii_lowercase();
    msg.contains("database is locked") || msg.contains("deadlock detected")
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database: {0}")]
    Db(#[from] DbErr),
    /// The batch this event was part of could not be written.
    #[error("audit batch not written: {0}")]
    Batch(String),
    #[error("audit writer stopped before answering")]
    Dropped,
    /// The signed head file could not be written or read.
    #[error("audit head file: {0}")]
    Head(String),
}

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Refused by policy (or unknown resource).
    Denied,
    /// Failed for another reason (bad credentials, bad passcode…).
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// Request facts recorded with each event.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub client_addr: String,
    pub user_agent: String,
    pub request_id: String,
}

impl RequestFacts {
    /// From the request: the peer address (not a client-controlled
    /// forwarding header), the user agent and the request id.
    pub fn from_request(req: &HttpRequest) -> Self {
        Self {
            client_addr: req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            request_id: crate::request_id::current().unwrap_or_default(),
        }
    }
}

/// One event to append.
#[derive(Debug, Clone)]
pub struct Event {
    /// `user`, `gateway`, `share`, `api`, `anonymous` or `system`.
    pub actor_kind: &'static str,
    /// e.g. `42:alice`, `site-a`, `share:7`.
    pub actor: String,
    pub org_id: Option<i64>,
    pub study_uid: Option<String>,
    /// e.g. `login`, `study.view`, `share.create`.
    pub action: String,
    pub outcome: Outcome,
    pub request: RequestFacts,
    /// Short free text without PHI or secrets.
    pub detail: String,
}

impl Event {
    pub fn new(actor_kind: &'static str, actor: impl Into<String>, action: &str) -> Self {
        Self {
            actor_kind,
            actor: actor.into(),
            org_id: None,
            study_uid: None,
            action: action.to_owned(),
            outcome: Outcome::Success,
            request: RequestFacts::default(),
            detail: String::new(),
        }
    }
    pub fn org(mut self, org: Option<i64>) -> Self {
        self.org_id = org;
        self
    }
    pub fn study(mut self, study: Option<&str>) -> Self {
        self.study_uid = study.map(str::to_owned);
        self
    }
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
    pub fn request(mut self, req: &HttpRequest) -> Self {
        self.request = RequestFacts::from_request(req);
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// The writer: group commit of concurrent appends, the serialisation lock
/// and the checkpoint key.
///
/// Group commit: [`AuditLog::record`] queues its event, then takes the
/// writer lock. Whoever holds the lock drains the whole queue and appends
/// every queued event in one transaction (one commit, one fsync), then
/// answers each waiter with its `seq` or with the error. A waiter whose
/// event was written by an earlier holder finds its answer when it gets
/// the lock; no `record` returns before its row is committed, and if the
/// transaction fails every request of the batch fails (fail closed). The
/// batch is written by a spawned task that owns the lock guard, so a
/// cancelled request cannot leave the others of its batch unanswered.
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    lock: Arc<tokio::sync::Mutex<()>>,
    queue: std::sync::Mutex<Vec<Pending>>,
    /// `(pool, seq, hash)`: the last row this writer appended to the
    /// database of connection pool `pool`, so that the next batch needs no
    /// read of the head. Taken by each append and put back only after a
    /// commit; a row written meanwhile by another process makes it stale,
    /// the insert then fails on the `seq` key and the retry reads the head.
    /// (The entry holds a handle of that pool, so no other pool can take
    /// its address while it is cached.)
    head: std::sync::Mutex<Option<(usize, DatabaseConnection, Head)>>,
    key: Vec<u8>,
    checkpoint_every: i64,
    /// The append-only signed head file (`[audit] head_file`).
    head_file: Option<std::path::PathBuf>,
}

/// The chain head as the writer knows it: last row and last checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    /// `seq` of the newest signed checkpoint (0: none yet).
    pub checkpoint_seq: i64,
}

/// One queued append. `db_key` names the caller's database (its connection
/// pool, see [`pool_identity`]); events are batched per key and written
/// through the entry's own connection handle.
struct Pending {
    db_key: usize,
    db: DatabaseConnection,
    event: Event,
    answer: tokio::sync::oneshot::Sender<Result<i64, AuditError>>,
}

/// Largest number of events appended in one transaction.
const MAX_BATCH: usize = 256;

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn clip(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// The canonical, hashed form of a row (fixed field order).
#[derive(Serialize)]
struct Canonical<'a>(
    i64,
    &'a str,
    &'a str,
    &'a str,
    Option<i64>,
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

fn canonical(r: &audit_events::Model) -> Vec<u8> {
    let c = Canonical(
        r.seq,
        &r.at,
        &r.actor_kind,
        &r.actor,
        r.org_id,
        r.study_uid.as_deref(),
        &r.action,
        &r.outcome,
        &r.client_addr,
        &r.user_agent,
        &r.request_id,
        &r.detail,
        &r.prev_hash,
    );
    // Serialising a tuple of strings and integers cannot fail.
    serde_json::to_vec(&c).unwrap_or_default()
}

/// HMAC-SHA256 (hex) under the audit `key` of a row's canonical encoding.
pub fn row_hash(key: &[u8], r: &audit_events::Model) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(HASH_TAG_V2);
            mac.update(&canonical(r));
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The legacy unkeyed hash (SHA-256) of rows written before the chain was
/// keyed.
pub fn legacy_row_hash(r: &audit_events::Model) -> String {
    let mut h = Sha256::new();
    h.update(HASH_TAG_V1);
    h.update(canonical(r));
    hex::encode(h.finalize())
}

fn sign(key: &[u8], seq: i64, hash: &str, at: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(format!("mado-audit-checkpoint-v1|{seq}|{hash}|{at}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl AuditLog {
    pub fn new(key: &str, checkpoint_every: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                queue: std::sync::Mutex::new(Vec::new()),
                head: std::sync::Mutex::new(None),
                key: key.as_bytes().to_vec(),
                checkpoint_every: i64::from(checkpoint_every.max(1)),
                head_file: None,
            }),
        }
    }

    /// Append the signed head to `path` after every committed batch.
    #[must_use]
    pub fn with_head_file(self, path: std::path::PathBuf) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.head_file = Some(path);
                Self {
                    inner: Arc::new(inner),
                }
            }
            // Not shared yet when built; keep it unchanged otherwise.
            Err(inner) => Self { inner },
        }
    }

    /// [`verify_with_head`] with this writer's key and head file.
    pub async fn verify(&self, db: &DatabaseConnection) -> Result<VerifyReport, AuditError> {
        verify_with_head(db, &self.inner.key, self.inner.head_file.as_deref()).await
    }

    /// Append `ev`; returns its `seq` once the row is committed. The
    /// caller fails the request if this fails (fail closed).
    ///
    /// Concurrent calls are group-committed (see [`AuditLog`]). `seq` is
    /// the primary key, so two writers that raced for the same position
    /// (another process) cannot both succeed (the chain never forks); the
    /// loser retries.
    pub async fn record(&self, db: &DatabaseConnection, ev: Event) -> Result<i64, AuditError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let pending = Pending {
            db_key: pool_identity(db),
            db: db.clone(),
            event: ev,
            answer: tx,
        };
        match self.inner.queue.lock() {
            Ok(mut q) => q.push(pending),
            Err(_) => return Err(AuditError::Batch("audit queue poisoned".into())),
        }
        let guard = self.inner.lock.clone().lock_owned().await;
        // Answered while we waited: an earlier lock holder wrote our event
        // (holders answer every event they took before releasing the lock).
        match rx.try_recv() {
            Ok(answer) => return answer,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return Err(AuditError::Dropped)
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let batch = match self.inner.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return Err(AuditError::Batch("audit queue poisoned".into())),
        };
        let inner = self.inner.clone();
        let writer = tokio::spawn(async move {
            let _guard = guard;
            inner.write_batch(batch).await;
        });
        // A panic in the writer drops the senders: `rx` then reports it.
        let _ = writer.await;
        rx.await.unwrap_or(Err(AuditError::Dropped))
    }
}

impl Inner {
    /// Append every event of `batch` (grouped by connection, in order, at
    /// most [`MAX_BATCH`] per transaction) and answer each one.
    async fn write_batch(&self, batch: Vec<Pending>) {
        // A cancelled request needs no row: nothing was served for it.
        let mut rest: Vec<Pending> = batch
            .into_iter()
            .filter(|p| !p.answer.is_closed())
            .collect();
        while !rest.is_empty() {
            let key = rest[0].db_key;
            let (mut group, others): (Vec<Pending>, Vec<Pending>) =
                rest.into_iter().partition(|p| p.db_key == key);
            rest = others;
            while !group.is_empty() {
                let chunk: Vec<Pending> = group.drain(..group.len().min(MAX_BATCH)).collect();
                let db = chunk[0].db.clone();
                let events: Vec<&Event> = chunk.iter().map(|p| &p.event).collect();
                let result = self.append_with_retry(&db, &events).await;
                match result {
                    Ok(first) => {
                        for (i, p) in chunk.into_iter().enumerate() {
                            let _ = p.answer.send(Ok(first + i as i64));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        tracing::error!(error = %msg, events = chunk.len(), "audit batch not written");
                        for p in chunk {
                            let _ = p.answer.send(Err(AuditError::Batch(msg.clone())));
                        }
                    }
                }
            }
        }
    }

    async fn append_with_retry(
        &self,
        db: &DatabaseConnection,
        events: &[&Event],
    ) -> Result<i64, AuditError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.append(db, events).await {
                Err(AuditError::Db(e)) if attempt < 6 && is_transient(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5u64 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Append `events` in one transaction; returns the first `seq`.
    async fn append(&self, db: &DatabaseConnection, events: &[&Event]) -> Result<i64, AuditError> {
        let pool = pool_identity(db);
        let cached = self
            .head
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .filter(|(p, _, _)| *p == pool)
            .map(|(_, _, head)| head);
        let result = if db.get_database_backend() == DbBackend::Postgres {
            let txn = db.begin().await?;
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PG_LOCK_KEY})"))
                .await?;
            let head = match cached {
                Some(h) => h,
                None => head(&txn).await?,
            };
            let appended = self.append_on(&txn, head, events).await?;
            txn.commit().await?;
            appended
        } else {
            // SQLite: no read-then-write transaction (a deferred transaction
            // that reads first cannot upgrade a stale snapshot to a writer).
            // The batch is one multi-row INSERT, atomic on its own; a head
            // made stale by another process fails on the `seq` key and is
            // retried.
            let head = match cached {
                Some(h) => h,
                None => head(db).await?,
            };
            self.append_on(db, head, events).await?
        };
        let (first, head) = result;
        if let Ok(mut h) = self.head.lock() {
            *h = Some((pool, db.clone(), head.clone()));
        }
        // Committed: anchor it outside the database before anyone is
        // answered (an error here fails the batch's requests, not retried).
        self.write_head(&head).await?;
        Ok(first)
    }

    /// Append the signed `head` to the head file (if configured), fsynced.
    async fn write_head(&self, head: &Head) -> Result<(), AuditError> {
        let Some(path) = self.head_file.clone() else {
            return Ok(());
        };
        let line = head_line(&self.key, head);
        tokio::task::spawn_blocking(move || append_line(&path, &line))
            .await
            .map_err(|e| AuditError::Head(e.to_string()))?
            .map_err(|e| AuditError::Head(e.to_string()))
    }

    async fn append_on<C: ConnectionTrait>(
        &self,
        c: &C,
        head: Head,
        events: &[&Event],
    ) -> Result<(i64, Head), AuditError> {
        let Head {
            seq: last_seq,
            hash: mut prev_hash,
            checkpoint_seq: mut last_checkpoint,
        } = head;
        let first = last_seq + 1;
        let mut rows = Vec::with_capacity(events.len());
        let mut checkpoints = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let seq = first + i as i64;
            let mut row = audit_events::Model {
                seq,
                at: timestamp(Utc::now()),
                actor_kind: ev.actor_kind.to_owned(),
                actor: clip(&ev.actor, 160),
                org_id: ev.org_id,
                study_uid: ev.study_uid.as_deref().map(|s| clip(s, 64)),
                action: clip(&ev.action, 64),
                outcome: ev.outcome.as_str().to_owned(),
                client_addr: clip(&ev.request.client_addr, 64),
                user_agent: clip(&ev.request.user_agent, 256),
                request_id: clip(&ev.request.request_id, 64),
                detail: clip(&ev.detail, 256),
                prev_hash: std::mem::take(&mut prev_hash),
                hash: String::new(),
            };
            row.hash = row_hash(&self.key, &row);
            prev_hash.clone_from(&row.hash);
            if seq % self.checkpoint_every == 0 {
                checkpoints.push((seq, row.hash.clone()));
            }
            rows.push(audit_events::ActiveModel::from(row));
        }
        audit_events::Entity::insert_many(rows)
            .exec_without_returning(c)
            .await?;
        for (seq, hash) in checkpoints {
            self.checkpoint_in(c, seq, &hash).await?;
            last_checkpoint = seq;
        }
        Ok((
            first,
            Head {
                seq: last_seq + events.len() as i64,
                hash: prev_hash,
                checkpoint_seq: last_checkpoint,
            },
        ))
    }

    async fn checkpoint_in<C: ConnectionTrait>(
        &self,
        db: &C,
        seq: i64,
        hash: &str,
    ) -> Result<(), AuditError> {
        let at = timestamp(Utc::now());
        let signature = sign(&self.key, seq, hash, &at);
        audit_checkpoints::Entity::insert(audit_checkpoints::ActiveModel {
            seq: Set(seq),
            hash: Set(hash.to_owned()),
            at: Set(at),
            signature: Set(signature),
            ..Default::default()
        })
        .exec_without_returning(db)
        .await?;
        Ok(())
    }
}

/// A stable identity of the database behind `db`: the address of its
/// connection pool's shared state (the same for every clone of the
/// connection, different for another database).
fn pool_identity(db: &DatabaseConnection) -> usize {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            std::ptr::from_ref(db.get_postgres_connection_pool().options()) as usize
        }
        DbBackend::Sqlite => std::ptr::from_ref(db.get_sqlite_connection_pool().options()) as usize,
        _ => std::ptr::from_ref(db) as usize,
    }
}

/// The last row and checkpoint; `(0, GENESIS, 0)` for an empty trail.
async fn head<C: ConnectionTrait>(c: &C) -> Result<Head, AuditError> {
    let last = audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Seq)
        .limit(1)
        .one(c)
        .await?;
    let checkpoint_seq = audit_checkpoints::Entity::find()
        .order_by_desc(audit_checkpoints::Column::Seq)
        .limit(1)
        .one(c)
        .await?
        .map_or(0, |cp| cp.seq);
    Ok(match last {
        Some(l) => Head {
            seq: l.seq,
            hash: l.hash,
            checkpoint_seq,
        },
        None => Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            checkpoint_seq,
        },
    })
}

/// One line of the head file: `seq hash checkpoint_seq mac\n`.
pub fn head_line(key: &[u8], head: &Head) -> String {
    let body = format!("{} {} {}", head.seq, head.hash, head.checkpoint_seq);
    format!("{body} {}\n", head_mac(key, &body))
}

fn head_mac(key: &[u8], body: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(b"mado-audit-head-v1|");
            mac.update(body.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Append `line` to `path` (created with its directory), then fdatasync.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write: concurrent appenders (server, CLI) never interleave a line.
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Largest tail of the head file read by [`read_head`].
const HEAD_TAIL_BYTES: u64 = 64 * 1024;

/// The newest signed head in the file at `path` (the highest `seq` among
/// the lines of its tail). `Ok(None)` when the file does not exist; an
/// error naming the problem when a line's signature is wrong. A last line
/// without its newline (a write cut short) is ignored.
pub fn read_head(key: &[u8], path: &std::path::Path) -> Result<Option<Head>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let len = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let start = len.saturating_sub(HEAD_TAIL_BYTES);
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.take(HEAD_TAIL_BYTES).read_to_end(&mut buf))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The piece after the last newline is incomplete (or empty).
    lines.pop();
    if start > 0 && !lines.is_empty() {
        // The first piece may be cut in the middle.
        lines.remove(0);
    }
    let mut best: Option<Head> = None;
    for line in lines.into_iter().filter(|l| !l.trim().is_empty()) {
        let bad = || format!("head file {}: a line has a bad signature", path.display());
        let (body, mac) = line.rsplit_once(' ').ok_or_else(bad)?;
        if !crate::services::auth::ct_eq(&head_mac(key, body), mac) {
            return Err(bad());
        }
        let mut parts = body.split(' ');
        let (Some(seq), Some(hash), Some(cp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let head = Head {
            seq: seq.parse().map_err(|_| bad())?,
            hash: hash.to_owned(),
            checkpoint_seq: cp.parse().map_err(|_| bad())?,
        };
        if best.as_ref().is_none_or(|b| head.seq >= b.seq) {
            best = Some(head);
        }
    }
    Ok(best)
}

impl AuditLog {
    /// Sign the current chain head now (e.g. at shutdown or from the CLI).
    pub async fn checkpoint(&self, db: &DatabaseConnection) -> Result<Option<i64>, AuditError> {
        let _guard = self.inner.lock.lock().await;
        let Some(last) = audit_events::Entity::find()
            .order_by_desc(audit_events::Column::Seq)
            .limit(1)
            .one(db)
            .await?
        else {
            return Ok(None);
        };
        self.inner.checkpoint_in(db, last.seq, &last.hash).await?;
        self.inner
            .write_head(&Head {
                seq: last.seq,
                hash: last.hash,
                checkpoint_seq: last.seq,
            })
            .await?;
        Ok(Some(last.seq))
    }

    pub fn key(&self) -> &[u8] {
        &self.inner.key
    }
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub rows: u64,
    pub checkpoints: u64,
    /// The first problem found, naming the row.
    pub problem: Option<String>,
}

/// Checks rows one at a time, in `seq` order: consecutive `seq` from 1,
/// each linked to the previous one, each hash the keyed hash of its row
/// (legacy unkeyed hashes only before the first keyed row).
#[derive(Debug, Clone)]
pub struct ChainChecker<'k> {
    key: &'k [u8],
    expected_seq: i64,
    prev: String,
    keyed_seen: bool,
}

impl<'k> ChainChecker<'k> {
    pub fn new(key: &'k [u8]) -> Self {
        Self {
            key,
            expected_seq: 1,
            prev: GENESIS.to_owned(),
            keyed_seen: false,
        }
    }

    /// `seq` of the last row accepted (0 before any).
    pub fn head_seq(&self) -> i64 {
        self.expected_seq - 1
    }

    /// Check the next row; the problem, naming the row, if it is wrong.
    pub fn push(&mut self, r: &audit_events::Model) -> Result<(), String> {
        let expected_seq = self.expected_seq;
        if r.seq != expected_seq {
            return Err(if r.seq > expected_seq {
                format!(
                    "row seq={expected_seq} is missing (deleted); next row is seq={}",
                    r.seq
                )
            } else {
                format!(
                    "row seq={} is out of order (expected seq={expected_seq})",
                    r.seq
                )
            });
        }
        if r.prev_hash != self.prev {
            return Err(format!(
                "row seq={} does not link to the previous row (deleted, inserted or reordered)",
                r.seq
            ));
        }
        let keyed = crate::services::auth::ct_eq(&row_hash(self.key, r), &r.hash);
        let legacy = !keyed && !self.keyed_seen && legacy_row_hash(r) == r.hash;
        if !keyed && !legacy {
            return Err(format!("row seq={} was edited (hash mismatch)", r.seq));
        }
        self.keyed_seen |= keyed;
        self.prev.clone_from(&r.hash);
        self.expected_seq += 1;
        Ok(())
    }
}

/// Walk the whole chain and the checkpoints (no head file: a deleted tail
/// or deleted checkpoints go unnoticed; see [`verify_with_head`]).
pub async fn verify(db: &DatabaseConnection, key: &[u8]) -> Result<VerifyReport, AuditError> {
    verify_with_head(db, key, None).await
}

/// Walk the whole chain and the checkpoints, and compare the database with
/// the signed head file `head_file`: the row it names must exist with the
/// same hash, and so must the checkpoint it names. A missing head file is a
/// problem once the trail has rows.
pub async fn verify_with_head(
    db: &DatabaseConnection,
    key: &[u8],
    head_file: Option<&std::path::Path>,
) -> Result<VerifyReport, AuditError> {
    const PAGE: u64 = 1000;
    let mut checker = ChainChecker::new(key);
    let mut rows = 0u64;
    let mut problem = None;
    let mut pages = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .paginate(db, PAGE);
    'outer: while let Some(batch) = pages.fetch_and_next().await? {
        for r in batch {
            rows += 1;
            if let Err(p) = checker.push(&r) {
                problem = Some(p);
                break 'outer;
            }
        }
    }
    let head = checker.head_seq();
    let cps = audit_checkpoints::Entity::find()
        .order_by_asc(audit_checkpoints::Column::Id)
        .all(db)
        .await?;
    let checkpoints = cps.len() as u64;
    if problem.is_none() {
        for cp in &cps {
            if !crate::services::auth::ct_eq(&sign(key, cp.seq, &cp.hash, &cp.at), &cp.signature) {
                problem = Some(format!(
                    "checkpoint {} (seq={}) has a bad signature",
                    cp.id, cp.seq
                ));
                break;
            }
            if cp.seq > head {
                problem = Some(format!(
                    "rows after seq={head} were deleted (signed checkpoint at seq={})",
                    cp.seq
                ));
                break;
            }
            let row = audit_events::Entity::find()
                .filter(audit_events::Column::Seq.eq(cp.seq))
                .one(db)
                .await?;
            if row.map(|r| r.hash) != Some(cp.hash.clone()) {
                problem = Some(format!(
                    "row seq={} does not match its signed checkpoint",
                    cp.seq
                ));
                break;
            }
        }
    }
    if let (None, Some(path)) = (&problem, head_file) {
        problem = match read_head(key, path) {
            Err(p) => Some(p),
            Ok(None) if rows > 0 => Some(format!(
                "head file {} is missing (the trail has {rows} rows)",
                path.display()
            )),
            Ok(None) => None,
            Ok(Some(signed)) => check_head(db, &signed, head, &cps).await?,
        };
    }
    Ok(VerifyReport {
        rows,
        checkpoints,
        problem,
    })
}

/// Compare the signed head with the database (whose verified chain ends
/// at `db_head`; other processes may have appended after it).
async fn check_head(
    db: &DatabaseConnection,
    signed: &Head,
    db_head: i64,
    cps: &[audit_checkpoints::Model],
) -> Result<Option<String>, AuditError> {
    if signed.seq > db_head {
        return Ok(Some(format!(
            "rows after seq={db_head} were deleted (the signed head file names seq={})",
            signed.seq
        )));
    }
    if signed.seq > 0 {
        let row = audit_events::Entity::find()
            .filter(audit_events::Column::Seq.eq(signed.seq))
            .one(db)
            .await?;
        if row.map(|r| r.hash) != Some(signed.hash.clone()) {
            return Ok(Some(format!(
                "row seq={} does not match the signed head file (chain rewritten)",
                signed.seq
            )));
        }
    }
    if signed.checkpoint_seq > 0 && !cps.iter().any(|c| c.seq == signed.checkpoint_seq) {
        return Ok(Some(format!(
            "the signed checkpoint at seq={} was deleted (named by the signed head file)",
            signed.checkpoint_seq
        )));
    }
    Ok(None)
}

/// Filters of [`query`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Matches the actor column exactly or its `id:` / `:username` part.
    pub user: Option<String>,
    pub study: Option<String>,
    pub limit: Option<u64>,
}

/// Events matching `f`, oldest first.
pub async fn query(
    db: &DatabaseConnection,
    f: &Filter,
) -> Result<Vec<audit_events::Model>, AuditError> {
    let mut q = audit_events::Entity::find().order_by_asc(audit_events::Column::Seq);
    if let Some(from) = f.from {
        q = q.filter(audit_events::Column::At.gte(timestamp(from)));
    }
    if let Some(to) = f.to {
        q = q.filter(audit_events::Column::At.lt(timestamp(to)));
    }
    if let Some(study) = &f.study {
        q = q.filter(audit_events::Column::StudyUid.eq(study.as_str()));
    }
    if let Some(user) = &f.user {
        q = q.filter(
            sea_orm::Condition::any()
                .add(audit_events::Column::Actor.eq(user.as_str()))
                .add(audit_events::Column::Actor.like(format!("%:{user}")))
                .add(audit_events::Column::Actor.like(format!("{user}:%"))),
        );
    }
    if let Some(limit) = f.limit {
        q = q.limit(limit);
    }
    Ok(q.all(db).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_field() {
        let mut r = audit_events::Model {
            seq: 1,
            at: "2025-01-01T00:00:00.000000Z".into(),
            actor_kind: "user".into(),
            actor: "1:alice".into(),
            org_id: Some(1),
            study_uid: Some("2.25.1".into()),
            action: "study.view".into(),
            outcome: "success".into(),
            client_addr: "127.0.0.1".into(),
            user_agent: "x".into(),
            request_id: "r".into(),
            detail: String::new(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        };
        let h = row_hash(b"k", &r);
        assert_ne!(h, row_hash(b"k2", &r), "keyed");
        assert_ne!(h, legacy_row_hash(&r));
        r.detail = "changed".into();
        assert_ne!(h, row_hash(b"k", &r));
        assert_eq!(h.len(), 64);
        assert_ne!(sign(b"k", 1, &h, "t"), sign(b"k2", 1, &h, "t"));
    }

    const KEY: &[u8] = b"property-test-audit-key";

    /// A chain of rows for `events` (actor, outcome index, detail) as the
    /// writer builds it.
    fn chain(events: &[(String, u8, String)]) -> Vec<audit_events::Model> {
        let mut prev = GENESIS.to_owned();
        events
            .iter()
            .enumerate()
            .map(|(i, (actor, outcome, detail))| {
                let mut r = audit_events::Model {
                    seq: i as i64 + 1,
                    at: format!("2026-01-01T00:00:{:02}.000000Z", i % 60),
                    actor_kind: "user".into(),
                    actor: actor.clone(),
                    org_id: Some(i64::from(*outcome)),
                    study_uid: (outcome % 2 == 0).then(|| format!("2.25.{i}")),
                    action: "study.view".into(),
                    outcome: ["success", "denied", "failure"][usize::from(outcome % 3)].into(),
                    client_addr: "127.0.0.1".into(),
                    user_agent: "ua".into(),
                    request_id: format!("r{i}"),
                    detail: detail.clone(),
                    prev_hash: std::mem::take(&mut prev),
                    hash: String::new(),
                };
                r.hash = row_hash(KEY, &r);
                prev.clone_from(&r.hash);
                r
            })
            .collect()
    }

    /// The first problem of `rows` against the signed head `head` (what
    /// `verify_with_head` checks, without a database).
    fn check(rows: &[audit_events::Model], head: Option<&Head>) -> Option<String> {
        let mut c = ChainChecker::new(KEY);
        for r in rows {
            if let Err(p) = c.push(r) {
                return Some(p);
            }
        }
        let h = head?;
        if h.seq > c.head_seq() {
            return Some("tail deleted".into());
        }
        let row = rows.iter().find(|r| r.seq == h.seq)?;
        (row.hash != h.hash).then(|| "head mismatch".into())
    }

    fn signed_head(rows: &[audit_events::Model]) -> Option<Head> {
        rows.last().map(|r| Head {
            seq: r.seq,
            hash: r.hash.clone(),
            checkpoint_seq: 0,
        })
    }

    fn events() -> impl proptest::strategy::Strategy<Value = Vec<(String, u8, String)>> {
        proptest::collection::vec(("[a-z0-9:]{0,12}", 0u8..6, "[ -~]{0,20}"), 1..40)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        #[test]
        fn any_appends_verify(ev in events()) {
            let rows = chain(&ev);
            let head = signed_head(&rows);
            proptest::prop_assert_eq!(check(&rows, head.as_ref()), None);
            // The head line round-trips through its signature.
            if let Some(h) = &head {
                let line = head_line(KEY, h);
                let dir = tempfile::tempdir().unwrap();
                let f = dir.path().join("head");
                append_line(&f, &line).unwrap();
                let read = read_head(KEY, &f).unwrap();
                proptest::prop_assert_eq!(read.as_ref(), Some(h));
                proptest::prop_assert!(read_head(b"another key", &f).is_err());
            }
        }

        #[test]
        fn any_mutation_is_detected(ev in events(), pick in 0usize..1000, field in 0usize..8, salt in "[a-z]{1,8}") {
            let rows = chain(&ev);
            let head = signed_head(&rows);
            let mut bad = rows.clone();
            let i = pick % bad.len();
            let r = &mut bad[i];
            match field {
                0 => r.actor.push_str(&salt),
                1 => r.detail.push_str(&salt),
                2 => r.outcome = if r.outcome == "success" { "denied".into() } else { "success".into() },
                3 => r.org_id = Some(r.org_id.unwrap_or(0) + 1),
                4 => r.study_uid = match &r.study_uid { Some(_) => None, None => Some("2.25.9".into()) },
                5 => r.at.push_str(&salt),
                6 => r.client_addr.push_str(&salt),
                _ => r.request_id.push_str(&salt),
            }
            // Even with the whole chain recomputed (unkeyed or under
            // another key) after the edit.
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
            let mut prev = if i == 0 { GENESIS.to_owned() } else { bad[i - 1].hash.clone() };
            for r in bad.iter_mut().skip(i) {
                r.prev_hash = prev.clone();
                r.hash = legacy_row_hash(r);
                prev.clone_from(&r.hash);
            }
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
            let mut prev = if i == 0 { GENESIS.to_owned() } else { bad[i - 1].hash.clone() };
            for r in bad.iter_mut().skip(i) {
                r.prev_hash = prev.clone();
                r.hash = row_hash(b"a guessed key", r);
                prev.clone_from(&r.hash);
            }
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
        }

        #[test]
        fn any_deletion_is_detected(ev in events(), pick in 0usize..1000) {
            let rows = chain(&ev);
            let head = signed_head(&rows);
            let mut bad = rows.clone();
            bad.remove(pick % rows.len());
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
        }

        #[test]
        fn any_reorder_is_detected(ev in events(), a in 0usize..1000, b in 0usize..1000) {
            let rows = chain(&ev);
            proptest::prop_assume!(rows.len() >= 2);
            let (a, b) = (a % rows.len(), b % rows.len());
            proptest::prop_assume!(a != b);
            let head = signed_head(&rows);
            // Swap the rows' contents, keeping the seq positions.
            let mut bad = rows.clone();
            bad.swap(a, b);
            let (sa, sb) = (bad[a].seq, bad[b].seq);
            bad[a].seq = sb;
            bad[b].seq = sa;
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
            // Or the rows reordered as they are.
            let mut bad = rows.clone();
            bad.swap(a, b);
            proptest::prop_assert!(check(&bad, head.as_ref()).is_some());
        }
    }
}

/// DICOM / FHIR encodings of audit events.
pub mod export {
    use super::audit_events::Model;
    use serde_json::{json, Value};

    /// `(EventID code, display, EventActionCode, EventTypeCode)` of an action.
    fn event_code(
        action: &str,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
    ) {
        match action {
            "login" => (
                "110114",
                "User Authentication",
                "E",
                Some(("110122", "Login")),
            ),
            "logout" | "logout.everywhere" => (
                "110114",
                "User Authentication",
                "E",
                Some(("110123", "Logout")),
            ),
            "study.search" => ("110112", "Query", "E", None),
            "study.download" => ("110106", "Export", "R", None),
            a if a.starts_with("share.") || a.starts_with("grant.") || a.starts_with("admin.") => {
                ("110110", "Patient Record", "U", None)
            }
            _ => ("110110", "Patient Record", "R", None),
        }
    }

    fn outcome_code(outcome: &str) -> &'static str {
        match outcome {
            "success" => "0",
            "denied" => "4",
            _ => "8",
        }
    }

    fn xml_escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c if c.is_control() => {}
                c => out.push(c),
            }
        }
        out
    }

    /// One DICOM audit message (PS3.15 A.5) per event, wrapped in an
    /// `<AuditMessages>` element.
    pub fn dicom_xml(rows: &[Model]) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AuditMessages>\n");
        for r in rows {
            let (code, display, action, ty) = event_code(&r.action);
            out.push_str("<AuditMessage>\n");
            out.push_str(&format!(
                "  <EventIdentification EventActionCode=\"{action}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">\n",
                xml_escape(&r.at),
                outcome_code(&r.outcome)
            ));
            out.push_str(&format!(
                "    <EventID csd-code=\"{code}\" codeSystemName=\"DCM\" originalText=\"{display}\"/>\n"
            ));
            if let Some((tc, td)) = ty {
                out.push_str(&format!(
                    "    <EventTypeCode csd-code=\"{tc}\" codeSystemName=\"DCM\" originalText=\"{td}\"/>\n"
                ));
            }
            out.push_str("  </EventIdentification>\n");
            out.push_str(&format!(
                "  <ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\" NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"/>\n",
                xml_escape(&format!("{}/{}", r.actor_kind, r.actor)),
                xml_escape(&r.client_addr)
            ));
            out.push_str("  <AuditSourceIdentification AuditSourceID=\"mado-server\"/>\n");
            if let Some(study) = &r.study_uid {
                out.push_str(&format!(
                    "  <ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\n    <ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/>\n  </ParticipantObjectIdentification>\n",
                    xml_escape(study)
                ));
            }
            out.push_str("</AuditMessage>\n");
        }
        out.push_str("</AuditMessages>\n");
        out
    }

    /// A FHIR R4 `Bundle` (type `collection`) of `AuditEvent` resources.
    pub fn fhir_bundle(rows: &[Model]) -> Value {
        let entries: Vec<Value> = rows
            .iter()
            .map(|r| {
                let (code, display, action, ty) = event_code(&r.action);
                let mut ev = json!({
                    "resourceType": "AuditEvent",
                    "id": format!("mado-audit-{}", r.seq),
                    "type": {
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": code,
                        "display": display
                    },
                    "action": action,
                    "recorded": r.at,
                    "outcome": outcome_code(&r.outcome),
                    "outcomeDesc": r.action,
                    "agent": [{
                        "who": { "display": format!("{}/{}", r.actor_kind, r.actor) },
                        "requestor": true,
                        "network": { "address": r.client_addr, "type": "2" }
                    }],
                    "source": { "observer": { "display": "mado-server" } }
                });
                if let Some((tc, td)) = ty {
                    ev["subtype"] = json!([{
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": tc,
                        "display": td
                    }]);
                }
                if let Some(study) = &r.study_uid {
                    ev["entity"] = json!([{
                        "what": { "identifier": {
                            "system": "urn:dicom:uid",
                            "value": format!("urn:oid:{study}")
                        }},
                        "type": {
                            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                            "code": "2",
                            "display": "System Object"
                        }
                    }]);
                }
                json!({ "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": ev })
            })
            .collect();
        json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": entries
        })
    }
}
