//! Configuration of the de-identification engine: the profile options of PS3.15 E.3 and
//! the pseudonym formats. Deserialised from the gateway's `[deid]` TOML section.

use serde::Deserialize;

use super::screen::ScreeningPolicy;
use super::table::OptionColumn;
use super::DeidError;

/// `[deid]` section. Every field has a default; unknown fields are rejected.
///
/// ```toml
/// [deid]
/// uid_root = "2.25"
/// patient_id_format = "ANON-{hash16}"
/// retain_long_modified_dates = true
/// clean_descriptors = true
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeidConfig {
    /// Root of the generated UIDs: `root + "." + decimal(u128)`. At most 24 characters.
    pub uid_root: String,
    /// Pseudonym of Patient ID (0010,0020); `{hashN}` (12 ≤ N ≤ 32) is replaced with N
    /// lower-case hex digits keyed on the original Patient ID.
    pub patient_id_format: String,
    /// Pseudonym of Patient's Name (0010,0010), same token as the Patient ID pseudonym.
    pub patient_name_format: String,
    /// Retain Longitudinal Temporal Information with Modified Dates: dates are moved back by
    /// 1..=this many days, the same offset for every instance of a patient.
    pub date_shift_max_days: u32,

    /// Retain Safe Private Option (113111): keep the private attributes of `safe_private`.
    pub retain_safe_private: bool,
    /// The private attributes that `retain_safe_private` keeps.
    pub safe_private: Vec<SafePrivateTag>,
    /// Retain UIDs Option (113110).
    pub retain_uids: bool,
    /// Retain Device Identity Option (113109).
    pub retain_device_identity: bool,
    /// Retain Institution Identity Option (113112).
    pub retain_institution_identity: bool,
    /// Retain Patient Characteristics Option (113108).
    pub retain_patient_characteristics: bool,
    /// Retain Longitudinal Temporal Information with Full Dates Option (113106).
    pub retain_long_full_dates: bool,
    /// Retain Longitudinal Temporal Information with Modified Dates Option (113107).
    pub retain_long_modified_dates: bool,
    /// Clean Descriptors Option (113105).
    pub clean_descriptors: bool,
    /// Clean Structured Content Option (113104).
    pub clean_structured_content: bool,
    /// Clean Graphics Option (113103).
    pub clean_graphics: bool,
    /// Clean Pixel Data Option (113101): blank the rectangles of matching pixel rules
    /// instead of quarantining instances that usually carry burned-in text.
    pub clean_pixel_data: bool,

    /// Burned-in PHI screening policy.
    pub screening: ScreeningPolicy,
}

impl Default for DeidConfig {
    fn default() -> Self {
        DeidConfig {
            uid_root: "2.25".to_owned(),
            patient_id_format: "ANON-{hash16}".to_owned(),
            patient_name_format: "ANON-{hash16}".to_owned(),
            date_shift_max_days: 365,
            retain_safe_private: false,
            safe_private: Vec::new(),
            retain_uids: false,
            retain_device_identity: false,
            retain_institution_identity: false,
            retain_patient_characteristics: false,
            retain_long_full_dates: false,
            retain_long_modified_dates: false,
            clean_descriptors: false,
            clean_structured_content: false,
            clean_graphics: false,
            clean_pixel_data: false,
            screening: ScreeningPolicy::default(),
        }
    }
}

/// One private attribute kept by the Retain Safe Private option: the element `element`
/// (low byte, 0x00-0xFF) of the block reserved by `creator` in odd group `group`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafePrivateTag {
    pub group: u16,
    pub creator: String,
    pub element: u8,
}

/// A profile option: its table column (if it has one), its CID 7050 code and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileOption {
    pub column: Option<OptionColumn>,
    pub code: &'static str,
    pub meaning: &'static str,
}

/// CID 7050 (De-identification Methods), in code order.
pub const BASIC_PROFILE_CODE: (&str, &str) =
    ("113100", "Basic Application Confidentiality Profile");

impl DeidConfig {
    /// The active options, each with its code for De-identification Method Code Sequence.
    pub fn active_options(&self) -> Vec<ProfileOption> {
        let all: [(bool, Option<OptionColumn>, &'static str, &'static str); 11] = [
            (
                self.clean_pixel_data,
                None,
                "113101",
                "Clean Pixel Data Option",
            ),
            (
                self.clean_graphics,
                Some(OptionColumn::CleanGraphics),
                "113103",
                "Clean Graphics Option",
            ),
            (
                self.clean_structured_content,
                Some(OptionColumn::CleanStructuredContent),
                "113104",
                "Clean Structured Content Option",
            ),
            (
                self.clean_descriptors,
                Some(OptionColumn::CleanDescriptors),
                "113105",
                "Clean Descriptors Option",
            ),
            (
                self.retain_long_full_dates,
                Some(OptionColumn::RetainLongFullDates),
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            (
                self.retain_long_modified_dates,
                Some(OptionColumn::RetainLongModifiedDates),
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            (
                self.retain_patient_characteristics,
                Some(OptionColumn::RetainPatientCharacteristics),
                "113108",
                "Retain Patient Characteristics Option",
            ),
            (
                self.retain_device_identity,
                Some(OptionColumn::RetainDeviceIdentity),
                "113109",
                "Retain Device Identity Option",
            ),
            (
                self.retain_uids,
                Some(OptionColumn::RetainUids),
                "113110",
                "Retain UIDs Option",
            ),
            (
                self.retain_safe_private,
                Some(OptionColumn::RetainSafePrivate),
                "113111",
                "Retain Safe Private Option",
            ),
            (
                self.retain_institution_identity,
                Some(OptionColumn::RetainInstitutionIdentity),
                "113112",
                "Retain Institution Identity Option",
            ),
        ];
        all.into_iter()
            .filter(|(on, ..)| *on)
            .map(|(_, column, code, meaning)| ProfileOption {
                column,
                code,
                meaning,
            })
            .collect()
    }

    /// Check the combination of options and the formats; one message per problem.
    pub fn validate(&self) -> Result<(), DeidError> {
        let err = |m: String| Err(DeidError::Config(m));
        if self.retain_long_full_dates && self.retain_long_modified_dates {
            return err(
                "retain_long_full_dates and retain_long_modified_dates exclude each other".into(),
            );
        }
        if crate::uid::validate_uid(&self.uid_root).is_err() || self.uid_root.len() > 24 {
            return err(format!(
                "uid_root {:?}: expected a UID of at most 24 characters (digits and dots)",
                self.uid_root
            ));
        }
        super::pseudo::PseudonymFormat::parse(&self.patient_id_format, false)
            .map_err(|m| DeidError::Config(format!("patient_id_format: {m}")))?;
        super::pseudo::PseudonymFormat::parse(&self.patient_name_format, true)
            .map_err(|m| DeidError::Config(format!("patient_name_format: {m}")))?;
        if self.date_shift_max_days == 0 || self.date_shift_max_days > 36_500 {
            return err("date_shift_max_days: expected 1..=36500".into());
        }
        for p in &self.safe_private {
            if p.group % 2 == 0 || p.group < 0x0009 || p.group == 0xFFFF {
                return err(format!(
                    "safe_private: group {:04X} is not a private group",
                    p.group
                ));
            }
            let c = p.creator.trim();
            if c.is_empty() || c.len() > 64 || c.contains('\\') {
                return err("safe_private: creator must be 1..=64 characters".into());
            }
        }
        self.screening.validate()
    }
}
