//! Shared steps of the scenarios: the full pipeline (server + gateway),
//! pushing samples, waiting for upload and indexing, and checking what ended
//! up in the object store independently of the code under test.

use crate::apps::{
    spawn_gateway, spawn_server, GatewayConfig, GatewayProc, ServerConfig, ServerProc,
};
use crate::samples::{generate, SampleOptions, SampleSet, PHI};
use crate::storage::Storage;
use crate::util::{artifacts_dir, contains, scaled, test_name, wait_for};
use crate::web::{img_srcs, WebSession};
use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_core::header::Header;
use dicom_dictionary_std::tags;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Faster retries than the production defaults, so tests that restart a
/// peer do not wait a minute for the next attempt.
pub fn fast_upload_retries() -> toml::Table {
    toml::toml! {
        [upload]
        retry_base_ms = 200
        retry_max_ms = 1000
        rescan_secs = 2
    }
}

/// Server and gateway wired together on `storage`.
pub struct Pipeline {
    pub server: ServerProc,
    pub gateway: GatewayProc,
}

pub async fn start_pipeline(
    server_cfg: ServerConfig,
    gateway_storage: Storage,
) -> Result<Pipeline> {
    let server = spawn_server(server_cfg).await?;
    let mut gcfg = GatewayConfig::new(&server.base_url, &server.cfg.gateway_token, gateway_storage);
    gcfg.extra = fast_upload_retries();
    let gateway = spawn_gateway(gcfg).await?;
    Ok(Pipeline { server, gateway })
}

/// Samples in a fresh temp dir (kept alive by the returned guard).
pub fn samples(opts: &SampleOptions) -> Result<(tempfile::TempDir, SampleSet)> {
    let dir = tempfile::Builder::new()
        .prefix("mado-e2e-samples-")
        .tempdir()?;
    let set = generate(dir.path(), opts)?;
    Ok((dir, set))
}

pub fn default_samples() -> Result<(tempfile::TempDir, SampleSet)> {
    samples(&SampleOptions {
        ct_slices: 6,
        ct2_slices: 2,
        cr_images: 2,
        seed: 7,
        japanese: true,
    })
}

/// Wait until `storage` holds exactly `n` objects under `studies/`.
pub async fn wait_for_objects(
    storage: &Storage,
    n: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    wait_for(
        &format!("{n} objects in the store"),
        scaled(timeout),
        || async move {
            let keys = storage.list("studies/").await?;
            if keys.len() > n {
                bail!("expected {n} objects, found {}: {keys:#?}", keys.len());
            }
            Ok((keys.len() == n).then_some(keys))
        },
    )
    .await
}

/// A de-identified object as found in the store.
#[derive(Debug, Clone)]
#[allow(dead_code)] // all fields show up in failure messages (Debug)
pub struct StoredInstance {
    pub key: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    pub patient_id: String,
    pub patient_name: String,
    pub frame_of_reference: String,
}

/// What the store holds, grouped.
#[derive(Debug)]
pub struct StoreSummary {
    pub instances: Vec<StoredInstance>,
    /// de-identified study UID → number of instances
    pub studies: BTreeMap<String, usize>,
    /// Identifying values found in objects: what → number of objects.
    /// Collected rather than failing at once so one run shows every leak
    /// and still exercises indexing and viewing; see [`Self::assert_no_leaks`].
    pub leaks: BTreeMap<String, usize>,
}

impl StoreSummary {
    /// Fail if any identifying value survived de-identification.
    pub fn assert_no_leaks(&self) {
        assert!(
            self.leaks.is_empty(),
            "identifying values crossed the upload boundary (value → objects): {:#?}",
            self.leaks
        );
    }

    /// The de-identified study holding `modality` instances.
    pub fn study_of_modality(&self, modality: &str) -> Option<String> {
        self.instances
            .iter()
            .find(|i| i.modality == modality)
            .map(|i| i.study_uid.clone())
    }
}

fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c.len() == 1 || !c.starts_with('0'))
        })
}

