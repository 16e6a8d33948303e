//! Local accounts (argon2id) and browser sessions.
//!
//! A session token is 256 random bits sent only in an HttpOnly cookie; the
//! database stores its SHA-256, so a leaked table cannot be replayed. The
//! CSRF token of a signed-in form is an HMAC of the session token, so it is
//! bound to the session without being stored.

use crate::config::{SecuritySettings, SessionSettings};
use crate::db::entities::{sessions, users};
use crate::services::cpu;
use crate::services::ttl_cache::TtlCache;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "mado_session";
/// Name of the cookie holding the login form's CSRF token (double submit).
pub const LOGIN_CSRF_COOKIE: &str = "mado_login_csrf";
/// Minimum time between two `last_seen` updates of one session.
const TOUCH_INTERVAL_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
}

/// The signed-in user behind a request.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user_id: i64,
    pub username: String,
    pub role: crate::access::Role,
    /// The user's organisation.
    pub org_id: Option<i64>,
    /// CSRF token for forms posted by this session.
    pub csrf_token: String,
}

/// Random URL-safe token with `bytes` bytes of entropy.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Lower-case hex SHA-256 of a token: the form in which tokens are stored.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time string equality.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The CSRF token of forms posted by the session holding `session_token`.
pub fn session_csrf(session_token: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(session_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"mado-csrf-v1");
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// argon2id PHC string of `password` (CPU-heavy: call from rayon).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (CPU-heavy).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so that the
/// response time does not reveal which usernames exist.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token(16)).unwrap_or_default())
}

/// Outcome of [`upsert_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

/// Create `username` with `password` and `role` in the `default`
/// organisation, or reset the password, role and enabled state of an
/// existing account.
pub async fn upsert_user<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password: &str,
    role: &str,
) -> Result<Upserted, AuthError> {
    upsert_user_in_org(db, username, password, role, crate::state::DEFAULT_ORG).await
}

/// [`upsert_user`] in the organisation named `org` (created if needed).
pub async fn upsert_user_in_org<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password: &str,
    role: &str,
    org: &str,
) -> Result<Upserted, AuthError> {
    let org_id = crate::services::orgs::ensure(db, org).await?;
    let password = password.to_owned();
    let hash = cpu::run(move || hash_password(&password)).await??;
    let existed = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(db)
        .await?
        .is_some();
    let am = new_user_row(username, hash, role, org_id);
    users::Entity::insert(am)
        .on_conflict(
            OnConflict::column(users::Column::Username)
                .update_columns([
                    users::Column::PasswordHash,
                    users::Column::Role,
                    users::Column::Disabled,
                    users::Column::OrgId,
                    users::Column::FailedLogins,
                    users::Column::LockedUntil,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(if existed {
        Upserted::Updated
    } else {
        Upserted::Created
    })
}

/// A new, enabled account row with a password hash.
fn new_user_row(username: &str, hash: String, role: &str, org_id: i64) -> users::ActiveModel {
    users::ActiveModel {
        username: Set(username.to_owned()),
        password_hash: Set(hash),
        role: Set(role.to_owned()),
        created_at: Set(Utc::now()),
        disabled: Set(false),
        org_id: Set(Some(org_id)),
        failed_logins: Set(0),
        ..Default::default()
    }
}

/// Create `username` (never touching an existing account) in the
/// organisation `org_id`; `None` when the username is taken.
pub async fn create_user_in_org_id<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password: &str,
    role: &str,
    org_id: i64,
) -> Result<Option<i64>, AuthError> {
    let password = password.to_owned();
    let hash = cpu::run(move || hash_password(&password)).await??;
    let am = new_user_row(username, hash, role, org_id);
    let inserted = users::Entity::insert(am)
        .on_conflict_do_nothing_on([users::Column::Username])
        .exec_without_returning(db)
        .await?;
    if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
        return Ok(None);
    }
    Ok(users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(db)
        .await?
        .map(|u| u.id))
}

/// Result of [`login_with`].
#[derive(Debug, Clone, Default)]
pub struct LoginResult {
    /// Session token on success.
    pub token: Option<String>,
    /// The account, when the username exists (for the audit trail).
    pub user_id: Option<i64>,
    pub org_id: Option<i64>,
    /// The account is locked after repeated failures.
    pub locked: bool,
    /// Password verified, but the account has TOTP: the second step is
    /// still due (no session was created).
    pub mfa_pending: bool,
    /// The user's role (for roles that require MFA).
    pub role: Option<String>,
    /// Whether the account has an enrolled second factor.
    pub has_totp: bool,
    /// Password verified, but the role requires a second factor and none is
    /// enrolled yet: enrolment is due before any session (none created).
    pub enrolment_due: bool,
}

/// Check `username`/`password`; on success create a session and return its
/// token (to be put in the cookie). `None` for any failure, without saying
/// which part was wrong.
pub async fn login<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    username: &str,
    password: &str,
) -> Result<Option<String>, AuthError> {
    Ok(login_with(
        db,
        settings,
        &SecuritySettings::default(),
        username,
        password,
    )
    .await?
    .token)
}

