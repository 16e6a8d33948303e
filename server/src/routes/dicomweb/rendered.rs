//! Rendered images, thumbnails and deep-zoom tiles (PS3.18 §10.4.1.1.3,
//! 9.5.1.2.1), and rendered series and studies (multipart/related of
//! rendered frames, PS3.18 §10.4). Frames that are costly to decode
//! (compressed, large) are kept in a byte-bounded LRU so that re-windowing,
//! tiles and scrolling back never decode them twice; an uncompressed slice
//! decodes in less time than caching it costs and is not kept
//! ([`CHEAP_DECODE`]). Encoded answers are kept by ETag.
//!
//! Series read-ahead: rendering slice k of a series schedules the next
//! [`READ_AHEAD`] slices (same parameters, same media type) on the rayon
//! pool — at most [`READ_AHEAD_JOBS`] at a time, skipped when busy — into
//! the encoded cache, so a client scrolling through a
//! stack finds them ready. Concurrent requests for the same frame or the
//! same answer (a request and a read-ahead job) share one computation
//! (single flight). Read-ahead runs only after the request passed its own
//! `StudyAccess` check and audit, and only for instances of that series.

use super::not_acceptable;
use crate::access::{StudyAccess, ViewPixels};
use crate::error::ApiError;
use crate::services::cpu;
use crate::services::cpu::MemoryBudget;
use crate::services::dicomweb::accept;
use crate::services::dicomweb::cache::ByteLru;
use crate::services::dicomweb::{multipart, wado};
use crate::services::render::{
    crop, decode_frame_with, encode_jpeg, encode_png, encode_webp, resize, DecodedFrame, Image8,
    RenderError, Window, WindowFunction, RENDER_VERSION,
};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use mado_core::{SeriesUid, SopInstanceUid};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest viewport side.
pub const MAX_VIEWPORT: u32 = 4096;
const THUMBNAIL: u32 = 128;
const TILE: u32 = 256;
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// Default byte budget of the decoded-frame LRU.
pub const DECODED_BYTES: usize = 512 * 1024 * 1024;
/// Default byte budget of the encoded-answer LRU.
pub const ENCODED_BYTES: usize = 128 * 1024 * 1024;

/// Slices rendered ahead after a rendered request of a series.
pub const READ_AHEAD: usize = 3;
/// Read-ahead jobs at a time (the rest is skipped, never queued).
pub const READ_AHEAD_JOBS: usize = 2;

/// Most frames in one rendered series or study answer.
pub const MAX_RENDERED_PARTS: usize = 5000;

/// An error shared between the requests of one single-flight computation.
#[derive(Debug, Clone)]
enum Shared {
    /// The memory budget stayed exhausted.
    Busy,
    Store(Arc<str>),
    Cpu(Arc<str>),
    Render(Arc<RenderError>),
}

impl From<Shared> for ApiError {
    fn from(e: Shared) -> Self {
        match e {
            Shared::Busy => ApiError::from(cpu::Busy),
            Shared::Store(m) => ApiError::Unexpected(
                anyhow::anyhow!("{m}").context("reading object from the store"),
            ),
            Shared::Cpu(m) => ApiError::Unexpected(anyhow::anyhow!("{m}").context("rendering")),
            Shared::Render(e) => render_error(&e),
        }
    }
}

/// Single flight: concurrent callers with the same key share one run.
struct Flights<K, V> {
    map: Mutex<HashMap<K, Arc<tokio::sync::OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn in_flight(&self, key: &K) -> bool {
        self.map
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    async fn run<F, Fut>(&self, key: K, f: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = V>,
    {
        let cell = match self.map.lock() {
            Ok(mut m) => m.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::OnceCell::new()),
        };
        let v = cell.get_or_init(f).await.clone();
        if let Ok(mut m) = self.map.lock() {
            if m.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                m.remove(&key);
            }
        }
        v
    }
}

type FrameKey = (String, u32);

