//! Request guards. A handler that takes one of these cannot run unless the
//! check passed: [`GatewayAuth`] (bearer gateway token), [`PageUser`]
//! (session; redirects to the login page) and [`ApiUser`] (session; 401).

use crate::error::ApiError;
use crate::services::auth::{self, SessionUser, SESSION_COOKIE};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::{ready, LocalBoxFuture, Ready};
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
