//! Registration of uploaded instances (`POST /api/v1/ingest/instances`).
//!
//! One transaction upserts patient → study → series → instance, idempotent
//! on the SOP Instance UID. Concurrent registrations of the same study are
//! safe: rows are created with `INSERT … ON CONFLICT DO NOTHING` and then
//! read back, counters are bumped with `SET n = n + 1` (re-evaluated on the
//! latest row version under PostgreSQL), the first statement of the
//! transaction is a write (so SQLite takes its write lock up front), and a
//! transaction that still loses a race (busy database, deadlock,
//! serialization failure) is retried.
//!
//! Ownership: a study belongs to the organisation that first registered it
//! (its row is created with the writer's organisation; the unique key on
//! the Study Instance UID makes exactly one of two concurrent first
//! registrations the owner). Every later write into the study, a new
//! series or instance or a re-sent instance with new bytes, is accepted
//! only from that organisation; anybody else gets [`IngestError::NotOwner`],
//! which callers answer exactly like an unknown study (404 / a generic STOW
//! failure), so a refusal never reveals that the study exists. A study
//! without an organisation (older than organisations) takes no writes. The
//! patient row is found or created within the study's organisation
//! (`(org_id, patient_id, issuer)` is the patient key).

use crate::db::entities::{instances, patients, series, studies};
use crate::services::audit::{AuditError, Event, Outcome};
use crate::state::AppState;
use actix_web::HttpRequest;
use chrono::Utc;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use mado_core::wire::{RegisterInstance, WIRE_VERSION};
use mado_core::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request is malformed; the message is safe to show.
    #[error("{0}")]
    Invalid(String),
    /// The registration contradicts the index (e.g. a series UID already
    /// indexed under another study).
    #[error("{0}")]
    Conflict(&'static str),
    /// The study (or the series / instance named) belongs to another
    /// organisation. Never shown as such: answered as an unknown study.
    #[error("not the owner of the study")]
    NotOwner,
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// The write was done but its audit row could not be written.
    #[error(transparent)]
    Audit(AuditError),
}

/// Attributes of the registration that the index keeps in columns.
#[derive(Debug, Default)]
struct Facts {
    patient_id: String,
    issuer: String,
    patient_name: String,
    birth_date: String,
    sex: String,
    study_date: String,
    study_time: String,
    accession: String,
    study_description: String,
    modality: String,
    series_number: Option<i32>,
    series_description: String,
    body_part: String,
    instance_number: Option<i32>,
    rows: Option<i32>,
    columns: Option<i32>,
    number_of_frames: i32,
}

/// Check a registration and pull the indexed attributes out of its DICOM
/// JSON metadata.
fn extract(req: &RegisterInstance) -> Result<Facts, IngestError> {
    if req.version != WIRE_VERSION {
        return Err(IngestError::Invalid(format!(
            "unsupported version {}, expected {WIRE_VERSION}",
            req.version
        )));
    }
    let expected = ObjectKey::instance(&req.study_uid, &req.series_uid, &req.sop_instance_uid);
    if req.object_key != expected.as_str() {
        return Err(IngestError::Invalid(
            "object_key does not match the object-key scheme for these UIDs".into(),
        ));
    }
    if req.sha256.len() != 64
        || !req
            .sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(IngestError::Invalid(
            "sha256 must be 64 lower-case hex digits".into(),
        ));
    }
    if i64::try_from(req.size).is_err() {
        return Err(IngestError::Invalid("size is too large".into()));
    }
    if !req.metadata.is_object() {
        return Err(IngestError::Invalid(
            "metadata must be a DICOM JSON object".into(),
        ));
    }
    let obj: InMemDicomObject = dicom_json::from_value(req.metadata.clone())
        .map_err(|e| IngestError::Invalid(format!("metadata is not valid DICOM JSON: {e}")))?;

    for (tag, given, name) in [
        (
            tags::STUDY_INSTANCE_UID,
            req.study_uid.as_str(),
            "StudyInstanceUID",
        ),
        (
            tags::SERIES_INSTANCE_UID,
            req.series_uid.as_str(),
            "SeriesInstanceUID",
        ),
        (
            tags::SOP_INSTANCE_UID,
            req.sop_instance_uid.as_str(),
            "SOPInstanceUID",
        ),
    ] {
        let in_meta = text(&obj, tag, 64);
        if !in_meta.is_empty() && in_meta != given {
            return Err(IngestError::Invalid(format!(
                "metadata {name} differs from the registration"
            )));
        }
    }

    Ok(Facts {
        patient_id: text(&obj, tags::PATIENT_ID, 64),
        issuer: text(&obj, tags::ISSUER_OF_PATIENT_ID, 64),
        patient_name: text(&obj, tags::PATIENT_NAME, 324),
        birth_date: text(&obj, tags::PATIENT_BIRTH_DATE, 16),
        sex: text(&obj, tags::PATIENT_SEX, 16),
        study_date: text(&obj, tags::STUDY_DATE, 16),
        study_time: text(&obj, tags::STUDY_TIME, 32),
        accession: text(&obj, tags::ACCESSION_NUMBER, 64),
        study_description: text(&obj, tags::STUDY_DESCRIPTION, 128),
        modality: text(&obj, tags::MODALITY, 16),
        series_number: int(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION, 128),
        body_part: text(&obj, tags::BODY_PART_EXAMINED, 64),
        instance_number: int(&obj, tags::INSTANCE_NUMBER),
        rows: int(&obj, tags::ROWS),
        columns: int(&obj, tags::COLUMNS),
        number_of_frames: int(&obj, tags::NUMBER_OF_FRAMES)
            .filter(|n| *n >= 1)
            .unwrap_or(1),
    })
}

