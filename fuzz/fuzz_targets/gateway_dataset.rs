//! A C-STORE data set as the gateway's SCP checks it before acknowledging:
//! the head check (SOP Class/Instance, Study/Series UID), the walk over
//! every element header, and the whole-data-set validation. Byte 0 picks
//! the transfer syntax.
#![no_main]

use dicom_gateway::spool::{fuzz_check_dataset, Expected};
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
    let expected = Expected {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.7",
        sop_instance_uid: "1.2.3.4",
        transfer_syntax_uid: TS[usize::from(*sel) % TS.len()],
        calling_ae: "FUZZ",
    };
    fuzz_check_dataset(rest, &expected);
});
