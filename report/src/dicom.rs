//! DICOM objects of a report version, built with dicom-object (no hand-written encoding):
//!
//! - a **Comprehensive SR** (1.2.840.10008.5.1.4.1.1.88.33) following TID 2000 "Basic
//!   Diagnostic Imaging Report": observer context (TID 1002), Findings / Impressions /
//!   Recommendations sections (CID 7001 headings, CID 7002 TEXT items), key images as IMAGE
//!   items, and an "Imaging Measurements" container whose Measurement Groups follow TID 1501
//!   (tracking identifier + UID, NUM with UCUM units → INFERRED FROM SCOORD → SELECTED FROM
//!   IMAGE);
//! - the same measurement groups as a **TID 1500 Imaging Measurement Report** of their own
//!   (OHIF loads only TID 1500 SRs and draws their SCOORDs on the images);
//! - an **Encapsulated PDF** (1.2.840.10008.5.1.4.1.1.104.1) holding the rendered PDF.
//!
//! Each gets its own new series in the report's study; Series and SOP Instance UIDs are
//! `2.25` UIDs derived from report id + version, so a re-send writes the same instances.
//! Patient and study attributes are copied from the report's [`StudyContext`]. Text is
//! UTF-8 (Specific Character Set `ISO_IR 192`).
//!
//! [`StudyContext`]: crate::model::StudyContext

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::model::{ImageRef, Measurement, MeasurementKind, Report, ReportStatus};
use crate::uid::derived;

pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Mado's implementation class UID (a fixed 2.25 UID).
const IMPLEMENTATION_CLASS_UID: &str = "2.25.164375934846390471366046187372352262465";
/// Largest PDF encapsulated.
pub const MAX_PDF_BYTES: usize = 32 * 1024 * 1024;
/// Series numbers of the report series (high, to sort after the images).
pub const SR_SERIES_NUMBER: i32 = 9901;
pub const PDF_SERIES_NUMBER: i32 = 9902;
pub const MEASUREMENT_SERIES_NUMBER: i32 = 9903;

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error(transparent)]
    Report(#[from] crate::model::ReportError),
    #[error("PDF larger than {MAX_PDF_BYTES} bytes")]
    PdfTooLarge,
    #[error("DICOM encoding: {0}")]
    Encode(String),
}

/// Series and SOP Instance UID of the SR of a report version.
pub fn sr_uids(report_id: &str, version: u32) -> (String, String) {
    (
        derived(report_id, version, "sr-series"),
        derived(report_id, version, "sr-instance"),
    )
}

/// Series and SOP Instance UID of the TID 1500 measurement report of a report version.
pub fn measurement_report_uids(report_id: &str, version: u32) -> (String, String) {
    (
        derived(report_id, version, "measurements-series"),
        derived(report_id, version, "measurements-instance"),
    )
}

/// Series and SOP Instance UID of the Encapsulated PDF of a report version.
pub fn pdf_uids(report_id: &str, version: u32) -> (String, String) {
    (
        derived(report_id, version, "pdf-series"),
        derived(report_id, version, "pdf-instance"),
    )
}

fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, value),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

