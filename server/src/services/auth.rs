//! Local accounts (argon2id) and browser sessions.
//!
//! A session token is 256 random bits sent only in an HttpOnly cookie; the
//! database stores its SHA-256, so a leaked table cannot be replayed. The
//! CSRF token of a signed-in form is an HMAC of the session token, so it is
//! bound to the session without being stored.

use crate::config::SessionSettings;
use crate::db::entities::{sessions, users};
use crate::services::cpu;
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
    pub role: String,
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

/// Create `username` with `password` and `role`, or reset the password,
/// role and enabled state of an existing account.
pub async fn upsert_user<C: ConnectionTrait>(
    db: &C,
    username: &str,
    password: &str,
    role: &str,
) -> Result<Upserted, AuthError> {
    let password = password.to_owned();
    let hash = cpu::run(move || hash_password(&password)).await??;
    let existed = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(db)
        .await?
        .is_some();
    let am = users::ActiveModel {
        username: Set(username.to_owned()),
        password_hash: Set(hash),
        role: Set(role.to_owned()),
        created_at: Set(Utc::now()),
        disabled: Set(false),
        ..Default::default()
    };
    users::Entity::insert(am)
        .on_conflict(
            OnConflict::column(users::Column::Username)
                .update_columns([
                    users::Column::PasswordHash,
                    users::Column::Role,
                    users::Column::Disabled,
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

/// Check `username`/`password`; on success create a session and return its
/// token (to be put in the cookie). `None` for any failure, without saying
/// which part was wrong.
pub async fn login<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    username: &str,
    password: &str,
) -> Result<Option<String>, AuthError> {
    let user = users::Entity::find()
        .filter(users::Column::Username.eq(username))
        .one(db)
        .await?;
    let hash = match &user {
        Some(u) if !u.disabled => u.password_hash.clone(),
        _ => dummy_hash().to_owned(),
    };
    let password = password.to_owned();
    let ok = cpu::run(move || verify_password(&hash, &password)).await?;
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => return Ok(None),
    };
    let token = random_token(32);
    let now = Utc::now();
    let session = sessions::ActiveModel {
        id: Set(token_digest(&token)),
        user_id: Set(user.id),
        created_at: Set(now),
        last_seen: Set(now),
        expires_at: Set(now + Duration::hours(i64::from(settings.absolute_hours))),
    };
    sessions::Entity::insert(session)
        .exec_without_returning(db)
        .await?;
    tracing::info!(user_id = user.id, "signed in");
    Ok(Some(token))
}

/// Resolve a session cookie to its user; `None` when unknown, expired,
/// idle for too long, or the user is disabled. Expired sessions are
/// deleted.
pub async fn resolve_session<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    token: &str,
) -> Result<Option<SessionUser>, AuthError> {
    resolve_session_at(db, settings, token, Utc::now()).await
}

async fn resolve_session_at<C: ConnectionTrait>(
    db: &C,
    settings: &SessionSettings,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionUser>, AuthError> {
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
    if (now - session.last_seen).num_seconds() >= TOUCH_INTERVAL_SECS {
        sessions::Entity::update_many()
            .col_expr(
                sessions::Column::LastSeen,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(sessions::Column::Id.eq(id))
            .exec(db)
            .await?;
    }
    Ok(Some(SessionUser {
        user_id: user.id,
        username: user.username,
        role: user.role,
        csrf_token: session_csrf(token),
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
    }
}
