//! QIDO-RS (PS3.18 §10.6): parse the query parameters, turn matching keys
//! into SQL conditions on the index tables and build DICOM JSON answers.
//!
//! Matching keys may be keywords (`PatientName`) or tags (`00100010`).
//! Supported matching: single value (exact), wildcard `*`/`?` on string
//! attributes, date/time ranges (`A-B`, `A-`, `-B`), UID lists (comma or
//! backslash separated), integers. `fuzzymatching` is accepted and makes
//! person-name matching case-insensitive.

use crate::db::entities::{instances, patients, series, studies};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, TagRange};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, JoinType, QueryFilter, QueryOrder,
    QuerySelect, RelationTrait,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Hard cap on one page of results.
pub const MAX_LIMIT: u64 = 10_000;
/// Largest `offset` accepted (the databases take a signed 64-bit offset; a
/// larger one is a 400, never a failed bind).
pub const MAX_OFFSET: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum QidoError {
    /// A malformed parameter; the message names it.
    #[error("{0}")]
    BadParam(String),
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// The attributes the index can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    StudyInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    StudyDescription,
    ModalitiesInStudy,
    PatientName,
    PatientId,
    PatientBirthDate,
    PatientSex,
    SeriesInstanceUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    BodyPartExamined,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Date,
    Time,
    Int,
    Text,
    Name,
}

impl Attr {
    fn from_tag(tag: Tag) -> Option<Attr> {
        Some(match tag {
            tags::STUDY_INSTANCE_UID => Attr::StudyInstanceUid,
            tags::STUDY_DATE => Attr::StudyDate,
            tags::STUDY_TIME => Attr::StudyTime,
            tags::ACCESSION_NUMBER => Attr::AccessionNumber,
            tags::STUDY_DESCRIPTION => Attr::StudyDescription,
            tags::MODALITIES_IN_STUDY => Attr::ModalitiesInStudy,
            tags::PATIENT_NAME => Attr::PatientName,
            tags::PATIENT_ID => Attr::PatientId,
            tags::PATIENT_BIRTH_DATE => Attr::PatientBirthDate,
            tags::PATIENT_SEX => Attr::PatientSex,
            tags::SERIES_INSTANCE_UID => Attr::SeriesInstanceUid,
            tags::MODALITY => Attr::Modality,
            tags::SERIES_NUMBER => Attr::SeriesNumber,
            tags::SERIES_DESCRIPTION => Attr::SeriesDescription,
            tags::BODY_PART_EXAMINED => Attr::BodyPartExamined,
            tags::SOP_INSTANCE_UID => Attr::SopInstanceUid,
            tags::SOP_CLASS_UID => Attr::SopClassUid,
            tags::INSTANCE_NUMBER => Attr::InstanceNumber,
            _ => return None,
        })
    }

    fn level(self) -> Level {
        use Attr::*;
        match self {
            StudyInstanceUid | StudyDate | StudyTime | AccessionNumber | StudyDescription
            | ModalitiesInStudy | PatientName | PatientId | PatientBirthDate | PatientSex => {
                Level::Study
            }
            SeriesInstanceUid | Modality | SeriesNumber | SeriesDescription | BodyPartExamined => {
                Level::Series
            }
            SopInstanceUid | SopClassUid | InstanceNumber => Level::Instance,
        }
    }

    fn kind(self) -> Kind {
        use Attr::*;
        match self {
            StudyInstanceUid | SeriesInstanceUid | SopInstanceUid | SopClassUid => Kind::Uid,
            StudyDate | PatientBirthDate => Kind::Date,
            StudyTime => Kind::Time,
            SeriesNumber | InstanceNumber => Kind::Int,
            PatientName => Kind::Name,
            AccessionNumber | StudyDescription | ModalitiesInStudy | PatientId | PatientSex
            | Modality | SeriesDescription | BodyPartExamined => Kind::Text,
        }
    }
}

/// One parsed matching value.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchValue {
    /// Empty value: universal match (only asks for the attribute).
    Universal,
    Exact(String),
    Wildcard(String),
    UidList(Vec<String>),
    Range(Option<String>, Option<String>),
    Int(i32),
}

