//! STOW-RS (`POST /dicomweb/studies`, multipart/related application/dicom).
//!
//! Accepted from a gateway token or an admin session, for its
//! organisation: a new study belongs to it, another organisation's study
//! takes no instance (a generic failure in FailedSOPSequence, audited). STOW only accepts
//! de-identified data: every instance must carry Patient Identity Removed
//! (0012,0062) = YES, otherwise it is refused (FailedSOPSequence, reason
//! 0x0110) — de-identification on STOW comes later. Stored objects go
//! through the object-key scheme and the ordinary ingest service.

use super::{base_url, not_acceptable};
use crate::error::ApiError;
use crate::extract::GatewayOrAdmin;
use crate::services::dicomweb::multipart;
use crate::services::{cpu, ingest};
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use futures::StreamExt;
use mado_core::wire::{RegisterInstance, WIRE_VERSION};
use mado_core::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid, Uid};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Audit action of each stored (or refused) instance.
const STOW_ACTION: &str = "stow.store";

/// Failure reasons (PS3.18 Table I.2-1 / PS3.4 status codes).
const PROCESSING_FAILURE: u16 = 0x0110;
const CANNOT_UNDERSTAND: u16 = 0xC000;

struct Parsed {
    study: StudyUid,
    series: SeriesUid,
    sop: SopInstanceUid,
    sop_class: Uid,
    ts: Uid,
    metadata: Value,
}

enum Outcome {
    Ok(Parsed),
    /// (SOP class, SOP instance, reason).
    Failed(String, String, u16),
}

fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_owned()
        })
        .unwrap_or_default()
}

fn parse_part(bytes: &[u8], limits: &mado_core::guard::Limits) -> Outcome {
    // Structure first (nesting depth, declared lengths, inflated size): the
    // full parse below recurses per sequence and allocates declared lengths.
    if let Err(e) = mado_core::guard::check_part10(bytes, limits) {
        tracing::info!(reason = %e, "STOW: instance refused by the structure check");
        return Outcome::Failed(String::new(), String::new(), CANNOT_UNDERSTAND);
    }
    let Ok(obj) = OpenFileOptions::new().from_reader(bytes) else {
        return Outcome::Failed(String::new(), String::new(), CANNOT_UNDERSTAND);
    };
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    let mut ds = obj.into_inner();
    let sop_class = text(&ds, tags::SOP_CLASS_UID);
    let sop = text(&ds, tags::SOP_INSTANCE_UID);
    if !text(&ds, tags::PATIENT_IDENTITY_REMOVED).eq_ignore_ascii_case("YES") {
        return Outcome::Failed(sop_class, sop, PROCESSING_FAILURE);
    }
    let (Ok(study), Ok(series), Ok(sop_uid), Ok(class), Ok(ts)) = (
        StudyUid::parse(&text(&ds, tags::STUDY_INSTANCE_UID)),
        SeriesUid::parse(&text(&ds, tags::SERIES_INSTANCE_UID)),
        SopInstanceUid::parse(&sop),
        Uid::parse(&sop_class),
        Uid::parse(&ts),
    ) else {
        return Outcome::Failed(sop_class, sop, CANNOT_UNDERSTAND);
    };
    // Metadata without bulk data.
    for tag in [
        tags::PIXEL_DATA,
        tags::FLOAT_PIXEL_DATA,
        tags::DOUBLE_FLOAT_PIXEL_DATA,
        tags::ENCAPSULATED_DOCUMENT,
    ] {
        ds.remove_element(tag);
    }
    let Ok(metadata) = dicom_json::to_value(&ds) else {
        return Outcome::Failed(sop_class, sop, CANNOT_UNDERSTAND);
    };
    Outcome::Ok(Parsed {
        study,
        series,
        sop: sop_uid,
        sop_class: class,
        ts,
        metadata,
    })
}

fn ul(v: &str) -> Value {
    json!({"vr": "UI", "Value": [v]})
}

/// What a STOW request did, for its audit rows.
struct StowAudit {
    actor_kind: &'static str,
    actor: String,
    org: Option<i64>,
    /// Instances stored, per study.
    stored: BTreeMap<String, usize>,
    /// Failure reasons of refused instances.
    failed: Vec<u16>,
}

