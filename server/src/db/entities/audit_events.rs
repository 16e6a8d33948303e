use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// RFC 3339, microseconds, UTC (hashed as stored).
    pub at: String,
    pub actor_kind: String,
    pub actor: String,
    pub org_id: Option<i64>,
    pub study_uid: Option<String>,
    pub action: String,
    pub outcome: String,
    pub client_addr: String,
    pub user_agent: String,
    pub request_id: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
