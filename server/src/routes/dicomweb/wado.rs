//! WADO-RS handlers: metadata (from the index), instances (multipart
//! streamed from the store), frames and bulk data.

use super::{base_url, db_err, not_acceptable};
use crate::access::{Download, StudyAccess, ViewMetadata};
use crate::error::ApiError;
use crate::services::cpu;
use crate::services::dicomweb::accept::{self, MediaRange};
use crate::services::dicomweb::cache::{ByteLru, Weigh};
use crate::services::dicomweb::multipart;
use crate::services::dicomweb::wado::{
    self, extract_frames, frame_media_type, is_native, FrameError, FrameLimits, FrameSel, Frames,
    InstanceRef,
};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use mado_core::{SeriesUid, SopInstanceUid};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

fn series_uid(s: &str) -> Result<SeriesUid, ApiError> {
    SeriesUid::parse(s).map_err(|_| ApiError::NotFound)
}

fn sop_uid(s: &str) -> Result<SopInstanceUid, ApiError> {
    SopInstanceUid::parse(s).map_err(|_| ApiError::NotFound)
}

fn accept_of(req: &HttpRequest) -> Vec<MediaRange> {
    accept::parse(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}

fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn refs(
    state: &AppState,
    study_id: i64,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<Vec<InstanceRef>, ApiError> {
    wado::instance_refs(&state.db, study_id, series, sop)
        .await
        .map_err(db_err)
}

// ---- metadata ----

async fn metadata_answer(
    req: &HttpRequest,
    state: &AppState,
    study_uid: &str,
    refs: Vec<InstanceRef>,
) -> Result<HttpResponse, ApiError> {
    let base = base_url(req);
    let (body, etag) = wado::metadata(&state.db, &state.metadata_cache, &base, study_uid, &refs)
        .await
        .map_err(db_err)?;
    if if_none_match(req, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/dicom+json")
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .body(body))
}

pub async fn study_metadata(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let refs = refs(&state, access.study_id(), None, None).await?;
    metadata_answer(&req, &state, access.study().as_str(), refs).await
}

pub async fn series_metadata(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let series = series_uid(&path.1)?;
    let refs = refs(&state, access.study_id(), Some(series.as_str()), None).await?;
    if refs.is_empty() {
        return Err(ApiError::NotFound);
    }
    metadata_answer(&req, &state, access.study().as_str(), refs).await
}

pub async fn instance_metadata(
    access: StudyAccess<ViewMetadata>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let series = series_uid(&path.1)?;
    let sop = sop_uid(&path.2)?;
    let refs = refs(
        &state,
        access.study_id(),
        Some(series.as_str()),
        Some(sop.as_str()),
    )
    .await?;
    if refs.is_empty() {
        return Err(ApiError::NotFound);
    }
    metadata_answer(&req, &state, access.study().as_str(), refs).await
}

// ---- instances ----

/// Whether `accept` allows answering `application/dicom` parts in their
/// stored transfer syntaxes `ts`.
fn dicom_acceptable(accept: &[MediaRange], ts: &[&str]) -> bool {
    accept.iter().any(|r| {
        let media_ok = r.matches("multipart/related") || r.media == "application/dicom";
        let part_ok = r.media == "application/dicom"
            || r.part_matches("application/dicom", "application/dicom");
        media_ok && part_ok && ts.iter().all(|t| r.ts_allows(t))
    })
}

async fn retrieve(
    req: &HttpRequest,
    state: &AppState,
    refs: Vec<InstanceRef>,
) -> Result<HttpResponse, ApiError> {
    if refs.is_empty() {
        return Err(ApiError::NotFound);
    }
    let ts: Vec<&str> = refs
        .iter()
        .map(|r| r.transfer_syntax_uid.as_str())
        .collect();
    if !dicom_acceptable(&accept_of(req), &ts) {
        return Ok(not_acceptable(
            "only multipart/related; type=\"application/dicom\" in the stored transfer syntax is available",
        ));
    }
    let boundary = multipart::boundary();
    let content_type = multipart::content_type(&boundary, "application/dicom", None);
    let store = state.store.clone();
    let b = boundary.clone();
    let parts = futures::stream::iter(refs.into_iter().enumerate()).then(move |(i, r)| {
        let store = store.clone();
        let b = b.clone();
        async move {
            let data = store.get(&r.object_key).await.map_err(|e| {
                tracing::error!(error = %e, "reading object for WADO-RS");
                std::io::Error::other("object store read failed")
            })?;
            let ct = format!(
                "application/dicom; transfer-syntax={}",
                r.transfer_syntax_uid
            );
            Ok::<Bytes, std::io::Error>(multipart::part(&b, &ct, None, i == 0, &data))
        }
    });
    let closing = futures::stream::once(async move { Ok(multipart::closing(&boundary)) });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .streaming(parts.chain(closing)))
}

pub async fn retrieve_study(
    access: StudyAccess<Download>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let refs = refs(&state, access.study_id(), None, None).await?;
    retrieve(&req, &state, refs).await
}

pub async fn retrieve_series(
    access: StudyAccess<Download>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let series = series_uid(&path.1)?;
    let refs = refs(&state, access.study_id(), Some(series.as_str()), None).await?;
    retrieve(&req, &state, refs).await
}

pub async fn retrieve_instance(
    access: StudyAccess<Download>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let series = series_uid(&path.1)?;
    let sop = sop_uid(&path.2)?;
    let refs = refs(
        &state,
        access.study_id(),
        Some(series.as_str()),
        Some(sop.as_str()),
    )
    .await?;
    retrieve(&req, &state, refs).await
}

// ---- frames and bulk data ----

/// How frames will be answered.
#[derive(Debug, Clone, PartialEq)]
enum FrameMode {
    /// As stored; parts of this media type.
    AsStored(&'static str),
    /// Decoded to native little endian.
    Decode,
}

fn negotiate_frames(accept: &[MediaRange], stored_ts: &str) -> Option<FrameMode> {
    const OCTET: &str = "application/octet-stream";
    let native = is_native(stored_ts);
    let compressed = frame_media_type(stored_ts);
    for r in accept {
        let multipart_ok = r.matches("multipart/related");
        let single = r.media.as_str();
        // A bare single-part media type is treated like its multipart form.
        let part_type = r
            .part_type
            .clone()
            .or_else(|| (!multipart_ok).then(|| single.to_owned()));
        let part = part_type.as_deref().unwrap_or(OCTET);
        if !multipart_ok && single != OCTET && Some(single) != compressed {
            continue;
        }
        if native {
            let ts_ok = matches!(r.transfer_syntax.as_deref(), None | Some("*"))
                || r.transfer_syntax.as_deref() == Some(EXPLICIT_LE)
                || r.transfer_syntax.as_deref() == Some(stored_ts);
            if (part == OCTET || part == "*/*") && ts_ok {
                return Some(FrameMode::AsStored(OCTET));
            }
            continue;
        }
        let Some(m) = compressed else {
            // Stored compressed in a syntax without a frame media type.
            if part == OCTET && r.transfer_syntax.as_deref() != Some("*") {
                return Some(FrameMode::Decode);
            }
            continue;
        };
        if part == m && r.ts_allows(stored_ts) {
            return Some(FrameMode::AsStored(m));
        }
        if (part == OCTET || part == "*/*") && r.transfer_syntax.as_deref() == Some("*") {
            return Some(FrameMode::AsStored(m));
        }
        if part == "*/*" && r.transfer_syntax.is_none() {
            return Some(FrameMode::AsStored(m));
        }
        if part == OCTET && matches!(r.transfer_syntax.as_deref(), None | Some(EXPLICIT_LE)) {
            return Some(FrameMode::Decode);
        }
    }
    None
}

/// Parse `1,2,3` (1-based frame numbers, at most `max` of them).
fn parse_frame_list(s: &str, max: usize) -> Result<Vec<u32>, ApiError> {
    if s.split(',').nth(max).is_some() {
        return Err(ApiError::BadRequest(format!(
            "frame list: at most {max} frames per request"
        )));
    }
    let list: Result<Vec<u32>, _> = s.split(',').map(|f| f.trim().parse::<u32>()).collect();
    match list {
        Ok(l) if !l.is_empty() && l.iter().all(|f| *f >= 1) => Ok(l),
        _ => Err(ApiError::BadRequest(
            "frame list: expected comma-separated frame numbers starting at 1".into(),
        )),
    }
}

/// Memory a frames request may hold: the fetched object, its parsed copy,
/// the pixel bytes and the answer (about four times the object), plus the
/// decoded frames when transcoding.
fn frames_weight(r: &InstanceRef, frames: u64, decode: bool) -> u64 {
    let size = r.parse_size();
    let decoded = if decode {
        let px = u64::try_from(r.rows.unwrap_or(0)).unwrap_or(0)
            * u64::try_from(r.columns.unwrap_or(0)).unwrap_or(0);
        px.saturating_mul(6).saturating_mul(frames)
    } else {
        0
    };
    size.saturating_mul(4).saturating_add(decoded)
}

/// Frames served recently (viewers fetch the same frames again when a
/// layout or viewport changes), by object digest, frame list and mode.
/// Held by `AppState` (`frames_cache`), built in `Application::build`.
pub type FramesCache = ByteLru<String, Frames>;
/// Default byte budget of [`FramesCache`].
pub const FRAMES_BYTES: usize = 256 * 1024 * 1024;
/// Larger answers (whole multi-frame bulk data) are not kept.
const MAX_CACHED_FRAMES: usize = 16 * 1024 * 1024;

async fn frames_answer(
    req: &HttpRequest,
    state: &AppState,
    r: InstanceRef,
    sel: FrameSel,
) -> Result<HttpResponse, ApiError> {
    let n = u32::try_from(r.number_of_frames.max(1)).unwrap_or(1);
    let count = match &sel {
        FrameSel::List(frames) => {
            if frames.iter().any(|f| *f > n) {
                return Err(ApiError::NotFound);
            }
            frames.len() as u64
        }
        FrameSel::All => u64::from(n),
    };
    let Some(mode) = negotiate_frames(&accept_of(req), &r.transfer_syntax_uid) else {
        return Ok(not_acceptable(
            "the frames are available as application/octet-stream or in their stored transfer syntax",
        ));
    };
    let decode = mode == FrameMode::Decode;
    // content-addressed: the object's digest, the frames and the mode
    let key = match &sel {
        FrameSel::All => format!("{}|{decode}|all", r.sha256),
        FrameSel::List(f) => format!("{}|{decode}|{f:?}", r.sha256),
    };
    let out = match state.frames_cache.get(&key) {
        Some(hit) => hit,
        None => {
            let limits = FrameLimits {
                guard: state.limits.guard(),
                max_answer: state.limits.max_answer_bytes,
            };
            let _permit = state
                .budget
                .acquire(frames_weight(&r, count, decode))
                .await?;
            let data = state.store.get(&r.object_key).await.map_err(|e| {
                ApiError::Unexpected(anyhow::Error::new(e).context("reading object from the store"))
            })?;
            let out = cpu::run(move || extract_frames(&data, &sel, decode, &limits))
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("frames")))?
                .map_err(|e| match e {
                    FrameError::NoSuchFrame(_) => ApiError::NotFound,
                    FrameError::TooLarge(max) => ApiError::BadRequest(format!(
                        "the answer would exceed {max} bytes: request fewer frames"
                    )),
                    FrameError::Unsupported(what) => {
                        tracing::info!(reason = %what, "cannot extract frames");
                        ApiError::NotImplemented("these frames cannot be served")
                    }
                    FrameError::Malformed(what) => {
                        tracing::info!(reason = %what, "malformed image");
                        ApiError::Unprocessable(
                            "the stored image is malformed: its sizes do not fit its data",
                        )
                    }
                    other => ApiError::Unexpected(anyhow::Error::new(other).context("frames")),
                })?;
            let out = std::sync::Arc::new(out);
            if out.weight() <= MAX_CACHED_FRAMES {
                state.frames_cache.insert(key, out.clone());
            }
            out
        }
    };
    let media = match mode {
        FrameMode::AsStored(m) => m,
        FrameMode::Decode => "application/octet-stream",
    };
    let part_ct = format!("{media}; transfer-syntax={}", out.transfer_syntax);
    let boundary = multipart::boundary();
    let parts: Vec<(String, Bytes)> = out
        .parts
        .iter()
        .map(|p| (part_ct.clone(), p.clone()))
        .collect();
    let body = multipart::encode(&boundary, &parts);
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            multipart::content_type(&boundary, media, None),
        ))
        .insert_header((
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        ))
        .body(body))
}

