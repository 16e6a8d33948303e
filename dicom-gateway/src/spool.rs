//! The durable on-premises spool.
//!
//! ```text
//! <spool.dir>/incoming/<id>.tmp      being written (never acknowledged)
//! <spool.dir>/pending/<id>.dcm       acknowledged, waiting for upload
//! <spool.dir>/failed/<id>.dcm        rejected by the server (+ <id>.reason)
//! <spool.dir>/quarantine/<id>.dcm    unparsable / not de-identifiable (+ <id>.reason)
//! ```
//!
//! A `pending` file is the instance exactly as received: a Part 10 file
//! whose meta group carries the negotiated transfer syntax, followed by the
//! data set bytes as they came off the wire. It reaches `pending/` by
//! write → fsync → rename → fsync(dir), and only then is C-STORE success
//! sent. `<id>` is a UUID (simple form), never derived from the data.

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why an incoming instance was not spooled; maps to a C-STORE status.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("data set cannot be parsed: {0}")]
    Unreadable(String),
    #[error("transfer syntax {0} is not supported")]
    UnsupportedTransferSyntax(String),
    #[error("data set has no {0}")]
    MissingAttribute(&'static str),
    #[error("{0} of the data set differs from the command")]
    Mismatch(&'static str),
    #[error("SOP Instance UID is not a valid UID: {0}")]
    InvalidUid(mado_core::UidError),
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
}

impl SpoolError {
    /// The C-STORE-RSP status for this error (PS3.4 B.2.3), in one place.
    pub fn dimse_status(&self) -> u16 {
        match self {
            // Refused: Out of Resources
            Self::Io(_) => 0xA700,
            // Error: Data Set does not match SOP Class
            Self::MissingAttribute(_) | Self::Mismatch(_) => 0xA900,
            // Error: Cannot understand
            Self::Unreadable(_) | Self::UnsupportedTransferSyntax(_) | Self::InvalidUid(_) => {
                0xC000
            }
        }
    }
}

/// What the command said the data set is.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
    /// Calling AE title, recorded as Source Application Entity Title.
    pub calling_ae: &'a str,
}

