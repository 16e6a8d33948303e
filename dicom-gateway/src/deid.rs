//! Minimal de-identification, applied before anything leaves the gateway.
//!
//! A full PS3.15 Annex E engine will replace this module (in `mado-core`);
//! the interface is deliberately small: [`deidentify`] consumes an
//! identified object and returns a [`Deidentified`] one, the only type the
//! uploader accepts.
//!
//! What it does, at every sequence depth:
//! - Patient Name → `ANON^<10 hex>`, Patient ID → `P<12 hex>`, Accession
//!   Number → `A<12 hex>` (keyed HMAC-SHA256 pseudonyms; empty stays empty);
//! - Patient Birth Date and Study ID emptied, every other PN value emptied;
//! - Institution Name / Address / Department and Station Name removed; every other attribute
//!   of group 0010 except sex, age, size and weight removed;
//! - private attributes and (retired) group-length attributes removed;
//! - every UID value (VR UI) remapped to `<uid_root>.<decimal of the first
//!   16 bytes of HMAC-SHA256(secret, uid)>` (≤ 64 chars), except standard
//!   DICOM UIDs (`1.2.840.10008.*`) and attributes naming a class, a transfer
//!   syntax or a coding scheme. The mapping is deterministic, so a re-sent
//!   instance gets the same UIDs (idempotent uploads);
//! - Patient Identity Removed = YES, De-identification Method set, file
//!   meta rebuilt (new Media Storage SOP Instance UID, no source AE title),
//!   preamble zeroed when written.
//!
//! Not handled yet (the Annex E engine's job): free-text attributes
//! (descriptions, comments), dates and times, burned-in annotations.

use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};
use hmac::{Hmac, Mac};
use mado_core::{SeriesUid, SopInstanceUid, StudyUid, Uid};
use sha2::Sha256;

/// Value written to De-identification Method (0012,0063).
pub const METHOD: &str = "MADO gateway minimal: keyed pseudonyms, UID remap";

/// Deepest sequence nesting we process; deeper data fails closed.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error("missing or empty required attribute {0}")]
    Missing(&'static str),
    #[error("attribute {0} cannot be read as text")]
    NotText(Tag),
    #[error("invalid UID in {0}")]
    BadUid(&'static str),
    #[error("sequences nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("cannot build file meta: {0}")]
    Meta(String),
}

/// Keyed pseudonymisation parameters.
#[derive(Clone)]
pub struct DeidParams {
    key: Vec<u8>,
    uid_root: String,
}

impl std::fmt::Debug for DeidParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeidParams")
            .field("key", &"<redacted>")
            .field("uid_root", &self.uid_root)
            .finish()
    }
}

impl DeidParams {
    /// `uid_root` must be a valid UID short enough to leave room for at
    /// least 20 digits (checked by the config validation).
    pub fn new(key: &[u8], uid_root: &str) -> Self {
        Self {
            key: key.to_vec(),
            uid_root: uid_root.trim_end_matches(['\0', ' ']).to_string(),
        }
    }

