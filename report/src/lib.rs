//! Report formats for remote reading: the report model, its PDF, DICOM SR and Encapsulated
//! PDF objects, FHIR R4 DiagnosticReport, HL7 v2 ORU^R01 with MLLP, and report templates.
//! Pure functions: no network, no database (the MLLP helpers work on any `Read + Write`).

pub mod dicom;
pub mod fhir;
pub mod hl7;
pub mod model;
pub mod pdf;
pub mod templates;
mod uid;

pub use model::{
    Author, ImageRef, KeyImage, Measurement, MeasurementKind, Report, ReportError, ReportStatus,
    Sections, StudyContext,
};
