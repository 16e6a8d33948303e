//! DIMSE command sets (C-ECHO/C-STORE/N-ACTION requests, N-EVENT-REPORT
//! responses) and the Storage Commitment N-ACTION data set, as the gateway
//! decodes them. Byte 0 picks the decoder and, for the N-ACTION data set,
//! the transfer syntax.
#![no_main]

use dicom_gateway::{commitment, dimse};
use libfuzzer_sys::fuzz_target;

const TS: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];

fuzz_target!(|data: &[u8]| {
    let [sel, rest @ ..] = data else {
        return;
    };
    match sel % 3 {
        0 => {
            if let Ok(cmd) = dimse::Command::parse(rest) {
                let _ = dimse::store_response(
                    cmd.message_id,
                    cmd.affected_sop_class.as_deref().unwrap_or(""),
                    cmd.affected_sop_instance.as_deref().unwrap_or(""),
                    0xC000,
                );
                let _ = commitment::ActionCommand::from(&cmd);
            }
        }
        1 => {
            let _ = commitment::response_status(rest);
        }
        _ => {
            let ts = TS[usize::from(sel / 3) % TS.len()];
            let _ = commitment::parse_request(rest, ts);
        }
    }
});