/// Frames that decode faster than this are not kept in the decoded LRU.
const CHEAP_DECODE: Duration = Duration::from_millis(2);

/// One instance of a series, in series order.
#[derive(Debug, Clone)]
struct SliceRef {
    sop: String,
    object_key: String,
    sha256: String,
    frames: u32,
    /// Memory a render of it may hold ([`crate::services::render::render_weight`]).
    weight: u64,
}

impl SliceRef {
    fn of(r: wado::InstanceRef) -> Self {
        let dim = |v: Option<i32>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        SliceRef {
            weight: crate::services::render::render_weight(
                r.parse_size(),
                dim(r.rows),
                dim(r.columns),
            ),
            sop: r.sop_instance_uid,
            object_key: r.object_key,
            sha256: r.sha256,
            frames: u32::try_from(r.number_of_frames.max(1)).unwrap_or(1),
        }
    }
}

/// What decoding and rendering under the limits needs.
#[derive(Clone)]
struct Budgeted {
    caches: Arc<RenderCaches>,
    budget: Arc<MemoryBudget>,
    guard: mado_core::guard::Limits,
    /// This render's share of the budget.
    weight: u64,
}

impl Budgeted {
    fn new(state: &AppState, weight: u64) -> Self {
        Budgeted {
            caches: state.render_caches.clone(),
            budget: state.budget.clone(),
            guard: state.limits.guard(),
            weight,
        }
    }
}

/// The instances of recently rendered series (a hint for read-ahead and
/// the render target lookup; a miss falls back to the database).
const SERIES_TTL: Duration = Duration::from_secs(10);
type SeriesKey = (i64, String);
type SeriesEntry = (Instant, Arc<Vec<SliceRef>>);

/// The render caches and single flights of one application (held by
/// `AppState`, built in `Application::build`): two applications in one
/// process never share an entry (the series hint is keyed by study row
/// id, which is only unique within one database).
pub struct RenderCaches {
    /// Decoded frames by (object digest, frame).
    decoded: ByteLru<(String, u32), DecodedFrame>,
    /// Encoded answers by ETag (the ETag names the object, frame,
    /// parameters and media type, so it is a content address).
    encoded: ByteLru<String, Bytes>,
    read_ahead_slots: Arc<tokio::sync::Semaphore>,
    decoding: Flights<FrameKey, Result<Arc<DecodedFrame>, Shared>>,
    encoding: Flights<String, Result<Bytes, Shared>>,
    series: Mutex<HashMap<SeriesKey, SeriesEntry>>,
}

