//! `POST /api/v1/ingest/instances` (gateway → server, see
//! `mado_core::wire`): 201 when new, 200 when already indexed, 400 on a
//! malformed body, 401 on a bad token.

use crate::error::ApiError;
use crate::extract::GatewayAuth;
use crate::services::ingest::{self, IngestError};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use mado_core::wire::{RegisterInstance, RegisterResponse, INGEST_PATH};

/// Largest accepted registration body (metadata is sent without bulk data).
const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(INGEST_PATH)
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route(web::post().to(register)),
    );
}

/// The token is checked (first extractor) before the body is parsed.
async fn register(
    gateway: GatewayAuth,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let req: RegisterInstance = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid registration: {e}")))?;
    let org_id = crate::services::orgs::ensure(&state.db, &gateway.0.org)
        .await
        .map_err(|e| {
            ApiError::Unexpected(anyhow::Error::new(e).context("resolving organisation"))
        })?;
    let created = ingest::register_for_org(&state.db, &req, Some(org_id))
        .await
        .map_err(|e| match e {
            IngestError::Invalid(m) => ApiError::BadRequest(m),
            IngestError::Conflict(m) => ApiError::Conflict(m),
            IngestError::Db(e) => {
                ApiError::Unexpected(anyhow::Error::new(e).context("registering instance"))
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
