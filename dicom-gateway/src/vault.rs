//! The on-prem pseudonym vault: originals ↔ pseudonyms, encrypted at rest.
//!
//! File format (`<spool.dir>/vault.jsonl` unless `[vault] path` says otherwise): one JSON
//! object per line, append-only,
//!
//! ```text
//! {"v":1,"k":["<hex HMAC lookup key>", ...],"n":"<hex 96-bit nonce>","c":"<hex AES-256-GCM ciphertext>"}
//! ```
//!
//! * Keys: HKDF-SHA256 over the `[vault] key` secret (or the bytes of `key_file`), salt
//!   `mado-vault-v1`, two outputs: the AES-256-GCM key (`info = "aes-256-gcm"`) and the
//!   HMAC-SHA256 lookup key (`info = "lookup"`).
//! * Lookup keys: HMAC(lookup key, `"study:" + pseudonymous StudyInstanceUID`) and
//!   HMAC(lookup key, `"patient:" + Patient ID pseudonym`): the file never holds a
//!   pseudonym or an original in clear.
//! * The plaintext is the JSON of [`Entry`]; a random nonce per record; the lookup keys are
//!   the additional authenticated data, so a record moved to another index fails to decrypt.
//! * One record per (study pseudonym, patient pseudonym, accession) seen by this process or
//!   already in the file (duplicates are skipped).
//!
//! Nothing of the vault is logged or sent to the server. Re-identification
//! (`mado-gateway vault reidentify`) appends an audit line to `<spool.dir>/vault-audit.log`
//! naming the operator, the reason and the pseudonym looked up, never the originals.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use mado_core::deid::Report;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `[vault]` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Record originals in the vault (off: pseudonyms cannot be reversed).
    pub enabled: bool,
    /// Secret the encryption key is derived from (HKDF-SHA256). Demo default only:
    /// override with `MADO_GATEWAY__VAULT__KEY` or use `key_file`.
    pub key: SecretString,
    /// A file whose bytes are the key material (takes precedence over `key`).
    pub key_file: Option<PathBuf>,
    /// Vault file; default `<spool.dir>/vault.jsonl`.
    pub path: Option<PathBuf>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            enabled: true,
            key: SecretString::from("mado-demo-vault-key-change-me"),
            key_file: None,
            path: None,
        }
    }
}

impl VaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.key_file.is_none() && self.key.expose_secret().len() < 16 {
            return Err(
                "field `vault.key`: expected at least 16 characters (or vault.key_file)".into(),
            );
        }
        Ok(())
    }

    /// The vault file for a spool rooted at `spool_dir`.
    pub fn file(&self, spool_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| spool_dir.join("vault.jsonl"))
    }

    /// Key material: the key file's bytes or the `key` secret.
    pub fn key_material(&self) -> Result<Vec<u8>, VaultError> {
        match &self.key_file {
            Some(p) => {
                let b = std::fs::read(p).map_err(|e| {
                    VaultError::Io(format!("cannot read vault.key_file {}: {e}", p.display()))
                })?;
                if b.len() < 16 {
                    return Err(VaultError::Io(format!(
                        "vault.key_file {}: expected at least 16 bytes",
                        p.display()
                    )));
                }
                Ok(b)
            }
            None => Ok(self.key.expose_secret().as_bytes().to_vec()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault I/O: {0}")]
    Io(String),
    #[error("vault record {0} is corrupt or was encrypted with another key")]
    Decrypt(usize),
    #[error("vault record {0} is not valid JSON")]
    Format(usize),
}

/// Originals and pseudonyms of one study of one patient (PHI: vault only).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub original_patient_id: Option<String>,
    pub original_patient_name: Option<String>,
    pub original_accession_number: Option<String>,
    pub original_study_date: Option<String>,
    pub original_study_instance_uid: Option<String>,
    pub pseudonym_patient_id: Option<String>,
    pub pseudonym_patient_name: Option<String>,
    pub pseudonym_accession_number: Option<String>,
    pub pseudonym_study_date: Option<String>,
    pub pseudonym_study_instance_uid: Option<String>,
    /// RFC 3339 time of the first record.
    pub recorded_at: String,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entry(<redacted>)")
    }
}

