//! Local admin HTTP endpoint (`[admin]`, loopback by default): JSON
//! `/status` (spool counts, oldest pending age, process counters) and
//! Prometheus `/metrics`. No PHI: counts, sizes and durations only.
//!
//! Other modules mount their pages with [`AdminRoutes`]: a list of
//! `fn(&mut ServiceConfig)` passed to [`serve`] (e.g. quarantine review).

use crate::spool::Spool;
use actix_web::{web, App, HttpResponse, HttpServer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

/// Metric names, in one place.
pub mod names {
    pub const INSTANCES_RECEIVED: &str = "mado_gateway_instances_received_total";
    pub const BYTES_RECEIVED: &str = "mado_gateway_bytes_received_total";
    pub const INSTANCES_REFUSED: &str = "mado_gateway_instances_refused_total";
    pub const ASSOCIATIONS: &str = "mado_gateway_associations_total";
    pub const ASSOCIATIONS_REJECTED: &str = "mado_gateway_associations_rejected_total";
    pub const UPLOADED: &str = "mado_gateway_instances_uploaded_total";
    pub const UPLOAD_SECONDS: &str = "mado_gateway_upload_seconds";
    pub const UPLOAD_RETRIES: &str = "mado_gateway_upload_retries_total";
    pub const QUARANTINED: &str = "mado_gateway_instances_quarantined_total";
    pub const FAILED: &str = "mado_gateway_instances_failed_total";
    pub const SPOOL_PENDING: &str = "mado_gateway_spool_pending";
    pub const SPOOL_PENDING_BYTES: &str = "mado_gateway_spool_pending_bytes";
    pub const SPOOL_OLDEST_PENDING: &str = "mado_gateway_spool_oldest_pending_seconds";
}

/// Extra admin routes mounted by other modules.
pub type AdminRoutes = Vec<fn(&mut web::ServiceConfig)>;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder (once per process; later calls and a
/// recorder already installed by someone else are no-ops).
pub fn init_metrics() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                .ok()?;
            builder.install_recorder().ok()
        })
        .as_ref()
}

struct State {
    spool: Spool,
    started: Instant,
}

/// Bind the admin server and run it in the background; returns the bound
/// address (the real port when configured as 0).
pub fn serve(
    bind: &str,
    spool: Spool,
    extra: AdminRoutes,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    init_metrics();
    let state = web::Data::new(State {
        spool,
        started: Instant::now(),
    });
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .route("/status", web::get().to(status))
            .route("/metrics", web::get().to(metrics_page));
        for f in &extra {
            app = app.configure(*f);
        }
        app
    })
    .workers(1)
    .disable_signals()
    .bind(bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("admin server bound to no address"))?;
    Ok((server.run(), addr))
}

async fn spool_gauges(spool: Spool) -> Option<crate::spool::SpoolStats> {
    let st = web::block(move || spool.stats()).await.ok()?.ok()?;
    metrics::gauge!(names::SPOOL_PENDING).set(st.pending as f64);
    metrics::gauge!(names::SPOOL_PENDING_BYTES).set(st.pending_bytes as f64);
    metrics::gauge!(names::SPOOL_OLDEST_PENDING).set(st.oldest_pending_secs.unwrap_or(0) as f64);
    Some(st)
}

async fn status(state: web::Data<State>) -> HttpResponse {
    let Some(st) = spool_gauges(state.spool.clone()).await else {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": "spool not readable" }));
    };
    HttpResponse::Ok().json(serde_json::json!({
        "uptime_secs": state.started.elapsed().as_secs(),
        "spool": st,
    }))
}

async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    spool_gauges(state.spool.clone()).await;
    match init_metrics() {
        Some(h) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(h.render()),
        None => HttpResponse::ServiceUnavailable().body("metrics recorder not installed\n"),
    }
}
