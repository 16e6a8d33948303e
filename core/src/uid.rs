//! DICOM UID newtypes (PS3.5 §9.1): at most 64 characters, components of
//! digits separated by dots, no empty component, no leading zero in a
//! multi-digit component. Trailing NUL / space padding is stripped on parse.
//! Once parsed, the type is the proof: it is safe to put into a path or an
//! object key.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is longer than 64 characters")]
    TooLong,
    #[error("UID contains a character other than digits and '.'")]
    BadChar,
    #[error("UID has an empty component")]
    EmptyComponent,
    #[error("UID component has a leading zero")]
    LeadingZero,
}

/// Validate a UID string (after stripping trailing NUL and spaces).
pub fn validate_uid(raw: &str) -> Result<&str, UidError> {
    let s = raw.trim_end_matches(['\0', ' ']);
    if s.is_empty() {
        return Err(UidError::Empty);
    }
    if s.len() > 64 {
        return Err(UidError::TooLong);
    }
    if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(UidError::BadChar);
    }
    for comp in s.split('.') {
        if comp.is_empty() {
            return Err(UidError::EmptyComponent);
        }
        if comp.len() > 1 && comp.starts_with('0') {
            return Err(UidError::LeadingZero);
        }
    }
    Ok(s)
}

macro_rules! uid_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, UidError> {
                validate_uid(raw).map(|s| Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }
        impl FromStr for $name {
            type Err = UidError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

uid_type!(
    /// Any DICOM UID.
    Uid
);
uid_type!(
    /// Study Instance UID (0020,000D).
    StudyUid
);
uid_type!(
    /// Series Instance UID (0020,000E).
    SeriesUid
);
uid_type!(
    /// SOP Instance UID (0008,0018).
    SopInstanceUid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_strips_padding() {
        assert_eq!(
            StudyUid::parse("1.2.840.10008\0").unwrap().as_str(),
            "1.2.840.10008"
        );
        assert_eq!(Uid::parse("2.25.0").unwrap().as_str(), "2.25.0");
    }

    #[test]
    fn rejects_bad() {
        assert_eq!(Uid::parse(""), Err(UidError::Empty));
        assert_eq!(Uid::parse("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(Uid::parse("1.02"), Err(UidError::LeadingZero));
        assert_eq!(Uid::parse("1.2/../3"), Err(UidError::BadChar));
        assert_eq!(Uid::parse(&"1".repeat(65)), Err(UidError::TooLong));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any string: no panic; what is accepted is safe in a path or key.
        #[test]
        fn accepted_uids_are_path_safe(s in "\\PC{0,80}") {
            if let Ok(u) = Uid::parse(&s) {
                let v = u.as_str();
                prop_assert!(!v.is_empty() && v.len() <= 64);
                prop_assert!(v.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert!(!v.contains("..") && !v.starts_with('.') && !v.ends_with('.'));
                // parsing what was accepted gives the same UID (idempotent)
                prop_assert_eq!(&Uid::parse(v).unwrap(), &u);
                prop_assert_eq!(u.to_string(), v);
            }
        }

        /// Well-formed components round-trip (padding stripped); over 64
        /// characters is TooLong.
        #[test]
        fn components_round_trip(
            comps in prop::collection::vec(0u64..10_000_000_000, 1..12),
            pad in prop::sample::select(vec!["", "\0", " ", "\0\0", " \0"]),
        ) {
            let s = comps.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            let r = SopInstanceUid::parse(&format!("{s}{pad}"));
            if s.len() <= 64 {
                prop_assert_eq!(r.unwrap().into_string(), s.clone());
                let json = serde_json::to_string(&StudyUid::parse(&s).unwrap()).unwrap();
                prop_assert_eq!(serde_json::from_str::<StudyUid>(&json).unwrap().into_string(), s);
            } else {
                prop_assert_eq!(r, Err(UidError::TooLong));
            }
        }

        /// A path separator, letter, NUL or other character inside is refused.
        #[test]
        fn foreign_characters_are_refused(
            a in "[1-9][0-9]{0,5}",
            bad in prop::sample::select(vec!['/', '\\', '\0', 'a', 'Z', '%', ':', '-', '+', ' ', '\u{e9}']),
            b in "[1-9][0-9]{0,5}",
        ) {
            let s = format!("{a}.{bad}{b}");
            prop_assert!(Uid::parse(&s).is_err(), "{:?}", s);
            prop_assert!(serde_json::from_value::<Uid>(serde_json::Value::String(s)).is_err());
        }
    }
}
