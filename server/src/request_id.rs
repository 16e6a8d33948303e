//! Request ids and the per-request tracing span.
//!
//! Every request gets an id: the incoming `x-request-id` when it is
//! well-formed (1–64 characters of `[A-Za-z0-9._-]`), a fresh UUID
//! otherwise. It is echoed in the `x-request-id` response header, recorded
//! on the request's root span, and put into problem+json bodies through a
//! task-local (handlers run inside the middleware's future).
//!
//! The span records the matched route pattern, never the concrete path, the
//! query string, cookies or other headers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use std::time::Instant;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if called inside one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn well_formed(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Middleware (use with `actix_web::middleware::from_fn`).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "(unmatched)".into());
    let span = tracing::info_span!(
        "http",
        request_id = %id,
        method = %req.method(),
        route = %route,
    );
    let started = Instant::now();
    let result = REQUEST_ID
        .scope(id.clone(), async move {
            let res = next.call(req).await?;
            // An allowed study access is audited while the handler runs:
            // nothing leaves before its row is committed.
            match crate::access::settle_audit(res.request()).await {
                Ok(()) => Ok(res.map_into_boxed_body()),
                Err(e) => {
                    let (req, _) = res.into_parts();
                    Ok(ServiceResponse::new(req, e.error_response()))
                }
            }
        })
        .instrument(span.clone())
        .await;
    let _enter = span.enter();
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            let ms = started.elapsed().as_millis() as u64;
            if res.status().is_server_error() {
                tracing::warn!(status, ms, "request completed");
            } else {
                tracing::info!(status, ms, "request completed");
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut()
                    .insert(HeaderName::from_static(HEADER), value);
            }
            Ok(res)
        }
        Err(e) => {
            tracing::warn!(error = %e, "request failed in middleware");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn ids() {
        assert!(well_formed("abc-123_X.y"));
        assert!(well_formed(&uuid::Uuid::new_v4().to_string()));
        assert!(!well_formed(""));
        assert!(!well_formed("a b"));
        assert!(!well_formed(&"a".repeat(65)));
        assert!(!well_formed("x\r\ny"));
    }
}
