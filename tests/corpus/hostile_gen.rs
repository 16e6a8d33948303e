//! The hostile-input corpus: DICOM Part 10 files that are malformed or
//! absurd on purpose (lengths beyond the file, 10,000 nested sequences, a
//! deflate bomb, short pixel data, 65535×65535 images, markup in text,
//! broken ISO 2022 escapes, path-like and over-long UIDs, duplicate and
//! out-of-order tags, 50,000,000 declared frames with one frame of data).
//!
//! Written byte by byte (a DICOM writer would refuse to produce most of
//! them). Shared by the generator (`mado-hostile-corpus`, which writes the
//! small ones into `tests/corpus/hostile/`) and the tests
//! (`server/tests/it/hostile.rs`, `tests/src/scenarios/hostile_corpus.rs`),
//! which include this file with `#[path]` and build the large ones in
//! memory. Only std and flate2.

#![allow(dead_code, clippy::vec_init_then_push)]

use std::io::Write;

/// Secondary Capture Image Storage.
pub const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";

/// What a well-behaved receiver does with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Must be refused (STOW failure reason / 4xx; DICOM error status or
    /// quarantine at the gateway).
    Refused,
    /// May be stored; every later read of it answers 2xx or a clear 4xx.
    Either,
}

/// One corpus entry.
pub struct Hostile {
    pub name: &'static str,
    /// Study / Series / SOP Instance UID as written (may be invalid).
    pub study: String,
    pub series: String,
    pub sop: String,
    pub expect: Expect,
    /// Large: generated at test time, never committed.
    pub large: bool,
    pub bytes: Vec<u8>,
}

fn long_vr(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// An Explicit VR Little Endian element header with `len` as the declared
/// length (which may lie).
pub fn header(group: u16, elem: u16, vr: &[u8; 2], len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if long_vr(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        // a 2-byte length: callers use lengths that fit
        out.extend_from_slice(&(len.min(0xFFFF) as u16).to_le_bytes());
    }
    out
}

/// A whole element, the value padded to even length (NUL for UI and OB,
/// space otherwise).
pub fn el(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if matches!(vr, b"UI" | b"OB") { 0 } else { b' ' });
    }
    let mut out = header(group, elem, vr, v.len() as u32);
    out.extend_from_slice(&v);
    out
}

pub fn us(group: u16, elem: u16, v: u16) -> Vec<u8> {
    el(group, elem, b"US", &v.to_le_bytes())
}

/// Preamble, "DICM" and the file meta group for `ts`.
pub fn meta(sop_class: &str, sop: &str, ts: &str) -> Vec<u8> {
    let mut g = Vec::new();
    g.extend(el(0x0002, 0x0001, b"OB", &[0, 1]));
    g.extend(el(0x0002, 0x0002, b"UI", sop_class.as_bytes()));
    g.extend(el(0x0002, 0x0003, b"UI", sop.as_bytes()));
    g.extend(el(0x0002, 0x0010, b"UI", ts.as_bytes()));
    g.extend(el(0x0002, 0x0012, b"UI", b"1.2.826.0.1.3680043.10.1.99"));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend(el(0x0002, 0x0000, b"UL", &(g.len() as u32).to_le_bytes()));
    out.extend(g);
    out
}

/// The identifying head of a data set (tags up to (0020,000E)), with
/// Patient Identity Removed = YES so that STOW-RS takes it.
pub fn head(study: &str, series: &str, sop: &str, extra_0010: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(el(0x0008, 0x0016, b"UI", SC.as_bytes()));
    d.extend(el(0x0008, 0x0018, b"UI", sop.as_bytes()));
    d.extend(el(0x0008, 0x0060, b"CS", b"OT"));
    d.extend(el(0x0010, 0x0010, b"PN", b"HOSTILE^CORPUS"));
    d.extend(el(0x0010, 0x0020, b"LO", b"HOSTILE-1"));
    d.extend_from_slice(extra_0010);
    d.extend(el(0x0012, 0x0062, b"CS", b"YES"));
    d.extend(el(0x0020, 0x000D, b"UI", study.as_bytes()));
    d.extend(el(0x0020, 0x000E, b"UI", series.as_bytes()));
    d
}

