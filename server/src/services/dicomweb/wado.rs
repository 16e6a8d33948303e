//! WADO-RS: metadata from the index (never the object store), instance
//! lookups for retrieval, and frame extraction from stored objects.

use super::cache::ByteLru;
use crate::db::entities::{instances, series};
use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationTrait,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What retrieval needs to know about one instance.
#[derive(Debug, Clone, FromQueryResult)]
pub struct InstanceRef {
    pub id: i64,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub object_key: String,
    pub sha256: String,
    pub transfer_syntax_uid: String,
    pub number_of_frames: i32,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    /// Object size in bytes.
    pub size: i64,
}

/// Instances of the (access-checked) study `study_id`, optionally narrowed
/// to one series and one instance, in series / instance-number order.
pub async fn instance_refs<C: ConnectionTrait>(
    db: &C,
    study_id: i64,
    series_uid: Option<&str>,
    sop: Option<&str>,
) -> Result<Vec<InstanceRef>, DbErr> {
    let mut q = instances::Entity::find()
        .select_only()
        .column(instances::Column::Id)
        .column(instances::Column::SopInstanceUid)
        .column(series::Column::SeriesUid)
        .column(instances::Column::ObjectKey)
        .column(instances::Column::Sha256)
        .column(instances::Column::TransferSyntaxUid)
        .column(instances::Column::NumberOfFrames)
        .column(instances::Column::Rows)
        .column(instances::Column::Columns)
        .column(instances::Column::Size)
        .join(JoinType::InnerJoin, instances::Relation::Series.def())
        .filter(series::Column::StudyId.eq(study_id));
    if let Some(s) = series_uid {
        q = q.filter(series::Column::SeriesUid.eq(s));
    }
    if let Some(s) = sop {
        q = q.filter(instances::Column::SopInstanceUid.eq(s));
    }
    q.order_by_asc(series::Column::SeriesNumber)
        .order_by_asc(instances::Column::SeriesId)
        .order_by_asc(instances::Column::InstanceNumber)
        .order_by_asc(instances::Column::Id)
        .into_model::<InstanceRef>()
        .all(db)
        .await
}

/// Cached metadata answers, keyed by a digest of the rows they were built
/// from (so a new instance in the series is a new key).
/// Held by `AppState` (`metadata_cache`), built in `Application::build`.
pub type MetadataCache = ByteLru<[u8; 32], Bytes>;
/// Default byte budget of [`MetadataCache`].
pub const METADATA_BYTES: usize = 256 * 1024 * 1024;

/// The digest of a metadata answer: base URL + every (SOP UID, object hash).
pub fn metadata_digest(base: &str, study_uid: &str, refs: &[InstanceRef]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"wado-metadata-v1\0");
    h.update(base.as_bytes());
    h.update(b"\0");
    h.update(study_uid.as_bytes());
    for r in refs {
        h.update(b"\0");
        h.update(r.sop_instance_uid.as_bytes());
        h.update(b"/");
        h.update(r.sha256.as_bytes());
    }
    h.finalize().into()
}

/// The JSON array of the instances' metadata, built by concatenating the
/// stored JSON text (no parse, no re-serialisation) and adding a
/// BulkDataURI for Pixel Data. Cached.
pub async fn metadata<C: ConnectionTrait>(
    db: &C,
    cache: &MetadataCache,
    base: &str,
    study_uid: &str,
    refs: &[InstanceRef],
) -> Result<(Bytes, String), DbErr> {
    let digest = metadata_digest(base, study_uid, refs);
    let etag = format!("\"m-{}\"", hex::encode(&digest[..16]));
    if let Some(hit) = cache.get(&digest) {
        return Ok(((*hit).clone(), etag));
    }
    let mut texts: std::collections::HashMap<i64, String> =
        std::collections::HashMap::with_capacity(refs.len());
    for chunk in refs.chunks(500) {
        let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
        let rows: Vec<(i64, String)> = instances::Entity::find()
            .select_only()
            .column(instances::Column::Id)
            .column(instances::Column::Metadata)
            .filter(instances::Column::Id.is_in(ids))
            .into_tuple()
            .all(db)
            .await?;
        texts.extend(rows);
    }
    let total: usize = texts.values().map(|t| t.len() + 200).sum();
    let mut out = String::with_capacity(total + 2);
    out.push('[');
    let mut first = true;
    for r in refs {
        let Some(text) = texts.get(&r.id) else {
            continue;
        };
        let text = text.trim();
        if !(text.starts_with('{') && text.ends_with('}')) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let has_pixels = r.rows.is_some() && !text.contains("\"7FE00010\"");
        if !has_pixels {
            out.push_str(text);
            continue;
        }
        let body = text[..text.len() - 1].trim_end();
        out.push_str(body);
        if body.len() > 1 {
            out.push(',');
        }
        let vr = if is_native(&r.transfer_syntax_uid) {
            "OW"
        } else {
            "OB"
        };
        out.push_str("\"7FE00010\":{\"vr\":\"");
        out.push_str(vr);
        out.push_str("\",\"BulkDataURI\":\"");
        out.push_str(base);
        out.push_str("/studies/");
        out.push_str(study_uid);
        out.push_str("/series/");
        out.push_str(&r.series_uid);
        out.push_str("/instances/");
        out.push_str(&r.sop_instance_uid);
        out.push_str("/bulkdata/7FE00010\"}}");
    }
    out.push(']');
    let bytes = Bytes::from(out);
    cache.insert(digest, Arc::new(bytes.clone()));
    Ok((bytes, etag))
}

