//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step)
//! and single-use recovery codes (stored as SHA-256 digests).
//!
//! Enrolment stores the new secret as `pending:<base32>` until the user
//! proves possession with a valid code; only then it becomes the secret
//! checked at sign-in. Between password and code, the browser holds a
//! short-lived HMAC-signed cookie naming the user (no session exists yet):
//! signed with its own key (derived from `[security] secret`, never the
//! audit key), valid [`MFA_WINDOW_SECS`] after it was issued, and bound to
//! a random nonce held by the same browser in a second HttpOnly cookie
//! ([`MFA_NONCE_COOKIE`]): a copied signed cookie alone is worthless. It is
//! spent by its purpose: an enrolment cookie cannot enrol again once a
//! secret is enrolled, a code step cannot reuse a consumed time step.
//!
//! Replay: the time step of the last code accepted at sign-in is stored
//! (`users.totp_last_step`) and only a later step is accepted, with a
//! compare-and-set, so a code works once even under concurrent use
//! (RFC 6238 §5.2).

use crate::db::entities::users;
use crate::services::auth::{ct_eq, random_token, token_digest};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use sha2::Sha256;
use totp_rs::{Algorithm, Secret, TOTP};

/// Cookie carrying the signed "password verified" state.
pub const MFA_COOKIE: &str = "mado_mfa";
/// HttpOnly companion cookie: the nonce the signed cookie is bound to.
pub const MFA_NONCE_COOKIE: &str = "mado_mfa_nonce";
/// Seconds the second step may take.
pub const MFA_WINDOW_SECS: i64 = 300;
const PENDING: &str = "pending:";
const ISSUER: &str = "Mado";
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("totp: {0}")]
    Totp(String),
}

fn totp(secret_b32: &str, account: &str) -> Result<TOTP, TotpError> {
    let bytes = Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .map_err(|e| TotpError::Totp(format!("{e:?}")))?;
    // The account name may not contain ':' (otpauth label separator).
    let account: String = account.chars().filter(|c| *c != ':').collect();
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some(ISSUER.to_owned()),
        account,
    )
    .map_err(|e| TotpError::Totp(e.to_string()))
}

/// Column of the last accepted time step (migration
/// `m20261123_000002_totp_last_step`; not in the entity, so only this
/// module reads or writes it).
const LAST_STEP_COLUMN: &str = "totp_last_step";

/// The time step (Unix time / 30 s) in which `code` is valid for the
/// base32 `secret`, looking one step either side of `now` (clock skew).
fn matching_step_at(secret_b32: &str, code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret_b32, "x").ok()?;
    let step = now / t.step;
    // Every candidate is compared (constant time), the latest match wins.
    [step.saturating_sub(1), step, step + 1]
        .into_iter()
        .fold(None, |found, s| {
            if ct_eq(&t.generate(s * t.step), code) {
                Some(s)
            } else {
                found
            }
        })
}

fn now_secs() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// Accept a TOTP `code` for `user_id` once: valid now and in a later time
/// step than the last code accepted (stored with compare-and-set).
async fn consume_code<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    secret_b32: &str,
    code: &str,
) -> Result<bool, TotpError> {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait};
    let Some(step) = matching_step_at(secret_b32, code, now_secs()) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(|_| TotpError::Totp("time step".into()))?;
    let res = users::Entity::update_many()
        .col_expr(Alias::new(LAST_STEP_COLUMN), Expr::value(step))
        .filter(users::Column::Id.eq(user_id))
        .filter(
            sea_orm::Condition::any()
                .add(Expr::col(Alias::new(LAST_STEP_COLUMN)).is_null())
                .add(Expr::col(Alias::new(LAST_STEP_COLUMN)).lt(step)),
        )
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// The current code (tests).
pub fn current_code(secret_b32: &str) -> Option<String> {
    totp(secret_b32, "x").ok()?.generate_current().ok()
}

/// The next time step's code, still inside the ±1 step window (tests: a
/// code later than one just consumed).
pub fn next_code(secret_b32: &str) -> Option<String> {
    let t = totp(secret_b32, "x").ok()?;
    Some(t.generate(now_secs() + t.step))
}

/// The enrolled (not pending) secret of a user row.
pub fn enrolled_secret(user: &users::Model) -> Option<&str> {
    user.totp_secret
        .as_deref()
        .filter(|s| !s.starts_with(PENDING) && !s.is_empty())
}

