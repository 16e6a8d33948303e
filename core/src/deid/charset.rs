//! Specific Character Set (0008,0005): decoding and encoding of the text VRs (PN, LO, SH,
//! ST, LT, UT, UC) with every defined term of PS3.3 C.12.1.1.2, including the ISO 2022 code
//! extensions (PS3.5 6.1.2.5) and the return to the initial code elements at delimiters
//! and control characters (PS3.5 6.1.3 / 6.1.2.5.3).
//!
//! dicom-rs decodes a text value with the first value of the Specific Character Set only;
//! this module decodes the bytes with all of them. The code pages themselves come from
//! `encoding_rs` (no hand-made tables):
//!
//! | term | code element | encoding_rs |
//! | --- | --- | --- |
//! | (empty), `ISO_IR 6`, `ISO 2022 IR 6` | G0 ASCII (`ESC ( B`) | ASCII |
//! | `ISO_IR 100` … `ISO_IR 203`, `ISO_IR 166` (and `ISO 2022 IR n`) | G1 right half (`ESC - x`) | `windows-1252` (8859-1 right half), `ISO-8859-x`, `windows-1254` (8859-9), `windows-874` (TIS 620) |
//! | `ISO_IR 13`, `ISO 2022 IR 13` | G0 JIS X 0201 romaji (`ESC ( J`), G1 katakana (`ESC ) I`) | Shift_JIS single bytes |
//! | `ISO 2022 IR 87` | G0 JIS X 0208 (`ESC $ B`) | EUC-JP |
//! | `ISO 2022 IR 159` | G0 JIS X 0212 (`ESC $ ( D`) | EUC-JP (`0x8F` prefix) |
//! | `ISO 2022 IR 149` | G1 KS X 1001 (`ESC $ ) C`) | EUC-KR |
//! | `ISO 2022 IR 58` | G1 GB 2312 (`ESC $ ) A`) | GBK |
//! | `ISO_IR 192`, `GB18030`, `GBK` | whole value, no code extensions | UTF-8, GB18030, GBK |
//!
//! Decoding is strict (fail closed): an escape sequence that is not one of the declared
//! character sets, a byte that no active code element defines, a double-byte character cut
//! in half, an unmapped code point or an escape in a character set without code extensions
//! is an error. `ESC ( B` and `ESC ( J` (back to a single-byte G0) are always accepted.
//! Lenient on purpose: an empty or absent Specific Character Set (ISO-IR 6) and single-byte
//! later values written as `ISO_IR n` instead of `ISO 2022 IR n`.

use dicom_core::VR;
use encoding_rs::Encoding;

/// Why a value cannot be decoded or encoded. Never carries the value itself (PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    #[error("unsupported Specific Character Set term {0:?}")]
    UnknownTerm(String),
    #[error("Specific Character Set term {0:?} cannot be combined with code extensions")]
    NoExtensions(String),
    #[error("escape sequence not allowed by the declared character sets")]
    BadEscape,
    #[error("byte not defined by the active code elements")]
    BadByte,
    #[error("incomplete or unmapped multi-byte character")]
    BadCharacter,
    #[error("character cannot be encoded in the declared character sets")]
    Unencodable,
}

/// A double-byte (94×94) G0 code element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    /// JIS X 0201 romaji (ISO-IR 14): decoded as ASCII, as every DICOM reader does.
    Romaji,
    Jis0208,
    Jis0212,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    /// A 96-character right half of a single-byte code page (bytes 0xA0..=0xFF).
    Single(&'static Encoding),
    /// JIS X 0201 katakana (bytes 0xA1..=0xDF).
    Katakana,
    Ksx1001,
    Gb2312,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    G0(G0),
    G1(G1),
}

/// One escape sequence (the bytes after ESC) and the code element it designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Designation {
    seq: &'static [u8],
    target: Target,
}

const ASCII: Designation = Designation {
    seq: b"(B",
    target: Target::G0(G0::Ascii),
};
const ROMAJI: Designation = Designation {
    seq: b"(J",
    target: Target::G0(G0::Romaji),
};

/// What one defined term brings.
struct Term {
    /// Code element active at the start of a value when this term is value 1.
    g0: G0,
    g1: Option<G1>,
    designations: &'static [Designation],
    iso2022: bool,
}

