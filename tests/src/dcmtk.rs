//! dcmtk `storescu` as the modality: the real C-STORE SCU hospitals use.

use crate::process::run_with_timeout;
use crate::util::scaled;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

const HINT: &str = "install dcmtk (apt-get install dcmtk, or scripts/install-test-deps.sh)";

/// dcmtk's `storescu`. Other tools ship a `storescu` too (pynetdicom's
/// console script), so each candidate on PATH is asked for its version and
/// only dcmtk's is accepted. `MADO_E2E_STORESCU` overrides the search.
pub fn dcmtk_storescu() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MADO_E2E_STORESCU").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dcmtk_tool("storescu")
}

/// The dcmtk program `name` (`/usr/bin` first, then PATH): pynetdicom
/// installs console scripts of the same names (storescu, echoscu, …), so
/// each candidate is asked for its version and only dcmtk's is accepted.
pub fn dcmtk_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates: Vec<PathBuf> = vec![PathBuf::from("/usr/bin").join(name)];
    candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        let mut cmd = Command::new(&c);
        cmd.arg("--version");
        if let Ok((_, out, err)) = run_with_timeout(cmd, Duration::from_secs(10)) {
            if out.contains("dcmtk") || err.contains("dcmtk") {
                return Ok(c);
            }
        }
    }
    bail!("dcmtk {name} not found (checked /usr/bin and PATH); {HINT}")
}

/// What `storescu -v` reported.
#[derive(Debug)]
pub struct StoreReport {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// "Received Store Response (Success)" lines.
    pub successes: usize,
    /// Store responses with any other status.
    pub failures: usize,
    /// storescu found no accepted presentation context for some file.
    pub no_presentation_context: bool,
}

impl StoreReport {
    pub fn output(&self) -> String {
        format!(
            "storescu exit: {}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn parse_report(status: ExitStatus, stdout: String, stderr: String) -> StoreReport {
    let all = format!("{stdout}\n{stderr}");
    let mut successes = 0;
    let mut failures = 0;
    for line in all.lines() {
        if line.contains("Received Store Response") {
            if line.contains("(Success)") {
                successes += 1;
            } else {
                failures += 1;
            }
        }
    }
    let no_presentation_context = all.contains("No presentation context")
        || all.contains("no presentation context")
        || all.contains("No Acceptable Presentation Contexts");
    StoreReport {
        status,
        stdout,
        stderr,
        successes,
        failures,
        no_presentation_context,
    }
}

/// Send `files` to `127.0.0.1:port` (called AE `MADO`) in one association.
/// Returns the report without judging it.
pub fn storescu(files: &[PathBuf], port: u16) -> Result<StoreReport> {
    storescu_to("127.0.0.1", port, "MADO", files)
}

pub fn storescu_to(
    host: &str,
    port: u16,
    called_ae: &str,
    files: &[PathBuf],
) -> Result<StoreReport> {
    if files.is_empty() {
        return Err(anyhow!("storescu: no files"));
    }
    let bin = dcmtk_storescu()?;
    let mut cmd = Command::new(bin);
    cmd.env("TCP_NODELAY", "1")
        .args(["-v", "-aet", "MADOTEST", "-aec", called_ae])
        .args(["-to", "30", "-ta", "30", "-td", "120"])
        .arg("--required")
        .arg(host)
        .arg(port.to_string())
        .args(files.iter().map(|f| f.as_os_str()));
    let timeout = scaled(Duration::from_secs(60 + 2 * files.len() as u64));
    let (status, out, err) = run_with_timeout(cmd, timeout)?;
    Ok(parse_report(status, out, err))
}

/// Send `files` and require exit status 0 and one success response per file.
pub fn storescu_ok(files: &[PathBuf], port: u16) -> Result<StoreReport> {
    let r = storescu(files, port)?;
    if !r.status.success() || r.successes != files.len() || r.failures != 0 {
        bail!(
            "storescu: expected {} successful C-STORE responses, got {} (failures {})\n{}",
            files.len(),
            r.successes,
            r.failures,
            r.output()
        );
    }
    Ok(r)
}

/// `dcmdump` of a file, for diagnostics.
pub fn dcmdump(path: &Path) -> String {
    let mut cmd = Command::new("dcmdump");
    cmd.arg(path);
    match run_with_timeout(cmd, Duration::from_secs(20)) {
        Ok((_, out, err)) => format!("{out}{err}"),
        Err(e) => format!("dcmdump failed: {e:#}"),
    }
}

/// Send `file` (whose SOP class is `sop_class_uid`) with `storescu -xf`, a
/// profile that proposes exactly that SOP class plus CT Image Storage. dcmtk
/// refuses to propose unknown SOP classes on its own (`--required` checks
/// them locally), so this is how a peer with an unknown class is simulated.
/// Returns the report and whether the SCP answered "Abstract Syntax Not
/// Supported" for that class's presentation context.
pub fn storescu_propose(
    file: &Path,
    port: u16,
    sop_class_uid: &str,
) -> Result<(StoreReport, bool)> {
    let bin = dcmtk_storescu()?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("storescu.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LittleEndianExplicit\nTransferSyntax2 = LittleEndianImplicit\n\n\
             [[PresentationContexts]]\n[Mado]\nPresentationContext1 = {sop_class_uid}\\Uncompressed\nPresentationContext2 = CTImageStorage\\Uncompressed\n\n\
             [[Profiles]]\n[Mado]\nPresentationContexts = Mado\n"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.env("TCP_NODELAY", "1")
        .args([
            "-v", "+v", "-aet", "MADOTEST", "-aec", "MADO", "-to", "30", "-ta", "30", "-td", "60",
        ])
        .arg("-xf")
        .arg(&cfg)
        .arg("Mado")
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(file);
    let (status, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(60)))?;
    let report = parse_report(status, out, err);
    let all = format!("{}\n{}", report.stdout, report.stderr);
    // In the A-ASSOCIATE-AC dump the result line precedes the abstract syntax.
    let lines: Vec<&str> = all.lines().collect();
    let ac_start = lines
        .iter()
        .position(|l| l.contains("BEGIN A-ASSOCIATE-AC"))
        .unwrap_or(lines.len());
    let rejected = lines[ac_start..]
        .windows(2)
        .any(|w| w[0].contains("Abstract Syntax Not Supported") && w[1].contains(sop_class_uid));
    Ok((report, rejected))
}
