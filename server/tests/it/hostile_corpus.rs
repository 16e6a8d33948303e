//! The hostile-input corpus (`tests/corpus/hostile_gen.rs`) through the
//! server: each file is sent with STOW-RS (gateway token) and, when stored,
//! read back through WADO-RS metadata, rendered, frames and tiles. Every
//! answer must be bounded and clear: a 2xx, or a 4xx with problem+json, or
//! a STOW failure reason; never a dropped connection or a 5xx, the server
//! answers /healthz afterwards, and the process's RSS stays bounded.

#[path = "../../../tests/corpus/hostile_gen.rs"]
mod hostile_gen;

use crate::helpers::{spawn_app, Backend, TestApp, GATEWAY_TOKEN};
use hostile_gen::{Expect, Hostile};
use serde_json::Value;
use server::services::dicomweb::multipart;

const W: &str = "/dicomweb";
/// Resident set of the whole test process (all tests of the binary run
/// in it) after an entry's requests: a decoded 65535×65535 image or an
/// inflated 512 MiB value still held would pass it. (The current RSS, not
/// the high-water mark, which one test would set for all the others.)
const MAX_RSS: u64 = 1536 * 1024 * 1024;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A 4xx must be problem+json (or a STOW failure answer); a 5xx, a
/// dropped connection or a cut answer is a failure.
async fn bounded(what: &str, res: reqwest::Result<reqwest::Response>) -> (u16, Vec<u8>) {
    let res = res.unwrap_or_else(|e| panic!("{what}: no answer (connection dropped?): {e}"));
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{what}: answer cut short: {e}"));
    assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 && status != 404 && status != 406 {
        // problem+json, or the STOW-RS answer naming each failure's reason
        assert!(
            ct.starts_with("application/problem+json") || ct.starts_with("application/dicom+json"),
            "{what}: {status} answered as {ct:?}"
        );
    }
    (status, body.to_vec())
}

async fn stow(app: &TestApp, h: &Hostile) -> (u16, Value) {
    let b = multipart::boundary();
    let body = multipart::encode(&b, &[("application/dicom".into(), h.bytes.clone().into())]);
    let res = app
        .api
        .post(app.url(&format!("{W}/studies")))
        .bearer_auth(GATEWAY_TOKEN)
        .header(
            "content-type",
            multipart::content_type(&b, "application/dicom", None),
        )
        .body(body)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await;
    let (status, body) = bounded(&format!("STOW {}", h.name), res).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, v)
}

fn stored(v: &Value) -> bool {
    v["00081199"]["Value"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn failure_reason(v: &Value) -> Option<u64> {
    v["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64()
}

async fn run(name: &str) {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let h = hostile_gen::all()
        .into_iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no corpus entry {name}"));
    let (status, v) = stow(&app, &h).await;
    if stored(&v) {
        assert_ne!(
            h.expect,
            Expect::Refused,
            "{name}: stored, but must be refused ({status}: {v})"
        );
        app.create_user("hostile", "hostile password").await;
        let c = app.signed_in_browser("hostile", "hostile password").await;
        let inst = format!(
            "{W}/studies/{}/series/{}/instances/{}",
            h.study, h.series, h.sop
        );
        for path in [
            format!("{W}/studies/{}/metadata", h.study),
            format!("{inst}/metadata"),
            format!("{inst}/rendered"),
            format!("{inst}/thumbnail"),
            format!("{inst}/frames/1"),
            format!("{inst}/frames/1/rendered"),
            format!("{inst}/frames/50000000"),
            format!("{inst}/frames/50000000/rendered"),
            format!("{inst}/frames/1/tiles.json"),
            format!("{inst}/frames/1/tiles/0/0_0.jpg"),
            // a tile index whose pixel offset overflows u32
            format!("{inst}/frames/1/tiles/0/16777216_0.jpg"),
            format!("{inst}/bulkdata/7FE00010"),
            inst.clone(),
            format!("/studies/{}", h.study),
        ] {
            let res = c
                .get(app.url(&path))
                .timeout(std::time::Duration::from_secs(120))
                .send()
                .await;
            let (_, body) = bounded(&format!("{name}: GET {path}"), res).await;
            if path.starts_with("/studies/") {
                // the study page escapes markup from the data set
                let html = String::from_utf8_lossy(&body);
                assert!(
                    !html.contains("<script>alert(1)"),
                    "{name}: unescaped markup"
                );
                assert!(!html.contains("<img src=x"), "{name}: unescaped markup");
            }
        }
    } else {
        // refused: a 4xx, or a STOW answer naming a failure reason
        assert!(
            status >= 400 || failure_reason(&v).is_some(),
            "{name}: neither stored nor refused with a reason ({status}: {v})"
        );
    }
    let res = app.api.get(app.url("/healthz")).send().await;
    let (health, _) = bounded(&format!("{name}: /healthz"), res).await;
    assert_eq!(health, 200, "{name}: server unhealthy afterwards");
    let rss = rss();
    assert!(rss < MAX_RSS, "{name}: RSS {} MiB", rss / (1024 * 1024));
    app.cleanup().await;
}

macro_rules! hostile {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                run($name).await;
            }
        )*

        /// Every corpus entry has its test above.
        #[test]
        fn every_entry_is_tested() {
            let tested = [$($name),*];
            for h in hostile_gen::all() {
                assert!(tested.contains(&h.name), "no test for {}", h.name);
            }
        }
    };
}

