//! One case per row of Table E.1-1, generated from the table itself: a unique sentinel in
//! the row's attribute (VR-appropriate), at top level and two sequence levels deep, under
//! the basic profile and under each option. After de-identification the sentinel's bytes
//! must be absent from the whole output file (preamble and file meta included) unless the
//! options keep the attribute, in which case they must still be there.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::smallvec::SmallVec;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_object::mem::InMemElement;

use super::*;
use crate::deid::table::{self, Action, OptionColumn, Row, TagPattern};
use crate::deid::{DeidConfig, SafePrivateTag};

fn option_configs() -> Vec<(&'static str, DeidConfig)> {
    let base = DeidConfig::default;
    let mut v: Vec<(&'static str, DeidConfig)> = vec![("basic", base())];
    let mut push = |name: &'static str, f: fn(&mut DeidConfig)| {
        let mut c = base();
        f(&mut c);
        v.push((name, c));
    };
    push("retain_safe_private", |c| {
        c.retain_safe_private = true;
        c.safe_private = vec![SafePrivateTag {
            group: 0x0009,
            creator: "QZX PRIVATE".into(),
            element: 0x01,
        }];
    });
    push("retain_uids", |c| c.retain_uids = true);
    push("retain_device_identity", |c| {
        c.retain_device_identity = true
    });
    push("retain_institution_identity", |c| {
        c.retain_institution_identity = true
    });
    push("retain_patient_characteristics", |c| {
        c.retain_patient_characteristics = true
    });
    push("retain_long_full_dates", |c| {
        c.retain_long_full_dates = true
    });
    push("retain_long_modified_dates", |c| {
        c.retain_long_modified_dates = true
    });
    push("clean_descriptors", |c| c.clean_descriptors = true);
    push("clean_structured_content", |c| {
        c.clean_structured_content = true
    });
    push("clean_graphics", |c| c.clean_graphics = true);
    push("clean_pixel_data", |c| c.clean_pixel_data = true);
    push("all_but_full_dates", |c| {
        c.retain_safe_private = true;
        c.safe_private = vec![SafePrivateTag {
            group: 0x0009,
            creator: "QZX PRIVATE".into(),
            element: 0x01,
        }];
        c.retain_uids = true;
        c.retain_device_identity = true;
        c.retain_institution_identity = true;
        c.retain_patient_characteristics = true;
        c.retain_long_modified_dates = true;
        c.clean_descriptors = true;
        c.clean_structured_content = true;
        c.clean_graphics = true;
        c.clean_pixel_data = true;
    });
    v
}

fn option_active(cfg: &DeidConfig, col: OptionColumn) -> bool {
    match col {
        OptionColumn::RetainSafePrivate => cfg.retain_safe_private,
        OptionColumn::RetainUids => cfg.retain_uids,
        OptionColumn::RetainDeviceIdentity => cfg.retain_device_identity,
        OptionColumn::RetainInstitutionIdentity => cfg.retain_institution_identity,
        OptionColumn::RetainPatientCharacteristics => cfg.retain_patient_characteristics,
        OptionColumn::RetainLongFullDates => cfg.retain_long_full_dates,
        OptionColumn::RetainLongModifiedDates => cfg.retain_long_modified_dates,
        OptionColumn::CleanDescriptors => cfg.clean_descriptors,
        OptionColumn::CleanStructuredContent => cfg.clean_structured_content,
        OptionColumn::CleanGraphics => cfg.clean_graphics,
    }
}

/// Whether the sentinel may survive, from the documented semantics (module docs of deid).
fn expect_kept(row: &Row, cfg: &DeidConfig, vr: VR) -> bool {
    let cells: Vec<Action> = row
        .options
        .iter()
        .filter(|(c, _)| option_active(cfg, *c))
        .map(|(_, a)| *a)
        .collect();
    let action = if cells.contains(&Action::C) {
        Action::C
    } else if cells.contains(&Action::K) {
        Action::K
    } else {
        row.basic
    };
    if [tags::PATIENT_ID, tags::PATIENT_NAME]
        .iter()
        .any(|t| TagPattern::Exact(key(*t)) == row.pattern)
    {
        return false;
    }
    match action {
        Action::K => true,
        Action::XZU => vr == VR::SQ,
        Action::C => matches!(vr, VR::SQ | VR::TM),
        _ => false,
    }
}

fn key(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

fn dict_vr(tag: Tag) -> VR {
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::LO)
}