/// A parsed QIDO request.
#[derive(Debug, Clone, Default)]
pub struct QidoQuery {
    pub matches: Vec<(Attr, MatchValue)>,
    /// Tags asked for with `includefield` (and the matching keys).
    pub include: Vec<Tag>,
    pub include_all: bool,
    pub fuzzy: bool,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// Resolve a keyword or an 8-hex-digit tag.
pub fn resolve_tag(key: &str) -> Option<Tag> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&key[..4], 16).ok()?;
        let elem = u16::from_str_radix(&key[4..], 16).ok()?;
        return Some(Tag(group, elem));
    }
    let entry = StandardDataDictionary.by_name(key)?;
    match entry.tag_range() {
        TagRange::Single(t) => Some(t),
        _ => None,
    }
}

fn bad(param: &str, what: &str) -> QidoError {
    let shown: String = param.chars().take(64).collect();
    QidoError::BadParam(format!("query parameter {shown:?}: {what}"))
}

fn valid_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn valid_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_time(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn parse_value(param: &str, attr: Attr, raw: &str) -> Result<MatchValue, QidoError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(MatchValue::Universal);
    }
    match attr.kind() {
        Kind::Uid => {
            let uids: Vec<String> = raw
                .split([',', '\\'])
                .map(|s| s.trim().to_owned())
                .collect();
            if uids.iter().any(|u| !valid_uid(u)) {
                return Err(bad(param, "not a UID or a list of UIDs"));
            }
            Ok(MatchValue::UidList(uids))
        }
        Kind::Date | Kind::Time => {
            let ok = |s: &str| {
                if attr.kind() == Kind::Date {
                    valid_date(s)
                } else {
                    valid_time(s)
                }
            };
            let what = if attr.kind() == Kind::Date {
                "expected YYYYMMDD or a range YYYYMMDD-YYYYMMDD"
            } else {
                "expected HHMMSS or a range HHMMSS-HHMMSS"
            };
            match raw.split_once('-') {
                None if ok(raw) => Ok(MatchValue::Exact(raw.to_owned())),
                None => Err(bad(param, what)),
                Some((a, b)) => {
                    let (a, b) = (a.trim(), b.trim());
                    if (a.is_empty() && b.is_empty())
                        || (!a.is_empty() && !ok(a))
                        || (!b.is_empty() && !ok(b))
                    {
                        return Err(bad(param, what));
                    }
                    let a = (!a.is_empty()).then(|| a.to_owned());
                    let b = (!b.is_empty()).then(|| b.to_owned());
                    Ok(MatchValue::Range(a, b))
                }
            }
        }
        Kind::Int => raw
            .parse::<i32>()
            .map(MatchValue::Int)
            .map_err(|_| bad(param, "expected an integer")),
        Kind::Text | Kind::Name => {
            if raw.chars().count() > 324 {
                return Err(bad(param, "value too long"));
            }
            if raw == "*" {
                Ok(MatchValue::Universal)
            } else if raw.contains(['*', '?']) {
                Ok(MatchValue::Wildcard(raw.to_owned()))
            } else {
                Ok(MatchValue::Exact(raw.to_owned()))
            }
        }
    }
}

/// Parse the query string pairs for a request at `level`.
pub fn parse_query(pairs: &[(String, String)], level: Level) -> Result<QidoQuery, QidoError> {
    let mut q = QidoQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => {
                let n: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(key, "expected a non-negative integer"))?;
                q.limit = Some(std::cmp::min(n, MAX_LIMIT));
            }
            "offset" => {
                q.offset = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_OFFSET)
                    .ok_or_else(|| {
                        bad(key, &format!("expected an integer from 0 to {MAX_OFFSET}"))
                    })?;
            }
            "fuzzymatching" => match value.trim() {
                "true" => q.fuzzy = true,
                "false" | "" => q.fuzzy = false,
                _ => return Err(bad(key, "expected true or false")),
            },
            "includefield" => {
                for f in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f == "all" {
                        q.include_all = true;
                    } else {
                        let tag = resolve_tag(f).ok_or_else(|| bad(f, "unknown attribute"))?;
                        q.include.push(tag);
                    }
                }
            }
            // Harmless parameters some clients send.
            "_" | "orderby" => {}
            other => {
                let tag = resolve_tag(other).ok_or_else(|| bad(other, "unknown attribute"))?;
                q.include.push(tag);
                let Some(attr) = Attr::from_tag(tag) else {
                    // A known attribute the index cannot match on: it is
                    // returned when available but does not filter.
                    continue;
                };
                let allowed = match level {
                    Level::Study => attr.level() == Level::Study,
                    Level::Series => attr.level() != Level::Instance,
                    Level::Instance => true,
                };
                if !allowed {
                    return Err(bad(other, "not a matching key at this query level"));
                }
                let v = parse_value(other, attr, value)?;
                if v != MatchValue::Universal {
                    q.matches.push((attr, v));
                }
            }
        }
    }
    Ok(q)
}

