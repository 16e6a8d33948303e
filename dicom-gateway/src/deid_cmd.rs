//! `mado-gateway [--config FILE] deid IN_DIR OUT_DIR [--quarantine-dir DIR] [--json]`:
//! batch de-identification of a directory tree with the same engine, options and key as
//! the gateway (so the pseudonyms and UIDs match what the gateway uploads).
//!
//! * Every regular file under `IN_DIR` (recursive) is processed on rayon; files that are
//!   not DICOM Part 10 (no `DICM` magic at offset 128 or 0) are skipped.
//! * A de-identified file is written to `OUT_DIR/<same relative path>` (temp file +
//!   rename). The originals are recorded in the vault when `[vault] enabled`.
//! * A file the screening policy or the engine refuses is *quarantined*: listed in the
//!   summary with its reason (grouped), and copied unchanged to `--quarantine-dir` (same
//!   relative path) when that option is given; otherwise nothing is written for it.
//! * A file that cannot be read, parsed or written is an *error*.
//! * The summary goes to stdout (`--json` for JSON); the progress bar to stderr. Exit status
//!   0 when every file was de-identified, quarantined or skipped, 1 when there were errors.

use crate::deid::{self, DeidOutcome, Pipeline};
use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options of one batch run.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub quarantine_dir: Option<PathBuf>,
    pub progress: bool,
}

/// What happened to one file.
#[derive(Debug)]
enum FileResult {
    Done,
    Skipped,
    Quarantined(String),
    Error(String),
}

/// Summary of a batch run (relative paths only; reasons name no PHI).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub files: usize,
    pub deidentified: usize,
    pub skipped_not_dicom: usize,
    pub quarantined: usize,
    /// Reason → relative paths.
    pub quarantine_reasons: BTreeMap<String, Vec<String>>,
    pub errors: Vec<BatchFileError>,
}

#[derive(Debug, Serialize)]
pub struct BatchFileError {
    pub path: String,
    pub error: String,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "files: {}\nde-identified: {}\nskipped (not DICOM): {}\nquarantined: {}\nerrors: {}\n",
            self.files,
            self.deidentified,
            self.skipped_not_dicom,
            self.quarantined,
            self.errors.len()
        );
        for (reason, paths) in &self.quarantine_reasons {
            s.push_str(&format!("quarantined ({}): {reason}\n", paths.len()));
            for p in paths {
                s.push_str(&format!("  {p}\n"));
            }
        }
        for e in &self.errors {
            s.push_str(&format!("error: {}: {}\n", e.path, e.error));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("input directory {0}: {1}")]
    Input(String, String),
    #[error("output directory {0} must not be the input directory or inside it")]
    OutputInsideInput(String),
    #[error("cannot create output directory {0}: {1}")]
    Output(String, std::io::Error),
}

fn is_part10(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 132];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok((n >= 132 && &head[128..132] == b"DICM") || (n >= 4 && &head[..4] == b"DICM"))
}

fn write_atomic(dst: &Path, obj: &dicom_object::DefaultDicomObject) -> Result<(), String> {
    let dir = dst.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let r = obj
        .write_to_file(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, dst).map_err(|e| e.to_string()));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn one(path: &Path, rel: &Path, opts: &BatchOptions, deid: &Pipeline) -> FileResult {
    match is_part10(path) {
        Ok(true) => {}
        Ok(false) => return FileResult::Skipped,
        Err(e) => return FileResult::Error(format!("cannot read: {e}")),
    }
    let raw = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return FileResult::Error(format!("cannot read: {e}")),
    };
    // nesting, declared lengths and inflated size before the recursive parse
    if let Err(e) = crate::guard::check_part10(&raw) {
        return FileResult::Error(format!("not a readable DICOM file: {e}"));
    }
    // the 128-byte preamble, or none (as check_part10 found it)
    let preamble = if raw.get(128..132) == Some(b"DICM") {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    };
    let obj = match OpenFileOptions::new()
        .read_preamble(preamble)
        .from_reader(raw.as_slice())
    {
        Ok(o) => o,
        Err(e) => return FileResult::Error(format!("not a readable DICOM file: {e}")),
    };
    let reason = match deid::deidentify(obj, &deid.engine, false) {
        Ok(DeidOutcome::Deidentified(d)) => {
            if let Some(v) = &deid.vault {
                if let Err(e) = v.record(d.report()) {
                    return FileResult::Error(format!("vault: {e}"));
                }
            }
            return match write_atomic(&opts.output.join(rel), d.object()) {
                Ok(()) => FileResult::Done,
                Err(e) => FileResult::Error(format!("cannot write output: {e}")),
            };
        }
        Ok(DeidOutcome::Quarantine(r)) => format!("screening: {r}"),
        Err(e) => format!("de-identification failed: {e}"),
    };
    if let Some(q) = &opts.quarantine_dir {
        let dst = q.join(rel);
        let copied = dst
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::copy(path, &dst).map(|_| ()));
        if let Err(e) = copied {
            return FileResult::Error(format!("cannot copy to the quarantine directory: {e}"));
        }
    }
    FileResult::Quarantined(reason)
}