/// Element carrying a sentinel and the bytes to look for.
fn sentinel(i: usize, tag: Tag, vr: VR) -> (InMemElement, Vec<u8>) {
    let text = format!("QZXS{i:04}");
    let n = i as u16;
    let le16 = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (v, needle): (PrimitiveValue, Vec<u8>) = match vr {
        VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT => {
            (PrimitiveValue::from(text.as_str()), text.into_bytes())
        }
        VR::UR => {
            let s = format!("http://qzx.invalid/{i:04}");
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::DA => {
            let s = format!(
                "{}{:02}{:02}",
                1920 + i / 336,
                1 + (i / 28) % 12,
                1 + i % 28
            );
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::DT => {
            let s = format!(
                "{}{:02}{:02}123456",
                1920 + i / 336,
                1 + (i / 28) % 12,
                1 + i % 28
            );
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::TM => {
            let s = format!(
                "{:02}{:02}{:02}.{:04}",
                10 + i % 10,
                i % 60,
                (i / 60) % 60,
                i
            );
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::IS | VR::DS => {
            let s = format!("7{i:08}");
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::AS => {
            let s = format!("{:03}W", 100 + i % 900);
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::UI => {
            let s = format!("1.2.826.0.1.3680043.10.999.{i}");
            (PrimitiveValue::from(s.as_str()), s.into_bytes())
        }
        VR::AT => (
            PrimitiveValue::Tags(SmallVec::from_vec(vec![Tag(0x1235, n), Tag(0x1237, n)])),
            le16(&[0x1235, n, 0x1237, n]),
        ),
        VR::US | VR::OW => {
            let v = [0xBEEF, n, 0xCAFE];
            (PrimitiveValue::U16(SmallVec::from_slice(&v)), le16(&v))
        }
        VR::SS => {
            let v = [-4242i16, n as i16, -4343];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::I16(SmallVec::from_slice(&v)), b)
        }
        VR::UL | VR::OL => {
            let v = [0xDEAD_BEEF, u32::from(n)];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::U32(SmallVec::from_slice(&v)), b)
        }
        VR::SL => {
            let v = [-0x1EAD_BEEF, i32::from(n)];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::I32(SmallVec::from_slice(&v)), b)
        }
        VR::SV => {
            let v = [-0x1EAD_BEEF_0000i64, i64::from(n)];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::I64(SmallVec::from_slice(&v)), b)
        }
        VR::UV | VR::OV => {
            let v = [0xDEAD_BEEF_0000u64, u64::from(n)];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::U64(SmallVec::from_slice(&v)), b)
        }
        VR::FL | VR::OF => {
            let v = [1234.5f32 + f32::from(n), -98.25];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::F32(SmallVec::from_slice(&v)), b)
        }
        VR::FD | VR::OD => {
            let v = [1234.5f64 + f64::from(n), -98.25];
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (PrimitiveValue::F64(SmallVec::from_slice(&v)), b)
        }
        VR::OB | VR::UN => {
            let mut b = vec![0xDE, 0xAD, 0xBE, 0xEF];
            b.extend_from_slice(&(i as u32).to_le_bytes());
            (PrimitiveValue::U8(SmallVec::from_slice(&b)), b)
        }
        VR::SQ => unreachable!("sequences are built by the caller"),
    };
    (DataElement::new(tag, vr, v), needle)
}

struct Case {
    /// element to place
    elem: InMemElement,
    /// bytes that may survive only if the row is kept
    needle: Vec<u8>,
    /// bytes that must never survive (patient name inside a sequence row's item)
    never: Option<Vec<u8>>,
    vr: VR,
}

fn case_for(i: usize, tag: Tag) -> Case {
    let vr = dict_vr(tag);
    if vr == VR::SQ {
        let a = format!("QZXA{i:04}");
        let b = format!("QZXB{i:04}");
        let it = item(vec![
            el(tags::PATIENT_NAME, VR::PN, a.as_str()),
            el(tags::CODE_VALUE, VR::SH, b.as_str()),
        ]);
        return Case {
            elem: seq(tag, vec![it]),
            needle: b.into_bytes(),
            never: Some(a.into_bytes()),
            vr,
        };
    }
    let (elem, needle) = sentinel(i, tag, vr);
    Case {
        elem,
        needle,
        never: None,
        vr,
    }
}

fn base_elements() -> Vec<InMemElement> {
    vec![
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.10.1.1"),
        el(tags::MODALITY, VR::CS, "CT"),
    ]
}

/// Build the input file bytes, with `preamble_text` written into the preamble.
fn input_bytes(elems: Vec<InMemElement>, preamble_text: &str) -> Vec<u8> {
    let mut b = to_bytes(&file(elems));
    let p = preamble_text.as_bytes();
    b[..p.len()].copy_from_slice(p);
    b
}

