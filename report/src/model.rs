//! The report model: one signed (or draft) version of a radiology report.
//!
//! Serde types; [`Report::validate`] checks every size and character before anything is
//! rendered, and [`Report::canonical_bytes`] / [`Report::sha256`] give the byte string the
//! audit chain signs. Text is plain text everywhere: no renderer interprets it as markup.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest report accepted (canonical encoding, key-image JPEGs included): 1 MiB.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Largest free-text section (findings, impression, recommendation, amendment reason), bytes.
pub const MAX_SECTION_BYTES: usize = 64 * 1024;
/// Largest single-line field (names, accession, labels), characters.
pub const MAX_LINE_CHARS: usize = 64;
/// Most key images per report.
pub const MAX_KEY_IMAGES: usize = 32;
/// Most measurements per report.
pub const MAX_MEASUREMENTS: usize = 256;
/// Most graphic points per measurement.
pub const MAX_POINTS: usize = 16;
/// Highest version number.
pub const MAX_VERSION: u32 = 9999;

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    /// The report is larger than [`MAX_REPORT_BYTES`]; the API answers 413.
    #[error("report is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    /// A field breaks a rule; the API answers 422 naming the field.
    #[error("invalid field {field}: {reason}")]
    Invalid { field: String, reason: &'static str },
    /// The body is not a report (JSON syntax or shape).
    #[error("malformed report: {0}")]
    Malformed(String),
}

impl ReportError {
    pub(crate) fn invalid(field: impl Into<String>, reason: &'static str) -> Self {
        ReportError::Invalid {
            field: field.into(),
            reason,
        }
    }
}

/// Status of a report version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Preliminary,
    Final,
    Amended,
}

impl ReportStatus {
    /// Signed (final or amended): verified, complete.
    pub fn is_signed(self) -> bool {
        !matches!(self, ReportStatus::Preliminary)
    }
}

/// The study (and its patient, pseudonymised as given) the report belongs to.
/// These are copied into the DICOM patient/study modules of the report objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyContext {
    pub study_instance_uid: String,
    #[serde(default)]
    pub accession_number: String,
    /// Patient name as given (a pseudonym in the cloud), DICOM PN form (`FAMILY^GIVEN`).
    #[serde(default)]
    pub patient_name: String,
    #[serde(default)]
    pub patient_id: String,
    /// DICOM DA (`YYYYMMDD`) or empty.
    #[serde(default)]
    pub patient_birth_date: String,
    /// `M`, `F`, `O` or empty.
    #[serde(default)]
    pub patient_sex: String,
    #[serde(default)]
    pub study_id: String,
    /// DICOM DA or empty.
    #[serde(default)]
    pub study_date: String,
    /// DICOM TM or empty.
    #[serde(default)]
    pub study_time: String,
    #[serde(default)]
    pub referring_physician_name: String,
    #[serde(default)]
    pub study_description: String,
    /// Modality of the imaging study (e.g. `CT`), for display.
    #[serde(default)]
    pub modality: String,
}

/// Free-text sections (Japanese and/or English; newlines and tabs allowed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sections {
    #[serde(default)]
    pub findings: String,
    #[serde(default)]
    pub impression: String,
    #[serde(default)]
    pub recommendation: String,
}

/// Who wrote (and, when final, signed) the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Author {
    /// DICOM PN form (`FAMILY^GIVEN`) or plain.
    pub name: String,
    pub organisation: String,
}

/// An image (frame) of the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// 1-based frame number of a multi-frame image.
    #[serde(default)]
    pub frame: Option<u32>,
}

/// A key image: the reference, the display window the reader used, and optionally the
/// rendered JPEG that goes into the PDF as-is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyImage {
    pub image: ImageRef,
    #[serde(default)]
    pub window_center: Option<f64>,
    #[serde(default)]
    pub window_width: Option<f64>,
    #[serde(default)]
    pub caption: String,
    /// Rendered JPEG (base64 in JSON).
    #[serde(default, with = "b64_opt")]
    pub jpeg: Option<Vec<u8>>,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MeasurementKind {
    Length {
        mm: f64,
    },
    Angle {
        deg: f64,
    },
    /// Elliptical region of interest; statistics in modality units (`unit`, UCUM, e.g.
    /// `[hnsf'U]` for CT).
    EllipseRoi {
        area_mm2: f64,
        mean: f64,
        sd: f64,
        min: f64,
        max: f64,
        #[serde(default = "default_unit")]
        unit: String,
    },
}

