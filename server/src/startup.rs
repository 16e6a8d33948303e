//! Build, then run: [`Application::build`] connects and migrates the
//! database, opens the object store and binds the listener (port 0 works),
//! so the caller can read the real port before serving.

use crate::config::Settings;
use crate::db::{self, DbSetupError};
use crate::request_id;
use crate::routes;
use crate::state::{AppCaches, AppState};
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};
use mado_store::DynStore;
use sea_orm::DatabaseConnection;
use std::net::{SocketAddr, TcpListener};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error("cannot open the object store: {0}")]
    Store(#[from] mado_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Content-Security-Policy of every response: only our own scripts,
/// styles and images; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub struct Application {
    addr: SocketAddr,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let db = db::connect(&settings.database.url).await?;
        db::migrate(&db).await?;
        let store = mado_store::open(&settings.storage).await?;
        tracing::info!(store = %store.describe(), database = %settings.database.url.redacted(), "index and store ready");
        let listener =
            TcpListener::bind(&settings.http.bind).map_err(|source| StartupError::Bind {
                addr: settings.http.bind.clone(),
                source,
            })?;
        Self::build_with(&settings, db, store, listener)
    }

    /// Build on an already connected database, store and listener.
    pub fn build_with(
        settings: &Settings,
        db: DatabaseConnection,
        store: DynStore,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.http.bind.clone(),
            source,
        })?;
        // Every cache of this application lives in its state (none per
        // process): two applications in one process never share an entry.
        let caches = AppCaches::default();
        let state = web::Data::new(AppState::with_caches(settings, db, store, caches));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(
                    DefaultHeaders::new()
                        .add(("x-content-type-options", "nosniff"))
                        .add(("referrer-policy", "no-referrer"))
                        .add(("x-frame-options", "DENY"))
                        .add(("content-security-policy", CSP)),
                )
                .wrap(from_fn(request_id::middleware))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(10)
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        Ok(Self { addr, server })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until the server is stopped (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