impl InstanceRef {
    /// The object's size in memory once read for parsing: the stored size,
    /// except for a Deflated data set, which inflates to an unknown size
    /// (up to `[limits] dicom_max_inflated`): then `u64::MAX`, so that a
    /// budgeted job on it runs alone.
    pub fn parse_size(&self) -> u64 {
        if self.transfer_syntax_uid == "1.2.840.10008.1.2.1.99" {
            u64::MAX
        } else {
            u64::try_from(self.size).unwrap_or(0)
        }
    }
}

/// Uncompressed (native) transfer syntaxes.
pub fn is_native(ts: &str) -> bool {
    matches!(
        ts,
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    )
}

/// The media type of a frame in the compressed transfer syntax `ts`.
pub fn frame_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "video/mp4",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the object is not a readable DICOM file: {0}")]
    Parse(String),
    #[error("the instance has no frame {0}")]
    NoSuchFrame(u32),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The object's declared image does not fit its data.
    #[error("malformed image: {0}")]
    Malformed(String),
    /// The answer would be larger than accepted.
    #[error("the answer would exceed {0} bytes")]
    TooLarge(u64),
}

/// Which frames to extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSel {
    /// Every frame (bulk data), as many as the object really holds.
    All,
    /// These frames (1-based).
    List(Vec<u32>),
}

/// Bounds on one extraction.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub guard: mado_core::guard::Limits,
    /// Largest answer (sum of the parts).
    pub max_answer: u64,
}

/// Bytes of one native frame: Rows × Columns × Samples × Bits Allocated / 8,
/// multiplied with overflow checks (`None` when it overflows or is 0).
pub fn native_frame_len(rows: u32, cols: u32, spp: u32, bits: u32) -> Option<u64> {
    let bits_total = u64::from(rows)
        .checked_mul(u64::from(cols))?
        .checked_mul(u64::from(spp))?
        .checked_mul(u64::from(bits))?;
    let len = bits_total.div_ceil(8);
    (len > 0).then_some(len)
}

/// Frames of a stored object.
#[derive(Debug)]
pub struct Frames {
    /// Transfer syntax of the parts.
    pub transfer_syntax: String,
    /// Whether the parts are compressed bitstreams (as stored).
    pub encapsulated: bool,
    pub parts: Vec<Bytes>,
}

fn read_u32(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok())
}

