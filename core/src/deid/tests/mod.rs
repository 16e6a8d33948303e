//! Tests of the de-identification engine. Cases are generated from the profile data.

mod behaviour;
mod charset;
mod screening;
mod table_rows;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use super::{DeidConfig, Engine};

pub(crate) const SECRET: &[u8] = b"mado-test-secret-0123456789";

pub(crate) fn engine(cfg: &DeidConfig) -> Engine {
    Engine::new(cfg, SECRET).unwrap()
}

pub(crate) fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> InMemElement {
    DataElement::new(tag, vr, v.into())
}

pub(crate) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

pub(crate) fn item(elems: Vec<InMemElement>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elems)
}

/// A file object with an Explicit VR Little Endian meta group.
pub(crate) fn file(elems: Vec<InMemElement>) -> DefaultDicomObject {
    let ds = InMemDicomObject::from_element_iter(elems);
    let sop = ds
        .get(tags::SOP_INSTANCE_UID)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "1.2.826.0.1.3680043.10.1.1".into());
    let class = ds
        .get(tags::SOP_CLASS_UID)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_else(|| uids::CT_IMAGE_STORAGE.into());
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(sop)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid("1.2.826.0.1.3680043.10.2")
        .source_application_entity_title("SRC_AE")
        .build()
        .unwrap();
    ds.with_exact_meta(meta)
}

pub(crate) fn to_bytes(obj: &DefaultDicomObject) -> Vec<u8> {
    let mut v = Vec::new();
    obj.write_all(&mut v).unwrap();
    v
}

pub(crate) fn from_bytes(b: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(b)
        .unwrap()
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn str_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}
