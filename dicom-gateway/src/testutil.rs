//! Synthetic test data shared by the unit tests.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

/// Other Patient IDs (0010,1000), retired but still seen in the wild.
pub(crate) const OTHER_PATIENT_IDS: Tag = Tag(0x0010, 0x1000);

pub(crate) const ORIG_NAME: &str = "YAMADA^TARO";
pub(crate) const ORIG_ID: &str = "PID-987654";
pub(crate) const ORIG_BIRTH: &str = "19450102";
pub(crate) const ORIG_ACC: &str = "ACC1234567";
pub(crate) const ORIG_INST: &str = "General Hospital Tokyo";
pub(crate) const ORIG_STUDY: &str = "1.2.826.0.1.3680043.8.498.111";
pub(crate) const ORIG_SERIES: &str = "1.2.826.0.1.3680043.8.498.222";
pub(crate) const ORIG_SOP: &str = "1.2.826.0.1.3680043.8.498.333";
pub(crate) const ORIG_FOR: &str = "1.2.826.0.1.3680043.8.498.444";
pub(crate) const ORIG_REF_SOP: &str = "1.2.826.0.1.3680043.8.498.555";
pub(crate) const ORIG_REFERRING: &str = "SUZUKI^ICHIRO";
pub(crate) const ORIG_PRIVATE: &str = "PRIVATE-SECRET-VALUE";
pub(crate) const ORIG_OTHER_ID: &str = "OTHERID-4242";
pub(crate) const ORIG_STATION: &str = "FAKECT01";

/// A small synthetic CT data set (no file meta) carrying every identifier
/// we handle, with SOP Instance UID `sop`.
pub(crate) fn sample_dataset(sop: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let s = |t, vr, v: &str| DataElement::new(t, vr, PrimitiveValue::from(v));
    obj.put(s(
        tags::SOP_CLASS_UID,
        VR::UI,
        dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
    ));
    obj.put(s(tags::SOP_INSTANCE_UID, VR::UI, sop));
    obj.put(s(tags::STUDY_INSTANCE_UID, VR::UI, ORIG_STUDY));
    obj.put(s(tags::SERIES_INSTANCE_UID, VR::UI, ORIG_SERIES));
    obj.put(s(tags::FRAME_OF_REFERENCE_UID, VR::UI, ORIG_FOR));
    obj.put(s(tags::PATIENT_NAME, VR::PN, ORIG_NAME));
    obj.put(s(tags::PATIENT_ID, VR::LO, ORIG_ID));
    obj.put(s(tags::PATIENT_BIRTH_DATE, VR::DA, ORIG_BIRTH));
    obj.put(s(tags::PATIENT_SEX, VR::CS, "M"));
    obj.put(s(OTHER_PATIENT_IDS, VR::LO, ORIG_OTHER_ID));
    obj.put(s(tags::ACCESSION_NUMBER, VR::SH, ORIG_ACC));
    obj.put(s(tags::INSTITUTION_NAME, VR::LO, ORIG_INST));
    obj.put(s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ORIG_REFERRING));
    obj.put(s(tags::STATION_NAME, VR::SH, ORIG_STATION));
    obj.put(s(tags::MODALITY, VR::CS, "CT"));
    obj.put(s(tags::STUDY_DATE, VR::DA, "20240101"));
    obj.put(s(Tag(0x0009, 0x0010), VR::LO, "ACME"));
    obj.put(s(Tag(0x0009, 0x1001), VR::LO, ORIG_PRIVATE));
    let item = InMemDicomObject::from_element_iter([
        s(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
        ),
        s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, ORIG_REF_SOP),
        s(tags::PATIENT_NAME, VR::PN, ORIG_NAME),
    ]);
    obj.put(DataElement::new(
        tags::REFERENCED_IMAGE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(2_u16),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(2_u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(vec![1u8, 2, 3, 4, 5, 6, 7, 8]),
    ));
    obj
}

/// [`sample_dataset`] as a file object in transfer syntax `ts`.
pub(crate) fn sample(ts: &str) -> DefaultDicomObject {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(dicom_dictionary_std::uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(ORIG_SOP)
        .transfer_syntax(ts)
        .source_application_entity_title("MODALITY01")
        .build()
        .unwrap();
    sample_dataset(ORIG_SOP).with_exact_meta(meta)
}

pub(crate) const ORIGINALS: &[&str] = &[
    ORIG_NAME,
    ORIG_ID,
    ORIG_BIRTH,
    ORIG_ACC,
    ORIG_INST,
    ORIG_STUDY,
    ORIG_SERIES,
    ORIG_SOP,
    ORIG_FOR,
    ORIG_REF_SOP,
    ORIG_REFERRING,
    ORIG_PRIVATE,
    ORIG_OTHER_ID,
    ORIG_STATION,
    "MODALITY01",
];
