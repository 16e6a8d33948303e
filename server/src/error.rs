//! One error type for every handler. It renders `application/problem+json`
//! (RFC 9457) carrying the request id; 4xx bodies say what was wrong in
//! safe words, 5xx bodies are generic and the cause chain goes to the log
//! (inside the request span).

use crate::request_id;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request; the message is shown to the client.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Missing or wrong credentials on an API route.
    #[error("authentication required")]
    Unauthorized,
    /// A signed-in page was requested without a session: redirect to the
    /// login page.
    #[error("login required")]
    LoginRequired,
    /// A browser asked for a signed-in page without a session: redirect to
    /// `/login?next=…` (the value is the local path and query, already
    /// percent-encoded).
    #[error("login required")]
    LoginRequiredNext(String),
    /// The request is understood but refused (e.g. a CSRF token mismatch).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request contradicts the current state.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Unknown resource, or one the caller may not see.
    #[error("not found")]
    NotFound,
    /// The server cannot do this (e.g. an unsupported transfer syntax).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The stored object is malformed (its declared sizes do not fit its
    /// data): 422, never a 5xx.
    #[error("unprocessable: {0}")]
    Unprocessable(&'static str),
    /// The request body is larger than accepted (413).
    #[error("payload too large: {0}")]
    TooLarge(&'static str),
    /// Overloaded for now (503 with Retry-After, in seconds).
    #[error("busy, retry after {0} s")]
    Busy(u32),
    /// Anything else; the client sees a generic message.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    request_id: &'a str,
}

impl ApiError {
    /// No credentials: a browser's `GET` of an HTML page (`Accept` names
    /// `text/html`) is sent to the login page with `next` = this URL; any
    /// other client gets 401 problem+json.
    pub fn unauthenticated(req: &actix_web::HttpRequest) -> ApiError {
        let wants_html = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        if req.method() != actix_web::http::Method::GET || !wants_html {
            return ApiError::Unauthorized;
        }
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let next: String =
            openidconnect::url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        ApiError::LoginRequiredNext(next)
    }

    fn detail(&self) -> Option<String> {
        match self {
            ApiError::BadRequest(m) => Some(m.clone()),
            ApiError::Unauthorized => Some("missing or invalid credentials".into()),
            ApiError::Forbidden(m) | ApiError::Conflict(m) => Some((*m).into()),
            ApiError::NotImplemented(m) | ApiError::TooLarge(m) | ApiError::Unprocessable(m) => {
                Some((*m).into())
            }
            ApiError::Busy(_) => Some("the server is busy; retry later".into()),
            ApiError::NotFound => Some("no such resource".into()),
            ApiError::LoginRequired | ApiError::LoginRequiredNext(_) | ApiError::Unexpected(_) => {
                None
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::LoginRequired | ApiError::LoginRequiredNext(_) => StatusCode::SEE_OTHER,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Unexpected(e) => {
                // `{:#}` prints the whole anyhow context chain on one line.
                tracing::error!(error = %format!("{e:#}"), "request failed");
            }
            ApiError::LoginRequired => {
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, "/login"))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish();
            }
            ApiError::LoginRequiredNext(next) => {
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, format!("/login?next={next}")))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish();
            }
            ApiError::Busy(secs) => {
                tracing::info!(status = status.as_u16(), "request rejected: busy");
                let mut res = problem_response(status, self.detail().as_deref());
                if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return res;
            }
            // The 4xx detail is not logged: it may quote request content.
            _ => tracing::info!(status = status.as_u16(), "request rejected"),
        }
        problem_response(status, self.detail().as_deref())
    }
}

/// A problem+json response for `status` with an optional safe `detail`.
pub fn problem_response(status: StatusCode, detail: Option<&str>) -> HttpResponse {
    let rid = request_id::current().unwrap_or_else(|| "unknown".into());
    let title = status.canonical_reason().unwrap_or("Error");
    let body = Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
        request_id: &rid,
    };
    let mut builder = HttpResponse::build(status);
    builder
        .content_type("application/problem+json")
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if status == StatusCode::UNAUTHORIZED {
        builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    match serde_json::to_string(&body) {
        Ok(json) => builder.body(json),
        Err(_) => builder.finish(),
    }
}

/// Attach context to any error and turn it into [`ApiError::Unexpected`].
pub trait Context<T> {
    fn context_500(self, what: &'static str) -> Result<T, ApiError>;
}

impl<T, E> Context<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context_500(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context(what)))
    }
}
