//! Storage Commitment Push Model with a real peer: pynetdicom
//! (`tests/interop/commitment_scu.py`) sends N-ACTION-RQ after a dcmtk push
//! and receives the N-EVENT-REPORT-RQ (a) on the same association, (b) on a
//! new association the gateway opens to the requester's listener
//! (`[commitment.peers]`), and (c) event type 2 with Failure Reason 0x0112
//! for an instance the gateway never received (after `timeout_secs`).
//! The report of (a) must not come before the objects are in S3 (moto).

use super::common::*;
use crate::apps::{spawn_gateway, spawn_server, GatewayConfig, ServerConfig};
use crate::dcmtk::storescu_ok;
use crate::moto::moto;
use crate::process::run_with_timeout;
use crate::samples::SampleOptions;
use crate::storage::Storage;
use crate::util::{free_port, scaled, workspace_root};
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
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

#[derive(Debug, serde::Deserialize)]
struct ScuResult {
    action_status: i64,
    event_type: Option<u16>,
    transaction_uid: Option<String>,
    sent_transaction_uid: String,
    #[serde(default)]
    committed: Vec<String>,
    #[serde(default)]
    failed: Vec<(String, u16)>,
    same_association: Option<bool>,
}

/// Run the pynetdicom SCU; `new_listener`: (calling AE, listen port) for a
/// report on a new association.
async fn commit(
    port: u16,
    calling_ae: &str,
    sop_class: &str,
    uids: &[String],
    new_listener: Option<u16>,
) -> Result<ScuResult> {
    let mut cmd = Command::new(venv_python());
    cmd.arg(workspace_root().join("tests/interop/commitment_scu.py"))
        .args(["--port", &port.to_string(), "--aet", calling_ae])
        .args(["--sop-class", sop_class, "--timeout", "90"]);
    if let Some(l) = new_listener {
        cmd.args(["--mode", "new", "--listen-port", &l.to_string()]);
    }
    cmd.args(uids);
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        run_with_timeout(cmd, scaled(Duration::from_secs(150)))
    })
    .await??;
    let line = out
        .lines()
        .last()
        .ok_or_else(|| anyhow!("commitment_scu.py printed nothing ({status})\n{err}"))?;
    let r: ScuResult = serde_json::from_str(line)
        .with_context(|| format!("commitment_scu.py output: {out}\n{err}"))?;
    anyhow::ensure!(
        status.success(),
        "no N-EVENT-REPORT received ({status}): {r:?}\n{err}"
    );
    Ok(r)
}