/// A `LIKE` pattern (escape `!`) for a DICOM wildcard value.
fn like_pattern(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '!' => {
                out.push('!');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn column_expr(attr: Attr) -> Expr {
    use Attr::*;
    match attr {
        StudyInstanceUid => Expr::col(studies::Column::StudyUid.as_column_ref()),
        StudyDate => Expr::col(studies::Column::StudyDate.as_column_ref()),
        StudyTime => Expr::col(studies::Column::StudyTime.as_column_ref()),
        AccessionNumber => Expr::col(studies::Column::Accession.as_column_ref()),
        StudyDescription => Expr::col(studies::Column::Description.as_column_ref()),
        ModalitiesInStudy => Expr::col(studies::Column::ModalitiesInStudy.as_column_ref()),
        PatientName => Expr::col(patients::Column::Name.as_column_ref()),
        PatientId => Expr::col(patients::Column::PatientId.as_column_ref()),
        PatientBirthDate => Expr::col(patients::Column::BirthDate.as_column_ref()),
        PatientSex => Expr::col(patients::Column::Sex.as_column_ref()),
        SeriesInstanceUid => Expr::col(series::Column::SeriesUid.as_column_ref()),
        Modality => Expr::col(series::Column::Modality.as_column_ref()),
        SeriesNumber => Expr::col(series::Column::SeriesNumber.as_column_ref()),
        SeriesDescription => Expr::col(series::Column::Description.as_column_ref()),
        BodyPartExamined => Expr::col(series::Column::BodyPart.as_column_ref()),
        SopInstanceUid => Expr::col(instances::Column::SopInstanceUid.as_column_ref()),
        SopClassUid => Expr::col(instances::Column::SopClassUid.as_column_ref()),
        InstanceNumber => Expr::col(instances::Column::InstanceNumber.as_column_ref()),
    }
}

/// The SQL condition for one matching key.
fn condition(attr: Attr, value: &MatchValue, fuzzy: bool) -> Condition {
    if attr == Attr::ModalitiesInStudy {
        // Match against the series of the study rather than the joined
        // string: `studies.id IN (SELECT study_id FROM series WHERE …)`.
        let modalities: Vec<String> = match value {
            MatchValue::Exact(v) => v.split('\\').map(str::to_owned).collect(),
            MatchValue::Wildcard(v) => {
                let sub = Query::select()
                    .column(series::Column::StudyId)
                    .from(series::Entity)
                    .and_where(
                        Expr::col(series::Column::Modality)
                            .like(LikeExpr::new(like_pattern(v)).escape('!')),
                    )
                    .to_owned();
                return Condition::all().add(studies::Column::Id.in_subquery(sub));
            }
            _ => return Condition::all(),
        };
        let sub = Query::select()
            .column(series::Column::StudyId)
            .from(series::Entity)
            .and_where(Expr::col(series::Column::Modality).is_in(modalities))
            .to_owned();
        return Condition::all().add(studies::Column::Id.in_subquery(sub));
    }
    let col = column_expr(attr);
    let cond = match value {
        MatchValue::Universal => return Condition::all(),
        MatchValue::Exact(v) if attr.kind() == Kind::Name && fuzzy => {
            Expr::expr(Func::lower(col)).eq(v.to_lowercase())
        }
        MatchValue::Exact(v) => col.eq(v.clone()),
        MatchValue::Wildcard(v) if attr.kind() == Kind::Name && fuzzy => {
            Expr::expr(Func::lower(col))
                .like(LikeExpr::new(like_pattern(&v.to_lowercase())).escape('!'))
        }
        MatchValue::Wildcard(v) => col.like(LikeExpr::new(like_pattern(v)).escape('!')),
        MatchValue::UidList(v) => col.is_in(v.clone()),
        MatchValue::Int(n) => col.eq(*n),
        MatchValue::Range(a, b) => {
            let mut c = Condition::all().add(column_expr(attr).ne(""));
            if let Some(a) = a {
                c = c.add(column_expr(attr).gte(a.clone()));
            }
            if let Some(b) = b {
                // A time upper bound "1015" includes "101530".
                let hi = if attr.kind() == Kind::Time {
                    format!("{b}~")
                } else {
                    b.clone()
                };
                c = c.add(column_expr(attr).lte(hi));
            }
            return c;
        }
    };
    Condition::all().add(cond)
}

fn conditions(q: &QidoQuery) -> Condition {
    q.matches.iter().fold(Condition::all(), |c, (a, v)| {
        c.add(condition(*a, v, q.fuzzy))
    })
}

// ---- DICOM JSON building ----

fn key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.0, tag.1)
}