fn default_unit() -> String {
    "1".to_owned()
}

/// One measurement on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurement {
    pub label: String,
    /// The kind and its values (`{"kind": "length", "mm": 12.5}`).
    pub value: MeasurementKind,
    /// The image had no pixel spacing calibrated to the patient (e.g. detector spacing
    /// only): the values are approximate, and every format says so.
    #[serde(default)]
    pub uncalibrated: bool,
    pub image: ImageRef,
    /// Graphic coordinates in image pixels (column, row): a length is 2 points, an angle
    /// 3 (vertex in the middle) or 4 (two lines), an ellipse 4 (major axis ends, then minor).
    pub points: Vec<[f32; 2]>,
}

/// One version of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Opaque report id (letters, digits, `-`, `.`; ≤ 64), stable across versions.
    pub report_id: String,
    /// 1 for the first version, +1 per amendment.
    pub version: u32,
    pub status: ReportStatus,
    /// Required for an amendment, absent otherwise.
    #[serde(default)]
    pub amendment_reason: Option<String>,
    pub study: StudyContext,
    pub sections: Sections,
    pub author: Author,
    /// When it was signed (final/amended), or last saved (preliminary).
    pub signed_at: DateTime<Utc>,
    #[serde(default)]
    pub key_images: Vec<KeyImage>,
    #[serde(default)]
    pub measurements: Vec<Measurement>,
}

