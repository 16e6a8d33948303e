//! `POST /api/v1/ingest/instances` (gateway → server, see
//! `mado_core::wire`): 201 when new, 200 when already indexed, 400 on a
//! malformed body, 401 on a bad token, 404 problem+json when the study
//! (or the series / instance) belongs to another organisation, the same
//! answer as for any study the gateway cannot reach. Every registration,
//! accepted or refused, leaves an audit row (`ingest.register`).

use crate::access::routes::INGEST;
use crate::error::ApiError;
use crate::extract::GatewayUploader;
use crate::services::audit::Outcome;
use crate::services::ingest::{self, IngestError};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use mado_core::wire::{RegisterInstance, RegisterResponse};

/// Largest accepted registration body (metadata is sent without bulk data).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Audit action of a registration.
const ACTION: &str = "ingest.register";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(INGEST.path)
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(INGEST.route().to(register)),
    );
}

/// The token is checked (first extractor) before the body is parsed.
async fn register(
    gateway: GatewayUploader,
    http: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = gateway.0;
    let req: RegisterInstance = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            ingest::audit(
                &state,
                &http,
                &who,
                ACTION,
                None,
                Outcome::Failure,
                "malformed registration",
            )
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
            return Err(ApiError::BadRequest(format!("invalid registration: {e}")));
        }
    };
    let created = ingest::register_audited(&state, &http, &who, ACTION, &req)
        .await
        .map_err(|e| match e {
            IngestError::Invalid(m) => ApiError::BadRequest(m),
            IngestError::Conflict(m) => ApiError::Conflict(m),
            IngestError::NotOwner => ApiError::NotFound,
            IngestError::Db(e) => {
                ApiError::Unexpected(anyhow::Error::new(e).context("registering instance"))
            }
            IngestError::Audit(e) => {
                ApiError::Unexpected(anyhow::Error::new(e).context("audit trail"))
            }
        })?;
    tracing::info!(created, "instance registered");
    let body = RegisterResponse { created };
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}
