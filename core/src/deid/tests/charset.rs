//! Specific Character Set handling: Japanese (ISO 2022 IR 87 / IR 13, UTF-8), Korean,
//! Chinese, undecodable values, unknown character sets, nested character sets, and
//! pydicom's character set test files.

use dicom_core::smallvec::SmallVec;
use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};

use super::*;
use crate::deid::charset::CharacterSet;
use crate::deid::engine::decode_all_text;
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
            PrimitiveValue::Strs(SmallVec::from_elem("ISO 2022 IR 999".to_string(), 1)),
        )])],
    ));
    let mut obj = file(elems);
    assert!(engine(&DeidConfig::default()).deidentify(&mut obj).is_err());
}

/// Replace the unique same-length ASCII `placeholder` in `buf` by `bytes` (to build values
/// whose bytes dicom-rs's writer could not produce in its codec state).
fn patch(buf: &mut [u8], placeholder: &[u8], bytes: &[u8]) {
    assert_eq!(placeholder.len(), bytes.len());
    let pos = buf
        .windows(placeholder.len())
        .position(|w| w == placeholder)
        .expect("placeholder");
    buf[pos..pos + bytes.len()].copy_from_slice(bytes);
}

/// The decoded text values of a re-parsed output (must decode validly).
fn decoded(raw: &[u8]) -> Vec<(Tag, String)> {
    decode_all_text(&from_bytes(raw)).expect("output decodes with its character sets")
}