impl RenderCaches {
    /// Caches bounded by `decoded_bytes` and `encoded_bytes`.
    pub fn new(decoded_bytes: usize, encoded_bytes: usize) -> Self {
        Self {
            decoded: ByteLru::new(decoded_bytes),
            encoded: ByteLru::new(encoded_bytes),
            read_ahead_slots: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_JOBS)),
            decoding: Flights::new(),
            encoding: Flights::new(),
            series: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for RenderCaches {
    fn default() -> Self {
        Self::new(DECODED_BYTES, ENCODED_BYTES)
    }
}

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

fn render_error(e: &RenderError) -> ApiError {
    match e {
        RenderError::NoSuchFrame(_) => ApiError::NotFound,
        RenderError::Unsupported(what) => {
            tracing::info!(reason = %what, "cannot render instance");
            ApiError::NotImplemented("this image cannot be rendered by the server")
        }
        RenderError::Malformed(what) => {
            tracing::info!(reason = %what, "malformed image");
            ApiError::Unprocessable("the stored image is malformed: its sizes do not fit its data")
        }
        other => ApiError::Unexpected(anyhow::anyhow!("{other}").context("rendering")),
    }
}

/// The decoded frame (0-based), from the cache or the store.
async fn decoded(state: &AppState, t: &Target, frame: u32) -> Result<Arc<DecodedFrame>, ApiError> {
    decoded_shared(
        state.store.clone(),
        t.object_key.clone(),
        t.sha256.clone(),
        frame,
        Budgeted::new(state, t.weight),
    )
    .await
    .map_err(ApiError::from)
}

/// The decoded frame; a miss takes the render's share of the memory
/// budget for the fetch and the decode.
async fn decoded_shared(
    store: mado_store::DynStore,
    key: String,
    sha256: String,
    frame: u32,
    ctx: Budgeted,
) -> Result<Arc<DecodedFrame>, Shared> {
    let ck = (sha256, frame);
    if let Some(hit) = ctx.caches.decoded.get(&ck) {
        return Ok(hit);
    }
    let caches = ctx.caches.clone();
    caches
        .decoding
        .run(ck.clone(), || async move {
            if let Some(hit) = ctx.caches.decoded.get(&ck) {
                return Ok(hit);
            }
            let _permit = ctx
                .budget
                .acquire(ctx.weight)
                .await
                .map_err(|_| Shared::Busy)?;
            let guard = ctx.guard;
            let bytes = store
                .get(&key)
                .await
                .map_err(|e| Shared::Store(e.to_string().into()))?;
            let (d, took) = cpu::run(move || {
                let started = Instant::now();
                (decode_frame_with(&bytes, frame, &guard), started.elapsed())
            })
            .await
            .map_err(|e| Shared::Cpu(e.to_string().into()))?;
            let d = Arc::new(d.map_err(|e| Shared::Render(Arc::new(e)))?);
            // Only frames that are costly to decode again are kept
            // (compressed, large: tiles and window drags reuse them). An
            // uncompressed slice decodes in a fraction of a millisecond,
            // less than keeping it costs: a cached frame is fresh memory
            // (page faults) and would push the costly ones out of the LRU.
            if took >= CHEAP_DECODE {
                ctx.caches.decoded.insert(ck, d.clone());
            }
            Ok(d)
        })
        .await
}

struct Target {
    object_key: String,
    sha256: String,
    frames: u32,
    weight: u64,
}

impl From<&SliceRef> for Target {
    fn from(s: &SliceRef) -> Self {
        Target {
            object_key: s.object_key.clone(),
            sha256: s.sha256.clone(),
            frames: s.frames,
            weight: s.weight,
        }
    }
}

/// The instances of `series` in `study_id`, in series order. With
/// `fresh == false` a list cached within [`SERIES_TTL`] is good enough (a
/// hint: read-ahead, and the target of a single-frame request, which falls
/// back to the database when absent); answers that enumerate the series
/// pass `fresh == true` so an instance indexed a moment ago is never left out.
async fn series_slices(
    state: &AppState,
    study_id: i64,
    series: &str,
    fresh: bool,
) -> Result<Arc<Vec<SliceRef>>, ApiError> {
    let key = (study_id, series.to_owned());
    if let (false, Ok(m)) = (fresh, state.render_caches.series.lock()) {
        if let Some((at, v)) = m.get(&key) {
            if at.elapsed() < SERIES_TTL {
                return Ok(v.clone());
            }
        }
    }
    let refs = wado::instance_refs(&state.db, study_id, Some(series), None)
        .await
        .map_err(super::db_err)?;
    let v: Arc<Vec<SliceRef>> = Arc::new(refs.into_iter().map(SliceRef::of).collect());
    if let Ok(mut m) = state.render_caches.series.lock() {
        if m.len() > 1024 {
            m.retain(|_, (at, _)| at.elapsed() < SERIES_TTL);
            if m.len() > 1024 {
                m.clear();
            }
        }
        m.insert(key, (Instant::now(), v.clone()));
    }
    Ok(v)
}

async fn target(
    access: &StudyAccess<ViewPixels>,
    state: &AppState,
    series: &str,
    sop: &str,
) -> Result<Target, ApiError> {
    let series = SeriesUid::parse(series).map_err(|_| ApiError::NotFound)?;
    let sop = SopInstanceUid::parse(sop).map_err(|_| ApiError::NotFound)?;
    let r = wado::instance_refs(
        &state.db,
        access.study_id(),
        Some(series.as_str()),
        Some(sop.as_str()),
    )
    .await
    .map_err(super::db_err)?
    .into_iter()
    .next()
    .ok_or(ApiError::NotFound)?;
    Ok(Target::from(&SliceRef::of(r)))
}

fn etag(sha256: &str, what: &str) -> String {
    let d = Sha256::digest(what.as_bytes());
    format!(
        "\"{}-{}-r{RENDER_VERSION}\"",
        sha256.get(..32).unwrap_or(sha256),
        hex::encode(&d[..8])
    )
}

fn render_tag(sha256: &str, frame: u32, params: &Params, format: Format) -> String {
    etag(sha256, &format!("f{frame}|{params:?}|{}", format.media()))
}

fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// One rendered frame (1-based) of an instance: from the encoded cache, or
/// decoded (cache) → window → viewport → encode on rayon. Shared by
/// requests and read-ahead (single flight on the ETag).
#[allow(clippy::too_many_arguments)]
async fn rendered_bytes(
    store: mado_store::DynStore,
    object_key: String,
    sha256: String,
    frame: u32,
    params: Params,
    format: Format,
    tag: String,
    ctx: Budgeted,
) -> Result<Bytes, Shared> {
    if let Some(hit) = ctx.caches.encoded.get(&tag) {
        return Ok((*hit).clone());
    }
    let caches = ctx.caches.clone();
    caches
        .encoding
        .run(tag.clone(), || async move {
            if let Some(hit) = ctx.caches.encoded.get(&tag) {
                return Ok((*hit).clone());
            }
            let d = decoded_shared(store, object_key, sha256, frame - 1, ctx.clone()).await?;
            // windowing, viewport and encoding: the 8-bit image, resized
            let out = params
                .viewport
                .map_or(0, |v| u64::from(v.vw) * u64::from(v.vh) * 3);
            let work = (d.width() as u64 * d.height() as u64 * 3).saturating_add(out);
            let _permit = ctx.budget.acquire(work).await.map_err(|_| Shared::Busy)?;
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
            .map_err(|e| Shared::Cpu(e.to_string().into()))?
            .map_err(|e| Shared::Render(Arc::new(e)))?;
            let body = Bytes::from(body);
            ctx.caches.encoded.insert(tag, Arc::new(body.clone()));
            Ok(body)
        })
        .await
}

/// Schedule the slices after `sop` in `slices` (same parameters) unless
/// cached, in flight, or the read-ahead slots are taken.
fn read_ahead(state: &AppState, slices: &[SliceRef], sop: &str, params: &Params, format: Format) {
    let Some(pos) = slices.iter().position(|s| s.sop == sop) else {
        return;
    };
    for next in slices.iter().skip(pos + 1).take(READ_AHEAD) {
        if next.frames != 1 {
            continue;
        }
        let tag = render_tag(&next.sha256, 1, params, format);
        let caches = &state.render_caches;
        if caches.encoded.get(&tag).is_some() || caches.encoding.in_flight(&tag) {
            continue;
        }
        let Ok(permit) = caches.read_ahead_slots.clone().try_acquire_owned() else {
            return;
        };
        let store = state.store.clone();
        let (key, sha, params) = (next.object_key.clone(), next.sha256.clone(), params.clone());
        let ctx = Budgeted::new(state, next.weight);
        actix_web::rt::spawn(async move {
            let _permit = permit;
            if let Err(e) = rendered_bytes(store, key, sha, 1, params, format, tag, ctx).await {
                tracing::debug!(error = ?e, "read-ahead rendering failed");
            }
        });
    }
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
    // The series' instances (cached briefly) name the target and the
    // slices to read ahead; an instance not (yet) in the cached list is
    // looked up in the database.
    let series_uid = SeriesUid::parse(&series).map_err(|_| ApiError::NotFound)?;
    let slices = series_slices(&state, access.study_id(), series_uid.as_str(), false).await?;
    let t = match slices.iter().find(|s| s.sop == sop) {
        Some(s) => Target::from(s),
        None => target(&access, &state, &series, &sop).await?,
    };
    if frame == 0 || frame > t.frames {
        return Err(ApiError::NotFound);
    }
    let tag = render_tag(&t.sha256, frame, &params, format);
    if not_modified(&req, &tag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, IMMUTABLE))
            .finish());
    }
    if !thumbnail && t.frames == 1 {
        read_ahead(&state, &slices, &sop, &params, format);
    }
    let ctx = Budgeted::new(&state, t.weight);
    let body = rendered_bytes(
        state.store.clone(),
        t.object_key,
        t.sha256,
        frame,
        params,
        format,
        tag.clone(),
        ctx,
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type(format.media())
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .body(body))
}

