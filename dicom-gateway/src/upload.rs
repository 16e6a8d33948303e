//! The upload worker: spool/pending → de-identify → object store → register.
//!
//! A dispatcher owns the queue: it learns about new instances from the SCP
//! (channel), rescans `pending/` at start-up and periodically (so work left
//! by a crash or `kill -9` resumes), and runs at most `upload.concurrency`
//! instances at a time. Per instance: parse + de-identify + encode on rayon;
//! PUT to the store and POST the registration, each retried with capped
//! exponential backoff and jitter, forever (an unreachable store or server
//! leaves the file pending); then the spool file is deleted. A file that
//! cannot be parsed or de-identified goes to `quarantine/`; a registration
//! refused with a 4xx (other than 401/408/429) goes to `failed/`.

use crate::config::{ServerConfig, UploadConfig};
use crate::deid::{self, DeidOutcome, Deidentified, Pipeline};
use crate::spool::Spool;
use bytes::Bytes;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use mado_core::wire::{RegisterInstance, RegisterResponse, INGEST_PATH, WIRE_VERSION};
use mado_core::ObjectKey;
use mado_store::{DynStore, StoreConfig};
use rand::Rng;
use secrecy::ExposeSecret;
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Binary values larger than this are bulk data, left out of the metadata.
pub const BULK_THRESHOLD: usize = 1024;

/// An instance ready to upload: de-identified Part 10 bytes, their key and
/// the registration message. Built only from a [`Deidentified`].
#[derive(Debug)]
pub struct Prepared {
    pub key: ObjectKey,
    pub bytes: Bytes,
    pub sha256: String,
    pub register: RegisterInstance,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot read spool file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a readable DICOM file: {0}")]
    Parse(String),
    #[error("de-identification failed: {0}")]
    Deid(#[from] deid::DeidError),
    #[error("screening: {0}")]
    Quarantine(String),
    #[error("cannot record the originals in the vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
    #[error("cannot encode the de-identified instance: {0}")]
    Encode(String),
    #[error("internal error while processing the instance")]
    Panicked,
}

/// Marker next to a pending file released from quarantine by an operator: screening
/// is skipped, the rest of the de-identification applies.
pub fn released_marker(path: &Path) -> std::path::PathBuf {
    path.with_extension("released")
}

/// Read a spool file, de-identify it, record the originals in the vault and build the
/// upload. CPU-bound.
pub fn prepare_file(path: &Path, deid: &Pipeline) -> Result<Prepared, PrepareError> {
    let raw = std::fs::read(path)?;
    // nesting, declared lengths and inflated size checked before the
    // recursive parse (an instance spooled before these checks existed, or
    // a file put into pending/ by hand, cannot abort the process)
    crate::guard::check_part10(&raw).map_err(|e| PrepareError::Parse(e.to_string()))?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(raw.as_slice())
        .map_err(|e| PrepareError::Parse(e.to_string()))?;
    drop(raw);
    let released = released_marker(path).is_file();
    match deid::deidentify(obj, &deid.engine, released)? {
        DeidOutcome::Quarantine(reason) => Err(PrepareError::Quarantine(reason)),
        DeidOutcome::Deidentified(d) => {
            if let Some(v) = &deid.vault {
                v.record(d.report())?;
            }
            prepare(*d)
        }
    }
}

/// Encode a de-identified instance and build its registration.
pub fn prepare(d: Deidentified) -> Result<Prepared, PrepareError> {
    let key = ObjectKey::instance(d.study(), d.series(), d.sop_instance());
    let mut bytes = Vec::new();
    d.object()
        .write_all(&mut bytes)
        .map_err(|e| PrepareError::Encode(e.to_string()))?;
    let sha256 = mado_store::sha256_hex(&bytes);
    let (study, series, sop) = (
        d.study().clone(),
        d.series().clone(),
        d.sop_instance().clone(),
    );
    let (sop_class, ts) = (d.sop_class().clone(), d.transfer_syntax().clone());
    let mut dataset: InMemDicomObject = d.into_object().into_inner();
    strip_bulk(&mut dataset, 0);
    let metadata =
        dicom_json::to_value(&dataset).map_err(|e| PrepareError::Encode(e.to_string()))?;
    let register = RegisterInstance {
        version: WIRE_VERSION,
        object_key: key.as_str().to_string(),
        size: bytes.len() as u64,
        sha256: sha256.clone(),
        study_uid: study,
        series_uid: series,
        sop_instance_uid: sop,
        sop_class_uid: sop_class,
        transfer_syntax_uid: ts,
        metadata,
    };
    Ok(Prepared {
        key,
        bytes: Bytes::from(bytes),
        sha256,
        register,
    })
}

const PIXEL_TAGS: &[Tag] = &[
    tags::PIXEL_DATA,
    tags::FLOAT_PIXEL_DATA,
    tags::DOUBLE_FLOAT_PIXEL_DATA,
];

fn is_bulk(e: &dicom_object::mem::InMemElement) -> bool {
    if PIXEL_TAGS.contains(&e.tag()) {
        return true;
    }
    match e.value() {
        Value::PixelSequence(_) => true,
        Value::Primitive(v) => {
            matches!(
                e.vr(),
                VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
            ) && v.calculate_byte_len() > BULK_THRESHOLD
        }
        Value::Sequence(_) => false,
    }
}

/// Remove bulk data at every depth (the metadata goes to the server's index).
fn strip_bulk(obj: &mut InMemDicomObject, depth: usize) {
    obj.retain(|e| !is_bulk(e));
    if depth >= 64 {
        return;
    }
    let seqs: Vec<Tag> = obj
        .iter()
        .filter(|e| e.vr() == VR::SQ)
        .map(|e| e.tag())
        .collect();
    for tag in seqs {
        obj.update_value(tag, |v| {
            if let Some(items) = v.items_mut() {
                for item in items.iter_mut() {
                    strip_bulk(item, depth + 1);
                }
            }
        });
    }
}

/// Lower the calling thread's priority to `nice` (Linux: niceness is per
/// thread). Raising niceness needs no privilege; failure only logs.
pub fn lower_thread_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), i32::from(nice)) {
            debug!(error = %e, "cannot lower upload thread priority");
        }
    }
}

