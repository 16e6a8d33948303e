//! `mado-samples --out DIR [--ct-slices N] [--seed S]`: write synthetic,
//! obviously fake DICOM studies (Part 10 files) for demos, tests and
//! benchmarks. Prints one line per study and the file count.

use clap::Parser;
use mado_tests::samples::{generate, write_bad_inputs, SampleOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mado-samples",
    about = "Write synthetic (fake) DICOM sample studies"
)]
struct Args {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Slices of the thin-slice CT series (512×512, 16-bit signed).
    #[arg(long, default_value_t = 8)]
    ct_slices: usize,
    /// Slices of the second CT series of the same study (0 = none).
    #[arg(long, default_value_t = 3)]
    ct2_slices: usize,
    /// Images of the second study (CR chest, 16-bit, 12 stored; 0 = none).
    #[arg(long, default_value_t = 2)]
    cr_images: usize,
    /// RNG seed: the same seed gives the same UIDs and pixels.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write only the alphabetic patient name (no ISO_IR 192 / Japanese).
    #[arg(long)]
    ascii_only: bool,
    /// Also write bad inputs into DIR/bad/ (unknown SOP class, corrupt dataset).
    #[arg(long)]
    bad: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let opts = SampleOptions {
        ct_slices: a.ct_slices,
        ct2_slices: a.ct2_slices,
        cr_images: a.cr_images,
        seed: a.seed,
        japanese: !a.ascii_only,
    };
    let set = generate(&a.out, &opts)?;
    for study in set.study_uids() {
        let n = set.instances_in_study(&study);
        let modality = set
            .files
            .iter()
            .find(|f| f.study_uid == study)
            .map(|f| f.modality.as_str())
            .unwrap_or("?");
        println!("study {modality}: {n} instances");
    }
    println!("wrote {} files to {}", set.files.len(), a.out.display());
    if a.bad {
        let bad = a.out.join("bad");
        write_bad_inputs(&bad, a.seed)?;
        println!("wrote bad inputs to {}", bad.display());
    }
    Ok(())
}
