//! Share links.
//!
//! ```text
//! POST /studies/{study}/shares              create (Share permission, CSRF) → 201 JSON, token shown once
//! POST /studies/{study}/shares/{id}/revoke  revoke (Share permission, CSRF)
//! GET  /s/{token}                           open: passcode form, or a share session + redirect
//! POST /s/{token}                           passcode form (double-submit CSRF)
//! ```
//!
//! The token is a path segment: the request span records only the route
//! pattern (`/s/{token}`), never the concrete path.

use crate::access::{self, Principal, Share, StudyAccess};
use crate::error::{problem_response, ApiError};
use crate::extract::UiLang;
use crate::services::audit::{Event, Outcome};
use crate::services::auth::{self, ct_eq};
use crate::services::shares::{self, NewShare, Opened, SHARE_COOKIE};
use crate::state::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use viewer::{Lang, SharePasscodePage};

/// Cookie of the passcode form's CSRF token.
const SHARE_CSRF_COOKIE: &str = "mado_share_csrf";

pub fn configure(cfg: &mut web::ServiceConfig) {
    use access::routes::{register, SHARE_CREATE, SHARE_LANDING, SHARE_PASSCODE, SHARE_REVOKE};
    register(cfg, &SHARE_CREATE, create);
    register(cfg, &SHARE_REVOKE, revoke);
    cfg.service(
        web::resource(SHARE_LANDING.path)
            .route(SHARE_LANDING.route().to(landing))
            .route(SHARE_PASSCODE.route().to(passcode)),
    );
}

async fn audit(state: &AppState, ev: Event) -> Result<(), ApiError> {
    state
        .audit
        .record(&state.db, ev)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))
}

fn user_of(principal: &Principal) -> Result<&crate::services::auth::SessionUser, ApiError> {
    match principal {
        Principal::User(u) => Ok(u),
        Principal::ShareLink { .. } | Principal::ApiClient { .. } => Err(ApiError::NotFound),
    }
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    /// Lifetime in hours (default 72, at most `security.share_max_days`).
    expires_hours: Option<u32>,
    passcode: Option<String>,
    max_uses: Option<u32>,
    /// `true`/`on`: rendered images only, no DICOM download.
    pixels_only: Option<String>,
}

#[derive(Serialize)]
struct Created {
    id: i64,
    url: String,
    token: String,
    expires_at: String,
    /// Whether the link is pixels-only (forced when its creator may not
    /// download the study).
    pixels_only: bool,
}

async fn create(
    access: StudyAccess<Share>,
    req: HttpRequest,
    form: web::Form<CreateForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(access.principal())?;
    if !ct_eq(&form.csrf, &user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    let form = form.into_inner();
    let max_hours = i64::from(state.security.share_max_days.max(1)) * 24;
    let hours = i64::from(form.expires_hours.unwrap_or(72)).clamp(1, max_hours);
    let passcode = form.passcode.filter(|p| !p.is_empty());
    if passcode.as_ref().is_some_and(|p| p.len() > 256) {
        return Err(ApiError::BadRequest("passcode too long".into()));
    }
    let max_uses = match form.max_uses {
        Some(0) => return Err(ApiError::BadRequest("max_uses must be at least 1".into())),
        Some(n) => {
            Some(i32::try_from(n).map_err(|_| ApiError::BadRequest("max_uses too large".into()))?)
        }
        None => None,
    };
    let asked_pixels_only = form
        .pixels_only
        .is_some_and(|v| matches!(v.as_str(), "true" | "on" | "1"));
    let created = shares::create_for(
        &state,
        &access,
        Some(user.user_id),
        NewShare {
            expires_in: Duration::hours(hours),
            passcode,
            max_uses,
            pixels_only: asked_pixels_only,
        },
    )
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("creating share link")))?;
    let pixels_only = created.pixels_only;
    let (kind, actor) = access.principal().audit_actor();
    audit(
        &state,
        Event::new(kind, actor, "share.create")
            .org(user.org_id)
            .study(Some(access.study().as_str()))
            .request(&req)
            .detail(format!(
                "share:{}{}",
                created.id,
                if pixels_only { " pixels_only" } else { "" }
            )),
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Created {
            id: created.id,
            url: format!("/s/{}", created.token),
            token: created.token,
            expires_at: created.expires_at.to_rfc3339(),
            pixels_only,
        }))
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: String,
}

