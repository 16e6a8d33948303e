//! Gateway fault drills with real processes: `kill -9` of the gateway in the
//! middle of a 300-instance push and in the middle of uploading, the object
//! store (moto) going away and coming back, and a spool on a tiny tmpfs
//! (disk full → 0xA7xx to the sender, no crash, no truncated file).
//!
//! The invariant checked everywhere: every instance the sender saw
//! acknowledged (dcmtk `storescu -v`: "Sending file" followed by a success
//! response) ends up in the store exactly once and in the server's index.

use super::common::*;
use crate::apps::{spawn_gateway, spawn_server, GatewayConfig, GatewayProc, ServerConfig};
use crate::dcmtk::dcmtk_storescu;
use crate::process::Proc;
use crate::samples::{SampleOptions, SampleSet};
use crate::storage::Storage;
use crate::util::{free_port, scaled, tool_dirs, wait_for, which};
use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_dictionary_std::tags;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// ------------------------------------------------------------ helpers

/// (acknowledged files, refused files with storescu's response line)
type Outcome = (Vec<PathBuf>, Vec<(PathBuf, String)>);

/// A `storescu -v` running in the background.
struct Sender {
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Sender {
    fn start(files: &[PathBuf], port: u16) -> Result<Self> {
        let bin = dcmtk_storescu()?;
        let dir = tempfile::Builder::new()
            .prefix("mado-e2e-storescu-")
            .tempdir()?;
        let mut cmd = Command::new(bin);
        cmd.env("TCP_NODELAY", "1")
            .args(["-v", "-aet", "MADOTEST", "-aec", "MADO"])
            .args(["-to", "30", "-ta", "30", "-td", "60"])
            .arg("127.0.0.1")
            .arg(port.to_string())
            .args(files.iter().map(|f| f.as_os_str()));
        let (proc, _) = Proc::spawn("storescu", cmd, dir.path(), None, Duration::ZERO)?;
        Ok(Self { proc, _dir: dir })
    }

    fn log(&self) -> String {
        format!("{}\n{}", self.proc.stdout_text(), self.proc.stderr_text())
    }

    /// Files the SCP acknowledged with Success, and files answered with
    /// another status (in sending order).
    fn outcome(&self) -> Outcome {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut current: Option<PathBuf> = None;
        for line in self.log().lines() {
            if let Some(p) = line.split("Sending file: ").nth(1) {
                current = Some(PathBuf::from(p.trim()));
            } else if line.contains("Received Store Response") {
                if let Some(p) = current.take() {
                    if line.contains("(Success)") {
                        ok.push(p);
                    } else {
                        failed.push((p, line.to_string()));
                    }
                }
            }
        }
        (ok, failed)
    }

    fn acked(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Received Store Response (Success)"))
            .count()
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        match self.proc.wait_exit(scaled(timeout)) {
            Some(_) => Ok(()),
            None => {
                self.proc.kill();
                bail!("storescu did not finish in {timeout:?}\n{}", self.log())
            }
        }
    }
}

/// Send `files` in one association and wait; returns (acked, failed).
fn push(files: &[PathBuf], port: u16) -> Result<Outcome> {
    let mut s = Sender::start(files, port)?;
    s.wait(Duration::from_secs(120 + files.len() as u64))?;
    Ok(s.outcome())
}

fn count_dir(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

fn pixel_hash(obj: &dicom_object::DefaultDicomObject) -> Result<u64> {
    let px = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| anyhow!("no pixel data: {e}"))?
        .to_bytes()
        .map_err(|e| anyhow!("pixel data: {e}"))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    px.hash(&mut h);
    Ok(h.finish())
}

/// Pixel-data hash of every sample file → its path (pixels survive
/// de-identification unchanged, UIDs do not).
fn original_hashes(set: &SampleSet) -> Result<HashMap<u64, PathBuf>> {
    let mut m = HashMap::new();
    for f in &set.files {
        let obj = dicom_object::open_file(&f.path)?;
        let h = pixel_hash(&obj)?;
        ensure!(
            m.insert(h, f.path.clone()).is_none(),
            "two sample slices have identical pixels; the drill cannot tell them apart"
        );
    }
    Ok(m)
}

/// Read every object: each must parse, map to a distinct original, and the
/// set must be exactly `expected`. Returns study UID → count for
/// [`wait_indexed`].
async fn check_exactly_once(
    storage: &Storage,
    keys: &[String],
    originals: &HashMap<u64, PathBuf>,
    expected: &BTreeSet<PathBuf>,
) -> Result<BTreeMap<String, usize>> {
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut studies = BTreeMap::new();
    for key in keys {
        let (study, _, _) = parse_key(key)?;
        let bytes = storage.get(key).await?;
        let obj = parse_part10(&bytes).with_context(|| format!("object {key}"))?;
        let h = pixel_hash(&obj).with_context(|| format!("object {key}"))?;
        let orig = originals
            .get(&h)
            .ok_or_else(|| anyhow!("object {key} matches no sent instance"))?;
        if let Some(other) = seen.insert(orig.clone(), key.clone()) {
            bail!(
                "{} is in the store twice: {other} and {key}",
                orig.display()
            );
        }
        *studies.entry(study).or_default() += 1;
    }
    let stored: BTreeSet<PathBuf> = seen.into_keys().collect();
    let missing: Vec<_> = expected.difference(&stored).collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged instances are not in the store: {missing:?}",
        missing.len()
    );
    Ok(studies)
}