async fn one_ref(
    access_study: i64,
    state: &AppState,
    series: &str,
    sop: &str,
) -> Result<InstanceRef, ApiError> {
    let series = series_uid(series)?;
    let sop = sop_uid(sop)?;
    refs(
        state,
        access_study,
        Some(series.as_str()),
        Some(sop.as_str()),
    )
    .await?
    .into_iter()
    .next()
    .ok_or(ApiError::NotFound)
}

pub async fn frames(
    access: StudyAccess<Download>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, list) = path.into_inner();
    let frames = parse_frame_list(&list, state.limits.max_frames_per_request)?;
    let r = one_ref(access.study_id(), &state, &series, &sop).await?;
    frames_answer(&req, &state, r, FrameSel::List(frames)).await
}

pub async fn bulkdata(
    access: StudyAccess<Download>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, tag) = path.into_inner();
    if !tag.eq_ignore_ascii_case("7FE00010") {
        return Err(ApiError::NotFound);
    }
    let r = one_ref(access.study_id(), &state, &series, &sop).await?;
    frames_answer(&req, &state, r, FrameSel::All).await
}

/// Fuzzing entry (`super::fuzzing`): a frame list of the path.
pub(super) fn frame_list_ok(s: &str) -> bool {
    parse_frame_list(
        s,
        crate::config::LimitsSettings::default().max_frames_per_request,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_negotiation() {
        let jls = "1.2.840.10008.1.2.4.80";
        let a = |h: &str| accept::parse(Some(h));
        assert_eq!(
            negotiate_frames(&a("*/*"), EXPLICIT_LE),
            Some(FrameMode::AsStored("application/octet-stream"))
        );
        assert_eq!(
            negotiate_frames(
                &a(r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#),
                jls
            ),
            Some(FrameMode::AsStored("image/jls"))
        );
        assert_eq!(
            negotiate_frames(&a(r#"multipart/related; type="image/jls""#), jls),
            Some(FrameMode::AsStored("image/jls"))
        );
        assert_eq!(
            negotiate_frames(
                &a(r#"multipart/related; type="application/octet-stream""#),
                jls
            ),
            Some(FrameMode::Decode)
        );
        assert_eq!(
            negotiate_frames(&a(r#"multipart/related; type="image/jp2""#), EXPLICIT_LE),
            None
        );
        assert_eq!(negotiate_frames(&a("text/html"), EXPLICIT_LE), None);
        assert!(parse_frame_list("1,2,3", 256).is_ok());
        assert!(parse_frame_list("0", 256).is_err());
        assert!(parse_frame_list("a", 256).is_err());
        assert!(parse_frame_list(&vec!["1"; 256].join(","), 256).is_ok());
        assert!(parse_frame_list(&vec!["1"; 257].join(","), 256).is_err());
    }

    #[test]
    fn dicom_negotiation() {
        let a = |h: &str| accept::parse(Some(h));
        assert!(dicom_acceptable(&a("*/*"), &[EXPLICIT_LE]));
        assert!(dicom_acceptable(
            &a(r#"multipart/related; type="application/dicom"; transfer-syntax=*"#),
            &[EXPLICIT_LE]
        ));
        assert!(!dicom_acceptable(
            &a(
                r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50"#
            ),
            &[EXPLICIT_LE]
        ));
        assert!(!dicom_acceptable(&a("image/png"), &[EXPLICIT_LE]));
    }
}
