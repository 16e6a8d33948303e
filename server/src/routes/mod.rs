//! The URL tree. Every route is declared once, with its method, path and
//! what it requires, in the route table `access::routes::ROUTES`; each
//! area registers its handlers on those entries in its `configure`, and
//! the access-matrix test walks the whole table.
//!
//! ```text
//! GET  /healthz                                   health      (public)
//! GET  /static/{name}                             assets      (public)
//! GET|POST /login, POST /login/totp, GET|POST /login/totp/enrol,
//! GET  /auth/oidc/login|callback                  auth        (public, CSRF)
//! GET|POST /s/{token}                             shares      (public: share link landing)
//! GET  /ohif, /ohif/…                             ohif        (index: session; assets public)
//! GET  /                                          pages       (session → else /login)
//! GET|POST /account/totp, POST /logout[/everywhere] auth      (session)
//! GET  /dicomweb/studies, /dicomweb/series        dicomweb    (session; visible studies only)
//! POST /api/v1/ingest/instances                   ingest      (gateway token → its organisation)
//! POST /dicomweb/studies                          dicomweb    (STOW: gateway token or admin → its organisation)
//! GET  /admin, POST /admin/users,
//! POST /admin/grants[/{id}/revoke]                admin       (RequireRole<Admin>, own organisation, CSRF)
//! GET  /audit                                     audit       (RequireRole<AnyAuditor>: own organisation;
//!                                                              platform_auditor: all)
//! GET  /studies/{study}                           pages       (StudyAccess<ViewMetadata>)
//! GET  /studies/{study}/series/{series}/instances/{sop}/rendered.png?frame=N
//!                                                 render      (StudyAccess<ViewPixels>)
//! POST /studies/{study}/shares[/{id}/revoke]      shares      (StudyAccess<Share>, CSRF)
//! /dicomweb/studies/{study}/…                     dicomweb    (StudyAccess<P>, see routes/dicomweb)
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
