//! The DIMSE SCP: Verification (C-ECHO) and Storage (C-STORE).
//!
//! One task per connection. Every connection is accepted at once (the
//! listen queue never fills) and counted against its source address
//! (`dicom.max_connections_per_peer`, beyond: closed at once) and, until
//! its association is established, against the pre-association budget
//! (`dicom.max_pending_connections`, beyond: the oldest still negotiating
//! is dropped); only an established association takes one of the
//! `dicom.max_associations` slots. The A-ASSOCIATE-RQ must be complete
//! within `dicom.association_timeout_secs`.
//!
//! Time limits on an association: the next DIMSE message must begin
//! within `dicom.idle_timeout_secs`; once begun, every PDU of it must arrive
//! by `pdu_timeout_secs` plus the message's bytes so far at
//! `min_bytes_per_sec` (counted from the message's first PDU), so a peer
//! trickling bytes cannot hold a slot. A data set over
//! `dicom.max_instance_bytes` aborts the association (temp file removed).
//! Each association gets a span with its id, peer address and calling AE
//! title; a malformed PDU or command ends the association (A-ABORT), never
//! the process.

use crate::config::DicomConfig;
use crate::dimse::{self, Command};
use crate::sop_classes::STORAGE_SOP_CLASSES;
use crate::spool::{Expected, Incoming, Spool, SpoolError};
use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::association::{AsyncAssociation as _, AsyncServerAssociation};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, warn, Instrument};

/// Who may open an association: the Called AE Title (when checked) and the
/// calling AE allow-list, each entry optionally bound to source networks.
/// Rejections carry the PS3.8 reasons: calling AE title not recognized (3),
/// called AE title not recognized (7), both "rejected-permanent".
#[derive(Debug, Clone)]
pub struct PeerAccess {
    check_called: bool,
    /// Empty: anyone may send.
    allowed: Arc<Vec<(String, Vec<ipnet::IpNet>)>>,
    /// Source address of the connection being negotiated.
    peer: Option<IpAddr>,
}

impl PeerAccess {
    pub fn new(cfg: &DicomConfig) -> Self {
        let allowed = cfg
            .allowed
            .iter()
            .map(|a| {
                (
                    a.ae_title.trim().to_string(),
                    // validated by GatewayConfig::validate
                    a.networks().unwrap_or_default(),
                )
            })
            .collect();
        Self {
            check_called: cfg.check_called_ae_title,
            allowed: Arc::new(allowed),
            peer: None,
        }
    }