/// Image pixel module: `rows` × `cols`, 8 bits, monochrome, `frames`
/// declared (None: no Number of Frames).
pub fn image(rows: u16, cols: u16, bits: u16, frames: Option<&str>) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(us(0x0028, 0x0002, 1));
    d.extend(el(0x0028, 0x0004, b"CS", b"MONOCHROME2"));
    if let Some(n) = frames {
        d.extend(el(0x0028, 0x0008, b"IS", n.as_bytes()));
    }
    d.extend(us(0x0028, 0x0010, rows));
    d.extend(us(0x0028, 0x0011, cols));
    d.extend(us(0x0028, 0x0100, bits));
    d.extend(us(0x0028, 0x0101, bits));
    d.extend(us(0x0028, 0x0102, bits - 1));
    d.extend(us(0x0028, 0x0103, 0));
    d
}

pub fn pixels(data: &[u8]) -> Vec<u8> {
    el(0x7FE0, 0x0010, b"OB", data)
}

fn file(sop: &str, ts: &str, dataset: &[u8]) -> Vec<u8> {
    let mut out = meta(SC, sop, ts);
    out.extend_from_slice(dataset);
    out
}

fn uids(n: u32) -> (String, String, String) {
    (
        format!("2.25.{}", 990_000 + n),
        format!("2.25.{}1", 990_000 + n),
        format!("2.25.{}11", 990_000 + n),
    )
}

fn entry(
    name: &'static str,
    n: u32,
    expect: Expect,
    build: impl FnOnce(&str, &str, &str) -> Vec<u8>,
) -> Hostile {
    let (study, series, sop) = uids(n);
    let bytes = build(&study, &series, &sop);
    Hostile {
        name,
        study,
        series,
        sop,
        expect,
        large: false,
        bytes,
    }
}

fn with_uids(name: &'static str, study: &str, series: &str, sop: &str, expect: Expect) -> Hostile {
    let mut d = head(study, series, sop, &[]);
    d.extend(image(2, 2, 8, None));
    d.extend(pixels(&[0, 64, 128, 255]));
    Hostile {
        name,
        study: study.into(),
        series: series.into(),
        sop: sop.into(),
        expect,
        large: false,
        bytes: file(sop, EXPLICIT_LE, &d),
    }
}