/// Run one case; returns an error message on failure.
fn run(
    engine: &Engine,
    cfg: &DeidConfig,
    row: &Row,
    i: usize,
    tag: Tag,
    nested: bool,
) -> Result<(), String> {
    let case = case_for(i, tag);
    let mut elems = base_elements();
    if nested {
        let inner = item(vec![case.elem.clone()]);
        let mid = item(vec![seq(tags::PIXEL_MEASURES_SEQUENCE, vec![inner])]);
        elems.push(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![mid]));
    } else {
        elems.retain(|e| e.tag() != tag);
        elems.push(case.elem.clone());
    }
    let preamble = format!("QZXPREAMBLE{i:04}");
    let input = input_bytes(elems, &preamble);
    let where_ = if nested { "nested" } else { "top" };
    if !contains(&input, &case.needle) || !contains(&input, preamble.as_bytes()) {
        return Err(format!(
            "row {i} {}: sentinel missing from input ({where_})",
            row.tag_text
        ));
    }
    let mut obj = from_bytes(&input);
    engine
        .deidentify(&mut obj)
        .map_err(|e| format!("row {i} {}: deidentify failed: {e}", row.tag_text))?;
    let out = to_bytes(&obj);
    if contains(&out, preamble.as_bytes()) || contains(&out, b"SRC_AE") {
        return Err(format!("row {i}: preamble or file meta sentinel survived"));
    }
    if let Some(never) = &case.never {
        if contains(&out, never) {
            return Err(format!(
                "row {i} {}: Patient's Name inside the sequence survived ({where_})",
                row.tag_text
            ));
        }
    }
    let kept = expect_kept(row, cfg, case.vr);
    let found = contains(&out, &case.needle);
    if found != kept {
        return Err(format!(
            "row {i} {} {:?} basic {}: expected {} but sentinel {} ({where_})",
            row.tag_text,
            case.vr,
            row.basic.code(),
            if kept { "kept" } else { "gone" },
            if found { "found" } else { "absent" }
        ));
    }
    Ok(())
}

