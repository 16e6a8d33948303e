//! The gateway with real peers (issue #4, "Tests with real peers"):
//! - Orthanc (Debian `orthanc`, run as a plain process with a temp config and
//!   storage dir) acts as a PACS: a synthetic study is loaded into it over
//!   REST and Orthanc is asked to C-STORE it to the gateway
//!   (`/modalities/{id}/store`);
//! - every file of PyPI `pydicom-data` that is a valid storage instance is
//!   sent with dcmtk `dcmsend` in its own transfer syntax and arrives in the
//!   store with the same transfer syntax and bit-identical Pixel Data, or in
//!   the quarantine when the screening policy says burned-in PHI (the
//!   Explicit VR Big Endian files, which dcmsend would convert, go with
//!   pynetdicom in their own syntax and must be stored big-endian);
//! - dcmtk `dcmsend` and pynetdicom as plain senders.

use super::common::*;
use crate::apps::{GatewayProc, ServerConfig};
use crate::moto::moto;
use crate::process::{run_with_timeout, Proc};
use crate::samples::{SampleOptions, SampleSet};
use crate::storage::Storage;
use crate::util::{free_port, scaled, wait_for, which, workspace_root};
use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// ------------------------------------------------------------ shared

async fn s3_pipeline(server_extra: toml::Table) -> Result<(crate::moto::Moto, Storage, Pipeline)> {
    let moto = moto().await?;
    let bucket = format!("mado-e2e-{}", uuid::Uuid::new_v4().simple());
    // the gateway creates the bucket; the server only reads it
    let gateway_storage = Storage::S3(moto.bucket(&bucket, true));
    let server_storage = Storage::S3(moto.bucket(&bucket, false));
    let p = start_pipeline(
        ServerConfig {
            storage: Some(server_storage.clone()),
            extra: server_extra,
            ..ServerConfig::default()
        },
        gateway_storage,
    )
    .await?;
    Ok((moto, server_storage, p))
}

/// Upload, check and index `samples` as the other scenarios do.
async fn check_samples_arrived(p: &Pipeline, storage: &Storage, samples: &SampleSet) -> Result<()> {
    let keys = wait_for_objects(storage, samples.files.len(), Duration::from_secs(120))
        .await
        .map_err(|e| anyhow!("{e:#}\n{}", p.gateway.proc.logs()))?;
    let summary = check_store(storage, samples, &keys).await?;
    wait_indexed(&p.server, &summary, Duration::from_secs(60)).await?;
    summary.assert_no_leaks();
    Ok(())
}

fn venv_python() -> PathBuf {
    let p = workspace_root().join(".tools/venv/bin/python");
    if p.is_file() {
        p
    } else {
        PathBuf::from("python3")
    }
}

const DCMSEND: &str = "/usr/bin/dcmsend";

/// One entry of a `dcmsend +crf` report.
#[derive(Debug, Clone)]
struct Sent {
    file: PathBuf,
    /// e.g. `0x0000 (Success)`; empty when the file was not sent
    status: String,
    /// the transfer syntax UID it travelled in
    network_ts: String,
}

impl Sent {
    fn ok(&self) -> bool {
        self.status.starts_with("0x0000")
    }
}

/// dcmtk `dcmsend -dn -nh`: never decompress (each file is proposed and
/// sent in its own transfer syntax), do not halt on a failure. Returns the
/// entries of its transfer report and its output.
fn dcmsend(files: &[PathBuf], port: u16) -> Result<(Vec<Sent>, String)> {
    ensure!(
        Path::new(DCMSEND).is_file(),
        "dcmtk dcmsend not found at {DCMSEND}; install dcmtk (scripts/install-test-deps.sh)"
    );
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("report.txt");
    let mut cmd = Command::new(DCMSEND);
    cmd.env("TCP_NODELAY", "1")
        .args(["-v", "-dn", "-nh", "-aet", "MADOTEST", "-aec", "MADO"])
        .args(["-to", "30", "-ta", "30", "-td", "120"])
        .arg("+crf")
        .arg(&report)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files);
    let timeout = scaled(Duration::from_secs(120 + files.len() as u64));
    let (status, out, err) = run_with_timeout(cmd, timeout)?;
    let log = format!("dcmsend exit {status}\nstdout:\n{out}\nstderr:\n{err}");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("dcmsend wrote no report\n{log}"))?;
    Ok((parse_dcmsend_report(&text), log))
}