type Code = (&'static str, &'static str, &'static str);

const REPORT_TITLE: Code = ("18748-4", "LN", "Diagnostic Imaging Report");
const OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type");
const PERSON: Code = ("121006", "DCM", "Person");
const OBSERVER_NAME: Code = ("121008", "DCM", "Person Observer Name");
const OBSERVER_ORG: Code = ("121009", "DCM", "Person Observer's Organization Name");
const PROCEDURE_STUDY_UID: Code = ("121018", "DCM", "Procedure Study Instance UID");
const FINDINGS: Code = ("121070", "DCM", "Findings");
const FINDING: Code = ("121071", "DCM", "Finding");
const IMPRESSIONS: Code = ("121072", "DCM", "Impressions");
const IMPRESSION: Code = ("121073", "DCM", "Impression");
const RECOMMENDATIONS: Code = ("121074", "DCM", "Recommendations");
const RECOMMENDATION: Code = ("121075", "DCM", "Recommendation");
const ADDENDUM: Code = ("121078", "DCM", "Addendum");
const COMMENT: Code = ("121106", "DCM", "Comment");
const KEY_IMAGES: Code = ("121180", "DCM", "Key Images");
const BEST_ILLUSTRATION: Code = ("121080", "DCM", "Best illustration of finding");
const MEASUREMENT_REPORT: Code = ("126000", "DCM", "Imaging Measurement Report");
const LANGUAGE: Code = ("121049", "DCM", "Language of Content Item and Descendants");
const PROCEDURE_REPORTED: Code = ("121058", "DCM", "Procedure reported");
const IMAGING_PROCEDURE: Code = ("363679005", "SCT", "Imaging procedure");
const IMAGE_LIBRARY: Code = ("111028", "DCM", "Image Library");
const IMAGE_LIBRARY_GROUP: Code = ("126200", "DCM", "Image Library Group");
const IMAGING_MEASUREMENTS: Code = ("126010", "DCM", "Imaging Measurements");
const MEASUREMENT_GROUP: Code = ("125007", "DCM", "Measurement Group");
const TRACKING_ID: Code = ("112039", "DCM", "Tracking Identifier");
const TRACKING_UID: Code = ("112040", "DCM", "Tracking Unique Identifier");
const LENGTH: Code = ("410668003", "SCT", "Length");
const ANGLE: Code = ("121207", "DCM", "Angle");
const AREA: Code = ("42798000", "SCT", "Area");
const MEAN: Code = ("373098007", "SCT", "Mean");
const SD: Code = ("386136009", "SCT", "Standard Deviation");
const MIN: Code = ("255605001", "SCT", "Minimum");
const MAX: Code = ("56851009", "SCT", "Maximum");

fn code_of(c: Code) -> InMemDicomObject {
    code(c.0, c.1, c.2)
}

/// One content item: relationship (none for the root), value type, concept name.
fn item(rel: &str, vt: &str, concept: Option<Code>) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(el(tags::RELATIONSHIP_TYPE, VR::CS, rel));
    o.put(el(tags::VALUE_TYPE, VR::CS, vt));
    if let Some(c) = concept {
        o.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_of(c)]));
    }
    o
}