/// The media type of the parts of a rendered series or study: from
/// `multipart/related; type=…` (default image/jpeg) or a bare image type.
fn negotiate_parts(req: &HttpRequest) -> Option<Format> {
    let ranges = accept::parse(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    for r in &ranges {
        for f in [Format::Jpeg, Format::Png, Format::Webp] {
            let ok = if r.media == "multipart/related" {
                r.part_matches(f.media(), "image/jpeg")
            } else {
                r.matches(f.media())
            };
            if ok {
                return Some(f);
            }
        }
    }
    None
}

/// Every frame of `slices` rendered, as one streamed multipart/related
/// answer (parts in series / instance order, each with its
/// Content-Location).
async fn render_many(
    req: &HttpRequest,
    state: &AppState,
    study: &str,
    slices: Vec<(String, SliceRef)>,
) -> Result<HttpResponse, ApiError> {
    let mut params = parse_params(&super::query_pairs(req)?)?;
    let Some(format) = negotiate_parts(req) else {
        return Ok(not_acceptable(
            "rendered series and studies are available as multipart/related; type=\"image/jpeg\", \"image/png\" or \"image/webp\"",
        ));
    };
    if slices.is_empty() {
        return Err(ApiError::NotFound);
    }
    let total: usize = slices.iter().map(|(_, s)| s.frames as usize).sum();
    if total > MAX_RENDERED_PARTS {
        return Err(ApiError::BadRequest(format!(
            "{total} frames: at most {MAX_RENDERED_PARTS} frames per rendered series or study; request the series or instances"
        )));
    }
    if params
        .viewport
        .is_some_and(|v| u64::from(v.vw) * u64::from(v.vh) > 1024 * 1024)
    {
        // Bounded memory for a many-part answer.
        params.viewport = params.viewport.map(|v| Viewport {
            vw: v.vw.min(1024),
            vh: v.vh.min(1024),
            src: v.src,
        });
    }
    let base = super::base_url(req);
    let boundary = multipart::boundary();
    let content_type = multipart::content_type(&boundary, format.media(), None);
    let store = state.store.clone();
    let ctx = Budgeted::new(state, 0);
    let b = boundary.clone();
    let study = study.to_owned();
    let frames = slices
        .into_iter()
        .flat_map(|(series, s)| (1..=s.frames).map(move |f| (series.clone(), s.clone(), f)));
    let parts = futures::stream::iter(frames.enumerate()).then(move |(i, (series, s, frame))| {
        let (store, b, params) = (store.clone(), b.clone(), params.clone());
        let ctx = Budgeted {
            weight: s.weight,
            ..ctx.clone()
        };
        let location = format!(
            "{base}/studies/{study}/series/{series}/instances/{}/frames/{frame}/rendered",
            s.sop
        );
        async move {
            let tag = render_tag(&s.sha256, frame, &params, format);
            let data = rendered_bytes(
                store,
                s.object_key,
                s.sha256,
                frame,
                params,
                format,
                tag,
                ctx,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "rendering a part of a rendered series or study");
                std::io::Error::other("rendering failed")
            })?;
            Ok::<Bytes, std::io::Error>(multipart::part(
                &b,
                format.media(),
                Some(&location),
                i == 0,
                &data,
            ))
        }
    });
    let closing = futures::stream::once(async move { Ok(multipart::closing(&boundary)) });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .streaming(parts.chain(closing)))
}

