//! The base of every absolute URL the server writes (DICOMweb RetrieveURL
//! in STOW responses and QIDO/WADO metadata).
//!
//! 1. `[http] public_url` when set: nothing from the request is used.
//! 2. Otherwise, when the TCP peer is one of `[http] trusted_proxies`, its
//!    `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` headers.
//! 3. Otherwise the request's own `Host` and the listener's scheme;
//!    forwarding headers from anyone else are ignored.
//!
//! A host taken from a header must look like a host (`name[:port]` or
//! `[v6]:port`, at most 255 characters), else the listener's address is
//! used, so a header can never inject a path, a query or markup.

use crate::config::HttpSettings;
use actix_web::http::header;
use actix_web::HttpRequest;
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct PublicUrl {
    /// `public_url` without a trailing slash.
    base: Option<String>,
    proxies: Vec<IpNet>,
}

fn plausible_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl PublicUrl {
    /// From validated settings (an unparsable proxy entry is dropped; the
    /// configuration check refuses it before this runs).
    pub fn new(http: &HttpSettings) -> Self {
        Self {
            base: http.public_base(),
            proxies: http.proxy_networks().unwrap_or_default(),
        }
    }

    /// Whether the TCP peer of `req` is a trusted proxy.
    fn peer_is_proxy(&self, req: &HttpRequest) -> bool {
        req.peer_addr()
            .is_some_and(|a| self.proxies.iter().any(|n| n.contains(&a.ip())))
    }

    /// `scheme://host[:port]` (no trailing slash) under which the client
    /// reached this server.
    pub fn origin(&self, req: &HttpRequest) -> String {
        if let Some(base) = &self.base {
            return base.clone();
        }
        let fallback_host = || req.app_config().local_addr().to_string();
        if self.peer_is_proxy(req) {
            // actix reads Forwarded, then X-Forwarded-Host/-Proto.
            let ci = req.connection_info();
            let scheme = match ci.scheme() {
                "https" => "https",
                _ => "http",
            };
            let host = Some(ci.host())
                .filter(|h| plausible_host(h))
                .map(str::to_owned)
                .unwrap_or_else(fallback_host);
            return format!("{scheme}://{host}");
        }
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .filter(|h| plausible_host(h))
            .map(str::to_owned)
            .unwrap_or_else(fallback_host);
        format!("{scheme}://{host}")
    }
}

/// The origin of `req` per the application's [`PublicUrl`] (the request's
/// own `Host` if the state is missing, never a forwarding header).
pub fn origin(req: &HttpRequest) -> String {
    match req.app_data::<actix_web::web::Data<crate::state::AppState>>() {
        Some(state) => state.public_url.origin(req),
        None => PublicUrl::default().origin(req),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn settings(public_url: Option<&str>, proxies: &[&str]) -> HttpSettings {
        HttpSettings {
            bind: "127.0.0.1:0".into(),
            public_url: public_url.map(str::to_owned),
            trusted_proxies: proxies.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn forwarded(peer: &str) -> HttpRequest {
        TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .insert_header((header::HOST, "mado.internal:8080"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request()
    }

    #[test]
    fn forwarding_headers_only_from_trusted_proxies() {
        let p = PublicUrl::new(&settings(None, &["10.0.0.0/8"]));
        assert_eq!(
            p.origin(&forwarded("192.0.2.1:1234")),
            "http://mado.internal:8080"
        );
        assert_eq!(
            p.origin(&forwarded("10.1.2.3:1234")),
            "https://evil.example"
        );
        let p = PublicUrl::new(&settings(
            Some("https://mado.example.org/"),
            &["10.0.0.0/8"],
        ));
        assert_eq!(
            p.origin(&forwarded("10.1.2.3:1234")),
            "https://mado.example.org"
        );
        // A host that is not a host is not echoed.
        let p = PublicUrl::new(&settings(None, &[]));
        let req = TestRequest::default()
            .insert_header((header::HOST, "a/b?c"))
            .to_http_request();
        assert!(!p.origin(&req).contains('?'));
    }
}
