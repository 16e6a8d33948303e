//! FHIR R4 DiagnosticReport for a report version (JSON).
//!
//! `status` from the report status (preliminary / final / amended), `category` RAD (v2-0074),
//! `code` LOINC 18748-4 "Diagnostic imaging study", `subject` the reference given,
//! `imagingStudy` by DICOM Study Instance UID identifier (no ImagingStudy resource needed),
//! `conclusion` the impression, `presentedForm` the PDF (base64), `issued` the signed time,
//! `performer` / `resultsInterpreter` the author by display.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::model::{Report, ReportError, ReportStatus};

/// The FHIR resource id of a report version: `<report id>-v<version>` (the FHIR id rule
/// `[A-Za-z0-9\-\.]{1,64}` holds: the report id is at most 64 of those characters and is cut
/// to leave room for the suffix).
pub fn resource_id(report: &Report) -> String {
    let suffix = format!("-v{}", report.version);
    let keep = 64 - suffix.len();
    let base: String = report.report_id.chars().take(keep).collect();
    format!("{base}{suffix}")
}

/// Builds the DiagnosticReport, the report validated first. `subject` is a relative
/// reference `Type/id` such as `Patient/123` (FHIR id rules); `pdf` goes into
/// `presentedForm` when given.
pub fn diagnostic_report(
    report: &Report,
    subject: &str,
    pdf: Option<&[u8]>,
) -> Result<Value, ReportError> {
    report.validate()?;
    let subject_ok = subject.split_once('/').is_some_and(|(t, id)| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes().all(|b| b.is_ascii_alphabetic())
            && t.starts_with(|c: char| c.is_ascii_uppercase())
            && !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    if !subject_ok {
        return Err(ReportError::invalid("subject", "not a Type/id reference"));
    }
    let status = match report.status {
        ReportStatus::Preliminary => "preliminary",
        ReportStatus::Final => "final",
        ReportStatus::Amended => "amended",
    };
    let issued = report
        .signed_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let author = report.author.name.replace('^', " ").trim().to_owned();
    let mut performer = vec![json!({ "display": author })];
    if !report.author.organisation.is_empty() {
        performer.push(json!({ "display": report.author.organisation }));
    }
    let mut r = json!({
        "resourceType": "DiagnosticReport",
        "id": resource_id(report),
        "identifier": [{
            "system": "urn:ietf:rfc:3986",
            "value": format!("urn:mado:report:{}:{}", report.report_id, report.version),
        }],
        "status": status,
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                "code": "RAD",
                "display": "Radiology",
            }]
        }],
        "code": {
            "coding": [{
                "system": "http://loinc.org",
                "code": "18748-4",
                "display": "Diagnostic imaging study",
            }]
        },
        "subject": { "reference": subject },
        "issued": issued,
        "performer": performer,
        "resultsInterpreter": [{ "display": author }],
        "imagingStudy": [{
            "identifier": {
                "system": "urn:dicom:uid",
                "value": format!("urn:oid:{}", report.study.study_instance_uid),
            },
        }],
    });
    if !report.study.accession_number.is_empty() {
        r["basedOn"] = json!([{
            "identifier": {
                "type": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "ACSN",
                }]},
                "value": report.study.accession_number,
            }
        }]);
    }
    if let Some(e) = effective(report) {
        r["effectiveDateTime"] = json!(e);
    }
    if !report.sections.impression.is_empty() {
        r["conclusion"] = json!(report.sections.impression);
    }
    if let Some(pdf) = pdf {
        r["presentedForm"] = json!([{
            "contentType": "application/pdf",
            "data": STANDARD.encode(pdf),
            "title": format!("Imaging report {} v{}", report.report_id, report.version),
            "creation": issued,
        }]);
    }
    Ok(r)
}

/// The study date as a FHIR dateTime (date only: a DICOM study time has no zone, and FHIR
/// wants one with a time), if the study date is known.
fn effective(report: &Report) -> Option<String> {
    let d = &report.study.study_date;
    (d.len() == 8).then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}
