//! Sign-in and sign-out with local accounts.
//!
//! The login form is protected by a double-submit CSRF token (cookie +
//! hidden field); the sign-out form by a token derived from the session.
//! Failures show one generic message.

use crate::error::ApiError;
use crate::extract::{PageUser, UiLang};
use crate::services::auth::{self, ct_eq, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use viewer::{Lang, LoginPage, Template};

const MAX_USERNAME: usize = 128;
const MAX_PASSWORD: usize = 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/login")
            .route(web::get().to(login_form))
            .route(web::post().to(login)),
    )
    .route("/logout", web::post().to(logout));
}

/// Render the login page with status `status`, issuing the CSRF cookie.
fn login_page(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    csrf: String,
    username: String,
    error: Option<&'static str>,
) -> Result<HttpResponse, ApiError> {
    let page = LoginPage {
        lang,
        s: lang.strings(),
        csrf_token: csrf.clone(),
        username,
        error,
    };
    let html = page
        .render()
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("rendering login page")))?;
    let cookie = Cookie::build(LOGIN_CSRF_COOKIE, csrf)
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.session.secure_cookie)
        .max_age(CookieDuration::hours(2))
        .finish();
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .body(html))
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

async fn login_form(
    req: HttpRequest,
    user: Option<PageUser>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if user.is_some() {
        return Ok(redirect("/"));
    }
    let csrf = login_csrf_cookie(&req).unwrap_or_else(|| auth::random_token(16));
    login_page(&state, lang.0, StatusCode::OK, csrf, String::new(), None)
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: String,
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
        );
    }

    let token =
        if username.is_empty() || form.password.is_empty() || form.password.len() > MAX_PASSWORD {
            None
        } else {
            auth::login(&state.db, &state.session, &username, &form.password)
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing in")))?
        };
    let Some(token) = token else {
        tracing::info!("login failed");
        let csrf = auth::random_token(16);
        return login_page(
            &state,
            lang,
            StatusCode::UNAUTHORIZED,
            csrf,
            username,
            Some(s.login_failed),
        );
    };

    let session = Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.session.secure_cookie)
        .finish();
    let mut clear_csrf = Cookie::build(LOGIN_CSRF_COOKIE, "").path("/login").finish();
    clear_csrf.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(session)
        .cookie(clear_csrf)
        .finish())
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    user: PageUser,
    form: web::Form<LogoutForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !ct_eq(&form.csrf, &user.user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    auth::logout(&state.db, user.token())
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("signing out")))?;
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