fn parse_dcmsend_report(text: &str) -> Vec<Sent> {
    let mut v = Vec::new();
    let mut cur: Option<Sent> = None;
    for line in text.lines() {
        let Some((k, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        match k.trim() {
            "Filename" => {
                v.extend(cur.take());
                cur = Some(Sent {
                    file: PathBuf::from(val),
                    status: String::new(),
                    network_ts: String::new(),
                });
            }
            "Network Xfer" => {
                if let Some(s) = cur.as_mut() {
                    s.network_ts = val.split(" = ").next().unwrap_or("").trim().to_owned();
                }
            }
            "DIMSE Status" => {
                if let Some(s) = cur.as_mut() {
                    s.status = val.to_owned();
                }
            }
            _ => {}
        }
    }
    v.extend(cur);
    v
}

/// `tests/interop/pynetdicom_send.py HOST PORT MADO files…` → its JSON summary.
fn pynetdicom_send(files: &[PathBuf], port: u16) -> Result<serde_json::Value> {
    let script = workspace_root().join("tests/interop/pynetdicom_send.py");
    let mut cmd = Command::new(venv_python());
    cmd.arg(&script)
        .args(["127.0.0.1", &port.to_string(), "MADO"])
        .args(files);
    let timeout = scaled(Duration::from_secs(60 + 2 * files.len() as u64));
    let (status, out, err) = run_with_timeout(cmd, timeout)?;
    let summary: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            anyhow!("pynetdicom_send.py printed no summary ({status}); is pynetdicom in .tools/venv (scripts/install-test-deps.sh)?\nstdout:\n{out}\nstderr:\n{err}")
        })?;
    ensure!(
        status.success(),
        "pynetdicom_send.py failed ({status}): {summary}\nstderr:\n{err}"
    );
    Ok(summary)
}

// ------------------------------------------------------------ Orthanc

/// Orthanc as a plain process: temp JSON config, temp storage, HTTP on a
/// free loopback port (remote access off), its DICOM server off (it only
/// acts as a C-STORE SCU here), the gateway as modality `mado`.
struct Orthanc {
    proc: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

fn orthanc_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MADO_E2E_ORTHANC").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let sbin = PathBuf::from("/usr/sbin/Orthanc");
    if sbin.is_file() {
        return Ok(sbin);
    }
    which("Orthanc", &[]).ok_or_else(|| {
        anyhow!("Orthanc not found (/usr/sbin/Orthanc); install the Debian package orthanc (scripts/install-test-deps.sh)")
    })
}