#[test]
fn iso2022_values_are_decoded_for_cleaning_and_the_vault() {
    // Korean (ISO 2022 IR 149, G1 designated in every component)
    const I2_NAME: &[u8] = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
    // "CHEST 柘" : the kanji's JIS X 0208 bytes are the ASCII letters "CT"
    const DESC: &[u8] = b"CHEST \x1b$BCT\x1b(B";
    let mut elems = base(&["", "ISO 2022 IR 149", "ISO 2022 IR 87"]);
    elems.push(el(tags::PATIENT_NAME, VR::PN, latin1(I2_NAME)));
    elems.push(el(tags::STUDY_DESCRIPTION, VR::LO, latin1(DESC)));
    elems.push(el(
        tags::INSTITUTION_NAME,
        VR::LO,
        latin1(b"\x1b$)C\xc8\xab"),
    ));
    let input = to_bytes(&file(elems));
    let mut cfg = DeidConfig {
        clean_descriptors: true,
        retain_institution_identity: true,
        ..DeidConfig::default()
    };
    let mut obj = from_bytes(&input);
    let report = engine(&cfg).deidentify(&mut obj).unwrap();
    assert_eq!(
        report.original.patient_name.as_deref(),
        Some("Hong^Gildong=洪^吉洞=홍^길동")
    );
    let out = to_bytes(&obj);
    assert!(!contains(&out, b"\xfb\xf3") && !contains(&out, b"\xb1\xe6\xb5\xbf"));
    assert!(
        !contains(&out, DESC),
        "a kanji spelled in ASCII bytes survived cleaning"
    );
    assert_eq!(str_of(&obj, tags::STUDY_DESCRIPTION).unwrap(), "CLEANED");
    assert!(
        contains(&out, b"\x1b$)C\xc8\xab"),
        "kept value is byte-exact"
    );
    let text = decoded(&out);
    assert!(text
        .iter()
        .any(|(t, v)| *t == tags::INSTITUTION_NAME && v == "홍"));

    // a clean descriptor in an ISO 2022 data set is kept as it is
    let mut elems = base(&["", "ISO 2022 IR 87"]);
    elems.push(el(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST"));
    let mut obj = file(elems);
    cfg.retain_institution_identity = false;
    engine(&cfg).deidentify(&mut obj).unwrap();
    assert_eq!(str_of(&obj, tags::STUDY_DESCRIPTION).unwrap(), "CT CHEST");
}

#[test]
fn broken_escape_or_undeclared_set_is_an_error() {
    let jp: &[&str] = &["", "ISO 2022 IR 87"];
    let cases: [(&[&str], &[u8]); 5] = [
        (jp, b"\x1b$B;3E\x1b(B"),                   // half a kanji
        (jp, b"\x1b$)C\xc8\xab"),                   // KS X 1001 not declared
        (jp, b"X\x1b%G"),                           // unknown escape
        (&["ISO_IR 100"], b"\x1b$B;3\x1b(B"),       // no code extensions
        (&["", "ISO 2022 IR 149"], b"\x1b$)C\xc8"), // half a hangul
    ];
    for (charset, value) in cases {
        // Manufacturer is kept, Patient's Name is read (pseudonym): both must decode
        for tag in [tags::MANUFACTURER, tags::PATIENT_NAME] {
            let mut elems = base(charset);
            let vr = if tag == tags::PATIENT_NAME {
                VR::PN
            } else {
                VR::LO
            };
            elems.push(el(tag, vr, latin1(value)));
            let mut obj = from_bytes(&to_bytes(&file(elems)));
            let err = engine(&DeidConfig::default())
                .deidentify(&mut obj)
                .unwrap_err();
            assert!(
                matches!(err, DeidError::Undecodable(t) if t == tag),
                "{charset:?} {value:?}: {err}"
            );
        }
    }
}

/// chrSQEncoding-like: an item with its own character set inside a sequence that is
/// removed. dicom-rs reads the rest of the file with the item's codec and would write it
/// with the top-level one; kept values must still be written byte-exact.
#[test]
fn nested_character_set_in_a_removed_sequence() {
    const ITEM_NAME: &[u8] = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B";
    let model = "山田CT".as_bytes(); // UTF-8, kept (safe attribute)
    let mut elems = base(&["ISO_IR 192"]);
    elems.push(seq(
        tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
        vec![item(vec![
            el(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::Strs(
                    ["ISO 2022 IR 13", "ISO 2022 IR 87"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
            ),
            el(
                tags::PERSON_NAME,
                VR::PN,
                "P".repeat(ITEM_NAME.len()).as_str(),
            ),
        ])],
    ));
    elems.push(el(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        "M".repeat(model.len()).as_str(),
    ));
    let mut input = to_bytes(&file(elems));
    patch(
        &mut input,
        "P".repeat(ITEM_NAME.len()).as_bytes(),
        ITEM_NAME,
    );
    patch(&mut input, "M".repeat(model.len()).as_bytes(), model);
    let text = decoded(&input);
    assert!(text
        .iter()
        .any(|(t, v)| *t == tags::PERSON_NAME && v == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"));
    assert!(text
        .iter()
        .any(|(t, v)| *t == tags::MANUFACTURER_MODEL_NAME && v == "山田CT"));

    let mut obj = from_bytes(&input);
    engine(&DeidConfig::default()).deidentify(&mut obj).unwrap();
    let out = to_bytes(&obj);
    assert!(!contains(&out, b";3ED") && !contains(&out, b"\xd4\xcf\xc0\xde"));
    assert!(contains(&out, model), "kept UTF-8 value must be byte-exact");
    let text = decoded(&out);
    assert!(text
        .iter()
        .any(|(t, v)| *t == tags::MANUFACTURER_MODEL_NAME && v == "山田CT"));
}

#[test]
fn replacements_are_valid_in_every_character_set() {
    let sets: [&[&str]; 10] = [
        &["", "ISO 2022 IR 87"],
        &["ISO 2022 IR 13", "ISO 2022 IR 87"],
        &["ISO 2022 IR 6", "ISO 2022 IR 149"],
        &["", "ISO 2022 IR 58"],
        &["ISO 2022 IR 100", "ISO 2022 IR 126"],
        &["ISO_IR 13"],
        &["ISO_IR 192"],
        &["GB18030"],
        &["GBK"],
        &["ISO_IR 166"],
    ];
    for charset in sets {
        let cs = CharacterSet::from_terms(charset).unwrap();
        let mut elems = base(charset);
        elems.push(el(tags::PATIENT_NAME, VR::PN, "X^Y"));
        elems.push(el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Z"));
        let mut obj = file(elems);
        let cfg = DeidConfig {
            clean_descriptors: true,
            ..DeidConfig::default()
        };
        engine(&cfg).deidentify(&mut obj).unwrap();
        let out = to_bytes(&obj);
        for (tag, v) in decoded(&out) {
            // every value written decodes, and re-encodes to the same text
            let b = cs.encode(&v, VR::PN).unwrap();
            assert_eq!(cs.decode(&b, VR::PN).unwrap(), v, "{charset:?} {tag}");
        }
    }
}

/// Expected Patient's Name of pydicom's character set files (pydicom's own expectations,
/// tests/test_charset.py and tests/test_filereader.py).
const PYDICOM_NAMES: &[(&str, &str)] = &[
    ("chrArab.dcm", "قباني^لنزار"),
    ("chrFren.dcm", "Buc^Jérôme"),
    ("chrFrenMulti.dcm", "Buc^Jérôme"),
    ("chrGerm.dcm", "Äneas^Rüdiger"),
    ("chrGreek.dcm", "Διονυσιος"),
    ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("chrH32.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ("chrHbrw.dcm", "שרון^דבורה"),
    ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
    ("chrJapMulti.dcm", "やまだ^たろう"),
    ("chrJapMultiExplicitIR6.dcm", "やまだ^たろう"),
    ("chrKoreanMulti.dcm", "김희중"),
    ("chrRuss.dcm", "Люкceмбypг"),
    ("chrSQEncoding.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ("chrSQEncoding1.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ("chrX1.dcm", "Wang^XiaoDong=王^小東="),
    ("chrX2.dcm", "Wang^XiaoDong=王^小东="),
];

/// Byte sequences that would reveal `name` (decoded) in output bytes: the name and each
/// non-ASCII component in the file's character set, and each non-ASCII character in UTF-8
/// and, when it takes two bytes or more (or an escape), in the file's character set.
fn needles(name: &str, cs: &CharacterSet) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut push = |b: Vec<u8>| {
        if !b.is_empty() && !out.contains(&b) {
            out.push(b);
        }
    };
    push(cs.encode(name, VR::PN).unwrap());
    for comp in name.split(['^', '=', '\\']).filter(|c| !c.is_ascii()) {
        push(cs.encode(comp, VR::PN).unwrap());
    }
    for c in name.chars().filter(|c| !c.is_ascii()) {
        let s = c.to_string();
        push(s.as_bytes().to_vec());
        let mut native = cs.encode(&s, VR::PN).unwrap();
        // an escape back to the initial G0 ends the sequence: drop it
        if native.len() > 3 && native[native.len() - 3] == 0x1B {
            native.truncate(native.len() - 3);
        }
        if native.len() >= 2 {
            push(native);
        }
    }
    out
}

/// pydicom's character set files: set MADO_PYDICOM_CHARSETS to the `charset_files`
/// directory (scripts/test.sh does when the venv has pydicom; CI requires it).
#[test]
fn pydicom_charset_files() {
    let Ok(dir) = std::env::var("MADO_PYDICOM_CHARSETS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI: MADO_PYDICOM_CHARSETS must point to pydicom's charset_files"
        );
        println!("MADO_PYDICOM_CHARSETS not set: skipped");
        return;
    };
    let dir = std::path::Path::new(&dir);
    for (file_name, expected) in PYDICOM_NAMES {
        let raw = std::fs::read(dir.join(file_name)).unwrap();
        let input = from_bytes(&raw);
        let text = decode_all_text(&input).unwrap_or_else(|e| panic!("{file_name}: {e}"));
        let name = text
            .iter()
            .find(|(t, _)| *t == tags::PATIENT_NAME)
            .map(|(_, v)| v.trim_end_matches([' ', '\0']))
            .unwrap_or_else(|| panic!("{file_name}: no Patient's Name"));
        assert_eq!(name, *expected, "{file_name}: decoded Patient's Name");
        // every name of the file (PN values at any depth), and the character set it is in
        let pn_tags = [
            tags::PATIENT_NAME,
            tags::OTHER_PATIENT_NAMES,
            tags::OPERATORS_NAME,
            tags::REFERRING_PHYSICIAN_NAME,
            tags::REQUESTING_PHYSICIAN,
        ];
        let names: Vec<&str> = text
            .iter()
            .filter(|(t, v)| pn_tags.contains(t) && !v.is_ascii())
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(!names.is_empty(), "{file_name}");
        // the name's own character set: the item's for the chrSQEncoding files
        let cs = if file_name.starts_with("chrSQEncoding") {
            CharacterSet::from_terms(&["ISO 2022 IR 13", "ISO 2022 IR 87"]).unwrap()
        } else {
            let terms: Vec<String> = input
                .get(tags::SPECIFIC_CHARACTER_SET)
                .and_then(|e| e.value().to_multi_str().ok().map(|v| v.to_vec()))
                .unwrap_or_default();
            CharacterSet::from_terms(&terms[..]).unwrap()
        };

        let mut obj = from_bytes(&raw);
        let report = engine(&DeidConfig::default())
            .deidentify(&mut obj)
            .unwrap_or_else(|e| panic!("{file_name}: {e}"));
        if !file_name.starts_with("chrSQEncoding") {
            assert_eq!(
                report.original.patient_name.as_deref(),
                Some(*expected),
                "{file_name}: vault original"
            );
        }
        let out = to_bytes(&obj);
        let out_text = decoded(&out);
        for n in &names {
            // the needles do find the name in the input
            assert!(
                needles(n, &cs).iter().any(|nd| contains(&raw, nd)),
                "{file_name}: needles miss the input"
            );
            for c in n.chars().filter(|c| !c.is_ascii()) {
                assert!(
                    !out_text.iter().any(|(_, v)| v.contains(c)),
                    "{file_name}: {c} left in a decoded value"
                );
            }
            for needle in needles(n, &cs) {
                assert!(
                    !contains(&out, &needle),
                    "{file_name}: bytes {needle:02x?} of a name left in the output"
                );
            }
        }
        // the pseudonym replaced the name, and is valid in the file's character set
        let pn = out_text
            .iter()
            .find(|(t, _)| *t == tags::PATIENT_NAME)
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(pn.starts_with("ANON-"), "{file_name}");
        // idempotent on its own output
        let mut again = from_bytes(&out);
        engine(&DeidConfig::default())
            .deidentify(&mut again)
            .unwrap();
        assert_eq!(
            to_bytes(&again),
            out,
            "{file_name}: second pass changed the output"
        );
    }
}
