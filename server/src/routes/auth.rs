//! Sign-in and sign-out with local accounts.
//!
//! The login form is protected by a double-submit CSRF token (cookie +
//! hidden field); the sign-out form by a token derived from the session.
//! Failures show one generic message.

use super::{html_page, strict_cookie};
use crate::error::ApiError;
use crate::extract::{PageUser, UiLang};
use crate::services::audit::{Event, Outcome};
use crate::services::auth::{self, ct_eq, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::services::totp::{self, MFA_COOKIE, MFA_NONCE_COOKIE};
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use viewer::{Chrome, Lang, LoginPage, TotpEnrolPage, TotpLoginPage};

const MAX_USERNAME: usize = 128;
const MAX_PASSWORD: usize = 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/login")
            .route(web::get().to(login_form))
            .route(web::post().to(login)),
    )
    .route("/login/totp", web::post().to(login_totp))
    .service(
        web::resource("/login/totp/enrol")
            .route(web::get().to(login_enrol_form))
            .route(web::post().to(login_enrol)),
    )
    .route("/auth/oidc/login", web::get().to(oidc_login))
    .route("/auth/oidc/callback", web::get().to(oidc_callback))
    .service(
        web::resource("/account/totp")
            .route(web::get().to(totp_enrol_form))
            .route(web::post().to(totp_enrol)),
    )
    .route("/logout", web::post().to(logout))
    .route("/logout/everywhere", web::post().to(logout_everywhere));
}

/// Render the login page with status `status`, issuing the CSRF cookie.
fn login_page(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    csrf: String,
    username: String,
    error: Option<&'static str>,
    next: &str,
) -> Result<HttpResponse, ApiError> {
    let page = LoginPage {
        lang,
        s: lang.strings(),
        csrf_token: csrf.clone(),
        username,
        error,
        sso: state.oidc.is_some(),
        next: next.to_owned(),
    };
    let cookie = strict_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        "/login",
        CookieDuration::hours(2),
        state.session.secure_cookie,
    );
    html_page(status, &page, [cookie])
}