async fn revoke(
    access: StudyAccess<Share>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<RevokeForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(access.principal())?;
    if !ct_eq(&form.csrf, &user.csrf_token) {
        return Err(ApiError::Forbidden("invalid CSRF token"));
    }
    let share_id: i64 = path.1.parse().map_err(|_| ApiError::NotFound)?;
    let revoked = shares::revoke(&state.db, access.study_id(), share_id)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("revoking share link")))?;
    let (kind, actor) = access.principal().audit_actor();
    audit(
        &state,
        Event::new(kind, actor, "share.revoke")
            .org(user.org_id)
            .study(Some(access.study().as_str()))
            .outcome(if revoked {
                Outcome::Success
            } else {
                Outcome::Failure
            })
            .request(&req)
            .detail(format!("share:{share_id}")),
    )
    .await?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "revoked": true })))
}

fn passcode_page(
    state: &AppState,
    lang: Lang,
    status: StatusCode,
    token: &str,
    error: Option<&'static str>,
) -> Result<HttpResponse, ApiError> {
    let csrf = auth::random_token(16);
    let page = SharePasscodePage {
        lang,
        s: lang.strings(),
        action: format!("/s/{token}"),
        csrf_token: csrf.clone(),
        error,
    };
    let cookie = super::strict_cookie(
        SHARE_CSRF_COOKIE,
        csrf,
        "/s/",
        CookieDuration::hours(1),
        state.session.secure_cookie,
    );
    super::html_page(status, &page, [cookie])
}

async fn landing(
    req: HttpRequest,
    path: web::Path<String>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    if !state.auth_limiter.allow(req.peer_addr().map(|a| a.ip())) {
        return Ok(problem_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some(lang.0.strings().too_many_requests),
        ));
    }
    let outcome = shares::open(&state.db, &state.security, &token, None)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("opening share link")))?;
    finish(&req, &state, lang.0, &token, outcome).await
}

#[derive(Deserialize)]
struct PasscodeForm {
    csrf: String,
    passcode: String,
}

async fn passcode(
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<PasscodeForm>,
    lang: UiLang,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    if !state.auth_limiter.allow(req.peer_addr().map(|a| a.ip())) {
        return Ok(problem_response(
            StatusCode::TOO_MANY_REQUESTS,
            Some(lang.0.strings().too_many_requests),
        ));
    }
    let csrf_ok = req
        .cookie(SHARE_CSRF_COOKIE)
        .is_some_and(|c| ct_eq(c.value(), &form.csrf));
    if !csrf_ok {
        return passcode_page(
            &state,
            lang.0,
            StatusCode::FORBIDDEN,
            &token,
            Some(lang.0.strings().form_expired),
        );
    }
    let outcome = shares::open(&state.db, &state.security, &token, Some(&form.passcode))
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("opening share link")))?;
    finish(&req, &state, lang.0, &token, outcome).await
}

async fn finish(
    req: &HttpRequest,
    state: &AppState,
    lang: Lang,
    token: &str,
    outcome: Opened,
) -> Result<HttpResponse, ApiError> {
    let s = lang.strings();
    let ev = |share_id: i64, outcome: Outcome, detail: &str| {
        Event::new("share", format!("share:{share_id}"), "share.use")
            .outcome(outcome)
            .request(req)
            .detail(detail.to_owned())
    };
    match outcome {
        Opened::Session {
            share_id,
            session_token,
            study_uid,
            expires_at,
        } => {
            audit(
                state,
                ev(share_id, Outcome::Success, "").study(Some(&study_uid)),
            )
            .await?;
            let max_age = (expires_at - chrono::Utc::now()).num_seconds().max(1);
            let cookie = Cookie::build(SHARE_COOKIE, session_token)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Lax)
                .secure(state.session.secure_cookie)
                .max_age(CookieDuration::seconds(max_age))
                .finish();
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("/studies/{study_uid}")))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .cookie(cookie)
                .finish())
        }
        Opened::NeedPasscode { .. } => passcode_page(state, lang, StatusCode::OK, token, None),
        Opened::WrongPasscode { share_id, locked } => {
            audit(state, ev(share_id, Outcome::Failure, "wrong passcode")).await?;
            if locked {
                Ok(problem_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(s.share_locked),
                ))
            } else {
                passcode_page(
                    state,
                    lang,
                    StatusCode::UNAUTHORIZED,
                    token,
                    Some(s.share_passcode_wrong),
                )
            }
        }
        Opened::Locked { share_id } => {
            audit(state, ev(share_id, Outcome::Denied, "locked")).await?;
            Ok(problem_response(
                StatusCode::TOO_MANY_REQUESTS,
                Some(s.share_locked),
            ))
        }
        Opened::Exhausted { share_id } => {
            audit(state, ev(share_id, Outcome::Denied, "no uses left")).await?;
            Err(ApiError::NotFound)
        }
        Opened::Invalid => {
            audit(
                state,
                Event::new("anonymous", "", "share.use")
                    .outcome(Outcome::Denied)
                    .request(req)
                    .detail("unknown, expired or revoked link"),
            )
            .await?;
            Err(ApiError::NotFound)
        }
    }
}
