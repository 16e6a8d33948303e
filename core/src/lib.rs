//! Mado's shared vocabulary: validated UID newtypes, the object-key scheme,
//! the wire types spoken between gateway and server, layered config loading
//! and small DICOM helpers.
//!
//! Architecture invariant: this crate performs no network I/O.

pub mod config;
pub mod deid;
pub mod keys;
pub mod uid;
pub mod wire;

pub use keys::ObjectKey;
pub use uid::{SeriesUid, SopInstanceUid, StudyUid, Uid, UidError};