/// The CSRF token of the login cookie when it looks like one we issued.
fn login_csrf_cookie(req: &HttpRequest) -> Option<String> {
    req.cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| {
            v.len() == 22
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `next` when it is a local path (`/…`, not `//…` or `/\…`, printable,
/// bounded): where to go after signing in. Anything else is dropped, so
/// the parameter cannot redirect off-site.
pub(crate) fn safe_next(next: Option<&str>) -> Option<&str> {
    let n = next?;
    let ok = n.len() <= 2048
        && n.starts_with('/')
        && !n.starts_with("//")
        && !n.starts_with("/\\")
        && !n.starts_with("/login")
        && n.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(n)
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(
    req: HttpRequest,
    user: Option<PageUser>,
    query: web::Query<NextQuery>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let next = safe_next(query.next.as_deref()).unwrap_or("");
    if user.is_some() {
        return Ok(redirect(if next.is_empty() { "/" } else { next }));
    }
    let csrf = login_csrf_cookie(&req).unwrap_or_else(|| auth::random_token(16));
    login_page(
        &state,
        lang.0,
        StatusCode::OK,
        csrf,
        String::new(),
        None,
        next,
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let lang = lang.0;
    let s = lang.strings();
    let username: String = form.username.trim().chars().take(MAX_USERNAME).collect();
    let next = safe_next(form.next.as_deref()).unwrap_or("");

    if !state.auth_limiter.allow(req.peer_addr().map(|a| a.ip())) {
        return login_page(
            &state,
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            auth::random_token(16),
            username,
            Some(s.too_many_requests),
            next,
        );
    }

    let csrf_ok = login_csrf_cookie(&req).is_some_and(|c| ct_eq(&c, &form.csrf));
    if !csrf_ok {
        tracing::info!("login rejected: CSRF token mismatch");
        return login_page(
            &state,
            lang,
            StatusCode::FORBIDDEN,
            auth::random_token(16),
            username,
            Some(s.form_expired),
            next,
        );
    }

    let result =
        if username.is_empty() || form.password.is_empty() || form.password.len() > MAX_PASSWORD {
            auth::LoginResult::default()
        } else {
            auth::login_with(
                &state.db,
                &state.session,
                &state.security,
                &username,
                &form.password,
            )
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?
        };
    // The actor is the account when it exists; an unknown username is not
    // recorded (it may be a mistyped password).
    let actor = match result.user_id {
        Some(id) => format!("{id}:{username}"),
        None => String::new(),
    };
    let kind = if result.user_id.is_some() {
        "user"
    } else {
        "anonymous"
    };
    let event = Event::new(kind, actor, "login")
        .org(result.org_id)
        .request(&req)
        .outcome(
            if result.token.is_some() || result.mfa_pending || result.enrolment_due {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        )
        .detail(if result.locked {
            "account locked"
        } else if result.mfa_pending {
            "password verified, second factor due"
        } else if result.enrolment_due {
            "password verified, second factor enrolment due"
        } else {
            ""
        });
    state
        .audit
        .record(&state.db, event)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    if result.mfa_pending {
        if let Some(user_id) = result.user_id {
            return totp_step(&state, lang, StatusCode::OK, None, Some(user_id));
        }
    }
    if result.enrolment_due {
        if let Some(user_id) = result.user_id {
            return enrol_step(&state, lang, StatusCode::OK, None, user_id, &username).await;
        }
    }
    let Some(token) = result.token else {
        tracing::info!(locked = result.locked, "login failed");
        let csrf = auth::random_token(16);
        return login_page(
            &state,
            lang,
            StatusCode::UNAUTHORIZED,
            csrf,
            username,
            Some(s.login_failed),
            next,
        );
    };

    Ok(signed_in(
        &state,
        token,
        if next.is_empty() { "/" } else { next },
    ))
}

/// The cookies that complete a sign-in: the session cookie set, the login
/// cookies cleared.
fn session_cookies(state: &AppState, token: String) -> [Cookie<'static>; 4] {
    let session = Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.session.secure_cookie)
        .finish();
    let mut clear_csrf = Cookie::build(LOGIN_CSRF_COOKIE, "").path("/login").finish();
    clear_csrf.make_removal();
    let mut clear_mfa = Cookie::build(MFA_COOKIE, "").path("/login").finish();
    clear_mfa.make_removal();
    let mut clear_nonce = Cookie::build(MFA_NONCE_COOKIE, "").path("/login").finish();
    clear_nonce.make_removal();
    [session, clear_csrf, clear_mfa, clear_nonce]
}

/// A fresh signed MFA cookie naming `user_id` and its HttpOnly nonce
/// companion (both `SameSite=Strict`, path `/login`, short-lived).
fn mfa_cookie_pair(state: &AppState, user_id: i64) -> [Cookie<'static>; 2] {
    let (value, nonce) = totp::mfa_cookies(&state.mfa_key, user_id);
    let secure = state.session.secure_cookie;
    let age = CookieDuration::seconds(totp::MFA_WINDOW_SECS);
    [
        strict_cookie(MFA_COOKIE, value, "/login", age, secure),
        strict_cookie(MFA_NONCE_COOKIE, nonce, "/login", age, secure),
    ]
}

/// The user id of a valid MFA cookie pair of this browser.
fn mfa_user_id(req: &HttpRequest, state: &AppState) -> Option<i64> {
    let nonce = req.cookie(MFA_NONCE_COOKIE);
    req.cookie(MFA_COOKIE).and_then(|c| {
        totp::check_mfa_cookie(&state.mfa_key, c.value(), nonce.as_ref().map(|n| n.value()))
    })
}

/// The redirect that completes a sign-in.
fn signed_in(state: &AppState, token: String, to: &str) -> HttpResponse {
    let mut res = HttpResponse::SeeOther();
    res.insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for c in session_cookies(state, token) {
        res.cookie(c);
    }
    res.finish()
}

/// Enrolment during sign-in, when the role requires a second factor and
/// none is enrolled: the QR code of a pending secret (the one already
/// pending, if any), a fresh login CSRF token and a fresh signed MFA
/// cookie naming the user. No session exists until a code is confirmed
/// (`POST /login/totp/enrol`).
async fn enrol_step(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    error: Option<&'static str>,
    user_id: i64,
    username: &str,
) -> Result<HttpResponse, ApiError> {
    let e = totp::pending_or_begin(&state.db, user_id, username)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("totp enrolment")))?;
    let csrf = auth::random_token(16);
    let page = TotpEnrolPage {
        lang,
        s: lang.strings(),
        chrome: None,
        action: "/login/totp/enrol".into(),
        csrf_token: csrf.clone(),
        continue_href: None,
        qr_data_url: e.qr_data_url,
        secret: e.secret_b32,
        error,
        recovery_codes: Vec::new(),
        enrolled: false,
    };
    let secure = state.session.secure_cookie;
    let csrf_cookie = strict_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        "/login",
        CookieDuration::hours(2),
        secure,
    );
    html_page(
        status,
        &page,
        std::iter::once(csrf_cookie).chain(mfa_cookie_pair(state, user_id)),
    )
}

/// The user named by a valid MFA cookie, when enabled and not locked.
async fn mfa_user(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<crate::db::entities::users::Model>, ApiError> {
    use crate::db::entities::users;
    use sea_orm::EntityTrait;
    let Some(user_id) = mfa_user_id(req, state) else {
        return Ok(None);
    };
    Ok(users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading user")))?
        .filter(|u| !u.disabled && u.locked_until.is_none_or(|t| chrono::Utc::now() >= t)))
}

/// `GET /login/totp/enrol`: the enrolment step again (e.g. a reload).
async fn login_enrol_form(
    req: HttpRequest,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match mfa_user(&req, &state).await? {
        Some(u) if totp::enrolled_secret(&u).is_none() => {
            enrol_step(&state, lang.0, StatusCode::OK, None, u.id, &u.username).await
        }
        _ => Ok(redirect("/login")),
    }
}

/// `POST /login/totp/enrol`: confirm the enrolment started at sign-in;
/// on success the session starts and the recovery codes are shown once.
async fn login_enrol(
    req: HttpRequest,
    form: web::Form<TotpForm>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let lang = lang.0;
    let s = lang.strings();
    if !state.auth_limiter.allow(req.peer_addr().map(|a| a.ip())) {
        return Ok(crate::error::problem_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some(s.too_many_requests),
        ));
    }
    let csrf_ok = login_csrf_cookie(&req).is_some_and(|c| ct_eq(&c, &form.csrf));
    let user = mfa_user(&req, &state).await?;
    let (Some(user), true) = (user, csrf_ok) else {
        return Ok(redirect("/login"));
    };
    if totp::enrolled_secret(&user).is_some() {
        return Ok(redirect("/login"));
    }
    // Counted before the code is checked (see `auth::claim_attempt`).
    let claimed = auth::claim_attempt(&state.db, &state.security, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    if claimed.is_none() {
        return Ok(redirect("/login"));
    }
    let codes = totp::confirm(&state.db, user.id, &form.code)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("totp enrolment")))?;
    let actor = format!("{}:{}", user.id, user.username);
    record(
        &state,
        Event::new("user", actor.clone(), "account.totp_enrol")
            .org(user.org_id)
            .request(&req)
            .outcome(if codes.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            })
            .detail("during sign-in"),
    )
    .await?;
    let Some(codes) = codes else {
        return enrol_step(
            &state,
            lang,
            StatusCode::UNAUTHORIZED,
            Some(s.totp_failed),
            user.id,
            &user.username,
        )
        .await;
    };
    record(
        &state,
        Event::new("user", actor, "login")
            .org(user.org_id)
            .request(&req)
            .detail("second factor enrolled"),
    )
    .await?;
    auth::reset_failures(&state.db, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    let token = auth::create_session(&state.db, &state.session, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    let page = TotpEnrolPage {
        lang,
        s,
        chrome: None,
        action: String::new(),
        csrf_token: String::new(),
        continue_href: Some("/".into()),
        qr_data_url: String::new(),
        secret: String::new(),
        error: None,
        recovery_codes: codes,
        enrolled: true,
    };
    html_page(StatusCode::OK, &page, session_cookies(&state, token))
}

/// The second-step form; with `user_id`, a fresh signed MFA cookie.
fn totp_step(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    error: Option<&'static str>,
    user_id: Option<i64>,
) -> Result<HttpResponse, ApiError> {
    let csrf = auth::random_token(16);
    let page = TotpLoginPage {
        lang,
        s: lang.strings(),
        csrf_token: csrf.clone(),
        error,
    };
    let secure = state.session.secure_cookie;
    let csrf_cookie = strict_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        "/login",
        CookieDuration::hours(2),
        secure,
    );
    let mfa_cookies = user_id
        .map(|user_id| mfa_cookie_pair(state, user_id))
        .into_iter()
        .flatten();
    html_page(
        status,
        &page,
        std::iter::once(csrf_cookie).chain(mfa_cookies),
    )
}

#[derive(Deserialize)]
struct TotpForm {
    csrf: String,
    code: String,
}

/// `POST /login/totp`: the second sign-in step.
async fn login_totp(
    req: HttpRequest,
    form: web::Form<TotpForm>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::entities::users;
    use sea_orm::EntityTrait;
    let lang = lang.0;
    let s = lang.strings();
    if !state.auth_limiter.allow(req.peer_addr().map(|a| a.ip())) {
        return totp_step(
            &state,
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            Some(s.too_many_requests),
            None,
        );
    }
    let csrf_ok = login_csrf_cookie(&req).is_some_and(|c| ct_eq(&c, &form.csrf));
    let user_id = mfa_user_id(&req, &state);
    let (Some(user_id), true) = (user_id, csrf_ok) else {
        // No verified password (or expired): start over.
        return Ok(redirect("/login"));
    };
    let user = users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading user")))?
        .filter(|u| !u.disabled)
        .ok_or(ApiError::Forbidden("unknown account"))?;
    // Counted before the code is checked (see `auth::claim_attempt`):
    // concurrent guesses cannot outrun the lock.
    let locked = auth::claim_attempt(&state.db, &state.security, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?
        .is_none();
    let ok = !locked
        && totp::verify_second_factor(&state.db, &user, &form.code)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("second factor")))?;
    let actor = format!("{}:{}", user.id, user.username);
    let audit_ev = Event::new("user", actor, "login")
        .org(user.org_id)
        .request(&req)
        .outcome(if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        })
        .detail(if locked {
            "account locked"
        } else {
            "second factor"
        });
    state
        .audit
        .record(&state.db, audit_ev)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    if !ok {
        return totp_step(
            &state,
            lang,
            StatusCode::UNAUTHORIZED,
            Some(s.totp_failed),
            Some(user.id),
        );
    }
    auth::reset_failures(&state.db, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    let token = auth::create_session(&state.db, &state.session, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    Ok(signed_in(&state, token, "/"))
}

fn enrol_page(page: TotpEnrolPage) -> Result<HttpResponse, ApiError> {
    html_page(StatusCode::OK, &page, [])
}

/// `GET /account/totp`: QR code of a fresh pending secret (or the status).
async fn totp_enrol_form(
    user: PageUser,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    enrol_view(&user, lang.0, &state, None).await
}

async fn enrol_view(
    user: &PageUser,
    lang: Lang,
    state: &AppState,
    error: Option<&'static str>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::entities::users;
    use sea_orm::EntityTrait;
    let row = users::Entity::find_by_id(user.user.user_id)
        .one(&state.db)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("loading user")))?
        .ok_or(ApiError::LoginRequired)?;
    let chrome = Chrome {
        username: user.user.username.clone(),
        csrf_token: user.user.csrf_token.clone(),
    };
    let mut page = TotpEnrolPage {
        lang,
        s: lang.strings(),
        chrome: Some(chrome),
        action: "/account/totp".into(),
        csrf_token: user.user.csrf_token.clone(),
        continue_href: None,
        qr_data_url: String::new(),
        secret: String::new(),
        error,
        recovery_codes: Vec::new(),
        enrolled: totp::enrolled_secret(&row).is_some(),
    };
    if !page.enrolled {
        let e = totp::begin(&state.db, row.id, &row.username)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("totp enrolment")))?;
        page.qr_data_url = e.qr_data_url;
        page.secret = e.secret_b32;
    }
    enrol_page(page)
}