/// `POST /dicomweb/studies`. Every request leaves audit rows
/// (`study.store`): one per study an instance was stored in, and one
/// `failure`/`denied` row for refused instances or a refused request.
pub async fn store(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use crate::services::audit::{Event, Outcome as AuditOutcome};
    let mut log = StowAudit {
        actor_kind: "anonymous",
        actor: String::new(),
        org: None,
        stored: BTreeMap::new(),
        failed: Vec::new(),
    };
    let res = store_inner(&req, payload, &state, &mut log).await;
    let event = |outcome, study: Option<&str>, detail: String| {
        Event::new(log.actor_kind, log.actor.clone(), "study.store")
            .org(log.org)
            .study(study)
            .outcome(outcome)
            .request(&req)
            .detail(detail)
    };
    let mut events: Vec<Event> = log
        .stored
        .iter()
        .map(|(study, n)| {
            event(
                AuditOutcome::Success,
                Some(study),
                format!("STOW-RS: {n} instance(s) stored"),
            )
        })
        .collect();
    let status = match &res {
        Ok(r) => r.status(),
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    if !log.failed.is_empty() || log.stored.is_empty() {
        let mut reasons: Vec<String> = log.failed.iter().map(|r| format!("{r:#06X}")).collect();
        reasons.dedup();
        let outcome = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AuditOutcome::Denied,
            _ => AuditOutcome::Failure,
        };
        events.push(event(
            outcome,
            None,
            format!(
                "STOW-RS: HTTP {}, {} instance(s) refused{}{}",
                status.as_u16(),
                log.failed.len(),
                if reasons.is_empty() { "" } else { ", reasons " },
                reasons.join(" ")
            ),
        ));
    }
    for ev in events {
        state
            .audit
            .record(&state.db, ev)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    }
    res
}

