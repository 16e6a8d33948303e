//! The object-key scheme, defined once. Keys are built only from
//! de-identified, validated UIDs, so they never carry original identifiers
//! (keys end up in bucket listings and access logs) and never contain path
//! separators other than the ones put there by this module.
//!
//! ```text
//! studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}.dcm
//! ```

use crate::uid::{SeriesUid, SopInstanceUid, StudyUid};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Mado object key")]
pub struct BadKey;

impl ObjectKey {
    pub fn instance(study: &StudyUid, series: &SeriesUid, sop: &SopInstanceUid) -> Self {
        Self(format!(
            "studies/{study}/series/{series}/instances/{sop}.dcm"
        ))
    }

    /// Prefix under which every object of one study lives.
    pub fn study_prefix(study: &StudyUid) -> String {
        format!("studies/{study}/")
    }

    /// Parse a key back into its UIDs.
    pub fn parse(key: &str) -> Result<(StudyUid, SeriesUid, SopInstanceUid), BadKey> {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["studies", st, "series", se, "instances", file] => {
                let sop = file.strip_suffix(".dcm").ok_or(BadKey)?;
                Ok((
                    StudyUid::parse(st).map_err(|_| BadKey)?,
                    SeriesUid::parse(se).map_err(|_| BadKey)?,
                    SopInstanceUid::parse(sop).map_err(|_| BadKey)?,
                ))
            }
            _ => Err(BadKey),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let st = StudyUid::parse("2.25.1").unwrap();
        let se = SeriesUid::parse("2.25.2").unwrap();
        let sop = SopInstanceUid::parse("2.25.3").unwrap();
        let k = ObjectKey::instance(&st, &se, &sop);
        assert_eq!(
            k.as_str(),
            "studies/2.25.1/series/2.25.2/instances/2.25.3.dcm"
        );
        assert_eq!(ObjectKey::parse(k.as_str()).unwrap(), (st, se, sop));
        assert!(ObjectKey::parse("studies/../x").is_err());
    }
}