/// Extract the frames `sel` of the Part 10 file `bytes`. `decode` asks
/// for native pixel data even when the object is compressed. The file's
/// structure is checked first ([`mado_core::guard`]), and the declared
/// frame count and size against the pixel data really there, before
/// anything is allocated for them.
pub fn extract_frames(
    bytes: &[u8],
    sel: &FrameSel,
    decode: bool,
    limits: &FrameLimits,
) -> Result<Frames, FrameError> {
    mado_core::guard::check_part10(bytes, &limits.guard)
        .map_err(|e| FrameError::Parse(e.to_string()))?;
    let obj = OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| FrameError::Parse(e.to_string()))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    let declared = read_u32(&obj, tags::NUMBER_OF_FRAMES)
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let pixel = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| FrameError::Unsupported("the instance has no pixel data".into()))?;
    let rows = read_u32(&obj, tags::ROWS).unwrap_or(0);
    let cols = read_u32(&obj, tags::COLUMNS).unwrap_or(0);
    let spp = read_u32(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let bits = read_u32(&obj, tags::BITS_ALLOCATED).unwrap_or(16);
    let too_many =
        || FrameError::Malformed("Number of Frames exceeds the pixel data in the object".into());
    if let Some(fragments) = pixel.value().fragments() {
        // each frame takes at least one fragment
        if declared as usize > fragments.len() {
            return Err(too_many());
        }
        let frames = select(sel, declared)?;
        if decode {
            let frame_len = native_frame_len(rows, cols, spp, bits.max(8))
                .ok_or_else(|| FrameError::Malformed("empty or oversized image".into()))?;
            if frame_len
                .checked_mul(frames.len() as u64)
                .is_none_or(|t| t > limits.max_answer)
            {
                return Err(FrameError::TooLarge(limits.max_answer));
            }
            return decode_native(&obj, &frames, declared);
        }
        let offsets = pixel.value().offset_table().unwrap_or(&[]);
        let per_frame = split_fragments(fragments, offsets, declared)?;
        let total: u64 = frames
            .iter()
            .map(|f| per_frame[(*f - 1) as usize].len() as u64)
            .sum();
        if total > limits.max_answer {
            return Err(FrameError::TooLarge(limits.max_answer));
        }
        let parts = frames
            .iter()
            .map(|f| Bytes::from(per_frame[(*f - 1) as usize].clone()))
            .collect();
        return Ok(Frames {
            transfer_syntax: ts,
            encapsulated: true,
            parts,
        });
    }
    if !bits.is_multiple_of(8) || rows == 0 || cols == 0 {
        return Err(FrameError::Unsupported(format!(
            "{bits}-bit allocation or empty image"
        )));
    }
    let frame_len = native_frame_len(rows, cols, spp, bits)
        .ok_or_else(|| FrameError::Malformed("empty or oversized image".into()))?;
    // the declared frames must be in the pixel data actually stored
    let data_len = pixel
        .value()
        .primitive()
        .map_or(0, |p| p.calculate_byte_len() as u64);
    if frame_len
        .checked_mul(u64::from(declared))
        .is_none_or(|need| need > data_len)
    {
        return Err(too_many());
    }
    let frames = select(sel, declared)?;
    if frame_len
        .checked_mul(frames.len() as u64)
        .is_none_or(|t| t > limits.max_answer)
    {
        return Err(FrameError::TooLarge(limits.max_answer));
    }
    let frame_len = usize::try_from(frame_len).map_err(|_| too_many())?;
    let data = pixel
        .to_bytes()
        .map_err(|e| FrameError::Parse(e.to_string()))?;
    let mut parts = Vec::with_capacity(frames.len());
    for f in &frames {
        let start = (*f as usize - 1)
            .checked_mul(frame_len)
            .ok_or(FrameError::NoSuchFrame(*f))?;
        let chunk = start
            .checked_add(frame_len)
            .and_then(|end| data.get(start..end))
            .ok_or(FrameError::NoSuchFrame(*f))?;
        parts.push(Bytes::copy_from_slice(chunk));
    }
    Ok(Frames {
        transfer_syntax: ts,
        encapsulated: false,
        parts,
    })
}

/// The frame numbers of `sel` among `n` (checked: 1..=n).
fn select(sel: &FrameSel, n: u32) -> Result<Vec<u32>, FrameError> {
    match sel {
        FrameSel::All => Ok((1..=n).collect()),
        FrameSel::List(list) => {
            if let Some(f) = list.iter().find(|f| **f == 0 || **f > n) {
                return Err(FrameError::NoSuchFrame(*f));
            }
            Ok(list.clone())
        }
    }
}

fn decode_native(
    obj: &dicom_object::DefaultDicomObject,
    frames: &[u32],
    _n: u32,
) -> Result<Frames, FrameError> {
    use dicom_pixeldata::PixelDecoder;
    let mut parts = Vec::with_capacity(frames.len());
    for f in frames {
        let d = obj
            .decode_pixel_data_frame(*f - 1)
            .map_err(|e| FrameError::Unsupported(format!("cannot decode: {e}")))?;
        parts.push(Bytes::copy_from_slice(d.data()));
    }
    Ok(Frames {
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        encapsulated: false,
        parts,
    })
}