/// What [`Spool::stats`] found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SpoolStats {
    /// Being written right now (or left by a crash until the next start).
    pub incoming: u64,
    pub pending: u64,
    pub pending_bytes: u64,
    pub failed: u64,
    pub failed_bytes: u64,
    pub quarantined: u64,
    pub quarantined_bytes: u64,
    /// Age of the oldest acknowledged instance not yet uploaded.
    pub oldest_pending_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Create the spool directories and remove leftovers of interrupted
    /// writes (never acknowledged, so the sender will retry them).
    pub fn open(root: &Path) -> io::Result<Self> {
        let s = Self {
            root: root.to_path_buf(),
        };
        for d in [s.incoming(), s.pending(), s.failed(), s.quarantine()] {
            fs::create_dir_all(d)?;
        }
        for e in fs::read_dir(s.incoming())? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(s)
    }

    /// A spool at `root` without creating or cleaning anything (read-only
    /// inspection, e.g. `mado-gateway status` next to a running gateway).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Counts and sizes per spool directory, and the age of the oldest
    /// pending instance.
    pub fn stats(&self) -> io::Result<SpoolStats> {
        let mut st = SpoolStats::default();
        let now = std::time::SystemTime::now();
        for (dir, count, bytes) in [
            (self.pending(), &mut st.pending, &mut st.pending_bytes),
            (self.failed(), &mut st.failed, &mut st.failed_bytes),
            (
                self.quarantine(),
                &mut st.quarantined,
                &mut st.quarantined_bytes,
            ),
        ] {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(id) = name
                    .to_string_lossy()
                    .strip_suffix(".dcm")
                    .map(str::to_string)
                else {
                    continue;
                };
                if !is_spool_id(&id) {
                    continue;
                }
                let Ok(md) = e.metadata() else { continue };
                *count += 1;
                *bytes += md.len();
                if dir == self.pending() {
                    if let Some(age) = md.modified().ok().and_then(|m| now.duration_since(m).ok()) {
                        st.oldest_pending_secs = st.oldest_pending_secs.max(Some(age.as_secs()));
                    }
                }
            }
        }
        st.incoming = fs::read_dir(self.incoming())
            .map(|rd| rd.flatten().count() as u64)
            .unwrap_or(0);
        Ok(st)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    pub fn pending(&self) -> PathBuf {
        self.root.join("pending")
    }
    pub fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    pub fn pending_path(&self, id: &str) -> PathBuf {
        self.pending().join(format!("{id}.dcm"))
    }

    /// Validate `dataset` (encoded in `expected.transfer_syntax_uid`) and
    /// store it durably in `pending/`. Returns the spool id. Blocking: call
    /// from `spawn_blocking`.
    pub fn store(&self, dataset: &[u8], expected: &Expected<'_>) -> Result<String, SpoolError> {
        let ts_uid = expected.transfer_syntax_uid.trim_end_matches(['\0', ' ']);
        validate(dataset, ts_uid, expected)?;
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(expected.sop_class_uid.trim_end_matches(['\0', ' ']))
            .media_storage_sop_instance_uid(expected.sop_instance_uid.trim_end_matches(['\0', ' ']))
            .transfer_syntax(ts_uid)
            .source_application_entity_title(expected.calling_ae.trim())
            .build()
            .map_err(|e| SpoolError::Unreadable(format!("file meta: {e}")))?;
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(&[0u8; 128]);
        head.extend_from_slice(b"DICM");
        meta.write(&mut head)
            .map_err(|e| SpoolError::Unreadable(format!("file meta: {e}")))?;

        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.incoming().join(format!("{id}.tmp"));
        let dst = self.pending_path(&id);
        let res = write_durable(&tmp, &dst, &[&head, dataset]);
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        Ok(id)
    }

    /// Health probe: can the spool take an instance right now? Creates and
    /// removes a small file in `incoming/` (fails when the directory is
    /// not writable or the disk is full).
    pub fn probe(&self) -> io::Result<()> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let p = self.incoming().join(format!("{id}.probe.tmp"));
        let r = File::options()
            .write(true)
            .create_new(true)
            .open(&p)
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|()| f.sync_data()));
        let _ = fs::remove_file(&p);
        r
    }

    /// Spool ids in `pending/`, oldest first (by modification time).
    pub fn list_pending(&self) -> io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in fs::read_dir(self.pending())? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".dcm") {
                if is_spool_id(id) {
                    let t = e.metadata().and_then(|m| m.modified()).ok();
                    v.push((t, id.to_string()));
                }
            }
        }
        v.sort();
        Ok(v.into_iter().map(|(_, id)| id).collect())
    }

    /// Delete an uploaded instance.
    pub fn remove_pending(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.pending_path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        sync_dir(&self.pending())
    }

    /// Move a pending instance to `failed/` with a reason file.
    pub fn move_to_failed(&self, id: &str, reason: &str) -> io::Result<()> {
        self.move_with_reason(id, &self.failed(), reason)
    }

    /// Move a pending instance to `quarantine/` with a reason file.
    pub fn move_to_quarantine(&self, id: &str, reason: &str) -> io::Result<()> {
        self.move_with_reason(id, &self.quarantine(), reason)
    }

    fn move_with_reason(&self, id: &str, dir: &Path, reason: &str) -> io::Result<()> {
        let reason_tmp = self.incoming().join(format!("{id}.reason.tmp"));
        write_durable(
            &reason_tmp,
            &dir.join(format!("{id}.reason")),
            &[reason.as_bytes(), b"\n"],
        )?;
        fs::rename(self.pending_path(id), dir.join(format!("{id}.dcm")))?;
        sync_dir(dir)?;
        sync_dir(&self.pending())
    }
}

fn is_spool_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse the data set and compare it with the command.
fn validate(dataset: &[u8], ts_uid: &str, expected: &Expected<'_>) -> Result<(), SpoolError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .filter(|ts| !ts.is_unsupported())
        .ok_or_else(|| SpoolError::UnsupportedTransferSyntax(ts_uid.to_string()))?;
    let obj = InMemDicomObject::read_dataset_with_ts(dataset, ts)
        .map_err(|e| SpoolError::Unreadable(e.to_string()))?;
    let text = |tag, name: &'static str| -> Result<String, SpoolError> {
        let e = obj.get(tag).ok_or(SpoolError::MissingAttribute(name))?;
        let v = e.to_str().map_err(|_| SpoolError::MissingAttribute(name))?;
        Ok(v.trim_end_matches(['\0', ' ']).to_string())
    };
    let class = text(tags::SOP_CLASS_UID, "SOP Class UID")?;
    if class != expected.sop_class_uid.trim_end_matches(['\0', ' ']) {
        return Err(SpoolError::Mismatch("SOP Class UID"));
    }
    let inst = text(tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
    if inst != expected.sop_instance_uid.trim_end_matches(['\0', ' ']) {
        return Err(SpoolError::Mismatch("SOP Instance UID"));
    }
    mado_core::Uid::parse(&inst).map_err(SpoolError::InvalidUid)?;
    // Type 1 attributes the upload needs: refuse now rather than acknowledge
    // and quarantine later.
    if text(tags::STUDY_INSTANCE_UID, "Study Instance UID")?.is_empty() {
        return Err(SpoolError::MissingAttribute("Study Instance UID"));
    }
    if text(tags::SERIES_INSTANCE_UID, "Series Instance UID")?.is_empty() {
        return Err(SpoolError::MissingAttribute("Series Instance UID"));
    }
    Ok(())
}