    fn for_peer(&self, peer: IpAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    /// Is `calling` allowed from this peer?
    fn calling_allowed(&self, calling: &str) -> bool {
        if self.allowed.is_empty() {
            return true;
        }
        let calling = calling.trim();
        self.allowed.iter().any(|(ae, nets)| {
            ae == calling
                && (nets.is_empty()
                    || self
                        .peer
                        .is_some_and(|ip| nets.iter().any(|n| n.contains(&canonical(ip)))))
        })
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl AccessControl for PeerAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if self.check_called && called_ae_title.trim() != this_ae_title.trim() {
            warn!(
                called_ae = called_ae_title.trim(),
                "association rejected: called AE title not recognized"
            );
            metrics::counter!(crate::admin::names::ASSOCIATIONS_REJECTED, "reason" => "called-ae")
                .increment(1);
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.calling_allowed(calling_ae_title) {
            warn!(
                calling_ae = calling_ae_title.trim(),
                "association rejected: calling AE title not allowed from this address"
            );
            metrics::counter!(crate::admin::names::ASSOCIATIONS_REJECTED, "reason" => "calling-ae")
                .increment(1);
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

type Options = ServerAssociationOptions<'static, PeerAccess, DefaultNegotiation>;

/// The transport under an association: plain TCP or TLS over TCP.
pub trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Transport for T {}

/// Shared state of the SCP.
pub struct Scp {
    /// With a TLS server configuration when `[dicom.tls]` is set.
    options: Options,
    access: PeerAccess,
    idle: Duration,
    /// `[dicom]`, for its limits.
    limits: DicomConfig,
    spool: Spool,
    /// Spool ids of newly acknowledged instances, for the upload worker.
    wake: mpsc::UnboundedSender<String>,
    /// Storage Commitment Push Model (`[commitment]`), when enabled.
    commitment: Option<Arc<crate::commitment::Commitment>>,
}

/// The registry's entry for a negotiated transfer syntax UID (NUL/space
/// padding trimmed), if it can read it: the same set as
/// [`transfer_syntaxes`].
pub fn readable_transfer_syntax(uid: &str) -> Option<&'static dicom_encoding::TransferSyntax> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    TransferSyntaxRegistry
        .get(uid.trim_end_matches(['\0', ' ']))
        .filter(|ts| !ts.is_unsupported())
}

/// Transfer syntaxes we accept: every one the registry can read (data sets
/// are stored as received, never transcoded).
pub fn transfer_syntaxes() -> Vec<&'static str> {
    TransferSyntaxRegistry
        .iter()
        .filter(|ts| !ts.is_unsupported())
        .map(|ts| ts.uid())
        .collect()
}

impl Scp {
    pub fn new(cfg: &DicomConfig, spool: Spool, wake: mpsc::UnboundedSender<String>) -> Self {
        let access = PeerAccess::new(cfg);
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(access.clone())
            .ae_title(cfg.ae_title.clone())
            .max_pdu_length(cfg.max_pdu)
            .strict(true)
            .promiscuous(false)
            .write_timeout(cfg.idle_timeout())
            .with_abstract_syntax(uids::VERIFICATION);
        for (uid, _name) in STORAGE_SOP_CLASSES {
            options = options.with_abstract_syntax(*uid);
        }
        for uid in &cfg.extra_sop_classes {
            options = options.with_abstract_syntax(uid.trim().to_string());
        }
        for ts in transfer_syntaxes() {
            options = options.with_transfer_syntax(ts);
        }
        Self {
            options,
            access,
            idle: cfg.idle_timeout(),
            limits: cfg.clone(),
            spool,
            wake,
            commitment: None,
        }
    }

    /// Offer the Storage Commitment Push Model SOP class (`[commitment]`).
    pub fn with_commitment(mut self, c: Arc<crate::commitment::Commitment>) -> Self {
        self.options = self
            .options
            .with_abstract_syntax(crate::commitment::SOP_CLASS);
        self.commitment = Some(c);
        self
    }

    /// Enable the TLS listener's handshake (`[dicom.tls]`).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.options = self.options.tls_config(config);
        self
    }

    /// Accept associations on `listener` (plain) and `tls_listener` (TLS
    /// handshake first) until `shutdown` completes, then stop accepting and
    /// give running associations `grace` to finish before aborting them.
    /// Both listeners share the `max_associations` slots, the per-peer
    /// limit and the pre-association budget.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls_listener: Option<TcpListener>,
        max_associations: usize,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let slots = Arc::new(Semaphore::new(max_associations));
        let negotiating: Negotiating = Arc::default();
        let peers: PeerCounts = Arc::default();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let tls_accept = async {
                match &tls_listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a.map(|x| (x, false)),
                a = tls_accept => a.map(|x| (x, true)),
            };
            let ((socket, peer), tls) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while let Some(res) = tasks.try_join_next() {
                if let Err(e) = res {
                    if !e.is_cancelled() {
                        warn!(error = %e, "association task failed");
                    }
                }
            }
            let Some(peer_slot) = PeerSlot::take(
                &peers,
                canonical(peer.ip()),
                self.limits.max_connections_per_peer,
            ) else {
                warn!(peer = %peer.ip(), "connection closed: too many connections from this address");
                metrics::counter!(crate::admin::names::ASSOCIATIONS_REJECTED, "reason" => "per-peer-limit")
                    .increment(1);
                continue;
            };
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let span = info_span!("association", id, peer = %peer, tls, calling_ae = tracing::field::Empty);
            let slots = slots.clone();
            let negotiation = NegotiationSlot {
                id,
                map: negotiating.clone(),
            };
            let mut open = negotiating.lock().unwrap_or_else(PoisonError::into_inner);
            if open.len() >= self.limits.max_pending_connections {
                // shed the oldest connection still negotiating: a real
                // peer's A-ASSOCIATE-RQ arrives within milliseconds
                if let Some((_, oldest)) = open.pop_first() {
                    oldest.abort();
                    info!("too many connections without an association: the oldest dropped");
                    metrics::counter!(crate::admin::names::ASSOCIATIONS_REJECTED, "reason" => "pre-association-budget")
                        .increment(1);
                }
            }
            let handle = tasks.spawn(
                async move {
                    let _peer_slot = peer_slot;
                    this.handle(socket, peer.ip(), tls, negotiation, &slots)
                        .await;
                }
                .instrument(span),
            );
            open.insert(id, handle);
        }
        drop(listener);
        drop(tls_listener);
        if !tasks.is_empty() {
            info!(
                running = tasks.len(),
                "waiting for running associations to finish"
            );
            let drained =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
            if drained.is_err() {
                warn!(aborted = tasks.len(), "aborting associations still running");
                tasks.shutdown().await;
            }
        }
    }

    async fn handle(
        &self,
        socket: TcpStream,
        peer: IpAddr,
        tls: bool,
        negotiation: NegotiationSlot,
        slots: &Arc<Semaphore>,
    ) {
        if let Err(e) = socket.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let options = self
            .options
            .clone()
            .ae_access_control(self.access.for_peer(peer));
        // same negotiation and association handling on both listeners; the
        // TLS one runs the handshake first (client certificate checked by
        // rustls when `client_ca` is set)
        if tls {
            self.associate(options.establish_tls_async(socket), negotiation, slots)
                .await;
        } else {
            self.associate(options.establish_async(socket), negotiation, slots)
                .await;
        }
    }

