//! Read side of the index: the worklist, one study with its series and
//! instances, and the lookup of one instance for rendering.
//!
//! Later, access control narrows these queries in SQL (grants); for now
//! every signed-in user sees every study.

use crate::db::entities::{instances, patients, series, studies};
use mado_core::{SeriesUid, SopInstanceUid, StudyUid};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationTrait,
};

/// Maximum number of studies on the worklist (pagination comes later).
pub const WORKLIST_LIMIT: u64 = 500;

/// One worklist line.
#[derive(Debug, Clone)]
pub struct WorklistEntry {
    pub study: studies::Model,
    pub patient: Option<patients::Model>,
}

/// The worklist, restricted in SQL to `visible` (from
/// [`crate::access::visible_studies`]).
pub async fn worklist<C: ConnectionTrait>(
    db: &C,
    visible: sea_orm::Condition,
) -> Result<Vec<WorklistEntry>, DbErr> {
    Ok(studies::Entity::find()
        .filter(visible)
        .find_also_related(patients::Entity)
        .order_by_desc(studies::Column::StudyDate)
        .order_by_desc(studies::Column::StudyTime)
        .order_by_desc(studies::Column::Id)
        .limit(WORKLIST_LIMIT)
        .all(db)
        .await?
        .into_iter()
        .map(|(study, patient)| WorklistEntry { study, patient })
        .collect())
}

/// The columns of an instance the study page needs (not the metadata).
#[derive(Debug, Clone, FromQueryResult)]
pub struct InstanceSummary {
    pub series_id: i64,
    pub sop_instance_uid: String,
    pub instance_number: Option<i32>,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    pub number_of_frames: i32,
}

#[derive(Debug, Clone)]
pub struct SeriesDetail {
    pub series: series::Model,
    pub instances: Vec<InstanceSummary>,
}

#[derive(Debug, Clone)]
pub struct StudyDetail {
    pub study: studies::Model,
    pub patient: Option<patients::Model>,
    pub series: Vec<SeriesDetail>,
}

/// A study with its series (by series number) and their instances (by
/// instance number); `None` when unknown.
pub async fn study_detail<C: ConnectionTrait>(
    db: &C,
    study_uid: &StudyUid,
) -> Result<Option<StudyDetail>, DbErr> {
    let Some((study, patient)) = studies::Entity::find()
        .filter(studies::Column::StudyUid.eq(study_uid.as_str()))
        .find_also_related(patients::Entity)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let series_rows = series::Entity::find()
        .filter(series::Column::StudyId.eq(study.id))
        .order_by_asc(series::Column::SeriesNumber)
        .order_by_asc(series::Column::Id)
        .all(db)
        .await?;
    let ids: Vec<i64> = series_rows.iter().map(|s| s.id).collect();
    let instance_rows: Vec<InstanceSummary> = if ids.is_empty() {
        Vec::new()
    } else {
        instances::Entity::find()
            .select_only()
            .columns([
                instances::Column::SeriesId,
                instances::Column::SopInstanceUid,
                instances::Column::InstanceNumber,
                instances::Column::Rows,
                instances::Column::Columns,
                instances::Column::NumberOfFrames,
            ])
            .filter(instances::Column::SeriesId.is_in(ids))
            .order_by_asc(instances::Column::SeriesId)
            .order_by_asc(instances::Column::InstanceNumber)
            .order_by_asc(instances::Column::Id)
            .into_model::<InstanceSummary>()
            .all(db)
            .await?
    };
    let series = series_rows
        .into_iter()
        .map(|s| {
            let instances = instance_rows
                .iter()
                .filter(|i| i.series_id == s.id)
                .cloned()
                .collect();
            SeriesDetail {
                series: s,
                instances,
            }
        })
        .collect();
    Ok(Some(StudyDetail {
        study,
        patient,
        series,
    }))
}

/// What the renderer needs to know about one instance.
#[derive(Debug, Clone, FromQueryResult)]
pub struct RenderTarget {
    pub object_key: String,
    pub sha256: String,
    pub number_of_frames: i32,
}

/// The instance `sop` if it belongs to `series` of `study`.
pub async fn render_target<C: ConnectionTrait>(
    db: &C,
    study: &StudyUid,
    series_uid: &SeriesUid,
    sop: &SopInstanceUid,
) -> Result<Option<RenderTarget>, DbErr> {
    instances::Entity::find()
        .select_only()
        .columns([
            instances::Column::ObjectKey,
            instances::Column::Sha256,
            instances::Column::NumberOfFrames,
        ])
        .join(JoinType::InnerJoin, instances::Relation::Series.def())
        .join(JoinType::InnerJoin, series::Relation::Studies.def())
        .filter(instances::Column::SopInstanceUid.eq(sop.as_str()))
        .filter(series::Column::SeriesUid.eq(series_uid.as_str()))
        .filter(studies::Column::StudyUid.eq(study.as_str()))
        .into_model::<RenderTarget>()
        .one(db)
        .await
}