/// Run the batch. Errors of single files are in the summary; `Err` is for setup problems.
pub fn run(opts: &BatchOptions, deid: &Pipeline) -> Result<Summary, BatchError> {
    let input = std::fs::canonicalize(&opts.input)
        .map_err(|e| BatchError::Input(opts.input.display().to_string(), e.to_string()))?;
    std::fs::create_dir_all(&opts.output)
        .map_err(|e| BatchError::Output(opts.output.display().to_string(), e))?;
    let output = std::fs::canonicalize(&opts.output)
        .map_err(|e| BatchError::Output(opts.output.display().to_string(), e))?;
    if output.starts_with(&input) {
        return Err(BatchError::OutputInsideInput(
            opts.output.display().to_string(),
        ));
    }
    let mut files = Vec::new();
    let mut summary = Summary::default();
    for e in walkdir::WalkDir::new(&input).follow_links(false) {
        match e {
            Ok(e) if e.file_type().is_file() => {
                let rel = e
                    .path()
                    .strip_prefix(&input)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| PathBuf::from(e.file_name()));
                files.push((e.path().to_path_buf(), rel));
            }
            Ok(_) => {}
            Err(e) => summary.errors.push(BatchFileError {
                path: e
                    .path()
                    .and_then(|p| p.strip_prefix(&input).ok())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                error: e.to_string(),
            }),
        }
    }
    files.sort();
    let bar = if opts.progress {
        let b = ProgressBar::new(files.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files ({per_sec}, eta {eta})",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let results: Vec<(String, FileResult)> = files
        .par_iter()
        .map(|(path, rel)| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                one(path, rel, opts, deid)
            }))
            .unwrap_or_else(|_| FileResult::Error("internal error".into()));
            bar.inc(1);
            (rel.display().to_string(), r)
        })
        .collect();
    bar.finish_and_clear();
    summary.files = files.len();
    for (rel, r) in results {
        match r {
            FileResult::Done => summary.deidentified += 1,
            FileResult::Skipped => summary.skipped_not_dicom += 1,
            FileResult::Quarantined(reason) => {
                summary.quarantined += 1;
                summary
                    .quarantine_reasons
                    .entry(reason)
                    .or_default()
                    .push(rel);
            }
            FileResult::Error(error) => summary.errors.push(BatchFileError { path: rel, error }),
        }
    }
    Ok(summary)
}

/// `mado-gateway deid` arguments.
#[derive(Debug, clap::Args)]
pub struct DeidArgs {
    /// Directory of DICOM files (searched recursively).
    pub in_dir: PathBuf,
    /// Where the de-identified files go (same relative paths).
    pub out_dir: PathBuf,
    /// Copy quarantined originals here (same relative paths); default: list them only.
    #[arg(long, value_name = "DIR")]
    pub quarantine_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of `mado-gateway deid`.
pub fn main(cfg: &crate::config::GatewayConfig, args: DeidArgs) -> std::process::ExitCode {
    use std::io::IsTerminal;
    use std::process::ExitCode;
    let deid = match Pipeline::from_config(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mado-gateway deid: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = BatchOptions {
        input: args.in_dir,
        output: args.out_dir,
        quarantine_dir: args.quarantine_dir,
        progress: std::io::stderr().is_terminal(),
    };
    match run(&opts, &deid) {
        Ok(s) => {
            if args.json {
                match serde_json::to_string_pretty(&s) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("mado-gateway deid: {e}"),
                }
            } else {
                print!("{}", s.render());
            }
            if s.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mado-gateway deid: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;

    #[test]
    fn batch_over_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(input.join("a/b")).unwrap();
        let ts = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
        for i in 0..5 {
            let mut o = sample(ts);
            o.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(format!("1.2.3.4.{i}")),
            ));
            o.write_to_file(input.join(format!("a/b/ct{i}.dcm")))
                .unwrap();
        }
        let mut burned = sample(ts);
        burned.put(DataElement::new(
            tags::BURNED_IN_ANNOTATION,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        burned.write_to_file(input.join("a/burned.dcm")).unwrap();
        std::fs::write(input.join("README.txt"), "not dicom").unwrap();
        // DICM magic but garbage after it
        let mut bad = vec![0u8; 128];
        bad.extend_from_slice(b"DICMgarbage");
        std::fs::write(input.join("bad.dcm"), bad).unwrap();

        let opts = BatchOptions {
            input: input.clone(),
            output: dir.path().join("out"),
            quarantine_dir: Some(dir.path().join("quarantine")),
            progress: false,
        };
        let deid = Pipeline::without_vault(crate::deid::tests::test_engine());
        let s = run(&opts, &deid).unwrap();
        assert_eq!(s.files, 8);
        assert_eq!(s.deidentified, 5, "{}", s.render());
        assert_eq!(s.skipped_not_dicom, 1);
        assert_eq!(s.quarantined, 1);
        assert_eq!(s.errors.len(), 1);
        assert!(!s.ok());
        assert!(dir.path().join("quarantine/a/burned.dcm").is_file());
        assert!(!dir.path().join("out/a/burned.dcm").exists());
        for i in 0..5 {
            let out = std::fs::read(dir.path().join(format!("out/a/b/ct{i}.dcm"))).unwrap();
            for orig in ORIGINALS {
                assert!(
                    !out.windows(orig.len()).any(|w| w == orig.as_bytes()),
                    "{orig} leaked"
                );
            }
        }
        assert!(s.render().contains("a/burned.dcm"));
        // output inside input is refused
        let inside = BatchOptions {
            output: input.join("x"),
            ..opts
        };
        assert!(matches!(
            run(&inside, &deid),
            Err(BatchError::OutputInsideInput(_))
        ));
    }
}