    /// Negotiate the association (bounded by the association timeout),
    /// take an association slot (waiting at most as long again) and run it.
    async fn associate<S: Transport, E: std::fmt::Display>(
        &self,
        establish: impl std::future::Future<Output = Result<AsyncServerAssociation<S>, E>>,
        negotiation: NegotiationSlot,
        slots: &Arc<Semaphore>,
    ) {
        let setup = self.limits.association_timeout();
        let assoc = match tokio::time::timeout(setup, establish).await {
            Err(_) => {
                info!("association request not complete in time; connection closed");
                metrics::counter!(crate::admin::names::ASSOCIATIONS_REJECTED, "reason" => "association-timeout")
                    .increment(1);
                return;
            }
            Ok(Err(e)) => {
                info!(error = %e, "association not established");
                return;
            }
            Ok(Ok(a)) => a,
        };
        let _permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(setup, slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    warn!("no association slot free; aborting");
                    let _ = assoc.abort().await;
                    return;
                }
            },
        };
        // established: no longer shed with the connections still negotiating
        drop(negotiation);
        let calling_ae = {
            use dicom_ul::association::Association as _;
            assoc.peer_ae_title().trim().to_string()
        };
        tracing::Span::current().record("calling_ae", calling_ae.as_str());
        let accepted = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        metrics::counter!(crate::admin::names::ASSOCIATIONS).increment(1);
        info!(
            accepted_contexts = accepted,
            peer_max_pdu = assoc.requestor_max_pdu_length(),
            "association established"
        );
        let mut session = Session {
            scp: self,
            calling_ae,
            cmd_buf: Vec::new(),
            pending: None,
            spare: Vec::new(),
            action: None,
            reports: mpsc::unbounded_channel(),
            stored: 0,
            failed: 0,
            bytes: 0,
            deadline: tokio::time::Instant::now(),
            message: None,
        };
        let started = Instant::now();
        let end = session.run(assoc).await;
        session.hand_over_reports();
        info!(
            stored = session.stored,
            failed = session.failed,
            bytes = session.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            end,
            "association closed"
        );
    }
}

/// Connections without an association yet (by id, oldest first), so that
/// the oldest can be dropped when the pre-association budget is full.
type Negotiating = Arc<Mutex<BTreeMap<u64, tokio::task::AbortHandle>>>;

/// A connection's place in [`Negotiating`], left when dropped.
struct NegotiationSlot {
    id: u64,
    map: Negotiating,
}

impl Drop for NegotiationSlot {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Open connections per source address.
type PeerCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One of a source address's `max_connections_per_peer`, released when
/// dropped.
struct PeerSlot {
    ip: IpAddr,
    counts: PeerCounts,
}

impl PeerSlot {
    fn take(counts: &PeerCounts, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            ip,
            counts: counts.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A C-STORE whose data set is being received.
struct PendingStore {
    pc_id: u8,
    message_id: u16,
    announced: Arc<Announced>,
}

/// P-DATA-TF PDU type (PS3.8 9.3.5).
const PDATA_TF: u8 = 0x04;
/// Size of the buffers a data set is streamed to the spool in: one is
/// written on the blocking pool while the next fills from the socket.
const CHUNK: usize = 256 * 1024;

/// A spool file being written on the blocking pool (or just begun); yields
/// the file and the buffer it wrote, for reuse.
type FileTask = tokio::task::JoinHandle<Result<(Incoming, Option<Vec<u8>>), SpoolError>>;

/// Why a C-STORE is answered with a failure before its data set ended.
enum Refusal {
    /// Decided from the command (already logged).
    Status(u16),
    Spool(SpoolError),
}

/// What a C-STORE command announced, for the spool (shared with the
/// blocking tasks that write its file).
struct Announced {
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    calling_ae: String,
}

impl Announced {
    fn expected(&self) -> Expected<'_> {
        Expected {
            sop_class_uid: &self.sop_class,
            sop_instance_uid: &self.sop_instance,
            transfer_syntax_uid: &self.transfer_syntax,
            calling_ae: &self.calling_ae,
        }
    }
}

/// The receiving side of a C-STORE: its data set is streamed into an
/// `incoming/` spool file as the P-DATA fragments arrive (no assembly of
/// the whole data set in memory).
struct Receiving {
    p: PendingStore,
    /// Bytes read from the socket, not yet handed to the spool file.
    chunk: Vec<u8>,
    /// The spool file, begun with the first full chunk (or at the end of a
    /// data set smaller than one): `None` before, or once refused.
    file: Option<FileTask>,
    /// Set: the rest of the data set is read and dropped, then this answered.
    refused: Option<Refusal>,
    received: u64,
}

async fn join_file(task: FileTask) -> Result<(Incoming, Option<Vec<u8>>), SpoolError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(SpoolError::Io(std::io::Error::other(format!(
            "spool task failed: {e}"
        )))),
    }
}

