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
//! write → fdatasync → rename → fsync(dir), and only then is C-STORE success
//! sent. `<id>` is a UUID (simple form), never derived from the data.
//!
//! The SCP streams each data set into an [`Incoming`] file as its P-DATA
//! fragments arrive ([`Spool::begin`], [`Incoming::write`]), validates the
//! head of the data set and makes the data durable ([`Incoming::finish`],
//! fdatasync, on the association's blocking task so several run in
//! parallel), then hands it to the group committer ([`Spool::commit`]): one
//! thread that renames every instance queued meanwhile (from all
//! associations) into `pending/` and makes the whole batch durable with a
//! single directory fsync before any of them is answered. A crash at any
//! point leaves either a complete, durable instance in `pending/` or a
//! `.tmp` in `incoming/` that start-up removes (never acknowledged).
//!
//! Spool files are recycled rather than created and deleted
//! ([`Spool::begin`] takes an empty file from `free/`, and an uploaded
//! instance's file is truncated and returned there by
//! [`Spool::remove_pending`]). Allocating an inode is the dearest part of
//! receiving an instance on ext4 without a journal: it scans past every
//! inode freed in the last half minute, which at hundreds of deletions a
//! second costs a millisecond per file. `free/` is filled with
//! [`FREE_TARGET`] empty files when the spool is opened, and topped up in
//! the background while no instance arrives.
//!
//! ```text
//! <spool.dir>/free/<name>             empty, ready to become incoming/<id>.tmp
//! ```

use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

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
    /// The group committer, started by the first [`Spool::commit`].
    committer: Arc<Mutex<Option<mpsc::Sender<CommitJob>>>>,
    free: Arc<FreeFiles>,
}

/// How many empty files `free/` holds at most (and is topped up to).
pub const FREE_TARGET: usize = 1024;

/// The names in `free/`: empty files, each taken by one [`Spool::begin`].
#[derive(Debug, Default)]
struct FreeFiles {
    names: Mutex<Vec<String>>,
    /// When [`Spool::begin`] last ran (ms since the spool was opened):
    /// the refill waits for a quiet second.
    last_begin_ms: std::sync::atomic::AtomicU64,
    opened: std::sync::OnceLock<std::time::Instant>,
}

impl FreeFiles {
    fn now_ms(&self) -> u64 {
        self.opened
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
    }
    fn pop(&self) -> Option<String> {
        self.names.lock().ok()?.pop()
    }
    /// Keep `name` unless the pool is full; `false`: the caller removes it.
    fn push(&self, name: String) -> bool {
        match self.names.lock() {
            Ok(mut v) if v.len() < FREE_TARGET => {
                v.push(name);
                true
            }
            _ => false,
        }
    }
    fn len(&self) -> usize {
        self.names.lock().map(|v| v.len()).unwrap_or(FREE_TARGET)
    }
}

