//! Static assets compiled into the binary, served by the server under
//! `/static/{name}`. No third-party CDNs.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const ASSETS: &[(&str, Asset)] = &[
    (
        "mado.css",
        Asset {
            bytes: include_bytes!("../static/mado.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
    (
        "viewer.js",
        Asset {
            bytes: include_bytes!("../static/viewer.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "forms.js",
        Asset {
            bytes: include_bytes!("../static/forms.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "favicon.svg",
        Asset {
            bytes: include_bytes!("../static/favicon.svg"),
            content_type: "image/svg+xml",
        },
    ),
];

/// The asset called `name` (a bare file name, no directories).
pub fn get(name: &str) -> Option<Asset> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown() {
        assert!(super::get("mado.css").is_some());
        assert!(super::get("../Cargo.toml").is_none());
    }
}
