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
    /// Show the "Sign in with SSO" button (OIDC configured).
    pub sso: bool,
    /// Local path to return to after signing in (validated by the server);
    /// empty for the worklist.
    pub next: String,
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
    /// The share dialog, for users allowed to share this study.
    pub share: Option<ShareDialog>,
}

/// The study page's share dialog: the create form (posted by
/// `static/forms.js` to the share endpoint) and this study's links.
#[derive(Debug, Clone)]
pub struct ShareDialog {
    /// `POST` target creating a link (`/studies/{uid}/shares`).
    pub create_action: String,
    pub csrf_token: String,
    /// Longest lifetime offered, in days.
    pub max_days: u32,
    pub links: Vec<ShareLinkRow>,
}

/// One existing link of the study (never its token: that is shown once).
#[derive(Debug, Clone)]
pub struct ShareLinkRow {
    pub id: i64,
    pub created_at: String,
    pub expires_at: String,
    /// `3` or `3 / 10`.
    pub uses: String,
    pub passcode: bool,
    pub pixels_only: bool,
    /// Localised state (active, revoked, expired, used up).
    pub status: &'static str,
    /// `POST` target revoking it, while it is live.
    pub revoke_action: Option<String>,
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
            sso: true,
            next: "/studies/1.2?a=1&b=2".into(),
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"href="/auth/oidc/login""#));
        assert!(
            html.contains(r#"name="next" value="/studies/1.2?a=1&#38;b=2""#),
            "{html}"
        );
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
            share: Some(ShareDialog {
                create_action: "/studies/1.2/shares".into(),
                csrf_token: "tok".into(),
                max_days: 30,
                links: vec![ShareLinkRow {
                    id: 7,
                    created_at: "2026-11-23 10:00".into(),
                    expires_at: "2026-11-26 10:00".into(),
                    uses: "1 / 5".into(),
                    passcode: true,
                    pixels_only: true,
                    status: Lang::En.strings().share_status_active,
                    revoke_action: Some("/studies/1.2/shares/7/revoke".into()),
                }],
            }),
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"loading="lazy""#));
        assert!(html.contains("/x/rendered.png?frame=0"));
        assert!(html.contains(r#"action="/studies/1.2/shares""#));
        assert!(html.contains(r#"action="/studies/1.2/shares/7/revoke""#));
        assert!(html.contains(r#"src="/static/forms.js""#));
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
    /// The signed-in top bar; `None` during sign-in (enrolment required
    /// before the session exists).
    pub chrome: Option<Chrome>,
    /// Form action: `/account/totp` (signed in) or `/login/totp/enrol`.
    pub action: String,
    pub csrf_token: String,
    /// After enrolment during sign-in: where "Continue" leads.
    pub continue_href: Option<String>,
    /// `data:image/png;base64,…`; empty once enrolled.
    pub qr_data_url: String,
    pub secret: String,
    pub error: Option<&'static str>,
    /// Shown once after confirmation.
    pub recovery_codes: Vec<String>,
    pub enrolled: bool,
}

/// One user on the admin page.
#[derive(Debug, Clone)]
pub struct AdminUserRow {
    pub username: String,
    pub role: String,
    pub org: String,
    /// TOTP enrolled.
    pub mfa: bool,
    /// Localised state: active, disabled or locked.
    pub status: &'static str,
}

/// One organisation on the admin page.
#[derive(Debug, Clone)]
pub struct AdminOrgRow {
    pub name: String,
    pub users: usize,
}

/// One study grant on the admin page.
#[derive(Debug, Clone)]
pub struct AdminGrantRow {
    pub id: i64,
    pub study: String,
    /// `user alice` / `org clinic-a`, localised kind.
    pub grantee: String,
    pub permission: String,
    pub expires_at: String,
    pub status: &'static str,
    /// `POST` target revoking the grant.
    pub revoke_action: String,
}

/// The admin page: users, organisations and grants of the admin's
/// organisation, with forms posted by `static/forms.js` to the admin
/// endpoints.
#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    pub lang: Lang,
    pub s: &'static Strings,
    pub chrome: Chrome,
    /// The admin's organisation (new users join it).
    pub org: String,
    pub users: Vec<AdminUserRow>,
    pub orgs: Vec<AdminOrgRow>,
    pub grants: Vec<AdminGrantRow>,
    /// Role names offered when creating a user.
    pub roles: Vec<&'static str>,
    /// Grant permissions offered.
    pub permissions: Vec<&'static str>,
}

#[cfg(test)]
mod admin_tests {
    use super::*;

    #[test]
    fn admin_page_has_forms_and_rows() {
        let page = AdminPage {
            lang: Lang::Ja,
            s: Lang::Ja.strings(),
            chrome: Chrome {
                username: "root".into(),
                csrf_token: "tok".into(),
            },
            org: "default".into(),
            users: vec![AdminUserRow {
                username: "alice".into(),
                role: "radiologist".into(),
                org: "default".into(),
                mfa: true,
                status: Lang::Ja.strings().admin_status_active,
            }],
            orgs: vec![AdminOrgRow {
                name: "default".into(),
                users: 1,
            }],
            grants: vec![AdminGrantRow {
                id: 3,
                study: "1.2.3".into(),
                grantee: "alice".into(),
                permission: "view".into(),
                expires_at: "".into(),
                status: Lang::Ja.strings().admin_status_active,
                revoke_action: "/admin/grants/3/revoke".into(),
            }],
            roles: vec!["admin", "radiologist"],
            permissions: vec!["view", "view_pixels"],
        };
        let html = page.render().unwrap();
        assert!(html.contains(r#"<html lang="ja">"#));
        assert!(html.contains(r#"action="/admin/users""#));
        assert!(html.contains(r#"action="/admin/grants""#));
        assert!(html.contains(r#"action="/admin/grants/3/revoke""#));
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(html.contains("alice"));
    }
}