/// moto, mado-server on a fresh bucket, and a gateway configuration with
/// storage commitment (`timeout_secs`, `delivery_attempts`, the requester
/// `MODNEW` listening on the returned port).
async fn setup(
    timeout_secs: u64,
    delivery_attempts: u32,
) -> (
    crate::moto::Moto,
    Storage,
    crate::apps::ServerProc,
    u16,
    GatewayConfig,
) {
    let moto = moto().await.unwrap();
    let bucket = format!("mado-e2e-{}", uuid::Uuid::new_v4().simple());
    let gw_storage = Storage::S3(moto.bucket(&bucket, true));
    let srv_storage = Storage::S3(moto.bucket(&bucket, false));
    let server = spawn_server(ServerConfig {
        storage: Some(srv_storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let listen = free_port().unwrap();
    let mut g = GatewayConfig::new(&server.base_url, &server.cfg.gateway_token, gw_storage);
    g.extra = fast_upload_retries();
    let commitment: toml::Table = toml::from_str(&format!(
        "timeout_secs = {timeout_secs}\ndelivery_attempts = {delivery_attempts}\n\
         association_timeout_secs = 10\n[peers]\nMODNEW = \"127.0.0.1:{listen}\"\n"
    ))
    .unwrap();
    g.extra.insert("commitment".into(), commitment.into());
    (moto, srv_storage, server, listen, g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commitment_same_and_new_association() {
    let (_moto, srv_storage, _server, listen, g) = setup(4, 2).await;
    let gw = spawn_gateway(g).await.unwrap();

    let (_d, set) = samples(&SampleOptions {
        ct_slices: 3,
        ct2_slices: 1,
        cr_images: 1,
        seed: 23,
        japanese: false,
    })
    .unwrap();
    let ct: Vec<_> = set.of_modality("CT").into_iter().cloned().collect();
    let ct_class = ct[0].sop_class_uid.clone();
    let ct_uids: Vec<String> = ct.iter().map(|f| f.sop_instance_uid.clone()).collect();
    storescu_ok(&set.paths(), gw.dicom_port).unwrap();
    let logs = || gw.proc.logs();

    // (a) same association, asked right after the push: answered only once
    // every CT instance is in the bucket
    let r = commit(gw.dicom_port, "MODSAME", &ct_class, &ct_uids, None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_eq!(r.action_status, 0, "{r:?}");
    assert_eq!(r.event_type, Some(1), "{r:?}\n{}", logs());
    assert_eq!(r.same_association, Some(true), "{r:?}");
    assert_eq!(
        r.transaction_uid.as_deref(),
        Some(r.sent_transaction_uid.as_str())
    );
    let mut got = r.committed.clone();
    got.sort();
    let mut want = ct_uids.clone();
    want.sort();
    assert_eq!(got, want);
    let in_s3 = srv_storage.list("studies/").await.unwrap().len();
    assert!(
        in_s3 >= ct_uids.len(),
        "commitment reported before the objects were in S3 ({in_s3} objects)"
    );

    // (b) new association to the requester's SCP (the SCU released at once)
    let cr = set.of_modality("CR")[0].clone();
    let r = commit(
        gw.dicom_port,
        "MODNEW",
        &cr.sop_class_uid,
        std::slice::from_ref(&cr.sop_instance_uid),
        Some(listen),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_eq!(r.event_type, Some(1), "{r:?}\n{}", logs());
    assert_eq!(r.same_association, Some(false), "{r:?}");
    assert_eq!(r.committed, vec![cr.sop_instance_uid.clone()]);

    // (c) an instance never sent: event type 2 after the timeout, 0x0112
    let unknown = "1.2.826.0.1.3680043.10.543.999999.1".to_string();
    let r = commit(
        gw.dicom_port,
        "MODSAME",
        &ct_class,
        &[ct_uids[0].clone(), unknown.clone()],
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_eq!(r.event_type, Some(2), "{r:?}\n{}", logs());
    assert_eq!(r.committed, vec![ct_uids[0].clone()]);
    assert_eq!(r.failed, vec![(unknown, 0x0112)]);

    // no original UID in the gateway's info-level logs
    let text = format!("{}{}", gw.proc.stdout_text(), gw.proc.stderr_text());
    for u in &ct_uids {
        assert!(!text.contains(u.as_str()), "original UID {u} in the logs");
    }
}

/// (d) A transaction accepted before the gateway is killed (`kill -9`) is
/// answered after the restart: the N-ACTION names an instance not sent yet,
/// the gateway dies, comes back on the same spool, receives the instance,
/// and the report reaches the requester on a new association.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commitment_survives_a_restart() {
    let (_moto, srv_storage, _server, listen, mut g) = setup(120, 3).await;
    let spool_root = tempfile::tempdir().unwrap();
    let spool = spool_root.path().join("spool");
    g.spool_dir = Some(spool.clone());
    let mut gw = spawn_gateway(g.clone()).await.unwrap();

    let (_d, set) = samples(&SampleOptions {
        ct_slices: 0,
        ct2_slices: 0,
        cr_images: 1,
        seed: 29,
        japanese: false,
    })
    .unwrap();
    let cr = set.of_modality("CR")[0].clone();
    let port = gw.dicom_port;
    let (class, uid) = (cr.sop_class_uid.clone(), cr.sop_instance_uid.clone());
    let asked = tokio::spawn(async move {
        commit(
            port,
            "MODNEW",
            &class,
            std::slice::from_ref(&uid),
            Some(listen),
        )
        .await
    });
    let pending = spool.join("commitment-pending");
    let t0 = std::time::Instant::now();
    while count_json(&pending) == 0 {
        assert!(
            t0.elapsed() < scaled(Duration::from_secs(60)),
            "transaction never kept\n{}",
            gw.proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the N-ACTION-RSP follows the file at once; let it reach the SCU
    tokio::time::sleep(scaled(Duration::from_secs(1))).await;
    gw.proc.kill(); // SIGKILL: the answer is still due
    drop(gw);

    let gw = spawn_gateway(g).await.unwrap();
    storescu_ok(std::slice::from_ref(&cr.path), gw.dicom_port).unwrap();
    let r = asked
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    assert_eq!(r.action_status, 0, "{r:?}");
    assert_eq!(r.event_type, Some(1), "{r:?}\n{}", gw.proc.logs());
    assert_eq!(r.same_association, Some(false), "{r:?}");
    assert_eq!(r.committed, vec![cr.sop_instance_uid.clone()]);
    assert_eq!(
        r.transaction_uid.as_deref(),
        Some(r.sent_transaction_uid.as_str())
    );
    let t0 = std::time::Instant::now();
    while count_json(&pending) > 0 {
        assert!(
            t0.elapsed() < scaled(Duration::from_secs(30)),
            "answered transaction still kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!srv_storage.list("studies/").await.unwrap().is_empty());
}

fn count_json(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    })
}
