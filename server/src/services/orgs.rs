//! Organisations: looked up (and created on first use) by name.

use crate::db::entities::organisations;
use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

/// The id of the organisation `name`, creating it if needed.
pub async fn ensure<C: ConnectionTrait>(db: &C, name: &str) -> Result<i64, DbErr> {
    if let Some(o) = find(db, name).await? {
        return Ok(o);
    }
    organisations::Entity::insert(organisations::ActiveModel {
        name: Set(name.to_owned()),
        created_at: Set(Utc::now()),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([organisations::Column::Name])
    .exec_without_returning(db)
    .await?;
    find(db, name)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("organisation".into()))
}

/// The id of the organisation `name`.
pub async fn find<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<i64>, DbErr> {
    Ok(organisations::Entity::find()
        .filter(organisations::Column::Name.eq(name))
        .one(db)
        .await?
        .map(|o| o.id))
}
