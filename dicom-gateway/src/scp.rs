//! The DIMSE SCP: Verification (C-ECHO) and Storage (C-STORE).
//!
//! One task per association, at most `dicom.max_associations` at a time
//! (further connections wait in the listen backlog). Each association gets
//! a span with its id, peer address and calling AE title. An association
//! silent for `dicom.idle_timeout_secs` is aborted; a malformed PDU or
//! command ends the association (A-ABORT), never the process.

use crate::config::DicomConfig;
use crate::dimse::{self, Command};
use crate::sop_classes::STORAGE_SOP_CLASSES;
use crate::spool::{Expected, Spool, SpoolError};
use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    spool: Spool,
    /// Spool ids of newly acknowledged instances, for the upload worker.
    wake: mpsc::UnboundedSender<String>,
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
            spool,
            wake,
        }
    }

    /// Enable the TLS listener's handshake (`[dicom.tls]`).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.options = self.options.tls_config(config);
        self
    }

    /// Accept associations on `listener` (plain) and `tls_listener` (TLS
    /// handshake first) until `shutdown` completes, then stop accepting and
    /// give running associations `grace` to finish before aborting them.
    /// Both listeners share the `max_associations` slots.
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
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = async {
                    // a free slot first, so excess connections wait in the backlog
                    let permit = slots.clone().acquire_owned().await;
                    let tls_accept = async {
                        match &tls_listener {
                            Some(l) => l.accept().await,
                            None => std::future::pending().await,
                        }
                    };
                    let accepted = tokio::select! {
                        a = listener.accept() => a.map(|x| (x, false)),
                        a = tls_accept => a.map(|x| (x, true)),
                    };
                    (permit, accepted)
                } => a,
            };
            let (permit, ((socket, peer), tls)) = match accepted {
                (Ok(p), Ok(x)) => (p, x),
                (Err(_), _) => break, // the semaphore is never closed
                (_, Err(e)) => {
                    // e.g. EMFILE: back off instead of spinning
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while let Some(res) = tasks.try_join_next() {
                if let Err(e) = res {
                    warn!(error = %e, "association task failed");
                }
            }
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let span = info_span!("association", id, peer = %peer, tls, calling_ae = tracing::field::Empty);
            tasks.spawn(
                async move {
                    this.handle(socket, peer.ip(), tls).await;
                    drop(permit);
                }
                .instrument(span),
            );
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

    async fn handle(&self, socket: TcpStream, peer: IpAddr, tls: bool) {
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
            self.associate(options.establish_tls_async(socket)).await;
        } else {
            self.associate(options.establish_async(socket)).await;
        }
    }

    /// Negotiate the association (bounded by the idle timeout) and run it.
    async fn associate<S: Transport, E: std::fmt::Display>(
        &self,
        establish: impl std::future::Future<Output = Result<AsyncServerAssociation<S>, E>>,
    ) {
        let assoc = match tokio::time::timeout(self.idle, establish).await {
            Err(_) => {
                info!("association request timed out");
                return;
            }
            Ok(Err(e)) => {
                info!(error = %e, "association not established");
                return;
            }
            Ok(Ok(a)) => a,
        };
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
            data_buf: Vec::new(),
            pending: None,
            stored: 0,
            failed: 0,
            bytes: 0,
        };
        let started = Instant::now();
        let end = session.run(assoc).await;
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

/// A C-STORE whose data set is being received.
struct PendingStore {
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    abstract_syntax: String,
}

struct Session<'a> {
    scp: &'a Scp,
    calling_ae: String,
    cmd_buf: Vec<u8>,
    /// Reused across instances (keeps its capacity).
    data_buf: Vec<u8>,
    pending: Option<PendingStore>,
    stored: u64,
    failed: u64,
    bytes: u64,
}