impl Entry {
    pub fn from_report(r: &Report) -> Entry {
        Entry {
            original_patient_id: r.original.patient_id.clone(),
            original_patient_name: r.original.patient_name.clone(),
            original_accession_number: r.original.accession_number.clone(),
            original_study_date: r.original.study_date.clone(),
            original_study_instance_uid: r.original.study_instance_uid.clone(),
            pseudonym_patient_id: r.pseudonym.patient_id.clone(),
            pseudonym_patient_name: r.pseudonym.patient_name.clone(),
            pseudonym_accession_number: r.pseudonym.accession_number.clone(),
            pseudonym_study_date: r.pseudonym.study_date.clone(),
            pseudonym_study_instance_uid: r.pseudonym.study_instance_uid.clone(),
            recorded_at: chrono::Utc::now().to_rfc3339(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Line {
    v: u32,
    k: Vec<String>,
    n: String,
    c: String,
}

/// What to look up.
#[derive(Debug, Clone)]
pub enum Lookup {
    Study(String),
    Patient(String),
}

/// The vault. `record` is safe to call from many threads.
pub struct Vault {
    path: PathBuf,
    cipher: Aes256Gcm,
    lookup_key: [u8; 32],
    /// Dedup keys of records already written.
    seen: Mutex<HashSet<String>>,
    file: Mutex<Option<File>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish()
    }
}

impl Vault {
    /// Open (or prepare to create) the vault at `path` with `key_material`. Reads the
    /// existing lookup keys so that duplicates are not appended again.
    pub fn open(path: &Path, key_material: &[u8]) -> Result<Vault, VaultError> {
        let hk = Hkdf::<Sha256>::new(Some(b"mado-vault-v1"), key_material);
        let mut enc = [0u8; 32];
        let mut lookup_key = [0u8; 32];
        hk.expand(b"aes-256-gcm", &mut enc)
            .and_then(|()| hk.expand(b"lookup", &mut lookup_key))
            .map_err(|_| VaultError::Io("key derivation failed".into()))?;
        let cipher =
            Aes256Gcm::new_from_slice(&enc).map_err(|_| VaultError::Io("bad key length".into()))?;
        let v = Vault {
            path: path.to_path_buf(),
            cipher,
            lookup_key,
            seen: Mutex::new(HashSet::new()),
            file: Mutex::new(None),
        };
        let mut seen = HashSet::new();
        for (_, line) in v.lines()? {
            if let Some(d) = line.k.last() {
                seen.insert(d.clone());
            }
        }
        if let Ok(mut s) = v.seen.lock() {
            *s = seen;
        }
        Ok(v)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mac(&self, domain: &str, value: &str) -> String {
        let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(&self.lookup_key) {
            Ok(m) => m,
            // HMAC takes keys of any length
            Err(_) => return String::new(),
        };
        m.update(domain.as_bytes());
        m.update(b":");
        m.update(value.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    fn lookup_key(&self, l: &Lookup) -> String {
        match l {
            Lookup::Study(s) => self.mac("study", s.trim()),
            Lookup::Patient(p) => self.mac("patient", p.trim()),
        }
    }

    /// Record the originals of a de-identification report (skipped when nothing
    /// identifying is known, or when the same record is already in the vault).
    pub fn record(&self, r: &Report) -> Result<(), VaultError> {
        let e = Entry::from_report(r);
        if e.pseudonym_study_instance_uid.is_none() && e.pseudonym_patient_id.is_none() {
            return Ok(());
        }
        let mut keys = Vec::new();
        if let Some(s) = &e.pseudonym_study_instance_uid {
            keys.push(self.lookup_key(&Lookup::Study(s.clone())));
        }
        if let Some(p) = &e.pseudonym_patient_id {
            keys.push(self.lookup_key(&Lookup::Patient(p.clone())));
        }
        let dedup = self.mac(
            "record",
            &format!(
                "{}\u{1}{}\u{1}{}",
                e.pseudonym_study_instance_uid.as_deref().unwrap_or(""),
                e.pseudonym_patient_id.as_deref().unwrap_or(""),
                e.original_accession_number.as_deref().unwrap_or("")
            ),
        );
        {
            let seen = self
                .seen
                .lock()
                .map_err(|_| VaultError::Io("lock poisoned".into()))?;
            if seen.contains(&dedup) {
                return Ok(());
            }
        }
        keys.push(dedup.clone());
        let line = self.seal(&e, keys)?;
        let mut text = serde_json::to_string(&line).map_err(|e| VaultError::Io(e.to_string()))?;
        text.push('\n');
        let mut guard = self
            .file
            .lock()
            .map_err(|_| VaultError::Io("lock poisoned".into()))?;
        // re-check under the file lock (two workers, same study)
        if let Ok(seen) = self.seen.lock() {
            if seen.contains(&dedup) {
                return Ok(());
            }
        }
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| VaultError::Io(e.to_string()))?;
            }
            let mut o = OpenOptions::new();
            o.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            *guard = Some(
                o.open(&self.path)
                    .map_err(|e| VaultError::Io(format!("{}: {e}", self.path.display())))?,
            );
        }
        if let Some(f) = guard.as_mut() {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|e| VaultError::Io(e.to_string()))?;
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(dedup);
        }
        Ok(())
    }

    fn seal(&self, e: &Entry, keys: Vec<String>) -> Result<Line, VaultError> {
        let plain = serde_json::to_vec(e).map_err(|e| VaultError::Io(e.to_string()))?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = keys.join(",");
        let c = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Io("encryption failed".into()))?;
        Ok(Line {
            v: 1,
            k: keys,
            n: hex::encode(nonce),
            c: hex::encode(c),
        })
    }

    fn open_line(&self, no: usize, l: &Line) -> Result<Entry, VaultError> {
        let nonce = hex::decode(&l.n).map_err(|_| VaultError::Format(no))?;
        let c = hex::decode(&l.c).map_err(|_| VaultError::Format(no))?;
        if nonce.len() != 12 {
            return Err(VaultError::Format(no));
        }
        let aad = l.k.join(",");
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &c,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Decrypt(no))?;
        serde_json::from_slice(&plain).map_err(|_| VaultError::Format(no))
    }

