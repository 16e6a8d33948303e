//! De-identification throughput: every file of IN_DIR is parsed, screened, de-identified
//! and written to OUT_DIR (named by its new SOP Instance UID), in parallel with rayon.
//!
//! ```text
//! cargo run --release -p mado-core --example deid-bench -- IN_DIR OUT_DIR [--threads N] [--repeat R]
//! ```
//! Prints one line: `mado-deid files=… ok=… quarantined=… errors=… seconds=… instances_per_s=…`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use mado_core::deid::{DeidConfig, Engine, Outcome};
use rayon::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut dirs, mut threads, mut repeat) = (Vec::new(), 0usize, 1usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--threads" => threads = it.next().context("--threads N")?.parse()?,
            "--repeat" => repeat = it.next().context("--repeat R")?.parse()?,
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    let [input, output] = dirs.as_slice() else {
        bail!("usage: deid-bench IN_DIR OUT_DIR [--threads N] [--repeat R]");
    };
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    std::fs::create_dir_all(output)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let secret = std::env::var("MADO_DEID_SECRET")
        .unwrap_or_else(|_| "bench-secret-0123456789abcdef".into());
    let engine = Engine::new(&DeidConfig::default(), secret.as_bytes())?;

    let (ok, quarantined, errors) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let start = Instant::now();
    for _ in 0..repeat {
        files
            .par_iter()
            .for_each(|f| match one(&engine, f, output) {
                Ok(true) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    quarantined.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{}: {e:#}", f.display());
                }
            });
    }
    let secs = start.elapsed().as_secs_f64();
    let n = files.len() * repeat;
    println!(
        "mado-deid files={n} ok={} quarantined={} errors={} threads={} seconds={secs:.3} instances_per_s={:.0}",
        ok.load(Ordering::Relaxed),
        quarantined.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        rayon::current_num_threads(),
        n as f64 / secs
    );
    Ok(())
}

fn one(engine: &Engine, path: &Path, out_dir: &Path) -> anyhow::Result<bool> {
    let mut obj = dicom_object::open_file(path)?;
    match engine.process(&mut obj)? {
        Outcome::Quarantine(_) => Ok(false),
        Outcome::Deidentified(report) => {
            let name = report.sop_instance_uid.context("no SOP Instance UID")?;
            obj.write_to_file(out_dir.join(format!("{name}.dcm")))?;
            Ok(true)
        }
    }
}
