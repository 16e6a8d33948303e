//! OHIF interoperability: the bundled OHIF viewer (`[ohif] dist_dir`,
//! prepared by `scripts/fetch-ohif.sh`) opens a study from the server's
//! DICOMweb in headless Chromium and shows a non-blank viewport
//! (`tests/interop/ohif_check.mjs`).
//!
//! The OHIF dist is `.tools/ohif` (`scripts/install-test-deps.sh` fetches
//! it) or `MADO_OHIF_DIST`. Without it the test is skipped with a printed
//! reason, except in CI (`CI=true`), where it fails.

use crate::dicom::{ct_slice, Options};
use crate::helpers::{put_object, registration, spawn_app_with, Backend, Uids};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The prerequisite that is missing, if any.
fn missing(dist: &std::path::Path) -> Option<String> {
    if !dist.join("index.html").is_file() {
        return Some(format!(
            "no OHIF dist at {} (bash scripts/fetch-ohif.sh {})",
            dist.display(),
            dist.display()
        ));
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Some("tests/browser/node_modules/playwright-core is not installed".into());
    }
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ohif_opens_a_study() {
    let dist = std::env::var_os("MADO_OHIF_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/ohif"));
    if let Some(why) = missing(&dist) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "OHIF check cannot run in CI: {why} (scripts/install-test-deps.sh installs it)"
        );
        println!("skipping the OHIF check: {why}");
        return;
    }
    let dist_dir = dist.clone();
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.ohif.dist_dir = Some(dist_dir);
    })
    .await
    .unwrap();
    let study = "2.25.9401";
    for i in 1..=3 {
        let sop = format!("2.25.94011{i}");
        let uids = Uids::new(study, "2.25.94012", &sop);
        let mut o = Options::ct(study, "2.25.94012", &sop);
        o.size = 256;
        let ct = ct_slice(&o);
        put_object(&app, &uids, &ct.bytes).await;
        assert_eq!(
            app.register(&registration(&uids, ct.metadata.clone(), &ct.bytes))
                .await
                .status(),
            201
        );
    }
    app.create_user("ohif", "ohif check password").await;

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ohif-check.png");
    let cfg = serde_json::json!({
        "base": app.base,
        "study": study,
        "username": "ohif",
        "password": "ohif check password",
        "out": shot,
        "timeoutMs": 90_000,
    });
    let script = root().join("tests/interop/ohif_check.mjs");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(cfg.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "OHIF check failed (screenshot {})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        shot.display()
    );
    println!("OHIF check: {stdout} (screenshot {})", shot.display());
    app.cleanup().await;
}