impl Receiving {
    /// Hand the filled chunk to the spool file (written on the blocking pool
    /// while the caller reads on; the first one begins the file) and
    /// continue in an empty buffer.
    async fn flush(&mut self, spool: &Spool, spare: &mut Vec<Vec<u8>>) {
        let next = spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
        let mut buf = std::mem::replace(&mut self.chunk, next);
        if self.refused.is_some() || buf.is_empty() {
            buf.clear();
            spare.push(buf);
            return;
        }
        let inc = match self.file.take() {
            None => None,
            Some(task) => match join_file(task).await {
                Ok((inc, old)) => {
                    if let Some(mut old) = old {
                        old.clear();
                        spare.push(old);
                    }
                    Some(inc)
                }
                Err(e) => {
                    // e.g. disk full: keep reading the data set, answer 0xA7xx
                    self.refused = Some(Refusal::Spool(e));
                    buf.clear();
                    spare.push(buf);
                    return;
                }
            },
        };
        let (spool, announced) = (spool.clone(), self.p.announced.clone());
        self.file = Some(tokio::task::spawn_blocking(move || {
            let mut inc = match inc {
                Some(inc) => inc,
                None => spool.begin(&announced.expected())?,
            };
            inc.write(&buf)?;
            Ok((inc, Some(buf)))
        }));
    }
}

struct Session<'a> {
    scp: &'a Scp,
    calling_ae: String,
    cmd_buf: Vec<u8>,
    /// The C-STORE whose data set is being received.
    pending: Option<Receiving>,
    /// Chunk buffers, reused across instances.
    spare: Vec<Vec<u8>>,
    /// Storage commitment: an N-ACTION-RQ whose data set is being received,
    /// and the reports to send on this association (see `commitment`).
    action: Option<crate::commitment::PendingAction>,
    reports: (crate::commitment::ReportTx, crate::commitment::ReportRx),
    stored: u64,
    failed: u64,
    bytes: u64,
    /// When the PDU being read must be complete.
    deadline: tokio::time::Instant,
    /// The DIMSE message being received: when its first PDU began, and its
    /// bytes so far (PDU and item headers included), for the minimum rate.
    message: Option<(tokio::time::Instant, u64)>,
}

