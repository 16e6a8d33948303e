//! Mado's shared vocabulary: validated UID newtypes, the object-key scheme,
//! the wire types spoken between gateway and server, layered config loading
//! and small DICOM helpers.
//!
//! Architecture invariant: this crate performs no network I/O.

pub mod config;
pub mod deid;
pub mod guard;
pub mod keys;
pub mod uid;
pub mod wire;

pub use keys::ObjectKey;
pub use uid::{SeriesUid, SopInstanceUid, StudyUid, Uid, UidError};

/// Keep library errors from capturing backtraces, unless asked for with
/// `RUST_LIB_BACKTRACE=1`; `RUST_BACKTRACE` still applies to panics.
///
/// dicom-rs reports the end of every data set it reads as an error
/// (snafu), which captures a stack trace whenever `RUST_BACKTRACE=1` is
/// set: a stack walk per DIMSE command and per parsed instance, in a
/// process where that variable is commonly left on. Call first thing in
/// `main`, before any thread starts (it sets an environment variable).
pub fn no_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