/// `POST /account/totp`: confirm enrolment with a code; shows the
/// recovery codes once.
async fn totp_enrol(
    user: PageUser,
    req: HttpRequest,
    form: web::Form<TotpForm>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !ct_eq(&form.csrf, &user.user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    let lang = lang.0;
    let codes = totp::confirm(&state.db, user.user.user_id, &form.code)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("totp enrolment")))?;
    state
        .audit
        .record(
            &state.db,
            Event::new(
                "user",
                format!("{}:{}", user.user.user_id, user.user.username),
                "account.totp_enrol",
            )
            .org(user.user.org_id)
            .outcome(if codes.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            })
            .request(&req),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    let Some(codes) = codes else {
        return enrol_view(&user, lang, &state, Some(lang.strings().totp_failed)).await;
    };
    enrol_page(TotpEnrolPage {
        lang,
        s: lang.strings(),
        chrome: Some(Chrome {
            username: user.user.username.clone(),
            csrf_token: user.user.csrf_token.clone(),
        }),
        action: "/account/totp".into(),
        csrf_token: user.user.csrf_token.clone(),
        continue_href: None,
        qr_data_url: String::new(),
        secret: String::new(),
        error: None,
        recovery_codes: codes,
        enrolled: true,
    })
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    user: PageUser,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    end_sessions(user, req, form, state, false).await
}

