//! OIDC sign-in through the real redirect flow in headless Chromium
//! (`tests/browser/oidc_login.mjs`, npm `playwright-core`, the system
//! `/usr/bin/chromium`): Mado's "Sign in with SSO" button, the provider's
//! login and consent forms, back to Mado's worklist. The screenshot is kept
//! in `CARGO_TARGET_TMPDIR/oidc-browser/`.
//!
//! Like the other OIDC tests this one fails (not skips) when a peer is
//! missing: `scripts/install-test-deps.sh` installs Chromium, Node and both
//! npm trees.

use crate::helpers::Backend;
use crate::oidc::{free_port, spawn_with_provider, start_provider};
use std::path::{Path, PathBuf};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

pub(crate) fn chromium() -> PathBuf {
    std::env::var_os("MADO_E2E_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

pub(crate) fn shot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-shots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run a script of `tests/browser` with one JSON argument; its one-line
/// JSON report.
pub(crate) async fn run_script(script: &str, cfg: serde_json::Value) -> serde_json::Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in tests/browser (scripts/install-test-deps.sh does)"
    );
    assert!(chromium().is_file(), "no Chromium at {:?}", chromium());
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(script)
            .arg(cfg.to_string())
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("browser script timed out")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{script}: no JSON report ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A PNG of plausible size (and a real PNG signature).
pub(crate) fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{path:?} is not a PNG"
    );
    assert!(bytes.len() > 5_000, "{path:?} is suspiciously small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_in_chromium() {
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/auth/oidc/callback");
    let Some((_provider, issuer)) = start_provider(&redirect).await else {
        panic!("the OpenID Provider did not start");
    };
    let Some(app) = spawn_with_provider(Backend::Sqlite, port, &issuer, |_| {}).await else {
        return;
    };
    let out = shot_dir().join("oidc-login.png");
    let _ = std::fs::remove_file(&out);
    let report = run_script(
        "oidc_login.mjs",
        serde_json::json!({
            "base": app.base,
            "login": "erin",
            "out": out,
            "executable": chromium(),
            "timeoutMs": 60000,
        }),
    )
    .await;
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["url"], app.url("/"), "{report:#}");
    let text = report["text"].as_str().unwrap();
    assert!(text.contains("oidc:erin"), "{report:#}");
    assert!(text.contains("Studies"), "{report:#}");
    assert_png(&out);
    // The account exists and a session was made for it.
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use server::db::entities::{sessions, users};
    let u = users::Entity::find()
        .filter(users::Column::Username.eq("oidc:erin"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let n = sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(u.id))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.cleanup().await;
}
