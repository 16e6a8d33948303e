//! The gateway's use of the structure guard ([`mado_core::guard`]): every
//! DICOM byte stream from outside is walked element header by element
//! header (values sought over, nothing allocated from a declared length,
//! iterative) before anything parses it whole or recursively.
//!
//! Refused, with an error naming the problem: sequences nested deeper than
//! [`MAX_DEPTH`] (dicom-rs parses and drops nested sequences recursively: a
//! few thousand levels overflow a thread's stack and abort the process); a
//! declared length past the bytes actually there (or past the enclosing item
//! or sequence); an unclosed sequence or a misplaced delimiter; a deflated
//! data set inflating to more than [`MAX_INFLATED`] bytes.
//!
//! Used by the receive path (`spool`: one walk per data set before it is
//! acknowledged), DIMSE command sets (`dimse`), storage commitment data
//! sets (`commitment`), and before de-identification (`upload`,
//! `deid_cmd`) on the whole Part 10 file.

pub use mado_core::guard::GuardError;
use mado_core::guard::Limits;
use std::io::{Cursor, Read, Seek};

/// Deepest sequence nesting accepted: the de-identification engine's own
/// limit (a deeper instance could never be de-identified anyway).
pub const MAX_DEPTH: usize = mado_core::deid::MAX_DEPTH;
/// Largest inflated size of a deflated data set (Deflated Explicit VR
/// Little Endian carries small, non-image objects; a "deflate bomb" of
/// 510 KiB inflates to 512 MiB).
pub const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// The gateway's limits.
pub fn limits() -> Limits {
    Limits {
        max_depth: MAX_DEPTH,
        max_inflated: MAX_INFLATED,
        ..Limits::default()
    }
}

/// Walk the `len` bytes of a data set encoded in `ts_uid`, found in `src`
/// from byte `start`.
pub fn check<R: Read + Seek>(src: R, start: u64, len: u64, ts_uid: &str) -> Result<(), GuardError> {
    mado_core::guard::check(src, start, len, ts_uid, &limits()).map(drop)
}

/// [`check`] of a whole in-memory data set.
pub fn check_bytes(data: &[u8], ts_uid: &str) -> Result<(), GuardError> {
    check(Cursor::new(data), 0, data.len() as u64, ts_uid)
}

/// [`check_bytes`] of a DIMSE command set (always Implicit VR Little Endian).
pub fn check_command(data: &[u8]) -> Result<(), GuardError> {
    check_bytes(data, dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN)
}

