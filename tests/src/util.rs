//! Small helpers: paths, free ports, waiting on a condition with a deadline.

use anyhow::{bail, Result};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// `<target>/e2e-artifacts/<sub>` (created), for screenshots and kept logs.
pub fn artifacts_dir(sub: &str) -> PathBuf {
    let dir = crate::bins::target_dir().join("e2e-artifacts").join(sub);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A name for the running test, usable in file names.
pub fn test_name() -> String {
    let t = std::thread::current();
    let raw = t.name().unwrap_or("main");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for peers that must
/// be told their port in advance; everything else binds port 0).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Does `haystack` contain `needle`?
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Poll `f` every `every` until it returns `Ok(Some(v))` or `timeout`
/// passes. `Ok(None)` means "not yet"; an `Err` is remembered and reported
/// if the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut every = Duration::from_millis(50);
    let mut last: Option<String> = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(format!("{e:#}")),
        }
        if Instant::now() >= deadline {
            match last {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}; last error: {e}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_millis(500));
    }
}

/// Scale a timeout with `MADO_E2E_TIMEOUT_SCALE` (e.g. `3` on slow CI).
pub fn scaled(d: Duration) -> Duration {
    let k = std::env::var("MADO_E2E_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|k| *k > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(k)
}

/// Find an executable on `PATH` (plus extra dirs searched first).
pub fn which(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra_dirs
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Directories where `scripts/install-test-deps.sh` puts tools.
pub fn tool_dirs() -> Vec<PathBuf> {
    vec![workspace_root().join(".tools/venv/bin")]
}
