//! De-identification engine: DICOM PS3.15 Annex E, Basic Application Level Confidentiality
//! Profile and its options.
//!
//! * The rules come from data: Table E.1-1 (vendored JSON, `core/data/annex-e/`) plus an
//!   allow-list of attributes that keep an image usable (`core/data/safe-attributes.txt`).
//!   Both are parsed once and compiled, with the options of [`DeidConfig`], into one rule
//!   per tag ([`Engine::new`]). No tag of the profile is written in this code.
//! * Fail closed: an attribute that is in neither file is removed; private attributes are
//!   removed unless the Retain Safe Private option lists them; a value that cannot be
//!   decoded with its Specific Character Set, an unknown character set or an unreadable
//!   table is an error (the caller quarantines the instance).
//! * Rules apply to every sequence item at any depth.
//! * Keyed pseudonyms ([`pseudo`]): UIDs, Patient ID / Patient's Name and date offsets come
//!   from HMAC-SHA256 with the site secret: stable across instances and restarts.
//! * [`screen()`] decides whether pixel data may carry burned-in text.
//!
//! Interpretation of the compound actions (no IOD type knowledge is available here):
//!
//! | table | engine | why |
//! | --- | --- | --- |
//! | `Z/D` | D (dummy) | a non-empty dummy is valid whether the attribute is Type 1 or 2 |
//! | `X/Z`, `X/D`, `X/Z/D` | X (remove) | none of these rows is needed to display an image |
//! | `X/Z/U*` | keep the sequence, process its items | references (e.g. to the localizer) stay usable; the UIDs inside are `U` rows and are remapped |
//! | `D` on a sequence | one empty item | a dummy without the original content |
//! | `Z` on a sequence | no items | |
//! | `K`, `C` on a sequence | keep, process the items | |
//! | `C` on DA / DT | shift by the patient's offset | Modified Dates option |
//! | `C` on TM | keep | a time of day alone does not identify once the date moved |
//! | `C` on LO/SH/ST/LT/UT/UC | kept if every word is in `descriptor-vocabulary.txt` and no number looks like a date or an ID, else `"CLEANED"` | see [`descriptor`] |
//! | `C` on AE, CS, PN, UR | `"CLEANED"` | |
//! | `C` on binary (overlay/curve data) | remove | bitmaps cannot be cleaned |
//! | `C` on private | keep if listed in `safe_private`, else remove | |
//!
//! When two active options disagree on a row (the 11 device date/time rows: Retain Device
//! Identity says K, Modified Dates says C), the cleaning one wins.
//!
//! Other choices:
//!
//! * Pseudonymised attributes: Patient ID (`Z/D`) and Patient's Name (`Z`) get a keyed
//!   pseudonym (`patient_id_format`, `patient_name_format`, e.g. `ANON-{hash16}`), the same
//!   for every instance of a patient; both are added when absent (Type 2).
//! * UIDs (`U` rows, `D` on UI, File Meta Media Storage SOP Instance UID):
//!   `root "." decimal(u128)` where the u128 is 96 bits of HMAC-SHA256(secret, "uid:" +
//!   original) followed by a 32-bit keyed check of those bits (so that the engine recognises
//!   its own UIDs; see idempotence). UIDs under the DICOM root `1.2.840.10008.` (SOP classes,
//!   transfer syntaxes, coding schemes...) are never remapped; UID attributes of the safe
//!   list (SOP Class UID, Referenced SOP Class UID...) are kept.
//! * Dates (Modified Dates option): moved back by 1..=`date_shift_max_days` days, offset
//!   keyed on the original Patient ID; a DA/DT value that is not a full date is emptied.
//! * Dummy values (D): `ANONYMIZED` (text), `19000101` (DA), `000000` (TM), `0` (numbers),
//!   a remapped UID (UI), zeros (binary). Replacements are plain ASCII, valid in any
//!   character set.
//! * Marking: Patient Identity Removed `YES`, De-identification Method, De-identification
//!   Method Code Sequence (113100 + the code of each active option), Longitudinal Temporal
//!   Information Modified (`REMOVED`, `MODIFIED` or `UNMODIFIED`). File meta: source,
//!   sending and receiving AE titles and private information removed, Implementation Class
//!   UID / Version Name set to Mado's; dicom-object writes a zero preamble.
//! * Character sets ([`charset`]): every text value the engine reads, keeps or cleans (PN,
//!   LO, SH, ST, LT, UT, UC) is decoded with all the values of the Specific Character Set
//!   in force (the item's own, else its parent's), ISO 2022 escape sequences included;
//!   dicom-rs itself decodes with the first value only, so the engine recovers the bytes
//!   behind dicom-rs's strings and decodes those. Descriptor cleaning and the pseudonym key
//!   see the real characters; the vault receives them. Kept values are written back
//!   byte-exact (also when removed items would leave dicom-rs's writer in another codec
//!   state than its reader: the strings are rebuilt for the writer); replacements are
//!   encoded for the character sets in force (ASCII, valid in every one of them). A broken
//!   escape, a byte no active code element defines, an unknown term or a value dicom-rs
//!   could not decode (`\ooo` substitutes) is an error: quarantine.
//! * Performance: native little-endian Pixel Data read as 16-bit words is handed back as the
//!   same bytes in a byte vector, which dicom-rs writes in one call.
//!
//! Idempotence: a second pass of the same engine over its own output changes nothing.
//! Generated UIDs and patient tokens carry a keyed check value; values that verify are kept
//! as they are, and when the Patient ID is one of our pseudonyms the dates are not shifted
//! again. No unkeyed marker (such as Patient Identity Removed) is trusted: a sender could
//! forge it.

