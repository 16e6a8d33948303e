//! Structure pre-check for untrusted DICOM, run before any full parse.
//!
//! dicom-rs parses sequences recursively (a data set nested 10,000 deep
//! overflows the stack and aborts the process), allocates a value's
//! declared length before reading it, and inflates a Deflated data set
//! whole. [`check`] walks every element header with dicom-rs's
//! [`StatefulDecoder`], seeking over values instead of reading them, and
//! refuses, with a [`GuardError`] and never a panic:
//! - sequences nested deeper than [`Limits::max_depth`];
//! - a declared length longer than [`Limits::max_value_len`] or than the
//!   bytes actually left (in the data set, and in the enclosing
//!   defined-length sequence or item);
//! - more than [`Limits::max_elements`] element headers;
//! - a sequence or item never closed, or a delimiter out of place;
//! - for Deflated transfer syntaxes, a data set inflating to more than
//!   [`Limits::max_inflated`] bytes (inflated through `take(cap + 1)`, so
//!   at most `cap + 1` bytes are ever held), then walked like the others.
//!
//! Undefined-length elements other than encapsulated Pixel Data are walked
//! as sequences, as dicom-rs's parser reads them.
//!
//! [`check_part10`] does the same for a whole Part 10 file in memory: the
//! file meta group is walked (bounded) before dicom-rs reads it.

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use dicom_core::header::{HasLength, Header};
use dicom_core::{Tag, VR};
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_encoding::TransferSyntax;
use dicom_object::meta::FileMetaTable;
use dicom_parser::stateful::decode::{StatefulDecode, StatefulDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Pixel Data (7FE0,0010).
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
/// Explicit VR Little Endian, the encoding of the file meta group and of a
/// Deflated data set once inflated.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// A file meta element longer than this is refused (they are UIDs and AE
/// titles; Private Information is the only free-form one).
const MAX_META_VALUE: u64 = 64 * 1024;

/// What [`check`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest sequence nesting accepted (a top-level sequence is depth 1).
    pub max_depth: usize,
    /// Longest declared value length accepted (on top of "no longer than
    /// the bytes left").
    pub max_value_len: u64,
    /// Largest inflated size of a Deflated data set.
    pub max_inflated: u64,
    /// Most element headers (items and delimiters included) in one data
    /// set: each costs far more in a parsed object than on the wire.
    pub max_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_value_len: u64::from(u32::MAX - 1),
            max_inflated: 256 * 1024 * 1024,
            max_elements: 4_000_000,
        }
    }
}

/// Why a data set was refused. Messages name structure only, never values.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("I/O error while checking the data set: {0}")]
    Io(#[from] io::Error),
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(&'static str),
    #[error("unreadable file meta information: {0}")]
    Meta(String),
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("sequences nested deeper than {max}")]
    TooDeep { max: usize },
    #[error("an element declares {len} bytes, more than the {max} accepted")]
    ValueTooLong { len: u64, max: u64 },
    #[error("more than {max} data elements")]
    TooManyElements { max: u64 },
    #[error("the deflated data set inflates to more than {max} bytes")]
    InflatedTooLarge { max: u64 },
    #[error("the deflated data set cannot be inflated: {0}")]
    Deflate(String),
    #[error("data set truncated or malformed: {0}")]
    Malformed(&'static str),
}

/// What a successful walk saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walked {
    /// Element headers read (items and delimiters included).
    pub elements: u64,
    /// Deepest sequence nesting met.
    pub depth: usize,
    /// Inflated size, for a Deflated transfer syntax.
    pub inflated: Option<u64>,
}

/// The registry's entry for `uid` (trailing NUL / space ignored), if it can
/// be read.
pub fn transfer_syntax(uid: &str) -> Option<&'static TransferSyntax> {
    TransferSyntaxRegistry
        .get(uid.trim_end_matches(['\0', ' ']))
        .filter(|ts| !ts.is_unsupported())
}

