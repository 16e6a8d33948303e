//! Request guards. A handler that takes one of these cannot run unless the
//! check passed: [`GatewayAuth`] (bearer gateway token), [`PageUser`]
//! (session; redirects to the login page), [`ApiUser`] (session; 401),
//! [`RequireRole<R>`] (a session whose role is in `R`, else 404, audited),
//! and the two writers of studies, [`GatewayUploader`] (gateway token) and
//! [`GatewayOrAdmin`] (gateway token or an admin session), which carry the
//! organisation the write is made for.
//!
//! Role checks are these types, never string comparisons in handlers.

use crate::access::Role;
use crate::error::ApiError;
use crate::services::audit::{Event, Outcome};
use crate::services::auth::{self, SessionUser, SESSION_COOKIE};
use crate::services::ingest::Uploader;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::{ready, LocalBoxFuture, Ready};
use std::marker::PhantomData;
use std::ops::Deref;
use viewer::Lang;

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("application state missing")))
}

/// The request carried a valid `Authorization: Bearer <gateway token>`;
/// the gateway's identity (name, organisation).
#[derive(Debug)]
pub struct GatewayAuth(pub crate::state::GatewayIdentity);

impl FromRequest for GatewayAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let state = state(req)?;
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    // The scheme name is case-insensitive (RFC 9110 §11.1).
                    let (scheme, token) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .ok_or(ApiError::Unauthorized)?;
            state
                .gateway(token)
                .map(GatewayAuth)
                .ok_or(ApiError::Unauthorized)
        })())
    }
}

/// A signed-in user, plus the raw session token (needed to end the
/// session; never logged).
pub struct Session {
    pub user: SessionUser,
    token: String,
}

impl Session {
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user.user_id)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn resolve_session(req: &HttpRequest) -> Result<Option<Session>, ApiError> {
    let state = state(req)?;
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let token = cookie.value().to_owned();
    // Tokens we issue are 43 URL-safe base64 characters; skip the database
    // for anything else.
    if token.len() != 43 {
        return Ok(None);
    }
    let user = auth::resolve_session_cached(&state.db, &state.session, &state.sessions, &token)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("resolving session")))?;
    Ok(user.map(|user| Session { user, token }))
}

/// A session for an HTML page: without one, the response is a redirect to
/// `/login`.
#[derive(Debug)]
pub struct PageUser(pub Session);

impl FromRequest for PageUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            resolve_session(&req)
                .await?
                .map(PageUser)
                .ok_or(ApiError::LoginRequired)
        })
    }
}

impl Deref for PageUser {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

/// A session for a non-HTML resource (images, JSON): without one, 401.
#[derive(Debug)]
pub struct ApiUser(pub Session);

impl FromRequest for ApiUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            resolve_session(&req)
                .await?
                .map(ApiUser)
                .ok_or(ApiError::Unauthorized)
        })
    }
}

impl Deref for ApiUser {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

/// The page language, from `Accept-Language`.
#[derive(Debug, Clone, Copy)]
pub struct UiLang(pub Lang);

impl FromRequest for UiLang {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let lang = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Lang::from_accept_language)
            .unwrap_or_default();
        ready(Ok(UiLang(lang)))
    }
}

/// A set of roles a route requires (see [`RequireRole`]).
pub trait RoleSet {
    /// Whether `role` is in the set.
    fn allows(role: Role) -> bool;
    /// The audit action of a refused request.
    const DENIED_ACTION: &'static str;
}

/// Role markers for [`RequireRole`].
pub mod roles {
    use super::{Role, RoleSet};

    /// `admin` of an organisation.
    pub struct Admin;
    /// `auditor` (own organisation) or `platform_auditor` (every one).
    pub struct AnyAuditor;