/// Niceness of the de-identification pool, set once by [`background_runtime`].
static DEID_NICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The rayon pool for de-identification: as many threads as cores, at the
/// upload niceness, so that CPU work after the acknowledgement never slows
/// the receive path down.
fn deid_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let nice = DEID_NICE.load(std::sync::atomic::Ordering::Relaxed);
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("mado-deid-{i}"))
            // the structure guard caps nesting before any recursive parse;
            // a roomy stack is the second line (a stack overflow is not a
            // panic: catch_unwind cannot stop it from aborting the process)
            .stack_size(16 * 1024 * 1024)
            .start_handler(move |_| lower_thread_priority(nice))
            .build()
            .unwrap_or_else(|_| {
                // cannot spawn threads: fall back to one without priority change
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("a one-thread rayon pool")
            })
    })
}

/// The runtime the upload worker runs on: its own threads (workers and
/// blocking pool) at `nice`, apart from the SCP's runtime.
pub fn background_runtime(nice: u8) -> std::io::Result<tokio::runtime::Runtime> {
    DEID_NICE.store(nice, std::sync::atomic::Ordering::Relaxed);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mado-upload")
        .on_thread_start(move || lower_thread_priority(nice))
        .enable_all()
        .build()
}

/// Run `f` on the de-identification pool; a panic becomes `None` instead
/// of aborting.
async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    deid_pool().spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.ok());
    });
    rx.await.ok().flatten()
}

/// Capped exponential backoff with jitter (50-100 % of the step).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let step = base
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[derive(Debug)]
enum RegisterError {
    /// Server unreachable, 5xx, 401, 408, 429: keep the file and retry.
    Retry(String),
    /// Any other 4xx: the server will never accept it.
    Refused(String),
}

