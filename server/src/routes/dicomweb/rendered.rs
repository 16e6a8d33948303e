//! Rendered images, thumbnails and deep-zoom tiles (PS3.18 §10.4.1.1.3,
//! 9.5.1.2.1). Decoded frames are kept in a byte-bounded LRU so that
//! re-windowing and scrolling back never decode twice.

use super::not_acceptable;
use crate::access::{StudyAccess, ViewPixels};
use crate::error::ApiError;
use crate::services::dicomweb::accept;
use crate::services::dicomweb::cache::ByteLru;
use crate::services::render::{
    crop, decode_frame, encode_jpeg, encode_png, encode_webp, resize, DecodedFrame, Image8,
    RenderError, Window, WindowFunction, RENDER_VERSION,
};
use crate::services::{cpu, studies};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use mado_core::{SeriesUid, SopInstanceUid};
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};

/// Largest viewport side.
pub const MAX_VIEWPORT: u32 = 4096;
const THUMBNAIL: u32 = 128;
const TILE: u32 = 256;
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

static DECODED: LazyLock<ByteLru<(String, u32), DecodedFrame>> =
    LazyLock::new(|| ByteLru::new(512 * 1024 * 1024));

/// Encoded answers by ETag (the ETag names the object, frame, parameters
/// and media type, so it is a content address).
static ENCODED: LazyLock<ByteLru<String, Bytes>> =
    LazyLock::new(|| ByteLru::new(128 * 1024 * 1024));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    fn media(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Viewport {
    vw: u32,
    vh: u32,
    src: Option<(u32, u32, u32, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Params {
    window: Option<Window>,
    viewport: Option<Viewport>,
    quality: u8,
}

fn bad(what: &str) -> ApiError {
    ApiError::BadRequest(what.into())
}

fn parse_params(pairs: &[(String, String)]) -> Result<Params, ApiError> {
    let mut p = Params {
        window: None,
        viewport: None,
        quality: 90,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "window" => {
                let f: Vec<&str> = v.split(',').map(str::trim).collect();
                let msg = "query parameter \"window\": expected center,width[,linear|linear_exact|sigmoid]";
                if !(2..=3).contains(&f.len()) {
                    return Err(bad(msg));
                }
                let center: f64 = f[0].parse().map_err(|_| bad(msg))?;
                let width: f64 = f[1].parse().map_err(|_| bad(msg))?;
                if !center.is_finite() || !width.is_finite() || width <= 0.0 {
                    return Err(bad(msg));
                }
                let function = match f.get(2).map(|s| s.to_ascii_lowercase()).as_deref() {
                    None | Some("linear") => WindowFunction::Linear,
                    Some("linear_exact") => WindowFunction::LinearExact,
                    Some("sigmoid") => WindowFunction::Sigmoid,
                    _ => return Err(bad(msg)),
                };
                p.window = Some(Window {
                    center,
                    width,
                    function,
                });
            }
            "viewport" => {
                let msg = "query parameter \"viewport\": expected vw,vh[,sx,sy,sw,sh] with 1 ≤ vw,vh ≤ 4096";
                let f: Result<Vec<u32>, _> =
                    v.split(',').map(|s| s.trim().parse::<u32>()).collect();
                let f = f.map_err(|_| bad(msg))?;
                if !(f.len() == 2 || f.len() == 6)
                    || f[0] == 0
                    || f[1] == 0
                    || f[0] > MAX_VIEWPORT
                    || f[1] > MAX_VIEWPORT
                {
                    return Err(bad(msg));
                }
                let src = (f.len() == 6).then(|| (f[2], f[3], f[4], f[5]));
                if src.is_some_and(|s| s.2 == 0 || s.3 == 0) {
                    return Err(bad(msg));
                }
                p.viewport = Some(Viewport {
                    vw: f[0],
                    vh: f[1],
                    src,
                });
            }
            "quality" => {
                let q: u8 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad("query parameter \"quality\": expected 1..100"))?;
                p.quality = q;
            }
            // Accepted and ignored.
            _ => {}
        }
    }
    Ok(p)
}

fn negotiate(req: &HttpRequest) -> Option<Format> {
    let ranges = accept::parse(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    for r in &ranges {
        for f in [Format::Jpeg, Format::Png, Format::Webp] {
            if r.matches(f.media()) {
                return Some(f);
            }
        }
    }
    None
}

/// Fit (w, h) into the viewport, keeping the aspect ratio.
fn fit(w: u32, h: u32, vw: u32, vh: u32) -> (u32, u32) {
    let s = (f64::from(vw) / f64::from(w.max(1))).min(f64::from(vh) / f64::from(h.max(1)));
    (
        ((f64::from(w) * s).round() as u32).clamp(1, vw),
        ((f64::from(h) * s).round() as u32).clamp(1, vh),
    )
}

fn encode(img: &Image8, format: Format, quality: u8) -> Result<Vec<u8>, RenderError> {
    match format {
        Format::Jpeg => encode_jpeg(img, quality),
        Format::Png => encode_png(img),
        Format::Webp => encode_webp(img),
    }
}

fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::NoSuchFrame(_) => ApiError::NotFound,
        RenderError::Unsupported(what) => {
            tracing::info!(reason = %what, "cannot render instance");
            ApiError::NotImplemented("this image cannot be rendered by the server")
        }
        other => ApiError::Unexpected(anyhow::Error::new(other).context("rendering")),
    }
}