async fn start_orthanc(gateway_port: u16) -> Result<Orthanc> {
    let bin = orthanc_bin()?;
    let dir = tempfile::Builder::new()
        .prefix("mado-e2e-orthanc-")
        .tempdir()?;
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut last = String::new();
    // a port can be taken between the probe and the bind: retry a few times
    for attempt in 0..3 {
        let http_port = free_port()?;
        let cfg = serde_json::json!({
            "Name": "mado-e2e",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": false,
            "HttpServerEnabled": true,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomServerEnabled": false,
            "DicomAet": "ORTHANC",
            "DicomPort": free_port()?,
            "DicomScuTimeout": 30,
            "Plugins": [],
            "SaveJobs": false,
            "DicomModalities": {
                "mado": { "AET": "MADO", "Host": "127.0.0.1", "Port": gateway_port }
            }
        });
        let cfg_path = dir.path().join("orthanc.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
        let mut cmd = Command::new(&bin);
        // dcmtk's network layer (Orthanc's) sets TCP_NODELAY only when asked
        cmd.env("TCP_NODELAY", "1")
            .current_dir(dir.path())
            .arg(&cfg_path);
        let (mut proc, _) = Proc::spawn(
            &format!("orthanc-{attempt}"),
            cmd,
            dir.path(),
            None,
            Duration::ZERO,
        )?;
        let url = format!("http://127.0.0.1:{http_port}");
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            if let Ok(r) = client.get(format!("{url}/system")).send().await {
                if r.status().is_success() {
                    return Ok(Orthanc {
                        proc,
                        url,
                        _dir: dir,
                    });
                }
            }
            if proc.try_status().is_some() || Instant::now() >= deadline {
                proc.kill();
                last = proc.logs();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    bail!("Orthanc did not start\n{last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_pacs_forwards_a_study_to_the_gateway() {
    let (_moto, storage, p) = s3_pipeline(toml::Table::new()).await.unwrap();
    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 4,
        ct2_slices: 1,
        cr_images: 1,
        seed: 31,
        japanese: true,
    })
    .unwrap();
    let orthanc = start_orthanc(p.gateway.dicom_port).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(scaled(Duration::from_secs(120)))
        .build()
        .unwrap();

    // load the study into the PACS
    let mut studies = BTreeSet::new();
    for f in &samples.files {
        let r = http
            .post(format!("{}/instances", orthanc.url))
            .header("content-type", "application/dicom")
            .body(std::fs::read(&f.path).unwrap())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "POST /instances: {status}\n{body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["Status"], "Success", "{body}");
        studies.insert(j["ParentStudy"].as_str().unwrap().to_owned());
    }
    assert_eq!(studies.len(), samples.study_uids().len());

    // the PACS forwards every study to the gateway (C-STORE SCU)
    let t0 = Instant::now();
    let r = http
        .post(format!("{}/modalities/mado/store", orthanc.url))
        .json(&serde_json::json!({ "Resources": studies, "Synchronous": true }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(
        status.is_success(),
        "Orthanc store to the gateway: {status}\n{body}\n{}\n{}",
        orthanc.proc.logs(),
        p.gateway.proc.logs()
    );
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        j["InstancesCount"].as_u64(),
        Some(samples.files.len() as u64),
        "{body}"
    );
    assert_eq!(j["FailedInstancesCount"].as_u64(), Some(0), "{body}");
    eprintln!(
        "orthanc: {} instances C-STOREd to the gateway in {:?}",
        samples.files.len(),
        t0.elapsed()
    );

    check_samples_arrived(&p, &storage, &samples).await.unwrap();
}

// ------------------------------------------------------------ dcmsend + pynetdicom

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmsend_and_pynetdicom_send_to_the_gateway() {
    let (_moto, storage, p) = s3_pipeline(toml::Table::new()).await.unwrap();
    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 3,
        ct2_slices: 1,
        cr_images: 2,
        seed: 41,
        japanese: true,
    })
    .unwrap();
    let paths = samples.paths();
    let (by_dcmsend, by_pynetdicom) = paths.split_at(paths.len() / 2);

    let (sent, log) = dcmsend(by_dcmsend, p.gateway.dicom_port).unwrap();
    assert!(
        sent.len() == by_dcmsend.len() && sent.iter().all(Sent::ok),
        "dcmsend: expected {} successes: {sent:#?}\n{log}",
        by_dcmsend.len()
    );
    let summary = pynetdicom_send(by_pynetdicom, p.gateway.dicom_port).unwrap();
    assert_eq!(
        summary["success"].as_u64(),
        Some(by_pynetdicom.len() as u64),
        "{summary}"
    );
    eprintln!(
        "senders: dcmsend {} instances, pynetdicom {} instances, all Success",
        by_dcmsend.len(),
        by_pynetdicom.len()
    );

    check_samples_arrived(&p, &storage, &samples).await.unwrap();
}

// ------------------------------------------------------------ pydicom-data

/// What must survive ingest unchanged: SOP class, transfer syntax and the
/// Pixel Data element (native bytes, or offset table + every fragment).
type Fingerprint = (String, String, u64);

#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    path: PathBuf,
    sop_uid: String,
    /// original Study / Series / SOP Instance UIDs
    uids: [String; 3],
    fp: Fingerprint,
    /// burned-in PHI suspected by the screening policy
    quarantine: bool,
}

fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).to_owned()
}

/// A text value; a value of VR UN (explicit VR files written by a tool that
/// did not know the attribute) is read as its raw characters.
fn text_of(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    let Some(e) = obj.element_opt(tag).ok().flatten() else {
        return String::new();
    };
    if e.vr() == dicom_core::VR::UN {
        return e
            .to_bytes()
            .map(|b| trim(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
    }
    e.to_str().map(|s| trim(&s)).unwrap_or_default()
}

fn pixel_hash(obj: &dicom_object::DefaultDicomObject) -> Result<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match obj.element_opt(tags::PIXEL_DATA)? {
        None => 0u8.hash(&mut h),
        Some(e) => match e.value() {
            Value::Primitive(v) => {
                1u8.hash(&mut h);
                v.to_bytes().hash(&mut h);
            }
            Value::PixelSequence(seq) => {
                2u8.hash(&mut h);
                seq.offset_table().hash(&mut h);
                seq.fragments().hash(&mut h);
            }
            Value::Sequence(_) => bail!("Pixel Data is a sequence of items"),
        },
    }
    Ok(h.finish())
}

fn fingerprint(obj: &dicom_object::DefaultDicomObject) -> Result<Fingerprint> {
    Ok((
        trim(obj.meta().media_storage_sop_class_uid()),
        trim(obj.meta().transfer_syntax()),
        pixel_hash(obj)?,
    ))
}

/// Burned-in screening policy, read from the data file the engine compiles
/// in, and the storage classes the gateway accepts.
struct Policy {
    modalities: BTreeSet<String>,
    sop_classes: BTreeSet<String>,
    storage_classes: BTreeSet<String>,
}

fn screening_policy() -> Result<Policy> {
    let path = workspace_root().join("core/data/screening-policy.toml");
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let list = |k: &str| -> BTreeSet<String> {
        t.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Policy {
        modalities: list("usually_burned_in_modalities"),
        sop_classes: list("usually_burned_in_sop_classes"),
        storage_classes: gateway_storage_classes()?,
    })
}

/// The storage SOP classes the gateway accepts: its table generated from
/// the standard dictionary (`dicom-gateway/src/sop_classes.rs`), read as data.
fn gateway_storage_classes() -> Result<BTreeSet<String>> {
    let path = workspace_root().join("dicom-gateway/src/sop_classes.rs");
    let text = std::fs::read_to_string(&path)?;
    let set: BTreeSet<String> = text
        .split('"')
        .filter(|s| {
            s.starts_with("1.2.840.10008.") && s.bytes().all(|b| b == b'.' || b.is_ascii_digit())
        })
        .map(str::to_owned)
        .collect();
    ensure!(
        set.len() > 100,
        "{}: only {} SOP classes",
        path.display(),
        set.len()
    );
    Ok(set)
}

/// `Ok`: a valid storage instance to send; `Err`: why it is skipped.
fn classify(path: &Path, policy: &Policy) -> std::result::Result<Candidate, String> {
    let obj = dicom_object::open_file(path)
        .map_err(|e| format!("not a readable DICOM Part 10 file: {e}"))?;
    let meta = obj.meta();
    let sop_class = trim(meta.media_storage_sop_class_uid());
    let ts = trim(meta.transfer_syntax());
    if !policy.storage_classes.contains(&sop_class) {
        return Err(format!(
            "SOP class {sop_class} is not a storage class the gateway accepts"
        ));
    }
    match TransferSyntaxRegistry.get(&ts) {
        None => return Err(format!("unknown transfer syntax {ts}")),
        Some(t) if t.is_unsupported() => {
            return Err(format!(
                "transfer syntax {ts} ({}) is not supported",
                t.name()
            ))
        }
        Some(_) => {}
    }
    let un = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .is_some_and(|e| e.vr() == dicom_core::VR::UN)
    };
    if un(tags::SOP_CLASS_UID) || un(tags::SOP_INSTANCE_UID) {
        // dcmtk reads such a value wrongly and sends a bogus Affected SOP
        // Class UID ("31"), which the gateway rightly refuses (0x0122)
        return Err("SOP Class/Instance UID encoded with VR UN".into());
    }
    let sop_uid = text_of(&obj, tags::SOP_INSTANCE_UID);
    if sop_uid != trim(meta.media_storage_sop_instance_uid()) {
        return Err("File Meta and data set disagree on the SOP Instance UID".into());
    }
    if text_of(&obj, tags::SOP_CLASS_UID) != sop_class {
        return Err("File Meta and data set disagree on the SOP Class UID".into());
    }
    let fp = fingerprint(&obj).map_err(|e| format!("Pixel Data: {e:#}"))?;
    let quarantine = policy.modalities.contains(&text_of(&obj, tags::MODALITY))
        || policy.sop_classes.contains(&sop_class)
        || text_of(&obj, tags::BURNED_IN_ANNOTATION).eq_ignore_ascii_case("YES");
    Ok(Candidate {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        uids: [
            text_of(&obj, tags::STUDY_INSTANCE_UID),
            text_of(&obj, tags::SERIES_INSTANCE_UID),
            sop_uid.clone(),
        ],
        sop_uid,
        fp,
        quarantine,
    })
}