    impl RoleSet for Admin {
        fn allows(role: Role) -> bool {
            role == Role::Admin
        }
        const DENIED_ACTION: &'static str = "admin.access";
    }
    impl RoleSet for AnyAuditor {
        fn allows(role: Role) -> bool {
            matches!(role, Role::Auditor | Role::PlatformAuditor)
        }
        const DENIED_ACTION: &'static str = "audit.view";
    }
}

/// A signed-in user whose role is in `R`. Without a session: 401, or for
/// a browser's HTML GET a redirect to the login page. Another role: 404
/// (the area does not exist for it), with a `denied` audit row.
pub struct RequireRole<R> {
    pub session: Session,
    _r: PhantomData<R>,
}

impl<R> std::fmt::Debug for RequireRole<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.session.fmt(f)
    }
}

impl<R> Deref for RequireRole<R> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl<R: RoleSet + 'static> FromRequest for RequireRole<R> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Some(session) = resolve_session(&req).await? else {
                return Err(ApiError::unauthenticated(&req));
            };
            if R::allows(session.user.role) {
                return Ok(RequireRole {
                    session,
                    _r: PhantomData,
                });
            }
            let state = state(&req)?;
            let u = &session.user;
            state
                .audit
                .record(
                    &state.db,
                    Event::new(
                        "user",
                        format!("{}:{}", u.user_id, u.username),
                        R::DENIED_ACTION,
                    )
                    .org(u.org_id)
                    .outcome(Outcome::Denied)
                    .request(&req)
                    .detail(format!(
                        "role {} may not {}",
                        u.role.as_str(),
                        req.match_pattern().unwrap_or_default()
                    )),
                )
                .await
                .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("audit trail")))?;
            Err(ApiError::NotFound)
        })
    }
}

/// The uploader behind a valid gateway token: the gateway and its
/// organisation (created on first use).
async fn gateway_uploader(state: &AppState, gateway: GatewayAuth) -> Result<Uploader, ApiError> {
    let org_id = crate::services::orgs::ensure(&state.db, &gateway.0.org)
        .await
        .map_err(|e| {
            ApiError::Unexpected(anyhow::Error::new(e).context("resolving organisation"))
        })?;
    Ok(Uploader {
        kind: "gateway",
        actor: gateway.0.name,
        org_id,
    })
}

/// A gateway token (401 otherwise), as the writer of its organisation.
#[derive(Debug)]
pub struct GatewayUploader(pub Uploader);

impl FromRequest for GatewayUploader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let gateway = GatewayAuth::from_request(req, payload).into_inner();
        let state = state(req);
        Box::pin(async move {
            let state = state?;
            Ok(GatewayUploader(gateway_uploader(&state, gateway?).await?))
        })
    }
}

/// A gateway token (when an `Authorization` header is sent; 401 if it is
/// not a gateway token) or else an admin session (401 without a session,
/// 403 for another role), as the writer of its organisation: the
/// gateway's, or the admin's own.
#[derive(Debug)]
pub struct GatewayOrAdmin(pub Uploader);

impl FromRequest for GatewayOrAdmin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let gateway = req
            .headers()
            .contains_key(header::AUTHORIZATION)
            .then(|| GatewayAuth::from_request(&req, payload).into_inner());
        Box::pin(async move {
            let state = state(&req)?;
            if let Some(gateway) = gateway {
                return Ok(GatewayOrAdmin(gateway_uploader(&state, gateway?).await?));
            }
            match resolve_session(&req).await? {
                Some(s) if s.user.role == Role::Admin => {
                    let org_id = s
                        .user
                        .org_id
                        .ok_or(ApiError::Forbidden("the admin has no organisation"))?;
                    Ok(GatewayOrAdmin(Uploader {
                        kind: "user",
                        actor: format!("{}:{}", s.user.user_id, s.user.username),
                        org_id,
                    }))
                }
                Some(_) => Err(ApiError::Forbidden("uploading requires an administrator")),
                None => Err(ApiError::Unauthorized),
            }
        })
    }
}