/// How processing one spool file ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Uploaded,
    Quarantined,
    Failed,
    /// The file disappeared or could not be read: try again on a rescan.
    Skipped,
}

pub struct Uploader {
    spool: Spool,
    cfg: UploadConfig,
    server: ServerConfig,
    deid: Arc<Pipeline>,
    http: reqwest::Client,
    store: DynStore,
    /// Storage commitment ledger: original SOP Instance UIDs confirmed in
    /// the store (or refused), when `[commitment]` is enabled.
    ledger: Option<Arc<crate::commitment::Ledger>>,
}

impl Uploader {
    pub fn new(
        spool: Spool,
        cfg: UploadConfig,
        server: ServerConfig,
        deid: Arc<Pipeline>,
        store: DynStore,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.http_timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.http_timeout_secs.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            spool,
            cfg,
            server,
            deid,
            http,
            store,
            ledger: None,
        })
    }

    /// Record the fate of every instance in the storage commitment ledger.
    pub fn with_ledger(mut self, ledger: Option<Arc<crate::commitment::Ledger>>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Record `original` (the modality's SOP Instance UID) in the ledger.
    async fn settle(&self, original: Option<String>, state: crate::commitment::State) {
        let (Some(ledger), Some(uid)) = (self.ledger.clone(), original) else {
            return;
        };
        match tokio::task::spawn_blocking(move || ledger.record(&uid, state)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot record the instance in the commitment ledger"),
            Err(e) => warn!(error = %e, "commitment ledger task failed"),
        }
    }

    /// Open the object store, retrying until it works (the SCP keeps
    /// spooling meanwhile).
    pub async fn open_store(cfg: &StoreConfig, upload: &UploadConfig) -> DynStore {
        let mut attempt = 0;
        loop {
            match mado_store::open(cfg).await {
                Ok(s) => {
                    info!(store = %s.describe(), "object store ready");
                    return s;
                }
                Err(e) => {
                    warn!(error = %e, attempt, "object store unavailable; retrying");
                    tokio::time::sleep(backoff(upload.retry_base(), upload.retry_max(), attempt))
                        .await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// The dispatcher loop (runs until the future is dropped).
    pub async fn run(self: Arc<Self>, mut wake: mpsc::UnboundedReceiver<String>) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut queue: VecDeque<String> = VecDeque::new();
        let mut scheduled: HashSet<String> = HashSet::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut rescan = tokio::time::interval(Duration::from_secs(self.cfg.rescan_secs));
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake_open = true;
        loop {
            tokio::select! {
                Some(id) = done_rx.recv() => {
                    scheduled.remove(&id);
                }
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = res {
                        error!(error = %e, "upload task failed");
                    }
                }
                id = wake.recv(), if wake_open => match id {
                    Some(id) => {
                        if scheduled.insert(id.clone()) {
                            queue.push_back(id);
                        }
                    }
                    None => wake_open = false,
                },
                _ = rescan.tick() => {
                    let spool = self.spool.clone();
                    match tokio::task::spawn_blocking(move || spool.list_pending()).await {
                        Ok(Ok(ids)) => {
                            let before = queue.len();
                            for id in ids {
                                if scheduled.insert(id.clone()) {
                                    queue.push_back(id);
                                }
                            }
                            if queue.len() > before {
                                info!(found = queue.len() - before, "pending instances found in spool");
                            }
                        }
                        Ok(Err(e)) => warn!(error = %e, "cannot scan spool/pending"),
                        Err(e) => warn!(error = %e, "spool scan task failed"),
                    }
                }
                Ok(permit) = slots.clone().acquire_owned(), if !queue.is_empty() => {
                    if let Some(id) = queue.pop_front() {
                        let this = self.clone();
                        let done = done_tx.clone();
                        let span = info_span!(
                            "upload",
                            spool_id = %id,
                            sop_class = tracing::field::Empty,
                            size = tracing::field::Empty,
                        );
                        tasks.spawn(async move {
                            let _permit = permit;
                            this.process(&id).await;
                            let _ = done.send(id);
                        }.instrument(span));
                    }
                }
            }
        }
    }

    /// Process one pending spool file to its end.
    pub async fn process(&self, id: &str) -> Outcome {
        let path = self.spool.pending_path(id);
        if !path.is_file() {
            return Outcome::Skipped;
        }
        let started = std::time::Instant::now();
        let deid = self.deid.clone();
        let track = self.ledger.is_some();
        let (original, prepared) = match on_rayon(move || {
            // the modality's SOP Instance UID, for storage commitment
            let original = if track {
                crate::commitment::original_sop_instance_uid(&path)
            } else {
                None
            };
            (original, prepare_file(&path, &deid))
        })
        .await
        {
            Some((o, r)) => (o, Some(r)),
            None => (None, None),
        };
        let prepared = match prepared {
            Some(Ok(p)) => p,
            Some(Err(PrepareError::Io(e))) => {
                debug!(error = %e, "spool file not readable; skipping");
                return Outcome::Skipped;
            }
            Some(Err(PrepareError::Vault(e))) => {
                // keep it pending: the originals must be recoverable before upload
                error!(error = %e, "vault unavailable; instance stays pending");
                return Outcome::Skipped;
            }
            Some(Err(e)) => {
                let out = self.quarantine(id, &e.to_string()).await;
                if out == Outcome::Quarantined {
                    self.settle(original, crate::commitment::State::Failed)
                        .await;
                }
                return out;
            }
            None => {
                return self
                    .quarantine(id, &PrepareError::Panicked.to_string())
                    .await
            }
        };
        let span = tracing::Span::current();
        span.record("sop_class", prepared.register.sop_class_uid.as_str());
        span.record("size", prepared.bytes.len());
        let study = prepared.register.study_uid.clone();
        let sop = prepared.register.sop_instance_uid.clone();

        let mut attempt = 0u32;
        loop {
            match self.put_verified(&prepared).await {
                Ok(true) => {
                    // same key, same bytes: a re-sent (same SOP Instance UID)
                    // or re-processed instance, e.g. after a crash
                    info!(sop = %sop, "identical object already in the store (re-sent instance); put skipped");
                    break;
                }
                Ok(false) => break,
                Err(e) => {
                    warn!(error = %e, attempt, "object store put failed; will retry");
                    metrics::counter!(crate::admin::names::UPLOAD_RETRIES, "stage" => "store")
                        .increment(1);
                    self.sleep(attempt).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }

        let mut attempt = 0u32;
        let created = loop {
            match self.register(&prepared.register).await {
                Ok(created) => break created,
                Err(RegisterError::Retry(msg)) => {
                    warn!(reason = %msg, attempt, "registration failed; will retry");
                    metrics::counter!(crate::admin::names::UPLOAD_RETRIES, "stage" => "register")
                        .increment(1);
                    self.sleep(attempt).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(RegisterError::Refused(msg)) => {
                    warn!(reason = %msg, "registration refused; moving to spool/failed");
                    metrics::counter!(crate::admin::names::FAILED).increment(1);
                    let spool = self.spool.clone();
                    let (id2, reason) = (id.to_string(), msg.clone());
                    match tokio::task::spawn_blocking(move || spool.move_to_failed(&id2, &reason))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => error!(error = %e, "cannot move spool file to failed/"),
                        Err(e) => error!(error = %e, "spool task failed"),
                    }
                    self.settle(original, crate::commitment::State::Failed)
                        .await;
                    return Outcome::Failed;
                }
            }
        };

        // in the store (read back and verified) and registered: committed,
        // recorded before the spool copy goes
        self.settle(original, crate::commitment::State::Stored)
            .await;
        let spool = self.spool.clone();
        let id2 = id.to_string();
        match tokio::task::spawn_blocking(move || {
            let marker = released_marker(&spool.pending_path(&id2));
            let r = spool.remove_pending(&id2);
            let _ = std::fs::remove_file(marker);
            r
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "uploaded but cannot delete the spool file"),
            Err(e) => warn!(error = %e, "spool task failed"),
        }
        metrics::counter!(crate::admin::names::UPLOADED).increment(1);
        metrics::histogram!(crate::admin::names::UPLOAD_SECONDS)
            .record(started.elapsed().as_secs_f64());
        info!(study = %study, sop = %sop, size = prepared.bytes.len(), created, "instance uploaded and registered");
        Outcome::Uploaded
    }

    /// Put the object unless an identical one (size and SHA-256) is already
    /// there, then read back its size and checksum (end-to-end integrity:
    /// the SHA-256 also travels with the PUT). `Ok(true)`: already present.
    async fn put_verified(&self, p: &Prepared) -> Result<bool, String> {
        let key = p.key.as_str();
        let same = |info: &mado_store::ObjectInfo| {
            info.size == p.bytes.len() as u64
                && info
                    .sha256
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(&p.sha256))
        };
        if let Ok(Some(info)) = self.store.head(key).await {
            if same(&info) {
                return Ok(true);
            }
        }
        self.store
            .put(key, p.bytes.clone(), &p.sha256)
            .await
            .map_err(|e| e.to_string())?;
        match self.store.head(key).await {
            Ok(Some(info))
                if info.size == p.bytes.len() as u64
                    && info
                        .sha256
                        .as_deref()
                        .is_none_or(|h| h.eq_ignore_ascii_case(&p.sha256)) =>
            {
                Ok(false)
            }
            Ok(Some(info)) => Err(format!(
                "read-back mismatch after put (size {} of {}, checksum {})",
                info.size,
                p.bytes.len(),
                if info.sha256.is_some() {
                    "differs"
                } else {
                    "unknown"
                }
            )),
            Ok(None) => Err("object missing right after put".into()),
            Err(e) => Err(format!("head after put: {e}")),
        }
    }

    async fn sleep(&self, attempt: u32) {
        tokio::time::sleep(backoff(
            self.cfg.retry_base(),
            self.cfg.retry_max(),
            attempt,
        ))
        .await;
    }

    async fn quarantine(&self, id: &str, reason: &str) -> Outcome {
        warn!(reason, "instance quarantined");
        metrics::counter!(crate::admin::names::QUARANTINED).increment(1);
        let spool = self.spool.clone();
        let (id, reason) = (id.to_string(), reason.to_string());
        match tokio::task::spawn_blocking(move || {
            let marker = released_marker(&spool.pending_path(&id));
            let r = spool.move_to_quarantine(&id, &reason);
            if r.is_ok() {
                let _ = std::fs::remove_file(marker);
            }
            r
        })
        .await
        {
            Ok(Ok(())) => Outcome::Quarantined,
            Ok(Err(e)) => {
                error!(error = %e, "cannot move spool file to quarantine/");
                Outcome::Skipped
            }
            Err(e) => {
                error!(error = %e, "spool task failed");
                Outcome::Skipped
            }
        }
    }

    async fn register(&self, reg: &RegisterInstance) -> Result<bool, RegisterError> {
        let url = format!("{}{}", self.server.url.trim_end_matches('/'), INGEST_PATH);
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.server.token.expose_secret())
            .json(reg)
            .send()
            .await
            .map_err(|e| RegisterError::Retry(format!("server unreachable: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return match resp.json::<RegisterResponse>().await {
                Ok(r) => Ok(r.created),
                Err(e) => {
                    debug!(error = %e, "registration answer is not a RegisterResponse");
                    Ok(status == reqwest::StatusCode::CREATED)
                }
            };
        }
        let code = status.as_u16();
        if code == 401 {
            return Err(RegisterError::Retry(
                "server answered 401 Unauthorized (check server.token)".into(),
            ));
        }
        if status.is_client_error() && code != 408 && code != 429 {
            let mut body = resp.text().await.unwrap_or_default();
            truncate_utf8(&mut body, 2048);
            return Err(RegisterError::Refused(format!(
                "server answered {status}: {body}"
            )));
        }
        Err(RegisterError::Retry(format!("server answered {status}")))
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Expected;
    use crate::testutil::*;
    use dicom_dictionary_std::uids;
    use mado_store::LocalStore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn upload_threads_run_at_the_configured_niceness() {
        let rt = background_runtime(7).unwrap();
        let nice = rt
            .block_on(async {
                tokio::spawn(async {
                    rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                })
                .await
            })
            .unwrap()
            .unwrap();
        let base = rustix::process::getpriority_process(None).unwrap();
        // raising niceness needs no privilege; a runner already above 7
        // cannot come back down to it unprivileged
        assert!(
            nice == 7 || (base > 7 && nice == base),
            "nice {nice}, base {base}"
        );
        rt.shutdown_background();
    }

    fn params() -> Arc<Pipeline> {
        Arc::new(Pipeline::without_vault(crate::deid::tests::test_engine()))
    }

    fn spool_one(spool: &Spool, sop: &str) -> String {
        let obj = sample_dataset(sop);
        let mut ds = Vec::new();
        obj.write_dataset_with_ts(
            &mut ds,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        spool
            .store(
                &ds,
                &Expected {
                    sop_class_uid: uids::CT_IMAGE_STORAGE,
                    sop_instance_uid: sop,
                    transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
                    calling_ae: "SCU",
                },
            )
            .unwrap()
    }

    /// A one-shot-per-connection HTTP server answering `statuses` in turn
    /// (the last one repeats); records request heads and bodies.
    async fn fake_server(
        statuses: Vec<u16>,
    ) -> (String, Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let status = statuses[n.min(statuses.len() - 1)];
                n += 1;
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                let (head, body) = loop {
                    let k = sock.read(&mut tmp).await.unwrap();
                    if k == 0 {
                        break (String::new(), Vec::new());
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let l = l.to_ascii_lowercase();
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < pos + 4 + len {
                            let k = sock.read(&mut tmp).await.unwrap();
                            buf.extend_from_slice(&tmp[..k]);
                        }
                        break (head, buf[pos + 4..pos + 4 + len].to_vec());
                    }
                };
                seen2.lock().unwrap().push((head, body));
                let body = if status < 300 {
                    r#"{"created":true}"#
                } else {
                    r#"{"title":"bad"}"#
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        (url, seen)
    }

    fn uploader(spool: &Spool, url: &str, store: DynStore) -> Uploader {
        let upload = UploadConfig {
            enabled: true,
            concurrency: 2,
            retry_base_ms: 5,
            retry_max_ms: 20,
            rescan_secs: 1,
            http_timeout_secs: 5,
            nice: 0,
        };
        let server = ServerConfig {
            url: url.to_string(),
            token: "test-token".to_string().into(),
        };
        Uploader::new(spool.clone(), upload, server, params(), store).unwrap()
    }

    #[test]
    fn prepared_object_is_deidentified_and_metadata_has_no_bulk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let id = spool_one(&spool, ORIG_SOP);
        let p = prepare_file(&spool.pending_path(&id), &params()).unwrap();
        for orig in ORIGINALS {
            assert!(
                !p.bytes.windows(orig.len()).any(|w| w == orig.as_bytes()),
                "{orig} leaked"
            );
            let json = serde_json::to_string(&p.register).unwrap();
            assert!(!json.contains(orig), "{orig} leaked into the registration");
        }
        assert_eq!(p.sha256, mado_store::sha256_hex(&p.bytes));
        assert_eq!(p.register.size, p.bytes.len() as u64);
        assert!(p.key.as_str().starts_with("studies/2.25."));
        assert!(
            p.register.metadata.get("7FE00010").is_none(),
            "pixel data in metadata"
        );
        assert!(
            p.register.metadata.get("00080060").is_some(),
            "modality missing"
        );
        // idempotent: same file → same bytes and key
        let q = prepare_file(&spool.pending_path(&id), &params()).unwrap();
        assert_eq!(p.bytes, q.bytes);
        assert_eq!(p.key, q.key);
    }

    #[test]
    fn originals_go_to_the_vault_before_upload() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let vault = crate::vault::Vault::open(
            &dir.path().join("spool/vault.jsonl"),
            b"upload-test-vault-key",
        )
        .unwrap();
        let deid = Pipeline {
            engine: crate::deid::tests::test_engine(),
            vault: Some(vault),
        };
        let id = spool_one(&spool, ORIG_SOP);
        let p = prepare_file(&spool.pending_path(&id), &deid).unwrap();
        let study = p.register.study_uid.as_str().to_string();
        assert!(p.key.as_str().starts_with(&format!("studies/{study}/")));
        let v = deid.vault.as_ref().unwrap();
        let found = v.find(&crate::vault::Lookup::Study(study)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].original_patient_id.as_deref(), Some(ORIG_ID));
        assert_eq!(
            found[0].original_study_instance_uid.as_deref(),
            Some(ORIG_STUDY)
        );
        let raw = std::fs::read(v.path()).unwrap();
        for orig in ORIGINALS {
            assert!(!raw.windows(orig.len()).any(|w| w == orig.as_bytes()));
        }
    }

    #[tokio::test]
    async fn uploads_registers_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let store: DynStore = Arc::new(LocalStore::new(dir.path().join("objects")).unwrap());
        // first a 503, then success: the worker retries
        let (url, seen) = fake_server(vec![503, 201]).await;
        let up = uploader(&spool, &url, store.clone());
        let id = spool_one(&spool, ORIG_SOP);
        assert_eq!(up.process(&id).await, Outcome::Uploaded);
        assert!(spool.list_pending().unwrap().is_empty());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let (head, body) = &seen[1];
        assert!(head.starts_with(&format!("POST {INGEST_PATH} ")), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("authorization: bearer test-token"));
        let reg: RegisterInstance = serde_json::from_slice(body).unwrap();
        let stored = store.get(&reg.object_key).await.unwrap();
        assert_eq!(mado_store::sha256_hex(&stored), reg.sha256);
        for orig in ORIGINALS {
            assert!(
                !stored.windows(orig.len()).any(|w| w == orig.as_bytes()),
                "{orig} leaked"
            );
        }
    }

    #[tokio::test]
    async fn client_error_moves_to_failed_and_garbage_to_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let store: DynStore = Arc::new(LocalStore::new(dir.path().join("objects")).unwrap());
        let (url, _seen) = fake_server(vec![400]).await;
        let up = uploader(&spool, &url, store);
        let id = spool_one(&spool, ORIG_SOP);
        assert_eq!(up.process(&id).await, Outcome::Failed);
        assert!(spool.failed().join(format!("{id}.dcm")).is_file());
        let reason = std::fs::read_to_string(spool.failed().join(format!("{id}.reason"))).unwrap();
        assert!(reason.contains("400"), "{reason}");

        // a pending file that is not DICOM is quarantined, never uploaded
        let bad = "0123456789abcdef0123456789abcdef";
        std::fs::write(spool.pending_path(bad), b"not dicom at all").unwrap();
        assert_eq!(up.process(bad).await, Outcome::Quarantined);
        assert!(spool.quarantine().join(format!("{bad}.reason")).is_file());
        assert!(spool.list_pending().unwrap().is_empty());
    }

    #[tokio::test]
    async fn dispatcher_resumes_pending_work_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let store: DynStore = Arc::new(LocalStore::new(dir.path().join("objects")).unwrap());
        let (url, seen) = fake_server(vec![201]).await;
        // left behind by a previous run
        for i in 0..3 {
            spool_one(&spool, &format!("1.2.3.{i}"));
        }
        let up = Arc::new(uploader(&spool, &url, store.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(up.clone().run(rx));
        // and one arriving live
        let live = spool_one(&spool, "1.2.3.99");
        tx.send(live).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !spool.list_pending().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pending work not drained"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.abort();
        assert_eq!(seen.lock().unwrap().len(), 4);
        assert_eq!(store.list("studies/").await.unwrap().len(), 4);
    }
}
