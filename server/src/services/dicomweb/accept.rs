//! `Accept` header parsing for DICOMweb content negotiation (RFC 9110
//! §12.5.1 with the PS3.18 `type` and `transfer-syntax` parameters).

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lower-case `type/subtype` (may be `*/*` or `type/*`).
    pub media: String,
    /// The `type` parameter (multipart), lower-case, unquoted.
    pub part_type: Option<String>,
    /// The `transfer-syntax` parameter, unquoted.
    pub transfer_syntax: Option<String>,
    pub q: f32,
}

impl MediaRange {
    /// Whether this range accepts `media` (exact or wildcard).
    pub fn matches(&self, media: &str) -> bool {
        if self.media == "*/*" || self.media == media {
            return true;
        }
        match (self.media.split_once('/'), media.split_once('/')) {
            (Some((t, "*")), Some((mt, _))) => t == mt,
            _ => false,
        }
    }

    /// Whether the `type` parameter accepts `media`; absent means
    /// `default`.
    pub fn part_matches(&self, media: &str, default: &str) -> bool {
        let t = self.part_type.as_deref().unwrap_or(default);
        t == "*/*" || t == media || t.strip_suffix("/*").is_some_and(|p| media.starts_with(p))
    }

    /// Whether the `transfer-syntax` parameter allows `ts`; `*` and absent
    /// allow anything.
    pub fn ts_allows(&self, ts: &str) -> bool {
        match self.transfer_syntax.as_deref() {
            None | Some("*") => true,
            Some(t) => t == ts,
        }
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Parse an `Accept` header, best first (stable for equal q). Ranges with
/// `q=0` are dropped; an absent or empty header is `*/*`. Malformed
/// entries are skipped.
pub fn parse(header: Option<&str>) -> Vec<MediaRange> {
    let header = header.unwrap_or("").trim();
    if header.is_empty() {
        return vec![MediaRange {
            media: "*/*".into(),
            part_type: None,
            transfer_syntax: None,
            q: 1.0,
        }];
    }
    let mut out = Vec::new();
    for item in split_commas(header) {
        let mut parts = split_semicolons(&item).into_iter();
        let Some(media) = parts.next() else { continue };
        let media = media.trim().to_ascii_lowercase();
        if !media.contains('/') {
            continue;
        }
        let mut r = MediaRange {
            media,
            part_type: None,
            transfer_syntax: None,
            q: 1.0,
        };
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => r.part_type = Some(unquote(v).to_ascii_lowercase()),
                "transfer-syntax" => r.transfer_syntax = Some(unquote(v).to_owned()),
                "q" => r.q = unquote(v).parse().unwrap_or(0.0),
                _ => {}
            }
        }
        if r.q > 0.0 {
            out.push(r);
        }
    }
    out.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    out
}

/// Split on commas outside double quotes.
fn split_commas(s: &str) -> Vec<String> {
    split_outside_quotes(s, ',')
}

fn split_semicolons(s: &str) -> Vec<String> {
    split_outside_quotes(s, ';')
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dicomweb_accept() {
        let r = parse(Some(
            r#"multipart/related; type="application/octet-stream"; transfer-syntax=*;q=0.5, multipart/related; type="image/jls", image/png;q=0"#,
        ));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].part_type.as_deref(), Some("image/jls"));
        assert_eq!(r[1].transfer_syntax.as_deref(), Some("*"));
        assert!(r[1].part_matches("application/octet-stream", "x"));
        assert!(parse(None)[0].matches("image/jpeg"));
        assert!(parse(Some("image/*"))[0].matches("image/png"));
        assert!(!parse(Some("image/*"))[0].matches("text/html"));
    }
}
