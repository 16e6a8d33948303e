//! De-identification screening end to end: an instance with Burned In Annotation = YES is
//! quarantined on-prem (not in the store, not in the server), listed by
//! `mado-gateway quarantine list`, released by an operator, then uploaded and indexed.
//! Also: `mado-gateway deid` (batch) gives the same pseudonymous study UID as the
//! gateway, and `mado-gateway vault reidentify` returns the original, with an audit line.

use super::common::*;
use crate::apps::ServerConfig;
use crate::bins::gateway_bin;
use crate::dcmtk::storescu_ok;
use crate::process::{run_with_timeout, scrub_env};
use crate::samples::SampleOptions;
use crate::storage::Storage;
use crate::util::{scaled, wait_for};
use crate::web::WebSession;
use anyhow::{ensure, Result};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `mado-gateway --config CFG args...` → (success, stdout, stderr).
fn gw_cli(config: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    gw_cli_env(config, args, &[])
}

fn gw_cli_env(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(bool, String, String)> {
    let mut cmd = Command::new(gateway_bin()?);
    scrub_env(&mut cmd);
    cmd.arg("--config").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (st, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(60)))?;
    Ok((st.success(), out, err))
}

fn quarantined(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool.join("quarantine"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".dcm")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burned_in_annotation_is_quarantined_then_released() {
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let (dir, samples) = samples(&SampleOptions {
        ct_slices: 2,
        ct2_slices: 0,
        cr_images: 0,
        seed: 11,
        japanese: true,
    })
    .unwrap();
    let p = start_pipeline(
        ServerConfig {
            storage: Some(storage.clone()),
            ..ServerConfig::default()
        },
        storage.clone(),
    )
    .await
    .unwrap();
    let cfg = p.gateway.config_path.clone();
    let spool = p.gateway.spool_dir.clone();

    // The pseudonymous study UID, from the batch command on the untouched twin (vault off
    // here, so that the re-identification below proves the gateway's own record).
    let ct = samples.of_modality("CT")[0].clone();
    let twin_in = dir.path().join("twin-in");
    let twin_out = dir.path().join("twin-out");
    std::fs::create_dir_all(&twin_in).unwrap();
    std::fs::copy(&ct.path, twin_in.join("ct.dcm")).unwrap();
    let (ok, out, err) = gw_cli_env(
        &cfg,
        &[
            "deid",
            twin_in.to_str().unwrap(),
            twin_out.to_str().unwrap(),
        ],
        &[("MADO_GATEWAY__VAULT__ENABLED", "false")],
    )
    .unwrap();
    assert!(ok, "batch deid failed\n{out}\n{err}");
    assert!(out.contains("de-identified: 1"), "{out}");
    assert!(!spool.join("vault.jsonl").exists(), "batch wrote the vault");
    let twin = dicom_object::open_file(twin_out.join("ct.dcm")).unwrap();
    let study = twin
        .element(tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_ne!(study, ct.study_uid);

    // Burned-in annotation → quarantine.
    let burned = dir.path().join("burned.dcm");
    let mut obj = dicom_object::open_file(&ct.path).unwrap();
    obj.put(DataElement::new(
        tags::BURNED_IN_ANNOTATION,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    obj.write_to_file(&burned).unwrap();
    storescu_ok(std::slice::from_ref(&burned), p.gateway.dicom_port).unwrap();

    let ids = wait_for(
        "the instance in spool/quarantine",
        scaled(Duration::from_secs(60)),
        || {
            let spool = spool.clone();
            async move {
                let q = quarantined(&spool);
                Ok((!q.is_empty()).then_some(q))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", p.gateway.proc.logs()));
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    // give a wrong upload the time to happen, then check nothing left the gateway
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(storage.list("studies/").await.unwrap().is_empty());
    let mut web = WebSession::new(&p.server.base_url).unwrap();
    web.login(&p.server.cfg.admin_user, &p.server.cfg.admin_password)
        .await
        .unwrap();
    let page = web.get(&format!("/studies/{study}")).await.unwrap();
    assert_eq!(page.status.as_u16(), 404, "quarantined study visible");

    // quarantine list: the instance, a reason, no PHI
    let (ok, out, err) = gw_cli(&cfg, &["quarantine", "list", "--json"]).unwrap();
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["id"], id.as_str(), "{out}");
    assert_eq!(list[0]["modality"], "CT", "{out}");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("burned"),
        "{out}"
    );
    for n in crate::samples::PHI.needles() {
        assert!(!out.contains(n), "{n} in the quarantine listing");
    }

    // release → uploaded and indexed, de-identified
    let (ok, _, err) = gw_cli(&cfg, &["quarantine", "release", &id]).unwrap();
    assert!(!ok, "release without --operator must fail");
    drop(err);
    let (ok, out, err) = gw_cli(
        &cfg,
        &["quarantine", "release", &id, "--operator", "e2e-operator"],
    )
    .unwrap();
    assert!(ok, "{out}\n{err}");
    let keys = wait_for_objects(&storage, 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", p.gateway.proc.logs()));
    let one = crate::samples::SampleSet {
        files: vec![ct.clone()],
        original_uids: samples.original_uids.clone(),
    };
    let summary = check_store(&storage, &one, &keys).await.unwrap();
    summary.assert_no_leaks();
    assert_eq!(summary.studies.keys().next(), Some(&study));
    wait_indexed(&p.server, &summary, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(quarantined(&spool).is_empty());
    let audit = std::fs::read_to_string(spool.join("quarantine-audit.log")).unwrap();
    assert!(audit.contains("e2e-operator") && audit.contains(&id));

    // vault: re-identify the study (audited), refused without a reason
    let (ok, _, _) = gw_cli(
        &cfg,
        &["vault", "reidentify", "--study", &study, "--operator", "x"],
    )
    .unwrap();
    assert!(!ok);
    let (ok, out, err) = gw_cli(
        &cfg,
        &[
            "vault",
            "reidentify",
            "--study",
            &study,
            "--operator",
            "e2e-operator",
            "--reason",
            "e2e check",
        ],
    )
    .unwrap();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&ct.study_uid), "{out}");
    let audit = std::fs::read_to_string(spool.join("vault-audit.log")).unwrap();
    assert!(audit.contains("e2e check") && audit.contains(&study));
    assert!(!audit.contains(&ct.study_uid), "original in the audit log");
    let logs = p.gateway.proc.logs();
    for n in crate::samples::PHI.needles() {
        assert!(!logs.contains(n), "{n:?} in the gateway logs");
    }
    check_no_original_uid_in(&logs, &samples.original_uids).unwrap();
}

fn check_no_original_uid_in(text: &str, uids: &[String]) -> Result<()> {
    for u in uids {
        ensure!(!text.contains(u.as_str()), "original UID in the logs");
    }
    Ok(())
}