pub mod charset;
pub mod config;
pub mod descriptor;
mod engine;
pub mod pseudo;
pub mod screen;
pub mod table;

#[cfg(test)]
mod tests;

use dicom_core::Tag;

pub use config::{DeidConfig, SafePrivateTag};
pub use engine::{Engine, MAX_DEPTH};
pub use screen::{blank_rectangles, screen, PixelRule, Rect, Screening, ScreeningPolicy};

/// Implementation Class UID written into the file meta of every de-identified object.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.99650370924209809386148247740712995373";
/// Implementation Version Name written into the file meta.
pub const IMPLEMENTATION_VERSION_NAME: &str = "MADO_DEID_1";
/// De-identification Method (0012,0063) written into every de-identified object.
pub const DEIDENTIFICATION_METHOD: &str = "Mado PS3.15 Annex E (table 2024b) v1";

/// Why an instance could not be de-identified. Messages name tags, never values.
#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error("invalid de-identification config: {0}")]
    Config(String),
    #[error("de-identification profile data: {0}")]
    Table(String),
    #[error("unsupported Specific Character Set term {0:?}")]
    UnsupportedCharset(String),
    #[error("value of {0} cannot be decoded with the declared Specific Character Set")]
    Undecodable(Tag),
    #[error("replacement value of {0} cannot be encoded with the declared Specific Character Set")]
    Unencodable(Tag),
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("pixel data cannot be cleaned: {0}")]
    Pixel(String),
}

/// What one de-identification changed, and the originals for the on-prem vault.
///
/// `Debug` prints the pseudonyms only: the originals are PHI and must never be logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Values before de-identification (PHI: store only in the encrypted vault).
    pub original: Identifiers,
    /// The same attributes after de-identification (`None`: removed or empty).
    pub pseudonym: Identifiers,
    /// De-identified UIDs, for the object key and the registration message.
    pub series_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    /// The Patient ID was already one of this engine's pseudonyms (second pass).
    pub already_pseudonymized: bool,
    pub stats: Stats,
}

/// The identifiers the gateway keeps in its vault.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub accession_number: Option<String>,
    pub study_date: Option<String>,
    pub study_instance_uid: Option<String>,
}

/// Counts of what the engine did to data elements (all depths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub kept: u32,
    pub removed: u32,
    pub emptied: u32,
    pub replaced: u32,
    pub uids_remapped: u32,
    pub dates_shifted: u32,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("original", &"<redacted>")
            .field("pseudonym", &self.pseudonym)
            .field("series_uid", &self.series_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("sop_class_uid", &self.sop_class_uid)
            .field("already_pseudonymized", &self.already_pseudonymized)
            .field("stats", &self.stats)
            .finish()
    }
}

impl std::fmt::Debug for Identifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only pseudonyms are ever formatted through Report's Debug; still, print presence
        // rather than values so that a stray `{:?}` of originals cannot leak them.
        f.debug_struct("Identifiers")
            .field("patient_id", &self.patient_id.as_ref().map(|_| ".."))
            .field("patient_name", &self.patient_name.as_ref().map(|_| ".."))
            .field(
                "accession_number",
                &self.accession_number.as_ref().map(|_| ".."),
            )
            .field("study_date", &self.study_date.as_ref().map(|_| ".."))
            .field(
                "study_instance_uid",
                &self.study_instance_uid.as_ref().map(|_| ".."),
            )
            .finish()
    }
}

/// Result of [`Engine::process`].
#[derive(Debug)]
pub enum Outcome {
    /// De-identified in place; upload it.
    Deidentified(Box<Report>),
    /// Keep on-prem; the reason names no PHI.
    Quarantine(String),
}
