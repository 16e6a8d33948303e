//! Study grants: a user or a whole organisation may do something on one
//! study, optionally until a deadline.

use crate::access::Action;
use crate::db::entities::study_grants;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

/// A grant's permission. Each implies the actions listed in [`implies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantPermission {
    View,
    ViewPixels,
    Download,
    Report,
    Share,
}

impl GrantPermission {
    pub const ALL: [GrantPermission; 5] = [
        GrantPermission::View,
        GrantPermission::ViewPixels,
        GrantPermission::Download,
        GrantPermission::Report,
        GrantPermission::Share,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantPermission::View => "view",
            GrantPermission::ViewPixels => "view_pixels",
            GrantPermission::Download => "download",
            GrantPermission::Report => "report",
            GrantPermission::Share => "share",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether holding this permission allows `action`.
    pub fn implies(self, action: Action) -> bool {
        use GrantPermission as G;
        match action {
            Action::ViewMetadata => true,
            Action::ViewPixels => !matches!(self, G::View),
            Action::Download => matches!(self, G::Download),
            Action::Report => matches!(self, G::Report),
            Action::Share => matches!(self, G::Share),
        }
    }
}

/// The permission names (as stored) that allow `action`.
pub fn permissions_allowing(action: Action) -> Vec<&'static str> {
    GrantPermission::ALL
        .into_iter()
        .filter(|p| p.implies(action))
        .map(GrantPermission::as_str)
        .collect()
}

/// Who receives a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    User(i64),
    Org(i64),
}

/// Create a grant; returns its id.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    grantee: Grantee,
    permission: GrantPermission,
    expires_at: Option<DateTime<Utc>>,
    created_by: Option<i64>,
) -> Result<i64, DbErr> {
    let (user, org) = match grantee {
        Grantee::User(u) => (Some(u), None),
        Grantee::Org(o) => (None, Some(o)),
    };
    let res = study_grants::Entity::insert(study_grants::ActiveModel {
        study_id: Set(study_id),
        grantee_user_id: Set(user),
        grantee_org_id: Set(org),
        permission: Set(permission.as_str().to_owned()),
        expires_at: Set(expires_at),
        created_by: Set(created_by),
        created_at: Set(Utc::now()),
        ..Default::default()
    })
    .exec(db)
    .await?;
    Ok(res.last_insert_id)
}

/// Delete a grant; `true` if it existed.
pub async fn revoke<C: ConnectionTrait>(db: &C, grant_id: i64) -> Result<bool, DbErr> {
    let res = study_grants::Entity::delete_many()
        .filter(study_grants::Column::Id.eq(grant_id))
        .exec(db)
        .await?;
    Ok(res.rows_affected > 0)
}
