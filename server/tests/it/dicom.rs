//! Synthetic DICOM files for the tests, built with dicom-object.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub struct Synthetic {
    /// Complete Part 10 file.
    pub bytes: Vec<u8>,
    /// DICOM JSON of the dataset without Pixel Data.
    pub metadata: serde_json::Value,
}

pub struct Options<'a> {
    pub study: &'a str,
    pub series: &'a str,
    pub sop: &'a str,
    pub photometric: &'a str,
    pub window: Option<(&'a str, &'a str)>,
    pub size: u16,
}

impl<'a> Options<'a> {
    pub fn ct(study: &'a str, series: &'a str, sop: &'a str) -> Self {
        Self {
            study,
            series,
            sop,
            photometric: "MONOCHROME2",
            window: Some(("40", "400")),
            size: 64,
        }
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// A 16-bit signed CT slice with a diagonal gradient (raw 0..~4000,
/// rescale intercept -1024), Explicit VR Little Endian.
pub fn ct_slice(o: &Options<'_>) -> Synthetic {
    let n = o.size;
    let mut obj = InMemDicomObject::new_empty();
    put_str(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2",
    );
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, o.sop);
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, o.study);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, o.series);
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "ANON^SYNTHETIC");
    put_str(&mut obj, tags::PATIENT_ID, VR::LO, "PSEUDO-0001");
    put_str(&mut obj, tags::STUDY_DATE, VR::DA, "20240105");
    put_str(&mut obj, tags::STUDY_TIME, VR::TM, "101530");
    put_str(
        &mut obj,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        "CT HEAD synthetic",
    );
    put_str(&mut obj, tags::MODALITY, VR::CS, "CT");
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        o.photometric,
    );
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1_u16),
    ));
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(n),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(n),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16_u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(16_u16),
    ));
    obj.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(15_u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1_u16),
    ));
    put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
    if let Some((c, w)) = o.window {
        put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, c);
        put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, w);
    }
    let metadata = dicom_json::to_value(&obj).unwrap();

    let pixels: Vec<i16> = (0..n)
        .flat_map(|y| {
            (0..n).map(move |x| ((u32::from(x) + u32::from(y)) * 4000 / (2 * u32::from(n))) as i16)
        })
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::I16(pixels.into_iter().collect()),
    ));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    Synthetic { bytes, metadata }
}