hostile! {
    value_length_beyond_file => "value-length-beyond-file",
    text_length_beyond_file => "text-length-beyond-file",
    short_pixel_data => "short-pixel-data",
    huge_dimensions => "huge-dimensions",
    html_in_text => "html-in-text",
    broken_iso2022 => "broken-iso2022",
    uid_slash => "uid-slash",
    uid_dotdot_study => "uid-dotdot-study",
    uid_nul => "uid-nul",
    uid_too_long => "uid-too-long",
    duplicate_tags => "duplicate-tags",
    out_of_order_tags => "out-of-order-tags",
    frames_50m => "frames-50m",
    sequence_never_closed => "sequence-never-closed",
    deep_nesting_10000 => "deep-nesting-10000",
    deflate_bomb => "deflate-bomb",
}

/// The committed files are what the generator writes today.
#[test]
fn committed_corpus_is_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/hostile");
    for h in hostile_gen::small() {
        let path = dir.join(format!("{}.dcm", h.name));
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run `cargo run -p mado-tests --bin mado-hostile-corpus`)",
                path.display()
            )
        });
        assert!(
            on_disk == h.bytes,
            "{} is stale: regenerate it",
            path.display()
        );
    }
}

/// (c) The de-identification engine on each entry: parsed by dicom-object
/// as the gateway reads a spool file, then screened and de-identified. An
/// answer (de-identified, quarantined, or an error naming the problem)
/// within seconds, never a panic.
#[test]
fn deid_engine_answers_each_entry() {
    // (the engine is only ever handed what passed `mado_core::guard`)
    use mado_core::deid::{DeidConfig, Engine, Outcome};
    let engine = Engine::new(&DeidConfig::default(), b"hostile-secret-0123456789abcdef").unwrap();
    let mut panics = Vec::new();
    for h in hostile_gen::all() {
        let started = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // as the gateway does: the structure guard before any parse
            // (dicom-rs recurses per nesting level and allocates declared
            // lengths)
            if let Err(e) =
                mado_core::guard::check_part10(&h.bytes, &mado_core::guard::Limits::default())
            {
                return format!("refused by the guard: {e}");
            }
            let obj = dicom_object::OpenFileOptions::new().from_reader(h.bytes.as_slice());
            match obj {
                Err(e) => format!("unreadable: {e}"),
                Ok(mut obj) => match engine.process(&mut obj) {
                    Ok(Outcome::Deidentified(_)) => "de-identified".to_owned(),
                    Ok(Outcome::Quarantine(reason)) => {
                        assert!(!reason.trim().is_empty(), "{}: empty reason", h.name);
                        format!("quarantine: {reason}")
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(!msg.trim().is_empty(), "{}: empty error", h.name);
                        format!("error: {msg}")
                    }
                },
            }
        }));
        match r {
            Ok(answer) => {
                eprintln!("{}: {answer}", h.name);
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "{}: {:?}",
                    h.name,
                    started.elapsed()
                );
            }
            Err(_) => panics.push(h.name),
        }
    }
    assert!(panics.is_empty(), "the engine panicked on {panics:?}");
}
