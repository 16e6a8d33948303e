//! DICOMweb origin (PS3.18) under `/dicomweb`.
//!
//! ```text
//! GET  /dicomweb/studies                                   QIDO  (principal; visible studies)
//! POST /dicomweb/studies                                   STOW  (gateway token or admin)
//! GET  /dicomweb/series                                    QIDO  (principal; visible studies)
//! GET  /dicomweb/studies/{study}/series                    QIDO  ViewMetadata
//! GET  /dicomweb/studies/{study}/instances                 QIDO  ViewMetadata
//! GET  /dicomweb/studies/{study}/series/{series}/instances QIDO  ViewMetadata
//! GET  …/metadata (study, series, instance)                WADO  ViewMetadata
//! GET  /dicomweb/studies/{study}[/series/{series}[/instances/{sop}]]
//!                                                          WADO  Download
//! GET  …/instances/{sop}/frames/{list}                     WADO  Download
//! GET  …/instances/{sop}/bulkdata/7FE00010                 WADO  Download
//! GET  /dicomweb/studies/{study}[/series/{series}]/rendered
//!                                                          WADO  ViewPixels (multipart of rendered frames)
//! GET  …/instances/{sop}[/frames/{n}]/rendered|thumbnail   WADO  ViewPixels
//! GET  …/instances/{sop}/frames/{n}/tiles.json
//! GET  …/instances/{sop}/frames/{n}/tiles/{level}/{x}_{y}.jpg  ViewPixels
//! ```
//!
//! Every study-scoped route takes `StudyAccess<P>` (path parameter
//! `{study}`); an unknown or hidden study is 404.

mod qido;
mod rendered;
pub use qido::{InstanceAnswers, INSTANCE_ANSWERS_BYTES};
pub use rendered::RenderCaches;
pub use wado::{FramesCache, FRAMES_BYTES};
mod stow;
mod wado;

use crate::access::Principal;
use crate::error::{problem_response, ApiError};
use crate::extract::resolve_session;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;

/// Entry points of the fuzz targets (fuzz/) into the parsers of private
/// route modules. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Query of a rendered / thumbnail / tile request.
    pub fn rendered_params(pairs: &[(String, String)]) -> bool {
        super::rendered::params_ok(pairs)
    }
    /// `{frame}` of a rendered or tile path.
    pub fn frame_number(s: &str) -> bool {
        super::rendered::frame_ok(s)
    }
    /// `{frames}` of a WADO-RS frames path.
    pub fn frame_list(s: &str) -> bool {
        super::wado::frame_list_ok(s)
    }
    /// One STOW-RS part (a DICOM Part 10 object).
    pub fn stow_part(bytes: &[u8]) -> bool {
        super::stow::part_ok(bytes)
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    const I: &str = "/dicomweb/studies/{study}/series/{series}/instances/{sop}";
    cfg.route("/dicomweb/studies", web::get().to(qido::studies))
        .route("/dicomweb/studies", web::post().to(stow::store))
        .route("/dicomweb/series", web::get().to(qido::all_series))
        .route(
            "/dicomweb/studies/{study}/series",
            web::get().to(qido::series),
        )
        .route(
            "/dicomweb/studies/{study}/instances",
            web::get().to(qido::study_instances),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances",
            web::get().to(qido::series_instances),
        )
        .route(
            "/dicomweb/studies/{study}",
            web::get().to(wado::retrieve_study),
        )
        .route(
            "/dicomweb/studies/{study}/metadata",
            web::get().to(wado::study_metadata),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}",
            web::get().to(wado::retrieve_series),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/metadata",
            web::get().to(wado::series_metadata),
        )
        .route(
            "/dicomweb/studies/{study}/rendered",
            web::get().to(rendered::study_rendered),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/rendered",
            web::get().to(rendered::series_rendered),
        )
        .route(I, web::get().to(wado::retrieve_instance))
        .route(
            &format!("{I}/metadata"),
            web::get().to(wado::instance_metadata),
        )
        .route(
            &format!("{I}/frames/{{frames}}"),
            web::get().to(wado::frames),
        )
        .route(
            &format!("{I}/bulkdata/{{tag}}"),
            web::get().to(wado::bulkdata),
        )
        .route(
            &format!("{I}/rendered"),
            web::get().to(rendered::instance_rendered),
        )
        .route(
            &format!("{I}/thumbnail"),
            web::get().to(rendered::instance_thumbnail),
        )
        .route(
            &format!("{I}/frames/{{frame}}/rendered"),
            web::get().to(rendered::frame_rendered),
        )
        .route(
            &format!("{I}/frames/{{frame}}/thumbnail"),
            web::get().to(rendered::frame_thumbnail),
        )
        .route(
            &format!("{I}/frames/{{frame}}/tiles.json"),
            web::get().to(rendered::tiles_json),
        )
        .route(
            &format!("{I}/frames/{{frame}}/tiles/{{level}}/{{tile}}"),
            web::get().to(rendered::tile),
        );
}

/// The caller of a listing (QIDO at the top level): 401 without one.
pub struct DicomWebPrincipal(pub Principal);

impl FromRequest for DicomWebPrincipal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match resolve_session(&req).await? {
                Some(s) => Ok(DicomWebPrincipal(Principal::User(s.user))),
                None => {
                    // a refused search leaves its audit row too
                    use crate::services::audit::{Event, Outcome};
                    if let Some(state) = req.app_data::<web::Data<crate::state::AppState>>() {
                        state
                            .audit
                            .record(
                                &state.db,
                                Event::new("anonymous", "", "study.search")
                                    .outcome(Outcome::Denied)
                                    .request(&req)
                                    .detail(format!("QIDO-RS {}", req.path())),
                            )
                            .await
                            .map_err(|e| {
                                ApiError::Unexpected(anyhow::Error::new(e).context("audit trail"))
                            })?;
                    }
                    Err(ApiError::Unauthorized)
                }
            }
        })
    }
}

/// `{origin}/dicomweb`: `[http] public_url`, or forwarding headers from a
/// trusted proxy only (`services::public_url`).
pub(crate) fn base_url(req: &HttpRequest) -> String {
    format!("{}/dicomweb", crate::services::public_url::origin(req))
}

/// The query string as key/value pairs (400 when malformed).
pub(crate) fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::BadRequest("malformed query string".into()))
}

pub(crate) fn not_acceptable(what: &str) -> HttpResponse {
    tracing::info!(status = 406, "request rejected");
    problem_response(StatusCode::NOT_ACCEPTABLE, Some(what))
}

pub(crate) fn db_err(e: sea_orm::DbErr) -> ApiError {
    ApiError::Unexpected(anyhow::Error::new(e).context("dicomweb query"))
}