async fn wait_in_index(
    server: &crate::apps::ServerProc,
    studies: BTreeMap<String, usize>,
) -> Result<()> {
    let summary = StoreSummary {
        instances: Vec::new(),
        studies,
        leaks: BTreeMap::new(),
    };
    wait_indexed(server, &summary, Duration::from_secs(180)).await?;
    Ok(())
}

fn ct_series(n: usize, seed: u64) -> Result<(tempfile::TempDir, SampleSet)> {
    samples(&SampleOptions {
        ct_slices: n,
        ct2_slices: 0,
        cr_images: 0,
        seed,
        japanese: false,
    })
}

fn gateway_cfg(server: &crate::apps::ServerProc, storage: Storage, spool: &Path) -> GatewayConfig {
    let mut g = GatewayConfig::new(&server.base_url, &server.cfg.gateway_token, storage);
    g.spool_dir = Some(spool.to_path_buf());
    g.extra = fast_upload_retries();
    g
}

fn with_extra(mut g: GatewayConfig, extra: toml::Table) -> GatewayConfig {
    for (k, v) in extra {
        match (g.extra.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => a.extend(b),
            (_, v) => {
                g.extra.insert(k, v);
            }
        }
    }
    g
}

// ------------------------------------------------------------ kill -9

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kill9_during_push_and_upload() {
    let moto = crate::moto::moto().await.unwrap();
    let bucket = format!("mado-e2e-{}", uuid::Uuid::new_v4().simple());
    let gw_storage = Storage::S3(moto.bucket(&bucket, true));
    let srv_storage = Storage::S3(moto.bucket(&bucket, false));
    let server = spawn_server(ServerConfig {
        storage: Some(srv_storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let spool_root = tempfile::tempdir().unwrap();
    let spool = spool_root.path().join("spool");
    let (_d, set) = ct_series(300, 11).unwrap();
    let files = set.paths();
    let originals = original_hashes(&set).unwrap();
    let base = gateway_cfg(&server, gw_storage, &spool);

    // 1. kill -9 in the middle of the push
    let mut gw = spawn_gateway(base.clone()).await.unwrap();
    let mut sender = Sender::start(&files, gw.dicom_port).unwrap();
    let t0 = Instant::now();
    while sender.acked() < 60 {
        assert!(
            t0.elapsed() < scaled(Duration::from_secs(120)),
            "no progress\n{}\n{}",
            sender.log(),
            gw.proc.logs()
        );
        assert!(sender.proc.try_status().is_none(), "{}", sender.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.proc.kill(); // SIGKILL
    sender.wait(Duration::from_secs(60)).unwrap();
    let (acked1, _) = sender.outcome();
    eprintln!(
        "drill 1: gateway killed after {} acknowledgements",
        acked1.len()
    );
    assert!(
        acked1.len() >= 60 && acked1.len() < files.len(),
        "the kill must land mid-push (acked {})",
        acked1.len()
    );
    drop(gw);

    // 2. restart (one upload at a time, so the next kill lands mid-upload);
    //    the sender retries what was not acknowledged, as a modality does
    let slow = with_extra(
        base.clone(),
        toml::toml! { [upload]
        concurrency = 1 },
    );
    let mut gw = spawn_gateway(slow).await.unwrap();
    let acked1_set: BTreeSet<PathBuf> = acked1.iter().cloned().collect();
    let rest: Vec<PathBuf> = files
        .iter()
        .filter(|f| !acked1_set.contains(*f))
        .cloned()
        .collect();
    let (acked2, failed2) = push(&rest, gw.dicom_port).unwrap();
    assert!(
        failed2.is_empty() && acked2.len() == rest.len(),
        "re-send: {} acked of {}, failures {failed2:?}",
        acked2.len(),
        rest.len()
    );

    // 3. kill -9 while uploading
    let pending_dir = spool.join("pending");
    let uploaded = wait_for("some uploads", scaled(Duration::from_secs(120)), || {
        let s = &srv_storage;
        async move {
            let n = s.list("studies/").await?.len();
            Ok((n >= 10).then_some(n))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    gw.proc.kill();
    let pending = count_dir(&pending_dir, ".dcm");
    eprintln!("drill 2: gateway killed with {uploaded}+ uploaded, {pending} pending");
    assert!(pending > 0, "the kill must land mid-upload");
    drop(gw);

    // 4. restart: everything drains, nothing twice
    let gw = spawn_gateway(base).await.unwrap();
    let keys = wait_for_objects(&srv_storage, files.len(), Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let expected: BTreeSet<PathBuf> = acked1.into_iter().chain(acked2).collect();
    assert_eq!(expected.len(), files.len());
    let studies = check_exactly_once(&srv_storage, &keys, &originals, &expected)
        .await
        .unwrap();
    wait_in_index(&server, studies).await.unwrap();
    wait_for(
        "spool/pending to drain",
        scaled(Duration::from_secs(60)),
        || {
            let n = count_dir(&pending_dir, ".dcm");
            async move { Ok((n == 0).then_some(())) }
        },
    )
    .await
    .unwrap();
    assert_eq!(count_dir(&spool.join("failed"), ".dcm"), 0);
    assert_eq!(count_dir(&spool.join("quarantine"), ".dcm"), 0);
}

// ------------------------------------------------------------ store outage

/// moto on a fixed port, so it can be stopped and started again.
fn start_moto(port: u16, dir: &Path, name: &str) -> Result<Proc> {
    let bin = which("moto_server", &tool_dirs()).ok_or_else(|| anyhow!("moto_server not found"))?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let (p, _) = Proc::spawn(name, cmd, dir, None, Duration::ZERO)?;
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "moto did not start\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_store_outage_spools_then_drains() {
    let moto_dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut moto = start_moto(port, moto_dir.path(), "moto-1").unwrap();
    let spec = crate::storage::S3Spec {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        bucket: format!("mado-e2e-{}", uuid::Uuid::new_v4().simple()),
        access_key_id: "mado-e2e-test".into(),
        secret_access_key: "mado-e2e-test-secret".into(),
        create_bucket: true,
    };
    let srv_storage = Storage::S3(crate::storage::S3Spec {
        create_bucket: false,
        ..spec.clone()
    });
    let server = spawn_server(ServerConfig {
        storage: Some(srv_storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let spool_root = tempfile::tempdir().unwrap();
    let spool = spool_root.path().join("spool");
    let mut gw = spawn_gateway(gateway_cfg(&server, Storage::S3(spec.clone()), &spool))
        .await
        .unwrap();

    // the store goes away before the push
    moto.kill();
    let (_d, set) = ct_series(40, 12).unwrap();
    let files = set.paths();
    let originals = original_hashes(&set).unwrap();
    let (acked, failed) = push(&files, gw.dicom_port).unwrap();
    assert!(
        failed.is_empty() && acked.len() == files.len(),
        "the store being down must not affect reception: {failed:?}"
    );
    // the spool holds everything while the store is down
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_dir(&spool.join("pending"), ".dcm"), files.len());
    assert!(
        gw.proc.try_status().is_none(),
        "the gateway must keep running"
    );

    // the store comes back (empty: moto keeps nothing; recreate the bucket)
    let _moto2 = start_moto(port, moto_dir.path(), "moto-2").unwrap();
    crate::storage::S3Spec {
        create_bucket: false,
        ..spec.clone()
    }
    .client()
    .create_bucket()
    .bucket(&spec.bucket)
    .send()
    .await
    .unwrap();
    let keys = wait_for_objects(&srv_storage, files.len(), Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let expected: BTreeSet<PathBuf> = acked.into_iter().collect();
    let studies = check_exactly_once(&srv_storage, &keys, &originals, &expected)
        .await
        .unwrap();
    wait_in_index(&server, studies).await.unwrap();
}

// ------------------------------------------------------------ disk full

/// A 4 MiB tmpfs, unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mado-e2e-tmpfs-")
            .tempdir()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .status()
            .context("running mount (the drill needs root)")?;
        ensure!(
            st.success(),
            "mount -t tmpfs failed ({st}); the drill needs root"
        );
        Ok(Self { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn assert_spool_files_complete(gw: &GatewayProc, spool: &Path) {
    assert_eq!(
        count_dir(&spool.join("incoming"), ""),
        0,
        "no temporary file may remain after a failed write"
    );
    let rd = std::fs::read_dir(spool.join("pending")).unwrap();
    for e in rd.flatten() {
        let obj = dicom_object::open_file(e.path())
            .unwrap_or_else(|err| panic!("{}: {err}\n{}", e.path().display(), gw.proc.logs()));
        let px = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(
            px.len(),
            512 * 512 * 2,
            "{} is truncated",
            e.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_disk_full_refuses_then_recovers() {
    let fs = TinyFs::mount().unwrap();
    let spool = fs.path().join("spool");
    let objects = tempfile::tempdir().unwrap();
    let storage = Storage::Local {
        path: objects.path().join("objects"),
    };
    let server = spawn_server(ServerConfig {
        storage: Some(storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let base = gateway_cfg(&server, storage.clone(), &spool);
    let (_d, set) = ct_series(20, 13).unwrap();
    let files = set.paths();
    let originals = original_hashes(&set).unwrap();

    // 1. upload off: the spool fills up
    let off = with_extra(
        base.clone(),
        toml::toml! { [upload]
        enabled = false },
    );
    let mut gw = spawn_gateway(off).await.unwrap();
    let (acked, failed) = push(&files, gw.dicom_port).unwrap();
    eprintln!(
        "disk full: {} acked, {} refused; first refusal: {:?}",
        acked.len(),
        failed.len(),
        failed.first()
    );
    assert!(!acked.is_empty(), "some instances fit in 4 MiB");
    assert!(!failed.is_empty(), "a 4 MiB spool cannot hold 20 CT slices");
    for (f, line) in &failed {
        assert!(
            line.contains("OutOfResources") || line.contains("Out of Resources"),
            "{}: expected a 0xA7xx refusal, got {line}",
            f.display()
        );
    }
    assert!(gw.proc.try_status().is_none(), "the gateway must not crash");
    assert_eq!(count_dir(&spool.join("pending"), ".dcm"), acked.len());
    assert_spool_files_complete(&gw, &spool);
    // an echo still works, and a new association is still served
    let (again, _) = push(&files[..1], gw.dicom_port).unwrap();
    assert!(again.is_empty(), "still full");
    gw.proc.kill();
    drop(gw);

    // 2. upload on: space frees as the spool drains, the sender re-sends
    //    the refused instances and they are accepted
    let gw = spawn_gateway(base).await.unwrap();
    wait_for("spool to drain", scaled(Duration::from_secs(120)), || {
        let n = count_dir(&spool.join("pending"), ".dcm");
        async move { Ok((n == 0).then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    // storescu stops at the first refusal: re-send everything not acknowledged
    let mut acked_all: BTreeSet<PathBuf> = acked.into_iter().collect();
    let refused: Vec<PathBuf> = files
        .iter()
        .filter(|f| !acked_all.contains(*f))
        .cloned()
        .collect();
    // send in small batches so the spool (4 MiB) never overflows again
    for chunk in refused.chunks(4) {
        let (ok, bad) = push(chunk, gw.dicom_port).unwrap();
        assert!(
            bad.is_empty(),
            "after space freed: {bad:?}\n{}",
            gw.proc.logs()
        );
        acked_all.extend(ok);
        wait_for("spool to drain", scaled(Duration::from_secs(120)), || {
            let n = count_dir(&spool.join("pending"), ".dcm");
            async move { Ok((n == 0).then_some(())) }
        })
        .await
        .unwrap();
    }
    assert_eq!(acked_all.len(), files.len());
    let keys = wait_for_objects(&storage, files.len(), Duration::from_secs(120))
        .await
        .unwrap();
    let studies = check_exactly_once(&storage, &keys, &originals, &acked_all)
        .await
        .unwrap();
    wait_in_index(&server, studies).await.unwrap();
    assert_eq!(count_dir(&spool.join("incoming"), ""), 0);
}