impl Report {
    /// Parses and validates a report from JSON; refuses more than [`MAX_REPORT_BYTES`]
    /// before parsing.
    pub fn from_json(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                size: bytes.len(),
                limit: MAX_REPORT_BYTES,
            });
        }
        let r: Report =
            serde_json::from_slice(bytes).map_err(|e| ReportError::Malformed(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    /// The canonical byte encoding: compact JSON in declaration order (no maps, so the
    /// order is fixed), JPEGs base64, floats in shortest round-trip form. The same report
    /// always encodes to the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = b"mado-report/1\n".to_vec();
        // serializing these plain types cannot fail (no maps with non-string keys)
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// SHA-256 of [`Report::canonical_bytes`], lowercase hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ReportError> {
        check_id("report_id", &self.report_id)?;
        if self.version == 0 || self.version > MAX_VERSION {
            return Err(ReportError::invalid("version", "must be 1..=9999"));
        }
        match (self.status, &self.amendment_reason) {
            (ReportStatus::Amended, None) => {
                return Err(ReportError::invalid(
                    "amendment_reason",
                    "required for an amended report",
                ))
            }
            (ReportStatus::Amended, Some(_)) if self.version < 2 => {
                return Err(ReportError::invalid(
                    "version",
                    "an amendment is version 2 or later",
                ))
            }
            (ReportStatus::Preliminary | ReportStatus::Final, Some(_)) => {
                return Err(ReportError::invalid(
                    "amendment_reason",
                    "only an amended report has one",
                ))
            }
            _ => {}
        }
        if let Some(reason) = &self.amendment_reason {
            check_text("amendment_reason", reason, true)?;
            if reason.trim().is_empty() {
                return Err(ReportError::invalid("amendment_reason", "empty"));
            }
        }
        let s = &self.study;
        check_uid("study.study_instance_uid", &s.study_instance_uid)?;
        for (f, v, max) in [
            ("study.accession_number", &s.accession_number, 16),
            ("study.patient_name", &s.patient_name, MAX_LINE_CHARS),
            ("study.patient_id", &s.patient_id, MAX_LINE_CHARS),
            ("study.study_id", &s.study_id, 16),
            (
                "study.referring_physician_name",
                &s.referring_physician_name,
                MAX_LINE_CHARS,
            ),
            (
                "study.study_description",
                &s.study_description,
                MAX_LINE_CHARS,
            ),
            ("study.modality", &s.modality, 16),
        ] {
            check_line(f, v, max)?;
        }
        check_digits("study.patient_birth_date", &s.patient_birth_date, &[8])?;
        check_digits("study.study_date", &s.study_date, &[8])?;
        check_time("study.study_time", &s.study_time)?;
        if !matches!(s.patient_sex.as_str(), "" | "M" | "F" | "O") {
            return Err(ReportError::invalid(
                "study.patient_sex",
                "M, F, O or empty",
            ));
        }
        check_text("sections.findings", &self.sections.findings, true)?;
        check_text("sections.impression", &self.sections.impression, true)?;
        check_text(
            "sections.recommendation",
            &self.sections.recommendation,
            true,
        )?;
        check_line("author.name", &self.author.name, MAX_LINE_CHARS)?;
        if self.author.name.trim().is_empty() {
            return Err(ReportError::invalid("author.name", "empty"));
        }
        check_line(
            "author.organisation",
            &self.author.organisation,
            MAX_LINE_CHARS,
        )?;
        // a signed report names its organisation (DICOM Verifying Organization is Type 1)
        if self.status.is_signed() && self.author.organisation.trim().is_empty() {
            return Err(ReportError::invalid(
                "author.organisation",
                "required for a signed report",
            ));
        }
        if self.key_images.len() > MAX_KEY_IMAGES {
            return Err(ReportError::invalid("key_images", "more than 32"));
        }
        for (i, k) in self.key_images.iter().enumerate() {
            check_image(&format!("key_images[{i}].image"), &k.image)?;
            check_line(&format!("key_images[{i}].caption"), &k.caption, 256)?;
            for (f, v) in [
                ("window_center", k.window_center),
                ("window_width", k.window_width),
            ] {
                if let Some(v) = v {
                    if !v.is_finite() || v.abs() > 1e7 {
                        return Err(ReportError::invalid(
                            format!("key_images[{i}].{f}"),
                            "not a finite number in range",
                        ));
                    }
                }
            }
            if matches!(k.window_width, Some(w) if w < 1.0) {
                return Err(ReportError::invalid(
                    format!("key_images[{i}].window_width"),
                    "must be ≥ 1",
                ));
            }
            if let Some(j) = &k.jpeg {
                if !j.starts_with(&[0xFF, 0xD8, 0xFF]) {
                    return Err(ReportError::invalid(
                        format!("key_images[{i}].jpeg"),
                        "not a JPEG",
                    ));
                }
            }
        }
        if self.measurements.len() > MAX_MEASUREMENTS {
            return Err(ReportError::invalid("measurements", "more than 256"));
        }
        for (i, m) in self.measurements.iter().enumerate() {
            let f = format!("measurements[{i}]");
            check_line(&format!("{f}.label"), &m.label, MAX_LINE_CHARS)?;
            check_image(&format!("{f}.image"), &m.image)?;
            let (values, points_ok): (Vec<f64>, bool) = match &m.value {
                MeasurementKind::Length { mm } => (vec![*mm], m.points.len() == 2),
                MeasurementKind::Angle { deg } => {
                    if !(0.0..=360.0).contains(deg) {
                        return Err(ReportError::invalid(format!("{f}.deg"), "0..=360"));
                    }
                    (vec![*deg], matches!(m.points.len(), 3 | 4))
                }
                MeasurementKind::EllipseRoi {
                    area_mm2,
                    mean,
                    sd,
                    min,
                    max,
                    unit,
                } => {
                    check_unit(&format!("{f}.unit"), unit)?;
                    (vec![*area_mm2, *mean, *sd, *min, *max], m.points.len() == 4)
                }
            };
            if values.iter().any(|v| !v.is_finite() || v.abs() > 1e9) {
                return Err(ReportError::invalid(
                    f,
                    "value not a finite number in range",
                ));
            }
            if !points_ok || m.points.len() > MAX_POINTS {
                return Err(ReportError::invalid(
                    format!("{f}.points"),
                    "wrong number of points for the kind",
                ));
            }
            if m.points
                .iter()
                .flatten()
                .any(|c| !c.is_finite() || c.abs() > 1e6)
            {
                return Err(ReportError::invalid(
                    format!("{f}.points"),
                    "coordinate not a finite number in range",
                ));
            }
        }
        let size = self.canonical_bytes().len();
        if size > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                size,
                limit: MAX_REPORT_BYTES,
            });
        }
        Ok(())
    }
}