fn put(map: &mut Map<String, Value>, tag: Tag, vr: &str, value: Option<Value>) {
    let mut el = Map::new();
    el.insert("vr".into(), Value::String(vr.into()));
    if let Some(v) = value {
        el.insert("Value".into(), Value::Array(vec![v]));
    }
    map.insert(key(tag), Value::Object(el));
}

fn put_str(map: &mut Map<String, Value>, tag: Tag, vr: &str, s: &str) {
    put(
        map,
        tag,
        vr,
        (!s.is_empty()).then(|| Value::String(s.to_owned())),
    );
}

fn put_multi(map: &mut Map<String, Value>, tag: Tag, vr: &str, s: &str) {
    let values: Vec<Value> = s
        .split('\\')
        .filter(|v| !v.is_empty())
        .map(|v| Value::String(v.to_owned()))
        .collect();
    let mut el = Map::new();
    el.insert("vr".into(), Value::String(vr.into()));
    if !values.is_empty() {
        el.insert("Value".into(), Value::Array(values));
    }
    map.insert(key(tag), Value::Object(el));
}

fn put_int(map: &mut Map<String, Value>, tag: Tag, vr: &str, n: Option<i64>) {
    put(map, tag, vr, n.map(|n| json!(n)));
}

fn put_name(map: &mut Map<String, Value>, tag: Tag, s: &str) {
    put(
        map,
        tag,
        "PN",
        (!s.is_empty()).then(|| json!({ "Alphabetic": s })),
    );
}

fn study_attrs(
    map: &mut Map<String, Value>,
    st: &studies::Model,
    p: Option<&patients::Model>,
    base: &str,
    counts: bool,
) {
    put_str(map, tags::STUDY_DATE, "DA", &st.study_date);
    put_str(map, tags::STUDY_TIME, "TM", &st.study_time);
    put_str(map, tags::ACCESSION_NUMBER, "SH", &st.accession);
    put_str(map, tags::STUDY_DESCRIPTION, "LO", &st.description);
    put_name(map, tags::REFERRING_PHYSICIAN_NAME, "");
    put_str(map, tags::STUDY_ID, "SH", "");
    put_str(map, tags::STUDY_INSTANCE_UID, "UI", &st.study_uid);
    put_name(map, tags::PATIENT_NAME, p.map_or("", |p| p.name.as_str()));
    put_str(
        map,
        tags::PATIENT_ID,
        "LO",
        p.map_or("", |p| p.patient_id.as_str()),
    );
    put_str(
        map,
        tags::PATIENT_BIRTH_DATE,
        "DA",
        p.map_or("", |p| p.birth_date.as_str()),
    );
    put_str(
        map,
        tags::PATIENT_SEX,
        "CS",
        p.map_or("", |p| p.sex.as_str()),
    );
    if counts {
        put_multi(
            map,
            tags::MODALITIES_IN_STUDY,
            "CS",
            &st.modalities_in_study,
        );
        put_int(
            map,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            "IS",
            Some(i64::from(st.num_series)),
        );
        put_int(
            map,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            "IS",
            Some(i64::from(st.num_instances)),
        );
        put_str(
            map,
            tags::RETRIEVE_URL,
            "UR",
            &format!("{base}/studies/{}", st.study_uid),
        );
    }
}