#[test]
fn every_table_row_under_every_option() {
    let rows = table::rows().unwrap();
    let mut failures = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    let mut runs = 0usize;
    for (name, cfg) in option_configs() {
        let engine = engine(&cfg);
        for row in rows {
            let TagPattern::Exact(t) = row.pattern else {
                continue;
            };
            let tag = Tag((t >> 16) as u16, (t & 0xFFFF) as u16);
            if tag.group() <= 0x0002 {
                continue; // command set and file meta rows: see meta_uid_row / command rows below
            }
            for nested in [false, true] {
                runs += 1;
                if let Err(e) = run(&engine, &cfg, row, row.index, tag, nested) {
                    failures.push(format!("[{name}] {e}"));
                }
            }
            covered.insert(row.index);
        }
    }
    // pattern rows, the file meta row and the command rows are covered by the tests below
    let extra = rows
        .iter()
        .filter(|r| !matches!(r.pattern, TagPattern::Exact(t) if (t >> 16) > 2))
        .count();
    println!(
        "Table E.1-1: {} rows; {} concrete-tag rows tested by sentinel ({} runs); {} pattern/meta/command rows by dedicated tests; total covered {}",
        rows.len(),
        covered.len(),
        runs,
        extra,
        covered.len() + extra
    );
    assert_eq!(covered.len() + extra, rows.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn pattern_rows_curves_overlays_private() {
    for (name, cfg) in option_configs() {
        let engine = engine(&cfg);
        let elems = {
            let mut v = base_elements();
            v.push(el(Tag(0x5000, 0x0005), VR::US, PrimitiveValue::from(2u16)));
            v.push(DataElement::new(
                Tag(0x5000, 0x3000),
                VR::OB,
                PrimitiveValue::U8(SmallVec::from_slice(b"QZXCURVE")),
            ));
            v.push(el(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(4u16)));
            v.push(DataElement::new(
                Tag(0x6000, 0x3000),
                VR::OW,
                PrimitiveValue::U16(SmallVec::from_slice(&[0x5A51, 0x4F58, 0x5645])),
            ));
            v.push(el(Tag(0x6002, 0x4000), VR::LT, "QZXOVLCOMMENT"));
            v.push(el(Tag(0x0009, 0x0010), VR::LO, "QZX PRIVATE"));
            v.push(el(Tag(0x0009, 0x1001), VR::LO, "QZXPRIVKEPT"));
            v.push(el(Tag(0x0009, 0x1002), VR::LO, "QZXPRIVDROP"));
            v.push(el(Tag(0x0011, 0x0010), VR::LO, "QZX OTHER"));
            v.push(el(Tag(0x0011, 0x1001), VR::LO, "QZXOTHERPRIV"));
            v
        };
        let mut obj = from_bytes(&to_bytes(&file(elems.clone())));
        // nested copy too
        let mut nested = base_elements();
        let inner = item(
            elems
                .into_iter()
                .filter(|e| e.tag().group() > 0x0008)
                .collect(),
        );
        nested.push(seq(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![item(vec![seq(tags::PIXEL_MEASURES_SEQUENCE, vec![inner])])],
        ));
        let mut obj2 = from_bytes(&to_bytes(&file(nested)));
        for o in [&mut obj, &mut obj2] {
            engine.deidentify(o).unwrap();
            let out = to_bytes(o);
            for gone in [
                &b"QZXCURVE"[..],
                b"QZXOVLCOMMENT",
                b"QZXPRIVDROP",
                b"QZXOTHERPRIV",
                b"QZX OTHER",
                b"QZXOV",
            ] {
                assert!(
                    !contains(&out, gone),
                    "[{name}] {} survived",
                    String::from_utf8_lossy(gone)
                );
            }
            let keep_private = cfg.retain_safe_private;
            assert_eq!(
                contains(&out, b"QZXPRIVKEPT"),
                keep_private,
                "[{name}] whitelisted private"
            );
            assert_eq!(
                contains(&out, b"QZX PRIVATE"),
                keep_private,
                "[{name}] private creator"
            );
            // overlay group remnants are removed with the overlay data
            assert!(o.get(Tag(0x6000, 0x0010)).is_none());
        }
    }
}

#[test]
fn meta_uid_row_and_command_rows() {
    let rows = table::rows().unwrap();
    let meta_row = rows
        .iter()
        .find(|r| r.pattern == TagPattern::Exact(0x0002_0003))
        .unwrap();
    assert_eq!(meta_row.basic, Action::U);
    for (name, cfg) in option_configs() {
        let engine = engine(&cfg);
        let mut obj = file(base_elements());
        obj.meta_mut().media_storage_sop_instance_uid = "1.2.826.0.1.3680043.10.1.1".into();
        obj.meta_mut().update_information_group_length();
        engine.deidentify(&mut obj).unwrap();
        let out = to_bytes(&obj);
        let kept = cfg.retain_uids;
        assert_eq!(
            contains(&out, b"1.2.826.0.1.3680043.10.1.1"),
            kept,
            "[{name}]"
        );
        // the meta UID equals the data set's SOP Instance UID
        assert_eq!(
            obj.meta().media_storage_sop_instance_uid(),
            str_of(&obj, tags::SOP_INSTANCE_UID).unwrap()
        );
    }
    // command set rows compile to rules (they never occur in a stored data set)
    let r = crate::deid::engine::rules_for(&DeidConfig::default()).unwrap();
    assert_eq!(
        r.lookup(Tag(0x0000, 0x1000)),
        crate::deid::engine::Op::Remove
    );
    assert_eq!(r.lookup(Tag(0x0000, 0x1001)), crate::deid::engine::Op::Uid);
}

#[test]
fn table_shape_matches_readme() {
    let rows = table::rows().unwrap();
    assert_eq!(rows.len(), 621);
    let patterns = rows
        .iter()
        .filter(|r| !matches!(r.pattern, TagPattern::Exact(_)))
        .count();
    assert_eq!(patterns, 4);
    let count = |a: Action| rows.iter().filter(|r| r.basic == a).count();
    assert_eq!(count(Action::X), 384);
    assert_eq!(count(Action::D), 92);
    assert_eq!(count(Action::U), 54);
    assert_eq!(count(Action::Z), 42);
    assert_eq!(count(Action::XD), 22);
    assert_eq!(count(Action::XZ), 11);
    assert_eq!(count(Action::XZD), 8);
    assert_eq!(count(Action::ZD), 6);
    assert_eq!(count(Action::XZU), 2);
    // every U row is a UI attribute in the dictionary
    for r in rows.iter().filter(|r| r.basic == Action::U) {
        if let TagPattern::Exact(t) = r.pattern {
            let tag = Tag((t >> 16) as u16, (t & 0xFFFF) as u16);
            assert_eq!(dict_vr(tag), VR::UI, "{}", r.tag_text);
        }
    }
    assert!(rows.iter().all(|r| !r.name.is_empty()));
    assert_eq!(rows.iter().filter(|r| r.std_comp_iod).count(), 438);
}

#[test]
fn safe_list_is_standard_and_disjoint_from_the_table() {
    let rows = table::rows().unwrap();
    let safe = table::safe_attributes().unwrap();
    assert!(safe.len() > 150);
    let mut seen = std::collections::HashSet::new();
    for s in safe {
        let tag = Tag((s.tag >> 16) as u16, (s.tag & 0xFFFF) as u16);
        let entry = StandardDataDictionary
            .by_tag(tag)
            .unwrap_or_else(|| panic!("{tag} not in the dictionary"));
        assert_eq!(entry.alias(), s.keyword, "keyword of {tag}");
        assert!(seen.insert(s.tag), "{tag} listed twice");
        assert!(
            !rows.iter().any(|r| r.pattern == TagPattern::Exact(s.tag)),
            "{tag} {} is in Table E.1-1",
            s.keyword
        );
    }
}