#[derive(Debug, thiserror::Error)]
enum ProtocolError {
    #[error(transparent)]
    Command(#[from] dimse::CommandError),
    #[error("{0}")]
    Unexpected(String),
    #[error("sending a response failed: {0}")]
    Send(String),
}

impl Session<'_> {
    /// Drive the association to its end; returns how it ended.
    async fn run<S: Transport>(&mut self, mut assoc: AsyncServerAssociation<S>) -> &'static str {
        loop {
            let pdu = match tokio::time::timeout(self.scp.idle, assoc.receive()).await {
                Err(_) => {
                    warn!("association idle for too long; aborting");
                    let _ = assoc.abort().await;
                    return "idle-timeout";
                }
                Ok(Err(dicom_ul::association::Error::ConnectionClosed { .. })) => {
                    info!("connection closed by peer without release");
                    return "closed";
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot receive PDU; aborting");
                    let _ = assoc.abort().await;
                    return "receive-error";
                }
                Ok(Ok(pdu)) => pdu,
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if let Err(e) = self.on_pdv(&mut assoc, pdv).await {
                            warn!(error = %e, "protocol error; aborting association");
                            let _ = assoc.abort().await;
                            return "protocol-error";
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if let Err(e) = assoc.send(&Pdu::ReleaseRP).await {
                        debug!(error = %e, "cannot send A-RELEASE-RP");
                    }
                    return "released";
                }
                Pdu::AbortRQ { .. } => {
                    info!("association aborted by peer");
                    return "aborted-by-peer";
                }
                other => {
                    warn!(pdu = %other.short_description(), "unexpected PDU; aborting");
                    let _ = assoc.abort().await;
                    return "unexpected-pdu";
                }
            }
        }
    }

    async fn on_pdv<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        pdv: PDataValue,
    ) -> Result<(), ProtocolError> {
        match pdv.value_type {
            PDataValueType::Command => {
                if self.pending.is_some() {
                    return Err(ProtocolError::Unexpected(
                        "command received while a data set was expected".into(),
                    ));
                }
                self.cmd_buf.extend_from_slice(&pdv.data);
                if self.cmd_buf.len() > 64 * 1024 {
                    return Err(ProtocolError::Unexpected("command set too large".into()));
                }
                if !pdv.is_last {
                    return Ok(());
                }
                let cmd = Command::parse(&self.cmd_buf);
                self.cmd_buf.clear();
                let cmd = cmd?;
                self.on_command(assoc, pdv.presentation_context_id, cmd)
                    .await
            }
            PDataValueType::Data => {
                let Some(p) = self.pending.as_ref() else {
                    return Err(ProtocolError::Unexpected(
                        "data set fragment without a C-STORE command".into(),
                    ));
                };
                if p.pc_id != pdv.presentation_context_id {
                    return Err(ProtocolError::Unexpected(
                        "data set on another presentation context than its command".into(),
                    ));
                }
                if self.data_buf.is_empty() && pdv.is_last {
                    // the whole data set in one fragment (max PDU 1 MiB):
                    // take it without copying
                    self.data_buf = pdv.data;
                } else {
                    self.data_buf.extend_from_slice(&pdv.data);
                }
                if pdv.is_last {
                    if let Some(p) = self.pending.take() {
                        self.finish_store(assoc, p).await?;
                    }
                }
                Ok(())
            }
        }
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
                self.data_buf.clear();
                self.pending = Some(PendingStore {
                    pc_id,
                    message_id: cmd.message_id,
                    sop_class: cmd.affected_sop_class.unwrap_or_default(),
                    sop_instance: cmd.affected_sop_instance.unwrap_or_default(),
                    transfer_syntax: pc.transfer_syntax.clone(),
                    abstract_syntax: pc.abstract_syntax.clone(),
                });
                Ok(())
            }
            other => Err(ProtocolError::Unexpected(format!(
                "unsupported DIMSE command {other:#06x}"
            ))),
        }
    }

    async fn finish_store<S: Transport>(
        &mut self,
        assoc: &mut AsyncServerAssociation<S>,
        p: PendingStore,
    ) -> Result<(), ProtocolError> {
        let size = self.data_buf.len();
        let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        let status = if trim(&p.sop_class) != trim(&p.abstract_syntax) {
            warn!(
                message_id = p.message_id,
                "affected SOP class differs from the presentation context"
            );
            dimse::STATUS_SOP_CLASS_NOT_SUPPORTED
        } else if p.sop_instance.is_empty() {
            warn!(
                message_id = p.message_id,
                "C-STORE-RQ without Affected SOP Instance UID"
            );
            dimse::STATUS_CANNOT_UNDERSTAND
        } else {
            let spool = self.scp.spool.clone();
            let buf = std::mem::take(&mut self.data_buf);
            let (class, inst, ts, ae) = (
                p.sop_class.clone(),
                p.sop_instance.clone(),
                p.transfer_syntax.clone(),
                self.calling_ae.clone(),
            );
            let joined = tokio::task::spawn_blocking(move || {
                let r = spool.store(
                    &buf,
                    &Expected {
                        sop_class_uid: &class,
                        sop_instance_uid: &inst,
                        transfer_syntax_uid: &ts,
                        calling_ae: &ae,
                    },
                );
                (r, buf)
            })
            .await;
            match joined {
                Ok((result, mut buf)) => {
                    buf.clear();
                    self.data_buf = buf;
                    match result {
                        Ok(spool_id) => {
                            debug!(
                                message_id = p.message_id,
                                spool_id = %spool_id,
                                sop_class = %trim(&p.sop_class),
                                bytes = size,
                                "instance spooled"
                            );
                            // the upload worker may be disabled: ignore a closed channel
                            let _ = self.scp.wake.send(spool_id);
                            dimse::STATUS_SUCCESS
                        }
                        Err(e) => {
                            log_store_error(p.message_id, &e);
                            e.dimse_status()
                        }
                    }
                }
                Err(e) => {
                    warn!(message_id = p.message_id, error = %e, "spool task failed");
                    dimse::STATUS_CANNOT_UNDERSTAND
                }
            }
        };
        if status == dimse::STATUS_SUCCESS {
            self.stored += 1;
            self.bytes += size as u64;
            metrics::counter!(crate::admin::names::INSTANCES_RECEIVED).increment(1);
            metrics::counter!(crate::admin::names::BYTES_RECEIVED).increment(size as u64);
        } else {
            self.failed += 1;
            metrics::counter!(crate::admin::names::INSTANCES_REFUSED, "status" => format!("{status:#06X}"))
                .increment(1);
        }
        let rsp = dimse::store_response(p.message_id, &p.sop_class, &p.sop_instance, status)?;
        send_command(assoc, p.pc_id, rsp).await
    }
}

fn log_store_error(message_id: u16, e: &SpoolError) {
    let status = format!("{:#06X}", e.dimse_status());
    match e {
        SpoolError::Io(_) => warn!(message_id, %status, error = %e, "cannot spool instance"),
        _ => warn!(message_id, %status, error = %e, "instance rejected"),
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
