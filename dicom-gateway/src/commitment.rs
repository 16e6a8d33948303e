//! Storage Commitment Push Model SCP (PS3.4 Annex J, PS3.7 N-ACTION /
//! N-EVENT-REPORT).
//!
//! A modality asks, with N-ACTION-RQ (Action Type ID 1, a Transaction UID
//! and a Referenced SOP Sequence), whether the gateway has taken
//! responsibility for instances it sent. The N-ACTION-RSP (success) goes
//! out at once; the answer proper, N-EVENT-REPORT-RQ, only once every
//! referenced instance is confirmed in the object store (uploaded, read back
//! and verified by the upload worker) or when `commitment.timeout_secs`
//! runs out: Event Type 1 (all committed) or 2 (some failed, in the Failed
//! SOP Sequence with Failure Reason 0x0112 "no such object instance", or
//! 0x0110 "processing failure" for an instance quarantined or refused).
//!
//! The report travels on the requesting association while it is open, else
//! on a new association to the requester (`[commitment.peers]`: calling AE
//! title → `host:port`), where the gateway takes the SCP role (SCP/SCU role
//! selection proposed, PS3.4 J.3.3).
//!
//! Instances are tracked by their *original* SOP Instance UID (what the
//! modality knows; the uploaded copy carries a remapped one). The
//! [`Ledger`] records, durably, which originals were confirmed in the store:
//! `<spool.dir>/commitment.log`, one line per instance (`U <uid>` uploaded,
//! `F <uid>` failed). It lives on-prem next to the originals and is never
//! uploaded. SOP Instance UIDs appear in debug logs only.
//!
//! An accepted transaction is itself durable before its N-ACTION-RSP goes
//! out: one file per transaction in `<spool.dir>/commitment-pending/`
//! (written, fsynced, renamed, directory fsynced), removed once its report
//! was handed to the requesting association or acknowledged on a new one.
//! On start-up ([`Commitment::resume`]) every such file is resolved again
//! against the ledger, with what is left of its timeout, and its report
//! sent on a new association, so a restart or a crash never loses a
//! modality's question. A transaction whose report could not be delivered
//! after the retries stays for the next start, for at most
//! [`KEEP_UNDELIVERED`] after the request.

use crate::config::CommitmentConfig;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, info_span, warn, Instrument};

pub const SOP_CLASS: &str = uids::STORAGE_COMMITMENT_PUSH_MODEL;
/// The well-known SOP Instance of the Storage Commitment Push Model.
pub const WELL_KNOWN_INSTANCE: &str = uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE;

pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
pub const N_ACTION_RQ: u16 = 0x0130;
pub const N_ACTION_RSP: u16 = 0x8130;

/// N-ACTION statuses (PS3.7 C.4.2 / Annex C).
pub const STATUS_SUCCESS: u16 = 0x0000;
pub const STATUS_PROCESSING_FAILURE: u16 = 0x0110;
pub const STATUS_NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
pub const STATUS_MISSING_ATTRIBUTE: u16 = 0x0120;
pub const STATUS_NO_SUCH_ACTION: u16 = 0x0123;
pub const STATUS_NO_SUCH_SOP_CLASS: u16 = 0x0118;
pub const STATUS_INVALID_ARGUMENT: u16 = 0x0115;
/// Resource limitation (PS3.7 10.1.4.1.10): too many references in one
/// request, too many transactions pending, or a data set too large.
pub const STATUS_RESOURCE_LIMITATION: u16 = 0x0213;
/// Failure Reason (0008,1197) values used in the Failed SOP Sequence.
pub const FAILURE_NO_SUCH_INSTANCE: u16 = 0x0112;
pub const FAILURE_PROCESSING: u16 = 0x0110;

/// A report goes on the requesting association only if that association
/// is still open this long after the N-ACTION-RSP: many modalities release
/// right after it and expect the report on a new association.
pub const SAME_ASSOCIATION_GRACE: Duration = Duration::from_secs(1);
/// How long an undelivered transaction is kept (and retried at start-up)
/// after its request.
pub const KEEP_UNDELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// Directory of accepted, unanswered transactions, in the spool root.
pub const PENDING_DIR: &str = "commitment-pending";

// ------------------------------------------------------------- ledger

/// What the upload worker knows about an original SOP Instance UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// De-identified copy in the object store, read back and verified.
    Stored,
    /// Quarantined or refused by the server: will not be stored.
    Failed,
}

/// The durable record of instances confirmed in (or refused from) the
/// object store, keyed by original SOP Instance UID.
pub struct Ledger {
    path: PathBuf,
    inner: Mutex<LedgerInner>,
    /// Bumped on every change; waiting transactions re-check.
    changed: watch::Sender<u64>,
    cap: usize,
}

struct LedgerInner {
    states: HashMap<String, State>,
    /// UIDs in recording order (oldest first), for compaction.
    order: std::collections::VecDeque<String>,
    file: File,
}

