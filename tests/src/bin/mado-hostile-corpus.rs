//! Write the hostile-input corpus (`tests/corpus/hostile_gen.rs`) as files.
//!
//! ```text
//! cargo run -p mado-tests --bin mado-hostile-corpus -- [OUT_DIR] [--large]
//! ```
//! Without OUT_DIR: `tests/corpus/hostile/` (the committed small entries).
//! `--large` adds the large ones (10,000 nested sequences, the deflate
//! bomb), which are never committed.

#[path = "../../corpus/hostile_gen.rs"]
mod hostile_gen;

use anyhow::Context;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let large = args.iter().any(|a| a == "--large");
    let out = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let entries = if large {
        hostile_gen::all()
    } else {
        hostile_gen::small()
    };
    for h in entries {
        let path = out.join(format!("{}.dcm", h.name));
        std::fs::write(&path, &h.bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("{} {} bytes", path.display(), h.bytes.len());
    }
    Ok(())
}