#[derive(Debug, thiserror::Error)]
enum ProtocolError {
    #[error(transparent)]
    Command(#[from] dimse::CommandError),
    #[error("{0}")]
    Unexpected(String),
    #[error("sending a response failed: {0}")]
    Send(String),
    #[error("cannot receive: {0}")]
    Receive(std::io::Error),
    #[error("data set larger than max_instance_bytes ({0} bytes)")]
    TooLarge(u64),
}

/// Wait until the next PDU's header is buffered; returns its type and
/// length. Once its first byte is there, the rest of the header must follow
/// within `rest` (`TimedOut`). Cancel-safe: bytes read stay in the
/// association's read buffer.
async fn next_pdu_header<S: Transport>(
    assoc: &mut AsyncServerAssociation<S>,
    rest: Duration,
) -> std::io::Result<(u8, u32)> {
    use tokio::io::AsyncReadExt;
    let (sock, rbuf) = assoc.get_mut();
    let mut by = None;
    while rbuf.len() < 6 {
        if !rbuf.is_empty() && by.is_none() {
            by = Some(tokio::time::Instant::now() + rest);
        }
        // only the header: the data set is read straight into its chunk
        let want = (6 - rbuf.len()) as u64;
        let mut limited = (&mut *sock).take(want);
        let read = limited.read_buf(rbuf);
        let n = match by {
            None => read.await?,
            Some(by) => tokio::time::timeout_at(by, read)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((
        rbuf[0],
        u32::from_be_bytes([rbuf[2], rbuf[3], rbuf[4], rbuf[5]]),
    ))
}

/// Read exactly `out.len()` bytes by `deadline`: buffered ones first, then
/// the socket.
async fn read_exact<S: Transport>(
    assoc: &mut AsyncServerAssociation<S>,
    deadline: tokio::time::Instant,
    out: &mut [u8],
) -> Result<(), ProtocolError> {
    use bytes::Buf;
    use tokio::io::AsyncReadExt;
    let (sock, rbuf) = assoc.get_mut();
    let n = rbuf.len().min(out.len());
    out[..n].copy_from_slice(&rbuf[..n]);
    rbuf.advance(n);
    if n < out.len() {
        match tokio::time::timeout_at(deadline, sock.read_exact(&mut out[n..])).await {
            Err(_) => return Err(ProtocolError::Receive(std::io::ErrorKind::TimedOut.into())),
            Ok(Err(e)) => return Err(ProtocolError::Receive(e)),
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}

impl Session<'_> {
    /// Drive the association to its end; returns how it ended.
    async fn run<S: Transport>(&mut self, mut assoc: AsyncServerAssociation<S>) -> &'static str {
        // (how it ended, whether to send A-ABORT)
        let (end, abort) = self.run_inner(&mut assoc).await;
        if abort {
            let _ = assoc.abort().await;
        }
        // a data set cut off: its temp file is gone before the association is
        if let Some(rx) = self.pending.take() {
            if let Some(task) = rx.file {
                let _ = join_file(task).await;
            }
        }
        end
    }

    async fn run_inner<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
    ) -> (&'static str, bool) {
        loop {
            // between messages: the idle timeout; within one: its rate
            let wait = match self.message {
                None => tokio::time::Instant::now() + self.scp.idle,
                Some((start, bytes)) => start + self.scp.limits.pdu_time(bytes + 6),
            };
            let received = tokio::select! {
                r = tokio::time::timeout_at(
                    wait,
                    next_pdu_header(assoc, self.scp.limits.pdu_time(0)),
                ) => r,
                // storage commitment result for this association
                // (next_pdu_header is cancel-safe; P-DATA is then read whole)
                Some(report) = self.reports.1.recv() => {
                    self.send_report(assoc, report).await;
                    continue;
                }
            };
            let (kind, len) = match received {
                Err(_) if self.message.is_some() => {
                    warn!("DIMSE message arriving too slowly; aborting");
                    return ("too-slow", true);
                }
                Err(_) => {
                    warn!("association idle for too long; aborting");
                    return ("idle-timeout", true);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    info!("connection closed by peer without release");
                    return ("closed", false);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    warn!("PDU header arriving too slowly; aborting");
                    return ("too-slow", true);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot receive PDU; aborting");
                    return ("receive-error", true);
                }
                Ok(Ok(h)) => h,
            };
            if kind == PDATA_TF {
                let now = tokio::time::Instant::now();
                let (start, bytes) = self.message.get_or_insert((now, 0));
                *bytes += 6 + u64::from(len);
                self.deadline = *start + self.scp.limits.pdu_time(*bytes);
                let r = self.on_pdata(assoc).await;
                if self.pending.is_none() && self.action.is_none() && self.cmd_buf.is_empty() {
                    // the message is complete: the idle timeout again
                    self.message = None;
                }
                match r {
                    Ok(()) => continue,
                    Err(ProtocolError::Receive(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        warn!("DIMSE message arriving too slowly; aborting");
                        return ("too-slow", true);
                    }
                    Err(ProtocolError::Receive(e)) => {
                        warn!(error = %e, "cannot receive P-DATA; aborting");
                        return ("receive-error", true);
                    }
                    Err(ProtocolError::TooLarge(max)) => {
                        warn!(
                            max_instance_bytes = max,
                            "data set larger than max_instance_bytes; aborting"
                        );
                        metrics::counter!(crate::admin::names::INSTANCES_REFUSED, "status" => "too-large")
                            .increment(1);
                        return ("too-large", true);
                    }
                    Err(e) => {
                        warn!(error = %e, "protocol error; aborting association");
                        return ("protocol-error", true);
                    }
                }
            }
            // other PDUs are small (at most max_pdu, checked by dicom-ul)
            let deadline = tokio::time::Instant::now() + self.scp.limits.pdu_time(u64::from(len));
            let pdu = match tokio::time::timeout_at(deadline, assoc.receive()).await {
                Err(_) => {
                    warn!("PDU arriving too slowly; aborting");
                    return ("too-slow", true);
                }
                Ok(Err(dicom_ul::association::Error::ConnectionClosed { .. })) => {
                    info!("connection closed by peer without release");
                    return ("closed", false);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot receive PDU; aborting");
                    return ("receive-error", true);
                }
                Ok(Ok(pdu)) => pdu,
            };
            match pdu {
                Pdu::ReleaseRQ => {
                    if let Err(e) = assoc.send(&Pdu::ReleaseRP).await {
                        debug!(error = %e, "cannot send A-RELEASE-RP");
                    }
                    return ("released", false);
                }
                Pdu::AbortRQ { .. } => {
                    info!("association aborted by peer");
                    return ("aborted-by-peer", false);
                }
                other => {
                    warn!(pdu = %other.short_description(), "unexpected PDU; aborting");
                    return ("unexpected-pdu", true);
                }
            }
        }
    }

    /// Read one P-DATA-TF PDU (its header is buffered): command fragments
    /// are collected, data set fragments of a C-STORE streamed to the spool.
    async fn on_pdata<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
    ) -> Result<(), ProtocolError> {
        let deadline = self.deadline;
        let mut hdr = [0u8; 6];
        read_exact(assoc, deadline, &mut hdr).await?;
        let len = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]);
        if len > assoc.acceptor_max_pdu_length() {
            return Err(ProtocolError::Unexpected(format!(
                "P-DATA-TF of {len} bytes exceeds the negotiated maximum PDU length"
            )));
        }
        if len == 0 {
            // PS3.8 9.3.5: one or more PDV items (an empty one would only
            // keep the association alive)
            return Err(ProtocolError::Unexpected(
                "P-DATA-TF without PDV items".into(),
            ));
        }
        let mut remaining = u64::from(len);
        while remaining > 0 {
            if remaining < 6 {
                return Err(ProtocolError::Unexpected("truncated PDV item".into()));
            }
            read_exact(assoc, deadline, &mut hdr).await?;
            let item_len = u64::from(u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
            if item_len < 2 || item_len + 4 > remaining {
                return Err(ProtocolError::Unexpected(format!(
                    "PDV item length {item_len} does not fit its PDU"
                )));
            }
            remaining -= item_len + 4;
            let (pc_id, control) = (hdr[4], hdr[5]);
            let is_last = control & 0x02 != 0;
            let len = (item_len - 2) as usize;
            if control & 0x01 != 0 {
                self.on_command_fragment(assoc, pc_id, len, is_last).await?;
            } else {
                self.on_data_fragment(assoc, pc_id, len, is_last).await?;
            }
        }
        Ok(())
    }

    async fn on_command_fragment<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pc_id: u8,
        len: usize,
        is_last: bool,
    ) -> Result<(), ProtocolError> {
        if self.pending.is_some() || self.action.is_some() {
            return Err(ProtocolError::Unexpected(
                "command received while a data set was expected".into(),
            ));
        }
        if self.cmd_buf.len() + len > self.scp.limits.max_parsed_bytes {
            return Err(ProtocolError::Unexpected(
                "command set larger than max_parsed_bytes".into(),
            ));
        }
        // grown as the bytes arrive, never ahead of them
        let mut left = len;
        while left > 0 {
            let start = self.cmd_buf.len();
            let n = left.min(16 * 1024);
            self.cmd_buf.resize(start + n, 0);
            read_exact(assoc, self.deadline, &mut self.cmd_buf[start..]).await?;
            left -= n;
        }
        if !is_last {
            return Ok(());
        }
        let cmd = Command::parse(&self.cmd_buf);
        self.cmd_buf.clear();
        let cmd = cmd?;
        self.on_command(assoc, pc_id, cmd).await
    }