/// The lock duration after `failures` consecutive failures: none below
/// the threshold, then `base` doubling with each further failure (capped
/// at one day).
pub fn lockout_for(security: &SecuritySettings, failures: i32) -> Option<Duration> {
    let threshold = i32::try_from(Ord::max(security.lockout_threshold, 1)).unwrap_or(i32::MAX);
    if failures < threshold {
        return None;
    }
    let exp = u32::try_from(failures - threshold).unwrap_or(0).min(16);
    let secs = i64::from(security.lockout_base_seconds.max(1)) << exp;
    Some(Duration::seconds(secs.min(86_400)))
}

/// [`login`] with lockout: after `lockout_threshold` consecutive failures
/// the account is locked with exponential backoff; while locked even the
/// right password fails.
///
/// Every attempt on an existing account is counted before the password is
/// checked, in the statement that decides whether the account is locked
/// ([`claim_attempt`]), so concurrent guesses cannot outrun the lock: at
/// most `lockout_threshold` of them are ever checked per lock period.
pub async fn login_with<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    security: &SecuritySettings,
    username: &str,
    password: &str,
) -> Result<LoginResult, AuthError> {
    let user = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(db)
        .await?;
    let password = password.to_owned();
    let Some(user) = user else {
        // Same work as for an existing account.
        let hash = dummy_hash().to_owned();
        let _ = cpu::run(move || verify_password(&hash, &password)).await?;
        return Ok(LoginResult::default());
    };
    let mut result = LoginResult {
        user_id: Some(user.id),
        org_id: user.org_id,
        role: Some(user.role.clone()),
        has_totp: crate::services::totp::enrolled_secret(&user).is_some(),
        ..Default::default()
    };
    let Some(failures) = claim_attempt(db, security, user.id).await? else {
        result.locked = true;
        return Ok(result);
    };
    let hash = if user.disabled {
        dummy_hash().to_owned()
    } else {
        user.password_hash.clone()
    };
    let ok = cpu::run(move || verify_password(&hash, &password)).await? && !user.disabled;
    if !ok {
        // Already counted by the claim.
        result.locked = lockout_for(security, failures).is_some();
        return Ok(result);
    }
    if result.has_totp {
        // The password was right: it does not count; the second factor
        // claims its own attempt.
        release_attempt(db, security, user.id).await?;
        result.mfa_pending = true;
        return Ok(result);
    }
    if security.mfa_roles.contains(&user.role) {
        release_attempt(db, security, user.id).await?;
        result.enrolment_due = true;
        return Ok(result);
    }
    reset_failures(db, user.id).await?;
    result.token = Some(create_session(db, settings, user.id).await?);
    Ok(result)
}

