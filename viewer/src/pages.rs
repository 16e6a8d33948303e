//! One askama struct per page. Fields are plain display strings and
//! numbers; the server builds them from its own data.

use crate::i18n::{Lang, Strings};
use askama::Template;

/// Top bar of a signed-in page: who is signed in and the sign-out form's
/// CSRF token.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub username: String,
    pub csrf_token: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub csrf_token: String,
    /// Prefilled username after a failed attempt.
    pub username: String,
    /// Generic error shown above the form.
    pub error: Option<&'static str>,
}

/// One worklist line.
#[derive(Debug, Clone)]
pub struct StudyRow {
    pub href: String,
    pub patient_name: String,
    pub patient_id: String,
    pub study_date: String,
    pub modalities: String,
    pub description: String,
    pub num_series: i64,
    pub num_instances: i64,
}

#[derive(Template)]
#[template(path = "worklist.html")]
pub struct WorklistPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub chrome: Chrome,
    pub studies: Vec<StudyRow>,
}

/// One image tile of a series.
#[derive(Debug, Clone)]
pub struct ImageView {
    pub src: String,
    pub alt: String,
    pub width: i64,
    pub height: i64,
    pub frames: i64,
}

#[derive(Debug, Clone)]
pub struct SeriesView {
    /// DOM id, unique within the page.
    pub anchor: String,
    pub number: String,
    pub modality: String,
    pub description: String,
    pub body_part: String,
    pub images: Vec<ImageView>,
}

#[derive(Template)]
#[template(path = "study.html")]
pub struct StudyPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub chrome: Chrome,
    pub patient_name: String,
    pub patient_id: String,
    pub study_date: String,
    pub study_time: String,
    pub accession: String,
    pub description: String,
    pub modalities: String,
    pub series: Vec<SeriesView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome() -> Chrome {
        Chrome {
            username: "admin".into(),
            csrf_token: "tok".into(),
        }
    }

    #[test]
    fn login_escapes_and_has_csrf() {
        let page = LoginPage {
            lang: Lang::En,
            s: Lang::En.strings(),
            csrf_token: "abc123".into(),
            username: "<script>".into(),
            error: Some(Lang::En.strings().login_failed),
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"<html lang="en">"#));
        assert!(html.contains(r#"name="csrf" value="abc123""#));
        assert!(!html.contains("<script>"));
        assert!(html.contains("Invalid username or password."));
    }

    #[test]
    fn worklist_lists_rows() {
        let page = WorklistPage {
            lang: Lang::Ja,
            s: Lang::Ja.strings(),
            chrome: chrome(),
            studies: vec![StudyRow {
                href: "/studies/1.2.3".into(),
                patient_name: "ANON 1".into(),
                patient_id: "P1".into(),
                study_date: "2024-01-05".into(),
                modalities: "CT".into(),
                description: "Head".into(),
                num_series: 2,
                num_instances: 30,
            }],
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"<html lang="ja">"#));
        assert!(html.contains(r#"href="/studies/1.2.3""#));
        assert!(html.contains("ANON 1"));
    }

    #[test]
    fn study_lists_images_lazily() {
        let page = StudyPage {
            lang: Lang::En,
            s: Lang::En.strings(),
            chrome: chrome(),
            patient_name: "ANON".into(),
            patient_id: "P".into(),
            study_date: "2024-01-05".into(),
            study_time: "".into(),
            accession: "".into(),
            description: "".into(),
            modalities: "CT".into(),
            series: vec![SeriesView {
                anchor: "s1".into(),
                number: "1".into(),
                modality: "CT".into(),
                description: "".into(),
                body_part: "".into(),
                images: vec![ImageView {
                    src: "/x/rendered.png?frame=0".into(),
                    alt: "1".into(),
                    width: 64,
                    height: 64,
                    frames: 1,
                }],
            }],
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"loading="lazy""#));
        assert!(html.contains("/x/rendered.png?frame=0"));
    }
}

/// Passcode form of a share link.
#[derive(Template)]
#[template(path = "share_passcode.html")]
pub struct SharePasscodePage {
    pub lang: Lang,
    pub s: &'static Strings,
    /// Form action (`/s/{token}`).
    pub action: String,
    pub csrf_token: String,
    pub error: Option<&'static str>,
}

/// One audit trail line.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub study: String,
    pub outcome: String,
    pub client: String,
}

/// The auditor's audit trail page.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub chrome: Chrome,
    /// `None` when the chain verified, else the first problem.
    pub problem: Option<String>,
    pub rows: Vec<AuditRow>,
}

/// Second sign-in step: the TOTP (or recovery) code.
#[derive(Template)]
#[template(path = "login_totp.html")]
pub struct TotpLoginPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub csrf_token: String,
    pub error: Option<&'static str>,
}

/// TOTP enrolment: QR code and confirmation form, or the recovery codes
/// once confirmed.
#[derive(Template)]
#[template(path = "totp_enrol.html")]
pub struct TotpEnrolPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub chrome: Chrome,
    /// `data:image/png;base64,…`; empty once enrolled.
    pub qr_data_url: String,
    pub secret: String,
    pub error: Option<&'static str>,
    /// Shown once after confirmation.
    pub recovery_codes: Vec<String>,
    pub enrolled: bool,
}
