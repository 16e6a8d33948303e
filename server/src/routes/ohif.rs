//! The bundled OHIF viewer at `/ohif/` (static files of a built OHIF
//! `dist/`, prepared for that base by `scripts/fetch-ohif.sh`), talking to
//! `/dicomweb` on the same origin with the session cookie.
//!
//! `GET /ohif/` and every client-side route (any path that is not a file)
//! answer `index.html` and need a session (else redirect to `/login`);
//! the static assets themselves are public code. Disabled (404) unless
//! `[ohif] dist_dir` is set.

use crate::error::ApiError;
use crate::extract::PageUser;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::path::{Component, Path, PathBuf};

/// OHIF needs WebAssembly codecs, blob workers and inline styles.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' \
                   'wasm-unsafe-eval' blob:; worker-src 'self' blob:; style-src 'self' \
                   'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
                   connect-src 'self' blob: data:; object-src 'none'; base-uri 'self'; \
                   frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ohif", web::get().to(redirect))
        .route("/ohif/{tail:.*}", web::get().to(serve));
}

async fn redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ohif/"))
        .finish()
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// `tail` as a relative path without any `..`, root or hidden component.
fn safe_relative(tail: &str) -> Option<PathBuf> {
    let p = Path::new(tail);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with('.') => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

async fn serve(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(dist) = state.ohif_dist.clone() else {
        return Err(ApiError::NotFound);
    };
    let rel = safe_relative(&path.into_inner()).ok_or(ApiError::NotFound)?;
    let file = dist.join(&rel);
    let is_file = !rel.as_os_str().is_empty()
        && tokio::fs::metadata(&file)
            .await
            .map(|m| m.is_file())
            .unwrap_or(false);
    if !is_file {
        // The single-page app: its routes all load index.html. Signed-in only.
        use actix_web::FromRequest;
        PageUser::extract(&req).await?;
        let index = dist.join("index.html");
        let body = tokio::fs::read(&index)
            .await
            .map_err(|_| ApiError::NotFound)?;
        return Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .body(body));
    }
    let body = tokio::fs::read(&file)
        .await
        .map_err(|_| ApiError::NotFound)?;
    // Hashed bundle names never change; the rest is revalidated.
    let name = rel.to_string_lossy();
    let cache = if name.contains(".bundle.") || name.ends_with(".wasm") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(HttpResponse::Ok()
        .content_type(mime(&file))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../../b").is_none());
        assert!(safe_relative(".git/config").is_none());
        assert_eq!(
            safe_relative("assets/x.png").unwrap(),
            PathBuf::from("assets/x.png")
        );
    }
}