fn container(rel: &str, concept: Code, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut o = item(rel, "CONTAINER", Some(concept));
    o.put(el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    o.put(seq(tags::CONTENT_SEQUENCE, children));
    o
}

fn text(rel: &str, concept: Code, value: &str) -> InMemDicomObject {
    let mut o = item(rel, "TEXT", Some(concept));
    o.put(el(tags::TEXT_VALUE, VR::UT, value));
    o
}

fn image(rel: &str, concept: Option<Code>, r: &ImageRef) -> InMemDicomObject {
    let mut o = item(rel, "IMAGE", concept);
    o.put(seq(tags::REFERENCED_SOP_SEQUENCE, vec![sop_ref(r)]));
    o
}

fn sop_ref(r: &ImageRef) -> InMemDicomObject {
    let mut o = InMemDicomObject::from_element_iter([
        el(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            r.sop_class_uid.as_str(),
        ),
        el(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            r.sop_instance_uid.as_str(),
        ),
    ]);
    if let Some(f) = r.frame {
        o.put(el(tags::REFERENCED_FRAME_NUMBER, VR::IS, f.to_string()));
    }
    o
}

/// A DS value (≤ 16 characters).
fn ds(v: f64) -> String {
    for p in (0..=6).rev() {
        let s = format!("{v:.p$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    format!("{v:.6e}")
}

fn ucum_meaning(unit: &str) -> &str {
    match unit {
        "mm" => "millimeter",
        "mm2" => "square millimeter",
        "deg" => "degree",
        "[hnsf'U]" => "Hounsfield unit",
        "1" => "no units",
        other => other,
    }
}

fn num(concept: Code, value: f64, unit: &str, scoord: &InMemDicomObject) -> InMemDicomObject {
    let mut o = item("CONTAINS", "NUM", Some(concept));
    let units = code(unit, "UCUM", ucum_meaning(unit));
    let mv = InMemDicomObject::from_element_iter([
        seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![units]),
        el(tags::NUMERIC_VALUE, VR::DS, ds(value)),
    ]);
    o.put(seq(tags::MEASURED_VALUE_SEQUENCE, vec![mv]));
    o.put(seq(tags::CONTENT_SEQUENCE, vec![scoord.clone()]));
    o
}

fn measurement_group(report: &Report, i: usize, m: &Measurement) -> InMemDicomObject {
    let graphic_type = match m.value {
        MeasurementKind::EllipseRoi { .. } => "ELLIPSE",
        _ => "POLYLINE",
    };
    let coords: Vec<f32> = m.points.iter().flatten().copied().collect();
    let mut scoord = item("INFERRED FROM", "SCOORD", None);
    scoord.put(el(tags::GRAPHIC_TYPE, VR::CS, graphic_type));
    scoord.put(DataElement::new(
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32(coords.into()),
    ));
    scoord.put(seq(
        tags::CONTENT_SEQUENCE,
        vec![image("SELECTED FROM", None, &m.image)],
    ));
    let mut children = vec![text("HAS OBS CONTEXT", TRACKING_ID, &m.label), {
        let mut o = item("HAS OBS CONTEXT", "UIDREF", Some(TRACKING_UID));
        let uid = derived(&report.report_id, report.version, &format!("tracking-{i}"));
        o.put(el(tags::UID, VR::UI, uid));
        o
    }];
    if m.uncalibrated {
        children.push(text(
            "CONTAINS",
            COMMENT,
            "Uncalibrated measurement: pixel spacing not calibrated to the patient",
        ));
    }
    match &m.value {
        MeasurementKind::Length { mm } => children.push(num(LENGTH, *mm, "mm", &scoord)),
        MeasurementKind::Angle { deg } => children.push(num(ANGLE, *deg, "deg", &scoord)),
        MeasurementKind::EllipseRoi {
            area_mm2,
            mean,
            sd,
            min,
            max,
            unit,
        } => {
            children.push(num(AREA, *area_mm2, "mm2", &scoord));
            children.push(num(MEAN, *mean, unit, &scoord));
            children.push(num(SD, *sd, unit, &scoord));
            children.push(num(MIN, *min, unit, &scoord));
            children.push(num(MAX, *max, unit, &scoord));
        }
    }
    container("CONTAINS", MEASUREMENT_GROUP, children)
}

/// Hierarchical SOP reference (study → series → instances), for the evidence and
/// predecessor sequences.
fn hierarchical(study_uid: &str, refs: &[(String, String, String)]) -> InMemDicomObject {
    let mut series: Vec<(&str, Vec<InMemDicomObject>)> = Vec::new();
    for (series_uid, class, inst) in refs {
        let r = InMemDicomObject::from_element_iter([
            el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class.as_str()),
            el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, inst.as_str()),
        ]);
        match series.iter_mut().find(|(s, _)| s == series_uid) {
            Some((_, v)) => {
                if !v.iter().any(|o| {
                    o.element(tags::REFERENCED_SOP_INSTANCE_UID)
                        .ok()
                        .and_then(|e| e.to_str().ok())
                        .is_some_and(|s| s.trim_end_matches('\0') == inst)
                }) {
                    v.push(r)
                }
            }
            None => series.push((series_uid, vec![r])),
        }
    }
    let series_items = series
        .into_iter()
        .map(|(s, sops)| {
            InMemDicomObject::from_element_iter([
                el(tags::SERIES_INSTANCE_UID, VR::UI, s),
                seq(tags::REFERENCED_SOP_SEQUENCE, sops),
            ])
        })
        .collect();
    InMemDicomObject::from_element_iter([
        el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        seq(tags::REFERENCED_SERIES_SEQUENCE, series_items),
    ])
}

