//! The memory budget under load, in a test binary of its own so that the
//! process's resident set is the server's (plus this client): 50 concurrent
//! frames and rendered requests on a 24 MiB multi-frame instance each fetch,
//! parse and decode it; without a budget they hold the object all at once
//! (> 1 GiB). With `[limits] memory_budget` = 64 MiB they queue: the
//! resident set grows by far less, and every answer is 200, or 503 with
//! Retry-After — none is dropped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "it/dicom.rs"]
#[allow(dead_code)]
mod dicom;
#[path = "it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use dicom::{ct_slice, Options};
use helpers::{put_object, registration, spawn_app_with, Backend, Uids};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

// the server binary's allocator, so the resident set behaves as in production
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FRAMES: u32 = 48;
const SIDE: u16 = 512;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_requests_stay_within_the_budget() {
    let budget: u64 = 64 << 20;
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.limits.memory_budget = budget;
        s.limits.memory_queue = 64;
        s.limits.memory_wait_seconds = 120;
    })
    .await
    else {
        return;
    };
    // a 512×512 16-bit instance of 48 frames (24 MiB)
    let uids = Uids::new("2.25.9701", "2.25.9711", "2.25.9721");
    let mut o = Options::ct(uids.study.as_str(), uids.series.as_str(), uids.sop.as_str());
    o.size = SIDE;
    let ct = ct_slice(&o);
    let bytes = {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        let mut obj = dicom_object::OpenFileOptions::new()
            .from_reader(&ct.bytes[..])
            .unwrap();
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from(FRAMES.to_string()),
        ));
        let n = usize::from(SIDE) * usize::from(SIDE) * FRAMES as usize;
        let pixels: Vec<i16> = (0..n).map(|i| (i % 4000) as i16).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::I16(pixels.into_iter().collect()),
        ));
        let mut out = Vec::new();
        obj.write_all(&mut out).unwrap();
        out
    };
    assert!(bytes.len() > 24 << 20);
    let mut meta = ct.metadata.clone();
    meta["00280008"] = json!({"vr": "IS", "Value": [FRAMES]});
    put_object(&app, &uids, &bytes).await;
    assert_eq!(
        app.register(&registration(&uids, meta, &bytes))
            .await
            .status(),
        201
    );
    drop(bytes);
    drop(ct);
    app.create_user("mem", "mem password").await;
    let c = app.signed_in_browser("mem", "mem password").await;
    let i = app.url("/dicomweb/studies/2.25.9701/series/2.25.9711/instances/2.25.9721");
    // warm up (first-use allocations: TLS, codecs, pools)
    let res = c.get(format!("{i}/frames/{FRAMES}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let requests = (0..50u32).map(|k| {
        let frame = k % (FRAMES - 1) + 1;
        let url = if k % 2 == 0 {
            format!("{i}/frames/{frame}")
        } else {
            format!("{i}/frames/{frame}/rendered?window={k},400")
        };
        let c = c.clone();
        tokio::spawn(async move {
            let res = c.get(&url).send().await.expect("an answer");
            let status = res.status().as_u16();
            let retry = res.headers().contains_key("retry-after");
            let body = res.bytes().await.expect("a whole body");
            (status, retry, body.len())
        })
    });
    let answers = futures::future::join_all(requests).await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mut ok = 0;
    for a in answers {
        let (status, retry, len) = a.unwrap();
        match status {
            200 => {
                assert!(len > 0);
                ok += 1;
            }
            503 => assert!(retry, "503 without Retry-After"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0);
    let grew = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "resident set: baseline {} MiB, peak +{} MiB, {ok}/50 answered 200",
        baseline >> 20,
        grew >> 20
    );
    // the budget, plus the caches' share of these answers and the
    // allocator's slack; unbounded, the 50 requests hold > 1 GiB
    assert!(
        grew < budget + (256 << 20),
        "resident set grew by {} MiB",
        grew >> 20
    );
    app.cleanup().await;
}
