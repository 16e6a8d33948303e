//! mado-gateway: the hospital-edge DICOM gateway.
//!
//! Stages with an on-disk hand-off, each recoverable after `kill -9` by
//! rescanning the spool:
//! **accept** ([`scp`]: C-ECHO, C-STORE) → **spool** ([`spool`]: write temp,
//! fsync, rename, fsync dir, *then* C-STORE success) → **de-identify**
//! ([`deid`]) or quarantine → **upload** + **register** ([`upload`]).

pub mod admin;
pub mod commitment;
pub mod config;
pub mod deid;
pub mod deid_cmd;
pub mod dimse;
pub mod guard;
pub mod quarantine;
pub mod quarantine_http;
pub mod scp;
pub mod sop_classes;
pub mod spool;
pub mod tls;
pub mod upload;
pub mod vault;

#[cfg(test)]
pub(crate) mod testutil;

use config::GatewayConfig;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot open spool directory {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("de-identification: {0}")]
    Deid(#[from] deid::PipelineError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("DICOM TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot start the upload runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// A bound, not yet running gateway.
pub struct Gateway {
    cfg: GatewayConfig,
    listener: TcpListener,
    spool: spool::Spool,
    local_addr: SocketAddr,
    admin_routes: admin::AdminRoutes,
    /// `[dicom.tls]`: the TLS listener, its address and server configuration.
    tls: Option<(TcpListener, SocketAddr, Arc<rustls::ServerConfig>)>,
}

impl Gateway {
    /// Open the spool and bind the DICOM listener.
    pub async fn build(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        let dir = cfg.spool.dir.clone();
        let spool = tokio::task::spawn_blocking(move || spool::Spool::open(&dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| GatewayError::Spool {
                path: cfg.spool.dir.display().to_string(),
                source,
            })?;
        spool.start_refill().map_err(|source| GatewayError::Spool {
            path: cfg.spool.dir.display().to_string(),
            source,
        })?;
        let listener =
            TcpListener::bind(&cfg.dicom.bind)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: cfg.dicom.bind.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: cfg.dicom.bind.clone(),
            source,
        })?;
        let tls = match &cfg.dicom.tls {
            None => None,
            Some(t) => {
                let config = tls::server_config(t)?;
                let bind_err = |source| GatewayError::Bind {
                    addr: t.bind.clone(),
                    source,
                };
                let l = TcpListener::bind(t.bind.trim()).await.map_err(bind_err)?;
                let addr = l.local_addr().map_err(bind_err)?;
                Some((l, addr, config))
            }
        };
        Ok(Self {
            cfg,
            listener,
            spool,
            local_addr,
            admin_routes: Vec::new(),
            tls,
        })
    }

    /// Mount extra pages on the admin endpoint (`[admin] bind`).
    pub fn with_admin_routes(mut self, routes: admin::AdminRoutes) -> Self {
        self.admin_routes.extend(routes);
        self
    }

    /// The address the SCP is bound to (the real port when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the DICOM TLS listener, when `[dicom.tls]` is set.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, a, _)| *a)
    }

    /// Serve until SIGINT/SIGTERM.
    pub async fn run_until_stopped(self) -> Result<(), GatewayError> {
        let Self {
            cfg,
            listener,
            spool,
            local_addr,
            admin_routes,
            tls,
        } = self;
        let admin = if cfg.admin.bind.trim().is_empty() {
            None
        } else {
            let (server, addr) = admin::serve(cfg.admin.bind.trim(), spool.clone(), admin_routes)
                .map_err(|source| GatewayError::Bind {
                addr: cfg.admin.bind.clone(),
                source,
            })?;
            info!(admin = %addr, "admin endpoint listening (/status, /metrics)");
            let handle = server.handle();
            tokio::spawn(server);
            Some(handle)
        };
        if cfg.server.token.expose_secret() == "mado-demo-gateway-token" {
            warn!(
                "server.token is the demo default; set MADO_GATEWAY__SERVER__TOKEN in production"
            );
        }
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let mut scp = scp::Scp::new(&cfg.dicom, spool.clone(), wake_tx);
        // Storage Commitment: the ledger of originals confirmed in the store
        let ledger = if cfg.commitment.enabled {
            let path = commitment::Ledger::path_in(spool.root());
            let p2 = path.clone();
            let ledger = tokio::task::spawn_blocking(move || commitment::Ledger::open(&p2))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|source| GatewayError::Spool {
                    path: path.display().to_string(),
                    source,
                })?;
            let ledger = Arc::new(ledger);
            let service = Arc::new(commitment::Commitment::new(
                ledger.clone(),
                cfg.commitment.clone(),
                &cfg.dicom.ae_title,
            ));
            // transactions accepted before a restart are answered now
            service.resume();
            scp = scp.with_commitment(service);
            Some(ledger)
        } else {
            None
        };
        let tls_listener = match tls {
            Some((l, addr, config)) => {
                scp = scp.with_tls(config);
                info!(
                    dicom_tls = %addr,
                    mutual = cfg.dicom.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                    "DICOM TLS listener"
                );
                Some(l)
            }
            None => None,
        };
        let scp = Arc::new(scp);

        let upload_task = if cfg.upload.enabled {
            // the engine is built once and shared by every upload worker
            let params = Arc::new(deid::Pipeline::from_config(&cfg)?);
            let (storage, upload_cfg, server) =
                (cfg.storage.clone(), cfg.upload.clone(), cfg.server.clone());
            let spool = spool.clone();
            let ledger = ledger.clone();
            // validate the HTTP client now, before serving
            drop(reqwest::Client::builder().build()?);
            // its own runtime at lower priority: receiving and acknowledging
            // comes first, the backlog drains in the slack
            let rt = upload::background_runtime(upload_cfg.nice)?;
            let task = rt.spawn(async move {
                let store = upload::Uploader::open_store(&storage, &upload_cfg).await;
                match upload::Uploader::new(spool, upload_cfg, server, params, store) {
                    Ok(up) => Arc::new(up.with_ledger(ledger)).run(wake_rx).await,
                    Err(e) => tracing::error!(error = %e, "cannot start the upload worker"),
                }
            });
            Some((rt, task))
        } else {
            warn!(
                "upload worker disabled (upload.enabled = false): instances stay in spool/pending"
            );
            drop(wake_rx);
            None
        };

        info!(
            dicom = %local_addr,
            ae_title = %cfg.dicom.ae_title,
            spool = %spool.root().display(),
            max_pdu = cfg.dicom.max_pdu,
            "mado-gateway running"
        );
        let shutdown = async {
            shutdown_signal().await;
            info!("shutdown requested; no new associations accepted");
        };
        scp.serve(
            listener,
            tls_listener,
            cfg.dicom.max_associations,
            shutdown,
            std::time::Duration::from_secs(10),
        )
        .await;
        // Uploads in flight are safe to cut: the spool file stays pending
        // and the next start resumes it (keys and bytes are deterministic).
        if let Some((rt, task)) = upload_task {
            task.abort();
            rt.shutdown_background();
        }
        if let Some(h) = admin {
            h.stop(false).await;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