macro_rules! single_byte_term {
    ($enc:expr, $seq:literal, $iso2022:expr) => {{
        static D: [Designation; 1] = [Designation {
            seq: $seq,
            target: Target::G1(G1::Single($enc)),
        }];
        Term {
            g0: G0::Ascii,
            g1: Some(G1::Single($enc)),
            designations: &D,
            iso2022: $iso2022,
        }
    }};
}

/// The non-ISO 2022 multi-byte character sets (no code extensions).
fn unicode_term(t: &str) -> Option<&'static Encoding> {
    match t {
        "ISO_IR 192" => Some(encoding_rs::UTF_8),
        "GB18030" => Some(encoding_rs::GB18030),
        "GBK" => Some(encoding_rs::GBK),
        _ => None,
    }
}

fn term(t: &str) -> Option<Term> {
    let (iso2022, number) = if let Some(n) = t.strip_prefix("ISO 2022 IR ") {
        (true, n)
    } else if let Some(n) = t.strip_prefix("ISO_IR ") {
        (false, n)
    } else {
        return None;
    };
    Some(match number {
        "6" => {
            static D: [Designation; 0] = [];
            Term {
                g0: G0::Ascii,
                g1: None,
                designations: &D,
                iso2022,
            }
        }
        // ISO 8859-1 right half == windows-1252 0xA0..=0xFF (WHATWG has no ISO-8859-1)
        "100" => single_byte_term!(encoding_rs::WINDOWS_1252, b"-A", iso2022),
        "101" => single_byte_term!(encoding_rs::ISO_8859_2, b"-B", iso2022),
        "109" => single_byte_term!(encoding_rs::ISO_8859_3, b"-C", iso2022),
        "110" => single_byte_term!(encoding_rs::ISO_8859_4, b"-D", iso2022),
        "144" => single_byte_term!(encoding_rs::ISO_8859_5, b"-L", iso2022),
        "127" => single_byte_term!(encoding_rs::ISO_8859_6, b"-G", iso2022),
        "126" => single_byte_term!(encoding_rs::ISO_8859_7, b"-F", iso2022),
        "138" => single_byte_term!(encoding_rs::ISO_8859_8, b"-H", iso2022),
        // ISO 8859-9 right half == windows-1254 0xA0..=0xFF
        "148" => single_byte_term!(encoding_rs::WINDOWS_1254, b"-M", iso2022),
        "203" => single_byte_term!(encoding_rs::ISO_8859_15, b"-b", iso2022),
        // TIS 620-2533 right half == windows-874 0xA0..=0xFF
        "166" => single_byte_term!(encoding_rs::WINDOWS_874, b"-T", iso2022),
        "13" => {
            static D: [Designation; 2] = [
                ROMAJI,
                Designation {
                    seq: b")I",
                    target: Target::G1(G1::Katakana),
                },
            ];
            Term {
                g0: G0::Romaji,
                g1: Some(G1::Katakana),
                designations: &D,
                iso2022,
            }
        }
        "87" if iso2022 => {
            static D: [Designation; 1] = [Designation {
                seq: b"$B",
                target: Target::G0(G0::Jis0208),
            }];
            // a double-byte G0 is never active at the start of a value
            Term {
                g0: G0::Ascii,
                g1: None,
                designations: &D,
                iso2022,
            }
        }
        "159" if iso2022 => {
            static D: [Designation; 1] = [Designation {
                seq: b"$(D",
                target: Target::G0(G0::Jis0212),
            }];
            Term {
                g0: G0::Ascii,
                g1: None,
                designations: &D,
                iso2022,
            }
        }
        "149" if iso2022 => {
            static D: [Designation; 1] = [Designation {
                seq: b"$)C",
                target: Target::G1(G1::Ksx1001),
            }];
            Term {
                g0: G0::Ascii,
                g1: Some(G1::Ksx1001),
                designations: &D,
                iso2022,
            }
        }
        "58" if iso2022 => {
            static D: [Designation; 1] = [Designation {
                seq: b"$)A",
                target: Target::G1(G1::Gb2312),
            }];
            Term {
                g0: G0::Ascii,
                g1: Some(G1::Gb2312),
                designations: &D,
                iso2022,
            }
        }
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Single-byte and ISO 2022 character sets.
    Iso2022 {
        g0: G0,
        g1: Option<G1>,
        /// Escape sequences allowed in values (empty: no code extensions).
        designations: Vec<Designation>,
        /// Candidate code elements for the encoder, in declaration order.
        elements: Vec<Target>,
    },
    /// ISO_IR 192, GB18030, GBK: the whole value in one code page.
    Whole(&'static Encoding),
}

/// A parsed Specific Character Set.
#[derive(Debug, Clone, PartialEq)]
pub struct CharacterSet {
    kind: Kind,
}

impl Default for CharacterSet {
    /// The default repertoire (ISO-IR 6), i.e. no Specific Character Set.
    fn default() -> Self {
        CharacterSet {
            kind: Kind::Iso2022 {
                g0: G0::Ascii,
                g1: None,
                designations: Vec::new(),
                elements: Vec::new(),
            },
        }
    }
}

/// The bytes that end a component or value of `vr`: the code elements of value 1 are active
/// again after them (PS3.5 6.1.2.5.3). Control characters (TAB, LF, FF, CR) always are.
pub fn delimiters(vr: VR) -> &'static [u8] {
    match vr {
        VR::PN => b"^=\\",
        VR::LO | VR::SH | VR::UC => b"\\",
        _ => b"",
    }
}

/// Text VRs whose values are decoded with the Specific Character Set.
pub fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::PN | VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC
    )
}