/// Walk the data set in `src` from byte `start`, `len` bytes long, encoded
/// in transfer syntax `ts_uid`, against `limits`. Element values are sought
/// over, never read (except the whole data set of a Deflated transfer
/// syntax, inflated in memory up to [`Limits::max_inflated`]).
pub fn check<R: Read + Seek>(
    mut src: R,
    start: u64,
    len: u64,
    ts_uid: &str,
    limits: &Limits,
) -> Result<Walked, GuardError> {
    let ts = transfer_syntax(ts_uid)
        .ok_or_else(|| GuardError::UnsupportedTransferSyntax(printable(ts_uid)))?;
    if matches!(ts.codec(), Codec::Dataset(_)) {
        src.seek(SeekFrom::Start(start))?;
        let inflated = inflate(src.take(len), limits.max_inflated)?;
        let n = inflated.len() as u64;
        let plain = transfer_syntax(EXPLICIT_VR_LE).ok_or(GuardError::Malformed("registry"))?;
        let mut walked = walk(Cursor::new(inflated), 0, n, plain, limits)?;
        walked.inflated = Some(n);
        return Ok(walked);
    }
    walk(src, start, len, ts, limits)
}

/// Check a whole Part 10 file held in memory: preamble and `DICM`, the file
/// meta group (bounded walk, then dicom-rs reads it), then the data set in
/// the transfer syntax the meta group names. Returns the meta table and
/// the offset of the data set.
pub fn check_part10(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(FileMetaTable, u64, Walked), GuardError> {
    // the 128-byte preamble, or (as dicom-rs also reads) none
    let magic = if bytes.get(128..132) == Some(b"DICM") {
        128
    } else if bytes.starts_with(b"DICM") {
        0
    } else {
        return Err(GuardError::NotPart10("no DICM prefix"));
    };
    let meta_end = meta_group_end(bytes, magic + 4)?;
    let meta_bytes = bytes
        .get(magic..meta_end)
        .ok_or(GuardError::Malformed("file meta group"))?;
    let meta =
        FileMetaTable::from_reader(meta_bytes).map_err(|e| GuardError::Meta(e.to_string()))?;
    let start = meta_end as u64;
    let len = (bytes.len() - meta_end) as u64;
    let walked = check(
        Cursor::new(bytes),
        start,
        len,
        meta.transfer_syntax(),
        limits,
    )?;
    Ok((meta, start, walked))
}

/// Offset where the file meta group (group 0002, explicit VR LE, from
/// byte `from`) ends: every header is read, each value length checked
/// against what is left and [`MAX_META_VALUE`].
fn meta_group_end(bytes: &[u8], from: usize) -> Result<usize, GuardError> {
    let ts = transfer_syntax(EXPLICIT_VR_LE).ok_or(GuardError::Malformed("registry"))?;
    let end = bytes.len() as u64;
    let mut pos = from as u64;
    let mut count = 0u32;
    loop {
        // peek the group number: the meta group ends at the first other one
        let at = usize::try_from(pos).map_err(|_| GuardError::Malformed("file meta group"))?;
        match bytes.get(at..at + 2) {
            Some(g) if u16::from_le_bytes([g[0], g[1]]) == 0x0002 => {}
            _ => break,
        }
        count += 1;
        if count > 64 {
            return Err(GuardError::Meta("too many file meta elements".into()));
        }
        let mut r = Cursor::new(bytes);
        r.set_position(pos);
        let mut dec = StatefulDecoder::new_with_ts(r, ts, pos)
            .map_err(|e| GuardError::Meta(e.to_string()))?;
        let h = dec
            .decode_header()
            .map_err(|_| GuardError::Malformed("file meta element header"))?;
        if h.length().is_undefined() {
            return Err(GuardError::Meta(
                "undefined length in the file meta group".into(),
            ));
        }
        let n = u64::from(h.length().0);
        if n > MAX_META_VALUE {
            return Err(GuardError::ValueTooLong {
                len: n,
                max: MAX_META_VALUE,
            });
        }
        let to = dec
            .position()
            .checked_add(n)
            .filter(|&to| to <= end)
            .ok_or(GuardError::Malformed(
                "a file meta element runs past the end",
            ))?;
        pos = to;
    }
    usize::try_from(pos).map_err(|_| GuardError::Malformed("file meta group"))
}

/// Inflate raw deflate data, holding at most `cap + 1` bytes.
fn inflate<R: Read>(src: R, cap: u64) -> Result<Vec<u8>, GuardError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(src)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| GuardError::Deflate(e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(GuardError::InflatedTooLarge { max: cap });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Item,
    /// Encapsulated Pixel Data: its items are raw fragments.
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    kind: Kind,
    /// End offset of a defined-length container; `None` = closed by a
    /// delimiter.
    end: Option<u64>,
}

fn walk<R: Read + Seek>(
    mut src: R,
    start: u64,
    len: u64,
    ts: &TransferSyntax,
    limits: &Limits,
) -> Result<Walked, GuardError> {
    let bad = GuardError::Malformed;
    src.seek(SeekFrom::Start(start))?;
    let end = start
        .checked_add(len)
        .ok_or(bad("length past the addressable range"))?;
    let reader = io::BufReader::with_capacity(16 * 1024, src);
    let mut dec = StatefulDecoder::new_with_ts(reader, ts, start)
        .map_err(|_| GuardError::UnsupportedTransferSyntax(printable(ts.uid())))?;
    // `dec.position()` does not move on `seek`: what was sought over is
    // added here.
    let mut sought = 0u64;
    let mut open: Vec<Open> = Vec::new();
    let mut depth = 0usize;
    let mut walked = Walked::default();
    loop {
        let pos = dec.position() + sought;
        // close the defined-length containers ending here
        while let Some(&Open { end: Some(e), kind }) = open.last() {
            if pos < e {
                break;
            }
            if pos > e {
                return Err(bad("an element runs past its sequence or item"));
            }
            open.pop();
            if kind == Kind::Sequence {
                depth -= 1;
            }
        }
        if pos >= end {
            if pos > end {
                return Err(bad("an element runs past the end"));
            }
            break;
        }
        walked.elements += 1;
        if walked.elements > limits.max_elements {
            return Err(GuardError::TooManyElements {
                max: limits.max_elements,
            });
        }
        let h = dec.decode_header().map_err(|_| bad("element header"))?;
        let pos = dec.position() + sought;
        // bytes left in the innermost defined-length container (or data set)
        let limit = open
            .iter()
            .rev()
            .find_map(|o| o.end)
            .unwrap_or(end)
            .min(end);
        let room = limit
            .checked_sub(pos)
            .ok_or(bad("an element header runs past the end"))?;
        let undefined = h.length().is_undefined();
        let n = u64::from(h.length().0);
        if !undefined {
            if n > limits.max_value_len {
                return Err(GuardError::ValueTooLong {
                    len: n,
                    max: limits.max_value_len,
                });
            }
            if n > room {
                return Err(bad("a declared length runs past the end"));
            }
        }
        let defined_end = (!undefined).then_some(pos + n);
        let top = open.last().map(|o| o.kind);
        if h.is_item() {
            match top {
                Some(Kind::Fragments) => {
                    if undefined {
                        return Err(bad("undefined-length pixel data fragment"));
                    }
                    dec.seek(pos + n).map_err(|_| bad("seek"))?;
                    sought += n;
                }
                Some(Kind::Sequence) => open.push(Open {
                    kind: Kind::Item,
                    end: defined_end,
                }),
                _ => return Err(bad("an item outside a sequence")),
            }
        } else if h.is_item_delimiter() {
            match open.last() {
                Some(Open {
                    kind: Kind::Item,
                    end: None,
                }) => {
                    open.pop();
                }
                _ => return Err(bad("an item delimiter without an open item")),
            }
        } else if h.is_sequence_delimiter() {
            match open.last() {
                Some(Open {
                    kind: k @ (Kind::Sequence | Kind::Fragments),
                    end: None,
                }) => {
                    if *k == Kind::Sequence {
                        depth -= 1;
                    }
                    open.pop();
                }
                _ => return Err(bad("a sequence delimiter without an open sequence")),
            }
        } else if matches!(top, Some(Kind::Sequence | Kind::Fragments)) {
            return Err(bad("a data element directly inside a sequence"));
        } else if undefined && h.tag() == PIXEL_DATA && h.vr() != VR::SQ {
            open.push(Open {
                kind: Kind::Fragments,
                end: None,
            });
        } else if undefined || h.vr() == VR::SQ {
            // dicom-rs reads every other undefined-length element as a
            // sequence
            depth += 1;
            walked.depth = walked.depth.max(depth);
            if depth > limits.max_depth {
                return Err(GuardError::TooDeep {
                    max: limits.max_depth,
                });
            }
            open.push(Open {
                kind: Kind::Sequence,
                end: defined_end,
            });
        } else {
            dec.seek(pos + n).map_err(|_| bad("seek"))?;
            sought += n;
        }
    }
    if !open.is_empty() {
        return Err(bad("a sequence or item is never closed"));
    }
    Ok(walked)
}

/// A transfer syntax UID from outside, safe to put in a message.
fn printable(uid: &str) -> String {
    uid.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

    /// Explicit VR LE element with a 2-byte length.
    fn short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    fn long_header(tag: (u16, u16), vr: &[u8; 2], len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    fn marker(element: u16, len: u32) -> Vec<u8> {
        let mut v = vec![0xFE, 0xFF];
        v.extend_from_slice(&element.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    /// Explicit VR LE: `depth` undefined-length sequences nested, each with
    /// one undefined-length item, a short string at the bottom.
    fn nested(depth: usize) -> Vec<u8> {
        let mut v = short((0x0008, 0x0060), b"CS", b"OT");
        for _ in 0..depth {
            v.extend(long_header((0x0040, 0x0275), b"SQ", u32::MAX));
            v.extend(marker(0xE000, u32::MAX));
        }
        v.extend(short((0x0010, 0x0010), b"PN", b"X^Y "));
        for _ in 0..depth {
            v.extend(marker(0xE00D, 0));
            v.extend(marker(0xE0DD, 0));
        }
        v
    }

    fn run(bytes: &[u8], ts: &str) -> Result<Walked, GuardError> {
        check(
            Cursor::new(bytes),
            0,
            bytes.len() as u64,
            ts,
            &Limits::default(),
        )
    }

    fn part10(ts: &str, dataset: &[u8]) -> Vec<u8> {
        let mut meta = Vec::new();
        meta.extend(long_header((0x0002, 0x0001), b"OB", 2));
        meta.extend_from_slice(&[0, 1]);
        meta.extend(short(
            (0x0002, 0x0002),
            b"UI",
            b"1.2.840.10008.5.1.4.1.1.7\0",
        ));
        meta.extend(short((0x0002, 0x0003), b"UI", b"1.2.3.4"));
        let mut t = ts.as_bytes().to_vec();
        if t.len() % 2 == 1 {
            t.push(0);
        }
        meta.extend(short((0x0002, 0x0010), b"UI", &t));
        meta.extend(short((0x0002, 0x0012), b"UI", b"1.2.3.4.5.6"));
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend(short(
            (0x0002, 0x0000),
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        ));
        f.extend(meta);
        f.extend_from_slice(dataset);
        f
    }

    #[test]
    fn accepts_nesting_up_to_the_limit() {
        let w = run(&nested(32), EXPLICIT_VR_LE).unwrap();
        assert_eq!(w.depth, 32);
        assert!(matches!(
            run(&nested(33), EXPLICIT_VR_LE),
            Err(GuardError::TooDeep { max: 32 })
        ));
    }

    #[test]
    fn refuses_ten_thousand_deep_without_recursion() {
        let bytes = nested(10_000);
        assert!(matches!(
            run(&bytes, EXPLICIT_VR_LE),
            Err(GuardError::TooDeep { .. })
        ));
        let deep = Limits {
            max_depth: 100_000,
            ..Limits::default()
        };
        // the walk itself is iterative: even allowed, 10,000 levels pass
        let w = check(
            Cursor::new(&bytes),
            0,
            bytes.len() as u64,
            EXPLICIT_VR_LE,
            &deep,
        )
        .unwrap();
        assert_eq!(w.depth, 10_000);
    }

    #[test]
    fn counts_defined_length_sequences_too() {
        // SQ (defined) > item (defined) > SQ (defined) > item > CS
        let leaf = short((0x0008, 0x0060), b"CS", b"OT");
        let mut item = marker(0xE000, leaf.len() as u32);
        item.extend(&leaf);
        let mut inner = long_header((0x0040, 0x0275), b"SQ", item.len() as u32);
        inner.extend(&item);
        let mut item2 = marker(0xE000, inner.len() as u32);
        item2.extend(&inner);
        let mut outer = long_header((0x0040, 0x0275), b"SQ", item2.len() as u32);
        outer.extend(&item2);
        outer.extend(short((0x0010, 0x0010), b"PN", b"AB"));
        assert_eq!(run(&outer, EXPLICIT_VR_LE).unwrap().depth, 2);
        let tight = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        assert!(matches!(
            check(
                Cursor::new(&outer),
                0,
                outer.len() as u64,
                EXPLICIT_VR_LE,
                &tight
            ),
            Err(GuardError::TooDeep { max: 1 })
        ));
    }

    #[test]
    fn refuses_lengths_past_the_end_and_open_sequences() {
        let mut v = long_header((0x0009, 0x1010), b"OB", 1000);
        v.extend_from_slice(&[0; 10]);
        assert!(matches!(
            run(&v, EXPLICIT_VR_LE),
            Err(GuardError::Malformed(_))
        ));
        let mut v = nested(3);
        v.truncate(v.len() - 8);
        assert!(matches!(
            run(&v, EXPLICIT_VR_LE),
            Err(GuardError::Malformed(_))
        ));
        // an element running past its defined-length item
        let leaf = short((0x0008, 0x0060), b"CS", b"OT");
        let mut item = marker(0xE000, 4);
        item.extend(&leaf);
        let mut sq = long_header((0x0040, 0x0275), b"SQ", item.len() as u32);
        sq.extend(&item);
        assert!(matches!(
            run(&sq, EXPLICIT_VR_LE),
            Err(GuardError::Malformed(_))
        ));
        let small = Limits {
            max_value_len: 8,
            ..Limits::default()
        };
        let mut v = long_header((0x0009, 0x1010), b"OB", 16);
        v.extend_from_slice(&[0; 16]);
        assert!(matches!(
            check(Cursor::new(&v), 0, v.len() as u64, EXPLICIT_VR_LE, &small),
            Err(GuardError::ValueTooLong { len: 16, max: 8 })
        ));
    }

    #[test]
    fn walks_implicit_vr_and_encapsulated_pixel_data() {
        // implicit VR: (0008,0060) CS "OT", (0040,0275) SQ undefined > item > end
        let mut v = Vec::new();
        v.extend_from_slice(&[0x08, 0, 0x60, 0, 2, 0, 0, 0, b'O', b'T']);
        v.extend_from_slice(&[0x40, 0, 0x75, 0x02, 0xFF, 0xFF, 0xFF, 0xFF]);
        v.extend(marker(0xE000, u32::MAX));
        v.extend_from_slice(&[0x08, 0, 0x60, 0, 2, 0, 0, 0, b'M', b'R']);
        v.extend(marker(0xE00D, 0));
        v.extend(marker(0xE0DD, 0));
        assert_eq!(run(&v, IMPLICIT).unwrap().depth, 1);
        // encapsulated pixel data in JPEG baseline
        let mut p = short((0x0028, 0x0010), b"US", &[1, 0]);
        p.extend(long_header((0x7FE0, 0x0010), b"OB", u32::MAX));
        p.extend(marker(0xE000, 0));
        p.extend(marker(0xE000, 4));
        p.extend_from_slice(&[1, 2, 3, 4]);
        p.extend(marker(0xE0DD, 0));
        let w = run(&p, "1.2.840.10008.1.2.4.50").unwrap();
        assert_eq!(w.depth, 0);
    }

    #[test]
    fn deflate_bomb_is_refused_quickly() {
        use std::io::Write;
        // 64 MiB of one element's zeros: a few tens of KiB deflated
        let mut plain = long_header((0x0009, 0x1010), b"OB", 64 << 20);
        plain.resize(plain.len() + (64 << 20), 0);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&plain).unwrap();
        let deflated = enc.finish().unwrap();
        drop(plain);
        assert!(deflated.len() < 1 << 20);
        let limits = Limits {
            max_inflated: 1 << 20,
            ..Limits::default()
        };
        let t = std::time::Instant::now();
        let r = check(
            Cursor::new(&deflated),
            0,
            deflated.len() as u64,
            DEFLATED,
            &limits,
        );
        assert!(matches!(r, Err(GuardError::InflatedTooLarge { max }) if max == 1 << 20));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // within the cap it is walked
        let ok = Limits {
            max_inflated: 65 << 20,
            ..Limits::default()
        };
        let w = check(
            Cursor::new(&deflated),
            0,
            deflated.len() as u64,
            DEFLATED,
            &ok,
        )
        .unwrap();
        assert_eq!(w.inflated, Some((64 << 20) + 12));
    }

    #[test]
    fn deflated_nesting_is_walked() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&nested(10_000)).unwrap();
        let d = enc.finish().unwrap();
        assert!(matches!(run(&d, DEFLATED), Err(GuardError::TooDeep { .. })));
        assert!(matches!(
            run(&[1, 2, 3], DEFLATED),
            Err(GuardError::Deflate(_)) | Err(GuardError::Malformed(_))
        ));
    }

    #[test]
    fn part10_files() {
        let ds = nested(2);
        let f = part10(EXPLICIT_VR_LE, &ds);
        let (meta, start, w) = check_part10(&f, &Limits::default()).unwrap();
        assert_eq!(meta.transfer_syntax(), EXPLICIT_VR_LE);
        assert_eq!(start as usize, f.len() - ds.len());
        assert_eq!(w.depth, 2);
        let f = part10(EXPLICIT_VR_LE, &nested(10_000));
        assert!(matches!(
            check_part10(&f, &Limits::default()),
            Err(GuardError::TooDeep { .. })
        ));
        assert!(matches!(
            check_part10(&f[..100], &Limits::default()),
            Err(GuardError::NotPart10(_))
        ));
        // without the preamble
        let g = part10(EXPLICIT_VR_LE, &ds);
        let (_, start, _) = check_part10(&g[128..], &Limits::default()).unwrap();
        assert_eq!(start as usize, g.len() - 128 - ds.len());
        // a meta element declaring 4 GiB
        let mut bad = vec![0u8; 128];
        bad.extend_from_slice(b"DICM");
        bad.extend(long_header((0x0002, 0x0001), b"OB", u32::MAX - 1));
        bad.extend_from_slice(&[0, 1]);
        assert!(check_part10(&bad, &Limits::default()).is_err());
        let f = part10("1.2.3.4.5", &ds);
        assert!(matches!(
            check_part10(&f, &Limits::default()),
            Err(GuardError::UnsupportedTransferSyntax(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for ts in [EXPLICIT_VR_LE, IMPLICIT, "1.2.840.10008.1.2.2", DEFLATED] {
                let _ = run(&bytes, ts);
            }
            let mut f = part10(EXPLICIT_VR_LE, &[]);
            f.extend_from_slice(&bytes);
            let _ = check_part10(&f, &Limits::default());
            let mut g = vec![0u8; 128];
            g.extend_from_slice(b"DICM");
            g.extend_from_slice(&bytes);
            let _ = check_part10(&g, &Limits::default());
        }

        #[test]
        fn mutated_valid_data_never_panics(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            depth in 0usize..40,
        ) {
            let mut bytes = nested(depth);
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let _ = run(&bytes, EXPLICIT_VR_LE);
            let _ = run(&bytes, IMPLICIT);
        }
    }
}
