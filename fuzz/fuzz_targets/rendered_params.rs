//! WADO-RS rendered / thumbnail / tile / frame parameters: the query of a
//! rendered request (window, viewport, quality), a frame number and a
//! frame list as they come in the path.
#![no_main]

use actix_web::web;
use libfuzzer_sys::fuzz_target;
use server::routes::dicomweb::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pairs) = web::Query::<Vec<(String, String)>>::from_query(s) {
        let _ = fuzzing::rendered_params(&pairs);
    }
    let _ = fuzzing::frame_number(s);
    let _ = fuzzing::frame_list(s);
});
