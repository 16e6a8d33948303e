//! The hostile-input corpus (`tests/corpus/hostile_gen.rs`) against the real
//! gateway: (b) every file pushed with pynetdicom in its own association is
//! answered with a DICOM status (or quarantined / failed with a reason once
//! accepted), the gateway process never aborts and still stores a good
//! instance afterwards; (c) `mado-gateway deid` on the whole corpus ends
//! with one clear line per file.

#[path = "../../corpus/hostile_gen.rs"]
mod hostile_gen;

use super::common::*;
use crate::apps::ServerConfig;
use crate::bins::gateway_bin;
use crate::dcmtk::storescu_ok;
use crate::process::{run_with_timeout, scrub_env};
use crate::storage::Storage;
use crate::util::{scaled, wait_for, workspace_root};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn venv_python() -> PathBuf {
    let p = workspace_root().join(".tools/venv/bin/python");
    if p.is_file() {
        p
    } else {
        PathBuf::from("python3")
    }
}

/// Every corpus entry (large ones included) as files in `dir`.
fn write_corpus(dir: &Path) -> Vec<(String, PathBuf)> {
    hostile_gen::all()
        .into_iter()
        .map(|h| {
            let p = dir.join(format!("{}.dcm", h.name));
            std::fs::write(&p, &h.bytes).unwrap();
            (h.name.to_owned(), p)
        })
        .collect()
}

fn names_in(dir: &Path, ext: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(ext)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn send_each(files: &[PathBuf], port: u16) -> Result<Vec<serde_json::Value>> {
    let mut cmd = Command::new(venv_python());
    cmd.arg(workspace_root().join("tests/corpus/hostile_send.py"))
        .args(["127.0.0.1", &port.to_string(), "MADO"])
        .args(files);
    let timeout = scaled(Duration::from_secs(120 + 30 * files.len() as u64));
    let (status, out, err) = run_with_timeout(cmd, timeout)?;
    anyhow::ensure!(status.success(), "hostile_send.py: {status}\n{out}\n{err}");
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_every_hostile_input() {
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let mut p = start_pipeline(
        ServerConfig {
            storage: Some(storage.clone()),
            ..ServerConfig::default()
        },
        storage,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let files: Vec<PathBuf> = corpus.iter().map(|(_, p)| p.clone()).collect();
    let results = send_each(&files, p.gateway.dicom_port).unwrap();
    assert_eq!(results.len(), files.len(), "{results:?}");

    let mut problems = Vec::new();
    for ((name, _), r) in corpus.iter().zip(&results) {
        let outcome = r["outcome"].as_str().unwrap_or("");
        // the gateway is still there after every input
        if let Some(st) = p.gateway.proc.try_status() {
            panic!(
                "{name}: the gateway exited ({st})\n{}",
                crate::process::tail(&p.gateway.proc.logs(), 40)
            );
        }
        match outcome {
            "status" => {}
            // pynetdicom would not send it (nothing reached the gateway)
            "sender-refused" => eprintln!("{name}: not sent by pynetdicom ({r})"),
            _ => problems.push(format!("{name}: no DICOM status ({r})")),
        }
    }

    // what was acknowledged is either uploaded or set aside with a reason
    let spool = p.gateway.spool_dir.clone();
    wait_for(
        "the spool to drain pending/",
        scaled(Duration::from_secs(120)),
        || {
            let pending = names_in(&spool.join("pending"), ".dcm");
            async move { Ok(pending.is_empty().then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| problems.push(format!("{e:#}")));
    for sub in ["quarantine", "failed"] {
        for id in names_in(&spool.join(sub), ".dcm") {
            let reason = spool.join(sub).join(format!("{id}.reason"));
            match std::fs::read_to_string(&reason) {
                Ok(r) if !r.trim().is_empty() => {}
                _ => problems.push(format!("{sub}/{id}.dcm has no reason")),
            }
        }
    }

    // and a good instance is still received and acknowledged
    let (_samples_dir, samples) = default_samples().unwrap();
    let good = samples.of_modality("CT")[0].path.clone();
    if let Err(e) = storescu_ok(&[good], p.gateway.dicom_port) {
        problems.push(format!("a good instance after the corpus: {e:#}"));
    }
    assert!(
        p.gateway.proc.try_status().is_none(),
        "the gateway exited\n{}",
        crate::process::tail(&p.gateway.proc.logs(), 40)
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_deid_names_each_hostile_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    let corpus = write_corpus(&input);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[deid]\nsecret = \"e2e-deid-secret-not-for-production-0123456789\"\n\
             [server]\ntoken = \"e2e-gateway-token-not-for-production-0123\"\n\
             [vault]\nenabled = false\n[spool]\ndir = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(gateway_bin().unwrap());
    scrub_env(&mut cmd);
    cmd.arg("--config")
        .arg(&config)
        .args(["deid", "--json"])
        .arg(&input)
        .arg(&output);
    let (status, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(180))).unwrap();
    // exit 0 (everything de-identified or quarantined) or 1 (errors), never a crash
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "mado-gateway deid: {status}\n{out}\n{}",
        crate::process::tail(&err, 40)
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("no JSON summary ({e})\n{out}\n{err}"));
    // every file is accounted for: de-identified, quarantined with a
    // reason, or an error naming it
    let mut accounted = summary["deidentified"].as_u64().unwrap_or(0)
        + summary["skipped_not_dicom"].as_u64().unwrap_or(0);
    let mut named = Vec::new();
    if let Some(q) = summary["quarantine_reasons"].as_object() {
        for (reason, paths) in q {
            assert!(!reason.trim().is_empty(), "empty quarantine reason");
            for p in paths.as_array().into_iter().flatten() {
                named.push(p.as_str().unwrap_or("").to_owned());
                accounted += 1;
            }
        }
    }
    for e in summary["errors"].as_array().into_iter().flatten() {
        assert!(
            !e["error"].as_str().unwrap_or("").trim().is_empty(),
            "error without a message: {e}"
        );
        named.push(e["path"].as_str().unwrap_or("").to_owned());
        accounted += 1;
    }
    assert_eq!(
        accounted,
        corpus.len() as u64,
        "not every file is accounted for: {summary}"
    );
    for (name, _) in &corpus {
        let written = output.join(format!("{name}.dcm")).is_file();
        let listed = named.iter().any(|n| n.contains(name.as_str()));
        assert!(
            written || listed,
            "{name}: neither written nor named: {summary}"
        );
    }
}