/// `GET /dicomweb/studies/{study}/series/{series}/rendered`.
pub async fn series_rendered(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let series = SeriesUid::parse(&path.1).map_err(|_| ApiError::NotFound)?;
    let slices = series_slices(&state, access.study_id(), series.as_str(), true).await?;
    let slices = slices
        .iter()
        .map(|s| (series.as_str().to_owned(), s.clone()))
        .collect();
    render_many(&req, &state, access.study().as_str(), slices).await
}

/// `GET /dicomweb/studies/{study}/rendered`.
pub async fn study_rendered(
    access: StudyAccess<ViewPixels>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let refs = wado::instance_refs(&state.db, access.study_id(), None, None)
        .await
        .map_err(super::db_err)?;
    let slices = refs
        .into_iter()
        .map(|r| (r.series_uid.clone(), SliceRef::of(r)))
        .collect();
    render_many(&req, &state, access.study().as_str(), slices).await
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
    // (level <= max_level is checked by the caller; saturate anyway)
    let div = 1u32
        .checked_shl(max_level.saturating_sub(level))
        .unwrap_or(u32::MAX);
    (w.div_ceil(div).max(1), h.div_ceil(div).max(1))
}

/// The pixel origin of tile (`x`, `y`) in a level of `lw`×`lh`, when it
/// lies inside it (checked: tile numbers come from the URL).
fn tile_origin(x: u32, y: u32, lw: u32, lh: u32) -> Option<(u32, u32)> {
    let px = x.checked_mul(TILE).filter(|px| *px < lw)?;
    let py = y.checked_mul(TILE).filter(|py| *py < lh)?;
    Some((px, py))
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
    let d = decoded(&state, &t, frame - 1).await?;
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
    let d = decoded(&state, &t, frame - 1).await?;
    let (w, h) = (d.width(), d.height());
    let max_level = levels(w, h) - 1;
    if level > max_level {
        return Err(ApiError::NotFound);
    }
    let (lw, lh) = level_size(w, h, level, max_level);
    let (px, py) = tile_origin(x, y, lw, lh).ok_or(ApiError::NotFound)?;
    // the 8-bit image and the level resized from it
    let work = (u64::from(w) * u64::from(h)).saturating_add(u64::from(lw) * u64::from(lh)) * 3;
    let _permit = state.budget.acquire(work).await?;
    let body = cpu::run(move || {
        let img = d.to_image8(params.window);
        let img = resize(&img, lw, lh);
        let img = crop(&img, px, py, TILE, TILE);
        encode_jpeg(&img, params.quality)
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("tiling")))?
    .map_err(|e| render_error(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .body(body))
}

/// Fuzzing entry (`super::fuzzing`): rendered parameters are accepted.
pub(super) fn params_ok(pairs: &[(String, String)]) -> bool {
    parse_params(pairs).is_ok()
}

/// Fuzzing entry (`super::fuzzing`): a frame number of the path.
pub(super) fn frame_ok(s: &str) -> bool {
    frame_number(s).is_ok()
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
        assert_eq!(level_size(512, 300, 0, 40), (1, 1));
        assert_eq!(tile_origin(1, 0, 512, 512), Some((256, 0)));
        assert_eq!(tile_origin(2, 0, 512, 512), None);
        // 16777216 × 256 = 2^32: no wrap to tile 0
        assert_eq!(tile_origin(16_777_216, 0, 512, 512), None);
        assert_eq!(tile_origin(0, u32::MAX, 512, 512), None);
    }
}
