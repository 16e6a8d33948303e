//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step)
//! and single-use recovery codes (stored as SHA-256 digests).
//!
//! Enrolment stores the new secret as `pending:<base32>` until the user
//! proves possession with a valid code; only then it becomes the secret
//! checked at sign-in. Between password and code, the browser holds a
//! short-lived HMAC-signed cookie naming the user (no session exists yet).

use crate::db::entities::users;
use crate::services::auth::{ct_eq, random_token, token_digest};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use sha2::Sha256;
use totp_rs::{Algorithm, Secret, TOTP};

/// Cookie carrying the signed "password verified" state.
pub const MFA_COOKIE: &str = "mado_mfa";
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

/// Whether `code` is valid now for the base32 `secret`.
pub fn check(secret_b32: &str, code: &str) -> bool {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    totp(secret_b32, "x")
        .ok()
        .and_then(|t| t.check_current(code).ok())
        .unwrap_or(false)
}

/// The current code (tests).
pub fn current_code(secret_b32: &str) -> Option<String> {
    totp(secret_b32, "x").ok()?.generate_current().ok()
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
    if !check(pending, code) {
        return Ok(None);
    }
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
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(Some(codes))
}

/// Check a second factor: a current TOTP code, or an unused recovery code
/// (which is then consumed).
pub async fn verify_second_factor<C: ConnectionTrait>(
    db: &C,
    user: &users::Model,
    code: &str,
) -> Result<bool, TotpError> {
    let Some(secret) = enrolled_secret(user) else {
        return Ok(false);
    };
    if check(secret, code) {
        return Ok(true);
    }
    let code = code.trim();
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
            m.update(b"mado-mfa-v1|");
            m.update(payload.as_bytes());
            hex::encode(m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Signed cookie value: `user_id.expiry.mac`.
pub fn mfa_cookie_value(key: &[u8], user_id: i64) -> String {
    let payload = format!("{user_id}.{}", Utc::now().timestamp() + MFA_WINDOW_SECS);
    format!("{payload}.{}", mac(key, &payload))
}

/// The user id of a valid, unexpired cookie value.
pub fn check_mfa_cookie(key: &[u8], value: &str) -> Option<i64> {
    let (payload, sig) = value.rsplit_once('.')?;
    if !ct_eq(&mac(key, payload), sig) {
        return None;
    }
    let (user, exp) = payload.split_once('.')?;
    let exp: i64 = exp.parse().ok()?;
    if Utc::now().timestamp() > exp {
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
        assert!(check(&secret, &code));
        assert!(!check(&secret, "abcdef"));
        let v = mfa_cookie_value(b"k", 7);
        assert_eq!(check_mfa_cookie(b"k", &v), Some(7));
        assert_eq!(check_mfa_cookie(b"other", &v), None);
        assert_eq!(check_mfa_cookie(b"k", &v.replace("7.", "8.")), None);
    }
}