fn is_reset_control(b: u8) -> bool {
    matches!(b, 0x09 | 0x0A | 0x0C | 0x0D)
}

impl CharacterSet {
    /// Parse the values of (0008,0005). Leading/trailing spaces are ignored; an empty
    /// value 1 is ISO-IR 6.
    pub fn from_terms<S: AsRef<str>>(terms: &[S]) -> Result<CharacterSet, CharsetError> {
        let terms: Vec<&str> = terms
            .iter()
            .map(|t| t.as_ref().trim_matches([' ', '\0']))
            .collect();
        // trailing empty values carry nothing
        let n = terms
            .iter()
            .rposition(|t| !t.is_empty())
            .map_or(0, |i| i + 1);
        let terms = &terms[..n];
        if terms.is_empty() {
            return Ok(CharacterSet::default());
        }
        if let Some(enc) = unicode_term(terms[0]) {
            if terms.len() > 1 {
                return Err(CharsetError::NoExtensions(terms[0].to_owned()));
            }
            return Ok(CharacterSet {
                kind: Kind::Whole(enc),
            });
        }
        let mut designations = vec![ASCII, ROMAJI];
        let mut elements = Vec::new();
        let mut iso2022 = terms.len() > 1;
        let (mut g0, mut g1) = (G0::Ascii, None);
        for (i, t) in terms.iter().enumerate() {
            if t.is_empty() && i == 0 {
                iso2022 = true;
                continue;
            }
            let Some(term) = term(t) else {
                if unicode_term(t).is_some() {
                    return Err(CharsetError::NoExtensions((*t).to_owned()));
                }
                return Err(CharsetError::UnknownTerm(shown(t)));
            };
            iso2022 |= term.iso2022;
            if i == 0 {
                g0 = term.g0;
                g1 = term.g1;
            }
            for d in term.designations {
                if !designations.contains(d) {
                    designations.push(*d);
                }
                if !elements.contains(&d.target) {
                    elements.push(d.target);
                }
            }
        }
        if !iso2022 {
            designations.clear();
        }
        Ok(CharacterSet {
            kind: Kind::Iso2022 {
                g0,
                g1,
                designations,
                elements,
            },
        })
    }