/// The decoded frame (0-based), from the cache or the store.
async fn decoded(
    state: &AppState,
    key: &str,
    sha256: &str,
    frame: u32,
) -> Result<Arc<DecodedFrame>, ApiError> {
    let ck = (sha256.to_owned(), frame);
    if let Some(hit) = DECODED.get(&ck) {
        return Ok(hit);
    }
    let bytes = state.store.get(key).await.map_err(|e| {
        ApiError::Unexpected(anyhow::Error::new(e).context("reading object from the store"))
    })?;
    let d = cpu::run(move || decode_frame(&bytes, frame))
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("decoding")))?
        .map_err(render_error)?;
    let d = Arc::new(d);
    DECODED.insert(ck, d.clone());
    Ok(d)
}

struct Target {
    object_key: String,
    sha256: String,
    frames: u32,
}

async fn target(
    access: &StudyAccess<ViewPixels>,
    state: &AppState,
    series: &str,
    sop: &str,
) -> Result<Target, ApiError> {
    let series = SeriesUid::parse(series).map_err(|_| ApiError::NotFound)?;
    let sop = SopInstanceUid::parse(sop).map_err(|_| ApiError::NotFound)?;
    let t = studies::render_target(&state.db, access.study(), &series, &sop)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("looking up instance")))?
        .ok_or(ApiError::NotFound)?;
    Ok(Target {
        object_key: t.object_key,
        sha256: t.sha256,
        frames: u32::try_from(t.number_of_frames.max(1)).unwrap_or(1),
    })
}

fn etag(sha256: &str, what: &str) -> String {
    let d = Sha256::digest(what.as_bytes());
    format!(
        "\"{}-{}-r{RENDER_VERSION}\"",
        sha256.get(..32).unwrap_or(sha256),
        hex::encode(&d[..8])
    )
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn render(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    state: web::Data<AppState>,
    series: String,
    sop: String,
    frame: u32,
    thumbnail: bool,
) -> Result<HttpResponse, ApiError> {
    let pairs = super::query_pairs(&req)?;
    let mut params = parse_params(&pairs)?;
    if thumbnail && params.viewport.is_none() {
        params.viewport = Some(Viewport {
            vw: THUMBNAIL,
            vh: THUMBNAIL,
            src: None,
        });
    }
    let Some(format) = negotiate(&req) else {
        return Ok(not_acceptable(
            "rendered images are available as image/jpeg, image/png or image/webp",
        ));
    };
    let t = target(&access, &state, &series, &sop).await?;
    if frame == 0 || frame > t.frames {
        return Err(ApiError::NotFound);
    }
    let tag = etag(
        &t.sha256,
        &format!("f{frame}|{params:?}|{}", format.media()),
    );
    if not_modified(&req, &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, IMMUTABLE))
            .finish());
    }
    if let Some(hit) = ENCODED.get(&tag) {
        return Ok(HttpResponse::Ok()
            .content_type(format.media())
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, IMMUTABLE))
            .body((*hit).clone()));
    }
    let d = decoded(&state, &t.object_key, &t.sha256, frame - 1).await?;
    let body = cpu::run(move || {
        let mut img = d.to_image8(params.window);
        if let Some(vp) = params.viewport {
            if let Some((sx, sy, sw, sh)) = vp.src {
                img = crop(&img, sx, sy, sw, sh);
            }
            let (w, h) = fit(img.width, img.height, vp.vw, vp.vh);
            img = resize(&img, w, h);
        }
        encode(&img, format, params.quality)
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("rendering")))?
    .map_err(render_error)?;
    let body = Bytes::from(body);
    ENCODED.insert(tag.clone(), Arc::new(body.clone()));
    Ok(HttpResponse::Ok()
        .content_type(format.media())
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .body(body))
}

