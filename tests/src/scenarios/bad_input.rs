//! (c) Bad input: corrupt datasets, an unknown SOP class, the server being
//! down, and bad configuration files.

use super::common::*;
use crate::apps::{run_with_config_text, spawn_gateway, spawn_server, GatewayConfig, ServerConfig};
use crate::bins::{gateway_bin, server_bin};
use crate::dcmtk::{storescu, storescu_ok, storescu_propose};
use crate::samples::{write_bad_inputs, SampleOptions, UNKNOWN_SOP_CLASS_UID};
use crate::storage::Storage;
use crate::util::{free_port, scaled};
use std::path::Path;
use std::time::{Duration, Instant};

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn local_store() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: dir.path().to_path_buf(),
    };
    (dir, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_datasets_are_refused_and_nothing_is_uploaded() {
    let (_objects, storage) = local_store();
    let p = start_pipeline(
        ServerConfig {
            storage: Some(storage.clone()),
            ..ServerConfig::default()
        },
        storage.clone(),
    )
    .await
    .unwrap();
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_bad_inputs(bad_dir.path(), 3).unwrap();

    // SOP Instance UID that is not a UID: refused before anything is spooled
    let r = storescu(std::slice::from_ref(&bad.bad_uids), p.gateway.dicom_port).unwrap();
    assert!(
        r.successes == 0 && r.failures == 1,
        "a dataset whose SOP Instance UID is not a UID must get a failure status\n{}",
        r.output()
    );
    // no Study/Series Instance UID (Type 1) and truncated Pixel Data
    let r = storescu(
        std::slice::from_ref(&bad.missing_uids),
        p.gateway.dicom_port,
    )
    .unwrap();
    assert!(
        r.successes == 0 && r.failures == 1,
        "a dataset without Study/Series Instance UID must get a failure status, not be acknowledged and quarantined later\n{}",
        r.output()
    );

    // the gateway is still healthy: a good instance goes through, and it is
    // the only object in the store
    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 1,
        ct2_slices: 0,
        cr_images: 0,
        seed: 11,
        japanese: false,
    })
    .unwrap();
    storescu_ok(&samples.paths(), p.gateway.dicom_port).unwrap();
    let keys = wait_for_objects(&storage, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let summary = check_store(&storage, &samples, &keys).await.unwrap();
    wait_indexed(&p.server, &summary, Duration::from_secs(60))
        .await
        .unwrap();
    summary.assert_no_leaks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        storage.list("").await.unwrap(),
        keys,
        "only the good instance may reach the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sop_class_is_rejected_at_negotiation() {
    let (_objects, storage) = local_store();
    // no server needed: negotiation and spooling happen at the edge
    let unused = free_port().unwrap();
    let mut gcfg = GatewayConfig::new(
        &format!("http://127.0.0.1:{unused}"),
        "token",
        storage.clone(),
    );
    gcfg.extra = fast_upload_retries();
    let gw = spawn_gateway(gcfg).await.unwrap();
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_bad_inputs(bad_dir.path(), 5).unwrap();

    let (r, rejected) =
        storescu_propose(&bad.unknown_sop_class, gw.dicom_port, UNKNOWN_SOP_CLASS_UID).unwrap();
    assert!(
        rejected,
        "the presentation context for {UNKNOWN_SOP_CLASS_UID} must be answered 'abstract syntax not supported'\n{}",
        r.output()
    );
    assert!(
        r.successes == 0 && !r.status.success(),
        "storescu must fail to send\n{}",
        r.output()
    );
    let spooled = files_under(&gw.spool_dir);
    assert!(
        spooled
            .iter()
            .all(|f| !f.to_string_lossy().contains("/pending/")),
        "nothing may be spooled: {spooled:?}"
    );
    // the SCP is still up
    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 1,
        ct2_slices: 0,
        cr_images: 0,
        seed: 13,
        japanese: false,
    })
    .unwrap();
    storescu_ok(&samples.paths(), gw.dicom_port).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_instances_wait_in_spool_then_arrive() {
    let (_objects, storage) = local_store();
    let server_port = free_port().unwrap();
    let server_cfg = ServerConfig {
        storage: Some(storage.clone()),
        port: server_port,
        ..ServerConfig::default()
    };
    let mut gcfg = GatewayConfig::new(
        &format!("http://127.0.0.1:{server_port}"),
        &server_cfg.gateway_token,
        storage.clone(),
    );
    gcfg.extra = fast_upload_retries();
    let gw = spawn_gateway(gcfg).await.unwrap();

    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 2,
        ct2_slices: 1,
        cr_images: 1,
        seed: 17,
        japanese: true,
    })
    .unwrap();
    let n = samples.files.len();
    storescu_ok(&samples.paths(), gw.dicom_port).unwrap();

    // acknowledged instances are durable in the spool while the server is down
    let pending = |gw: &crate::apps::GatewayProc| {
        files_under(&gw.spool_dir)
            .into_iter()
            .filter(|f| f.to_string_lossy().contains("/pending/"))
            .count()
    };
    assert_eq!(
        pending(&gw),
        n,
        "spool: {:#?}\n{}",
        files_under(&gw.spool_dir),
        gw.proc.logs()
    );
    tokio::time::sleep(scaled(Duration::from_secs(3))).await;
    assert_eq!(
        pending(&gw),
        n,
        "instances left the spool without a server\n{}",
        gw.proc.logs()
    );
    assert!(
        gw.proc.stdout_text().contains("listening"),
        "gateway output changed"
    );

    // the server comes up on the port the gateway was told about
    let server = spawn_server(server_cfg).await.unwrap();
    let keys = wait_for_objects(&storage, n, Duration::from_secs(60))
        .await
        .unwrap();
    let summary = check_store(&storage, &samples, &keys).await.unwrap();
    wait_indexed(&server, &summary, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while pending(&gw) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pending(&gw), 0, "registered instances must leave the spool");
    summary.assert_no_leaks();
}