/// Claim one sign-in attempt (password or second factor) on `user_id`,
/// in one statement on SQLite and PostgreSQL:
///
/// ```sql
/// UPDATE users SET failed_logins = failed_logins + 1,
///   locked_until = CASE WHEN failed_logins + 1 >= threshold + k THEN now + lock(k) …
///                  ELSE locked_until END
/// WHERE id = ? AND (locked_until IS NULL OR locked_until <= now)
/// RETURNING failed_logins
/// ```
///
/// The count, the lock decision and the lock itself are atomic: of any
/// number of concurrent attempts at most the ones up to the threshold are
/// claimed, the one reaching it locks the account, the others find it
/// locked. `None` when the account is locked (nothing counted: the secret
/// must not be checked). The attempt stays counted as a failure until
/// [`reset_failures`] (success) or [`release_attempt`].
pub async fn claim_attempt<C: ConnectionTrait>(
    db: &C,
    security: &SecuritySettings,
    user_id: i64,
) -> Result<Option<i32>, AuthError> {
    use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, Query};
    let now = Utc::now();
    let threshold = i32::try_from(Ord::max(security.lockout_threshold, 1)).unwrap_or(i32::MAX);
    let next = || Expr::col(users::Column::FailedLogins).add(1);
    // lockout_for doubles up to 16 times past the threshold: one branch
    // per step, longest first.
    let mut lock = CaseStatement::new();
    for k in (0..=16).rev() {
        let at = threshold.saturating_add(k);
        if let Some(d) = lockout_for(security, at) {
            lock = lock.case(next().gte(at), Expr::value(Some(now + d)));
        }
    }
    let lock = lock.finally(Expr::col(users::Column::LockedUntil));
    let stmt = Query::update()
        .table(users::Entity)
        .value(users::Column::FailedLogins, next())
        .value(users::Column::LockedUntil, lock)
        .and_where(Expr::col(users::Column::Id).eq(user_id))
        .and_where(
            Expr::col(users::Column::LockedUntil)
                .is_null()
                .or(Expr::col(users::Column::LockedUntil).lte(now)),
        )
        .returning_col(users::Column::FailedLogins)
        .to_owned();
    let Some(row) = db.query_one(&stmt).await? else {
        return Ok(None);
    };
    Ok(Some(row.try_get("", "failed_logins")?))
}

/// Undo a claimed attempt whose secret was right but which did not finish
/// the sign-in (a second factor is due): the count goes back to what it
/// was, and the lock goes when the count is below the threshold again (one
/// statement).
pub async fn release_attempt<C: ConnectionTrait>(
    db: &C,
    security: &SecuritySettings,
    user_id: i64,
) -> Result<(), AuthError> {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let threshold = i32::try_from(Ord::max(security.lockout_threshold, 1)).unwrap_or(i32::MAX);
    let prev = || Expr::col(users::Column::FailedLogins).sub(1);
    let stmt = Query::update()
        .table(users::Entity)
        .value(users::Column::FailedLogins, prev())
        .value(
            users::Column::LockedUntil,
            Expr::case(prev().gte(threshold), Expr::col(users::Column::LockedUntil))
                .finally(Expr::value(Option::<DateTime<Utc>>::None)),
        )
        .and_where(Expr::col(users::Column::Id).eq(user_id))
        .and_where(Expr::col(users::Column::FailedLogins).gt(0))
        .to_owned();
    db.execute(&stmt).await?;
    Ok(())
}

/// Count a failed sign-in that was not claimed with [`claim_attempt`]
/// (atomic increment); returns whether the account is now locked.
pub async fn record_failure<C: ConnectionTrait>(
    db: &C,
    security: &SecuritySettings,
    user: &users::Model,
) -> Result<bool, AuthError> {
    Ok(match claim_attempt(db, security, user.id).await? {
        Some(failures) => lockout_for(security, failures).is_some(),
        None => true,
    })
}

/// Clear the failure counter and lock after a successful sign-in.
pub async fn reset_failures<C: ConnectionTrait>(db: &C, user_id: i64) -> Result<(), AuthError> {
    users::Entity::update_many()
        .col_expr(
            users::Column::FailedLogins,
            sea_orm::sea_query::Expr::value(0),
        )
        .col_expr(
            users::Column::LockedUntil,
            sea_orm::sea_query::Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Label of the MFA sign-in cookie key ([`derive_key`]).
pub const KEY_MFA_COOKIE: &str = "mfa-cookie-v1";

/// The signing key of one `purpose`, derived from the server secret
/// (`[security] secret`) with HKDF-SHA256: one secret, an independent key
/// per purpose, and the audit key never among them.
pub fn derive_key(server_secret: &[u8], purpose: &str) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"mado-server-keys-v1"), server_secret);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): cannot fail.
    let _ = hk.expand(purpose.as_bytes(), &mut out);
    out
}