/// Patient, general study, SOP common and equipment attributes shared by both objects.
fn common(report: &Report, sop_class: &str, series_uid: &str, sop_uid: &str) -> InMemDicomObject {
    let s = &report.study;
    let t = &report.signed_at;
    InMemDicomObject::from_element_iter([
        el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        el(tags::SOP_CLASS_UID, VR::UI, sop_class),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        el(
            tags::INSTANCE_CREATION_DATE,
            VR::DA,
            t.format("%Y%m%d").to_string(),
        ),
        el(
            tags::INSTANCE_CREATION_TIME,
            VR::TM,
            t.format("%H%M%S").to_string(),
        ),
        el(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        el(tags::STUDY_DATE, VR::DA, s.study_date.as_str()),
        el(tags::STUDY_TIME, VR::TM, s.study_time.as_str()),
        el(tags::CONTENT_DATE, VR::DA, t.format("%Y%m%d").to_string()),
        el(tags::CONTENT_TIME, VR::TM, t.format("%H%M%S").to_string()),
        el(tags::ACCESSION_NUMBER, VR::SH, s.accession_number.as_str()),
        el(tags::MANUFACTURER, VR::LO, "Mado"),
        el(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            s.referring_physician_name.as_str(),
        ),
        el(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            s.study_description.as_str(),
        ),
        el(tags::PATIENT_NAME, VR::PN, s.patient_name.as_str()),
        el(tags::PATIENT_ID, VR::LO, s.patient_id.as_str()),
        el(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            s.patient_birth_date.as_str(),
        ),
        el(tags::PATIENT_SEX, VR::CS, s.patient_sex.as_str()),
        el(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            s.study_instance_uid.as_str(),
        ),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        el(tags::STUDY_ID, VR::SH, s.study_id.as_str()),
        el(tags::INSTANCE_NUMBER, VR::IS, report.version.to_string()),
    ])
}

/// Which SR document of a report version.
#[derive(Clone, Copy)]
enum SrKind {
    /// TID 2000, the report.
    Report,
    /// TID 1500, the measurements (what OHIF displays).
    Measurements,
}

impl SrKind {
    fn uids(self, report_id: &str, version: u32) -> (String, String) {
        match self {
            SrKind::Report => sr_uids(report_id, version),
            SrKind::Measurements => measurement_report_uids(report_id, version),
        }
    }
}

/// Patient, study, series, SR Document General and evidence of an SR document.
fn sr_header(report: &Report, kind: SrKind) -> InMemDicomObject {
    let (series_uid, sop_uid) = kind.uids(&report.report_id, report.version);
    let mut o = common(report, COMPREHENSIVE_SR, &series_uid, &sop_uid);
    o.put(el(tags::MODALITY, VR::CS, "SR"));
    let (number, description) = match kind {
        SrKind::Report => (SR_SERIES_NUMBER, "Imaging report (SR)"),
        SrKind::Measurements => (
            MEASUREMENT_SERIES_NUMBER,
            "Imaging report measurements (SR)",
        ),
    };
    o.put(el(tags::SERIES_NUMBER, VR::IS, number.to_string()));
    o.put(el(tags::SERIES_DESCRIPTION, VR::LO, description));
    o.put(seq(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    ));

    // SR Document General
    let signed = report.status.is_signed();
    o.put(el(
        tags::COMPLETION_FLAG,
        VR::CS,
        if signed { "COMPLETE" } else { "PARTIAL" },
    ));
    o.put(el(
        tags::VERIFICATION_FLAG,
        VR::CS,
        if signed { "VERIFIED" } else { "UNVERIFIED" },
    ));
    o.put(el(
        tags::PRELIMINARY_FLAG,
        VR::CS,
        if signed { "FINAL" } else { "PRELIMINARY" },
    ));
    if signed {
        let observer = InMemDicomObject::from_element_iter([
            el(
                tags::VERIFYING_OBSERVER_NAME,
                VR::PN,
                report.author.name.as_str(),
            ),
            seq(
                tags::VERIFYING_OBSERVER_IDENTIFICATION_CODE_SEQUENCE,
                vec![],
            ),
            el(
                tags::VERIFYING_ORGANIZATION,
                VR::LO,
                report.author.organisation.as_str(),
            ),
            el(
                tags::VERIFICATION_DATE_TIME,
                VR::DT,
                report.signed_at.format("%Y%m%d%H%M%S+0000").to_string(),
            ),
        ]);
        o.put(seq(tags::VERIFYING_OBSERVER_SEQUENCE, vec![observer]));
    }
    if report.status == ReportStatus::Amended {
        let (ps, pi) = kind.uids(&report.report_id, report.version - 1);
        o.put(seq(
            tags::PREDECESSOR_DOCUMENTS_SEQUENCE,
            vec![hierarchical(
                &report.study.study_instance_uid,
                &[(ps, COMPREHENSIVE_SR.to_owned(), pi)],
            )],
        ));
    }
    o.put(seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]));
    let evidence: Vec<(String, String, String)> = report
        .key_images
        .iter()
        .map(|k| &k.image)
        .chain(report.measurements.iter().map(|m| &m.image))
        .map(|r| {
            (
                r.series_instance_uid.clone(),
                r.sop_class_uid.clone(),
                r.sop_instance_uid.clone(),
            )
        })
        .collect();
    if !evidence.is_empty() {
        o.put(seq(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![hierarchical(&report.study.study_instance_uid, &evidence)],
        ));
    }
    o
}

