//! Quarantine review: list, release, delete (`mado-gateway quarantine ...`).
//!
//! `spool/quarantine/<id>.dcm` (+ `<id>.reason`) holds instances the gateway would not
//! upload: unparsable, not de-identifiable, or flagged by the burned-in PHI screening.
//! A listing shows no PHI: id, reason, SOP class, modality, received time.
//!
//! `release` moves the instance back to `pending/` with a `<id>.released` marker: the
//! upload worker then skips the screening (an operator looked at the pixels) but applies
//! the rest of the de-identification as always. Releases and deletions append a JSON line
//! to `<spool.dir>/quarantine-audit.log`. A running gateway picks a released instance up
//! at its next rescan of `pending/` (`upload.rescan_secs`).

use crate::spool::Spool;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::OpenFileOptions;
use serde::Serialize;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("{0:?} is not a spool id (32 hexadecimal digits)")]
    BadId(String),
    #[error("no quarantined instance {0}")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One quarantined instance, without PHI.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: String,
    pub reason: String,
    pub sop_class_uid: Option<String>,
    pub modality: Option<String>,
    /// RFC 3339 time the file reached the spool (its modification time).
    pub received: Option<String>,
    pub size: u64,
}

fn check_id(id: &str) -> Result<(), QuarantineError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(QuarantineError::BadId(id.chars().take(64).collect()))
    }
}

/// Header fields that carry no PHI (read up to the pixel data only).
fn header(path: &Path) -> (Option<String>, Option<String>) {
    let obj = match OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    {
        Ok(o) => o,
        Err(_) => return (None, None),
    };
    let text = |t| {
        obj.get(t)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .filter(|s| !s.is_empty())
    };
    let class = text(tags::SOP_CLASS_UID).filter(|c| mado_core::Uid::parse(c).is_ok());
    // a modality is a short code string; anything else is not shown
    let modality = text(tags::MODALITY).filter(|m| {
        m.len() <= 16
            && m.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    (class, modality)
}

/// Every quarantined instance, oldest first.
pub fn list(spool: &Spool) -> Result<Vec<Item>, QuarantineError> {
    let dir = spool.quarantine();
    let mut out = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".dcm") else {
            continue;
        };
        if check_id(id).is_err() {
            continue;
        }
        let meta = e.metadata()?;
        let reason = fs::read_to_string(dir.join(format!("{id}.reason")))
            .map(|r| r.trim().to_string())
            .unwrap_or_default();
        let (sop_class_uid, modality) = header(&e.path());
        let received = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        out.push(Item {
            id: id.to_string(),
            reason,
            sop_class_uid,
            modality,
            received,
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| a.received.cmp(&b.received).then(a.id.cmp(&b.id)));
    Ok(out)
}

fn audit(spool: &Spool, action: &str, id: &str, operator: &str) -> io::Result<()> {
    let line = serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "action": action,
        "id": id,
        "operator": operator,
    });
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spool.root().join("quarantine-audit.log"))?;
    writeln!(f, "{line}")?;
    f.sync_data()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Move a quarantined instance back to `pending/`, flagged so screening is skipped.
pub fn release(spool: &Spool, id: &str, operator: &str) -> Result<(), QuarantineError> {
    check_id(id)?;
    let src = spool.quarantine().join(format!("{id}.dcm"));
    if !src.is_file() {
        return Err(QuarantineError::NotFound(id.to_string()));
    }
    let dst = spool.pending_path(id);
    // the marker first, so the worker never sees the file without it
    let marker = crate::upload::released_marker(&dst);
    let mut f = fs::File::create(&marker)?;
    writeln!(
        f,
        "{}",
        serde_json::json!({"operator": operator, "time": chrono::Utc::now().to_rfc3339()})
    )?;
    f.sync_all()?;
    drop(f);
    fs::rename(&src, &dst)?;
    let _ = fs::remove_file(spool.quarantine().join(format!("{id}.reason")));
    sync_dir(&spool.pending())?;
    sync_dir(&spool.quarantine())?;
    audit(spool, "release", id, operator)?;
    Ok(())
}

/// Delete a quarantined instance for good.
pub fn delete(spool: &Spool, id: &str, operator: &str) -> Result<(), QuarantineError> {
    check_id(id)?;
    let src = spool.quarantine().join(format!("{id}.dcm"));
    if !src.is_file() {
        return Err(QuarantineError::NotFound(id.to_string()));
    }
    fs::remove_file(&src)?;
    let _ = fs::remove_file(spool.quarantine().join(format!("{id}.reason")));
    sync_dir(&spool.quarantine())?;
    audit(spool, "delete", id, operator)?;
    Ok(())
}

