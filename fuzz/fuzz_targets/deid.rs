//! DICOM parsing (dicom-object, as the gateway reads a spool file) and the
//! de-identification engine on whatever parses, then the writer (the object
//! that is uploaded). Must never panic, hang or allocate without bound.
#![no_main]

use std::sync::LazyLock;

use dicom_gateway::deid::{deidentify, DeidOutcome};
use dicom_object::OpenFileOptions;
use libfuzzer_sys::fuzz_target;
use mado_core::deid::{DeidConfig, Engine};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new(&DeidConfig::default(), b"fuzz-secret-0123456789abcdef").expect("default engine")
});

fuzz_target!(|data: &[u8]| {
    // The input is a Part 10 file without its 128-byte preamble ("DICM",
    // meta group, data set), as STOW and the renderer read stored objects.
    let Ok(obj) = OpenFileOptions::new().from_reader(data) else {
        return;
    };
    // screening only, on a copy (the path `mado-gateway deid` takes first)
    let _ = ENGINE.screen(&obj);
    match deidentify(obj, &ENGINE, false) {
        Ok(DeidOutcome::Deidentified(d)) => {
            let mut out = Vec::new();
            let _ = d.object().write_all(&mut out);
        }
        Ok(DeidOutcome::Quarantine(_)) | Err(_) => {}
    }
});
