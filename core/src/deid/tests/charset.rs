//! Specific Character Set handling: Japanese (ISO 2022 IR 87 / IR 13, UTF-8), undecodable
//! values, unknown character sets, and pydicom's character set test files.

use dicom_core::smallvec::SmallVec;
use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};

use super::*;
use crate::deid::{DeidConfig, DeidError};

/// chrH31-style Patient's Name: "Yamada^Tarou=山田^太郎=やまだ^たろう" in ISO 2022 IR 87.
const H31_NAME: &[u8] =
    b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
/// "東京病院" (Tokyo hospital) in ISO 2022 IR 87.
const H31_INSTITUTION: &[u8] = b"\x1b$BEl5~IB1!\x1b(B";

/// dicom-rs decodes "\ISO 2022 IR 87" data with its first (default) repertoire, byte for
/// byte; build values the same way so that they are written back as these exact bytes.
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn base(charset: &[&str]) -> Vec<dicom_object::mem::InMemElement> {
    vec![
        el(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::Strs(charset.iter().map(|s| s.to_string()).collect()),
        ),
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.10.1.7"),
        el(tags::MODALITY, VR::CS, "CT"),
        el(tags::PATIENT_ID, VR::LO, "JP-0001"),
    ]
}

#[test]
fn iso2022_ir87_kanji_name_is_removed_and_kept_values_are_byte_exact() {
    let mut elems = base(&["", "ISO 2022 IR 87"]);
    elems.push(el(tags::PATIENT_NAME, VR::PN, latin1(H31_NAME)));
    elems.push(el(tags::INSTITUTION_NAME, VR::LO, latin1(H31_INSTITUTION)));
    let input = to_bytes(&file(elems));
    assert!(contains(&input, H31_NAME) && contains(&input, H31_INSTITUTION));
    // parsing and writing back without changes preserves the bytes
    assert_eq!(to_bytes(&from_bytes(&input)), input);

    let mut cfg = DeidConfig::default();
    let mut obj = from_bytes(&input);
    engine(&cfg).deidentify(&mut obj).unwrap();
    let out = to_bytes(&obj);
    for needle in [
        &b";3ED"[..],
        b"B@O:",
        b"$d$^$@",
        b"Yamada",
        H31_INSTITUTION,
        b"El5~",
    ] {
        assert!(!contains(&out, needle), "{needle:?} survived");
    }
    // replaced values are plain ASCII
    let name = str_of(&obj, tags::PATIENT_NAME).unwrap();
    assert!(name.is_ascii() && name.starts_with("ANON-"));

    cfg.retain_institution_identity = true;
    let mut obj = from_bytes(&input);
    engine(&cfg).deidentify(&mut obj).unwrap();
    let out = to_bytes(&obj);
    assert!(
        contains(&out, H31_INSTITUTION),
        "kept Japanese value must be byte-exact"
    );
    assert!(!contains(&out, b";3ED"));
}

#[test]
fn utf8_and_ir13_japanese_names() {
    for (charset, name, inst) in [
        ("ISO_IR 192", "山田^太郎", "東京病院"),
        ("ISO_IR 13", "ﾔﾏﾀﾞ^ﾀﾛｳ", "ﾄｳｷｮｳ"),
    ] {
        let mut elems = base(&[charset]);
        elems.push(el(tags::PATIENT_NAME, VR::PN, name));
        elems.push(el(tags::INSTITUTION_NAME, VR::LO, inst));
        let input = to_bytes(&file(elems));
        let parsed = from_bytes(&input);
        assert_eq!(
            str_of(&parsed, tags::PATIENT_NAME).unwrap(),
            name,
            "{charset} decodes"
        );
        let mut cfg = DeidConfig::default();
        let mut obj = from_bytes(&input);
        engine(&cfg).deidentify(&mut obj).unwrap();
        let out = to_bytes(&obj);
        let out_obj = from_bytes(&out);
        assert!(!String::from_utf8_lossy(&out).contains(name));
        assert!(str_of(&out_obj, tags::INSTITUTION_NAME).is_none());
        assert!(str_of(&out_obj, tags::PATIENT_NAME).unwrap().is_ascii());

        cfg.retain_institution_identity = true;
        let mut obj = from_bytes(&input);
        engine(&cfg).deidentify(&mut obj).unwrap();
        let out_obj = from_bytes(&to_bytes(&obj));
        assert_eq!(
            str_of(&out_obj, tags::INSTITUTION_NAME).unwrap(),
            inst,
            "{charset} kept"
        );
    }
}