/// The small entries (committed under tests/corpus/hostile/).
pub fn small() -> Vec<Hostile> {
    let mut v = Vec::new();
    // An element whose declared length runs far past the end of the file.
    v.push(entry(
        "value-length-beyond-file",
        1,
        Expect::Refused,
        |st, se, so| {
            let mut d = head(st, se, so, &[]);
            d.extend(image(8, 8, 8, None));
            d.extend(header(0x7FE0, 0x0010, b"OB", 0x7FFF_FFF0));
            d.extend_from_slice(&[0u8; 16]);
            file(so, EXPLICIT_LE, &d)
        },
    ));
    // A text value declared longer than what follows (2-byte length).
    v.push(entry(
        "text-length-beyond-file",
        2,
        Expect::Refused,
        |st, se, so| {
            let mut d = head(st, se, so, &[]);
            d.extend(header(0x0020, 0x0010, b"SH", 0xFFFE));
            d.extend_from_slice(b"AB");
            file(so, EXPLICIT_LE, &d)
        },
    ));
    // Pixel Data shorter than rows × columns.
    v.push(entry(
        "short-pixel-data",
        3,
        Expect::Either,
        |st, se, so| {
            let mut d = head(st, se, so, &[]);
            d.extend(image(512, 512, 8, None));
            d.extend(pixels(&[7u8; 100]));
            file(so, EXPLICIT_LE, &d)
        },
    ));
    // 65535 × 65535 × 16 bits declared (8 GiB decoded), 16 bytes given.
    v.push(entry("huge-dimensions", 4, Expect::Either, |st, se, so| {
        let mut d = head(st, se, so, &[]);
        d.extend(image(65535, 65535, 16, None));
        d.extend(el(0x7FE0, 0x0010, b"OW", &[1u8; 16]));
        file(so, EXPLICIT_LE, &d)
    }));
    // Markup and script in text attributes (must come back escaped).
    v.push(entry("html-in-text", 5, Expect::Either, |st, se, so| {
        let mut d = Vec::new();
        d.extend(el(0x0008, 0x0016, b"UI", SC.as_bytes()));
        d.extend(el(0x0008, 0x0018, b"UI", so.as_bytes()));
        d.extend(el(0x0008, 0x0060, b"CS", b"OT"));
        d.extend(el(0x0008, 0x1030, b"LO", b"<script>alert(1)</script>"));
        d.extend(el(
            0x0008,
            0x103E,
            b"LO",
            b"\"><img src=x onerror=alert(2)>",
        ));
        d.extend(el(0x0010, 0x0010, b"PN", b"<b>EVIL</b>^<i>X</i>"));
        d.extend(el(0x0010, 0x0020, b"LO", b"'; DROP TABLE study;--"));
        d.extend(el(0x0012, 0x0062, b"CS", b"YES"));
        d.extend(el(0x0020, 0x000D, b"UI", st.as_bytes()));
        d.extend(el(0x0020, 0x000E, b"UI", se.as_bytes()));
        d.extend(image(2, 2, 8, None));
        d.extend(pixels(&[0, 1, 2, 3]));
        file(so, EXPLICIT_LE, &d)
    }));
    // ISO 2022 IR 87 declared; escapes that are not declared, cut in half,
    // and a double-byte character cut by the end of the value.
    v.push(entry("broken-iso2022", 6, Expect::Either, |st, se, so| {
        let mut d = Vec::new();
        d.extend(el(0x0008, 0x0005, b"CS", b"\\ISO 2022 IR 87"));
        d.extend(el(0x0008, 0x0016, b"UI", SC.as_bytes()));
        d.extend(el(0x0008, 0x0018, b"UI", so.as_bytes()));
        d.extend(el(0x0008, 0x0060, b"CS", b"OT"));
        d.extend(el(0x0008, 0x1030, b"LO", b"\x1b$)C\xb0\xa1\x1b(B"));
        d.extend(el(0x0010, 0x0010, b"PN", b"Yamada^\x1b$B;3\x1b$"));
        d.extend(el(0x0010, 0x0020, b"LO", b"\x1b%G\xff\xfe"));
        d.extend(el(0x0012, 0x0062, b"CS", b"YES"));
        d.extend(el(0x0020, 0x000D, b"UI", st.as_bytes()));
        d.extend(el(0x0020, 0x000E, b"UI", se.as_bytes()));
        d.extend(image(2, 2, 8, None));
        d.extend(pixels(&[0, 1, 2, 3]));
        file(so, EXPLICIT_LE, &d)
    }));
    // UIDs that are paths, NUL-bearing or too long.
    v.push(with_uids(
        "uid-slash",
        "2.25.990007",
        "2.25.9900071",
        "2.25.990007/../../etc/passwd",
        Expect::Refused,
    ));
    v.push(with_uids(
        "uid-dotdot-study",
        "../../2.25.990008",
        "2.25.9900081",
        "2.25.99000811",
        Expect::Refused,
    ));
    v.push(with_uids(
        "uid-nul",
        "2.25.990009",
        "2.25.9900091",
        "2.25.9900\u{0}0911",
        Expect::Refused,
    ));
    v.push(with_uids(
        "uid-too-long",
        "2.25.990010",
        "2.25.9900101",
        &format!("2.25.{}", "1".repeat(70)),
        Expect::Refused,
    ));
    // The same tag twice.
    v.push(entry("duplicate-tags", 11, Expect::Either, |st, se, so| {
        let mut d = head(st, se, so, &[]);
        // a second Series Instance UID right after the first
        d.extend(el(0x0020, 0x000E, b"UI", b"2.25.123"));
        d.extend(image(2, 2, 8, None));
        d.extend(pixels(&[0, 1, 2, 3]));
        file(so, EXPLICIT_LE, &d)
    }));
    // Tags out of ascending order.
    v.push(entry(
        "out-of-order-tags",
        12,
        Expect::Either,
        |st, se, so| {
            let mut d = Vec::new();
            d.extend(el(0x0020, 0x000D, b"UI", st.as_bytes()));
            d.extend(el(0x0020, 0x000E, b"UI", se.as_bytes()));
            d.extend(el(0x0008, 0x0016, b"UI", SC.as_bytes()));
            d.extend(el(0x0008, 0x0018, b"UI", so.as_bytes()));
            d.extend(el(0x0012, 0x0062, b"CS", b"YES"));
            d.extend(el(0x0010, 0x0010, b"PN", b"ORDER^OUT"));
            d.extend(image(2, 2, 8, None));
            d.extend(pixels(&[0, 1, 2, 3]));
            file(so, EXPLICIT_LE, &d)
        },
    ));
    // 50,000,000 frames declared, one 16×16 frame of data.
    v.push(entry("frames-50m", 13, Expect::Either, |st, se, so| {
        let mut d = head(st, se, so, &[]);
        d.extend(image(16, 16, 8, Some("50000000")));
        d.extend(pixels(&[9u8; 256]));
        file(so, EXPLICIT_LE, &d)
    }));
    // A sequence never closed (undefined length, no delimiter).
    v.push(entry(
        "sequence-never-closed",
        14,
        Expect::Refused,
        |st, se, so| {
            let mut d = head(st, se, so, &[]);
            d.extend(header(0x0040, 0xA730, b"SQ", 0xFFFF_FFFF));
            d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
            d.extend(el(0x0040, 0xA160, b"UT", b"open"));
            file(so, EXPLICIT_LE, &d)
        },
    ));
    v
}