/// Group encapsulated fragments into frames (PS3.5 A.4).
fn split_fragments(
    fragments: &[Vec<u8>],
    offsets: &[u32],
    n: u32,
) -> Result<Vec<Vec<u8>>, FrameError> {
    let n = n as usize;
    if n == 1 {
        return Ok(vec![fragments.concat()]);
    }
    if fragments.len() == n {
        return Ok(fragments.to_vec());
    }
    if offsets.len() != n {
        // No usable offset table: a frame begins with the fragment that
        // starts a codestream (JPEG / JPEG-LS SOI, JPEG 2000 SOC + SIZ, a
        // JP2 signature box); the fragments after it continue that frame.
        let starts = |f: &[u8]| {
            f.starts_with(&[0xFF, 0xD8])
                || f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
                || f.starts_with(&[0, 0, 0, 0x0C, b'j', b'P', b' ', b' '])
        };
        let mut frames: Vec<Vec<u8>> = Vec::with_capacity(n);
        for f in fragments {
            match frames.last_mut() {
                Some(cur) if !starts(f) => cur.extend_from_slice(f),
                _ => frames.push(f.clone()),
            }
        }
        if frames.len() != n {
            return Err(FrameError::Unsupported(
                "multi-fragment frames without a basic offset table".into(),
            ));
        }
        return Ok(frames);
    }
    // Byte position of each fragment item relative to the first one.
    let mut pos = Vec::with_capacity(fragments.len());
    let mut p: u64 = 0;
    for f in fragments {
        pos.push(p);
        p += 8 + f.len() as u64;
    }
    let mut out = Vec::with_capacity(n);
    for (i, start) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).map_or(u64::MAX, |e| u64::from(*e));
        let frame: Vec<u8> = fragments
            .iter()
            .zip(&pos)
            .filter(|(_, p)| **p >= u64::from(*start) && **p < end)
            .flat_map(|(f, _)| f.iter().copied())
            .collect();
        out.push(frame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_by_offset_table() {
        let frags = vec![vec![1u8; 4], vec![2u8; 4], vec![3u8; 2]];
        // Frame 1 = fragments 0 and 1 (items of 12 bytes each), frame 2 = fragment 2.
        let out = split_fragments(&frags, &[0, 24], 2).unwrap();
        assert_eq!(out[0].len(), 8);
        assert_eq!(out[1], vec![3u8; 2]);
        assert!(split_fragments(&frags, &[], 2).is_err());
    }

    #[test]
    fn fragments_by_codestream_start_without_offset_table() {
        let soi = |b: u8| vec![0xFF, 0xD8, b, b];
        let frags = vec![soi(1), vec![9u8; 3], soi(2), soi(3), vec![8u8; 2]];
        let out = split_fragments(&frags, &[], 3).unwrap();
        assert_eq!(out[0], [soi(1), vec![9u8; 3]].concat());
        assert_eq!(out[1], soi(2));
        assert_eq!(out[2], [soi(3), vec![8u8; 2]].concat());
        // the markers do not give the frame count: still refused
        assert!(split_fragments(&frags, &[], 2).is_err());
        let j2k = vec![
            vec![0xFF, 0x4F, 0xFF, 0x51, 0],
            vec![7u8; 4],
            vec![0xFF, 0x4F, 0xFF, 0x51, 1],
        ];
        assert_eq!(split_fragments(&j2k, &[], 2).unwrap()[0].len(), 9);
    }

    #[test]
    fn garbage_is_an_error() {
        let limits = FrameLimits {
            guard: Default::default(),
            max_answer: 1 << 20,
        };
        assert!(extract_frames(b"nope", &FrameSel::List(vec![1]), false, &limits).is_err());
        assert_eq!(native_frame_len(512, 512, 1, 16), Some(512 * 512 * 2));
        assert_eq!(
            native_frame_len(65535, 65535, 3, 16),
            Some(65535 * 65535 * 6)
        );
        assert_eq!(native_frame_len(0, 512, 1, 16), None);
        assert_eq!(
            native_frame_len(u32::MAX, u32::MAX, u32::MAX, u32::MAX),
            None
        );
    }
}
