//! Burned-in PHI screening and pixel cleaning.

use dicom_core::smallvec::SmallVec;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;

use super::*;
use crate::deid::{screen, DeidConfig, Outcome, PixelRule, Rect, Screening, ScreeningPolicy};

fn image(
    modality: &str,
    class: &str,
    rows: u16,
    cols: u16,
    spp: u16,
    bits: u16,
) -> DefaultDicomObject {
    let n = rows as usize * cols as usize * spp as usize;
    let pixel = if bits == 8 {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(SmallVec::from_vec(vec![200u8; n])),
        )
    } else {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(SmallVec::from_vec(vec![1000u16; n])),
        )
    };
    file(vec![
        el(tags::SOP_CLASS_UID, VR::UI, class),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.10.7.1"),
        el(tags::MODALITY, VR::CS, modality),
        el(tags::MANUFACTURER, VR::LO, "ACME "),
        el(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Sono 1"),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(spp)),
        el(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            if spp == 3 { "RGB" } else { "MONOCHROME2" },
        ),
        el(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        el(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        el(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
        el(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
        el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
        el(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        pixel,
    ])
}

fn rule() -> PixelRule {
    PixelRule {
        manufacturer: "acme".into(),
        model: "SONO 1".into(),
        rows: 20,
        columns: 30,
        rectangles: vec![Rect {
            x: 2,
            y: 1,
            width: 5,
            height: 3,
        }],
    }
}

#[test]
fn builtin_policy_parses() {
    let p = ScreeningPolicy::builtin().unwrap();
    assert!(p.usually_burned_in_modalities.iter().any(|m| m == "US"));
    assert!(p
        .usually_burned_in_sop_classes
        .iter()
        .any(|c| c == uids::ENCAPSULATED_PDF_STORAGE));
    assert!(p
        .usually_burned_in_sop_classes
        .iter()
        .any(|c| c == uids::SECONDARY_CAPTURE_IMAGE_STORAGE));
    assert!(p
        .usually_burned_in_sop_classes
        .iter()
        .any(|c| c == uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE));
    assert!(p
        .usually_burned_in_sop_classes
        .iter()
        .any(|c| c == uids::VIDEO_ENDOSCOPIC_IMAGE_STORAGE));
}

#[test]
fn decisions() {
    let p = ScreeningPolicy::default();
    assert_eq!(
        screen(&image("CT", uids::CT_IMAGE_STORAGE, 20, 30, 1, 16), &p),
        Screening::Pass
    );
    assert!(matches!(
        screen(
            &image("US", uids::ULTRASOUND_IMAGE_STORAGE, 20, 30, 1, 8),
            &p
        ),
        Screening::Quarantine(_)
    ));
    assert!(matches!(
        screen(
            &image("CT", uids::SECONDARY_CAPTURE_IMAGE_STORAGE, 20, 30, 1, 8),
            &p
        ),
        Screening::Quarantine(_)
    ));
    assert!(matches!(
        screen(
            &image("DOC", uids::ENCAPSULATED_PDF_STORAGE, 20, 30, 1, 8),
            &p
        ),
        Screening::Quarantine(_)
    ));
    let mut burned = image("CT", uids::CT_IMAGE_STORAGE, 20, 30, 1, 16);
    burned.put(el(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
    let Screening::Quarantine(reason) = screen(&burned, &p) else {
        panic!()
    };
    assert!(reason.contains("Burned In Annotation"));

    // a rule only helps when pixel cleaning is on
    let mut p = ScreeningPolicy {
        pixel_rules: vec![rule()],
        ..ScreeningPolicy::default()
    };
    let us = image("US", uids::ULTRASOUND_IMAGE_STORAGE, 20, 30, 1, 8);
    assert!(matches!(screen(&us, &p), Screening::Quarantine(_)));
    p.clean_pixel_data = true;
    assert_eq!(screen(&us, &p), Screening::CleanPixels(rule().rectangles));
    // other size: no rule
    assert!(matches!(
        screen(
            &image("US", uids::ULTRASOUND_IMAGE_STORAGE, 21, 30, 1, 8),
            &p
        ),
        Screening::Quarantine(_)
    ));
    // compressed: quarantine
    let mut jpeg = us.clone();
    jpeg.meta_mut().transfer_syntax = uids::JPEG_BASELINE8_BIT.into();
    let Screening::Quarantine(reason) = screen(&jpeg, &p) else {
        panic!()
    };
    assert!(reason.contains("compressed"));
}

fn pixel_u8(obj: &DefaultDicomObject) -> Vec<u8> {
    obj.get(tags::PIXEL_DATA)
        .unwrap()
        .value()
        .to_bytes()
        .unwrap()
        .to_vec()
}

#[test]
fn process_blanks_rectangles_in_native_pixel_data() {
    let cfg = DeidConfig {
        clean_pixel_data: true,
        screening: ScreeningPolicy {
            pixel_rules: vec![rule()],
            ..ScreeningPolicy::default()
        },
        ..DeidConfig::default()
    };
    let engine = engine(&cfg);
    for (spp, bits) in [(1u16, 8u16), (3, 8), (1, 16)] {
        let mut obj = from_bytes(&to_bytes(&image(
            "US",
            uids::ULTRASOUND_IMAGE_STORAGE,
            20,
            30,
            spp,
            bits,
        )));
        let Outcome::Deidentified(_) = engine.process(&mut obj).unwrap() else {
            panic!("not cleaned")
        };
        let out = from_bytes(&to_bytes(&obj));
        let px = pixel_u8(&out);
        let bps = (bits / 8) as usize;
        let spp = spp as usize;
        for y in 0..20usize {
            for x in 0..30usize {
                let inside = (2..7).contains(&x) && (1..4).contains(&y);
                let off = (y * 30 + x) * spp * bps;
                let sample = &px[off..off + spp * bps];
                if inside {
                    assert!(sample.iter().all(|b| *b == 0), "({x},{y}) not blank");
                } else {
                    assert!(sample.iter().any(|b| *b != 0), "({x},{y}) blanked");
                }
            }
        }
        assert_eq!(str_of(&out, tags::BURNED_IN_ANNOTATION).unwrap(), "NO");
        let codes: Vec<String> = out
            .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .filter_map(|i| str_of(i, tags::CODE_VALUE))
            .collect();
        assert!(codes.contains(&"113101".to_string()));
    }
    // a US image without a rule is quarantined by process()
    let mut obj = image("US", uids::ULTRASOUND_IMAGE_STORAGE, 24, 30, 1, 8);
    assert!(matches!(
        engine.process(&mut obj).unwrap(),
        Outcome::Quarantine(_)
    ));
    // encapsulated pixel data cannot be blanked
    let mut jpeg = image("US", uids::ULTRASOUND_IMAGE_STORAGE, 20, 30, 1, 8);
    jpeg.meta_mut().transfer_syntax = uids::JPEG_BASELINE8_BIT.into();
    assert!(crate::deid::blank_rectangles(&mut jpeg, &rule().rectangles).is_err());
}