    async fn on_data_fragment<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pc_id: u8,
        len: usize,
        is_last: bool,
    ) -> Result<(), ProtocolError> {
        if self.action.is_some() {
            // a small data set (storage commitment request): in memory, up
            // to max_parsed_bytes, read in pieces as it arrives
            let mut left = len;
            let mut piece = vec![0u8; len.min(16 * 1024)];
            while left > 0 {
                let n = left.min(piece.len());
                read_exact(assoc, self.deadline, &mut piece[..n]).await?;
                left -= n;
                let pdv = PDataValue {
                    presentation_context_id: pc_id,
                    value_type: PDataValueType::Data,
                    is_last: is_last && left == 0,
                    data: piece[..n].to_vec(),
                };
                self.on_action_data(assoc, pdv).await?;
            }
            if len == 0 && is_last {
                let pdv = PDataValue {
                    presentation_context_id: pc_id,
                    value_type: PDataValueType::Data,
                    is_last,
                    data: Vec::new(),
                };
                self.on_action_data(assoc, pdv).await?;
            }
            return Ok(());
        }
        let deadline = self.deadline;
        let max = self.scp.limits.max_instance_bytes;
        let Some(rx) = self.pending.as_mut() else {
            return Err(ProtocolError::Unexpected(
                "data set fragment without a C-STORE command".into(),
            ));
        };
        if rx.p.pc_id != pc_id {
            return Err(ProtocolError::Unexpected(
                "data set on another presentation context than its command".into(),
            ));
        }
        if rx.received + len as u64 > max {
            // refused before reading on; the temp file goes with `pending`
            return Err(ProtocolError::TooLarge(max));
        }
        let mut left = len;
        while left > 0 {
            use bytes::Buf;
            use tokio::io::AsyncReadExt;
            let want = left.min(CHUNK - rx.chunk.len());
            let (sock, rbuf) = assoc.get_mut();
            let n = if !rbuf.is_empty() {
                let n = want.min(rbuf.len());
                rx.chunk.extend_from_slice(&rbuf[..n]);
                rbuf.advance(n);
                n
            } else {
                // straight from the socket into the chunk
                let mut limited = (&mut *sock).take(want as u64);
                match tokio::time::timeout_at(deadline, limited.read_buf(&mut rx.chunk)).await {
                    Err(_) => {
                        return Err(ProtocolError::Receive(std::io::ErrorKind::TimedOut.into()))
                    }
                    Ok(Err(e)) => return Err(ProtocolError::Receive(e)),
                    Ok(Ok(0)) => {
                        return Err(ProtocolError::Receive(
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ))
                    }
                    Ok(Ok(n)) => n,
                }
            };
            left -= n;
            rx.received += n as u64;
            if rx.chunk.len() >= CHUNK {
                rx.flush(&self.scp.spool, &mut self.spare).await;
            }
        }
        if is_last {
            if let Some(rx) = self.pending.take() {
                self.finish_store(assoc, rx).await?;
            }
        }
        Ok(())
    }

    async fn on_command<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pc_id: u8,
        cmd: Command,
    ) -> Result<(), ProtocolError> {
        match cmd.field {
            dimse::C_ECHO_RQ => {
                // C-ECHO reports health: failure when the spool cannot
                // take an instance (not writable, disk full).
                let spool = self.scp.spool.clone();
                let healthy = tokio::task::spawn_blocking(move || spool.probe())
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r);
                let status = match healthy {
                    Ok(()) => dimse::STATUS_SUCCESS,
                    Err(e) => {
                        warn!(error = %e, "C-ECHO: spool not writable; answering failure");
                        dimse::STATUS_PROCESSING_FAILURE
                    }
                };
                debug!(message_id = cmd.message_id, status, "C-ECHO");
                let rsp = dimse::echo_response_status(cmd.message_id, status)?;
                send_command(assoc, pc_id, rsp).await
            }
            dimse::C_STORE_RQ => {
                if !cmd.has_data_set {
                    return Err(ProtocolError::Unexpected(
                        "C-STORE-RQ without data set".into(),
                    ));
                }
                let pc = assoc
                    .presentation_contexts()
                    .iter()
                    .find(|pc| {
                        pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance
                    })
                    .ok_or_else(|| {
                        ProtocolError::Unexpected(format!(
                            "C-STORE-RQ on presentation context {pc_id}, which is not accepted"
                        ))
                    })?;
                let p = PendingStore {
                    pc_id,
                    message_id: cmd.message_id,
                    announced: Arc::new(Announced {
                        sop_class: cmd.affected_sop_class.unwrap_or_default(),
                        sop_instance: cmd.affected_sop_instance.unwrap_or_default(),
                        transfer_syntax: pc.transfer_syntax.clone(),
                        calling_ae: self.calling_ae.clone(),
                    }),
                };
                let a = &p.announced;
                let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
                let refused = if trim(&a.sop_class) != trim(&pc.abstract_syntax) {
                    warn!(
                        message_id = p.message_id,
                        "affected SOP class differs from the presentation context"
                    );
                    Some(Refusal::Status(dimse::STATUS_SOP_CLASS_NOT_SUPPORTED))
                } else if a.sop_instance.is_empty() {
                    warn!(
                        message_id = p.message_id,
                        "C-STORE-RQ without Affected SOP Instance UID"
                    );
                    Some(Refusal::Status(dimse::STATUS_CANNOT_UNDERSTAND))
                } else {
                    None
                };
                let chunk = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK));
                self.pending = Some(Receiving {
                    p,
                    chunk,
                    file: None,
                    refused,
                    received: 0,
                });
                Ok(())
            }
            crate::commitment::N_ACTION_RQ | crate::commitment::N_EVENT_REPORT_RSP => {
                self.on_commitment_command(assoc, pc_id, cmd).await
            }
            other => Err(ProtocolError::Unexpected(format!(
                "unsupported DIMSE command {other:#06x}"
            ))),
        }
    }

    async fn finish_store<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        mut rx: Receiving,
    ) -> Result<(), ProtocolError> {
        let size = rx.received;
        let tail = std::mem::take(&mut rx.chunk);
        let p = rx.p;
        let result = match rx.refused {
            Some(Refusal::Status(status)) => Err(status),
            Some(Refusal::Spool(e)) => Err(refused(p.message_id, &e)),
            None => {
                // the tail, the head check and fdatasync in one blocking
                // step (which also begins a file smaller than a chunk);
                // then the group commit (rename + directory fsync)
                let begun = match rx.file {
                    None => Ok(None),
                    Some(task) => join_file(task).await.map(|(inc, old)| {
                        if let Some(mut old) = old {
                            old.clear();
                            self.spare.push(old);
                        }
                        Some(inc)
                    }),
                };
                let finished = match begun {
                    Ok(inc) => {
                        let (spool, announced) = (self.scp.spool.clone(), p.announced.clone());
                        let done = tokio::task::spawn_blocking(move || {
                            let mut inc = match inc {
                                Some(inc) => inc,
                                None => spool.begin(&announced.expected())?,
                            };
                            inc.write(&tail)?;
                            inc.finish(&announced.expected())?;
                            Ok((inc, tail))
                        });
                        join_file_done(done).await
                    }
                    Err(e) => Err(e),
                };
                match finished {
                    Ok((inc, mut tail)) => {
                        tail.clear();
                        self.spare.push(tail);
                        match self.scp.spool.commit(inc).await {
                            Ok(spool_id) => Ok(spool_id),
                            Err(e) => Err(refused(p.message_id, &SpoolError::Io(e))),
                        }
                    }
                    Err(e) => Err(refused(p.message_id, &e)),
                }
            }
        };
        let status = match result {
            Ok(spool_id) => {
                debug!(
                    message_id = p.message_id,
                    spool_id = %spool_id,
                    sop_class = %p.announced.sop_class.trim_end_matches(['\0', ' ']),
                    bytes = size,
                    "instance spooled"
                );
                // the upload worker may be disabled: ignore a closed channel
                let _ = self.scp.wake.send(spool_id);
                dimse::STATUS_SUCCESS
            }
            Err(status) => status,
        };
        if status == dimse::STATUS_SUCCESS {
            self.stored += 1;
            self.bytes += size;
            metrics::counter!(crate::admin::names::INSTANCES_RECEIVED).increment(1);
            metrics::counter!(crate::admin::names::BYTES_RECEIVED).increment(size);
        } else {
            self.failed += 1;
            metrics::counter!(crate::admin::names::INSTANCES_REFUSED, "status" => format!("{status:#06X}"))
                .increment(1);
        }
        let a = &p.announced;
        let rsp = dimse::store_response(p.message_id, &a.sop_class, &a.sop_instance, status)?;
        send_command(assoc, p.pc_id, rsp).await
    }
}

