//! QIDO-RS handlers: parse, access-scope, search, answer dicom+json.

use super::{base_url, db_err, query_pairs, DicomWebPrincipal};
use crate::access::{visible_studies, StudyAccess, ViewMetadata};
use crate::error::ApiError;
use crate::services::dicomweb::cache::ByteLru;
use crate::services::dicomweb::qido::{self, Level, QidoError, QidoQuery};
use crate::services::dicomweb::wado;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use mado_core::SeriesUid;
use std::sync::Arc;

/// Instance-level answers, keyed by a digest of the query and of the
/// instances (SOP UID + object hash) in scope, so any new instance is a
/// new key.
/// Held by `AppState` (`qido_instances_cache`), built in
/// `Application::build`.
pub type InstanceAnswers = ByteLru<[u8; 32], Bytes>;
/// Default byte budget of [`InstanceAnswers`].
pub const INSTANCE_ANSWERS_BYTES: usize = 64 * 1024 * 1024;

async fn cached_instances(
    req: &HttpRequest,
    state: &AppState,
    study_id: i64,
    study_uid: &str,
    series: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let q = parse(req, Level::Instance)?;
    let base = base_url(req);
    let refs = wado::instance_refs(&state.db, study_id, series, None)
        .await
        .map_err(db_err)?;
    let key = wado::metadata_digest(
        &format!(
            "qido-instances\0{base}\0{}\0{}",
            series.unwrap_or(""),
            req.query_string()
        ),
        study_uid,
        &refs,
    );
    let body = match state.qido_instances_cache.get(&key) {
        Some(hit) => (*hit).clone(),
        None => {
            let results = qido::search_instances(&state.db, study_id, series, &q, &base)
                .await
                .map_err(map_err)?;
            let body = Bytes::from(serde_json::to_vec(&results).map_err(|e| {
                ApiError::Unexpected(anyhow::Error::new(e).context("encoding QIDO answer"))
            })?);
            state
                .qido_instances_cache
                .insert(key, Arc::new(body.clone()));
            body
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/dicom+json")
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .body(body))
}

fn parse(req: &HttpRequest, level: Level) -> Result<QidoQuery, ApiError> {
    qido::parse_query(&query_pairs(req)?, level).map_err(map_err)
}

fn map_err(e: QidoError) -> ApiError {
    match e {
        QidoError::BadParam(m) => ApiError::BadRequest(m),
        QidoError::Db(e) => db_err(e),
    }
}

fn answer(results: Vec<serde_json::Value>) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(&results)
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("encoding QIDO answer")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/dicom+json")
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .body(body))
}

/// Longest query string kept in an audit row.
const AUDIT_QUERY_MAX: usize = 1024;

/// The audit row of a top-level search: who, and the query parameters as
/// sent (never the results, which list patients). Written before the
/// search runs; a malformed query is recorded as a failure.
async fn audit_search(
    state: &AppState,
    req: &HttpRequest,
    who: &crate::access::Principal,
    what: &str,
    parsed: Result<QidoQuery, ApiError>,
) -> Result<QidoQuery, ApiError> {
    use crate::services::audit::{Event, Outcome};
    let (kind, actor) = who.audit_actor();
    let query: String = req.query_string().chars().take(AUDIT_QUERY_MAX).collect();
    let outcome = if parsed.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    state
        .audit
        .record(
            &state.db,
            Event::new(kind, actor, "study.search")
                .org(who.org_id())
                .outcome(outcome)
                .request(req)
                .detail(format!("QIDO-RS {what}?{query}")),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    parsed
}

pub async fn studies(
    who: DicomWebPrincipal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = audit_search(&state, &req, &who.0, "studies", parse(&req, Level::Study)).await?;
    let results = qido::search_studies(&state.db, visible_studies(&who.0), &q, &base_url(&req))
        .await
        .map_err(map_err)?;
    answer(results)
}

pub async fn all_series(
    who: DicomWebPrincipal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = audit_search(&state, &req, &who.0, "series", parse(&req, Level::Series)).await?;
    let results = qido::search_series(&state.db, Err(visible_studies(&who.0)), &q, &base_url(&req))
        .await
        .map_err(map_err)?;
    answer(results)
}

pub async fn series(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = parse(&req, Level::Series)?;
    let results = qido::search_series(&state.db, Ok(access.study_id()), &q, &base_url(&req))
        .await
        .map_err(map_err)?;
    answer(results)
}

pub async fn study_instances(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    cached_instances(
        &req,
        &state,
        access.study_id(),
        access.study().as_str(),
        None,
    )
    .await
}

pub async fn series_instances(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series) = path.into_inner();
    let series = SeriesUid::parse(&series).map_err(|_| ApiError::NotFound)?;
    cached_instances(
        &req,
        &state,
        access.study_id(),
        access.study().as_str(),
        Some(series.as_str()),
    )
    .await
}
