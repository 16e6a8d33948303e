use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "share_links")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub study_id: i64,
    /// SHA-256 (hex) of the link token.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub created_by: Option<i64>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// argon2id PHC string of the optional passcode.
    pub passcode_hash: Option<String>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub pixels_only: bool,
    pub revoked_at: Option<DateTimeUtc>,
    pub failed_attempts: i32,
    pub locked_until: Option<DateTimeUtc>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareLink")
            .field("id", &self.id)
            .field("study_id", &self.study_id)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