/// Start a session for `user_id`; returns the cookie token.
pub async fn create_session<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    user_id: i64,
) -> Result<String, AuthError> {
    let now = Utc::now();
    let token = random_token(32);
    let session = sessions::ActiveModel {
        id: Set(token_digest(&token)),
        user_id: Set(user_id),
        created_at: Set(now),
        last_seen: Set(now),
        expires_at: Set(now + Duration::hours(i64::from(settings.absolute_hours))),
    };
    sessions::Entity::insert(session)
        .exec_without_returning(db)
        .await?;
    tracing::info!(user_id, "signed in");
    Ok(token)
}

/// End every session of `user_id` ("log out everywhere").
pub async fn logout_everywhere<C: ConnectionTrait>(db: &C, user_id: i64) -> Result<u64, AuthError> {
    let res = sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Resolve a session cookie to its user; `None` when unknown, expired,
/// idle for too long, or the user is disabled. Expired sessions are
/// deleted.
pub async fn resolve_session<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    token: &str,
) -> Result<Option<SessionUser>, AuthError> {
    Ok(resolve_session_at(db, settings, token, Utc::now())
        .await?
        .map(|s| s.user))
}

/// How long a resolved session is reused without reading its row again.
/// Signing out through this process takes effect at once
/// ([`SessionCache::forget`]); a change made elsewhere (another server
/// process, the CLI) within this time.
pub const SESSION_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// A resolved session and the deadlines it was valid under.
#[derive(Debug, Clone)]
struct Resolved {
    user: SessionUser,
    /// The earlier of the absolute and the idle deadline.
    valid_until: DateTime<Utc>,
}

/// Sessions resolved in the last [`SESSION_CACHE_TTL`], by token digest.
pub struct SessionCache(TtlCache<String, Resolved>);

impl Default for SessionCache {
    fn default() -> Self {
        Self(TtlCache::new(SESSION_CACHE_TTL, 16_384))
    }
}

impl SessionCache {
    /// Forget the session holding `token` (sign-out).
    pub fn forget(&self, token: &str) {
        self.0.remove(&token_digest(token));
    }

    /// Forget every session of `user_id` ("sign out everywhere").
    pub fn forget_user(&self, user_id: i64) {
        self.0.remove_where(|r| r.user.user_id == user_id);
    }
}

/// [`resolve_session`], answered from `cache` when the session was resolved
/// less than [`SESSION_CACHE_TTL`] ago and its deadlines have not passed.
pub async fn resolve_session_cached<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    cache: &SessionCache,
    token: &str,
) -> Result<Option<SessionUser>, AuthError> {
    let now = Utc::now();
    let digest = token_digest(token);
    if let Some(r) = cache.0.get(&digest) {
        if now < r.valid_until {
            return Ok(Some(r.user));
        }
        cache.0.remove(&digest);
    }
    let resolved = resolve_session_at(db, settings, token, now).await?;
    Ok(resolved.map(|r| {
        let user = r.user.clone();
        cache.0.insert(digest, r);
        user
    }))
}