/// The observer context (TID 1002) and procedure study UID, first children of both roots.
fn observer_context(report: &Report) -> Vec<InMemDicomObject> {
    let mut root = Vec::new();
    let mut c = item("HAS OBS CONTEXT", "CODE", Some(OBSERVER_TYPE));
    c.put(seq(tags::CONCEPT_CODE_SEQUENCE, vec![code_of(PERSON)]));
    root.push(c);
    let mut p = item("HAS OBS CONTEXT", "PNAME", Some(OBSERVER_NAME));
    p.put(el(tags::PERSON_NAME, VR::PN, report.author.name.as_str()));
    root.push(p);
    if !report.author.organisation.is_empty() {
        root.push(text(
            "HAS OBS CONTEXT",
            OBSERVER_ORG,
            &report.author.organisation,
        ));
    }
    let mut u = item("HAS OBS CONTEXT", "UIDREF", Some(PROCEDURE_STUDY_UID));
    u.put(el(
        tags::UID,
        VR::UI,
        report.study.study_instance_uid.as_str(),
    ));
    root.push(u);
    root
}

fn root_container(o: &mut InMemDicomObject, title: Code, template: &str) {
    o.put(el(tags::VALUE_TYPE, VR::CS, "CONTAINER"));
    o.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_of(title)]));
    o.put(el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    o.put(seq(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            el(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            el(tags::TEMPLATE_IDENTIFIER, VR::CS, template),
        ])],
    ));
}

fn measurements_container(report: &Report) -> InMemDicomObject {
    let groups = report
        .measurements
        .iter()
        .enumerate()
        .map(|(i, m)| measurement_group(report, i, m))
        .collect();
    container("CONTAINS", IMAGING_MEASUREMENTS, groups)
}

/// The Comprehensive SR (TID 2000) of a report version; the report is validated first.
pub fn sr(report: &Report) -> Result<InMemDicomObject, DicomError> {
    report.validate()?;
    let mut o = sr_header(report, SrKind::Report);
    // SR Document Content: the root container (TID 2000)
    root_container(&mut o, REPORT_TITLE, "2000");
    let mut root = observer_context(report);
    if let Some(reason) = &report.amendment_reason {
        root.push(container(
            "CONTAINS",
            ADDENDUM,
            vec![text(
                "CONTAINS",
                COMMENT,
                &format!("Reason for amendment: {reason}"),
            )],
        ));
    }
    for (heading, concept, value) in [
        (FINDINGS, FINDING, &report.sections.findings),
        (IMPRESSIONS, IMPRESSION, &report.sections.impression),
        (
            RECOMMENDATIONS,
            RECOMMENDATION,
            &report.sections.recommendation,
        ),
    ] {
        if value.trim().is_empty() {
            continue;
        }
        root.push(container(
            "CONTAINS",
            heading,
            vec![text("CONTAINS", concept, value)],
        ));
    }
    if !report.key_images.is_empty() {
        let images = report
            .key_images
            .iter()
            .map(|k| image("CONTAINS", Some(BEST_ILLUSTRATION), &k.image))
            .collect();
        root.push(container("CONTAINS", KEY_IMAGES, images));
    }
    if !report.measurements.is_empty() {
        root.push(measurements_container(report));
    }
    o.put(seq(tags::CONTENT_SEQUENCE, root));
    Ok(o)
}

