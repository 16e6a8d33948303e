//! Share links: a random token (256 bits, shown once, stored as SHA-256)
//! opening one study, with an expiry, an optional passcode (argon2id), an
//! optional use limit and an optional pixels-only restriction.
//!
//! A passcode attempt is counted before the passcode is checked, in the
//! statement that decides whether the link is locked
//! ([`claim_passcode_attempt`]), so concurrent guesses cannot outrun the
//! lock. Opening a link (`GET /s/{token}`, then the passcode form if needed)
//! counts one use atomically (`UPDATE … SET uses = uses + 1 WHERE … AND
//! uses < max_uses`), so concurrent openings never exceed the limit, and
//! starts a share session (its own cookie) whose principal is
//! [`Principal::ShareLink`]: that one study, nothing else.

use crate::access::{self, Action, Principal, Share, StudyAccess};
use crate::config::SecuritySettings;
use crate::db::entities::{share_links, share_sessions, studies};
use crate::services::auth::{hash_password, random_token, token_digest, verify_password};
use crate::services::cpu;
use crate::state::AppState;
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

/// Name of the share session cookie.
pub const SHARE_COOKIE: &str = "mado_share";
/// Longest share session.
const SESSION_HOURS: i64 = 12;
/// How long a link stays locked after too many wrong passcodes.
const LOCK_MINUTES: i64 = 15;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("hashing: {0}")]
    Hash(String),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error("access check: {0}")]
    Access(String),
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewShare {
    pub expires_in: Duration,
    pub passcode: Option<String>,
    pub max_uses: Option<i32>,
    pub pixels_only: bool,
}

/// A created link; `token` is shown once and never stored.
#[derive(Clone)]
pub struct CreatedShare {
    pub id: i64,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Whether the link serves rendered pixels only.
    pub pixels_only: bool,
}

impl std::fmt::Debug for CreatedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedShare")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Create a link of the study `access` proves the caller may share. A
/// link never carries more than its creator holds: unless the creator may
/// also download the study (DICOM objects, frames, bulk data), the link is
/// pixels-only whatever was asked.
pub async fn create_for(
    state: &AppState,
    access: &StudyAccess<Share>,
    created_by: Option<i64>,
    mut new: NewShare,
) -> Result<CreatedShare, ShareError> {
    if !new.pixels_only {
        let may_download =
            access::check(state, access.principal(), access.study(), Action::Download)
                .await
                .map_err(|e| ShareError::Access(e.to_string()))?
                .is_some();
        new.pixels_only = !may_download;
    }
    create(&state.db, access.study_id(), created_by, new).await
}

/// Create a link of study row `study_id` as given (no permission check:
/// callers hold the creator's [`StudyAccess<Share>`], see [`create_for`]).
pub async fn create<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    created_by: Option<i64>,
    new: NewShare,
) -> Result<CreatedShare, ShareError> {
    let passcode_hash = match new.passcode {
        Some(p) => Some(
            cpu::run(move || hash_password(&p))
                .await?
                .map_err(|e| ShareError::Hash(e.to_string()))?,
        ),
        None => None,
    };
    let token = random_token(32);
    let now = Utc::now();
    let expires_at = now + new.expires_in;
    let pixels_only = new.pixels_only;
    let res = share_links::Entity::insert(share_links::ActiveModel {
        study_id: Set(study_id),
        token_hash: Set(token_digest(&token)),
        created_by: Set(created_by),
        created_at: Set(now),
        expires_at: Set(expires_at),
        passcode_hash: Set(passcode_hash),
        max_uses: Set(new.max_uses),
        uses: Set(0),
        pixels_only: Set(new.pixels_only),
        revoked_at: Set(None),
        failed_attempts: Set(0),
        locked_until: Set(None),
        ..Default::default()
    })
    .exec(db)
    .await?;
    Ok(CreatedShare {
        id: res.last_insert_id,
        token,
        expires_at,
        pixels_only,
    })
}

