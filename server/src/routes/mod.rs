//! The URL tree. Each area registers its own resources in `configure`.
//!
//! ```text
//! GET  /healthz                                   health      (no auth)
//! POST /api/v1/ingest/instances                   ingest      (gateway token)
//! GET  /login  POST /login  POST /logout          auth        (CSRF token)
//! GET  /                                          pages       (session → else /login)
//! GET  /studies/{study}                           pages       (session → else /login)
//! GET  /studies/{study}/series/{series}/instances/{sop}/rendered.png?frame=N
//!                                                 render      (session → else 401)
//! GET  /static/{name}                             assets      (no auth)
//! /dicomweb/…                                     dicomweb    (see routes/dicomweb)
//! GET  /ohif/…                                    ohif        (index: session; assets public)
//! POST /studies/{study}/shares[/{id}/revoke]       shares      (Share permission, CSRF)
//! GET|POST /s/{token}                             shares      (share link landing)
//! GET  /audit                                     audit       (auditor)
//! POST /admin/grants[/{id}/revoke]                admin       (admin, CSRF)
//! ```

pub mod admin;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod dicomweb;
pub mod health;
pub mod ingest;
pub mod ohif;
pub mod pages;
pub mod render;
pub mod shares;

use crate::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use viewer::Template;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(form_config())
        .app_data(query_config())
        .app_data(path_config())
        .configure(health::configure)
        .configure(ingest::configure)
        .configure(auth::configure)
        .configure(pages::configure)
        .configure(render::configure)
        .configure(shares::configure)
        .configure(audit::configure)
        .configure(admin::configure)
        .configure(dicomweb::configure)
        .configure(ohif::configure)
        .configure(assets::configure);
}

/// Render `page` as a never-cached HTML response with `status`, setting
/// `cookies` (e.g. a form's CSRF cookie).
pub(crate) fn html_page(
    status: StatusCode,
    page: &impl Template,
    cookies: impl IntoIterator<Item = Cookie<'static>>,
) -> Result<HttpResponse, ApiError> {
    let body = page
        .render()
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("rendering page")))?;
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for cookie in cookies {
        res.cookie(cookie);
    }
    Ok(res.body(body))
}

/// A cookie that belongs to one form flow (CSRF token, sign-in step):
/// HttpOnly, SameSite=Strict, scoped to `path`, Secure when configured.
pub(crate) fn strict_cookie(
    name: &'static str,
    value: String,
    path: &'static str,
    max_age: CookieDuration,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(path)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(max_age)
        .finish()
}

/// Fallback for unknown routes: 404 problem+json.
pub async fn not_found(_req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(16 * 1024 * 1024)
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid JSON body: {err}")).into())
}

fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(16 * 1024)
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid form: {err}")).into())
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid query: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into())
}
