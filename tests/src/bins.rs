//! Locate the workspace's built binaries.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else derived from
/// the running test executable (`<target>/<profile>/deps/…`), else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d
        } else {
            crate::util::workspace_root().join(d)
        };
    }
    if let Some(profile_dir) = exe_profile_dir() {
        if let Some(t) = profile_dir.parent() {
            return t.to_path_buf();
        }
    }
    crate::util::workspace_root().join("target")
}

/// `<target>/<profile>` of the running executable, when it is a Cargo
/// test binary (`…/deps/name-hash`) or a bin (`…/<profile>/name`).
fn exe_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name()? == "deps" {
        Some(dir.parent()?.to_path_buf())
    } else {
        Some(dir.to_path_buf())
    }
}

/// The profile directory to take binaries from: `MADO_E2E_PROFILE`
/// (`debug`/`release`), else the profile the tests were built with.
fn profile_dir() -> PathBuf {
    let profile = std::env::var("MADO_E2E_PROFILE")
        .ok()
        .filter(|p| !p.is_empty());
    match profile {
        Some(p) => target_dir().join(p),
        None => exe_profile_dir()
            .filter(|d| d.parent() == Some(target_dir().as_path()))
            .unwrap_or_else(|| target_dir().join("debug")),
    }
}

/// Path of the built binary `bin` of package `package`, or an error that
/// names the exact build command.
pub fn bin_path(package: &str, bin: &str) -> Result<PathBuf> {
    let dir = profile_dir();
    let p = dir.join(bin);
    let release = if dir.file_name().is_some_and(|n| n == "release") {
        " --release"
    } else {
        ""
    };
    if p.is_file() {
        warn_if_stale(&p, package, release);
        return Ok(p);
    }
    bail!(
        "binary `{bin}` not found at {}; build it first with:\n    cargo build{release} -p {package} --bin {bin}\n(or build everything once: cargo build{release} --workspace --all-targets)",
        p.display()
    )
}

/// Newest modification time of the regular files under `dir`.
fn newest_under(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if let Ok(m) = md.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// Print a warning when a binary is older than the sources it is built
/// from: the suite runs whatever is on disk, and `cargo test -p mado-tests`
/// does not rebuild other packages' binaries.
fn warn_if_stale(binary: &Path, package: &str, release: &str) {
    let root = crate::util::workspace_root();
    let Some(built) = binary.metadata().and_then(|m| m.modified()).ok() else {
        return;
    };
    let newest = [package, "core", "store", "migrations", "viewer"]
        .iter()
        .filter_map(|d| newest_under(&root.join(d)))
        .max();
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "warning: {} is older than its sources; rebuild with: cargo build{release} -p {package}",
            binary.display()
        );
    }
}

pub fn server_bin() -> Result<PathBuf> {
    bin_path("server", "mado-server")
}

pub fn gateway_bin() -> Result<PathBuf> {
    bin_path("dicom-gateway", "mado-gateway")
}