/// What the enrolment page shows.
#[derive(Clone)]
pub struct Enrolment {
    pub secret_b32: String,
    pub otpauth_url: String,
    /// `data:image/png;base64,…`
    pub qr_data_url: String,
}

/// Start (or restart) enrolment: a fresh pending secret.
pub async fn begin<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    username: &str,
) -> Result<Enrolment, TotpError> {
    let secret = match Secret::generate_secret().to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => return Err(TotpError::Totp("secret encoding".into())),
    };
    let t = totp(&secret, username)?;
    let qr = t.get_qr_base64().map_err(TotpError::Totp)?;
    users::Entity::update_many()
        .col_expr(
            users::Column::TotpSecret,
            sea_orm::sea_query::Expr::value(Some(format!("{PENDING}{secret}"))),
        )
        .filter(users::Column::Id.eq(user_id))
        .filter(
            sea_orm::Condition::any()
                .add(users::Column::TotpSecret.is_null())
                .add(users::Column::TotpSecret.like(format!("{PENDING}%"))),
        )
        .exec(db)
        .await?;
    Ok(Enrolment {
        otpauth_url: t.get_url(),
        qr_data_url: format!("data:image/png;base64,{qr}"),
        secret_b32: secret,
    })
}

/// The enrolment already pending for `user_id` (same secret, so a reload
/// or a mistyped code does not invalidate what the user scanned), or a new
/// one. Nothing is written when a secret is already enrolled.
pub async fn pending_or_begin<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    username: &str,
) -> Result<Enrolment, TotpError> {
    let pending = users::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .and_then(|u| u.totp_secret)
        .and_then(|s| s.strip_prefix(PENDING).map(str::to_owned))
        .filter(|s| !s.is_empty());
    let Some(secret) = pending else {
        return begin(db, user_id, username).await;
    };
    let t = totp(&secret, username)?;
    let qr = t.get_qr_base64().map_err(TotpError::Totp)?;
    Ok(Enrolment {
        otpauth_url: t.get_url(),
        qr_data_url: format!("data:image/png;base64,{qr}"),
        secret_b32: secret,
    })
}

/// Finish enrolment with a code from the app; returns the recovery codes
/// (shown once) or `None` if the code is wrong or nothing is pending.
pub async fn confirm<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    code: &str,
) -> Result<Option<Vec<String>>, TotpError> {
    let Some(user) = users::Entity::find_by_id(user_id).one(db).await? else {
        return Ok(None);
    };
    let Some(pending) = user
        .totp_secret
        .as_deref()
        .and_then(|s| s.strip_prefix(PENDING))
    else {
        return Ok(None);
    };
    // The confirming code's time step is consumed like a sign-in code's,
    // so the same code cannot sign in again (RFC 6238 §5.2).
    let Some(step) = matching_step_at(pending, code.trim(), now_secs()) else {
        return Ok(None);
    };
    let step = i64::try_from(step).map_err(|_| TotpError::Totp("time step".into()))?;
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| random_token(10)).collect();
    let digests: Vec<String> = codes.iter().map(|c| token_digest(c)).collect();
    let json = serde_json::to_string(&digests).map_err(|e| TotpError::Totp(e.to_string()))?;
    users::Entity::update_many()
        .col_expr(
            users::Column::TotpSecret,
            sea_orm::sea_query::Expr::value(Some(pending.to_owned())),
        )
        .col_expr(
            users::Column::RecoveryCodes,
            sea_orm::sea_query::Expr::value(Some(json)),
        )
        .col_expr(
            sea_orm::sea_query::Alias::new(LAST_STEP_COLUMN),
            sea_orm::sea_query::Expr::value(step),
        )
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(Some(codes))
}