/// `<site-packages>/data_store/data` of PyPI `pydicom-data`
/// (`MADO_E2E_PYDICOM_DATA` overrides).
fn pydicom_data_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MADO_E2E_PYDICOM_DATA").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut cmd = Command::new(venv_python());
    cmd.args([
        "-c",
        "import os, data_store; print(os.path.join(os.path.dirname(data_store.__file__), 'data'))",
    ]);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "PyPI pydicom-data is not installed in .tools/venv (scripts/install-test-deps.sh): {err}"
    );
    let dir = PathBuf::from(out.trim());
    ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    Ok(dir)
}

fn dir_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `.reason` files of a spool directory, for failure messages.
fn reasons(dir: &Path) -> String {
    dir_files(dir, ".reason")
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                std::fs::read_to_string(p).unwrap_or_default().trim()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn multiset<'a>(fps: impl Iterator<Item = &'a Fingerprint>) -> BTreeMap<&'a Fingerprint, usize> {
    let mut m = BTreeMap::new();
    for f in fps {
        *m.entry(f).or_default() += 1;
    }
    m
}

/// Names of `expected` not matched by `found` (multiset difference).
fn unmatched(expected: &[&Candidate], found: &[Fingerprint]) -> Vec<String> {
    let mut have = multiset(found.iter());
    let mut missing = Vec::new();
    for c in expected {
        match have.get_mut(&c.fp) {
            Some(n) if *n > 0 => *n -= 1,
            _ => missing.push(format!("{} ({} in {})", c.name, c.fp.0, c.fp.1)),
        }
    }
    missing
}