/// The ledger keeps at most this many instances; beyond, the oldest half
/// is dropped (a commitment request comes minutes or hours after the push,
/// not after a million newer instances).
pub const LEDGER_MAX_ENTRIES: usize = 1_000_000;

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// The ledger file of a spool.
    pub fn path_in(spool_root: &Path) -> PathBuf {
        spool_root.join("commitment.log")
    }

    /// Open (create) the ledger and load it. A torn last line (crash while
    /// appending) is ignored.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with_cap(path, LEDGER_MAX_ENTRIES)
    }

    fn open_with_cap(path: &Path, cap: usize) -> io::Result<Self> {
        let mut states = HashMap::new();
        let mut order = std::collections::VecDeque::new();
        let mut torn = false;
        match std::fs::read(path) {
            Ok(bytes) => {
                torn = bytes.last().is_some_and(|b| *b != b'\n');
                for line in bytes.split(|b| *b == b'\n') {
                    let Ok(line) = std::str::from_utf8(line) else {
                        continue;
                    };
                    let (state, uid) = match line.split_once(' ') {
                        Some(("U", u)) => (State::Stored, u),
                        Some(("F", u)) => (State::Failed, u),
                        _ => continue,
                    };
                    if mado_core::Uid::parse(uid).is_ok() {
                        // a later line wins (failed, then re-sent and stored)
                        if states.insert(uid.to_string(), state).is_none() {
                            order.push_back(uid.to_string());
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = File::options().create(true).append(true).open(path)?;
        if torn {
            // end the torn line so the next record starts on its own
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        let mut inner = LedgerInner {
            states,
            order,
            file,
        };
        if inner.states.len() > cap {
            compact(path, &mut inner, cap / 2)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            inner: Mutex::new(inner),
            changed: watch::channel(0).0,
            cap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record (durably: append + fdatasync) the fate of an original SOP
    /// Instance UID. Blocking.
    pub fn record(&self, original_sop_instance_uid: &str, state: State) -> io::Result<()> {
        let uid = original_sop_instance_uid.trim_end_matches(['\0', ' ']);
        if mado_core::Uid::parse(uid).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a valid SOP Instance UID",
            ));
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.states.get(uid) == Some(&state) {
                return Ok(());
            }
            let tag = match state {
                State::Stored => "U",
                State::Failed => "F",
            };
            let line = format!("{tag} {uid}\n");
            inner.file.write_all(line.as_bytes())?;
            inner.file.sync_data()?;
            if inner.states.insert(uid.to_string(), state).is_none() {
                inner.order.push_back(uid.to_string());
            }
            if inner.states.len() > self.cap {
                compact(&self.path, &mut inner, self.cap / 2)?;
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    #[cfg(test)]
    fn entries_in_file(&self) -> usize {
        std::fs::read_to_string(&self.path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    pub fn state(&self, original_sop_instance_uid: &str) -> Option<State> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.states.get(original_sop_instance_uid).copied()
    }

    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Keep the newest `keep` entries: rewrite the file (temp, fsync, rename,
/// fsync directory) and reopen it for appending.
fn compact(path: &Path, inner: &mut LedgerInner, keep: usize) -> io::Result<()> {
    while inner.order.len() > keep {
        if let Some(old) = inner.order.pop_front() {
            inner.states.remove(&old);
        }
    }
    let tmp = path.with_extension("log.tmp");
    {
        let mut f = io::BufWriter::new(File::create(&tmp)?);
        for uid in &inner.order {
            let tag = match inner.states.get(uid) {
                Some(State::Stored) => "U",
                Some(State::Failed) => "F",
                None => continue,
            };
            writeln!(f, "{tag} {uid}")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    inner.file = File::options().append(true).open(path)?;
    Ok(())
}

// ------------------------------------------------------- the requests

/// One referenced instance (Referenced SOP Class UID, Referenced SOP
/// Instance UID).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub sop_class: String,
    pub sop_instance: String,
}

/// A parsed Storage Commitment request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub transaction_uid: String,
    pub references: Vec<Reference>,
}

/// The N-ACTION-RQ command fields we need.
#[derive(Debug, Clone)]
pub struct ActionCommand {
    pub message_id: u16,
    pub requested_sop_class: Option<String>,
    pub action_type_id: Option<u16>,
    pub has_data_set: bool,
}

impl From<&crate::dimse::Command> for ActionCommand {
    fn from(c: &crate::dimse::Command) -> Self {
        Self {
            message_id: c.message_id,
            requested_sop_class: c.requested_sop_class.clone(),
            action_type_id: c.action_type_id,
            has_data_set: c.has_data_set,
        }
    }
}

/// Parse the N-ACTION data set (encoded in `ts_uid`), of at most
/// `max_references` references.
pub fn parse_request(data: &[u8], ts_uid: &str, max_references: usize) -> Result<Request, u16> {
    let ts = crate::scp::readable_transfer_syntax(ts_uid).ok_or(STATUS_PROCESSING_FAILURE)?;
    crate::guard::check_bytes(data, ts_uid).map_err(|_| STATUS_INVALID_ARGUMENT)?;
    let obj =
        InMemDicomObject::read_dataset_with_ts(data, ts).map_err(|_| STATUS_INVALID_ARGUMENT)?;
    let text = |o: &InMemDicomObject, tag| {
        o.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .filter(|s| !s.is_empty())
    };
    let transaction_uid = text(&obj, tags::TRANSACTION_UID).ok_or(STATUS_MISSING_ATTRIBUTE)?;
    if mado_core::Uid::parse(&transaction_uid).is_err() {
        return Err(STATUS_INVALID_ARGUMENT);
    }
    let items = obj
        .get(tags::REFERENCED_SOP_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or(STATUS_MISSING_ATTRIBUTE)?;
    if items.is_empty() {
        return Err(STATUS_INVALID_ARGUMENT);
    }
    if items.len() > max_references {
        return Err(STATUS_RESOURCE_LIMITATION);
    }
    let mut references = Vec::with_capacity(items.len());
    for item in items {
        references.push(Reference {
            sop_class: text(item, tags::REFERENCED_SOP_CLASS_UID)
                .ok_or(STATUS_MISSING_ATTRIBUTE)?,
            sop_instance: text(item, tags::REFERENCED_SOP_INSTANCE_UID)
                .ok_or(STATUS_MISSING_ATTRIBUTE)?,
        });
    }
    Ok(Request {
        transaction_uid,
        references,
    })
}

fn encode_command(obj: InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    // a command of a few fixed elements always encodes
    let _ = obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased());
    out
}

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}
fn ui(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

/// N-ACTION-RSP with `status` (no data set).
pub fn action_response(message_id: u16, status: u16, action_type_id: Option<u16>) -> Vec<u8> {
    let mut elems = vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS),
        us(tags::COMMAND_FIELD, N_ACTION_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, crate::dimse::NO_DATA_SET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, WELL_KNOWN_INSTANCE),
    ];
    if let Some(a) = action_type_id {
        elems.push(us(tags::ACTION_TYPE_ID, a));
    }
    encode_command(InMemDicomObject::command_from_element_iter(elems))
}

/// The N-EVENT-REPORT-RQ command set.
fn event_command(message_id: u16, event_type: u16) -> Vec<u8> {
    encode_command(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, SOP_CLASS),
        us(tags::COMMAND_FIELD, N_EVENT_REPORT_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, WELL_KNOWN_INSTANCE),
        us(tags::EVENT_TYPE_ID, event_type),
    ]))
}

/// The result of a transaction: committed references, and failed ones with
/// their Failure Reason.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transaction_uid: String,
    pub committed: Vec<Reference>,
    pub failed: Vec<(Reference, u16)>,
}

impl Outcome {
    /// Event Type ID: 1 all success, 2 failures exist.
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            1
        } else {
            2
        }
    }

    /// The event report data set (PS3.4 J.3.2.1.1.2 / Table J.3-2).
    pub fn dataset(&self) -> InMemDicomObject {
        let item = |r: &Reference, reason: Option<u16>| {
            let mut o = InMemDicomObject::from_element_iter([
                ui(tags::REFERENCED_SOP_CLASS_UID, &r.sop_class),
                ui(tags::REFERENCED_SOP_INSTANCE_UID, &r.sop_instance),
            ]);
            if let Some(reason) = reason {
                o.put(us(tags::FAILURE_REASON, reason));
            }
            o
        };
        let mut obj =
            InMemDicomObject::from_element_iter([ui(tags::TRANSACTION_UID, &self.transaction_uid)]);
        if !self.committed.is_empty() {
            let items: Vec<_> = self.committed.iter().map(|r| item(r, None)).collect();
            obj.put(DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        if !self.failed.is_empty() {
            let items: Vec<_> = self
                .failed
                .iter()
                .map(|(r, why)| item(r, Some(*why)))
                .collect();
            obj.put(DataElement::new(
                tags::FAILED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        obj
    }
}

/// An encoded N-EVENT-REPORT-RQ ready to go on a presentation context.
#[derive(Debug, Clone)]
pub struct Report {
    pub pc_id: u8,
    pub command: Vec<u8>,
    pub data: Vec<u8>,
    /// For logs.
    pub event_type: u16,
    /// Kept to re-encode for another association.
    pub outcome: Arc<Outcome>,
}

impl Report {
    /// Encode `outcome` for a presentation context with transfer syntax `ts_uid`.
    pub fn encode(outcome: Arc<Outcome>, pc_id: u8, ts_uid: &str) -> Result<Self, String> {
        static NEXT_MESSAGE_ID: AtomicU16 = AtomicU16::new(1);
        let ts = crate::scp::readable_transfer_syntax(ts_uid)
            .ok_or_else(|| format!("transfer syntax {ts_uid} not supported"))?;
        let mut data = Vec::new();
        outcome
            .dataset()
            .write_dataset_with_ts(&mut data, ts)
            .map_err(|e| format!("cannot encode the event report: {e}"))?;
        let message_id = NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed);
        let event_type = outcome.event_type();
        Ok(Self {
            pc_id,
            command: event_command(message_id, event_type),
            data,
            event_type,
            outcome,
        })
    }

    /// The P-DATA PDUs carrying this report, each within `peer_max_pdu`
    /// (0 = unlimited).
    pub fn pdus(&self, peer_max_pdu: u32) -> Vec<Pdu> {
        // a PDV item adds 6 bytes (length, context id, control header)
        let max = if peer_max_pdu == 0 {
            1 << 20
        } else {
            (peer_max_pdu as usize).saturating_sub(6).max(1024)
        };
        let mut pdus = Vec::new();
        for (value_type, bytes) in [
            (PDataValueType::Command, &self.command),
            (PDataValueType::Data, &self.data),
        ] {
            let chunks: Vec<&[u8]> = if bytes.is_empty() {
                vec![&[][..]]
            } else {
                bytes.chunks(max).collect()
            };
            let n = chunks.len();
            for (i, c) in chunks.into_iter().enumerate() {
                pdus.push(Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: self.pc_id,
                        value_type: value_type.clone(),
                        is_last: i + 1 == n,
                        data: c.to_vec(),
                    }],
                });
            }
        }
        pdus
    }
}

// ------------------------------------------------------------ service

/// An N-ACTION-RQ whose data set is being received on an association.
#[derive(Debug)]
pub struct PendingAction {
    pub pc_id: u8,
    pub transfer_syntax: String,
    pub command: ActionCommand,
    pub data: Vec<u8>,
    /// Largest data set kept (`[dicom] max_parsed_bytes`).
    pub limit: usize,
    /// The data set grew beyond `limit`: the rest is dropped as it arrives
    /// and the request refused with 0x0213.
    pub oversize: bool,
}

impl PendingAction {
    /// Append a data fragment (dropped once the data set is over `limit`).
    pub fn push(&mut self, fragment: &[u8]) {
        if self.oversize || self.data.len() + fragment.len() > self.limit {
            self.oversize = true;
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(fragment);
    }
}

/// One of the `max_pending_transactions`, released when dropped.
struct TxSlot(Arc<std::sync::atomic::AtomicUsize>);

impl TxSlot {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for TxSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Sender of reports to an open association (its session drains it).
pub type ReportTx = mpsc::UnboundedSender<Report>;
pub type ReportRx = mpsc::UnboundedReceiver<Report>;

/// An accepted transaction as kept on disk until answered.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Persisted {
    request: Request,
    calling_ae: String,
    /// Seconds since the Unix epoch.
    asked_at: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Storage Commitment service, shared by all associations.
pub struct Commitment {
    ledger: Arc<Ledger>,
    /// Accepted, unanswered transactions (see [`PENDING_DIR`]).
    pending_dir: PathBuf,
    cfg: CommitmentConfig,
    ae_title: String,
    /// How long a transaction waits for its instances.
    timeout: Duration,
    /// Transactions waiting for their instances (`max_pending_transactions`).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commitment")
            .field("ledger", &self.ledger)
            .finish()
    }
}

impl Commitment {
    pub fn new(ledger: Arc<Ledger>, cfg: CommitmentConfig, ae_title: &str) -> Self {
        let pending_dir = ledger
            .path()
            .parent()
            .unwrap_or(Path::new("."))
            .join(PENDING_DIR);
        Self {
            ledger,
            pending_dir,
            timeout: Duration::from_secs(cfg.timeout_secs),
            waiting: Arc::default(),
            cfg,
            ae_title: ae_title.trim().to_string(),
        }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Handle a complete N-ACTION-RQ: returns the N-ACTION-RSP command set
    /// and, on success, starts the transaction in the background. `reply`
    /// reaches the requesting association while it is open; `calling_ae`
    /// selects the peer for a report on a new association.
    pub async fn on_action(
        self: &Arc<Self>,
        action: PendingAction,
        calling_ae: &str,
        reply: ReportTx,
    ) -> Vec<u8> {
        let cmd = &action.command;
        let class_ok = cmd
            .requested_sop_class
            .as_deref()
            .is_none_or(|c| c == SOP_CLASS);
        let status = if !class_ok {
            Err(STATUS_NO_SUCH_SOP_CLASS)
        } else if cmd.action_type_id != Some(1) {
            Err(STATUS_NO_SUCH_ACTION)
        } else if !cmd.has_data_set {
            Err(STATUS_MISSING_ATTRIBUTE)
        } else if action.oversize {
            Err(STATUS_RESOURCE_LIMITATION)
        } else {
            parse_request(
                &action.data,
                &action.transfer_syntax,
                self.cfg.max_references,
            )
        };
        let slot = match status {
            Ok(_) => TxSlot::take(&self.waiting, self.cfg.max_pending_transactions)
                .ok_or(STATUS_RESOURCE_LIMITATION),
            Err(s) => Err(s),
        };
        let (request, slot) = match status.and_then(|r| slot.map(|s| (r, s))) {
            Ok(r) => r,
            Err(status) => {
                warn!(
                    message_id = cmd.message_id,
                    status = %format!("{status:#06X}"),
                    "storage commitment request refused"
                );
                return action_response(cmd.message_id, status, cmd.action_type_id);
            }
        };
        info!(
            message_id = cmd.message_id,
            instances = request.references.len(),
            "storage commitment requested"
        );
        debug!(transaction_uid = %request.transaction_uid, "storage commitment transaction");
        // Durable before the success status: a restart still answers it.
        let persisted = Persisted {
            request: request.clone(),
            calling_ae: calling_ae.trim().to_string(),
            asked_at: unix_now(),
        };
        let this = self.clone();
        let kept = tokio::task::spawn_blocking(move || this.persist(&persisted))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        if let Err(e) = kept {
            warn!(error = %e, "storage commitment request not kept: answered with a processing failure");
            return action_response(
                cmd.message_id,
                STATUS_PROCESSING_FAILURE,
                cmd.action_type_id,
            );
        }
        let this = self.clone();
        let (pc_id, ts) = (action.pc_id, action.transfer_syntax.clone());
        let calling_ae = calling_ae.to_string();
        let span = info_span!("commitment", instances = request.references.len());
        let asked = tokio::time::Instant::now();
        tokio::spawn(
            async move {
                let outcome = Arc::new(this.resolve(request).await);
                drop(slot);
                tokio::time::sleep_until(asked + SAME_ASSOCIATION_GRACE).await;
                if this
                    .deliver(outcome.clone(), pc_id, &ts, &calling_ae, reply)
                    .await
                {
                    this.sent(&outcome);
                }
            }
            .instrument(span),
        );
        action_response(cmd.message_id, STATUS_SUCCESS, Some(1))
    }

    fn pending_path(&self, transaction_uid: &str) -> PathBuf {
        // a Transaction UID is validated as a UID: digits and dots only
        self.pending_dir.join(format!("{transaction_uid}.json"))
    }

    fn persist(&self, t: &Persisted) -> io::Result<()> {
        let bytes = serde_json::to_vec(t).map_err(io::Error::other)?;
        std::fs::create_dir_all(&self.pending_dir)?;
        let path = self.pending_path(&t.request.transaction_uid);
        let tmp = path.with_extension("tmp");
        let written = crate::spool::write_durable(&tmp, &path, &[&bytes]);
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The report of `outcome` reached its requester: the transaction is
    /// finished.
    pub fn sent(&self, outcome: &Outcome) {
        self.forget(&outcome.transaction_uid);
    }

    /// Deliver on a new association in the background (the requesting
    /// association could not carry the report); finished when sent.
    pub fn deliver_later(self: &Arc<Self>, outcome: Arc<Outcome>, calling_ae: &str) {
        let (this, ae) = (self.clone(), calling_ae.to_string());
        tokio::spawn(async move {
            if this.deliver_new_association(outcome.clone(), &ae).await {
                this.sent(&outcome);
            }
        });
    }

    /// The transaction is answered (or can never be): drop its file.
    fn forget(&self, transaction_uid: &str) {
        let path = self.pending_path(transaction_uid);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(error = %e, "cannot remove an answered storage commitment transaction");
            }
        }
    }

    /// Answer every transaction accepted before a restart and not yet
    /// answered: resolve it against the ledger (for what is left of its
    /// timeout) and send its report on a new association. Returns how many
    /// were resumed.
    pub fn resume(self: &Arc<Self>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.pending_dir) else {
            return 0;
        };
        let now = unix_now();
        let mut resumed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path); // a torn temporary file
                continue;
            }
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok())
                .filter(|t| mado_core::Uid::parse(&t.request.transaction_uid).is_ok());
            let Some(t) = parsed else {
                warn!(file = %path.display(), "unreadable storage commitment transaction dropped");
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let age = Duration::from_secs(now.saturating_sub(t.asked_at));
            if age > KEEP_UNDELIVERED {
                warn!(
                    age_secs = age.as_secs(),
                    "storage commitment transaction too old to answer: dropped"
                );
                self.forget(&t.request.transaction_uid);
                continue;
            }
            let Some(slot) = TxSlot::take(&self.waiting, self.cfg.max_pending_transactions) else {
                warn!("more storage commitment transactions than max_pending_transactions after a restart: dropped");
                self.forget(&t.request.transaction_uid);
                continue;
            };
            if t.request.references.len() > self.cfg.max_references {
                warn!(
                    "storage commitment transaction over max_references after a restart: dropped"
                );
                self.forget(&t.request.transaction_uid);
                continue;
            }
            resumed += 1;
            let this = self.clone();
            let deadline = tokio::time::Instant::now() + self.timeout.saturating_sub(age);
            let span = info_span!(
                "commitment",
                instances = t.request.references.len(),
                resumed = true
            );
            tokio::spawn(
                async move {
                    let outcome = Arc::new(this.resolve_until(t.request, deadline).await);
                    drop(slot);
                    if this
                        .deliver_new_association(outcome.clone(), &t.calling_ae)
                        .await
                    {
                        this.sent(&outcome);
                    }
                }
                .instrument(span),
            );
        }
        if resumed > 0 {
            info!(
                transactions = resumed,
                "storage commitment transactions resumed after a restart"
            );
        }
        resumed
    }

    /// Wait until every reference is settled in the ledger, or the timeout.
    pub async fn resolve(&self, request: Request) -> Outcome {
        self.resolve_until(request, tokio::time::Instant::now() + self.timeout)
            .await
    }

    async fn resolve_until(&self, request: Request, deadline: tokio::time::Instant) -> Outcome {
        let mut changes = self.ledger.subscribe();
        let settled = |refs: &[Reference]| {
            refs.iter()
                .all(|r| self.ledger.state(&r.sop_instance).is_some())
        };
        loop {
            changes.borrow_and_update();
            if settled(&request.references) {
                break;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // timed out (or the ledger is gone): report what we have
                _ => break,
            }
        }
        let mut committed = Vec::new();
        let mut failed = Vec::new();
        let mut seen = HashSet::new();
        for r in request.references {
            if !seen.insert(r.sop_instance.clone()) {
                continue; // listed twice: report once
            }
            match self.ledger.state(&r.sop_instance) {
                Some(State::Stored) => committed.push(r),
                Some(State::Failed) => failed.push((r, FAILURE_PROCESSING)),
                None => failed.push((r, FAILURE_NO_SUCH_INSTANCE)),
            }
        }
        Outcome {
            transaction_uid: request.transaction_uid,
            committed,
            failed,
        }
    }

    /// Send the report on the requesting association if it is still open,
    /// else on a new association to the requester, with a few retries.
    /// `true` when the transaction is finished here (sent on a new
    /// association, or undeliverable); `false` when queued on the requesting
    /// association (which forgets it once sent, see [`Commitment::sent`]) or
    /// not delivered after the retries.
    async fn deliver(
        &self,
        outcome: Arc<Outcome>,
        pc_id: u8,
        ts: &str,
        calling_ae: &str,
        reply: ReportTx,
    ) -> bool {
        let (committed, failed) = (outcome.committed.len(), outcome.failed.len());
        match Report::encode(outcome.clone(), pc_id, ts) {
            Ok(_) if reply.is_closed() => {}
            Ok(report) => {
                let event_type = report.event_type;
                if reply.send(report).is_ok() {
                    info!(
                        event_type,
                        committed, failed, "storage commitment result queued on the association"
                    );
                    return false;
                }
            }
            Err(e) => warn!(error = %e, "cannot encode the storage commitment report"),
        }
        self.deliver_new_association(outcome, calling_ae).await
    }

    /// Send `outcome` on a new association to `calling_ae`'s configured
    /// address (retried with backoff); gives up with a warning. `false`
    /// when every attempt failed (the transaction is kept and retried at
    /// the next start); `true` when sent, or when it never can be (no
    /// address for that AE title).
    pub async fn deliver_new_association(&self, outcome: Arc<Outcome>, calling_ae: &str) -> bool {
        let Some(addr) = self.cfg.peers.get(calling_ae.trim()).cloned() else {
            warn!(
                calling_ae,
                "storage commitment result cannot be delivered: association closed and no \
                 [commitment.peers] entry for this AE title"
            );
            return true;
        };
        let attempts = self.cfg.delivery_attempts.max(1);
        for attempt in 0..attempts {
            match self
                .send_on_new_association(&outcome, calling_ae, &addr)
                .await
            {
                Ok(()) => {
                    info!(
                        event_type = outcome.event_type(),
                        committed = outcome.committed.len(),
                        failed = outcome.failed.len(),
                        peer = %addr,
                        "storage commitment result sent on a new association"
                    );
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, attempt, peer = %addr, "storage commitment report not delivered");
                    if attempt + 1 < attempts {
                        tokio::time::sleep(crate::upload::backoff(
                            Duration::from_secs(1),
                            Duration::from_secs(30),
                            attempt,
                        ))
                        .await;
                    }
                }
            }
        }
        warn!(peer = %addr, "storage commitment report not delivered after retries: retried at the next start");
        false
    }

    async fn send_on_new_association(
        &self,
        outcome: &Arc<Outcome>,
        peer_ae: &str,
        addr: &str,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(self.cfg.association_timeout_secs.max(1));
        let opts = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(self.ae_title.clone())
            .called_ae_title(peer_ae.trim().to_string())
            .with_presentation_context(
                SOP_CLASS,
                vec![
                    uids::EXPLICIT_VR_LITTLE_ENDIAN,
                    uids::IMPLICIT_VR_LITTLE_ENDIAN,
                ],
            )
            // the gateway (requestor) plays the SCP role here (PS3.4 J.3.3)
            .with_role_selection(SOP_CLASS, false, true)
            .read_timeout(timeout)
            .write_timeout(timeout)
            .connection_timeout(timeout);
        let mut assoc = tokio::time::timeout(timeout, opts.establish_async(addr))
            .await
            .map_err(|_| "association request timed out".to_string())?
            .map_err(|e| format!("association not established: {e}"))?;
        let _ = assoc.inner_stream().set_nodelay(true);
        let pc = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| (pc.id, pc.transfer_syntax.clone()));
        let Some((pc_id, ts)) = pc else {
            let _ = assoc.abort().await;
            return Err("peer refused the storage commitment presentation context".into());
        };
        let report = Report::encode(outcome.clone(), pc_id, &ts)?;
        let max = assoc.acceptor_max_pdu_length();
        for pdu in report.pdus(max) {
            assoc
                .send(&pdu)
                .await
                .map_err(|e| format!("cannot send the event report: {e}"))?;
        }
        // wait for the N-EVENT-REPORT-RSP
        let mut cmd = Vec::new();
        let status = loop {
            match assoc.receive().await {
                Ok(Pdu::PData { data }) => {
                    let mut done = None;
                    for pdv in data {
                        if pdv.value_type == PDataValueType::Command {
                            cmd.extend_from_slice(&pdv.data);
                            if pdv.is_last {
                                done = Some(response_status(&cmd));
                                cmd.clear();
                            }
                        }
                    }
                    if let Some(s) = done {
                        break s;
                    }
                }
                Ok(Pdu::AbortRQ { .. }) => return Err("peer aborted the association".into()),
                Ok(other) => {
                    let _ = assoc.abort().await;
                    return Err(format!("unexpected PDU {}", other.short_description()));
                }
                Err(e) => return Err(format!("no event report response: {e}")),
            }
        };
        let _ = assoc.release().await;
        match status {
            Some((N_EVENT_REPORT_RSP, 0x0000)) => Ok(()),
            Some((N_EVENT_REPORT_RSP, s)) => {
                // the peer has the report; a failure status is its business
                warn!(
                    status = %format!("{s:#06X}"),
                    "peer answered the event report with a non-success status"
                );
                Ok(())
            }
            _ => Err("peer answered with something else than N-EVENT-REPORT-RSP".into()),
        }
    }
}