/// `mado-gateway quarantine ...`
#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCmd {
    /// List quarantined instances (id, reason, SOP class, modality, received; no PHI).
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send an instance back to pending/ without screening (an operator checked the
    /// pixels); the rest of the de-identification still applies.
    Release {
        id: String,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
    /// Delete a quarantined instance for good.
    Delete {
        id: String,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
}

/// Entry point of `mado-gateway quarantine`.
pub fn main(cfg: &crate::config::GatewayConfig, cmd: QuarantineCmd) -> std::process::ExitCode {
    use std::process::ExitCode;
    let spool = Spool::at(&cfg.spool.dir);
    let r = match cmd {
        QuarantineCmd::List { json } => list(&spool).map(|items| {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).unwrap_or_default()
                );
            } else {
                println!("ID\tRECEIVED\tMODALITY\tSOP_CLASS\tREASON");
                for i in items {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        i.id,
                        i.received.as_deref().unwrap_or("-"),
                        i.modality.as_deref().unwrap_or("-"),
                        i.sop_class_uid.as_deref().unwrap_or("-"),
                        i.reason.replace(['\n', '\t'], " ")
                    );
                }
            }
        }),
        QuarantineCmd::Release { id, operator } => nonempty(&operator)
            .and_then(|()| release(&spool, &id, operator.trim()))
            .map(|()| println!("released {id}")),
        QuarantineCmd::Delete { id, operator } => nonempty(&operator)
            .and_then(|()| delete(&spool, &id, operator.trim()))
            .map(|()| println!("deleted {id}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mado-gateway quarantine: {e}");
            ExitCode::FAILURE
        }
    }
}

fn nonempty(operator: &str) -> Result<(), QuarantineError> {
    if operator.trim().is_empty() {
        return Err(QuarantineError::Io(io::Error::other(
            "--operator must not be empty",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deid::Pipeline;
    use crate::testutil::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    /// A burned-in CT in `pending/`, as the SCP would spool it.
    fn spool_burned_in(spool: &Spool) -> String {
        let mut obj = sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN);
        obj.put(DataElement::new(
            tags::BURNED_IN_ANNOTATION,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        let id = "0123456789abcdef0123456789abcdef".to_string();
        obj.write_to_file(spool.pending_path(&id)).unwrap();
        id
    }

    #[test]
    fn quarantine_list_release_delete() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let deid = Pipeline::without_vault(crate::deid::tests::test_engine());
        let id = spool_burned_in(&spool);
        let err = crate::upload::prepare_file(&spool.pending_path(&id), &deid).unwrap_err();
        assert!(matches!(err, crate::upload::PrepareError::Quarantine(_)));
        spool.move_to_quarantine(&id, &err.to_string()).unwrap();

        let items = list(&spool).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, id);
        assert_eq!(items[0].modality.as_deref(), Some("CT"));
        assert!(items[0].reason.contains("screening"), "{:?}", items[0]);
        let json = serde_json::to_string(&items).unwrap();
        for orig in ORIGINALS {
            assert!(!json.contains(orig), "{orig} in listing");
        }

        assert!(matches!(
            release(&spool, "../../etc", "op"),
            Err(QuarantineError::BadId(_))
        ));
        release(&spool, &id, "dr. op").unwrap();
        assert!(list(&spool).unwrap().is_empty());
        assert_eq!(spool.list_pending().unwrap(), vec![id.clone()]);
        // released: screening skipped, de-identification applied
        let p = crate::upload::prepare_file(&spool.pending_path(&id), &deid).unwrap();
        for orig in ORIGINALS {
            assert!(
                !p.bytes.windows(orig.len()).any(|w| w == orig.as_bytes()),
                "{orig} leaked"
            );
        }
        let audit = fs::read_to_string(spool.root().join("quarantine-audit.log")).unwrap();
        assert!(audit.contains("release") && audit.contains("dr. op"));

        // delete
        fs::remove_file(crate::upload::released_marker(&spool.pending_path(&id))).unwrap();
        spool.move_to_quarantine(&id, "again").unwrap();
        delete(&spool, &id, "op").unwrap();
        assert!(list(&spool).unwrap().is_empty());
        assert!(matches!(
            delete(&spool, &id, "op"),
            Err(QuarantineError::NotFound(_))
        ));
    }
}
