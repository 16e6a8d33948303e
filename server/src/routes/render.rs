//! `GET /studies/{study}/series/{series}/instances/{sop}/rendered.png?frame=N`
//! (`frame` is 0-based, default 0): one frame as an 8-bit PNG. Requires a
//! session; unknown or mismatched UIDs are 404.

use crate::access::{StudyAccess, ViewPixels};
use crate::error::ApiError;
use crate::services::cpu;
use crate::services::dicomweb::wado;
use crate::services::render::{
    decode_frame_with, encode_png, render_weight, RenderError, RENDER_VERSION,
};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use mado_core::{SeriesUid, SopInstanceUid};
use serde::Deserialize;

const CACHE_CONTROL: &str = "private, max-age=86400";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(crate::access::RENDERED_PNG, web::get().to(rendered));
}

#[derive(Deserialize)]
struct FrameQuery {
    frame: Option<u32>,
}

async fn rendered(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    query: web::Query<FrameQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop) = path.into_inner();
    let series = SeriesUid::parse(&series).map_err(|_| ApiError::NotFound)?;
    let sop = SopInstanceUid::parse(&sop).map_err(|_| ApiError::NotFound)?;
    let frame = query.frame.unwrap_or(0);

    let target = wado::instance_refs(
        &state.db,
        access.study_id(),
        Some(series.as_str()),
        Some(sop.as_str()),
    )
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("looking up instance")))?
    .into_iter()
    .next()
    .ok_or(ApiError::NotFound)?;
    if i64::from(frame) >= i64::from(target.number_of_frames.max(1)) {
        return Err(ApiError::NotFound);
    }

    let etag = format!(
        "\"{}-f{frame}-r{RENDER_VERSION}\"",
        target.sha256.get(..32).unwrap_or(&target.sha256)
    );
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .finish());
    }

    let dim = |v: Option<i32>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let weight = render_weight(target.parse_size(), dim(target.rows), dim(target.columns));
    let _permit = state.budget.acquire(weight).await?;
    let bytes = state.store.get(&target.object_key).await.map_err(|e| {
        ApiError::Unexpected(anyhow::Error::new(e).context("reading object from the store"))
    })?;
    let limits = state.limits.guard();
    let png = cpu::run(move || {
        let image = decode_frame_with(&bytes, frame, &limits)?.to_image8(None);
        encode_png(&image)
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("rendering")))?
    .map_err(|e| match e {
        RenderError::NoSuchFrame(_) => ApiError::NotFound,
        RenderError::Unsupported(what) => {
            tracing::info!(reason = %what, "cannot render instance");
            ApiError::NotImplemented("this image cannot be rendered by the server")
        }
        other => ApiError::Unexpected(anyhow::Error::new(other).context("rendering")),
    })?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .body(png))
}