impl Spool {
    /// Create the spool directories and remove leftovers of interrupted
    /// writes (never acknowledged, so the sender will retry them).
    pub fn open(root: &Path) -> io::Result<Self> {
        let s = Self::at(root);
        for d in [
            s.incoming(),
            s.pending(),
            s.failed(),
            s.quarantine(),
            s.free_dir(),
        ] {
            fs::create_dir_all(d)?;
        }
        for e in fs::read_dir(s.incoming())? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut names = Vec::new();
        for e in fs::read_dir(s.free_dir())? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            // a crash between the rename into free/ and the truncation
            let emptied = match e.metadata() {
                Ok(m) if m.len() == 0 => Ok(()),
                _ => open_emptied(&e.path()).map(drop),
            };
            if emptied.is_err() || names.len() >= FREE_TARGET {
                let _ = fs::remove_file(e.path());
            } else {
                names.push(name);
            }
        }
        *s.free.names.lock().map_err(|_| io::Error::other("lock"))? = names;
        // made now rather than while the first instances arrive (a few
        // hundred milliseconds at worst); best effort (e.g. a full disk)
        let dir = s.free_dir();
        let target = free_target(&dir);
        while s.free.len() < target {
            if make_free_file(&dir, &s.free).is_err() {
                break;
            }
        }
        Ok(s)
    }

    /// Top `free/` up to [`FREE_TARGET`] empty files on a background
    /// thread, whenever no instance has begun for a second (the files are
    /// made ahead of time, off the path of an instance being received).
    /// The thread ends with the last handle on this spool.
    pub fn start_refill(&self) -> io::Result<()> {
        let free = Arc::downgrade(&self.free);
        let dir = self.free_dir();
        std::thread::Builder::new()
            .name("spool-refill".into())
            .spawn(move || {
                while let Some(free) = free.upgrade() {
                    // one file at a time, each only after a quiet second
                    let last = free
                        .last_begin_ms
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let quiet = free.now_ms().saturating_sub(last) >= 1000;
                    if !(quiet
                        && free.len() < free_target(&dir)
                        && make_free_file(&dir, &free).is_ok())
                    {
                        drop(free);
                        std::thread::sleep(std::time::Duration::from_millis(250));
                    }
                }
            })
            .map(drop)
    }

    /// An empty file from `free/` renamed to `tmp`, if there is one.
    fn take_free(&self, tmp: &Path) -> Option<File> {
        while let Some(name) = self.free.pop() {
            if fs::rename(self.free_dir().join(&name), tmp).is_ok() {
                match open_emptied(tmp) {
                    Ok(f) => return Some(f),
                    Err(_) => {
                        let _ = fs::remove_file(tmp);
                    }
                }
            }
        }
        None
    }

    /// A spool at `root` without creating or cleaning anything (read-only
    /// inspection, e.g. `mado-gateway status` next to a running gateway).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            committer: Arc::default(),
            free: Arc::default(),
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
    fn free_dir(&self) -> PathBuf {
        self.root.join("free")
    }
    pub fn pending_path(&self, id: &str) -> PathBuf {
        self.pending().join(format!("{id}.dcm"))
    }

    /// Validate `dataset` (encoded in `expected.transfer_syntax_uid`) and
    /// store it durably in `pending/`. Returns the spool id. Blocking: call
    /// from `spawn_blocking`.
    pub fn store(&self, dataset: &[u8], expected: &Expected<'_>) -> Result<String, SpoolError> {
        let ts_uid = expected.transfer_syntax_uid.trim_end_matches(['\0', ' ']);
        check_structure(io::Cursor::new(dataset), 0, dataset.len() as u64, ts_uid)?;
        validate(dataset, ts_uid, expected)?;
        let head = part10_header(expected)?;

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

    /// Start receiving an instance: create `incoming/<id>.tmp` and write
    /// the Part 10 header built from the command (`expected`); the data set
    /// is then streamed in with [`Incoming::write`]. Blocking.
    pub fn begin(&self, expected: &Expected<'_>) -> Result<Incoming, SpoolError> {
        let header = part10_header(expected)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.incoming().join(format!("{id}.tmp"));
        self.free
            .last_begin_ms
            .store(self.free.now_ms(), std::sync::atomic::Ordering::Relaxed);
        let file = match self.take_free(&tmp) {
            Some(f) => f,
            None => File::options().write(true).create_new(true).open(&tmp)?,
        };
        // from here on, dropping `inc` removes the temp file
        let mut inc = Incoming {
            id,
            tmp,
            file,
            header_len: header.len() as u64,
            written: 0,
            head: Vec::new(),
            committed: false,
        };
        inc.file.write_all(&header)?;
        Ok(inc)
    }

    /// Make a finished [`Incoming`] (data already durable) part of
    /// `pending/` and durable there: rename + directory fsync, grouped with
    /// every other instance queued meanwhile (group commit). Returns the
    /// spool id once the rename is durable; only then may the C-STORE
    /// success status be sent. On error the temp file is removed.
    pub async fn commit(&self, inc: Incoming) -> io::Result<String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.committer()?
            .send(CommitJob { inc, done })
            .map_err(|_| io::Error::other("spool committer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("spool committer stopped"))?
    }

    fn committer(&self) -> io::Result<mpsc::Sender<CommitJob>> {
        let mut guard = self
            .committer
            .lock()
            .map_err(|_| io::Error::other("spool committer lock poisoned"))?;
        if let Some(tx) = guard.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel();
        let pending = self.pending();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || commit_loop(&rx, &pending))?;
        *guard = Some(tx.clone());
        Ok(tx)
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

    /// Delete an uploaded instance: its file is moved to `free/` and
    /// truncated (emptied, for the next instance), or removed when `free/`
    /// is full.
    pub fn remove_pending(&self, id: &str) -> io::Result<()> {
        let free = self.free_dir().join(id);
        let recycled = match fs::rename(self.pending_path(id), &free) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {
                fs::remove_file(self.pending_path(id))?;
                false
            }
        };
        sync_dir(&self.pending())?;
        if recycled {
            let emptied = open_emptied(&free);
            if emptied.is_err() || !self.free.push(id.to_string()) {
                fs::remove_file(&free)?;
            }
        }
        Ok(())
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

/// How many files `free/` should hold: [`FREE_TARGET`], or fewer on a file
/// system with few inodes left (at most a quarter of the free ones).
fn free_target(dir: &Path) -> usize {
    match rustix::fs::statvfs(dir) {
        Ok(st) if st.f_files > 0 => FREE_TARGET.min(usize::try_from(st.f_favail / 4).unwrap_or(0)),
        _ => FREE_TARGET,
    }
}

/// `path` opened for writing and truncated: a recycled spool file keeps
/// nothing of the instance it held.
fn open_emptied(path: &Path) -> io::Result<File> {
    File::options().write(true).truncate(true).open(path)
}

fn make_free_file(dir: &Path, free: &FreeFiles) -> io::Result<()> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join(&name);
    File::options().write(true).create_new(true).open(&path)?;
    if !free.push(name) {
        fs::remove_file(path)?;
    }
    Ok(())
}

/// Preamble, `DICM` and the file meta group for an instance as announced
/// by its command (the data set follows as received).
fn part10_header(expected: &Expected<'_>) -> Result<Vec<u8>, SpoolError> {
    let ts_uid = expected.transfer_syntax_uid.trim_end_matches(['\0', ' ']);
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
    Ok(head)
}

/// How much of the data set [`Incoming`] keeps in memory for validation.
const HEAD_CAP: usize = 64 * 1024;
/// How far into the data set the identifying attributes may be.
const HEAD_MAX: u64 = 16 * 1024 * 1024;

/// An instance being received into `incoming/<id>.tmp` (never
/// acknowledged). Dropping it before [`Spool::commit`] succeeded removes
/// the temp file.
#[derive(Debug)]
pub struct Incoming {
    id: String,
    tmp: PathBuf,
    file: File,
    header_len: u64,
    /// Data set bytes written so far.
    written: u64,
    /// The first [`HEAD_CAP`] bytes of the data set.
    head: Vec<u8>,
    committed: bool,
}

impl Incoming {
    /// Append data set bytes (as received). Blocking.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.head.len() < HEAD_CAP {
            let n = (HEAD_CAP - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        self.file.write_all(data)?;
        let offset = self.header_len + self.written;
        self.written += data.len() as u64;
        start_writeback(&self.file, offset, data.len() as u64);
        Ok(())
    }

    /// Data set bytes received so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// The data set is complete: check its head against the command (SOP
    /// Class / Instance UID, a valid UID, Study and Series Instance UID
    /// present; the bulk of the data set is not parsed here) and make the
    /// data durable (fdatasync). Blocking.
    pub fn finish(&mut self, expected: &Expected<'_>) -> Result<(), SpoolError> {
        let ts_uid = expected.transfer_syntax_uid.trim_end_matches(['\0', ' ']);
        // the structure first: nothing below allocates from a declared
        // length larger than what was received, or parses deeper than the
        // guard's cap
        let file = HeadThenFile {
            head: &self.head,
            start: self.header_len,
            pos: self.header_len,
            file: None,
            path: &self.tmp,
        };
        check_structure(file, self.header_len, self.written, ts_uid)?;
        let complete = self.written <= self.head.len() as u64;
        if !validate_head(&self.head, complete, ts_uid, expected)? {
            // identifying attributes beyond the first HEAD_CAP bytes (e.g.
            // a large private sequence first): read further from the file
            let limit = self.written.min(HEAD_MAX);
            let mut f = File::open(&self.tmp)?;
            f.seek(io::SeekFrom::Start(self.header_len))?;
            let mut more = Vec::with_capacity(limit as usize);
            f.take(limit).read_to_end(&mut more)?;
            if !validate_head(&more, self.written <= HEAD_MAX, ts_uid, expected)? {
                return Err(SpoolError::Unreadable(format!(
                    "SOP Class/Instance, Study and Series Instance UID not within the first {HEAD_MAX} bytes"
                )));
            }
        }
        // fdatasync: contents and size; the rename is made durable by the
        // committer's directory fsync
        self.file.sync_data()?;
        Ok(())
    }
}

/// Start writing `len` bytes at `offset` of `file` to disk now, without
/// waiting: the data set's chunks go to disk while the rest is still on the
/// wire, so the fdatasync before the C-STORE response only waits for the
/// tail (and the journal), not for the whole instance. On Linux,
/// `POSIX_FADV_DONTNEED` on dirty pages starts their writeback and leaves
/// them cached (only clean pages are dropped). A hint: errors are ignored,
/// the fdatasync in [`Incoming::finish`] is what makes the data durable.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::num::NonZeroU64;
    let _ = rustix::fs::fadvise(
        file,
        offset,
        NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

/// Walk every element header of the data set in `src` (from byte `start`,
/// `len` bytes) with the structure guard ([`crate::guard`]): values are
/// sought over, never read, so a data set cut short, with an element or
/// item running past its end, an undefined-length sequence never closed,
/// sequences nested deeper than [`crate::guard::MAX_DEPTH`] or a deflated
/// data set inflating beyond [`crate::guard::MAX_INFLATED`] is refused
/// before it is acknowledged (and before anything parses it whole).
fn check_structure<R: Read + Seek>(
    src: R,
    start: u64,
    len: u64,
    ts_uid: &str,
) -> Result<(), SpoolError> {
    use crate::guard::GuardError;
    if crate::scp::readable_transfer_syntax(ts_uid).is_none() {
        return Err(SpoolError::UnsupportedTransferSyntax(ts_uid.to_string()));
    }
    crate::guard::check(src, start, len, ts_uid).map_err(|e| match e {
        GuardError::Io(e) => SpoolError::Io(e),
        GuardError::UnsupportedTransferSyntax(t) => SpoolError::UnsupportedTransferSyntax(t),
        e => SpoolError::Unreadable(e.to_string()),
    })
}

/// The spool file being finished, read through the copy of its first
/// bytes kept in memory ([`Incoming`]'s `head`, the data set from `start`):
/// the file is only opened for element headers beyond it (most data sets
/// have all of theirs there, Pixel Data last). Starts at `start`.
struct HeadThenFile<'a> {
    head: &'a [u8],
    start: u64,
    pos: u64,
    file: Option<File>,
    path: &'a Path,
}

impl Read for HeadThenFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let off = self.pos.saturating_sub(self.start);
        if let Some(rest) = usize::try_from(off)
            .ok()
            .and_then(|o| self.head.get(o..))
            .filter(|r| !r.is_empty())
        {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::open(self.path)?),
        };
        f.seek(io::SeekFrom::Start(self.pos))?;
        let n = f.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for HeadThenFile<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "seek from the end",
                ))
            }
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