/// Outcome of [`open`].
#[derive(Debug)]
pub enum Opened {
    /// A share session started: its cookie token and the study.
    Session {
        share_id: i64,
        session_token: String,
        study_uid: String,
        expires_at: DateTime<Utc>,
    },
    /// The link needs its passcode.
    NeedPasscode { share_id: i64 },
    /// Wrong passcode (`locked` once the attempts are used up).
    WrongPasscode { share_id: i64, locked: bool },
    /// Locked after too many wrong passcodes.
    Locked { share_id: i64 },
    /// No uses left.
    Exhausted { share_id: i64 },
    /// Unknown, expired or revoked.
    Invalid,
}

fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The live (not revoked, not expired) link behind `token`.
pub async fn find_live<C: ConnectionTrait>(
    db: &C,
    token: &str,
) -> Result<Option<share_links::Model>, DbErr> {
    if !well_formed(token) {
        return Ok(None);
    }
    share_links::Entity::find()
        .filter(share_links::Column::TokenHash.eq(token_digest(token)))
        .filter(share_links::Column::RevokedAt.is_null())
        .filter(share_links::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await
}

/// Open the link `token` with an optional `passcode`.
pub async fn open<C: ConnectionTrait>(
    db: &C,
    security: &SecuritySettings,
    token: &str,
    passcode: Option<&str>,
) -> Result<Opened, ShareError> {
    let now = Utc::now();
    let Some(link) = find_live(db, token).await? else {
        return Ok(Opened::Invalid);
    };
    let share_id = link.id;
    if link.locked_until.is_some_and(|t| now < t) {
        return Ok(Opened::Locked { share_id });
    }
    if let Some(hash) = link.passcode_hash.clone() {
        let Some(passcode) = passcode.filter(|p| !p.is_empty() && p.len() <= 256) else {
            return Ok(Opened::NeedPasscode { share_id });
        };
        // Counted before the passcode is checked, atomically with the
        // lock decision: concurrent guesses cannot outrun the lock.
        let Some(locks) = claim_passcode_attempt(db, security, share_id, now).await? else {
            return Ok(Opened::Locked { share_id });
        };
        let passcode = passcode.to_owned();
        let ok = cpu::run(move || verify_password(&hash, &passcode)).await?;
        if !ok {
            return Ok(Opened::WrongPasscode {
                share_id,
                locked: locks,
            });
        }
        share_links::Entity::update_many()
            .col_expr(share_links::Column::FailedAttempts, Expr::value(0))
            .col_expr(
                share_links::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(share_links::Column::Id.eq(share_id))
            .exec(db)
            .await?;
    }
    // Count the use atomically.
    let counted = share_links::Entity::update_many()
        .col_expr(
            share_links::Column::Uses,
            Expr::col(share_links::Column::Uses).add(1),
        )
        .filter(share_links::Column::Id.eq(share_id))
        .filter(share_links::Column::RevokedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(share_links::Column::MaxUses.is_null())
                .add(
                    Expr::col(share_links::Column::Uses)
                        .lt(Expr::col(share_links::Column::MaxUses)),
                ),
        )
        .exec(db)
        .await?;
    if counted.rows_affected == 0 {
        return Ok(Opened::Exhausted { share_id });
    }
    let Some(study) = studies::Entity::find_by_id(link.study_id).one(db).await? else {
        return Ok(Opened::Invalid);
    };
    let session_token = random_token(32);
    let expires_at = Ord::min(link.expires_at, now + Duration::hours(SESSION_HOURS));
    share_sessions::Entity::insert(share_sessions::ActiveModel {
        id: Set(token_digest(&session_token)),
        share_id: Set(share_id),
        created_at: Set(now),
        expires_at: Set(expires_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(Opened::Session {
        share_id,
        session_token,
        study_uid: study.study_uid,
        expires_at,
    })
}

/// Claim one passcode attempt on link `share_id` in one statement:
///
/// ```sql
/// UPDATE share_links SET
///   failed_attempts = CASE WHEN failed_attempts + 1 >= max THEN 0 ELSE failed_attempts + 1 END,
///   locked_until = CASE WHEN failed_attempts + 1 >= max THEN now + 15 min ELSE locked_until END
/// WHERE id = ? AND (locked_until IS NULL OR locked_until <= now)
/// RETURNING failed_attempts
/// ```
///
/// `None` when the link is locked (the passcode must not be checked);
/// `Some(true)` when this attempt used up the last one and locked it. Of
/// any number of concurrent attempts, at most `share_passcode_attempts`
/// are claimed per lock period.
async fn claim_passcode_attempt<C: ConnectionTrait>(
    db: &C,
    security: &SecuritySettings,
    share_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<bool>, ShareError> {
    use sea_orm::sea_query::Query;
    let max = i32::try_from(Ord::max(security.share_passcode_attempts, 1)).unwrap_or(i32::MAX);
    let reaches = || {
        Expr::col(share_links::Column::FailedAttempts)
            .add(1)
            .gte(max)
    };
    let stmt = Query::update()
        .table(share_links::Entity)
        .value(
            share_links::Column::FailedAttempts,
            Expr::case(reaches(), 0).finally(Expr::col(share_links::Column::FailedAttempts).add(1)),
        )
        .value(
            share_links::Column::LockedUntil,
            Expr::case(
                reaches(),
                Expr::value(Some(now + Duration::minutes(LOCK_MINUTES))),
            )
            .finally(Expr::col(share_links::Column::LockedUntil)),
        )
        .and_where(Expr::col(share_links::Column::Id).eq(share_id))
        .and_where(
            Expr::col(share_links::Column::LockedUntil)
                .is_null()
                .or(Expr::col(share_links::Column::LockedUntil).lte(now)),
        )
        .returning_col(share_links::Column::FailedAttempts)
        .to_owned();
    let Some(row) = db.query_one(&stmt).await? else {
        return Ok(None);
    };
    let attempts: i32 = row.try_get("", "failed_attempts")?;
    // The locking attempt reset the count to 0.
    Ok(Some(attempts == 0))
}

/// The principal of a share session cookie, if the session and its link
/// are still live.
pub async fn resolve_session<C: ConnectionTrait>(
    db: &C,
    session_token: &str,
) -> Result<Option<Principal>, DbErr> {
    let now = Utc::now();
    let Some(session) = share_sessions::Entity::find_by_id(token_digest(session_token))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if session.expires_at <= now {
        return Ok(None);
    }
    let Some(link) = share_links::Entity::find_by_id(session.share_id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if link.revoked_at.is_some() || link.expires_at <= now {
        return Ok(None);
    }
    Ok(Some(Principal::ShareLink {
        share_id: link.id,
        study_id: link.study_id,
        pixels_only: link.pixels_only,
    }))
}

/// The links of study `study_id`, newest first (at most `limit`).
pub async fn list_for_study<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    limit: u64,
) -> Result<Vec<share_links::Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    share_links::Entity::find()
        .filter(share_links::Column::StudyId.eq(study_id))
        .order_by_desc(share_links::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Revoke link `share_id` of study `study_id` and end its sessions;
/// `false` when there is no such live link.
pub async fn revoke<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    share_id: i64,
) -> Result<bool, DbErr> {
    let res = share_links::Entity::update_many()
        .col_expr(
            share_links::Column::RevokedAt,
            Expr::value(Some(Utc::now())),
        )
        .filter(share_links::Column::Id.eq(share_id))
        .filter(share_links::Column::StudyId.eq(study_id))
        .filter(share_links::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Ok(false);
    }
    share_sessions::Entity::delete_many()
        .filter(share_sessions::Column::ShareId.eq(share_id))
        .exec(db)
        .await?;
    Ok(true)
}