    fn lines(&self) -> Result<Vec<(usize, Line)>, VaultError> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VaultError::Io(format!("{}: {e}", self.path.display()))),
        };
        let mut out = Vec::new();
        for (i, l) in BufReader::new(f).lines().enumerate() {
            let l = l.map_err(|e| VaultError::Io(e.to_string()))?;
            if l.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(&l).map_err(|_| VaultError::Format(i + 1))?;
            out.push((i + 1, line));
        }
        Ok(out)
    }

    /// Every entry matching `what`. A matching record that does not decrypt is an error
    /// (tampering or another key).
    pub fn find(&self, what: &Lookup) -> Result<Vec<Entry>, VaultError> {
        let k = self.lookup_key(what);
        let mut out = Vec::new();
        for (no, l) in self.lines()? {
            if l.k.contains(&k) {
                out.push(self.open_line(no, &l)?);
            }
        }
        Ok(out)
    }

    /// Decrypt every record (integrity check); returns how many there are.
    pub fn verify(&self) -> Result<usize, VaultError> {
        let lines = self.lines()?;
        for (no, l) in &lines {
            self.open_line(*no, l)?;
        }
        Ok(lines.len())
    }
}

/// Append one re-identification audit line (JSON) to `<spool>/vault-audit.log`.
pub fn audit(
    spool_dir: &Path,
    operator: &str,
    reason: &str,
    action: &str,
    pseudonym: &str,
    found: usize,
) -> std::io::Result<()> {
    std::fs::create_dir_all(spool_dir)?;
    let line = serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "operator": operator,
        "reason": reason,
        "action": action,
        "pseudonym": pseudonym,
        "records": found,
    });
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool_dir.join("vault-audit.log"))?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