/// A whole Part 10 file in memory (preamble optional): its file meta group,
/// then its data set in the transfer syntax the meta group names.
pub fn check_part10(bytes: &[u8]) -> Result<(), GuardError> {
    mado_core::guard::check_part10(bytes, &limits()).map(drop)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dicom_dictionary_std::uids;

    /// `depth` nested undefined-length sequences (explicit or implicit VR
    /// little endian), each in one undefined-length item.
    pub(crate) fn nested(depth: usize, explicit: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            if explicit {
                // (0040,A730) Content Sequence SQ, undefined length
                out.extend_from_slice(b"\x40\x00\x30\xa7SQ\0\0\xff\xff\xff\xff");
            } else {
                out.extend_from_slice(b"\x40\x00\x30\xa7\xff\xff\xff\xff");
            }
            out.extend_from_slice(b"\xfe\xff\x00\xe0\xff\xff\xff\xff");
        }
        for _ in 0..depth {
            out.extend_from_slice(b"\xfe\xff\x0d\xe0\0\0\0\0");
            out.extend_from_slice(b"\xfe\xff\xdd\xe0\0\0\0\0");
        }
        out
    }

    pub(crate) fn deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn depth_is_capped_in_every_encoding() {
        let (ex, im, de) = (
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        );
        check_bytes(&nested(MAX_DEPTH, true), ex).unwrap();
        check_bytes(&nested(MAX_DEPTH, false), im).unwrap();
        check_bytes(&deflate(&nested(MAX_DEPTH, true)), de).unwrap();
        for d in [MAX_DEPTH + 1, 10_000] {
            let e = check_bytes(&nested(d, true), ex).unwrap_err();
            assert!(matches!(e, GuardError::TooDeep { .. }), "{e}");
            let e = check_bytes(&nested(d, false), im).unwrap_err();
            assert!(matches!(e, GuardError::TooDeep { .. }), "{e}");
            let e = check_bytes(&deflate(&nested(d, true)), de).unwrap_err();
            assert!(matches!(e, GuardError::TooDeep { .. }), "{e}");
        }
        // a command set nested 2,000 deep
        assert!(matches!(
            check_command(&nested(2000, false)),
            Err(GuardError::TooDeep { .. })
        ));
    }

    #[test]
    fn defined_length_nesting_counts_too() {
        // (0040,A730) SQ defined length, holding one defined-length item
        fn wrap(inner: Vec<u8>) -> Vec<u8> {
            let mut item = b"\xfe\xff\x00\xe0".to_vec();
            item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
            item.extend_from_slice(&inner);
            let mut sq = b"\x40\x00\x30\xa7SQ\0\0".to_vec();
            sq.extend_from_slice(&(item.len() as u32).to_le_bytes());
            sq.extend_from_slice(&item);
            sq
        }
        let ex = uids::EXPLICIT_VR_LITTLE_ENDIAN;
        let mut ds = b"\x08\x00\x16\x00UI\x04\x001.2\0".to_vec();
        for _ in 0..MAX_DEPTH {
            ds = wrap(ds);
        }
        check_bytes(&ds, ex).unwrap();
        let deeper = wrap(ds.clone());
        assert!(matches!(
            check_bytes(&deeper, ex),
            Err(GuardError::TooDeep { .. })
        ));
        // an item longer than its sequence
        let mut bad = ds.clone();
        bad[8] = bad[8].wrapping_sub(1);
        assert!(matches!(
            check_bytes(&bad, ex),
            Err(GuardError::Malformed(_))
        ));
    }

    #[test]
    fn declared_lengths_beyond_the_data_are_refused() {
        let (ex, im) = (
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        );
        // (0008,0016) UI declaring 0xFFFFFFF0 bytes (explicit: UN, 4-byte length)
        let e = check_bytes(b"\x08\x00\x16\x00UN\0\0\xf0\xff\xff\xff1.2", ex).unwrap_err();
        assert!(matches!(e, GuardError::Malformed(_)), "{e}");
        let e = check_bytes(b"\x08\x00\x16\x00\xf0\xff\xff\xff1.2", im).unwrap_err();
        assert!(matches!(e, GuardError::Malformed(_)), "{e}");
        // a C-ECHO command with one such element
        let e = check_command(b"\x00\x00\x00\x01\xf0\xff\xff\xff\x01\x00").unwrap_err();
        assert!(matches!(e, GuardError::Malformed(_)), "{e}");
        // random bytes
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(check_bytes(&noise, ex).is_err());
        assert!(check_bytes(&noise, im).is_err());
    }

    #[test]
    fn deflate_bomb_is_refused_without_inflating_it_in_memory() {
        let de = uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        // (7FE0,0010) OB of MAX_INFLATED + 1 MiB zeros
        let n = MAX_INFLATED as usize + (1 << 20);
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        use std::io::Write;
        e.write_all(b"\xe0\x7f\x10\x00OB\0\0").unwrap();
        e.write_all(&(n as u32).to_le_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..n >> 20 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
        let err = check_bytes(&bomb, de).unwrap_err();
        assert!(matches!(err, GuardError::InflatedTooLarge { .. }), "{err}");
        // garbage that does not inflate
        assert!(check_bytes(b"\xff\xff\xff\xff", de).is_err());
        // in a Part 10 file (as found in the spool) too
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        dicom_object::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.3")
            .transfer_syntax(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
            .build()
            .unwrap()
            .write(&mut file)
            .unwrap();
        file.extend_from_slice(&bomb);
        let err = check_part10(&file).unwrap_err();
        assert!(matches!(err, GuardError::InflatedTooLarge { .. }), "{err}");
    }
}