/// Write `parts` to `tmp`, fsync, rename to `dst`, fsync the directory.
fn write_durable(tmp: &Path, dst: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut f = File::options().write(true).create_new(true).open(tmp)?;
    for p in parts {
        f.write_all(p)?;
    }
    // fdatasync: contents and size; the rename is made durable below.
    f.sync_data()?;
    drop(f);
    fs::rename(tmp, dst)?;
    match dst.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;

    fn dataset(sop: &str) -> Vec<u8> {
        let obj = crate::testutil::sample_dataset(sop);
        let mut out = Vec::new();
        obj.write_dataset_with_ts(
            &mut out,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        out
    }

    fn expected<'a>(sop: &'a str) -> Expected<'a> {
        Expected {
            sop_class_uid: uids::CT_IMAGE_STORAGE,
            sop_instance_uid: sop,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            calling_ae: "STORESCU",
        }
    }

    #[test]
    fn stores_part10_with_raw_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ds = dataset("1.2.3.4");
        let id = spool.store(&ds, &expected("1.2.3.4")).unwrap();
        let bytes = fs::read(spool.pending_path(&id)).unwrap();
        assert!(bytes[..128].iter().all(|b| *b == 0));
        assert_eq!(&bytes[128..132], b"DICM");
        assert!(bytes.ends_with(&ds), "data set must be stored as received");
        let obj = dicom_object::open_file(spool.pending_path(&id)).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(spool.list_pending().unwrap(), vec![id]);
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
    }

    #[test]
    fn rejects_corrupt_and_mismatched_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ds = dataset("1.2.3.4");
        // truncated inside the last element (Pixel Data)
        let e = spool
            .store(&ds[..ds.len() - 4], &expected("1.2.3.4"))
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xC000, "{e}");
        let e = spool
            .store(b"\x08\x00\x16\x00UI\xff\xff", &expected("1.2.3.4"))
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xC000, "{e}");
        let e = spool.store(&ds, &expected("1.2.3.5")).unwrap_err();
        assert_eq!(e.dimse_status(), 0xA900, "{e}");
        let mut exp = expected("1.2.3.4");
        exp.sop_class_uid = uids::MR_IMAGE_STORAGE;
        assert_eq!(spool.store(&ds, &exp).unwrap_err().dimse_status(), 0xA900);
        let mut no_study = crate::testutil::sample_dataset("1.2.3.4");
        no_study.remove_element(tags::STUDY_INSTANCE_UID);
        let mut raw = Vec::new();
        no_study
            .write_dataset_with_ts(
                &mut raw,
                &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .unwrap();
        assert_eq!(
            spool
                .store(&raw, &expected("1.2.3.4"))
                .unwrap_err()
                .dimse_status(),
            0xA900
        );
        let bad = dataset("1.2.03.4");
        assert_eq!(
            spool
                .store(&bad, &expected("1.2.03.4"))
                .unwrap_err()
                .dimse_status(),
            0xC000
        );
        assert!(spool.list_pending().unwrap().is_empty());
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
    }

    #[test]
    fn write_error_is_out_of_resources() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::remove_dir_all(spool.incoming()).unwrap();
        let ds = dataset("1.2.3.4");
        let e = spool.store(&ds, &expected("1.2.3.4")).unwrap_err();
        assert_eq!(e.dimse_status(), 0xA700, "{e}");
    }

    #[test]
    fn probe_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.probe().unwrap();
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
        let ds = dataset("1.2.3.4");
        let a = spool.store(&ds, &expected("1.2.3.4")).unwrap();
        spool.store(&ds, &expected("1.2.3.4")).unwrap();
        spool.move_to_quarantine(&a, "bad").unwrap();
        let st = Spool::at(dir.path()).stats().unwrap();
        assert_eq!((st.pending, st.quarantined, st.failed), (1, 1, 0));
        assert!(st.pending_bytes > ds.len() as u64);
        assert!(st.oldest_pending_secs.is_some());
        fs::remove_dir_all(spool.incoming()).unwrap();
        assert!(spool.probe().is_err());
    }

    #[test]
    fn quarantine_and_failed_moves() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ds = dataset("1.2.3.4");
        let a = spool.store(&ds, &expected("1.2.3.4")).unwrap();
        let b = spool.store(&ds, &expected("1.2.3.4")).unwrap();
        spool.move_to_quarantine(&a, "bad").unwrap();
        spool.move_to_failed(&b, "400").unwrap();
        assert!(spool.quarantine().join(format!("{a}.dcm")).is_file());
        assert_eq!(
            fs::read_to_string(spool.failed().join(format!("{b}.reason"))).unwrap(),
            "400\n"
        );
        assert!(spool.list_pending().unwrap().is_empty());
        // stale temp files are cleaned on open
        fs::write(spool.incoming().join("x.tmp"), b"x").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
    }
}