/// (Command Field, Status) of a response command set.
pub fn response_status(command_set: &[u8]) -> Option<(u16, u16)> {
    crate::guard::check_command(command_set).ok()?;
    let obj =
        InMemDicomObject::read_dataset_with_ts(command_set, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .ok()?;
    let field = obj.get(tags::COMMAND_FIELD)?.uint16().ok()?;
    let status = obj.get(tags::STATUS)?.uint16().ok()?;
    Some((field, status))
}

/// The original SOP Instance UID of a spool file: its Media Storage SOP
/// Instance UID (the spool writes the one of the C-STORE command). Reads
/// only the file meta group.
pub fn original_sop_instance_uid(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = File::open(path).ok()?;
    let mut preamble = [0u8; 128];
    f.read_exact(&mut preamble).ok()?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(io::BufReader::new(f)).ok()?;
    let uid = meta
        .media_storage_sop_instance_uid
        .trim_end_matches(['\0', ' '])
        .to_string();
    (!uid.is_empty()).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_bytes(tx: &str, refs: &[(&str, &str)]) -> Vec<u8> {
        let items: Vec<_> = refs
            .iter()
            .map(|(c, i)| {
                InMemDicomObject::from_element_iter([
                    ui(tags::REFERENCED_SOP_CLASS_UID, c),
                    ui(tags::REFERENCED_SOP_INSTANCE_UID, i),
                ])
            })
            .collect();
        let obj = InMemDicomObject::from_element_iter([
            ui(tags::TRANSACTION_UID, tx),
            DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ),
        ]);
        let mut out = Vec::new();
        obj.write_dataset_with_ts(
            &mut out,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        out
    }

    fn service(ledger: &Arc<Ledger>, timeout_ms: u64) -> Arc<Commitment> {
        let mut c = Commitment::new(ledger.clone(), CommitmentConfig::default(), "MADO");
        c.timeout = Duration::from_millis(timeout_ms);
        Arc::new(c)
    }

    #[test]
    fn ledger_is_durable_and_ignores_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("commitment.log");
        let l = Ledger::open(&p).unwrap();
        l.record("1.2.3.4", State::Stored).unwrap();
        l.record("1.2.3.5", State::Failed).unwrap();
        l.record("1.2.3.5", State::Stored).unwrap();
        assert!(l.record("1.2/../3", State::Stored).is_err());
        drop(l);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"U 1.2.3.")
            .unwrap();
        let l = Ledger::open(&p).unwrap();
        assert_eq!(l.state("1.2.3.4"), Some(State::Stored));
        assert_eq!(l.state("1.2.3.5"), Some(State::Stored));
        assert_eq!(l.state("1.2.3.6"), None);
        assert_eq!(l.len(), 2);
        // the torn line does not swallow the next record
        l.record("1.2.3.7", State::Stored).unwrap();
        drop(l);
        let l = Ledger::open(&p).unwrap();
        assert_eq!(l.state("1.2.3.7"), Some(State::Stored));
        assert_eq!(l.len(), 3);
        drop(l);

        // bounded: beyond the cap the oldest half goes, on disk too
        let l = Ledger::open_with_cap(&p, 4).unwrap();
        for i in 0..3 {
            l.record(&format!("1.2.4.{i}"), State::Stored).unwrap();
        }
        // 3 + 2 = 5 > 4: compacted to the newest 2, then one more
        assert_eq!(l.len(), 3);
        assert_eq!(l.state("1.2.3.4"), None);
        assert_eq!(l.state("1.2.4.0"), Some(State::Stored));
        assert_eq!(l.state("1.2.4.2"), Some(State::Stored));
        assert_eq!(l.entries_in_file(), 3);
        drop(l);
        assert_eq!(Ledger::open_with_cap(&p, 4).unwrap().len(), 3);
    }

    #[test]
    fn parses_requests_and_refuses_bad_ones() {
        let ts = uids::EXPLICIT_VR_LITTLE_ENDIAN;
        let r = parse_request(
            &request_bytes("1.2.9", &[(uids::CT_IMAGE_STORAGE, "1.2.3.4")]),
            ts,
            10,
        )
        .unwrap();
        assert_eq!(r.transaction_uid, "1.2.9");
        assert_eq!(r.references.len(), 1);
        assert_eq!(
            parse_request(&request_bytes("1.2.9", &[]), ts, 10).unwrap_err(),
            STATUS_INVALID_ARGUMENT
        );
        assert!(parse_request(b"\x08\x00\x95\x11UI\xff\xff", ts, 10).is_err());
        let no_tx = {
            let mut out = Vec::new();
            InMemDicomObject::from_element_iter([ui(tags::PATIENT_ID, "X")])
                .write_dataset_with_ts(
                    &mut out,
                    &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                )
                .unwrap();
            out
        };
        assert_eq!(
            parse_request(&no_tx, ts, 10).unwrap_err(),
            STATUS_MISSING_ATTRIBUTE
        );
        // more references than allowed: resource limitation
        let three: Vec<(&str, &str)> = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
            .iter()
            .map(|s| (uids::CT_IMAGE_STORAGE, *s))
            .collect();
        assert_eq!(
            parse_request(&request_bytes("1.2.9", &three), ts, 2).unwrap_err(),
            STATUS_RESOURCE_LIMITATION
        );
        // nested 1,500 deep, or an element declaring 4 GiB: refused before parsing
        let deep = crate::guard::tests::nested(1500, true);
        assert_eq!(
            parse_request(&deep, ts, 10).unwrap_err(),
            STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            parse_request(b"\x08\x00\x95\x11UN\0\0\xf0\xff\xff\xff", ts, 10).unwrap_err(),
            STATUS_INVALID_ARGUMENT
        );
    }

    /// Transactions waiting for their instances are bounded: beyond
    /// `max_pending_transactions` (and beyond `max_parsed_bytes` of data) an
    /// N-ACTION is refused with 0x0213, and a slot frees once a transaction
    /// is resolved; after a restart only that many are resumed.
    #[tokio::test]
    async fn pending_transactions_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&Ledger::path_in(dir.path())).unwrap());
        let cfg = CommitmentConfig {
            max_pending_transactions: 2,
            ..CommitmentConfig::default()
        };
        let c = Arc::new(Commitment::new(ledger.clone(), cfg.clone(), "MADO"));
        let action = |tx: &str, sop: &str| PendingAction {
            pc_id: 1,
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            command: ActionCommand {
                message_id: 7,
                requested_sop_class: Some(SOP_CLASS.into()),
                action_type_id: Some(1),
                has_data_set: true,
            },
            data: request_bytes(tx, &[(uids::CT_IMAGE_STORAGE, sop)]),
            limit: 1 << 20,
            oversize: false,
        };
        let status = |rsp: Vec<u8>| response_status(&rsp).map(|(_, s)| s);
        let (tx, _rx) = mpsc::unbounded_channel();
        for i in 1..=2 {
            let rsp = c
                .on_action(
                    action(&format!("1.2.9.{i}"), &format!("1.2.3.{i}")),
                    "MOD",
                    tx.clone(),
                )
                .await;
            assert_eq!(status(rsp), Some(STATUS_SUCCESS));
        }
        let rsp = c
            .on_action(action("1.2.9.3", "1.2.3.3"), "MOD", tx.clone())
            .await;
        assert_eq!(status(rsp), Some(STATUS_RESOURCE_LIMITATION));
        assert!(!dir.path().join(PENDING_DIR).join("1.2.9.3.json").exists());
        // a data set over the limit
        let mut big = action("1.2.9.4", "1.2.3.4");
        big.data.clear();
        big.limit = 16;
        big.push(&[0u8; 10]);
        big.push(&[0u8; 10]);
        assert!(big.oversize && big.data.is_empty());
        ledger.record("1.2.3.1", State::Stored).unwrap();
        // the resolved one frees its slot
        let t0 = std::time::Instant::now();
        loop {
            let rsp = c
                .on_action(action("1.2.9.5", "1.2.3.5"), "MOD", tx.clone())
                .await;
            if status(rsp) == Some(STATUS_SUCCESS) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "slot never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rsp = c.on_action(big, "MOD", tx.clone()).await;
        assert_eq!(status(rsp), Some(STATUS_RESOURCE_LIMITATION));
        // restart with three transactions on disk and room for two
        std::fs::copy(
            dir.path().join(PENDING_DIR).join("1.2.9.2.json"),
            dir.path().join(PENDING_DIR).join("1.2.9.6.json"),
        )
        .unwrap();
        let files = || {
            std::fs::read_dir(dir.path().join(PENDING_DIR))
                .unwrap()
                .count()
        };
        assert!(files() >= 3, "{}", files());
        let ledger = Arc::new(Ledger::open(&Ledger::path_in(dir.path())).unwrap());
        let restarted = Arc::new(Commitment::new(ledger, cfg, "MADO"));
        assert_eq!(restarted.resume(), 2);
    }

    /// An accepted transaction is on disk before its success status, is
    /// forgotten once its report is sent, and a new service over the same
    /// spool (a restart) answers what was left.
    #[tokio::test]
    async fn accepted_transactions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&Ledger::path_in(dir.path())).unwrap());
        let pending = dir.path().join(PENDING_DIR);
        let action = |tx: &str, sop: &str| PendingAction {
            pc_id: 1,
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            command: ActionCommand {
                message_id: 7,
                requested_sop_class: Some(SOP_CLASS.into()),
                action_type_id: Some(1),
                has_data_set: true,
            },
            data: request_bytes(tx, &[(uids::CT_IMAGE_STORAGE, sop)]),
            limit: 1 << 20,
            oversize: false,
        };
        let c = service(&ledger, 60_000);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rsp = c.on_action(action("1.2.9.1", "1.2.3.1"), "MOD", tx).await;
        assert_eq!(response_status(&rsp), Some((N_ACTION_RSP, STATUS_SUCCESS)));
        let file = pending.join("1.2.9.1.json");
        assert!(file.is_file());
        ledger.record("1.2.3.1", State::Stored).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(file.is_file(), "queued is not sent");
        c.sent(&report.outcome);
        assert!(!file.exists());

        // accepted, then the process dies before the answer
        let (tx, rx) = mpsc::unbounded_channel();
        let rsp = c.on_action(action("1.2.9.2", "1.2.3.2"), "MOD", tx).await;
        assert_eq!(response_status(&rsp), Some((N_ACTION_RSP, STATUS_SUCCESS)));
        drop(rx);
        let file = pending.join("1.2.9.2.json");
        assert!(file.is_file());
        std::fs::write(pending.join("1.2.9.3.json"), b"{torn").unwrap();
        // the old service's task never sees this ledger's records
        let ledger = Arc::new(Ledger::open(&Ledger::path_in(dir.path())).unwrap());
        let restarted = service(&ledger, 60_000);
        assert_eq!(restarted.resume(), 1);
        assert!(
            !pending.join("1.2.9.3.json").exists(),
            "unreadable file dropped"
        );
        // (no [commitment.peers] entry for MOD here: once resolved the
        // report can never be delivered and the transaction is dropped)
        ledger.record("1.2.3.2", State::Stored).unwrap();
        let t0 = std::time::Instant::now();
        while file.exists() && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn resolves_when_uploaded_or_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&dir.path().join("c.log")).unwrap());
        let c = service(&ledger, 5_000);
        let req = Request {
            transaction_uid: "1.2.9".into(),
            references: vec![
                Reference {
                    sop_class: uids::CT_IMAGE_STORAGE.into(),
                    sop_instance: "1.2.3.1".into(),
                },
                Reference {
                    sop_class: uids::CT_IMAGE_STORAGE.into(),
                    sop_instance: "1.2.3.2".into(),
                },
            ],
        };
        let l2 = ledger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            l2.record("1.2.3.1", State::Stored).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            l2.record("1.2.3.2", State::Stored).unwrap();
        });
        let started = std::time::Instant::now();
        let o = c.resolve(req.clone()).await;
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!((o.event_type(), o.committed.len()), (1, 2));

        // an unknown instance: event type 2 after the timeout, reason 0x0112
        let c = service(&ledger, 200);
        let mut req2 = req.clone();
        req2.references[1].sop_instance = "1.2.3.99".into();
        ledger.record("1.2.3.1", State::Stored).unwrap();
        let o = c.resolve(req2).await;
        assert_eq!(o.event_type(), 2);
        assert_eq!(o.failed.len(), 1);
        assert_eq!(o.failed[0].1, FAILURE_NO_SUCH_INSTANCE);
        let ds = o.dataset();
        assert_eq!(
            ds.get(tags::FAILED_SOP_SEQUENCE)
                .and_then(|e| e.items())
                .unwrap()
                .len(),
            1
        );
        // the report splits into PDUs within the peer's max PDU
        let big = Outcome {
            transaction_uid: "1.2.9".into(),
            committed: (0..500)
                .map(|i| Reference {
                    sop_class: uids::CT_IMAGE_STORAGE.into(),
                    sop_instance: format!("1.2.3.{i}"),
                })
                .collect(),
            failed: vec![],
        };
        let rep = Report::encode(Arc::new(big), 3, uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
        let pdus = rep.pdus(4096);
        assert!(pdus.len() > 3);
        for p in &pdus {
            let Pdu::PData { data } = p else { panic!() };
            assert!(data[0].data.len() + 6 <= 4096);
        }
    }
}
