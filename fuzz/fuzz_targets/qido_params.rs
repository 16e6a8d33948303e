//! QIDO-RS query parameters: the query string as the server splits it
//! (form-urlencoded pairs), then `parse_query` at each level.
#![no_main]

use actix_web::web;
use libfuzzer_sys::fuzz_target;
use server::services::dicomweb::qido::{parse_query, resolve_tag, Level};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    // split as the route does (`web::Query`, percent-decoding)
    let Ok(pairs) = web::Query::<Vec<(String, String)>>::from_query(query) else {
        return;
    };
    for level in [Level::Study, Level::Series, Level::Instance] {
        let _ = parse_query(&pairs, level);
    }
    for (k, _) in pairs.iter() {
        let _ = resolve_tag(k);
    }
});
