//! Headless Chromium (the system `/usr/bin/chromium`) driven by
//! `tests/browser/shot.mjs` through npm `playwright-core`.

use crate::process::run_with_timeout;
use crate::util::{scaled, which, workspace_root};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HINT: &str = "run scripts/install-test-deps.sh";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShotImage {
    pub src: Option<String>,
    pub natural_width: u32,
    pub natural_height: u32,
    pub non_blank: bool,
    pub distinct: u32,
    pub stddev: f64,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShotReport {
    pub ok: bool,
    pub url: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    pub title: Option<String>,
    pub images: Vec<ShotImage>,
    pub errors: Vec<String>,
}

pub fn chromium_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MADO_E2E_CHROMIUM").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Ok(fixed);
    }
    which("chromium", &[])
        .ok_or_else(|| anyhow!("chromium not found at /usr/bin/chromium or on PATH; {HINT}"))
}

fn browser_dir() -> PathBuf {
    workspace_root().join("tests/browser")
}

/// Log in at `base_url` with `username`/`password` through the real form,
/// open `path`, wait for every image, screenshot to `out_png`, and report.
/// Fails if Node, Chromium or playwright-core is missing, or the page could
/// not be reached; the caller judges the images.
pub fn chromium_screenshot(
    base_url: &str,
    path: &str,
    username: &str,
    password: &str,
    out_png: &Path,
) -> Result<ShotReport> {
    let node = which("node", &[]).ok_or_else(|| anyhow!("node not found on PATH; {HINT}"))?;
    let chromium = chromium_path()?;
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        bail!(
            "{}/node_modules/playwright-core missing; run `npm ci` in tests/browser (or {HINT})",
            dir.display()
        );
    }
    if let Some(parent) = out_png.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let timeout = scaled(Duration::from_secs(60));
    let cfg = serde_json::json!({
        "base": base_url.trim_end_matches('/'),
        "path": path,
        "username": username,
        "password": password,
        "out": out_png,
        "executable": chromium,
        "timeoutMs": timeout.as_millis() as u64,
    });
    let mut cmd = Command::new(node);
    cmd.current_dir(&dir).arg("shot.mjs").arg(cfg.to_string());
    let (status, out, err) = run_with_timeout(cmd, timeout + Duration::from_secs(30))?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    let report: ShotReport = serde_json::from_str(line).with_context(|| {
        format!("shot.mjs output not understood ({status})\nstdout:\n{out}\nstderr:\n{err}")
    })?;
    if !status.success() || !report.ok {
        bail!(
            "browser run failed ({status}): {:#?}\nstderr:\n{err}",
            report.errors
        );
    }
    Ok(report)
}