/// Write `value` with ISO_IR 100 (é = 0xE9), then relabel the file as UTF-8 so that the
/// byte 0xE9 is invalid.
fn invalid_utf8_file(tag: dicom_core::Tag, vr: VR) -> Vec<u8> {
    let mut elems = base(&["ISO_IR 100"]);
    elems.push(el(tag, vr, "Caf\u{e9} X"));
    let mut b = to_bytes(&file(elems));
    let pos = b.windows(10).position(|w| w == b"ISO_IR 100").unwrap();
    b[pos..pos + 10].copy_from_slice(b"ISO_IR 192");
    b
}

#[test]
fn undecodable_kept_value_is_an_error() {
    // Manufacturer is on the safe list (kept): its value cannot be decoded → error
    let b = invalid_utf8_file(tags::MANUFACTURER, VR::LO);
    let mut obj = from_bytes(&b);
    let err = engine(&DeidConfig::default())
        .deidentify(&mut obj)
        .unwrap_err();
    assert!(
        matches!(err, DeidError::Undecodable(t) if t == tags::MANUFACTURER),
        "{err}"
    );
    // ... and so is an undecodable Patient ID (the pseudonym key)
    let b = invalid_utf8_file(tags::PATIENT_ID, VR::LO);
    let mut obj = from_bytes(&b);
    let err = engine(&DeidConfig::default())
        .deidentify(&mut obj)
        .unwrap_err();
    assert!(matches!(err, DeidError::Undecodable(_)), "{err}");
    // a removed attribute is not an error: it is gone either way
    let b = invalid_utf8_file(tags::STUDY_DESCRIPTION, VR::LO);
    let mut obj = from_bytes(&b);
    engine(&DeidConfig::default()).deidentify(&mut obj).unwrap();
    assert!(!contains(&to_bytes(&obj), b"Caf"));
}

#[test]
fn unknown_character_set_is_an_error() {
    let mut elems = base(&["ISO_IR 999"]);
    elems.push(el(tags::PATIENT_NAME, VR::PN, "X^Y"));
    let b = to_bytes(&file(elems));
    let mut obj = from_bytes(&b);
    let err = engine(&DeidConfig::default())
        .deidentify(&mut obj)
        .unwrap_err();
    assert!(matches!(err, DeidError::UnsupportedCharset(_)), "{err}");
    // also inside a sequence item
    let mut elems = base(&["ISO_IR 192"]);
    elems.push(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![el(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::Strs(SmallVec::from_elem("ISO 2022 IR 159".to_string(), 1)),
        )])],
    ));
    let mut obj = file(elems);
    assert!(engine(&DeidConfig::default()).deidentify(&mut obj).is_err());
}

/// Values of PN elements with non-ASCII bytes in explicit VR little endian raw bytes.
fn raw_pn_values(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 132;
    while i + 8 < raw.len() {
        if &raw[i + 4..i + 6] == b"PN" {
            let l = u16::from_le_bytes([raw[i + 6], raw[i + 7]]) as usize;
            if i + 8 + l <= raw.len() {
                let v = &raw[i + 8..i + 8 + l];
                if v.iter().any(|&c| c >= 0x80 || c == 0x1B) {
                    out.push(v.to_vec());
                }
            }
        }
        i += 1;
    }
    out
}

/// pydicom's character set files (set MADO_PYDICOM_CHARSETS to the `charset_files`
/// directory, e.g. `python3 -c "import pydicom.data, os; print(os.path.dirname(pydicom.data.get_charset_files()[0]))"`).
#[test]
fn pydicom_charset_files() {
    let Ok(dir) = std::env::var("MADO_PYDICOM_CHARSETS") else {
        println!("MADO_PYDICOM_CHARSETS not set: skipped");
        return;
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for path in names {
        let raw = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let pns = raw_pn_values(&raw);
        // unmodified round trip keeps the raw name bytes
        let rt = to_bytes(&from_bytes(&raw));
        for v in &pns {
            assert!(contains(&rt, v), "{name}: round trip changed a name");
        }
        let mut obj = from_bytes(&raw);
        match engine(&DeidConfig::default()).deidentify(&mut obj) {
            Ok(_) => {
                let out = to_bytes(&obj);
                for v in &pns {
                    assert!(!contains(&out, v), "{name}: a name survived");
                }
                println!("{name}: ok, {} non-ASCII names removed", pns.len());
            }
            Err(e) => println!("{name}: refused ({e})"),
        }
    }
}
