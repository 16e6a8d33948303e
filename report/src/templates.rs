//! Report templates per modality and body part, kept as data (`report/templates/*.toml`):
//! a title and the findings / impression / recommendation scaffolds in English and Japanese.
//! The built-in set is compiled in; [`load_dir`] reads a site's own directory instead.

use serde::Deserialize;
use std::path::Path;

use crate::model::{ReportError, Sections};

/// Largest template file read from disk.
pub const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

/// A report language of the templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    Ja,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Localised {
    pub en: String,
    pub ja: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaffold {
    pub findings: String,
    pub impression: String,
    pub recommendation: String,
}

/// One template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    /// DICOM Modality (0008,0060), e.g. `CT`.
    pub modality: String,
    /// DICOM Body Part Examined (0018,0015), e.g. `CHEST`.
    pub body_part: String,
    pub title: Localised,
    pub en: Scaffold,
    pub ja: Scaffold,
}

impl Template {
    /// The scaffold as report sections in one language.
    pub fn sections(&self, lang: Language) -> Sections {
        let s = match lang {
            Language::En => &self.en,
            Language::Ja => &self.ja,
        };
        Sections {
            findings: s.findings.trim().to_owned(),
            impression: s.impression.trim().to_owned(),
            recommendation: s.recommendation.trim().to_owned(),
        }
    }

    fn check(&self) -> Result<(), ReportError> {
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ReportError::invalid("template.id", "a-z 0-9 -"));
        }
        // a scaffold must itself be a valid report text
        for lang in [Language::En, Language::Ja] {
            let mut probe = probe_report();
            probe.sections = self.sections(lang);
            probe.validate()?;
        }
        Ok(())
    }
}

fn probe_report() -> crate::Report {
    crate::Report {
        report_id: "template-check".into(),
        version: 1,
        status: crate::ReportStatus::Preliminary,
        amendment_reason: None,
        study: crate::StudyContext {
            study_instance_uid: "2.25.1".into(),
            accession_number: String::new(),
            patient_name: String::new(),
            patient_id: String::new(),
            patient_birth_date: String::new(),
            patient_sex: String::new(),
            study_id: String::new(),
            study_date: String::new(),
            study_time: String::new(),
            referring_physician_name: String::new(),
            study_description: String::new(),
            modality: String::new(),
        },
        sections: Sections::default(),
        author: crate::Author {
            name: "x".into(),
            organisation: String::new(),
        },
        signed_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        key_images: vec![],
        measurements: vec![],
    }
}

/// Parses one template (TOML text).
pub fn parse(text: &str) -> Result<Template, ReportError> {
    let t: Template = toml::from_str(text).map_err(|e| ReportError::Malformed(e.to_string()))?;
    t.check()?;
    Ok(t)
}

const BUILTIN: &[(&str, &str)] = &[
    ("ct-chest.toml", include_str!("../templates/ct-chest.toml")),
    ("ct-head.toml", include_str!("../templates/ct-head.toml")),
    ("mr-brain.toml", include_str!("../templates/mr-brain.toml")),
    ("cr-chest.toml", include_str!("../templates/cr-chest.toml")),
];

/// The templates shipped in `report/templates/`.
pub fn builtin() -> Result<Vec<Template>, ReportError> {
    BUILTIN.iter().map(|(_, t)| parse(t)).collect()
}

/// Every `*.toml` in `dir` (sorted by file name); files over 64 KiB are refused.
pub fn load_dir(dir: &Path) -> Result<Vec<Template>, ReportError> {
    let io = |e: std::io::Error| ReportError::Malformed(format!("{}: {e}", dir.display()));
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let len = std::fs::metadata(&p).map_err(io)?.len();
        if len > MAX_TEMPLATE_BYTES {
            return Err(ReportError::TooLarge {
                size: usize::try_from(len).unwrap_or(usize::MAX),
                limit: MAX_TEMPLATE_BYTES as usize,
            });
        }
        let text = std::fs::read_to_string(&p).map_err(io)?;
        let t =
            parse(&text).map_err(|e| ReportError::Malformed(format!("{}: {e}", p.display())))?;
        if out.iter().any(|o: &Template| o.id == t.id) {
            return Err(ReportError::Malformed(format!(
                "duplicate template id {}",
                t.id
            )));
        }
        out.push(t);
    }
    Ok(out)
}

/// The template for a modality and body part (case-insensitive), if any.
pub fn find<'a>(
    templates: &'a [Template],
    modality: &str,
    body_part: &str,
) -> Option<&'a Template> {
    templates.iter().find(|t| {
        t.modality.eq_ignore_ascii_case(modality) && t.body_part.eq_ignore_ascii_case(body_part)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_load_in_both_languages() {
        let all = builtin().expect("builtin templates");
        assert_eq!(all.len(), 4);
        let ct = find(&all, "ct", "chest").expect("CT chest");
        assert!(ct.sections(Language::Ja).findings.contains("肺野"));
        assert!(ct.sections(Language::En).findings.starts_with("Lungs:"));
        assert_eq!(ct.title.ja, "胸部CT");
        assert!(find(&all, "MR", "BRAIN").is_some());
        assert!(find(&all, "CR", "CHEST").is_some());
        assert!(find(&all, "CT", "HEAD").is_some());
        assert!(find(&all, "US", "ABDOMEN").is_none());
    }

    #[test]
    fn load_dir_reads_the_shipped_directory_and_refuses_bad_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let all = load_dir(&dir).expect("load");
        assert_eq!(all, {
            let mut b = builtin().expect("builtin");
            b.sort_by(|a, b| a.id.cmp(&b.id));
            b
        });

        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join("bad.toml"),
            "id = \"x\"\nmodality = \"CT\"\nbody_part = \"X\"\nunknown = 1\n",
        )
        .expect("write");
        assert!(load_dir(tmp.path()).is_err());

        // a control character in a scaffold is refused like in a report
        let text =
            include_str!("../templates/ct-head.toml").replace("Clinical follow-up.", "a\u{7}b");
        assert!(parse(&text).is_err());
    }
}
