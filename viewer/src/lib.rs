//! Page view models and askama templates, plus the static assets the server
//! serves under `/static/`.
//!
//! Architecture invariant: no routing, no database, no access decisions.
//! Templates take plain strings and numbers prepared by the server; every
//! user-visible string lives in [`i18n`].

pub mod assets;
pub mod i18n;
pub mod pages;

pub use i18n::{Lang, Strings};
pub use pages::{
    AdminGrantRow, AdminOrgRow, AdminPage, AdminUserRow, AuditPage, AuditRow, Chrome, ImageView,
    LoginPage, SeriesView, ShareDialog, ShareLinkRow, SharePasscodePage, StudyPage, StudyRow,
    TotpEnrolPage, TotpLoginPage, WorklistPage,
};

/// Re-exported so the server can call `render()` without depending on askama.
pub use askama::Template;

/// Format a DICOM DA value (`YYYYMMDD`) as `YYYY-MM-DD`; anything else is
/// returned unchanged.
pub fn format_dicom_date(da: &str) -> String {
    let da = da.trim();
    if da.len() == 8 && da.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &da[0..4], &da[4..6], &da[6..8])
    } else {
        da.to_string()
    }
}

/// Format a DICOM TM value (`HHMMSS.FFFFFF`, components optional) as
/// `HH:MM[:SS]`; anything else is returned unchanged.
pub fn format_dicom_time(tm: &str) -> String {
    let tm = tm.trim();
    let main = tm.split('.').next().unwrap_or("");
    if !main.bytes().all(|b| b.is_ascii_digit()) {
        return tm.to_string();
    }
    match main.len() {
        4 => format!("{}:{}", &main[0..2], &main[2..4]),
        6 => format!("{}:{}:{}", &main[0..2], &main[2..4], &main[4..6]),
        _ => tm.to_string(),
    }
}

/// Display form of a DICOM PN value: component groups after `=` dropped,
/// `^` separators turned into spaces.
pub fn format_person_name(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or("");
    alphabetic
        .split('^')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_dicom_date("20240105"), "2024-01-05");
        assert_eq!(format_dicom_date(""), "");
        assert_eq!(format_dicom_date("2024"), "2024");
        assert_eq!(format_dicom_time("101530.123"), "10:15:30");
        assert_eq!(format_dicom_time("1015"), "10:15");
        assert_eq!(format_person_name("DOE^JOHN^^^"), "DOE JOHN");
        assert_eq!(format_person_name("Yamada^Taro=山田^太郎"), "Yamada Taro");
    }
}