async fn store_inner(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    log: &mut StowAudit,
) -> Result<HttpResponse, ApiError> {
    let req = req.clone();
    // Who may upload: a gateway token, or an admin session; the write is
    // made for its organisation (the gateway's, or the admin's own).
    let uploader = match GatewayOrAdmin::extract(&req).await {
        Ok(u) => u.0,
        Err(e) => {
            if req.headers().contains_key(header::AUTHORIZATION) {
                log.actor_kind = "gateway";
            } else if !matches!(e, ApiError::Unauthorized) {
                log.actor_kind = "user";
            }
            return Err(e);
        }
    };
    log.actor_kind = uploader.kind;
    log.actor = uploader.actor.clone();
    log.org = Some(uploader.org_id);
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("multipart/related") {
        return Err(ApiError::BadRequest(
            "expected Content-Type multipart/related; type=\"application/dicom\"".into(),
        ));
    }
    let boundary = multipart::boundary_of(ct)
        .ok_or_else(|| ApiError::BadRequest("multipart boundary missing".into()))?;
    // Size cap: a declared length beyond it is refused before any byte is
    // read, an undeclared (chunked) one as soon as it passes it.
    let cap = state.limits.stow_max_bytes;
    const TOO_LARGE: &str = "the STOW-RS request body is larger than accepted";
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("malformed Content-Length".into()))?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > cap) {
        return Err(ApiError::TooLarge(TOO_LARGE));
    }
    // The body, and each instance parsed from it, count against the memory
    // budget while they are held (twice the body); an undeclared length
    // takes its share as it grows.
    let mut reserved = declared
        .unwrap_or(8 << 20)
        .saturating_mul(2)
        .min(state.budget.capacity());
    let mut permits = vec![state.budget.acquire(reserved).await?];
    let mut body =
        BytesMut::with_capacity(usize::try_from(declared.unwrap_or(0).min(16 << 20)).unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        let len = body.len() as u64 + chunk.len() as u64;
        if len > cap {
            return Err(ApiError::TooLarge(TOO_LARGE));
        }
        // (never more than the whole budget, which one request may hold)
        let ceiling = cap.saturating_mul(2).min(state.budget.capacity());
        if len.saturating_mul(2) > reserved && reserved < ceiling {
            let more = reserved
                .max(len.saturating_mul(2) - reserved)
                .min(ceiling - reserved);
            permits.push(state.budget.acquire(more).await?);
            reserved = reserved.saturating_add(more);
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let parts = multipart::parse(&body, &boundary)
        .ok_or_else(|| ApiError::BadRequest("malformed multipart body".into()))?;
    if parts.iter().any(|p| {
        p.content_type
            .as_deref()
            .is_some_and(|c| !c.to_ascii_lowercase().starts_with("application/dicom"))
    }) {
        return Ok(not_acceptable(
            "only application/dicom parts are accepted (no separate bulk data)",
        ));
    }

    let base = base_url(&req);
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    let limits = state.limits.guard();
    for part in parts {
        let bytes: Bytes = part.body;
        let b2 = bytes.clone();
        let outcome = cpu::run(move || parse_part(&b2, &limits))
            .await
            .map_err(|e| {
                ApiError::Unexpected(anyhow::Error::new(e).context("parsing STOW part"))
            })?;
        let mut p = match outcome {
            Outcome::Ok(p) => p,
            Outcome::Failed(class, sop, reason) => {
                failed.push((class, sop, reason));
                continue;
            }
        };
        // Another organisation's study: refused (and audited) before its
        // object could be overwritten, with the same generic failure.
        if let Err(e) =
            ingest::check_owner(&state.db, uploader.org_id, &p.study, &p.series, &p.sop).await
        {
            if matches!(e, ingest::IngestError::NotOwner) {
                ingest::audit(
                    state,
                    &req,
                    &uploader,
                    STOW_ACTION,
                    Some(p.study.as_str()),
                    crate::services::audit::Outcome::Denied,
                    "refused: study of another organisation",
                )
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
            } else {
                tracing::error!(error = %e, "STOW: ownership check failed");
            }
            failed.push((
                p.sop_class.to_string(),
                p.sop.to_string(),
                PROCESSING_FAILURE,
            ));
            continue;
        }
        let key = ObjectKey::instance(&p.study, &p.series, &p.sop);
        let sha = mado_store::sha256_hex(&bytes);
        let size = bytes.len() as u64;
        if let Err(e) = state.store.put(key.as_str(), bytes, &sha).await {
            tracing::error!(error = %e, "STOW: storing object failed");
            failed.push((
                p.sop_class.to_string(),
                p.sop.to_string(),
                PROCESSING_FAILURE,
            ));
            continue;
        }
        let reg = RegisterInstance {
            version: WIRE_VERSION,
            object_key: key.to_string(),
            size,
            sha256: sha,
            study_uid: p.study.clone(),
            series_uid: p.series.clone(),
            sop_instance_uid: p.sop.clone(),
            sop_class_uid: p.sop_class.clone(),
            transfer_syntax_uid: p.ts.clone(),
            metadata: std::mem::take(&mut p.metadata),
        };
        match ingest::register_audited(state, &req, &uploader, STOW_ACTION, &reg).await {
            Ok(_) => stored.push(p),
            Err(e) => {
                tracing::info!(error = %e, "STOW: registration refused");
                failed.push((
                    p.sop_class.to_string(),
                    p.sop.to_string(),
                    PROCESSING_FAILURE,
                ));
            }
        }
    }

    let mut out = Map::new();
    if let Some(first) = stored.first() {
        out.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!("{base}/studies/{}", first.study)]}),
        );
    }
    if !stored.is_empty() {
        let items: Vec<Value> = stored
            .iter()
            .map(|p| {
                json!({
                    "00081150": ul(p.sop_class.as_str()),
                    "00081155": ul(p.sop.as_str()),
                    "00081190": {"vr": "UR", "Value": [format!(
                        "{base}/studies/{}/series/{}/instances/{}", p.study, p.series, p.sop
                    )]},
                })
            })
            .collect();
        out.insert("00081199".into(), json!({"vr": "SQ", "Value": items}));
    }
    if !failed.is_empty() {
        let items: Vec<Value> = failed
            .iter()
            .map(|(class, sop, reason)| {
                let mut m = Map::new();
                if !class.is_empty() {
                    m.insert("00081150".into(), ul(class));
                }
                if !sop.is_empty() {
                    m.insert("00081155".into(), ul(sop));
                }
                m.insert("00081197".into(), json!({"vr": "US", "Value": [reason]}));
                Value::Object(m)
            })
            .collect();
        out.insert("00081198".into(), json!({"vr": "SQ", "Value": items}));
    }
    for p in &stored {
        *log.stored.entry(p.study.to_string()).or_default() += 1;
    }
    log.failed = failed.iter().map(|f| f.2).collect();
    let status = if failed.is_empty() {
        StatusCode::OK
    } else if stored.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    tracing::info!(
        stored = stored.len(),
        failed = failed.len(),
        "STOW-RS request"
    );
    Ok(HttpResponse::build(status)
        .content_type("application/dicom+json")
        .body(Value::Object(out).to_string()))
}

/// Fuzzing entry (`super::fuzzing`): a STOW part is accepted for storing.
pub(super) fn part_ok(bytes: &[u8]) -> bool {
    matches!(
        parse_part(bytes, &mado_core::guard::Limits::default()),
        Outcome::Ok(_)
    )
}