/// Check a second factor: a current TOTP code not used before (its time
/// step is then consumed), or an unused recovery code (which is then
/// consumed).
pub async fn verify_second_factor<C: ConnectionTrait>(
    db: &C,
    user: &users::Model,
    code: &str,
) -> Result<bool, TotpError> {
    let Some(secret) = enrolled_secret(user) else {
        return Ok(false);
    };
    let code = code.trim();
    if code.len() == 6 {
        // A TOTP code (recovery codes are longer): valid and not replayed.
        return consume_code(db, user.id, secret, code).await;
    }
    if code.len() < 8 || code.len() > 32 {
        return Ok(false);
    }
    let digest = token_digest(code);
    let mut digests: Vec<String> = user
        .recovery_codes
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let Some(pos) = digests.iter().position(|d| ct_eq(d, &digest)) else {
        return Ok(false);
    };
    let old = user.recovery_codes.clone();
    digests.remove(pos);
    let json = serde_json::to_string(&digests).map_err(|e| TotpError::Totp(e.to_string()))?;
    // Compare-and-set so a code cannot be used twice concurrently.
    let res = users::Entity::update_many()
        .col_expr(
            users::Column::RecoveryCodes,
            sea_orm::sea_query::Expr::value(Some(json)),
        )
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::RecoveryCodes.eq(old))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

fn mac(key: &[u8], payload: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(b"mado-mfa-v2|");
            m.update(payload.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// A fresh pair for `user_id`: (signed cookie value, nonce cookie value).
pub fn mfa_cookies(key: &[u8], user_id: i64) -> (String, String) {
    let nonce = random_token(32);
    (
        mfa_cookie_value_at(key, user_id, &nonce, Utc::now().timestamp()),
        nonce,
    )
}

/// Signed cookie value issued at `issued_at` (Unix seconds), bound to
/// `nonce`: `user_id.issued_at.sha256(nonce).mac`.
pub fn mfa_cookie_value_at(key: &[u8], user_id: i64, nonce: &str, issued_at: i64) -> String {
    let payload = format!("{user_id}.{issued_at}.{}", token_digest(nonce));
    format!("{payload}.{}", mac(key, &payload))
}

/// The user id of a valid cookie value: signed with `key`, issued less than
/// [`MFA_WINDOW_SECS`] ago, and bound to `nonce` (the companion cookie of
/// the same browser).
pub fn check_mfa_cookie(key: &[u8], value: &str, nonce: Option<&str>) -> Option<i64> {
    if value.len() > 256 {
        return None;
    }
    let (payload, sig) = value.rsplit_once('.')?;
    if !ct_eq(&mac(key, payload), sig) {
        return None;
    }
    let mut parts = payload.split('.');
    let (Some(user), Some(issued), Some(digest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let issued: i64 = issued.parse().ok()?;
    let now = Utc::now().timestamp();
    if issued > now.saturating_add(5) || now.saturating_sub(issued) > MFA_WINDOW_SECS {
        return None;
    }
    let nonce = nonce.filter(|n| n.len() <= 64)?;
    if !ct_eq(&token_digest(nonce), digest) {
        return None;
    }
    user.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_cookie() {
        let secret = match Secret::generate_secret().to_encoded() {
            Secret::Encoded(s) => s,
            Secret::Raw(_) => unreachable!(),
        };
        let code = current_code(&secret).unwrap();
        assert!(matching_step_at(&secret, &code, now_secs()).is_some());
        assert!(matching_step_at(&secret, "abcdef", now_secs()).is_none());
        // The step of a code: found one step either side, not two.
        let t = totp(&secret, "x").unwrap();
        let now = 1_800_000_000u64;
        let code_at = |step: u64| t.generate(step * 30);
        let step = now / 30;
        assert_eq!(matching_step_at(&secret, &code_at(step), now), Some(step));
        assert_eq!(
            matching_step_at(&secret, &code_at(step - 1), now),
            Some(step - 1)
        );
        assert_eq!(
            matching_step_at(&secret, &code_at(step + 1), now),
            Some(step + 1)
        );
        assert_eq!(matching_step_at(&secret, &code_at(step - 2), now), None);
        let (v, n) = mfa_cookies(b"k", 7);
        assert_eq!(check_mfa_cookie(b"k", &v, Some(&n)), Some(7));
        assert_eq!(check_mfa_cookie(b"other", &v, Some(&n)), None);
        assert_eq!(check_mfa_cookie(b"k", &v, None), None);
        assert_eq!(check_mfa_cookie(b"k", &v, Some("another nonce")), None);
        assert_eq!(
            check_mfa_cookie(b"k", &v.replacen('7', "8", 1), Some(&n)),
            None
        );
        let old = mfa_cookie_value_at(b"k", 7, &n, Utc::now().timestamp() - MFA_WINDOW_SECS - 1);
        assert_eq!(check_mfa_cookie(b"k", &old, Some(&n)), None);
    }
}
