//! `multipart/related` bodies (RFC 2387) for WADO-RS and STOW-RS.

use bytes::{Bytes, BytesMut};

/// A fresh boundary (random, never found in the parts with any
/// meaningful probability).
pub fn boundary() -> String {
    format!("mado-{}", uuid::Uuid::new_v4().simple())
}

/// The `Content-Type` of a multipart/related answer whose parts are `part_type`.
pub fn content_type(boundary: &str, part_type: &str, ts: Option<&str>) -> String {
    match ts {
        Some(ts) => format!(
            "multipart/related; type=\"{part_type}\"; transfer-syntax={ts}; boundary={boundary}"
        ),
        None => format!("multipart/related; type=\"{part_type}\"; boundary={boundary}"),
    }
}

/// The delimiter and headers that open a part.
pub fn part_header(boundary: &str, content_type: &str, location: Option<&str>) -> Bytes {
    let mut s = format!("--{boundary}\r\nContent-Type: {content_type}\r\n");
    if let Some(l) = location {
        s.push_str("Content-Location: ");
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

/// One whole part (delimiter, headers, body), preceded by the CRLF that
/// ends the previous part unless it is the `first`.
pub fn part(
    boundary: &str,
    content_type: &str,
    location: Option<&str>,
    first: bool,
    data: &[u8],
) -> Bytes {
    let header = part_header(boundary, content_type, location);
    let mut out = BytesMut::with_capacity(data.len() + header.len() + 2);
    if !first {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.freeze()
}

/// The closing delimiter (after the last part).
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// A complete body in memory.
pub fn encode(boundary: &str, parts: &[(String, Bytes)]) -> Bytes {
    let mut out = BytesMut::new();
    for (i, (ct, data)) in parts.iter().enumerate() {
        out.extend_from_slice(&part(boundary, ct, None, i == 0, data));
    }
    out.extend_from_slice(&closing(boundary));
    out.freeze()
}

/// The boundary parameter of a `multipart/related` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned()
        })
    })
}

/// One decoded part: its headers' content type and body.
#[derive(Debug)]
pub struct Part {
    pub content_type: Option<String>,
    pub body: Bytes,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Split a multipart body. `None` when it is malformed.
pub fn parse(body: &Bytes, boundary: &str) -> Option<Vec<Part>> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut pos = find(body, d, 0)?;
    let mut parts = Vec::new();
    loop {
        let after = pos + d.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        // Skip to the end of the delimiter line.
        let line_end = find(body, b"\r\n", after)? + 2;
        let headers_end = find(body, b"\r\n\r\n", line_end - 2)?;
        let headers = std::str::from_utf8(body.get(line_end..headers_end)?).ok()?;
        let content_type = headers.split("\r\n").find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        });
        let start = headers_end + 4;
        let mut next_delim = Vec::with_capacity(d.len() + 2);
        next_delim.extend_from_slice(b"\r\n");
        next_delim.extend_from_slice(d);
        let next = find(body, &next_delim, start)?;
        parts.push(Part {
            content_type,
            body: body.slice(start..next),
        });
        pos = next + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = boundary();
        let body = encode(
            &b,
            &[
                ("application/dicom".into(), Bytes::from_static(b"one\r\n")),
                ("application/dicom".into(), Bytes::from_static(b"two")),
            ],
        );
        let parts = parse(&body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].body[..], b"one\r\n");
        assert_eq!(&parts[1].body[..], b"two");
        assert_eq!(parts[1].content_type.as_deref(), Some("application/dicom"));
        assert_eq!(
            boundary_of(&content_type(&b, "application/dicom", None)).as_deref(),
            Some(b.as_str())
        );
        assert!(parse(&Bytes::from_static(b"garbage"), &b).is_none());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn boundary_str() -> impl Strategy<Value = String> {
        // RFC 2046 bchars (without the trailing space rule), 1..70
        "[0-9A-Za-z'()+_,./:=?-]{1,70}"
    }

    proptest! {
        /// What `encode` writes, `parse` splits back into the same parts,
        /// whatever the bodies hold (CRLFs, dashes, parts of the boundary).
        #[test]
        fn round_trip(b in boundary_str(),
                      bodies in prop::collection::vec(prop::collection::vec(
                          prop::sample::select(vec![b'a', b'-', b'\r', b'\n', 0u8, 0xff]), 0..64), 0..5)) {
            let parts: Vec<(String, Bytes)> = bodies
                .iter()
                .map(|d| ("application/dicom".to_owned(), Bytes::from(d.clone())))
                .collect();
            // a body that contains the delimiter cannot be framed: skip
            let delim = format!("\r\n--{b}");
            prop_assume!(!bodies.iter().any(|d| {
                let mut s = b"\r\n".to_vec();
                s.extend_from_slice(d);
                s.extend_from_slice(b"\r\n");
                find(&s, delim.as_bytes(), 0).is_some()
            }));
            let body = encode(&b, &parts);
            let got = parse(&body, &b).expect("own encoding parses");
            prop_assert_eq!(got.len(), parts.len());
            for (g, (_, d)) in got.iter().zip(&parts) {
                prop_assert_eq!(&g.body, d);
                prop_assert_eq!(g.content_type.as_deref(), Some("application/dicom"));
            }
            let ct = content_type(&b, "application/dicom", Some("1.2.840.10008.1.2.1"));
            prop_assert_eq!(boundary_of(&ct), Some(b));
        }

        /// Arbitrary bodies and boundaries: parts or None, never a panic;
        /// every part lies inside the body.
        #[test]
        fn any_body(b in "\\PC{0,12}", body in prop::collection::vec(
                        prop::sample::select(vec![b'-', b'\r', b'\n', b'a', b':', b' ', 0xc3]), 0..200)) {
            let body = Bytes::from(body);
            if let Some(parts) = parse(&body, &b) {
                let total: usize = parts.iter().map(|p| p.body.len()).sum();
                prop_assert!(total <= body.len());
            }
        }

        /// Any Content-Type: a boundary or None, never a panic.
        #[test]
        fn any_content_type(ct in "\\PC{0,80}") {
            let _ = boundary_of(&ct);
        }
    }
}
