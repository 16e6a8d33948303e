//! Upper-layer PDUs as the gateway's association reads them (dicom-ul's
//! PDU reader: A-ASSOCIATE-RQ with its presentation contexts and user
//! items, P-DATA-TF, release, abort), lenient and strict, then written back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for strict in [false, true] {
        // the gateway's maximum PDU length (and dicom-ul's default)
        if let Ok(Some(pdu)) = dicom_ul::pdu::read_pdu(data, 16_384, strict) {
            let mut out = Vec::new();
            let _ = dicom_ul::pdu::write_pdu(&mut out, &pdu);
        }
    }
});
