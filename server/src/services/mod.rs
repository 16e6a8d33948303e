//! Domain logic. Handlers call these; they never run SQL, touch the object
//! store or parse DICOM themselves.

pub mod auth;
pub mod cpu;
pub mod ingest;
pub mod render;
pub mod studies;