/// `depth` sequences nested in each other (undefined lengths, closed).
pub fn nested(depth: usize) -> Vec<u8> {
    let mut open = Vec::with_capacity(depth * 16);
    for _ in 0..depth {
        open.extend(header(0x0040, 0xA730, b"SQ", 0xFFFF_FFFF));
        open.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        // item delimiter, sequence delimiter
        open.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        open.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    open
}

/// The large entries (built at test time).
pub fn large() -> Vec<Hostile> {
    let mut v = Vec::new();
    // 10,000 nested sequences (after the identifying head).
    let mut e = entry("deep-nesting-10000", 20, Expect::Refused, |st, se, so| {
        let mut d = head(st, se, so, &[]);
        d.extend(nested(10_000));
        file(so, EXPLICIT_LE, &d)
    });
    e.large = true;
    v.push(e);
    // Deflated Explicit VR Little Endian: ~510 KiB that inflate to 512 MiB
    // (a private OB value of zeros).
    let mut e = entry("deflate-bomb", 21, Expect::Refused, |st, se, so| {
        let mut d = head(st, se, so, &[]);
        d.extend(image(2, 2, 8, None));
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&d).expect("deflate into memory");
        const BOMB: u32 = 512 * 1024 * 1024;
        enc.write_all(&header(0x7FE0, 0x0010, b"OB", BOMB))
            .expect("deflate into memory");
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..BOMB / (1024 * 1024) {
            enc.write_all(&zeros).expect("deflate into memory");
        }
        let body = enc.finish().expect("deflate into memory");
        file(so, DEFLATED_LE, &body)
    });
    e.large = true;
    v.push(e);
    v
}

/// Every entry, small and large.
pub fn all() -> Vec<Hostile> {
    let mut v = small();
    v.extend(large());
    v
}