/// Storage commitment dispatch (the logic is in `crate::commitment`).
impl Session<'_> {
    async fn on_commitment_command<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pc_id: u8,
        cmd: Command,
    ) -> Result<(), ProtocolError> {
        use crate::commitment as sc;
        let pc = assoc.presentation_contexts().iter().find(|pc| {
            pc.id == pc_id
                && pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax.trim_end_matches(['\0', ' ']) == sc::SOP_CLASS
        });
        let (Some(pc), Some(_)) = (pc, self.scp.commitment.as_ref()) else {
            return Err(ProtocolError::Unexpected(format!(
                "{:#06x} outside a storage commitment presentation context",
                cmd.field
            )));
        };
        if cmd.field == sc::N_EVENT_REPORT_RSP {
            debug!(message_id = cmd.message_id, "N-EVENT-REPORT-RSP received");
            return Ok(());
        }
        let action = sc::PendingAction {
            pc_id,
            transfer_syntax: pc.transfer_syntax.clone(),
            command: sc::ActionCommand::from(&cmd),
            data: Vec::new(),
            limit: self.scp.limits.max_parsed_bytes,
            oversize: false,
        };
        if cmd.has_data_set {
            self.action = Some(action);
            Ok(())
        } else {
            self.finish_action(assoc, action).await
        }
    }

    async fn on_action_data<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pdv: PDataValue,
    ) -> Result<(), ProtocolError> {
        let Some(a) = self.action.as_mut() else {
            return Ok(());
        };
        if a.pc_id != pdv.presentation_context_id {
            return Err(ProtocolError::Unexpected(
                "data set on another presentation context than its command".into(),
            ));
        }
        a.push(&pdv.data);
        if pdv.is_last {
            if let Some(a) = self.action.take() {
                self.finish_action(assoc, a).await?;
            }
        }
        Ok(())
    }

    async fn finish_action<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        action: crate::commitment::PendingAction,
    ) -> Result<(), ProtocolError> {
        let Some(c) = self.scp.commitment.as_ref() else {
            return Ok(());
        };
        let pc_id = action.pc_id;
        let rsp = c
            .on_action(action, &self.calling_ae, self.reports.0.clone())
            .await;
        send_command(assoc, pc_id, rsp).await
    }

    async fn send_report<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        report: crate::commitment::Report,
    ) {
        for pdu in report.pdus(assoc.requestor_max_pdu_length()) {
            if let Err(e) = assoc.send(&pdu).await {
                warn!(error = %e, "cannot send the storage commitment report here");
                if let Some(c) = self.scp.commitment.as_ref() {
                    c.deliver_later(report.outcome, &self.calling_ae);
                }
                return;
            }
        }
        if let Some(c) = self.scp.commitment.as_ref() {
            c.sent(&report.outcome);
        }
        info!(
            event_type = report.event_type,
            "storage commitment result sent on the requesting association"
        );
    }

    /// Reports not sent before the association ended go to a new association.
    fn hand_over_reports(&mut self) {
        self.reports.1.close();
        while let Ok(report) = self.reports.1.try_recv() {
            if let Some(c) = self.scp.commitment.as_ref() {
                c.deliver_later(report.outcome, &self.calling_ae);
            }
        }
    }
}