struct CommitJob {
    inc: Incoming,
    done: tokio::sync::oneshot::Sender<io::Result<String>>,
}

/// The group committer: renames every queued instance into `pending/`,
/// fsyncs the directory once for the whole batch, then answers them all.
/// Batches form by themselves: whatever arrives while a directory fsync
/// is running is committed by the next one.
fn commit_loop(rx: &mpsc::Receiver<CommitJob>, pending: &Path) {
    let mut dir: Option<File> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut renamed = Vec::with_capacity(batch.len());
        for mut job in batch {
            let dst = pending.join(format!("{}.dcm", job.inc.id));
            match fs::rename(&job.inc.tmp, &dst) {
                Ok(()) => {
                    job.inc.committed = true;
                    renamed.push(job);
                }
                // the sender is told; dropping the job removes the temp file
                Err(e) => {
                    let _ = job.done.send(Err(e));
                }
            }
        }
        if renamed.is_empty() {
            continue;
        }
        let synced = match dir.as_ref() {
            Some(d) => d.sync_all(),
            None => File::open(pending).and_then(|d| {
                let r = d.sync_all();
                dir = Some(d);
                r
            }),
        };
        tracing::trace!(batch = renamed.len(), "spool group commit");
        match synced {
            Ok(()) => {
                for job in renamed {
                    let id = job.inc.id.clone();
                    let _ = job.done.send(Ok(id));
                }
            }
            Err(e) => {
                // not acknowledged; the files may still be uploaded, and a
                // re-send of the same instance is idempotent
                dir = None;
                for job in renamed {
                    let _ = job.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

/// Check the head of a data set (its first bytes, `complete` when that is
/// the whole data set) against the command without parsing the rest:
/// `Ok(false)` when the head ends before the identifying attributes.
fn validate_head(
    head: &[u8],
    complete: bool,
    ts_uid: &str,
    expected: &Expected<'_>,
) -> Result<bool, SpoolError> {
    use dicom_encoding::transfer_syntax::Codec;
    use dicom_parser::dataset::{DataSetReader, DataToken};
    let ts = crate::scp::readable_transfer_syntax(ts_uid)
        .ok_or_else(|| SpoolError::UnsupportedTransferSyntax(ts_uid.to_string()))?;
    if matches!(ts.codec(), Codec::Dataset(_)) {
        // a compressed data set (deflate) is only read as a whole
        if !complete {
            return Ok(false);
        }
        validate(head, ts_uid, expected)?;
        return Ok(true);
    }
    let wanted = [
        tags::SOP_CLASS_UID,
        tags::SOP_INSTANCE_UID,
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
    ];
    let mut found: [Option<String>; 4] = Default::default();
    let reader = DataSetReader::new_with_ts(io::Cursor::new(head), ts)
        .map_err(|e| SpoolError::Unreadable(e.to_string()))?;
    let mut depth = 0usize;
    let mut current = None;
    let mut decided = false;
    for token in reader {
        let token = match token {
            Ok(t) => t,
            Err(e) if complete => return Err(SpoolError::Unreadable(e.to_string())),
            Err(_) => break, // the head ends inside an element
        };
        match token {
            DataToken::ElementHeader(h) if depth == 0 => {
                if h.tag > tags::SERIES_INSTANCE_UID {
                    decided = true;
                    break;
                }
                current = wanted.iter().position(|t| *t == h.tag);
            }
            DataToken::PrimitiveValue(v) if depth == 0 => {
                if let Some(i) = current.take() {
                    found[i] = Some(v.to_str().trim_end_matches(['\0', ' ']).to_string());
                }
            }
            DataToken::SequenceStart { tag, .. } => {
                if depth == 0 && tag > tags::SERIES_INSTANCE_UID {
                    decided = true;
                    break;
                }
                depth += 1;
            }
            DataToken::PixelSequenceStart => {
                if depth == 0 {
                    decided = true;
                    break;
                }
                depth += 1;
            }
            DataToken::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if !(decided || complete || found.iter().all(Option::is_some)) {
        return Ok(false);
    }
    let [class, inst, study, series] = found;
    let class = class.ok_or(SpoolError::MissingAttribute("SOP Class UID"))?;
    if class != expected.sop_class_uid.trim_end_matches(['\0', ' ']) {
        return Err(SpoolError::Mismatch("SOP Class UID"));
    }
    let inst = inst.ok_or(SpoolError::MissingAttribute("SOP Instance UID"))?;
    if inst != expected.sop_instance_uid.trim_end_matches(['\0', ' ']) {
        return Err(SpoolError::Mismatch("SOP Instance UID"));
    }
    mado_core::Uid::parse(&inst).map_err(SpoolError::InvalidUid)?;
    if study.is_none_or(|s| s.is_empty()) {
        return Err(SpoolError::MissingAttribute("Study Instance UID"));
    }
    if series.is_none_or(|s| s.is_empty()) {
        return Err(SpoolError::MissingAttribute("Series Instance UID"));
    }
    Ok(true)
}

fn is_spool_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse the data set and compare it with the command.
fn validate(dataset: &[u8], ts_uid: &str, expected: &Expected<'_>) -> Result<(), SpoolError> {
    let ts = crate::scp::readable_transfer_syntax(ts_uid)
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
pub(crate) fn write_durable(tmp: &Path, dst: &Path, parts: &[&[u8]]) -> io::Result<()> {
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

/// Fuzzing entry (fuzz/): every check the SCP makes on a received data set
/// before it is acknowledged (head, element walk, whole parse), on bytes in
/// memory. Not part of the API.
#[doc(hidden)]
pub fn fuzz_check_dataset(dataset: &[u8], expected: &Expected<'_>) {
    let ts = expected.transfer_syntax_uid;
    let head = &dataset[..dataset.len().min(HEAD_CAP)];
    let _ = validate_head(head, dataset.len() <= HEAD_CAP, ts, expected);
    let _ = check_structure(io::Cursor::new(dataset), 0, dataset.len() as u64, ts);
    let _ = validate(dataset, ts, expected);
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

    /// Stream `ds` in `chunk`-sized writes, finish and commit.
    async fn stream(
        spool: &Spool,
        ds: &[u8],
        chunk: usize,
        exp: &Expected<'_>,
    ) -> Result<String, SpoolError> {
        let mut inc = spool.begin(exp)?;
        for c in ds.chunks(chunk) {
            inc.write(c)?;
        }
        inc.finish(exp)?;
        Ok(spool.commit(inc).await?)
    }

    fn free_files(spool: &Spool) -> Vec<PathBuf> {
        fs::read_dir(spool.free_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[tokio::test]
    async fn spool_files_are_recycled_empty() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // filled when opened
        let n = free_files(&spool).len();
        assert_eq!(n, free_target(&spool.free_dir()));
        assert!(n > 0);
        let ds = dataset("1.2.3.4");
        let id = stream(&spool, &ds, 1000, &expected("1.2.3.4"))
            .await
            .unwrap();
        // the instance took a free file
        assert_eq!(free_files(&spool).len(), n - 1);
        assert!(fs::metadata(spool.pending_path(&id)).unwrap().len() > ds.len() as u64);
        // uploaded: back in free/, emptied, and taken again
        spool.remove_pending(&id).unwrap();
        assert!(!spool.pending_path(&id).exists());
        let free = free_files(&spool);
        assert_eq!(free.len(), n);
        assert!(free.iter().all(|p| fs::metadata(p).unwrap().len() == 0));
        let again = stream(&spool, &ds, 1000, &expected("1.2.3.4"))
            .await
            .unwrap();
        assert_eq!(
            fs::read(spool.pending_path(&again)).unwrap().len() as u64,
            fs::metadata(spool.pending_path(&again)).unwrap().len()
        );
        // removing what is not there is fine
        spool.remove_pending(&id).unwrap();
    }

    #[test]
    fn a_free_file_left_full_by_a_crash_is_emptied_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("free")).unwrap();
        // a crash between the rename into free/ and the truncation
        fs::write(dir.path().join("free/0123"), b"patient data").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(fs::metadata(dir.path().join("free/0123")).unwrap().len(), 0);
        assert!(free_files(&spool).len() <= FREE_TARGET);
    }

    #[tokio::test]
    async fn streamed_instance_is_identical_to_stored_and_group_committed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ds = dataset("1.2.3.4");
        let a = spool.store(&ds, &expected("1.2.3.4")).unwrap();
        let b = stream(&spool, &ds, 7, &expected("1.2.3.4")).await.unwrap();
        assert_eq!(
            fs::read(spool.pending_path(&a)).unwrap(),
            fs::read(spool.pending_path(&b)).unwrap()
        );
        // many at once: one committer, every one durable and answered
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (spool, ds) = (spool.clone(), ds.clone());
            tasks.push(tokio::spawn(async move {
                stream(&spool, &ds, 4096, &expected("1.2.3.4")).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(spool.list_pending().unwrap().len(), 18);
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn streamed_head_checks_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ds = dataset("1.2.3.4");
        let e = stream(&spool, &ds, 100, &expected("1.2.3.5"))
            .await
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xA900, "{e}");
        let mut exp = expected("1.2.3.4");
        exp.sop_class_uid = uids::MR_IMAGE_STORAGE;
        let e = stream(&spool, &ds, 100, &exp).await.unwrap_err();
        assert_eq!(e.dimse_status(), 0xA900, "{e}");
        let e = stream(&spool, &dataset("1.2.03.4"), 100, &expected("1.2.03.4"))
            .await
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xC000, "{e}");
        let e = stream(
            &spool,
            b"\x08\x00\x16\x00UI\xff\xff",
            100,
            &expected("1.2.3.4"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.dimse_status(), 0xC000, "{e}");
        let mut no_series = crate::testutil::sample_dataset("1.2.3.4");
        no_series.remove_element(tags::SERIES_INSTANCE_UID);
        let mut raw = Vec::new();
        no_series
            .write_dataset_with_ts(
                &mut raw,
                &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .unwrap();
        let e = stream(&spool, &raw, 100, &expected("1.2.3.4"))
            .await
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xA900, "{e}");
        // bulk data cut short (inside Pixel Data, or a whole element
        // missing its value) is refused before the acknowledgement
        for cut in [1, 4, 10] {
            let e = stream(&spool, &ds[..ds.len() - cut], 100, &expected("1.2.3.4"))
                .await
                .unwrap_err();
            assert_eq!(e.dimse_status(), 0xC000, "cut {cut}: {e}");
        }
        // a dropped (aborted) instance leaves nothing either
        let mut inc = spool.begin(&expected("1.2.3.4")).unwrap();
        inc.write(&ds[..10]).unwrap();
        drop(inc);
        assert!(spool.list_pending().unwrap().is_empty());
        assert_eq!(fs::read_dir(spool.incoming()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn identifying_attributes_after_a_large_element_are_found() {
        use dicom_core::value::PrimitiveValue;
        use dicom_core::{DataElement, Tag, VR};
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut obj = crate::testutil::sample_dataset("1.2.3.4");
        // 200 KB private element in group 0009, before (0020,000D)
        obj.put(DataElement::new(
            Tag(0x0009, 0x1002),
            VR::OB,
            PrimitiveValue::from(vec![0u8; 200_000]),
        ));
        let mut raw = Vec::new();
        obj.write_dataset_with_ts(
            &mut raw,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let id = stream(&spool, &raw, 65_536, &expected("1.2.3.4"))
            .await
            .unwrap();
        assert!(fs::read(spool.pending_path(&id)).unwrap().ends_with(&raw));
        let e = stream(&spool, &raw, 65_536, &expected("1.2.3.9"))
            .await
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xA900, "{e}");
        // Pixel Data of 300 KB (beyond the head) cut short, and an
        // encapsulated one whose sequence is never closed: refused by the
        // structure walk before the acknowledgement.
        let mut big = crate::testutil::sample_dataset("1.2.3.4");
        big.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![7u8; 300_000]),
        ));
        let mut raw = Vec::new();
        big.write_dataset_with_ts(
            &mut raw,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        stream(&spool, &raw, 65_536, &expected("1.2.3.4"))
            .await
            .unwrap();
        for cut in [1, 4, 1000, 200_000] {
            let e = stream(
                &spool,
                &raw[..raw.len() - cut],
                65_536,
                &expected("1.2.3.4"),
            )
            .await
            .unwrap_err();
            assert_eq!(e.dimse_status(), 0xC000, "cut {cut}: {e}");
        }
        let mut enc = raw[..raw.len() - 300_000 - 12].to_vec();
        // (7FE0,0010) OB undefined length, offset table item, one 8-byte
        // fragment, no sequence delimiter
        enc.extend_from_slice(b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff");
        enc.extend_from_slice(b"\xfe\xff\x00\xe0\0\0\0\0");
        enc.extend_from_slice(b"\xfe\xff\x00\xe0\x08\0\0\0abcdefgh");
        let e = stream(&spool, &enc, 65_536, &expected("1.2.3.4"))
            .await
            .unwrap_err();
        assert_eq!(e.dimse_status(), 0xC000, "{e}");
        enc.extend_from_slice(b"\xfe\xff\xdd\xe0\0\0\0\0");
        stream(&spool, &enc, 65_536, &expected("1.2.3.4"))
            .await
            .unwrap();
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