async fn wait_spool_drained(gw: &GatewayProc) -> Result<()> {
    let pending = gw.spool_dir.join("pending");
    let incoming = gw.spool_dir.join("incoming");
    wait_for(
        "the gateway's spool/pending to drain",
        scaled(Duration::from_secs(180)),
        || {
            let n = dir_files(&pending, ".dcm").len() + dir_files(&incoming, ".tmp").len();
            async move { Ok((n == 0).then_some(())) }
        },
    )
    .await
    .map_err(|e| anyhow!("{e:#}\n{}", gw.proc.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydicom_data_arrives_bit_exact_or_quarantined() {
    let t0 = Instant::now();
    let data = pydicom_data_dir().unwrap();
    let policy = screening_policy().unwrap();
    let files = dir_files(&data, ".dcm");
    assert!(
        files.len() >= 50,
        "pydicom-data: only {} files",
        files.len()
    );
    let mut valid = Vec::new();
    let mut skipped = Vec::new();
    for f in &files {
        match classify(f, &policy) {
            Ok(c) => valid.push(c),
            Err(why) => skipped.push((f.file_name().unwrap().to_string_lossy().into_owned(), why)),
        }
    }
    for (name, why) in &skipped {
        eprintln!("pydicom-data: skipped {name}: {why}");
    }
    let to_store: Vec<&Candidate> = valid.iter().filter(|c| !c.quarantine).collect();
    let to_quarantine: Vec<&Candidate> = valid.iter().filter(|c| c.quarantine).collect();
    assert!(!to_store.is_empty() && !to_quarantine.is_empty());
    let originals: BTreeSet<&str> = valid
        .iter()
        .flat_map(|c| c.uids.iter().map(String::as_str))
        .collect();

    // Several files share a SOP Instance UID (one image in several transfer
    // syntaxes). The object key is derived from it, so such files go in
    // successive rounds, each round checked before the next overwrites it.
    let mut rounds: Vec<Vec<&Candidate>> = Vec::new();
    for &c in &to_store {
        match rounds
            .iter_mut()
            .find(|r| r.iter().all(|o| o.sop_uid != c.sop_uid))
        {
            Some(r) => r.push(c),
            None => rounds.push(vec![c]),
        }
    }
    // quarantined files never reach the store: all in the first round
    rounds[0].extend(to_quarantine.iter().copied());

    let (_moto, storage, p) = s3_pipeline(toml::Table::new()).await.unwrap();
    let gw = &p.gateway;
    // original SOP Instance UID → the file whose content its object must hold
    let mut expected: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut sent_quarantine: Vec<Candidate> = Vec::new();
    let mut converted = 0;
    let mut big_endian = 0;
    let mut studies: BTreeMap<String, usize> = BTreeMap::new();
    let mut compared = 0;
    let mut not_sent: BTreeSet<PathBuf> = BTreeSet::new();
    for (i, round) in rounds.iter().enumerate() {
        // dcmsend converts Explicit VR Big Endian to Little Endian on the
        // way; pynetdicom proposes and sends each file's own syntax, so the
        // big-endian files travel (and must be stored) as big-endian
        let (be, le): (Vec<&Candidate>, Vec<&Candidate>) = round.iter().copied().partition(|c| {
            c.fp.1 == dicom_transfer_syntax_registry::entries::EXPLICIT_VR_BIG_ENDIAN.uid()
        });
        let paths: Vec<PathBuf> = le.iter().map(|c| c.path.clone()).collect();
        let (mut sent, log) = if paths.is_empty() {
            (Vec::new(), String::new())
        } else {
            dcmsend(&paths, gw.dicom_port).unwrap()
        };
        if !be.is_empty() {
            let paths: Vec<PathBuf> = be.iter().map(|c| c.path.clone()).collect();
            let summary = pynetdicom_send(&paths, gw.dicom_port).unwrap();
            assert_eq!(
                summary["success"].as_u64(),
                Some(be.len() as u64),
                "{summary}"
            );
            big_endian += be.len();
            sent.extend(be.iter().map(|c| Sent {
                file: c.path.clone(),
                status: "0x0000: Success".into(),
                network_ts: c.fp.1.clone(),
            }));
        }
        let mut problems = Vec::new();
        for c in round {
            match sent.iter().find(|s| s.file == c.path) {
                None => problems.push(format!("{}: not in dcmsend's report", c.name)),
                Some(s) if s.status.contains("not sent") => {
                    // dcmtk could not load it (e.g. truncated Pixel Data)
                    eprintln!("pydicom-data: skipped {}: dcmsend cannot read it", c.name);
                    not_sent.insert(c.path.clone());
                }
                Some(s) if !s.ok() => problems.push(format!("{}: status {}", c.name, s.status)),
                Some(s) => {
                    // dcmsend sends an uncompressed file in the uncompressed
                    // syntax the SCP accepted first (Explicit VR LE): the
                    // gateway must keep what travelled, bit-exact
                    let mut c = (*c).clone();
                    if s.network_ts != c.fp.1 {
                        converted += 1;
                        c.fp.1 = s.network_ts.clone();
                    }
                    if c.quarantine {
                        sent_quarantine.push(c);
                    } else {
                        expected.insert(c.sop_uid.clone(), c);
                    }
                }
            }
        }
        assert!(
            problems.is_empty(),
            "round {i}: {problems:#?}\n{log}\n{}",
            gw.proc.logs()
        );
        wait_spool_drained(gw).await.unwrap();
        let failed = dir_files(&gw.spool_dir.join("failed"), ".dcm");
        assert!(
            failed.is_empty(),
            "round {i}: registration refused for {} instances:\n{}",
            failed.len(),
            reasons(&gw.spool_dir.join("failed"))
        );

        let keys = storage.list("studies/").await.unwrap();
        let mut found = Vec::new();
        studies.clear();
        for key in &keys {
            let (study, _, sop) = parse_key(key).unwrap();
            assert!(!originals.contains(sop.as_str()), "{key}: original UID");
            let bytes = storage.get(key).await.unwrap();
            let obj = parse_part10(&bytes)
                .with_context(|| format!("object {key}"))
                .unwrap();
            for el in obj.iter() {
                if el.vr() == dicom_core::VR::UI {
                    if let Ok(v) = el.to_str() {
                        assert!(
                            !originals.contains(trim(&v).as_str()),
                            "{key}: {} keeps an original UID",
                            el.tag()
                        );
                    }
                }
            }
            assert_eq!(
                text_of(&obj, tags::PATIENT_IDENTITY_REMOVED),
                "YES",
                "{key}: PatientIdentityRemoved"
            );
            found.push(fingerprint(&obj).unwrap());
            *studies.entry(study).or_default() += 1;
        }
        let want: Vec<&Candidate> = expected.values().collect();
        let missing = unmatched(&want, &found);
        assert!(
            missing.is_empty() && found.len() == want.len(),
            "round {i}: {} objects in the store, {} expected; not found with the same \
             SOP class, transfer syntax and Pixel Data: {missing:#?}\nquarantined:\n{}",
            found.len(),
            want.len(),
            reasons(&gw.spool_dir.join("quarantine"))
        );
        compared += round
            .iter()
            .filter(|c| !c.quarantine && !not_sent.contains(&c.path))
            .count();
    }

    // the quarantine holds exactly the screened files, as received
    let qdir = gw.spool_dir.join("quarantine");
    let mut in_quarantine = Vec::new();
    for f in dir_files(&qdir, ".dcm") {
        let obj = dicom_object::open_file(&f).unwrap();
        in_quarantine.push(fingerprint(&obj).unwrap());
    }
    let to_quarantine: Vec<&Candidate> = sent_quarantine.iter().collect();
    let missing = unmatched(&to_quarantine, &in_quarantine);
    assert!(
        missing.is_empty() && in_quarantine.len() == to_quarantine.len(),
        "{} files in quarantine, {} expected; missing: {missing:#?}\n{}",
        in_quarantine.len(),
        to_quarantine.len(),
        reasons(&qdir)
    );

    // every stored instance is indexed by the server
    let summary = StoreSummary {
        instances: Vec::new(),
        studies,
        leaks: BTreeMap::new(),
    };
    wait_indexed(&p.server, &summary, Duration::from_secs(120))
        .await
        .unwrap();
    eprintln!(
        "pydicom-data: {} files; {} valid storage instances sent (dcmsend; pynetdicom for big-endian) in {} rounds; \
         {compared} compared bit-exact in the store ({} objects); {} quarantined as expected; \
         {} skipped ({} of them unreadable by dcmsend); {converted} converted by dcmsend \
         to Explicit VR LE; {big_endian} sent and stored as Explicit VR BE by pynetdicom; {:?}",
        files.len(),
        valid.len() - not_sent.len(),
        rounds.len(),
        expected.len(),
        to_quarantine.len(),
        skipped.len() + not_sent.len(),
        not_sent.len(),
        t0.elapsed()
    );
}