fn series_attrs(map: &mut Map<String, Value>, se: &series::Model, study_uid: &str, base: &str) {
    put_str(map, tags::MODALITY, "CS", &se.modality);
    put_str(map, tags::SERIES_DESCRIPTION, "LO", &se.description);
    put_int(
        map,
        tags::SERIES_NUMBER,
        "IS",
        se.series_number.map(i64::from),
    );
    put_str(map, tags::SERIES_INSTANCE_UID, "UI", &se.series_uid);
    put_str(map, tags::BODY_PART_EXAMINED, "CS", &se.body_part);
    put_int(
        map,
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        "IS",
        Some(i64::from(se.num_instances)),
    );
    put_str(map, tags::PERFORMED_PROCEDURE_STEP_START_DATE, "DA", "");
    put_str(map, tags::PERFORMED_PROCEDURE_STEP_START_TIME, "TM", "");
    put_str(
        map,
        tags::RETRIEVE_URL,
        "UR",
        &format!("{base}/studies/{study_uid}/series/{}", se.series_uid),
    );
}

// ---- queries ----

fn page<S: QuerySelect>(s: S, q: &QidoQuery) -> S {
    let s = s.offset(q.offset);
    s.limit(q.limit.unwrap_or(MAX_LIMIT))
}

/// Study-level search among `visible` studies.
pub async fn search_studies<C: ConnectionTrait>(
    db: &C,
    visible: Condition,
    q: &QidoQuery,
    base: &str,
) -> Result<Vec<Value>, QidoError> {
    let rows = page(
        studies::Entity::find()
            .find_also_related(patients::Entity)
            .filter(visible)
            .filter(conditions(q))
            .order_by_desc(studies::Column::StudyDate)
            .order_by_desc(studies::Column::Id),
        q,
    )
    .all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|(st, p)| {
            let mut map = Map::new();
            study_attrs(&mut map, st, p.as_ref(), base, true);
            Value::Object(map)
        })
        .collect())
}

/// Studies (with patients) by primary key.
async fn studies_by_id<C: ConnectionTrait>(
    db: &C,
    ids: Vec<i64>,
) -> Result<HashMap<i64, (studies::Model, Option<patients::Model>)>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(studies::Entity::find()
        .find_also_related(patients::Entity)
        .filter(studies::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|(s, p)| (s.id, (s, p)))
        .collect())
}