/// The measurements of a report version as a TID 1500 Imaging Measurement Report (a
/// Comprehensive SR of its own series): the SR form OHIF loads and draws on the images.
/// `None` when the report has no measurements.
pub fn measurement_report(report: &Report) -> Result<Option<InMemDicomObject>, DicomError> {
    report.validate()?;
    if report.measurements.is_empty() {
        return Ok(None);
    }
    let mut o = sr_header(report, SrKind::Measurements);
    root_container(&mut o, MEASUREMENT_REPORT, "1500");
    let mut root = Vec::new();
    let ascii = report.measurements.iter().all(|m| m.label.is_ascii());
    let mut lang = item("HAS CONCEPT MOD", "CODE", Some(LANGUAGE));
    lang.put(seq(
        tags::CONCEPT_CODE_SEQUENCE,
        vec![if ascii {
            code("en", "RFC5646", "English")
        } else {
            code("ja", "RFC5646", "Japanese")
        }],
    ));
    root.push(lang);
    root.extend(observer_context(report));
    let mut procedure = item("HAS CONCEPT MOD", "CODE", Some(PROCEDURE_REPORTED));
    procedure.put(seq(
        tags::CONCEPT_CODE_SEQUENCE,
        vec![code_of(IMAGING_PROCEDURE)],
    ));
    root.push(procedure);
    let mut seen: Vec<&ImageRef> = Vec::new();
    for m in &report.measurements {
        if !seen.contains(&&m.image) {
            seen.push(&m.image);
        }
    }
    let images = seen
        .into_iter()
        .map(|r| image("CONTAINS", None, r))
        .collect();
    root.push(container(
        "CONTAINS",
        IMAGE_LIBRARY,
        vec![container("CONTAINS", IMAGE_LIBRARY_GROUP, images)],
    ));
    root.push(measurements_container(report));
    o.put(seq(tags::CONTENT_SEQUENCE, root));
    Ok(Some(o))
}

/// The Encapsulated PDF instance of a report version.
pub fn encapsulated_pdf(report: &Report, pdf: &[u8]) -> Result<InMemDicomObject, DicomError> {
    report.validate()?;
    if pdf.len() > MAX_PDF_BYTES {
        return Err(DicomError::PdfTooLarge);
    }
    let (series_uid, sop_uid) = pdf_uids(&report.report_id, report.version);
    let mut o = common(report, ENCAPSULATED_PDF, &series_uid, &sop_uid);
    o.put(el(tags::MODALITY, VR::CS, "DOC"));
    o.put(el(
        tags::SERIES_NUMBER,
        VR::IS,
        PDF_SERIES_NUMBER.to_string(),
    ));
    o.put(el(tags::SERIES_DESCRIPTION, VR::LO, "Imaging report (PDF)"));
    o.put(el(tags::CONVERSION_TYPE, VR::CS, "WSD"));
    o.put(el(tags::ACQUISITION_DATE_TIME, VR::DT, ""));
    o.put(el(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
    o.put(el(
        tags::DOCUMENT_TITLE,
        VR::ST,
        format!("Imaging report v{}", report.version),
    ));
    o.put(seq(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_of(REPORT_TITLE)],
    ));
    o.put(el(
        tags::VERIFICATION_FLAG,
        VR::CS,
        if report.status.is_signed() {
            "VERIFIED"
        } else {
            "UNVERIFIED"
        },
    ));
    o.put(el(
        tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT,
        VR::LO,
        "application/pdf",
    ));
    let len = u32::try_from(pdf.len()).map_err(|_| DicomError::PdfTooLarge)?;
    o.put(el(tags::ENCAPSULATED_DOCUMENT_LENGTH, VR::UL, len));
    let mut bytes = pdf.to_vec();
    if bytes.len() % 2 == 1 {
        // OB values have even length; the pad byte follows %%EOF, the length above is exact
        bytes.push(0);
    }
    o.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::from(bytes),
    ));
    Ok(o)
}

/// A DICOM Part 10 file (Explicit VR Little Endian) of an object built here.
pub fn to_part10(obj: InMemDicomObject) -> Result<Vec<u8>, DicomError> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name("MADO_REPORT"),
        )
        .map_err(|e| DicomError::Encode(e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| DicomError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ds_fits_16_characters() {
        for v in [
            0.0,
            -0.0,
            12.5,
            1e9,
            -123456.789012345,
            1.0 / 3.0,
            999999999.999,
        ] {
            let s = super::ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().expect("number");
            assert!((back - v).abs() <= v.abs() * 1e-6 + 1e-6, "{v} → {s}");
        }
    }
}