/// The trimmed string value of `tag`, cut to `max_chars` characters; empty
/// when absent or not convertible.
fn text(obj: &InMemDicomObject, tag: Tag, max_chars: usize) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .chars()
                .take(max_chars)
                .collect()
        })
        .unwrap_or_default()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i32> {
    obj.element(tag).ok().and_then(|e| e.to_int::<i32>().ok())
}

/// Who writes: the uploading gateway or an administrator, always on
/// behalf of one organisation.
#[derive(Debug, Clone)]
pub struct Uploader {
    /// Audit actor kind: `gateway` or `user`.
    pub kind: &'static str,
    /// Audit actor: the gateway's name, or `id:username`.
    pub actor: String,
    /// The organisation the write is made for (a new study belongs to it).
    pub org_id: i64,
}

/// Register one instance on behalf of the organisation `org_id`. Returns
/// `true` when it was new, `false` when it was already indexed.
pub async fn register_for_org(
    db: &DatabaseConnection,
    req: &RegisterInstance,
    org_id: i64,
) -> Result<bool, IngestError> {
    let facts = extract(req)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match register_once(db, req, &facts, org_id).await {
            Err(IngestError::Db(e)) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                tracing::debug!(attempt, error = %e, "retrying registration");
                tokio::time::sleep(Duration::from_millis(10u64 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// [`register_for_org`] for `who`, with its audit row (`action`, e.g.
/// `ingest.register` or `stow.store`): accepted, refused and failed
/// registrations alike. If the audit row cannot be written the write
/// fails (fail closed).
pub async fn register_audited(
    state: &AppState,
    http: &HttpRequest,
    who: &Uploader,
    action: &str,
    req: &RegisterInstance,
) -> Result<bool, IngestError> {
    let res = register_for_org(&state.db, req, who.org_id).await;
    let (outcome, detail) = match &res {
        Ok(true) => (Outcome::Success, "created"),
        Ok(false) => (Outcome::Success, "already indexed"),
        Err(IngestError::NotOwner) => (Outcome::Denied, "refused: study of another organisation"),
        Err(IngestError::Invalid(_)) => (Outcome::Failure, "invalid registration"),
        Err(IngestError::Conflict(_)) => (Outcome::Failure, "conflicting registration"),
        Err(IngestError::Db(_) | IngestError::Audit(_)) => (Outcome::Failure, "database error"),
    };
    let audited = audit(
        state,
        http,
        who,
        action,
        Some(req.study_uid.as_str()),
        outcome,
        detail,
    )
    .await;
    match (res, audited) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(IngestError::Audit(e)),
        (Ok(created), Ok(())) => Ok(created),
    }
}

/// Append the audit row of a write by `who`.
pub async fn audit(
    state: &AppState,
    http: &HttpRequest,
    who: &Uploader,
    action: &str,
    study: Option<&str>,
    outcome: Outcome,
    detail: &str,
) -> Result<(), AuditError> {
    state
        .audit
        .record(
            &state.db,
            Event::new(who.kind, who.actor.clone(), action)
                .org(Some(who.org_id))
                .study(study)
                .outcome(outcome)
                .request(http)
                .detail(detail),
        )
        .await
        .map(|_| ())
}

/// Whether `org_id` may write the instance `(study, series, sop)`: `Err(
/// NotOwner)` when any of the three is already indexed under a study of
/// another organisation (or of none). Checked by STOW before the object
/// is stored; [`register_for_org`] checks it again inside its
/// transaction.
pub async fn check_owner(
    db: &DatabaseConnection,
    org_id: i64,
    study: &StudyUid,
    series: &SeriesUid,
    sop: &SopInstanceUid,
) -> Result<(), IngestError> {
    let owner = |o: Option<Option<i64>>| match o {
        Some(o) if o != Some(org_id) => Err(IngestError::NotOwner),
        _ => Ok(()),
    };
    let study_org: Option<Option<i64>> = studies::Entity::find()
        .select_only()
        .column(studies::Column::OrgId)
        .filter(studies::Column::StudyUid.eq(study.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    owner(study_org)?;
    let series_org: Option<Option<i64>> = series::Entity::find()
        .select_only()
        .column(studies::Column::OrgId)
        .inner_join(studies::Entity)
        .filter(series::Column::SeriesUid.eq(series.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    owner(series_org)?;
    let sop_study: Option<i64> = instances::Entity::find()
        .select_only()
        .column(series::Column::StudyId)
        .inner_join(series::Entity)
        .filter(instances::Column::SopInstanceUid.eq(sop.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    if let Some(study_pk) = sop_study {
        owner(Some(study_org_of(db, study_pk).await?))?;
    }
    Ok(())
}

/// The organisation of the study row `study_pk`.
async fn study_org_of<C: ConnectionTrait>(db: &C, study_pk: i64) -> Result<Option<i64>, DbErr> {
    Ok(studies::Entity::find()
        .select_only()
        .column(studies::Column::OrgId)
        .filter(studies::Column::Id.eq(study_pk))
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten())
}

/// Errors worth retrying the whole transaction for.
fn is_transient(e: &DbErr) -> bool {
    if matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        return true;
    }
    let msg = e.to_string().to_ascii_lowercase();
    msg.contains("database is locked")
        || msg.contains("database table is locked")
        || msg.contains("deadlock detected")
        || msg.contains("could not serialize")
        || msg.contains("record not found")
}

async fn register_once(
    db: &DatabaseConnection,
    req: &RegisterInstance,
    f: &Facts,
    org_id: i64,
) -> Result<bool, IngestError> {
    let now = Utc::now();
    let txn = db.begin().await?;

    // Patient (first statement is a write: see the module comment).
    // The patient is the writer's organisation's: a study it does not own
    // is refused below, and the transaction (with this row) rolled back.
    patients::Entity::insert(patients::ActiveModel {
        org_id: Set(org_id),
        patient_id: Set(f.patient_id.clone()),
        issuer: Set(f.issuer.clone()),
        name: Set(f.patient_name.clone()),
        birth_date: Set(f.birth_date.clone()),
        sex: Set(f.sex.clone()),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([
        patients::Column::OrgId,
        patients::Column::PatientId,
        patients::Column::Issuer,
    ])
    .exec_without_returning(&txn)
    .await?;
    let patient_pk: i64 = patients::Entity::find()
        .select_only()
        .column(patients::Column::Id)
        .filter(patients::Column::OrgId.eq(org_id))
        .filter(patients::Column::PatientId.eq(f.patient_id.as_str()))
        .filter(patients::Column::Issuer.eq(f.issuer.as_str()))
        .into_tuple()
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("patient".into()))?;

    // Study.
    studies::Entity::insert(studies::ActiveModel {
        study_uid: Set(req.study_uid.to_string()),
        patient_id: Set(patient_pk),
        study_date: Set(f.study_date.clone()),
        study_time: Set(f.study_time.clone()),
        accession: Set(f.accession.clone()),
        description: Set(f.study_description.clone()),
        modalities_in_study: Set(String::new()),
        num_series: Set(0),
        num_instances: Set(0),
        created_at: Set(now),
        org_id: Set(Some(org_id)),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([studies::Column::StudyUid])
    .exec_without_returning(&txn)
    .await?;
    let (study_pk, study_org): (i64, Option<i64>) = studies::Entity::find()
        .select_only()
        .column(studies::Column::Id)
        .column(studies::Column::OrgId)
        .filter(studies::Column::StudyUid.eq(req.study_uid.as_str()))
        .into_tuple()
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("study".into()))?;
    if study_org != Some(org_id) {
        // Another organisation's study (it registered it first).
        txn.rollback().await?;
        return Err(IngestError::NotOwner);
    }

    // Series.
    let series_created = inserted(
        series::Entity::insert(series::ActiveModel {
            series_uid: Set(req.series_uid.to_string()),
            study_id: Set(study_pk),
            modality: Set(f.modality.clone()),
            series_number: Set(f.series_number),
            description: Set(f.series_description.clone()),
            body_part: Set(f.body_part.clone()),
            num_instances: Set(0),
            created_at: Set(now),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([series::Column::SeriesUid])
        .exec_without_returning(&txn)
        .await?,
    );
    let (series_pk, series_study_pk): (i64, i64) = series::Entity::find()
        .select_only()
        .column(series::Column::Id)
        .column(series::Column::StudyId)
        .filter(series::Column::SeriesUid.eq(req.series_uid.as_str()))
        .into_tuple()
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("series".into()))?;
    if series_study_pk != study_pk {
        // The series UID is already indexed under another study: keep the
        // index consistent and refuse rather than cross-link (and say
        // nothing about a study of another organisation).
        let other_org = study_org_of(&txn, series_study_pk).await?;
        txn.rollback().await?;
        return Err(if other_org == Some(org_id) {
            IngestError::Conflict("series UID is already indexed under another study")
        } else {
            IngestError::NotOwner
        });
    }

    // Instance.
    let created = inserted(
        instances::Entity::insert(instances::ActiveModel {
            sop_instance_uid: Set(req.sop_instance_uid.to_string()),
            series_id: Set(series_pk),
            sop_class_uid: Set(req.sop_class_uid.to_string()),
            instance_number: Set(f.instance_number),
            transfer_syntax_uid: Set(req.transfer_syntax_uid.to_string()),
            object_key: Set(req.object_key.clone()),
            size: Set(i64::try_from(req.size).unwrap_or(i64::MAX)),
            sha256: Set(req.sha256.clone()),
            rows: Set(f.rows),
            columns: Set(f.columns),
            number_of_frames: Set(f.number_of_frames),
            metadata: Set(req.metadata.to_string()),
            created_at: Set(now),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([instances::Column::SopInstanceUid])
        .exec_without_returning(&txn)
        .await?,
    );

    if created {
        series::Entity::update_many()
            .col_expr(
                series::Column::NumInstances,
                Expr::col(series::Column::NumInstances).add(1),
            )
            .filter(series::Column::Id.eq(series_pk))
            .exec(&txn)
            .await?;
        // This UPDATE also locks the study row (PostgreSQL), so the
        // modality read below sees every series committed before us.
        studies::Entity::update_many()
            .col_expr(
                studies::Column::NumInstances,
                Expr::col(studies::Column::NumInstances).add(1),
            )
            .col_expr(
                studies::Column::NumSeries,
                Expr::col(studies::Column::NumSeries).add(i32::from(series_created)),
            )
            .filter(studies::Column::Id.eq(study_pk))
            .exec(&txn)
            .await?;
        if series_created {
            let modalities: Vec<String> = series::Entity::find()
                .select_only()
                .column(series::Column::Modality)
                .distinct()
                .filter(series::Column::StudyId.eq(study_pk))
                .order_by_asc(series::Column::Modality)
                .into_tuple()
                .all(&txn)
                .await?;
            let joined = modalities
                .into_iter()
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join("\\");
            studies::Entity::update_many()
                .col_expr(
                    studies::Column::ModalitiesInStudy,
                    Expr::value(joined.chars().take(256).collect::<String>()),
                )
                .filter(studies::Column::Id.eq(study_pk))
                .exec(&txn)
                .await?;
        }
    }
    if !created {
        // An instance UID indexed under another organisation's study:
        // refused like an unknown study.
        let existing_study: Option<i64> = instances::Entity::find()
            .select_only()
            .column(series::Column::StudyId)
            .inner_join(series::Entity)
            .filter(instances::Column::SopInstanceUid.eq(req.sop_instance_uid.as_str()))
            .into_tuple()
            .one(&txn)
            .await?;
        if let Some(other) = existing_study.filter(|s| *s != study_pk) {
            if study_org_of(&txn, other).await? != Some(org_id) {
                txn.rollback().await?;
                return Err(IngestError::NotOwner);
            }
        }
        // Re-sent (by the owner). The same bytes: nothing to do (idempotent). Different
        // bytes under the same SOP Instance UID (a corrected instance): the
        // object under its key was just overwritten, so the index follows
        // the latest content (its digest names every cached rendering).
        let replaced = instances::Entity::update_many()
            .col_expr(instances::Column::Sha256, Expr::value(req.sha256.clone()))
            .col_expr(
                instances::Column::Size,
                Expr::value(i64::try_from(req.size).unwrap_or(i64::MAX)),
            )
            .col_expr(
                instances::Column::SopClassUid,
                Expr::value(req.sop_class_uid.to_string()),
            )
            .col_expr(
                instances::Column::TransferSyntaxUid,
                Expr::value(req.transfer_syntax_uid.to_string()),
            )
            .col_expr(
                instances::Column::InstanceNumber,
                Expr::value(f.instance_number),
            )
            .col_expr(instances::Column::Rows, Expr::value(f.rows))
            .col_expr(instances::Column::Columns, Expr::value(f.columns))
            .col_expr(
                instances::Column::NumberOfFrames,
                Expr::value(f.number_of_frames),
            )
            .col_expr(
                instances::Column::Metadata,
                Expr::value(req.metadata.to_string()),
            )
            .filter(instances::Column::SopInstanceUid.eq(req.sop_instance_uid.as_str()))
            .filter(instances::Column::SeriesId.eq(series_pk))
            .filter(instances::Column::ObjectKey.eq(req.object_key.as_str()))
            .filter(instances::Column::Sha256.ne(req.sha256.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        if replaced > 0 {
            tracing::info!(
                "instance re-sent with different content: index updated to the new object"
            );
        }
    }
    txn.commit().await?;
    Ok(created)
}

fn inserted(r: sea_orm::TryInsertResult<u64>) -> bool {
    matches!(r, sea_orm::TryInsertResult::Inserted(n) if n > 0)
}

/// Fuzzing entry (fuzz/): the checks and extraction of a registration,
/// without the database. Not part of the API.
#[doc(hidden)]
pub fn fuzz_check_registration(req: &RegisterInstance) -> Result<(), IngestError> {
    extract(req).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mado_core::Uid;
    use serde_json::json;

    fn req(metadata: serde_json::Value) -> RegisterInstance {
        let st = StudyUid::parse("2.25.1").unwrap();
        let se = SeriesUid::parse("2.25.2").unwrap();
        let sop = SopInstanceUid::parse("2.25.3").unwrap();
        RegisterInstance {
            version: 1,
            object_key: ObjectKey::instance(&st, &se, &sop).to_string(),
            size: 10,
            sha256: "0".repeat(64),
            study_uid: st,
            series_uid: se,
            sop_instance_uid: sop,
            sop_class_uid: Uid::parse("1.2.840.10008.5.1.4.1.1.2").unwrap(),
            transfer_syntax_uid: Uid::parse("1.2.840.10008.1.2.1").unwrap(),
            metadata,
        }
    }

    #[test]
    fn extracts_facts() {
        let f = extract(&req(json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "ANON^A1"}]},
            "00100020": {"vr": "LO", "Value": ["P-1"]},
            "00080020": {"vr": "DA", "Value": ["20240105"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00200011": {"vr": "IS", "Value": [3]},
            "00280010": {"vr": "US", "Value": [64]},
            "0020000D": {"vr": "UI", "Value": ["2.25.1"]}
        })))
        .unwrap();
        assert_eq!(f.patient_name, "ANON^A1");
        assert_eq!(f.patient_id, "P-1");
        assert_eq!(f.study_date, "20240105");
        assert_eq!(f.modality, "CT");
        assert_eq!(f.series_number, Some(3));
        assert_eq!(f.rows, Some(64));
        assert_eq!(f.number_of_frames, 1);
    }

    #[test]
    fn rejects_inconsistent() {
        assert!(extract(&req(json!({"0020000D": {"vr": "UI", "Value": ["2.25.9"]}}))).is_err());
        assert!(extract(&req(json!([1, 2]))).is_err());
        let mut r = req(json!({}));
        r.object_key = "studies/x".into();
        assert!(extract(&r).is_err());
        let mut r = req(json!({}));
        r.sha256 = "ABC".into();
        assert!(extract(&r).is_err());
    }
}