/// Series-level search: within `study_id` (already access-checked) or
/// among all `visible` studies.
pub async fn search_series<C: ConnectionTrait>(
    db: &C,
    scope: Result<i64, Condition>,
    q: &QidoQuery,
    base: &str,
) -> Result<Vec<Value>, QidoError> {
    let mut select = series::Entity::find()
        .join(JoinType::InnerJoin, series::Relation::Studies.def())
        .join(JoinType::InnerJoin, studies::Relation::Patients.def());
    select = match scope {
        Ok(id) => select.filter(series::Column::StudyId.eq(id)),
        Err(visible) => select.filter(visible),
    };
    let rows = page(
        select
            .filter(conditions(q))
            .order_by_asc(series::Column::StudyId)
            .order_by_asc(series::Column::SeriesNumber)
            .order_by_asc(series::Column::Id),
        q,
    )
    .all(db)
    .await?;
    let mut ids: Vec<i64> = rows.iter().map(|s| s.study_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let studies = studies_by_id(db, ids).await?;
    Ok(rows
        .iter()
        .filter_map(|se| {
            let (st, p) = studies.get(&se.study_id)?;
            let mut map = Map::new();
            study_attrs(&mut map, st, p.as_ref(), base, false);
            series_attrs(&mut map, se, &st.study_uid, base);
            Value::Object(map).into()
        })
        .collect())
}

/// Instance-level attributes read from the stored metadata without
/// building a full JSON tree.
#[derive(serde::Deserialize, Default)]
struct Few {
    #[serde(rename = "00280100")]
    bits_allocated: Option<Value>,
    #[serde(rename = "00080201")]
    timezone: Option<Value>,
}

/// Instance-level search within a study (access-checked `study_id`),
/// optionally one series.
pub async fn search_instances<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    series_uid: Option<&str>,
    q: &QidoQuery,
    base: &str,
) -> Result<Vec<Value>, QidoError> {
    let mut select = instances::Entity::find()
        .find_also_related(series::Entity)
        .join(JoinType::InnerJoin, series::Relation::Studies.def())
        .join(JoinType::InnerJoin, studies::Relation::Patients.def())
        .filter(series::Column::StudyId.eq(study_id));
    if let Some(uid) = series_uid {
        select = select.filter(series::Column::SeriesUid.eq(uid));
    }
    let rows = page(
        select
            .filter(conditions(q))
            .order_by_asc(instances::Column::SeriesId)
            .order_by_asc(instances::Column::InstanceNumber)
            .order_by_asc(instances::Column::Id),
        q,
    )
    .all(db)
    .await?;
    let studies = studies_by_id(db, vec![study_id]).await?;
    let Some((st, p)) = studies.get(&study_id) else {
        return Ok(Vec::new());
    };
    let extra: Vec<Tag> = q
        .include
        .iter()
        .copied()
        .filter(|t| Attr::from_tag(*t).is_none())
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (inst, se) in &rows {
        let Some(se) = se else { continue };
        let mut map = Map::new();
        if q.include_all || !extra.is_empty() {
            if let Ok(Value::Object(full)) = serde_json::from_str::<Value>(&inst.metadata) {
                for (k, v) in full {
                    let wanted =
                        q.include_all || resolve_tag(&k).is_some_and(|t| extra.contains(&t));
                    if wanted && k.as_str() != "7FE00010" {
                        map.insert(k, v);
                    }
                }
            }
        } else {
            let few: Few = serde_json::from_str(&inst.metadata).unwrap_or_default();
            if let Some(v) = few.bits_allocated {
                map.insert(key(tags::BITS_ALLOCATED), v);
            }
            if let Some(v) = few.timezone {
                map.insert(key(tags::TIMEZONE_OFFSET_FROM_UTC), v);
            }
        }
        study_attrs(&mut map, st, p.as_ref(), base, false);
        series_attrs(&mut map, se, &st.study_uid, base);
        put_str(&mut map, tags::SOP_CLASS_UID, "UI", &inst.sop_class_uid);
        put_str(
            &mut map,
            tags::SOP_INSTANCE_UID,
            "UI",
            &inst.sop_instance_uid,
        );
        put_int(
            &mut map,
            tags::INSTANCE_NUMBER,
            "IS",
            inst.instance_number.map(i64::from),
        );
        put_int(&mut map, tags::ROWS, "US", inst.rows.map(i64::from));
        put_int(&mut map, tags::COLUMNS, "US", inst.columns.map(i64::from));
        put_int(
            &mut map,
            tags::NUMBER_OF_FRAMES,
            "IS",
            Some(i64::from(inst.number_of_frames)),
        );
        put_str(&mut map, tags::INSTANCE_AVAILABILITY, "CS", "ONLINE");
        put_str(
            &mut map,
            tags::RETRIEVE_URL,
            "UR",
            &format!(
                "{base}/studies/{}/series/{}/instances/{}",
                st.study_uid, se.series_uid, inst.sop_instance_uid
            ),
        );
        out.push(Value::Object(map));
    }
    Ok(out)
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
    fn parses_matching_keys() {
        let q = parse_query(
            &pairs(&[
                ("PatientName", "ANON*"),
                ("00080020", "20240101-"),
                ("StudyInstanceUID", "1.2,1.3\\1.4"),
                ("limit", "5"),
                ("includefield", "all"),
                ("fuzzymatching", "true"),
            ]),
            Level::Study,
        )
        .unwrap();
        assert_eq!(q.limit, Some(5));
        assert!(q.include_all && q.fuzzy);
        assert_eq!(
            q.matches,
            vec![
                (Attr::PatientName, MatchValue::Wildcard("ANON*".into())),
                (
                    Attr::StudyDate,
                    MatchValue::Range(Some("20240101".into()), None)
                ),
                (
                    Attr::StudyInstanceUid,
                    MatchValue::UidList(vec!["1.2".into(), "1.3".into(), "1.4".into()])
                ),
            ]
        );
    }

    #[test]
    fn rejects_malformed() {
        for (k, v) in [
            ("StudyDate", "2024"),
            ("StudyDate", "-"),
            ("NoSuchAttribute", "x"),
            ("limit", "-1"),
            ("StudyInstanceUID", "abc"),
            ("SOPInstanceUID", "1.2"),
            ("SeriesNumber", "x"),
        ] {
            let err = parse_query(&pairs(&[(k, v)]), Level::Study).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn like_escapes() {
        assert_eq!(like_pattern("A*B?%_!"), "A%B_!%!_!!");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "limit",
                "offset",
                "fuzzymatching",
                "includefield",
                "PatientName",
                "PatientID",
                "StudyDate",
                "StudyTime",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
                "Modality",
                "SeriesNumber",
                "InstanceNumber",
                "AccessionNumber",
                "00100010",
                "0020000D",
                "ModalitiesInStudy",
                "_",
                "orderby",
            ])
            .prop_map(str::to_owned),
            "[0-9A-Fa-f]{8}",
            "\\PC{0,12}",
        ]
    }

    fn level() -> impl Strategy<Value = Level> {
        prop::sample::select(vec![Level::Study, Level::Series, Level::Instance])
    }

    proptest! {
        /// Any pairs: a query or a 400 naming the parameter, never a panic;
        /// the page size never exceeds the cap.
        #[test]
        fn any_pairs(pairs in prop::collection::vec((key(), "\\PC{0,40}"), 0..8), level in level()) {
            match parse_query(&pairs, level) {
                Ok(q) => {
                    prop_assert!(q.limit.is_none_or(|l| l <= MAX_LIMIT));
                    for (_, m) in &q.matches {
                        if let MatchValue::UidList(l) = m {
                            prop_assert!(l.iter().all(|u| valid_uid(u)));
                        }
                    }
                }
                Err(QidoError::BadParam(msg)) => prop_assert!(msg.starts_with("query parameter")),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        /// Numbers: any u64 limit is capped; a non-number is refused.
        #[test]
        fn limit_and_offset(n in any::<u64>(), junk in "[^0-9 ]{1,6}") {
            let q = parse_query(&[("limit".into(), n.to_string())], Level::Study).unwrap();
            prop_assert_eq!(q.limit, Some(std::cmp::min(n, MAX_LIMIT)));
            prop_assert!(parse_query(&[("offset".into(), junk.clone())], Level::Study).is_err());
            prop_assert!(parse_query(&[("limit".into(), junk)], Level::Study).is_err());
        }

        /// Dates: YYYYMMDD and ranges are accepted, anything else refused.
        #[test]
        fn date_ranges(a in "[0-9]{8}", b in "[0-9]{8}", bad in "[0-9]{1,7}|[0-9]{9,12}|[a-z]{8}") {
            for v in [a.clone(), format!("{a}-{b}"), format!("{a}-"), format!("-{b}")] {
                prop_assert!(parse_query(&[("StudyDate".into(), v)], Level::Study).is_ok());
            }
            for v in [bad.clone(), format!("{a}-{bad}"), "-".to_owned()] {
                prop_assert!(parse_query(&[("StudyDate".into(), v)], Level::Study).is_err());
            }
        }

        /// Eight hex digits always resolve to that tag.
        #[test]
        fn hex_tags(g in any::<u16>(), e in any::<u16>()) {
            prop_assert_eq!(resolve_tag(&format!("{g:04X}{e:04x}")), Some(Tag(g, e)));
        }
    }
}