    fn mac(&self, domain: &[u8], value: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(domain);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// Deterministic UID remapping:
    /// `uid_root + "." + decimal(first 16 bytes of HMAC(secret, uid))`,
    /// truncated to 64 characters.
    pub fn remap_uid(&self, uid: &str) -> String {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let mac = self.mac(b"", uid.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&mac[..16]);
        let n = u128::from_be_bytes(first);
        let mut out = format!("{}.{}", self.uid_root, n);
        // The decimal of n has no leading zero; cutting digits off the end
        // keeps the first one, so the last component stays valid.
        out.truncate(64);
        out
    }

    fn hex_pseudo(&self, domain: &[u8], value: &str, len: usize) -> String {
        let mac = self.mac(domain, value.trim_end_matches(['\0', ' ']).as_bytes());
        let mut h = hex::encode(mac);
        h.truncate(len);
        h
    }

    pub fn patient_name(&self, name: &str) -> String {
        format!("ANON^{}", self.hex_pseudo(b"PatientName\0", name, 10))
    }
    pub fn patient_id(&self, id: &str) -> String {
        format!("P{}", self.hex_pseudo(b"PatientID\0", id, 12))
    }
    pub fn accession(&self, acc: &str) -> String {
        format!("A{}", self.hex_pseudo(b"AccessionNumber\0", acc, 12))
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac<Sha256>::new_from_slice accepts every key length.
    panic!("HMAC-SHA256 rejected a key; this cannot happen")
}

/// A de-identified instance. Only [`deidentify`] builds one, so the uploader
/// (which takes only this type) cannot be handed an identified object.
#[derive(Debug)]
pub struct Deidentified {
    obj: DefaultDicomObject,
    study: StudyUid,
    series: SeriesUid,
    sop: SopInstanceUid,
    sop_class: Uid,
    transfer_syntax: Uid,
}

impl Deidentified {
    pub fn object(&self) -> &DefaultDicomObject {
        &self.obj
    }
    pub fn study(&self) -> &StudyUid {
        &self.study
    }
    pub fn series(&self) -> &SeriesUid {
        &self.series
    }
    pub fn sop_instance(&self) -> &SopInstanceUid {
        &self.sop
    }
    pub fn sop_class(&self) -> &Uid {
        &self.sop_class
    }
    pub fn transfer_syntax(&self) -> &Uid {
        &self.transfer_syntax
    }
    /// The object, for serialisation (still de-identified: nothing in this
    /// crate puts identifying data back).
    pub fn into_object(self) -> DefaultDicomObject {
        self.obj
    }
}

/// De-identify `obj` (see the module docs). Fails closed: any attribute that
/// cannot be processed is an error, and the caller quarantines the file.
pub fn deidentify(mut obj: DefaultDicomObject, p: &DeidParams) -> Result<Deidentified, DeidError> {
    let sop_class = text_of(&obj, tags::SOP_CLASS_UID, "SOPClassUID")?;
    let sop_class = Uid::parse(&sop_class).map_err(|_| DeidError::BadUid("SOPClassUID"))?;
    for (tag, name) in [
        (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
        (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
        (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
    ] {
        text_of(&obj, tag, name)?;
    }
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let transfer_syntax = Uid::parse(&ts).map_err(|_| DeidError::BadUid("TransferSyntaxUID"))?;

    {
        let inner: &mut InMemDicomObject = &mut obj;
        scrub(inner, p, 0)?;
        inner.put(DataElement::new(
            tags::PATIENT_IDENTITY_REMOVED,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        inner.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD,
            VR::LO,
            PrimitiveValue::from(METHOD),
        ));
    }

    let study = StudyUid::parse(&text_of(
        &obj,
        tags::STUDY_INSTANCE_UID,
        "StudyInstanceUID",
    )?)
    .map_err(|_| DeidError::BadUid("StudyInstanceUID"))?;
    let series = SeriesUid::parse(&text_of(
        &obj,
        tags::SERIES_INSTANCE_UID,
        "SeriesInstanceUID",
    )?)
    .map_err(|_| DeidError::BadUid("SeriesInstanceUID"))?;
    let sop = SopInstanceUid::parse(&text_of(&obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?)
        .map_err(|_| DeidError::BadUid("SOPInstanceUID"))?;

    // Rebuild the file meta from scratch: nothing of the original survives.
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .build()
        .map_err(|e| DeidError::Meta(e.to_string()))?;
    *obj.meta_mut() = meta;

    Ok(Deidentified {
        obj,
        study,
        series,
        sop,
        sop_class,
        transfer_syntax,
    })
}

fn text_of(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<String, DeidError> {
    let e = obj.get(tag).ok_or(DeidError::Missing(name))?;
    let s = e.to_str().map_err(|_| DeidError::NotText(tag))?;
    let s = s.trim_end_matches(['\0', ' ']).to_string();
    if s.is_empty() {
        return Err(DeidError::Missing(name));
    }
    Ok(s)
}

/// Group 0010 attributes kept (all others are removed).
const KEEP_PATIENT: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
];

/// Attributes removed outright.
const REMOVE: &[Tag] = &[
    tags::STATION_NAME,
    tags::INSTITUTION_NAME,
    tags::INSTITUTION_ADDRESS,
    tags::INSTITUTIONAL_DEPARTMENT_NAME,
];

/// UI attributes naming a class, syntax or scheme, not an instance: kept.
const CLASS_UIDS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::REFERENCED_SOP_CLASS_UID,
    tags::AFFECTED_SOP_CLASS_UID,
    tags::REQUESTED_SOP_CLASS_UID,
    tags::MEDIA_STORAGE_SOP_CLASS_UID,
    tags::TRANSFER_SYNTAX_UID,
    tags::IMPLEMENTATION_CLASS_UID,
    tags::PRIVATE_INFORMATION_CREATOR_UID,
    tags::REFERENCED_SOP_CLASS_UID_IN_FILE,
    tags::REFERENCED_TRANSFER_SYNTAX_UID_IN_FILE,
    tags::RELATED_GENERAL_SOP_CLASS_UID,
    tags::ORIGINAL_SPECIALIZED_SOP_CLASS_UID,
    tags::SOP_CLASSES_IN_STUDY,
    tags::CODING_SCHEME_UID,
    tags::CONTEXT_UID,
    tags::MAPPING_RESOURCE_UID,
    tags::CONTEXT_GROUP_EXTENSION_CREATOR_UID,
];

fn keep(tag: Tag) -> bool {
    let Tag(group, element) = tag;
    if group % 2 == 1 || element == 0x0000 {
        return false; // private attributes, group lengths
    }
    if group == 0x0010 && !KEEP_PATIENT.contains(&tag) {
        return false;
    }
    !REMOVE.contains(&tag)
}

fn scrub(obj: &mut InMemDicomObject, p: &DeidParams, depth: usize) -> Result<(), DeidError> {
    if depth > MAX_DEPTH {
        return Err(DeidError::TooDeep);
    }
    obj.retain(|e| keep(e.tag()));
    let present: Vec<(Tag, VR)> = obj.iter().map(|e| (e.tag(), e.vr())).collect();
    for (tag, vr) in present {
        match tag {
            tags::PATIENT_NAME => pseudo(obj, tag, VR::PN, |s| p.patient_name(s))?,
            tags::PATIENT_ID => pseudo(obj, tag, VR::LO, |s| p.patient_id(s))?,
            tags::ACCESSION_NUMBER => pseudo(obj, tag, VR::SH, |s| p.accession(s))?,
            tags::PATIENT_BIRTH_DATE | tags::STUDY_ID => empty(obj, tag, vr),
            _ if vr == VR::PN => empty(obj, tag, vr),
            _ if vr == VR::UI && !CLASS_UIDS.contains(&tag) => remap_uids(obj, tag, p)?,
            _ if vr == VR::SQ => {
                let mut result = Ok(());
                obj.update_value(tag, |v: &mut Value<InMemDicomObject, _>| {
                    if let Some(items) = v.items_mut() {
                        for item in items.iter_mut() {
                            if result.is_ok() {
                                result = scrub(item, p, depth + 1);
                            }
                        }
                    }
                });
                result?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn empty(obj: &mut InMemDicomObject, tag: Tag, vr: VR) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}

fn pseudo(
    obj: &mut InMemDicomObject,
    tag: Tag,
    vr: VR,
    f: impl Fn(&str) -> String,
) -> Result<(), DeidError> {
    let original = match obj.get(tag) {
        Some(e) => e
            .to_str()
            .map_err(|_| DeidError::NotText(tag))?
            .into_owned(),
        None => return Ok(()),
    };
    let trimmed = original.trim_matches(['\0', ' ']);
    let value = if trimmed.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::from(f(trimmed))
    };
    obj.put(DataElement::new(tag, vr, value));
    Ok(())
}

fn remap_uids(obj: &mut InMemDicomObject, tag: Tag, p: &DeidParams) -> Result<(), DeidError> {
    let values: Vec<String> = match obj.get(tag) {
        Some(e) => e
            .to_multi_str()
            .map_err(|_| DeidError::NotText(tag))?
            .iter()
            .map(|s| s.trim_matches(['\0', ' ']).to_string())
            .collect(),
        None => return Ok(()),
    };
    let mapped: Vec<String> = values
        .into_iter()
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.starts_with("1.2.840.10008.") {
                v
            } else {
                p.remap_uid(&v)
            }
        })
        .collect();
    let value = match mapped.len() {
        0 => PrimitiveValue::Empty,
        1 => PrimitiveValue::from(mapped.into_iter().next().unwrap_or_default()),
        _ => PrimitiveValue::Strs(mapped.into_iter().collect()),
    };
    obj.put(DataElement::new(tag, VR::UI, value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn params() -> DeidParams {
        DeidParams::new(b"test-secret-123", "2.25")
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn no_original_value_in_output_file() {
        for ts in [
            dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
            dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let d = deidentify(sample(ts), &params()).unwrap();
            let mut out = Vec::new();
            d.object().write_all(&mut out).unwrap();
            for orig in ORIGINALS {
                assert!(!contains(&out, orig.as_bytes()), "{orig} leaked with {ts}");
            }
            assert!(out[..128].iter().all(|b| *b == 0), "preamble not zeroed");
            // the output is a valid Part 10 file with the remapped UIDs
            let back = dicom_object::from_reader(&out[128..]).unwrap();
            let sop = back
                .element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(sop.trim_end_matches('\0'), d.sop_instance().as_str());
            assert_eq!(
                back.meta()
                    .media_storage_sop_instance_uid()
                    .trim_end_matches('\0'),
                d.sop_instance().as_str()
            );
            let name = back.element(tags::PATIENT_NAME).unwrap().to_str().unwrap();
            assert!(name.starts_with("ANON^"), "{name}");
            let id = back.element(tags::PATIENT_ID).unwrap().to_str().unwrap();
            assert!(
                id.trim_end().starts_with('P') && id.trim_end().len() == 13,
                "{id}"
            );
            assert_eq!(
                back.element(tags::PATIENT_IDENTITY_REMOVED)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim(),
                "YES"
            );
            assert!(back.element(tags::INSTITUTION_NAME).is_err());
            assert!(back.element(OTHER_PATIENT_IDS).is_err());
            assert!(back.element(Tag(0x0009, 0x1001)).is_err());
            assert_eq!(
                back.element(tags::MODALITY)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim(),
                "CT"
            );
            // standard class UIDs stay
            let seq = back.element(tags::REFERENCED_IMAGE_SEQUENCE).unwrap();
            let item = &seq.items().unwrap()[0];
            assert_eq!(
                item.element(tags::REFERENCED_SOP_CLASS_UID)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim_end_matches('\0'),
                dicom_dictionary_std::uids::CT_IMAGE_STORAGE
            );
            let r = item
                .element(tags::REFERENCED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(r.trim_end_matches('\0'), params().remap_uid(ORIG_REF_SOP));
        }
    }

    #[test]
    fn deterministic_and_keyed() {
        let p = params();
        let a = deidentify(
            sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN),
            &p,
        )
        .unwrap();
        let b = deidentify(
            sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN),
            &p,
        )
        .unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.object().write_all(&mut x).unwrap();
        b.object().write_all(&mut y).unwrap();
        assert_eq!(x, y, "same input must give identical bytes");
        assert_eq!(a.study(), b.study());
        let other = DeidParams::new(b"another-secret", "2.25");
        assert_ne!(p.remap_uid(ORIG_SOP), other.remap_uid(ORIG_SOP));
        assert_ne!(p.patient_id(ORIG_ID), other.patient_id(ORIG_ID));
        // trailing padding does not change the mapping
        assert_eq!(p.remap_uid(ORIG_SOP), p.remap_uid(&format!("{ORIG_SOP}\0")));
    }

    #[test]
    fn remapped_uids_are_valid() {
        for root in ["2.25", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.2"] {
            let p = DeidParams::new(b"k", root);
            for i in 0..2000 {
                let u = p.remap_uid(&format!("1.2.3.{i}"));
                assert!(u.len() <= 64, "{u}");
                Uid::parse(&u).unwrap_or_else(|e| panic!("{u}: {e}"));
                assert!(u.starts_with(root));
            }
        }
    }

    #[test]
    fn missing_uid_fails_closed() {
        let mut obj = sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN);
        obj.remove_element(tags::STUDY_INSTANCE_UID);
        assert!(matches!(
            deidentify(obj, &params()),
            Err(DeidError::Missing(_))
        ));
    }

    #[test]
    fn empty_identifiers_stay_empty() {
        let mut obj = sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN);
        obj.put(DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::Empty,
        ));
        let d = deidentify(obj, &params()).unwrap();
        let v = d
            .object()
            .element(tags::PATIENT_ID)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(v.trim().is_empty());
    }
}