pub async fn instance_rendered(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop) = path.into_inner();
    render(access, req, state, series, sop, 1, false).await
}

pub async fn instance_thumbnail(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop) = path.into_inner();
    render(access, req, state, series, sop, 1, true).await
}

fn frame_number(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| bad("frame number: expected an integer starting at 1"))
}

pub async fn frame_rendered(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, frame) = path.into_inner();
    let frame = frame_number(&frame)?;
    render(access, req, state, series, sop, frame, false).await
}

pub async fn frame_thumbnail(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, frame) = path.into_inner();
    let frame = frame_number(&frame)?;
    render(access, req, state, series, sop, frame, true).await
}

/// Deep-zoom pyramid: level `max` is full size, each level below halves.
fn levels(w: u32, h: u32) -> u32 {
    let m = w.max(h).max(1);
    32 - (m - 1).leading_zeros() + 1
}

fn level_size(w: u32, h: u32, level: u32, max_level: u32) -> (u32, u32) {
    let shift = max_level - level;
    (w.div_ceil(1 << shift).max(1), h.div_ceil(1 << shift).max(1))
}

pub async fn tiles_json(
    access: StudyAccess<ViewPixels>,
    path: web::Path<(String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, frame) = path.into_inner();
    let frame = frame_number(&frame)?;
    let t = target(&access, &state, &series, &sop).await?;
    if frame > t.frames {
        return Err(ApiError::NotFound);
    }
    let d = decoded(&state, &t.object_key, &t.sha256, frame - 1).await?;
    let (w, h) = (d.width(), d.height());
    let body = serde_json::json!({
        "width": w,
        "height": h,
        "tileSize": TILE,
        "overlap": 0,
        "format": "jpg",
        "levels": levels(w, h),
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .json(body))
}

pub async fn tile(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, series, sop, frame, level, tile) = path.into_inner();
    let frame = frame_number(&frame)?;
    let level: u32 = level.parse().map_err(|_| ApiError::NotFound)?;
    let (x, y) = tile
        .strip_suffix(".jpg")
        .and_then(|t| t.split_once('_'))
        .and_then(|(x, y)| Some((x.parse::<u32>().ok()?, y.parse::<u32>().ok()?)))
        .ok_or(ApiError::NotFound)?;
    let params = parse_params(&super::query_pairs(&req)?)?;
    let t = target(&access, &state, &series, &sop).await?;
    if frame > t.frames {
        return Err(ApiError::NotFound);
    }
    let tag = etag(
        &t.sha256,
        &format!("tile|f{frame}|{level}|{x}|{y}|{params:?}"),
    );
    if not_modified(&req, &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    let d = decoded(&state, &t.object_key, &t.sha256, frame - 1).await?;
    let (w, h) = (d.width(), d.height());
    let max_level = levels(w, h) - 1;
    if level > max_level {
        return Err(ApiError::NotFound);
    }
    let (lw, lh) = level_size(w, h, level, max_level);
    if x * TILE >= lw || y * TILE >= lh {
        return Err(ApiError::NotFound);
    }
    let body = cpu::run(move || {
        let img = d.to_image8(params.window);
        let img = resize(&img, lw, lh);
        let img = crop(&img, x * TILE, y * TILE, TILE, TILE);
        encode_jpeg(&img, params.quality)
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("tiling")))?
    .map_err(render_error)?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn params() {
        let p = parse_params(&pairs(&[
            ("window", "40,400,sigmoid"),
            ("viewport", "256,256"),
            ("quality", "80"),
        ]))
        .unwrap();
        assert_eq!(p.quality, 80);
        assert_eq!(p.window.unwrap().function, WindowFunction::Sigmoid);
        for (k, v) in [
            ("window", "40"),
            ("window", "40,0"),
            ("window", "40,400,cubic"),
            ("viewport", "5000,10"),
            ("viewport", "10,10,1"),
            ("quality", "0"),
            ("quality", "101"),
        ] {
            assert!(parse_params(&pairs(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn geometry() {
        assert_eq!(fit(512, 256, 128, 128), (128, 64));
        assert_eq!(levels(512, 512), 10);
        assert_eq!(levels(1, 1), 1);
        assert_eq!(level_size(512, 300, 9, 9), (512, 300));
        assert_eq!(level_size(512, 300, 8, 9), (256, 150));
    }
}