/// `mado-gateway vault ...`
#[derive(Debug, clap::Subcommand)]
pub enum VaultCmd {
    /// Print the originals of a pseudonymous study or patient (JSON on stdout). Audited.
    Reidentify {
        /// Pseudonymous (de-identified) StudyInstanceUID.
        #[arg(long, conflicts_with = "patient", required_unless_present = "patient")]
        study: Option<String>,
        /// Patient ID pseudonym (e.g. ANON-0123456789abcdef).
        #[arg(long)]
        patient: Option<String>,
        /// Who asks (written to vault-audit.log).
        #[arg(long, value_name = "NAME")]
        operator: String,
        /// Why (written to vault-audit.log).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Decrypt every record to check the key and the file's integrity.
    Verify,
}

/// Entry point of `mado-gateway vault`.
pub fn main(cfg: &crate::config::GatewayConfig, cmd: VaultCmd) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |m: String| {
        eprintln!("mado-gateway vault: {m}");
        ExitCode::FAILURE
    };
    let vault = match cfg
        .vault
        .key_material()
        .and_then(|k| Vault::open(&cfg.vault.file(&cfg.spool.dir), &k))
    {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    match cmd {
        VaultCmd::Verify => match vault.verify() {
            Ok(n) => {
                println!("{n} records OK");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        },
        VaultCmd::Reidentify {
            study,
            patient,
            operator,
            reason,
        } => {
            if operator.trim().is_empty() || reason.trim().is_empty() {
                return fail("--operator and --reason must not be empty".into());
            }
            let (what, action, pseudonym) = match (study, patient) {
                (Some(s), _) => (Lookup::Study(s.clone()), "reidentify-study", s),
                (None, Some(p)) => (Lookup::Patient(p.clone()), "reidentify-patient", p),
                (None, None) => return fail("--study or --patient is required".into()),
            };
            let found = vault.find(&what);
            let n = found.as_ref().map(Vec::len).unwrap_or(0);
            // audit before printing anything
            if let Err(e) = audit(
                &cfg.spool.dir,
                operator.trim(),
                reason.trim(),
                action,
                pseudonym.trim(),
                n,
            ) {
                return fail(format!("cannot write vault-audit.log: {e}"));
            }
            match found {
                Ok(entries) if entries.is_empty() => fail("no record for this pseudonym".into()),
                Ok(entries) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&entries).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mado_core::deid::Identifiers;

    fn report(study: &str, pid: &str) -> Report {
        Report {
            original: Identifiers {
                patient_id: Some("PAT-4711".into()),
                patient_name: Some("DOE^JANE".into()),
                accession_number: Some("ACC-99".into()),
                study_date: Some("20240102".into()),
                study_instance_uid: Some("1.2.3.4.5".into()),
            },
            pseudonym: Identifiers {
                patient_id: Some(pid.into()),
                patient_name: Some(pid.into()),
                accession_number: None,
                study_date: Some("20231201".into()),
                study_instance_uid: Some(study.into()),
            },
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip_dedup_and_no_cleartext() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.jsonl");
        let v = Vault::open(&p, b"0123456789abcdef-key").unwrap();
        v.record(&report("2.25.111", "ANON-aaaa")).unwrap();
        v.record(&report("2.25.111", "ANON-aaaa")).unwrap();
        v.record(&report("2.25.222", "ANON-aaaa")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2);
        for s in [
            "PAT-4711",
            "DOE",
            "ACC-99",
            "1.2.3.4.5",
            "2.25.111",
            "ANON-aaaa",
        ] {
            assert!(!text.contains(s), "{s} in clear");
        }
        let got = v.find(&Lookup::Study("2.25.111".into())).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].original_patient_name.as_deref(), Some("DOE^JANE"));
        assert_eq!(
            got[0].original_study_instance_uid.as_deref(),
            Some("1.2.3.4.5")
        );
        assert_eq!(
            v.find(&Lookup::Patient("ANON-aaaa".into())).unwrap().len(),
            2
        );
        assert!(v
            .find(&Lookup::Study("2.25.999".into()))
            .unwrap()
            .is_empty());
        // reopening keeps dedup
        let v2 = Vault::open(&p, b"0123456789abcdef-key").unwrap();
        v2.record(&report("2.25.111", "ANON-aaaa")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
        assert_eq!(v2.verify().unwrap(), 2);
    }

    #[test]
    fn wrong_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.jsonl");
        let v = Vault::open(&p, b"0123456789abcdef-key").unwrap();
        v.record(&report("2.25.111", "ANON-aaaa")).unwrap();
        let w = Vault::open(&p, b"another-key-0123456789").unwrap();
        assert!(matches!(w.verify(), Err(VaultError::Decrypt(1))));
        // the lookup key differs too: nothing is found
        assert!(w
            .find(&Lookup::Study("2.25.111".into()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn tamper_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.jsonl");
        let v = Vault::open(&p, b"0123456789abcdef-key").unwrap();
        v.record(&report("2.25.111", "ANON-aaaa")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let c = line["c"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if &c[..1] == "0" { "1" } else { "0" }, &c[1..]);
        line["c"] = flipped.into();
        std::fs::write(&p, format!("{line}\n")).unwrap();
        assert!(matches!(
            v.find(&Lookup::Study("2.25.111".into())),
            Err(VaultError::Decrypt(1))
        ));
        // moving the record to another index breaks the AAD
        let mut line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        line["k"][0] = serde_json::Value::from("00");
        std::fs::write(&p, format!("{line}\n")).unwrap();
        assert!(matches!(v.verify(), Err(VaultError::Decrypt(1))));
    }

    #[test]
    fn audit_line_has_no_original() {
        let dir = tempfile::tempdir().unwrap();
        audit(
            dir.path(),
            "dr who",
            "tumour board",
            "reidentify-study",
            "2.25.1",
            1,
        )
        .unwrap();
        let t = std::fs::read_to_string(dir.path().join("vault-audit.log")).unwrap();
        assert!(t.contains("dr who") && t.contains("2.25.1"));
    }
}
