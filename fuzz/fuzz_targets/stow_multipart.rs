//! STOW-RS: the multipart/related body split into parts, each part read as
//! a DICOM Part 10 object (the STOW checks), then what WADO would do with a
//! stored part: frame extraction and decoding of the first frame.
//! Input: up to the first CRLF is the Content-Type header's value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use server::services::dicomweb::{multipart, wado};
use server::services::render;

fuzz_target!(|data: &[u8]| {
    let split = data.windows(2).position(|w| w == b"\r\n");
    let (ct, body) = match split {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => return,
    };
    let Ok(ct) = std::str::from_utf8(ct) else {
        return;
    };
    let Some(boundary) = multipart::boundary_of(ct) else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    let Some(parts) = multipart::parse(&body, &boundary) else {
        return;
    };
    for p in parts.iter().take(4) {
        if server::routes::dicomweb::fuzzing::stow_part(&p.body) {
            let _ = wado::extract_frames(&p.body, &[1], false);
            if let Ok(f) = render::decode_frame(&p.body, 0) {
                let _ = f.to_image8(None);
            }
        }
    }
});