/// Split `studies/{st}/series/{se}/instances/{sop}.dcm`.
pub fn parse_key(key: &str) -> Result<(String, String, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["studies", st, "series", se, "instances", file] => {
            let sop = file
                .strip_suffix(".dcm")
                .ok_or_else(|| anyhow!("key {key:?} does not end in .dcm"))?;
            for u in [st, se, &sop] {
                ensure!(is_uid(u), "key {key:?}: {u:?} is not a valid UID");
            }
            Ok((st.to_string(), se.to_string(), sop.to_string()))
        }
        _ => bail!("key {key:?} does not follow studies/…/series/…/instances/….dcm"),
    }
}

pub fn parse_part10(bytes: &[u8]) -> Result<dicom_object::DefaultDicomObject> {
    let body = if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else {
        bytes
    };
    ensure!(
        body.starts_with(b"DICM"),
        "not a DICOM Part 10 file (no DICM magic)"
    );
    Ok(dicom_object::from_reader(body)?)
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        })
        .unwrap_or_default()
}

/// Read every object and check it: the key scheme, a parseable Part 10
/// file whose UIDs match its key, no original UID and no identifying value
/// anywhere (parsed values and raw bytes), pixel data intact in size, and
/// UIDs consistent within each study and series.
pub async fn check_store(
    storage: &Storage,
    samples: &SampleSet,
    keys: &[String],
) -> Result<StoreSummary> {
    let needles = PHI.needles();
    let originals: BTreeSet<&str> = samples.original_uids.iter().map(String::as_str).collect();
    let mut instances = Vec::new();
    let mut leaks: BTreeMap<String, usize> = BTreeMap::new();
    let mut leak = |what: String| *leaks.entry(what).or_default() += 1;
    for key in keys {
        let (st, se, sop) = parse_key(key)?;
        for u in [&st, &se, &sop] {
            ensure!(
                !originals.contains(u.as_str()),
                "key {key} carries an original UID"
            );
        }
        let bytes = storage.get(key).await?;
        for n in &needles {
            if contains(&bytes, n.as_bytes()) {
                leak(format!("raw bytes contain {n:?}"));
            }
        }
        for u in &samples.original_uids {
            if contains(&bytes, u.as_bytes()) {
                leak("raw bytes contain an original UID".into());
            }
        }
        let obj = parse_part10(&bytes).with_context(|| format!("parsing object {key}"))?;
        ensure!(
            text(&obj, tags::STUDY_INSTANCE_UID) == st,
            "{key}: StudyInstanceUID differs from key"
        );
        ensure!(
            text(&obj, tags::SERIES_INSTANCE_UID) == se,
            "{key}: SeriesInstanceUID differs from key"
        );
        ensure!(
            text(&obj, tags::SOP_INSTANCE_UID) == sop,
            "{key}: SOPInstanceUID differs from key"
        );
        ensure!(
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches(['\0', ' '])
                == sop,
            "{key}: MediaStorageSOPInstanceUID differs from SOPInstanceUID"
        );
        let sop_class_uid = text(&obj, tags::SOP_CLASS_UID);
        ensure!(
            samples
                .files
                .iter()
                .any(|f| f.sop_class_uid == sop_class_uid),
            "{key}: unexpected SOP class {sop_class_uid}"
        );
        // the identifying attributes are gone or replaced
        let patient_id = text(&obj, tags::PATIENT_ID);
        let patient_name = text(&obj, tags::PATIENT_NAME);
        let checks = [
            ("PatientID", patient_id == PHI.patient_id),
            ("PatientName", patient_name.contains("YAMADA")),
            (
                "PatientBirthDate",
                text(&obj, tags::PATIENT_BIRTH_DATE) == PHI.birth_date,
            ),
            (
                "AccessionNumber",
                PHI.accession_numbers
                    .contains(&text(&obj, tags::ACCESSION_NUMBER).as_str()),
            ),
            (
                "InstitutionName",
                text(&obj, tags::INSTITUTION_NAME) == PHI.institution_name,
            ),
            (
                "StationName",
                text(&obj, tags::STATION_NAME) == PHI.station_name,
            ),
        ];
        for (what, kept) in checks {
            if kept {
                leak(format!("{what} kept"));
            }
        }
        // no value of VR UI anywhere in the top-level dataset is an original UID
        for el in obj.iter() {
            if el.vr() == dicom_core::VR::UI {
                if let Ok(v) = el.to_str() {
                    let v = v.trim_end_matches(['\0', ' ']);
                    if originals.contains(v) {
                        leak(format!("{} keeps an original UID", el.tag()));
                    }
                }
            }
        }
        // the image survives de-identification
        let rows = obj
            .element(tags::ROWS)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0);
        let cols = obj
            .element(tags::COLUMNS)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(0);
        let px = obj
            .element(tags::PIXEL_DATA)
            .with_context(|| format!("{key}: no Pixel Data"))?;
        let px_len = px.to_bytes().map(|b| b.len()).unwrap_or(0);
        ensure!(
            rows > 0 && cols > 0 && px_len as u64 == u64::from(rows) * u64::from(cols) * 2,
            "{key}: Pixel Data of {px_len} bytes for {rows}x{cols}"
        );
        instances.push(StoredInstance {
            key: key.clone(),
            study_uid: st,
            series_uid: se,
            sop_uid: sop,
            sop_class_uid,
            modality: text(&obj, tags::MODALITY),
            patient_id,
            patient_name,
            frame_of_reference: text(&obj, tags::FRAME_OF_REFERENCE_UID),
        });
    }

    // consistency: as many studies / series / instances as were sent, with the same shape
    let studies_n: BTreeSet<_> = instances.iter().map(|i| &i.study_uid).collect();
    let series_n: BTreeSet<_> = instances.iter().map(|i| &i.series_uid).collect();
    let sops: BTreeSet<_> = instances.iter().map(|i| &i.sop_uid).collect();
    ensure!(
        studies_n.len() == samples.study_uids().len(),
        "expected {} studies, found {}",
        samples.study_uids().len(),
        studies_n.len()
    );
    ensure!(
        series_n.len() == samples.series_uids().len(),
        "expected {} series, found {}",
        samples.series_uids().len(),
        series_n.len()
    );
    ensure!(
        sops.len() == samples.files.len(),
        "expected {} distinct instances, found {}",
        samples.files.len(),
        sops.len()
    );
    // a series belongs to exactly one study, and each de-identified study
    // has the modalities and size of one original study
    let mut series_study: BTreeMap<&str, &str> = BTreeMap::new();
    for i in &instances {
        let prev = series_study.insert(&i.series_uid, &i.study_uid);
        ensure!(
            prev.is_none() || prev == Some(i.study_uid.as_str()),
            "series {} spans studies",
            i.series_uid
        );
    }
    let mut frames: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &instances {
        frames
            .entry(&i.series_uid)
            .or_default()
            .insert(&i.frame_of_reference);
    }
    for (series, f) in &frames {
        ensure!(
            f.len() == 1,
            "series {series} has {} Frame of Reference UIDs: {f:?}",
            f.len()
        );
    }
    let mut studies: BTreeMap<String, usize> = BTreeMap::new();
    for i in &instances {
        *studies.entry(i.study_uid.clone()).or_default() += 1;
    }
    let mut got: Vec<usize> = studies.values().copied().collect();
    let mut want: Vec<usize> = samples
        .study_uids()
        .iter()
        .map(|s| samples.instances_in_study(s))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    ensure!(
        got == want,
        "instances per study: got {got:?}, sent {want:?}"
    );
    for st in studies.keys() {
        let mods: BTreeSet<_> = instances
            .iter()
            .filter(|i| &i.study_uid == st)
            .map(|i| i.modality.as_str())
            .collect();
        ensure!(
            mods.len() == 1,
            "de-identified study mixes modalities {mods:?}"
        );
    }
    // one patient, one pseudonym (keyed and deterministic)
    let pids: BTreeSet<_> = instances.iter().map(|i| i.patient_id.as_str()).collect();
    ensure!(
        pids.len() == 1,
        "one patient should get one pseudonymous PatientID, got {pids:?}"
    );
    ensure!(
        !pids.iter().next().is_some_and(|p| p.is_empty()),
        "PatientID is empty (expected a pseudonym)"
    );
    Ok(StoreSummary {
        instances,
        studies,
        leaks,
    })
}

