//! UID consistency, idempotence, pixel data, dates, marking, configuration.

use std::collections::HashMap;

use dicom_core::smallvec::SmallVec;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;

use super::*;
use crate::deid::{DeidConfig, DeidError, Engine, SafePrivateTag};

const STUDY: &str = "1.2.826.0.1.3680043.10.5.1";
const FOR: &str = "1.2.826.0.1.3680043.10.5.2";

fn sop(series: usize, n: usize) -> String {
    format!("1.2.826.0.1.3680043.10.5.3.{series}.{n}")
}
fn series_uid(series: usize) -> String {
    format!("1.2.826.0.1.3680043.10.5.4.{series}")
}

fn pixels(n: usize) -> Vec<u16> {
    (0..n).map(|i| ((i * 7919) % 4096) as u16).collect()
}

/// A CT instance with identifying attributes, references, dates and pixel data.
fn ct(series: usize, n: usize, patient: &str) -> DefaultDicomObject {
    let mut elems = vec![
        el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        el(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(
                ["ORIGINAL", "PRIMARY", "AXIAL"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        ),
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop(series, n).as_str()),
        el(tags::STUDY_DATE, VR::DA, "20240315"),
        el(tags::SERIES_DATE, VR::DA, "20240315"),
        el(tags::ACQUISITION_DATE_TIME, VR::DT, "20240315101112.5"),
        el(tags::STUDY_TIME, VR::TM, "101112"),
        el(tags::ACCESSION_NUMBER, VR::SH, "ACC12345"),
        el(tags::MODALITY, VR::CS, "CT"),
        el(tags::MANUFACTURER, VR::LO, "ACME"),
        el(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
        el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Doctor^Who"),
        el(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST Suzuki"),
        el(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 5mm"),
        el(
            tags::PATIENT_NAME,
            VR::PN,
            format!("{patient}^Taro").as_str(),
        ),
        el(tags::PATIENT_ID, VR::LO, patient),
        el(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        el(tags::PATIENT_SEX, VR::CS, "M"),
        el(tags::PATIENT_AGE, VR::AS, "064Y"),
        el(tags::SLICE_THICKNESS, VR::DS, "5"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
        el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            series_uid(series).as_str(),
        ),
        el(tags::STUDY_ID, VR::SH, "S1"),
        el(tags::SERIES_NUMBER, VR::IS, format!("{series}").as_str()),
        el(tags::INSTANCE_NUMBER, VR::IS, format!("{n}").as_str()),
        el(tags::FRAME_OF_REFERENCE_UID, VR::UI, FOR),
        el(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::Strs(
                ["0", "0", &format!("{n}")]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        ),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::ROWS, VR::US, PrimitiveValue::from(64u16)),
        el(tags::COLUMNS, VR::US, PrimitiveValue::from(64u16)),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        el(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        el(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        el(tags::WINDOW_CENTER, VR::DS, "40"),
        el(tags::WINDOW_WIDTH, VR::DS, "400"),
        el(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        el(tags::RESCALE_SLOPE, VR::DS, "1"),
        el(Tag(0x0009, 0x0010), VR::LO, "ACME PRIVATE"),
        el(Tag(0x0009, 0x1001), VR::LO, "private-safe-value"),
        el(Tag(0x0009, 0x1002), VR::LO, "private-phi-value"),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(SmallVec::from_vec(pixels(64 * 64))),
        ),
    ];
    if series == 2 {
        let r = |uid: String| {
            item(vec![
                el(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    uids::CT_IMAGE_STORAGE,
                ),
                el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid.as_str()),
            ])
        };
        elems.push(seq(tags::REFERENCED_IMAGE_SEQUENCE, vec![r(sop(1, 0))]));
        elems.push(seq(tags::SOURCE_IMAGE_SEQUENCE, vec![r(sop(1, 1))]));
        elems.push(seq(
            tags::REFERENCED_STUDY_SEQUENCE,
            vec![item(vec![el(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                STUDY,
            )])],
        ));
    }
    let mut f = file(elems);
    f.meta_mut().receiving_application_entity_title = Some("RECV_AE".into());
    f.meta_mut().private_information_creator_uid = Some("1.2.826.0.1.3680043.10.5.9".into());
    f.meta_mut().private_information = Some(b"META PRIVATE".to_vec());
    f.meta_mut().update_information_group_length();
    f
}

fn all_options() -> DeidConfig {
    DeidConfig {
        retain_safe_private: true,
        safe_private: vec![SafePrivateTag {
            group: 0x0009,
            creator: "ACME PRIVATE".into(),
            element: 0x01,
        }],
        retain_device_identity: true,
        retain_institution_identity: true,
        retain_patient_characteristics: true,
        retain_long_modified_dates: true,
        clean_descriptors: true,
        clean_structured_content: true,
        clean_graphics: true,
        clean_pixel_data: true,
        ..DeidConfig::default()
    }
}

#[test]
fn uids_are_consistent_across_series_references_and_restarts() {
    let cfg = DeidConfig::default();
    let mut outputs: HashMap<(usize, usize), DefaultDicomObject> = HashMap::new();
    for series in [1, 2] {
        for n in 0..3 {
            // a new engine per instance: a restart must not change anything
            let engine = Engine::new(&cfg, SECRET).unwrap();
            let mut obj = from_bytes(&to_bytes(&ct(series, n, "PAT001")));
            let report = engine.deidentify(&mut obj).unwrap();
            assert_eq!(report.original.study_instance_uid.as_deref(), Some(STUDY));
            assert_eq!(
                report.pseudonym.study_instance_uid,
                str_of(&obj, tags::STUDY_INSTANCE_UID)
            );
            assert_eq!(
                report.sop_instance_uid,
                str_of(&obj, tags::SOP_INSTANCE_UID)
            );
            let bytes = to_bytes(&obj);
            for original in [
                STUDY,
                FOR,
                &sop(series, n),
                &series_uid(series),
                &sop(1, 0),
                &sop(1, 1),
            ] {
                assert!(
                    !contains(&bytes, original.as_bytes()),
                    "original UID {original} survived"
                );
            }
            assert!(
                !contains(&bytes, b"1.2.826.0.1.3680043.10.5"),
                "an original UID survived"
            );
            assert!(
                !contains(&bytes, b"RECV_AE")
                    && !contains(&bytes, b"META PRIVATE")
                    && !contains(&bytes, b"SRC_AE")
            );
            outputs.insert((series, n), from_bytes(&bytes));
        }
    }
    let study = str_of(&outputs[&(1, 0)], tags::STUDY_INSTANCE_UID).unwrap();
    let frame = str_of(&outputs[&(1, 0)], tags::FRAME_OF_REFERENCE_UID).unwrap();
    let engine = Engine::new(&cfg, SECRET).unwrap();
    assert_eq!(study, engine.remap_uid(STUDY));
    for ((series, n), o) in &outputs {
        assert_eq!(str_of(o, tags::STUDY_INSTANCE_UID).unwrap(), study);
        assert_eq!(str_of(o, tags::FRAME_OF_REFERENCE_UID).unwrap(), frame);
        assert_eq!(
            str_of(o, tags::SERIES_INSTANCE_UID).unwrap(),
            engine.remap_uid(&series_uid(*series))
        );
        let s = str_of(o, tags::SOP_INSTANCE_UID).unwrap();
        assert_eq!(s, engine.remap_uid(&sop(*series, *n)));
        assert_eq!(o.meta().media_storage_sop_instance_uid(), s);
        assert_eq!(
            o.meta().implementation_class_uid(),
            crate::deid::IMPLEMENTATION_CLASS_UID
        );
        assert!(o.meta().receiving_application_entity_title().is_none());
        assert!(o.meta().private_information_creator_uid().is_none());
        assert_eq!(
            str_of(o, tags::SOP_CLASS_UID).unwrap(),
            uids::CT_IMAGE_STORAGE
        );
        for u in [&s, &study, &frame] {
            crate::uid::validate_uid(u).unwrap();
            assert!(u.starts_with("2.25.") && u.len() <= 64);
        }
    }
    assert_ne!(
        str_of(&outputs[&(1, 0)], tags::SERIES_INSTANCE_UID),
        str_of(&outputs[&(2, 0)], tags::SERIES_INSTANCE_UID)
    );
    // references point at the new UIDs of the referenced instances
    let o = &outputs[&(2, 1)];
    let ref_uid = |seq_tag: Tag| {
        let items = o.get(seq_tag).unwrap().items().unwrap();
        str_of(&items[0], tags::REFERENCED_SOP_INSTANCE_UID).unwrap()
    };
    assert_eq!(
        ref_uid(tags::REFERENCED_IMAGE_SEQUENCE),
        str_of(&outputs[&(1, 0)], tags::SOP_INSTANCE_UID).unwrap()
    );
    assert_eq!(
        ref_uid(tags::SOURCE_IMAGE_SEQUENCE),
        str_of(&outputs[&(1, 1)], tags::SOP_INSTANCE_UID).unwrap()
    );
    assert!(
        o.get(tags::REFERENCED_STUDY_SEQUENCE).is_none(),
        "X/Z sequence removed"
    );
    let items = o
        .get(tags::REFERENCED_IMAGE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(
        str_of(&items[0], tags::REFERENCED_SOP_CLASS_UID).unwrap(),
        uids::CT_IMAGE_STORAGE
    );
    // another secret gives other UIDs
    let other = Engine::new(&cfg, b"another-secret-of-enough-length").unwrap();
    assert_ne!(other.remap_uid(STUDY), study);
}

#[test]
fn second_pass_is_a_no_op() {
    for cfg in [
        DeidConfig::default(),
        all_options(),
        DeidConfig {
            retain_uids: true,
            retain_long_full_dates: true,
            ..DeidConfig::default()
        },
    ] {
        let engine = engine(&cfg);
        for (series, n) in [(1, 0), (2, 1)] {
            let mut obj = from_bytes(&to_bytes(&ct(series, n, "PAT001")));
            let first = engine.deidentify(&mut obj).unwrap();
            assert!(!first.already_pseudonymized);
            let a = to_bytes(&obj);
            let mut again = from_bytes(&a);
            let second = engine.deidentify(&mut again).unwrap();
            let b = to_bytes(&again);
            assert!(a == b, "second pass changed the output ({cfg:?})");
            assert!(second.already_pseudonymized);
            assert_eq!(first.pseudonym, second.pseudonym);
            // a restarted engine agrees
            let mut third = from_bytes(&a);
            Engine::new(&cfg, SECRET)
                .unwrap()
                .deidentify(&mut third)
                .unwrap();
            assert!(to_bytes(&third) == a);
        }
    }
}

#[test]
fn pixel_data_is_bit_identical_without_pixel_cleaning() {
    for cfg in [DeidConfig::default(), all_options()] {
        let engine = engine(&cfg);
        let input = ct(1, 0, "PAT001");
        let before = input
            .get(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_bytes()
            .unwrap()
            .to_vec();
        let mut obj = from_bytes(&to_bytes(&input));
        match engine.process(&mut obj).unwrap() {
            crate::deid::Outcome::Deidentified(_) => {}
            other => panic!("CT must pass screening: {other:?}"),
        }
        let out = from_bytes(&to_bytes(&obj));
        let after = out
            .get(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_bytes()
            .unwrap()
            .to_vec();
        assert!(before == after);
        assert!(contains(&to_bytes(&obj), &before));
    }
}

#[test]
fn dates_shift_per_patient_and_times_stay() {
    let cfg = DeidConfig {
        retain_long_modified_dates: true,
        ..DeidConfig::default()
    };
    let engine = engine(&cfg);
    let shifted = |patient: &str, n: usize| {
        let mut obj = from_bytes(&to_bytes(&ct(1, n, patient)));
        let r = engine.deidentify(&mut obj).unwrap();
        assert_eq!(r.original.study_date.as_deref(), Some("20240315"));
        assert_eq!(r.pseudonym.study_date, str_of(&obj, tags::STUDY_DATE));
        assert_eq!(str_of(&obj, tags::STUDY_TIME).unwrap(), "101112");
        assert_eq!(
            str_of(&obj, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap(),
            "MODIFIED"
        );
        let dt = str_of(&obj, tags::ACQUISITION_DATE_TIME).unwrap();
        assert!(dt.ends_with("101112.5"));
        assert!(obj.get(tags::PATIENT_BIRTH_DATE).is_some_and(|e| e
            .value()
            .to_str()
            .unwrap()
            .is_empty()));
        let d = str_of(&obj, tags::STUDY_DATE).unwrap();
        assert_eq!(&dt[..8], d);
        assert_eq!(str_of(&obj, tags::SERIES_DATE).unwrap(), d);
        d
    };
    let a0 = shifted("PAT001", 0);
    assert_eq!(a0, shifted("PAT001", 1), "same patient, same offset");
    let date = chrono::NaiveDate::parse_from_str(&a0, "%Y%m%d").unwrap();
    let orig = chrono::NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
    let days = (orig - date).num_days();
    assert!((1..=365).contains(&days), "{days}");
    let others: std::collections::HashSet<String> =
        (0..8).map(|i| shifted(&format!("P{i}"), 0)).collect();
    assert!(others.len() > 4, "offsets vary between patients");
}

#[test]
fn marking_and_pseudonyms() {
    let cfg = all_options();
    let engine = engine(&cfg);
    let mut obj = from_bytes(&to_bytes(&ct(1, 0, "PAT001")));
    let report = engine.deidentify(&mut obj).unwrap();
    let out = from_bytes(&to_bytes(&obj));
    assert_eq!(str_of(&out, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    assert_eq!(
        str_of(&out, tags::DEIDENTIFICATION_METHOD).unwrap(),
        crate::deid::DEIDENTIFICATION_METHOD
    );
    let codes: Vec<String> = out
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(str_of(i, tags::CODING_SCHEME_DESIGNATOR).unwrap(), "DCM");
            str_of(i, tags::CODE_VALUE).unwrap()
        })
        .collect();
    assert_eq!(
        codes,
        [
            "113100", "113101", "113103", "113104", "113105", "113107", "113108", "113109",
            "113111", "113112"
        ]
    );
    let pid = str_of(&out, tags::PATIENT_ID).unwrap();
    assert!(pid.starts_with("ANON-") && pid.len() == 21, "{pid}");
    assert_eq!(str_of(&out, tags::PATIENT_NAME).unwrap(), pid);
    assert_eq!(report.original.patient_id.as_deref(), Some("PAT001"));
    assert_eq!(report.original.patient_name.as_deref(), Some("PAT001^Taro"));
    assert_eq!(
        report.original.accession_number.as_deref(),
        Some("ACC12345")
    );
    assert_eq!(report.pseudonym.patient_id.as_deref(), Some(pid.as_str()));
    assert_eq!(report.pseudonym.accession_number, None);
    // options at work: kept, cleaned, removed
    assert_eq!(
        str_of(&out, tags::INSTITUTION_NAME).unwrap(),
        "General Hospital"
    );
    assert_eq!(str_of(&out, tags::PATIENT_AGE).unwrap(), "064Y");
    assert_eq!(str_of(&out, tags::STUDY_DESCRIPTION).unwrap(), "CLEANED");
    assert_eq!(str_of(&out, tags::SERIES_DESCRIPTION).unwrap(), "AXIAL 5mm");
    assert_eq!(str_of(&out, tags::MANUFACTURER).unwrap(), "ACME");
    assert_eq!(
        str_of(&out, Tag(0x0009, 0x1001)).unwrap(),
        "private-safe-value"
    );
    assert!(out.get(Tag(0x0009, 0x1002)).is_none());
    assert!(str_of(&out, tags::REFERRING_PHYSICIAN_NAME).is_none_or(|s| s.is_empty()));
    // the report's Debug output carries no original value
    let dbg = format!("{report:?} {:?}", report.original);
    for phi in ["PAT001", "Taro", "ACC12345", "20240315", STUDY] {
        assert!(!dbg.contains(phi), "{phi} in Debug output");
    }
    // same patient → same pseudonym with a new engine; another patient → another one
    let mut o2 = from_bytes(&to_bytes(&ct(2, 2, "PAT001")));
    assert_eq!(
        Engine::new(&cfg, SECRET)
            .unwrap()
            .deidentify(&mut o2)
            .unwrap()
            .pseudonym
            .patient_id
            .as_deref(),
        Some(pid.as_str())
    );
    let mut o3 = from_bytes(&to_bytes(&ct(1, 0, "PAT002")));
    assert_ne!(
        engine
            .deidentify(&mut o3)
            .unwrap()
            .pseudonym
            .patient_id
            .as_deref(),
        Some(pid.as_str())
    );
}

#[test]
fn unknown_attributes_are_removed() {
    // fail closed: a standard attribute that is neither in the table nor safe, an invalid
    // private element, a group length
    let mut obj = file(vec![
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.10.1.1"),
        el(Tag(0x0040, 0xA160), VR::UT, "QZX free text"),
        el(Tag(0x0019, 0x0001), VR::LO, "QZX bad private"),
        el(Tag(0x0010, 0x0000), VR::UL, PrimitiveValue::from(12u32)),
    ]);
    engine(&DeidConfig::default()).deidentify(&mut obj).unwrap();
    assert!(!contains(&to_bytes(&obj), b"QZX"));
    assert!(obj.get(Tag(0x0010, 0x0000)).is_none());
}

#[test]
fn deep_nesting_is_refused() {
    let mut inner = item(vec![el(tags::CODE_VALUE, VR::SH, "X")]);
    for _ in 0..40 {
        inner = item(vec![seq(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![inner],
        )]);
    }
    let mut elems = vec![el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE)];
    elems.extend(inner);
    let mut obj = file(elems);
    assert!(matches!(
        engine(&DeidConfig::default()).deidentify(&mut obj),
        Err(DeidError::TooDeep(_))
    ));
}

/// The Specific Character Set replay walked every item recursively, without the cap: a
/// sequence nested 200,000 deep before the identifiers (or removed by the profile)
/// overflowed the stack and aborted the process. Now refused like any deep nesting.
#[test]
fn deep_nesting_in_an_early_or_removed_sequence_is_refused() {
    for tag in [
        tags::REFERENCED_IMAGE_SEQUENCE,
        tags::OTHER_PATIENT_I_DS_SEQUENCE,
    ] {
        let mut inner = item(vec![el(tags::CODE_VALUE, VR::SH, "X")]);
        for _ in 0..200_000 {
            inner = item(vec![seq(tag, vec![inner])]);
        }
        let mut elems = vec![el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE)];
        elems.extend(inner);
        let mut obj = file(elems);
        let r = engine(&DeidConfig::default()).deidentify(&mut obj);
        assert!(matches!(r, Err(DeidError::TooDeep(_))), "{r:?}");
        // dropping it would recurse 200,000 levels as well (dicom-object's Drop)
        std::mem::forget(obj);
    }
}

#[test]
fn config_errors() {
    let bad = |cfg: DeidConfig| Engine::new(&cfg, SECRET).unwrap_err().to_string();
    let msg = bad(DeidConfig {
        retain_long_full_dates: true,
        retain_long_modified_dates: true,
        ..DeidConfig::default()
    });
    assert!(msg.contains("exclude each other"), "{msg}");
    assert!(bad(DeidConfig {
        uid_root: "2.25.0123".into(),
        ..DeidConfig::default()
    })
    .contains("uid_root"));
    assert!(bad(DeidConfig {
        uid_root: "1.2.3.4.5.6.7.8.9.10.11.12.13".into(),
        ..DeidConfig::default()
    })
    .contains("uid_root"));
    assert!(bad(DeidConfig {
        patient_id_format: "ANON-{hash8}".into(),
        ..DeidConfig::default()
    })
    .contains("patient_id_format"));
    assert!(bad(DeidConfig {
        patient_id_format: "ANON".into(),
        ..DeidConfig::default()
    })
    .contains("patient_id_format"));
    assert!(bad(DeidConfig {
        patient_id_format: "A^{hash12}".into(),
        ..DeidConfig::default()
    })
    .contains("patient_id_format"));
    assert!(bad(DeidConfig {
        safe_private: vec![SafePrivateTag {
            group: 0x0010,
            creator: "X".into(),
            element: 1
        }],
        ..DeidConfig::default()
    })
    .contains("private group"));
    assert!(Engine::new(&DeidConfig::default(), b"short").is_err());

    // serde: unknown fields are rejected, known ones parse
    assert!(toml::from_str::<DeidConfig>("retain_everything = true").is_err());
    assert!(toml::from_str::<DeidConfig>("[screening]\nbogus = 1").is_err());
    let cfg: DeidConfig = toml::from_str(
        "uid_root = \"1.2.826.0.1.3680043.10\"\nretain_long_modified_dates = true\npatient_id_format = \"P{hash12}X\"\n\
         [[safe_private]]\ngroup = 0x0043\ncreator = \"GEMS_PARM_01\"\nelement = 0x27\n\
         [screening]\nusually_burned_in_modalities = [\"US\"]\n",
    )
    .unwrap();
    assert!(cfg.retain_long_modified_dates);
    assert_eq!(cfg.safe_private[0].group, 0x43);
    assert_eq!(cfg.screening.usually_burned_in_modalities, ["US"]);
    assert!(
        !cfg.screening.usually_burned_in_sop_classes.is_empty(),
        "defaults fill missing fields"
    );
    let e = Engine::new(&cfg, SECRET).unwrap();
    let mut obj = from_bytes(&to_bytes(&ct(1, 0, "PAT001")));
    let r = e.deidentify(&mut obj).unwrap();
    let pid = r.pseudonym.patient_id.unwrap();
    assert!(pid.starts_with('P') && pid.ends_with('X') && pid.len() == 14);
    assert!(r
        .sop_instance_uid
        .unwrap()
        .starts_with("1.2.826.0.1.3680043.10."));
}

#[test]
fn every_element_header_is_valid_after_deid() {
    // the output parses again and its text values are ASCII where we replaced them
    let mut obj = from_bytes(&to_bytes(&ct(2, 0, "PAT001")));
    engine(&all_options()).deidentify(&mut obj).unwrap();
    let out = from_bytes(&to_bytes(&obj));
    for e in out.iter() {
        if e.vr() == VR::UI {
            for v in e.value().to_multi_str().unwrap().iter() {
                crate::uid::validate_uid(v.as_str()).unwrap();
            }
        }
    }
}

#[test]
fn descriptor_cleaning() {
    use crate::deid::descriptor::is_clean;
    for ok in [
        "CT CHEST W/O CONTRAST",
        "AXIAL 5mm",
        "T2W FLAIR AX",
        "Thorax 1.25 mm",
        "CAP (PORTAL VENOUS)",
        "3D MPR COR",
        "",
    ] {
        assert!(is_clean(ok), "{ok}");
    }
    for bad in [
        "CT CHEST Suzuki",
        "HEAD 2024",
        "HEAD 12/03",
        "HEAD 12.03.24",
        "HEAD 12-3",
        "頭部 CT",
        "CHEST\u{1}",
        "ABDOMEN ABDOMEN ABDOMEN ABDOMEN ABDOMEN ABDOMEN ABDOMEN ABDOMEN ABDOMEN",
    ] {
        assert!(!is_clean(bad), "{bad}");
    }
    // every vocabulary word is upper-case ASCII letters or digits
    for w in crate::deid::descriptor::VOCABULARY
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
    {
        assert!(
            w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "{w}"
        );
    }
}

#[test]
fn engine_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<crate::deid::Report>();
}

#[test]
fn second_pass_is_a_no_op_without_patient_id() {
    let cfg = DeidConfig {
        retain_long_modified_dates: true,
        ..DeidConfig::default()
    };
    let engine = engine(&cfg);
    let mut obj = file(vec![
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.10.1.1"),
        el(tags::STUDY_DATE, VR::DA, "20240315"),
    ]);
    let r = engine.deidentify(&mut obj).unwrap();
    assert!(r.original.patient_id.is_none());
    assert!(r.pseudonym.patient_id.is_some() && r.pseudonym.patient_name.is_some());
    let a = to_bytes(&obj);
    let mut again = from_bytes(&a);
    engine.deidentify(&mut again).unwrap();
    assert!(to_bytes(&again) == a);
}
