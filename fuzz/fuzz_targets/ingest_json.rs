//! The ingest body: JSON → `mado_core::wire::RegisterInstance` (serde, UID
//! newtypes) → the server's checks and extraction of the indexed
//! attributes from the DICOM JSON metadata. Input that is JSON but not a
//! registration is tried as the metadata of a valid registration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mado_core::wire::{RegisterInstance, WIRE_VERSION};
use mado_core::{ObjectKey, SeriesUid, SopInstanceUid, StudyUid, Uid};
use server::services::ingest::fuzz_check_registration;

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<RegisterInstance>(data) {
        Ok(req) => {
            let _ = fuzz_check_registration(&req);
        }
        Err(_) => {
            let Ok(metadata) = serde_json::from_slice::<serde_json::Value>(data) else {
                return;
            };
            let (Ok(study), Ok(series), Ok(sop), Ok(class), Ok(ts)) = (
                StudyUid::parse("1.2.3"),
                SeriesUid::parse("1.2.3.4"),
                SopInstanceUid::parse("1.2.3.4.5"),
                Uid::parse("1.2.840.10008.5.1.4.1.1.7"),
                Uid::parse("1.2.840.10008.1.2.1"),
            ) else {
                return;
            };
            let req = RegisterInstance {
                version: WIRE_VERSION,
                object_key: ObjectKey::instance(&study, &series, &sop)
                    .as_str()
                    .to_owned(),
                size: 1,
                sha256: "0".repeat(64),
                study_uid: study,
                series_uid: series,
                sop_instance_uid: sop,
                sop_class_uid: class,
                transfer_syntax_uid: ts,
                metadata,
            };
            let _ = fuzz_check_registration(&req);
        }
    }
});
