//! STOW-RS (`POST /dicomweb/studies`, multipart/related application/dicom).
//!
//! Accepted from a gateway token or an admin session. STOW only accepts
//! de-identified data: every instance must carry Patient Identity Removed
//! (0012,0062) = YES, otherwise it is refused (FailedSOPSequence, reason
//! 0x0110) — de-identification on STOW comes later. Stored objects go
//! through the object-key scheme and the ordinary ingest service.

use super::{base_url, not_acceptable};
use crate::error::ApiError;
use crate::extract::{resolve_session, GatewayAuth};
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

/// Largest STOW request body.
const MAX_BODY: usize = 1024 * 1024 * 1024;

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

fn parse_part(bytes: &[u8]) -> Outcome {
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

pub async fn store(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Who may upload: a gateway token, or an admin session.
    let gateway = if req.headers().contains_key(header::AUTHORIZATION) {
        Some(GatewayAuth::extract(&req).await?)
    } else {
        None
    };
    if gateway.is_none() {
        match resolve_session(&req).await? {
            Some(s) if s.user.role == "admin" => {}
            Some(_) => return Err(ApiError::Forbidden("uploading requires an administrator")),
            None => return Err(ApiError::Unauthorized),
        }
    }
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
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::BadRequest("request body too large".into()));
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

    let org_id = match &gateway {
        Some(g) => Some(
            crate::services::orgs::ensure(&state.db, &g.0.org)
                .await
                .map_err(|e| {
                    ApiError::Unexpected(anyhow::Error::new(e).context("resolving organisation"))
                })?,
        ),
        None => None,
    };

    let base = base_url(&req);
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    for part in parts {
        let bytes: Bytes = part.body;
        let b2 = bytes.clone();
        let outcome = cpu::run(move || parse_part(&b2)).await.map_err(|e| {
            ApiError::Unexpected(anyhow::Error::new(e).context("parsing STOW part"))
        })?;
        let mut p = match outcome {
            Outcome::Ok(p) => p,
            Outcome::Failed(class, sop, reason) => {
                failed.push((class, sop, reason));
                continue;
            }
        };
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
        match ingest::register_for_org(&state.db, &reg, org_id).await {
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
    matches!(parse_part(bytes), Outcome::Ok(_))
}