async fn resolve_session_at<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Resolved>, AuthError> {
    let id = token_digest(token);
    let Some((session, user)) = sessions::Entity::find_by_id(id.clone())
        .find_also_related(users::Entity)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let idle_deadline = session.last_seen + Duration::minutes(i64::from(settings.idle_minutes));
    let user = match user {
        Some(u) if !u.disabled && now < session.expires_at && now < idle_deadline => u,
        _ => {
            sessions::Entity::delete_by_id(id).exec(db).await?;
            return Ok(None);
        }
    };
    let mut valid_until = session.expires_at.min(idle_deadline);
    if (now - session.last_seen).num_seconds() >= TOUCH_INTERVAL_SECS {
        sessions::Entity::update_many()
            .col_expr(
                sessions::Column::LastSeen,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(sessions::Column::Id.eq(id))
            .exec(db)
            .await?;
        valid_until = session
            .expires_at
            .min(now + Duration::minutes(i64::from(settings.idle_minutes)));
    }
    // An account with an unknown role has no session (fail closed).
    let Some(role) = crate::access::Role::from_stored(&user.role) else {
        return Ok(None);
    };
    Ok(Some(Resolved {
        user: SessionUser {
            user_id: user.id,
            username: user.username,
            role,
            org_id: user.org_id,
            csrf_token: session_csrf(token),
        },
        valid_until,
    }))
}

/// End the session holding `token` (no error if it does not exist).
pub async fn logout<C: ConnectionTrait>(db: &C, token: &str) -> Result<(), AuthError> {
    sessions::Entity::delete_by_id(token_digest(token))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    /// A fresh in-memory database with one radiologist `name`, and session
    /// settings of 30 idle minutes and 12 hours at most.
    async fn user_with_settings(
        name: &str,
    ) -> (sea_orm::DatabaseConnection, users::Model, SessionSettings) {
        let url = crate::config::DatabaseUrl("sqlite::memory:".into());
        let db = crate::db::connect(&url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        upsert_user(&db, name, "a long password 1", "radiologist")
            .await
            .unwrap();
        let user = users::Entity::find()
            .filter(users::Column::Username.eq(name))
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let settings = SessionSettings {
            idle_minutes: 30,
            absolute_hours: 12,
            secure_cookie: true,
        };
        (db, user, settings)
    }

    /// Idle and absolute timeouts end a session (and delete its row); a
    /// request inside both keeps it alive.
    #[tokio::test]
    async fn session_idle_and_absolute_timeouts() {
        let (db, user, settings) = user_with_settings("sess").await;
        let t0 = Utc::now();
        let at = |mins: i64| t0 + Duration::minutes(mins);
        // Active every 20 minutes: alive until the absolute limit.
        let token = create_session(&db, &settings, user.id).await.unwrap();
        let mut m = 0;
        while m + 20 < 12 * 60 {
            m += 20;
            let s = resolve_session_at(&db, &settings, &token, at(m)).await;
            assert!(s.unwrap().is_some(), "alive at {m} min");
        }
        let s = resolve_session_at(&db, &settings, &token, at(12 * 60 + 1)).await;
        assert!(s.unwrap().is_none(), "absolute timeout");
        // Gone for good, even at an earlier time.
        let s = resolve_session_at(&db, &settings, &token, at(1)).await;
        assert!(s.unwrap().is_none());
        // Idle for longer than idle_minutes: ended.
        let token = create_session(&db, &settings, user.id).await.unwrap();
        assert!(resolve_session_at(&db, &settings, &token, at(29))
            .await
            .unwrap()
            .is_some());
        assert!(resolve_session_at(&db, &settings, &token, at(29 + 31))
            .await
            .unwrap()
            .is_none());
        assert!(resolve_session(&db, &settings, &token)
            .await
            .unwrap()
            .is_none());
    }

    /// A resolved session is reused for a short while; signing out through
    /// this process forgets it at once.
    #[tokio::test]
    async fn session_cache() {
        let (db, user, settings) = user_with_settings("cached").await;
        let cache = SessionCache::default();
        let resolve = |t: String| {
            let (db, settings, cache) = (&db, &settings, &cache);
            async move {
                resolve_session_cached(db, settings, cache, &t)
                    .await
                    .unwrap()
            }
        };
        let token = create_session(&db, &settings, user.id).await.unwrap();
        assert_eq!(resolve(token.clone()).await.unwrap().user_id, user.id);
        // The row is gone, the cached answer stands until forgotten.
        logout(&db, &token).await.unwrap();
        assert!(resolve(token.clone()).await.is_some());
        cache.forget(&token);
        assert!(resolve(token.clone()).await.is_none());
        // Everywhere.
        let (a, b) = (
            create_session(&db, &settings, user.id).await.unwrap(),
            create_session(&db, &settings, user.id).await.unwrap(),
        );
        assert!(resolve(a.clone()).await.is_some() && resolve(b.clone()).await.is_some());
        logout_everywhere(&db, user.id).await.unwrap();
        cache.forget_user(user.id);
        assert!(resolve(a).await.is_none() && resolve(b).await.is_none());
    }

    #[test]
    fn tokens() {
        let t = random_token(32);
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token(32));
        assert_eq!(token_digest(&t).len(), 64);
        assert_eq!(session_csrf(&t), session_csrf(&t));
        assert_ne!(session_csrf(&t), session_csrf(&random_token(32)));
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
        let k = derive_key(b"server secret", KEY_MFA_COOKIE);
        assert_eq!(k, derive_key(b"server secret", KEY_MFA_COOKIE));
        assert_ne!(k, derive_key(b"server secret", "another purpose"));
        assert_ne!(k, derive_key(b"other secret", KEY_MFA_COOKIE));
    }
}