/// Control characters are refused; multi-line text may hold `\n` and `\t` only.
fn check_text(field: &str, v: &str, multiline: bool) -> Result<(), ReportError> {
    if v.len() > MAX_SECTION_BYTES {
        return Err(ReportError::invalid(field, "longer than 64 KiB"));
    }
    for c in v.chars() {
        let allowed = multiline && (c == '\n' || c == '\t');
        if (c.is_control() && !allowed)
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFD}')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        {
            return Err(ReportError::invalid(field, "control character"));
        }
    }
    Ok(())
}

fn check_line(field: &str, v: &str, max_chars: usize) -> Result<(), ReportError> {
    if v.chars().count() > max_chars {
        return Err(ReportError::invalid(field, "too long"));
    }
    check_text(field, v, false)?;
    // `\` is the DICOM value delimiter
    if v.contains('\\') {
        return Err(ReportError::invalid(field, "backslash not allowed"));
    }
    Ok(())
}

fn check_id(field: &str, v: &str) -> Result<(), ReportError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ReportError::invalid(field, "1..=64 of A-Z a-z 0-9 - ."));
    }
    Ok(())
}

/// A DICOM UID: 1..=64 characters, digits and dots, no empty component, no leading zero.
pub(crate) fn check_uid(field: &str, v: &str) -> Result<(), ReportError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        });
    if ok {
        Ok(())
    } else {
        Err(ReportError::invalid(field, "not a DICOM UID"))
    }
}

fn check_image(field: &str, i: &ImageRef) -> Result<(), ReportError> {
    check_uid(
        &format!("{field}.series_instance_uid"),
        &i.series_instance_uid,
    )?;
    check_uid(&format!("{field}.sop_class_uid"), &i.sop_class_uid)?;
    check_uid(&format!("{field}.sop_instance_uid"), &i.sop_instance_uid)?;
    if matches!(i.frame, Some(0)) || matches!(i.frame, Some(f) if f > 1_000_000) {
        return Err(ReportError::invalid(
            format!("{field}.frame"),
            "1..=1000000",
        ));
    }
    Ok(())
}

fn check_digits(field: &str, v: &str, lens: &[usize]) -> Result<(), ReportError> {
    if v.is_empty() || (lens.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(ReportError::invalid(field, "not a DICOM date"))
    }
}

fn check_time(field: &str, v: &str) -> Result<(), ReportError> {
    let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
    let ok = v.is_empty()
        || (matches!(hms.len(), 2 | 4 | 6)
            && hms.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= 6
            && frac.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(ReportError::invalid(field, "not a DICOM time"))
    }
}

/// UCUM unit codes as used here: printable ASCII without spaces or quotes other than `'`.
fn check_unit(field: &str, v: &str) -> Result<(), ReportError> {
    if v.is_empty()
        || v.len() > 16
        || !v
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'|' && b != b'^')
    {
        return Err(ReportError::invalid(field, "not a UCUM unit code"));
    }
    Ok(())
}

mod b64_opt {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let o: Option<String> = Option::deserialize(d)?;
        match o {
            None => Ok(None),
            Some(s) => {
                // refuse before decoding: the whole report is capped at 1 MiB anyway
                if s.len() > super::MAX_REPORT_BYTES * 4 / 3 + 4 {
                    return Err(serde::de::Error::custom("jpeg too large"));
                }
                STANDARD
                    .decode(s.as_bytes())
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_json_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```json\n").expect("json block") + 8;
        let len = readme[start..].find("```").expect("end of block");
        let r = Report::from_json(&readme.as_bytes()[start..start + len]).expect("example");
        assert_eq!(r.status, ReportStatus::Amended);
        assert!(matches!(
            r.measurements[0].value,
            MeasurementKind::EllipseRoi { .. }
        ));
    }
}