/// `POST /logout/everywhere`: end every session of the user.
async fn logout_everywhere(
    user: PageUser,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    end_sessions(user, req, form, state, true).await
}

async fn end_sessions(
    user: PageUser,
    req: HttpRequest,
    form: web::Form<LogoutForm>,
    state: web::Data<AppState>,
    everywhere: bool,
) -> Result<HttpResponse, ApiError> {
    if !ct_eq(&form.csrf, &user.user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    if everywhere {
        auth::logout_everywhere(&state.db, user.user.user_id)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing out")))?;
        state.sessions.forget_user(user.user.user_id);
    } else {
        auth::logout(&state.db, user.token())
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing out")))?;
        state.sessions.forget(user.token());
    }
    state
        .audit
        .record(
            &state.db,
            Event::new(
                "user",
                format!("{}:{}", user.user.user_id, user.user.username),
                if everywhere {
                    "logout.everywhere"
                } else {
                    "logout"
                },
            )
            .org(user.user.org_id)
            .request(&req),
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
    tracing::info!(user_id = user.user.user_id, "signed out");
    let mut clear = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    clear.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(clear)
        .finish())
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /auth/oidc/login`: redirect to the provider (PKCE, state, nonce).
async fn oidc_login(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let oidc = state.oidc.as_ref().ok_or(ApiError::NotFound)?;
    let (url, oidc_state) = oidc
        .begin()
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("OIDC sign-in")))?;
    let cookie = Cookie::build(crate::services::oidc::OIDC_STATE_COOKIE, oidc_state)
        .path("/auth/oidc")
        .http_only(true)
        // Lax: the cookie must come back on the provider's top-level redirect.
        .same_site(SameSite::Lax)
        .secure(state.session.secure_cookie)
        .max_age(CookieDuration::minutes(10))
        .finish();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

#[derive(Deserialize)]
struct OidcCallback {
    code: Option<String>,
    state: Option<String>,
}

/// `GET /auth/oidc/callback`: exchange the code, verify the ID token, map
/// to a local account, start a session (or ask for the local second
/// factor when the role needs MFA and the provider reported none).
async fn oidc_callback(
    req: HttpRequest,
    query: web::Query<OidcCallback>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use crate::db::entities::users;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let oidc = state.oidc.as_ref().ok_or(ApiError::NotFound)?;
    let fail = |detail: &'static str| {
        Event::new("anonymous", "", "login")
            .outcome(Outcome::Failure)
            .request(&req)
            .detail(format!("oidc: {detail}"))
    };
    let cookie_state = req
        .cookie(crate::services::oidc::OIDC_STATE_COOKIE)
        .map(|c| c.value().to_owned());
    let (Some(code), Some(q_state), Some(c_state)) =
        (query.code.as_deref(), query.state.as_deref(), cookie_state)
    else {
        record(&state, fail("missing code or state")).await?;
        return Err(ApiError::Forbidden("invalid sign-in state"));
    };
    if !ct_eq(q_state, &c_state) {
        record(&state, fail("state mismatch")).await?;
        return Err(ApiError::Forbidden("invalid sign-in state"));
    }
    let identity = match oidc.finish(q_state, code).await {
        Ok(i) => i,
        Err(e) => {
            // The crate's messages name the failed check, never the token.
            tracing::info!(error = %e, "OIDC sign-in rejected");
            record(&state, fail(e.audit_detail())).await?;
            return Err(ApiError::Unauthorized);
        }
    };
    let username: String = format!("oidc:{}", identity.subject)
        .chars()
        .take(MAX_USERNAME)
        .collect();
    let db500 =
        |e: sea_orm::DbErr| ApiError::Unexpected(anyhow::Error::new(e).context("OIDC user"));
    let mut user = users::Entity::find()
        .filter(users::Column::Username.eq(username.as_str()))
        .one(&state.db)
        .await
        .map_err(db500)?;
    if user.is_none() {
        let settings = oidc.settings();
        let role = identity
            .role
            .as_deref()
            .and_then(crate::access::Role::parse)
            .map(|r| r.as_str().to_owned())
            .unwrap_or_else(|| settings.default_role.clone());
        // The password is random and never shown: OIDC accounts sign in
        // through the provider only.
        auth::upsert_user_in_org(
            &state.db,
            &username,
            &auth::random_token(32),
            &role,
            &settings.org,
        )
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("creating OIDC user")))?;
        user = users::Entity::find()
            .filter(users::Column::Username.eq(username.as_str()))
            .one(&state.db)
            .await
            .map_err(db500)?;
    }
    let user = user.filter(|u| !u.disabled).ok_or(ApiError::Unauthorized)?;
    let needs_mfa = state.security.mfa_roles.contains(&user.role) && !identity.has_second_factor();
    let has_totp = totp::enrolled_secret(&user).is_some();
    record(
        &state,
        Event::new("user", format!("{}:{}", user.id, user.username), "login")
            .org(user.org_id)
            .request(&req)
            .detail(match (needs_mfa, has_totp) {
                (true, true) => "oidc, local second factor due",
                (true, false) => "oidc, local second factor enrolment due",
                (false, _) if identity.has_second_factor() => "oidc, provider second factor",
                (false, _) => "oidc",
            }),
    )
    .await?;
    // The role needs MFA and the provider reported none: the local second
    // factor (enrolled during this sign-in if need be) comes before any
    // session.
    if needs_mfa && has_totp {
        return totp_step(&state, lang.0, StatusCode::OK, None, Some(user.id));
    }
    if needs_mfa {
        return enrol_step(
            &state,
            lang.0,
            StatusCode::OK,
            None,
            user.id,
            &user.username,
        )
        .await;
    }
    let token = auth::create_session(&state.db, &state.session, user.id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?;
    let mut clear = Cookie::build(crate::services::oidc::OIDC_STATE_COOKIE, "")
        .path("/auth/oidc")
        .finish();
    clear.make_removal();
    let mut res = signed_in(&state, token, "/");
    res.add_cookie(&clear)
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("cookie")))?;
    Ok(res)
}

async fn record(state: &AppState, ev: Event) -> Result<(), ApiError> {
    state
        .audit
        .record(&state.db, ev)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))
}