/// Log why an instance is refused; its C-STORE-RSP status.
fn refused(message_id: u16, e: &SpoolError) -> u16 {
    let code = e.dimse_status();
    let status = format!("{code:#06X}");
    match e {
        SpoolError::Io(_) => warn!(message_id, %status, error = %e, "cannot spool instance"),
        _ => warn!(message_id, %status, error = %e, "instance rejected"),
    }
    code
}

async fn join_file_done(
    task: tokio::task::JoinHandle<Result<(Incoming, Vec<u8>), SpoolError>>,
) -> Result<(Incoming, Vec<u8>), SpoolError> {
    match task.await {
        Ok(r) => r,
        Err(e) => Err(SpoolError::Io(std::io::Error::other(format!(
            "spool task failed: {e}"
        )))),
    }
}

async fn send_command<S: Transport>(
    assoc: &mut AsyncServerAssociation<S>,
    pc_id: u8,
    data: Vec<u8>,
) -> Result<(), ProtocolError> {
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| ProtocolError::Send(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_sop_classes_are_accepted() {
        let have: Vec<&str> = STORAGE_SOP_CLASSES.iter().map(|(u, _)| *u).collect();
        for uid in [
            uids::CT_IMAGE_STORAGE,
            uids::MR_IMAGE_STORAGE,
            uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
            uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
            uids::ULTRASOUND_IMAGE_STORAGE,
            uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::ENHANCED_CT_IMAGE_STORAGE,
            uids::ENHANCED_MR_IMAGE_STORAGE,
        ] {
            assert!(have.contains(&uid), "{uid}");
        }
        assert!(
            !have.contains(&"1.2.840.10008.1.20.1"),
            "storage commitment is not storage"
        );
    }

    #[test]
    fn transfer_syntaxes_include_common_ones() {
        let ts = transfer_syntaxes();
        for uid in [
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            "1.2.840.10008.1.2.2", // Explicit VR Big Endian (retired)
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            uids::JPEG_BASELINE8_BIT,
            uids::JPEG2000,
            uids::RLE_LOSSLESS,
        ] {
            assert!(ts.contains(&uid), "{uid}");
        }
    }
}