/// Log in and poll each study page until it shows one image per instance.
pub async fn wait_indexed(
    server: &ServerProc,
    summary: &StoreSummary,
    timeout: Duration,
) -> Result<WebSession> {
    let mut web = WebSession::new(&server.base_url)?;
    web.login(&server.cfg.admin_user, &server.cfg.admin_password)
        .await?;
    for (study, n) in &summary.studies {
        let path = format!("/studies/{study}");
        let n = *n;
        let deadline = std::time::Instant::now() + scaled(timeout);
        loop {
            let page = web.get(&path).await?;
            let imgs = if page.status.is_success() {
                img_srcs(&page.body)
                    .into_iter()
                    .filter(|s| s.contains("rendered"))
                    .count()
            } else {
                ensure!(
                    page.status.as_u16() == 404,
                    "GET {path}: {}\n{}",
                    page.status,
                    page.body
                );
                0
            };
            ensure!(
                imgs <= n,
                "study page shows {imgs} images, only {n} were sent"
            );
            if imgs == n {
                break;
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {path} to show {n} images (shows {imgs}, status {})",
                    page.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(web)
}

/// The worklist lists every study with the pseudonymous patient and no
/// identifying value.
pub async fn check_worklist(web: &mut WebSession, summary: &StoreSummary) -> Result<()> {
    let page = web.get("/").await?;
    ensure!(page.status.is_success(), "GET /: {}", page.status);
    for st in summary.studies.keys() {
        ensure!(
            page.body.contains(&format!("/studies/{st}")),
            "worklist does not link study {st}\n{}",
            page.body
        );
    }
    let pid = &summary.instances[0].patient_id;
    ensure!(
        page.body.contains(pid.as_str()),
        "worklist does not show the pseudonymous PatientID {pid}"
    );
    let pname = summary.instances[0]
        .patient_name
        .split('=')
        .next()
        .unwrap_or("")
        .replace('^', " ");
    let pname = pname.trim();
    if !pname.is_empty() {
        ensure!(
            page.body.contains(pname),
            "worklist does not show the pseudonymous name {pname:?}"
        );
    }
    for n in PHI.needles() {
        ensure!(
            !page.body.contains(n),
            "worklist shows identifying value {n:?}"
        );
    }
    Ok(())
}

/// Screenshot a study page in Chromium; every image must load and show
/// something. Returns the screenshot path.
pub fn check_study_in_browser(
    server: &ServerProc,
    study_uid: &str,
    expected_images: usize,
    label: &str,
) -> Result<PathBuf> {
    let out = artifacts_dir("screenshots").join(format!("{}-{label}.png", test_name()));
    let report = crate::browser::chromium_screenshot(
        &server.base_url,
        &format!("/studies/{study_uid}"),
        &server.cfg.admin_user,
        &server.cfg.admin_password,
        &out,
    )?;
    let rendered: Vec<_> = report
        .images
        .iter()
        .filter(|i| i.src.as_deref().is_some_and(|s| s.contains("rendered")))
        .collect();
    ensure!(
        rendered.len() == expected_images,
        "browser saw {} rendered images, expected {expected_images}: {:#?}\nerrors: {:#?}",
        rendered.len(),
        report.images,
        report.errors
    );
    for img in &rendered {
        ensure!(
            img.natural_width > 0 && img.natural_height > 0,
            "image {:?} did not load: {:#?}\nerrors: {:#?}",
            img.src,
            img,
            report.errors
        );
        ensure!(img.non_blank, "image {:?} is blank: {img:#?}", img.src);
    }
    ensure!(out.is_file(), "no screenshot written at {}", out.display());
    Ok(out)
}