/// Run `bin --config FILE args` with `text` as FILE; it must exit non-zero
/// with exactly one non-empty line on stderr naming the file and `field`.
/// Returns a description of every violation.
fn check_bad_config(bin: &Path, args: &[&str], text: &str, field: &str) -> Vec<String> {
    let (status, out, err, path, _dir) =
        run_with_config_text(bin, "bad-config.toml", text, args).unwrap();
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ctx = format!("{name} {args:?} with {text:?}: exit {status}, stderr {err:?}");
    let mut problems = Vec::new();
    if status.success() {
        problems.push(format!("must fail: {ctx}"));
    }
    if out.contains("listening") {
        problems.push(format!("must not start: {ctx}"));
    }
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 {
        problems.push(format!("expected exactly one line on stderr: {ctx}"));
    }
    let first = lines.first().copied().unwrap_or("");
    if !first.contains(&path.display().to_string()) && !first.contains("bad-config.toml") {
        problems.push(format!("the line must name the file: {ctx}"));
    }
    if !first.contains(field) {
        problems.push(format!("the line must name `{field}`: {ctx}"));
    }
    problems
}

#[test]
fn bad_config_files_give_one_line_naming_file_and_field() {
    let gw = gateway_bin().unwrap();
    let srv = server_bin().unwrap();
    let mut problems = Vec::new();
    problems.extend(check_bad_config(
        &gw,
        &[],
        "[dicom]\nbind = 12\n",
        "dicom.bind",
    ));
    problems.extend(check_bad_config(
        &gw,
        &[],
        "[dicom]\ncolour = \"blue\"\n",
        "colour",
    ));
    problems.extend(check_bad_config(
        &gw,
        &[],
        "[storage]\nkind = \"floppy\"\n",
        "storage",
    ));
    problems.extend(check_bad_config(
        &gw,
        &[],
        "[dicom]\nae_title = \"THIS-AE-TITLE-IS-TOO-LONG\"\n",
        "dicom.ae_title",
    ));
    problems.extend(check_bad_config(
        &srv,
        &["serve"],
        "[http]\nbind = 8080\n",
        "http.bind",
    ));
    problems.extend(check_bad_config(
        &srv,
        &["serve"],
        "[database]\nurl = [1, 2]\n",
        "database.url",
    ));
    problems.extend(check_bad_config(
        &srv,
        &["serve"],
        "[ingest]\ngateway_token = \"x\"\n",
        "gateway_token",
    ));
    problems.extend(check_bad_config(
        &srv,
        &["migrate"],
        "[http]\nbind = 8080\n",
        "http.bind",
    ));
    assert!(
        problems.is_empty(),
        "bad-config handling:\n{}",
        problems.join("\n")
    );
}
