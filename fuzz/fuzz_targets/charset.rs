//! The Specific Character Set decoder (ISO 2022 escapes, every defined
//! term) and, where a value decodes, the encoder and a round trip.
//! Input: byte 0 picks the VR, byte 1 the number of terms (0..=3), then the
//! terms (NUL-separated), then the raw value.
#![no_main]

use dicom_core::VR;
use libfuzzer_sys::fuzz_target;
use mado_core::deid::charset::CharacterSet;

const VRS: [VR; 7] = [VR::PN, VR::LO, VR::SH, VR::ST, VR::LT, VR::UT, VR::UC];
const TERMS: [&str; 20] = [
    "",
    "ISO_IR 100",
    "ISO_IR 192",
    "GB18030",
    "GBK",
    "ISO_IR 13",
    "ISO 2022 IR 6",
    "ISO 2022 IR 13",
    "ISO 2022 IR 87",
    "ISO 2022 IR 159",
    "ISO 2022 IR 149",
    "ISO 2022 IR 58",
    "ISO 2022 IR 100",
    "ISO_IR 144",
    "ISO_IR 127",
    "ISO_IR 138",
    "ISO_IR 166",
    "ISO 2022 IR 166",
    "ISO_IR 148",
    "ISO_IR 203",
];

fuzz_target!(|data: &[u8]| {
    let [vr, n, rest @ ..] = data else {
        return;
    };
    let vr = VRS[usize::from(*vr) % VRS.len()];
    let n = usize::from(*n % 4);
    let (terms, raw): (Vec<&str>, &[u8]) = if rest.len() >= n {
        // known terms mostly; an odd byte picks a free-form term
        let mut t = Vec::new();
        for &b in &rest[..n] {
            t.push(TERMS[usize::from(b) % TERMS.len()]);
        }
        (t, &rest[n..])
    } else {
        return;
    };
    let Ok(cs) = CharacterSet::from_terms(&terms) else {
        return;
    };
    if let Ok(text) = cs.decode(raw, vr) {
        if let Ok(bytes) = cs.encode(&text, vr) {
            // what the encoder writes, the decoder reads back to the same text
            let back = cs.decode(&bytes, vr).expect("encoded value decodes");
            assert_eq!(back, text, "round trip");
        }
    }
    // free-form terms too (unknown ones are an error, never a panic)
    if let Ok(s) = std::str::from_utf8(raw) {
        let terms: Vec<&str> = s.split('\\').take(8).collect();
        if let Ok(cs) = CharacterSet::from_terms(&terms) {
            let _ = cs.decode(raw, vr);
        }
    }
});