    /// Decode `raw` (a whole element value, all values and their `\` separators) of an
    /// element of `vr`.
    pub fn decode(&self, raw: &[u8], vr: VR) -> Result<String, CharsetError> {
        let (g0_init, g1_init, designations) = match &self.kind {
            Kind::Whole(enc) => {
                if raw.contains(&0x1B) {
                    return Err(CharsetError::BadEscape);
                }
                return enc
                    .decode_without_bom_handling_and_without_replacement(raw)
                    .map(|s| s.into_owned())
                    .ok_or(CharsetError::BadCharacter);
            }
            Kind::Iso2022 {
                g0,
                g1,
                designations,
                ..
            } => (*g0, *g1, designations),
        };
        if raw.is_ascii() && !raw.contains(&0x1B) {
            // ASCII (and JIS X 0201 romaji, read as ASCII) only
            return Ok(raw.iter().map(|&b| char::from(b)).collect());
        }
        let delims = delimiters(vr);
        let (mut g0, mut g1) = (g0_init, g1_init);
        let mut out = String::with_capacity(raw.len() * 2);
        let mut buf: Vec<u8> = Vec::with_capacity(raw.len() + 8);
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            match b {
                0x1B => {
                    let rest = &raw[i + 1..];
                    let d = designations
                        .iter()
                        .find(|d| rest.starts_with(d.seq))
                        .ok_or(CharsetError::BadEscape)?;
                    match d.target {
                        Target::G0(x) => g0 = x,
                        Target::G1(x) => g1 = Some(x),
                    }
                    i += 1 + d.seq.len();
                }
                0x00..=0x20 => {
                    out.push(char::from(b));
                    if is_reset_control(b) {
                        (g0, g1) = (g0_init, g1_init);
                    }
                    i += 1;
                }
                0x21..=0x7F => match g0 {
                    G0::Ascii | G0::Romaji => {
                        out.push(char::from(b));
                        if delims.contains(&b) {
                            (g0, g1) = (g0_init, g1_init);
                        }
                        i += 1;
                    }
                    G0::Jis0208 | G0::Jis0212 => {
                        // a run of 7-bit pairs, decoded as EUC-JP in one call
                        let start = i;
                        while i < raw.len() && (0x21..=0x7E).contains(&raw[i]) {
                            i += 1;
                        }
                        let run = &raw[start..i];
                        if run.is_empty() || run.len() % 2 == 1 {
                            return Err(CharsetError::BadCharacter);
                        }
                        buf.clear();
                        for p in run.chunks_exact(2) {
                            if g0 == G0::Jis0212 {
                                buf.push(0x8F);
                            }
                            buf.push(p[0] | 0x80);
                            buf.push(p[1] | 0x80);
                        }
                        decode_into(encoding_rs::EUC_JP, &buf, &mut out)?;
                    }
                },
                0x80..=0xFF => {
                    let g1 = g1.ok_or(CharsetError::BadByte)?;
                    let start = i;
                    while i < raw.len() && raw[i] >= 0x80 {
                        i += 1;
                    }
                    let run = &raw[start..i];
                    match g1 {
                        G1::Single(enc) => {
                            if run.iter().any(|&c| c < 0xA0) {
                                return Err(CharsetError::BadByte); // C1 controls
                            }
                            decode_into(enc, run, &mut out)?;
                        }
                        G1::Katakana => {
                            if run.iter().any(|c| !(0xA1..=0xDF).contains(c)) {
                                return Err(CharsetError::BadByte);
                            }
                            decode_into(encoding_rs::SHIFT_JIS, run, &mut out)?;
                        }
                        G1::Ksx1001 | G1::Gb2312 => {
                            if run.len() % 2 == 1 || run.iter().any(|c| !(0xA1..=0xFE).contains(c))
                            {
                                return Err(CharsetError::BadCharacter);
                            }
                            let enc = if g1 == G1::Ksx1001 {
                                encoding_rs::EUC_KR
                            } else {
                                encoding_rs::GBK
                            };
                            decode_into(enc, run, &mut out)?;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Encode `text` as the value of an element of `vr`: ISO 2022 escape sequences where
    /// needed, back to the code elements of value 1 before every delimiter, control
    /// character and at the end.
    pub fn encode(&self, text: &str, vr: VR) -> Result<Vec<u8>, CharsetError> {
        let (g0_init, g1_init, elements, designations) = match &self.kind {
            Kind::Whole(enc) => {
                if text.contains('\u{1b}') {
                    return Err(CharsetError::Unencodable);
                }
                let (bytes, _, bad) = enc.encode(text);
                return if bad {
                    Err(CharsetError::Unencodable)
                } else {
                    Ok(bytes.into_owned())
                };
            }
            Kind::Iso2022 {
                g0,
                g1,
                elements,
                designations,
            } => (*g0, *g1, elements, designations),
        };
        if text.contains('\u{1b}') {
            return Err(CharsetError::Unencodable);
        }
        if text.is_ascii() {
            return Ok(text.as_bytes().to_vec());
        }
        let delims = delimiters(vr);
        let escape = |t: Target| -> Result<&'static [u8], CharsetError> {
            designations
                .iter()
                .find(|d| d.target == t)
                .map(|d| d.seq)
                .ok_or(CharsetError::Unencodable)
        };
        let (mut g0, mut g1) = (g0_init, g1_init);
        let mut out = Vec::with_capacity(text.len() + 8);
        let mut tmp = [0u8; 4];
        for c in text.chars() {
            if c.is_ascii() {
                let b = c as u8;
                let resets = is_reset_control(b) || delims.contains(&b);
                // the encoder only ever leaves the initial G0 for a double-byte set
                if g0 != g0_init {
                    out.push(0x1B);
                    out.extend_from_slice(escape(Target::G0(g0_init))?);
                    g0 = g0_init;
                }
                out.push(b);
                if resets {
                    g1 = g1_init;
                }
                continue;
            }
            let s = c.encode_utf8(&mut tmp);
            // the active G1 first, then every declared code element in order
            let mut candidates: Vec<Target> = Vec::with_capacity(elements.len() + 1);
            if let Some(x) = g1 {
                candidates.push(Target::G1(x));
            }
            candidates.extend(elements.iter().copied());
            let mut done = false;
            for t in candidates {
                let Some(bytes) = encode_in(t, s) else {
                    continue;
                };
                let active = match t {
                    Target::G0(x) => g0 == x,
                    Target::G1(x) => g1 == Some(x),
                };
                if !active {
                    out.push(0x1B);
                    out.extend_from_slice(escape(t)?);
                    match t {
                        Target::G0(x) => g0 = x,
                        Target::G1(x) => g1 = Some(x),
                    }
                }
                out.extend_from_slice(&bytes);
                done = true;
                break;
            }
            if !done {
                return Err(CharsetError::Unencodable);
            }
        }
        if g0 != g0_init {
            out.push(0x1B);
            out.extend_from_slice(escape(Target::G0(g0_init))?);
        }
        Ok(out)
    }
}

/// The bytes of one character in code element `t` (7-bit pairs for a double-byte G0,
/// GR bytes for G1), if it has the character.
fn encode_in(t: Target, s: &str) -> Option<Vec<u8>> {
    let (enc, ok): (&'static Encoding, fn(&[u8]) -> bool) = match t {
        Target::G0(G0::Jis0208) => (encoding_rs::EUC_JP, |b| {
            b.len() == 2 && b.iter().all(|c| (0xA1..=0xFE).contains(c))
        }),
        // encoding_rs (WHATWG) does not encode JIS X 0212; values are still decoded
        Target::G0(_) => return None,
        Target::G1(G1::Single(enc)) => (enc, |b| b.len() == 1 && b[0] >= 0xA0),
        Target::G1(G1::Katakana) => (encoding_rs::SHIFT_JIS, |b| {
            b.len() == 1 && (0xA1..=0xDF).contains(&b[0])
        }),
        Target::G1(G1::Ksx1001) => (encoding_rs::EUC_KR, |b| {
            b.len() == 2 && b.iter().all(|c| (0xA1..=0xFE).contains(c))
        }),
        Target::G1(G1::Gb2312) => (encoding_rs::GBK, |b| {
            b.len() == 2 && b.iter().all(|c| (0xA1..=0xFE).contains(c))
        }),
    };
    let (bytes, _, bad) = enc.encode(s);
    if bad || !ok(&bytes) {
        return None;
    }
    Some(match t {
        Target::G0(_) => bytes.iter().map(|b| b & 0x7F).collect(),
        Target::G1(_) => bytes.into_owned(),
    })
}

fn decode_into(enc: &'static Encoding, bytes: &[u8], out: &mut String) -> Result<(), CharsetError> {
    let s = enc
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or(CharsetError::BadCharacter)?;
    out.push_str(&s);
    Ok(())
}

/// A term as it may appear in an error message: printable ASCII only, bounded.
fn shown(t: &str) -> String {
    t.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(32)
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    fn cs(terms: &[&str]) -> CharacterSet {
        CharacterSet::from_terms(terms).unwrap()
    }

    #[test]
    fn round_trips() {
        let cases: &[(&[&str], VR, &str, &[u8])] = &[
            (
                &["", "ISO 2022 IR 87"],
                VR::PN,
                "Yamada^Tarou=山田^太郎=やまだ^たろう",
                b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
            ),
            (
                &["ISO 2022 IR 13", "ISO 2022 IR 87"],
                VR::PN,
                "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
                b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
            ),
            (
                &["", "ISO 2022 IR 149"],
                VR::PN,
                "Hong^Gildong=洪^吉洞=홍^길동",
                b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
            ),
            (&["ISO_IR 100"], VR::PN, "Buc^Jérôme", b"Buc^J\xe9r\xf4me"),
            (&["ISO_IR 144"], VR::PN, "Люкceмбypг", b"\xbb\xee\xdace\xdc\xd1yp\xd3"),
            (&["GB18030"], VR::PN, "Wang^XiaoDong=王^小东=", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="),
            (&["ISO_IR 192"], VR::LO, "山田", "山田".as_bytes()),
            (
                &["", "ISO 2022 IR 58"],
                VR::LO,
                "王\\小",
                b"\x1b$)A\xcd\xf5\\\x1b$)A\xd0\xa1",
            ),
        ];
        for (terms, vr, text, raw) in cases {
            let c = cs(terms);
            assert_eq!(c.decode(raw, *vr).unwrap(), *text, "{terms:?}");
            let enc = c.encode(text, *vr).unwrap();
            assert_eq!(c.decode(&enc, *vr).unwrap(), *text, "{terms:?}");
        }
        // chrH32's ESC ( B after kanji is accepted although IR 6 is not declared
        let h32 = cs(&["ISO 2022 IR 13", "ISO 2022 IR 87"]);
        assert_eq!(
            h32.decode(
                b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B",
                VR::PN
            )
            .unwrap(),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"
        );
    }

    #[test]
    fn encoder_returns_to_value_1_before_delimiters() {
        let c = cs(&["", "ISO 2022 IR 87"]);
        assert_eq!(
            c.encode("山\\田", VR::LO).unwrap(),
            b"\x1b$B;3\x1b(B\\\x1b$BED\x1b(B"
        );
        // LT: backslash is text, but CR/LF still end the double-byte run
        assert_eq!(c.encode("山\r\n", VR::LT).unwrap(), b"\x1b$B;3\x1b(B\r\n");
        let k = cs(&["", "ISO 2022 IR 149"]);
        // after '^' the G1 designation is gone: designated again
        assert_eq!(
            k.encode("홍^홍", VR::PN).unwrap(),
            b"\x1b$)C\xc8\xab^\x1b$)C\xc8\xab"
        );
    }

    #[test]
    fn broken_values_are_errors() {
        let j = cs(&["", "ISO 2022 IR 87"]);
        for bad in [
            &b"\x1b$B;3E\x1b(B"[..], // half a kanji
            b"\x1b$A;3\x1b(B",       // undeclared / unknown escape
            b"\x1b",                 // truncated escape
            b"\xb3",                 // GR byte, no G1
            b"\x1b$)C\xb1\xe8",      // KS X 1001 not declared
        ] {
            assert!(j.decode(bad, VR::PN).is_err(), "{bad:?}");
        }
        assert!(cs(&["ISO_IR 100"]).decode(b"\x1b$B;3", VR::LO).is_err());
        assert!(cs(&["ISO_IR 100"]).decode(b"\x85", VR::LO).is_err());
        assert!(cs(&["ISO_IR 192"]).decode(b"Caf\xe9", VR::LO).is_err());
        assert!(cs(&["ISO_IR 13"]).decode(b"\xe0\xa0", VR::LO).is_err());
        assert!(cs(&[]).decode(b"J\xe9r\xf4me", VR::PN).is_err());
        assert!(cs(&["", "ISO 2022 IR 149"])
            .decode(b"\x1b$)C\xb1", VR::PN)
            .is_err());
        assert!(CharacterSet::from_terms(&["ISO_IR 999"]).is_err());
        assert!(CharacterSet::from_terms(&["ISO_IR 192", "ISO 2022 IR 87"]).is_err());
        assert!(CharacterSet::from_terms(&["ISO 2022 IR 6", "ISO 2022 IR 159"]).is_ok());
        // a character outside the declared sets cannot be written
        assert!(cs(&["ISO_IR 100"]).encode("山", VR::LO).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const VRS: [VR; 7] = [VR::PN, VR::LO, VR::SH, VR::ST, VR::LT, VR::UT, VR::UC];

    /// Character sets of every kind: single-byte, ISO 2022 multi-byte,
    /// whole-value Unicode/GB, and combinations with code extensions.
    fn sets() -> impl Strategy<Value = Vec<&'static str>> {
        prop::sample::select(vec![
            vec![],
            vec!["ISO_IR 100"],
            vec!["ISO_IR 144"],
            vec!["ISO_IR 192"],
            vec!["GB18030"],
            vec!["GBK"],
            vec!["ISO_IR 13"],
            vec!["", "ISO 2022 IR 87"],
            vec!["ISO 2022 IR 13", "ISO 2022 IR 87"],
            vec!["ISO 2022 IR 13", "ISO 2022 IR 87", "ISO 2022 IR 159"],
            vec!["", "ISO 2022 IR 149"],
            vec!["", "ISO 2022 IR 58"],
            vec!["ISO 2022 IR 100", "ISO 2022 IR 126"],
            vec!["ISO 2022 IR 6", "ISO 2022 IR 166"],
        ])
    }

    /// Text mixing ASCII, Latin-1, Greek, Cyrillic, kana, kanji, hangul,
    /// hanzi and the PN / multi-value delimiters.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                'A', 'z', '0', ' ', '^', '=', '\\', 'é', 'ô', 'Ω', 'Ж', 'ｱ', 'ﾀ', 'や', '山', '田',
                '홍', '길', '王', '东', '\u{7f}', '\u{1b}', '\t', '€',
            ]),
            0..24,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    /// Escape sequences (declared or not, cut short), double-byte halves,
    /// delimiters and control characters.
    fn escapes() -> Vec<&'static [u8]> {
        let all: [&'static [u8]; 18] = [
            b"\x1b$B",
            b"\x1b(B",
            b"\x1b(J",
            b"\x1b$)C",
            b"\x1b$)A",
            b"\x1b$(D",
            b"\x1b-A",
            b"\x1b)I",
            b"\x1b$",
            b"\x1b",
            b";3",
            b"\xb0\xa1",
            b"\xff",
            b"^",
            b"=",
            b"\\",
            b"\r\n",
            b"A",
        ];
        all.to_vec()
    }

    proptest! {
        /// Arbitrary bytes under every character set: an answer, never a
        /// panic; what decodes and encodes again decodes to the same text.
        #[test]
        fn decode_never_panics(terms in sets(), vr in prop::sample::select(VRS.to_vec()),
                               raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let cs = CharacterSet::from_terms(&terms).unwrap();
            if let Ok(text) = cs.decode(&raw, vr) {
                if let Ok(bytes) = cs.encode(&text, vr) {
                    prop_assert_eq!(cs.decode(&bytes, vr).unwrap(), text);
                }
            }
        }

        /// Bytes built around escape sequences (declared or not, cut short)
        /// are an answer, never a panic.
        #[test]
        fn escapes_never_panic(terms in sets(), vr in prop::sample::select(VRS.to_vec()),
                               parts in prop::collection::vec(prop::sample::select(escapes()), 0..16)) {
            let raw: Vec<u8> = parts.concat();
            let cs = CharacterSet::from_terms(&terms).unwrap();
            let _ = cs.decode(&raw, vr);
        }

        /// Text that encodes decodes back to itself (the round trip the
        /// engine relies on when it writes a kept or replaced value).
        #[test]
        fn encode_round_trips(terms in sets(), vr in prop::sample::select(VRS.to_vec()), t in text()) {
            let cs = CharacterSet::from_terms(&terms).unwrap();
            if let Ok(bytes) = cs.encode(&t, vr) {
                prop_assert_eq!(cs.decode(&bytes, vr).unwrap(), t);
            }
        }

        /// Arbitrary terms: a character set or an error, never a panic.
        #[test]
        fn terms_never_panic(terms in prop::collection::vec("\\PC{0,20}", 0..4)) {
            let _ = CharacterSet::from_terms(&terms);
        }
    }
}
