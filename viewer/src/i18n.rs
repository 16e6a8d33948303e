//! Every user-visible string, per language. Templates never contain prose.

/// Page language; its code goes into `<html lang>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Ja,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::En => &EN,
            Lang::Ja => &JA,
        }
    }

    /// Pick a language from an `Accept-Language` header value: the first
    /// supported primary tag wins, English otherwise.
    pub fn from_accept_language(header: &str) -> Lang {
        for part in header.split(',') {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let primary = tag.split('-').next().unwrap_or("");
            match primary {
                "en" => return Lang::En,
                "ja" => return Lang::Ja,
                _ => {}
            }
        }
        Lang::En
    }
}

/// The strings of one language.
#[derive(Debug)]
pub struct Strings {
    pub app_name: &'static str,
    pub tagline: &'static str,
    // login
    pub login_title: &'static str,
    pub username: &'static str,
    pub password: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub login_failed: &'static str,
    pub form_expired: &'static str,
    // worklist
    pub worklist_title: &'static str,
    pub col_patient: &'static str,
    pub col_patient_id: &'static str,
    pub col_study_date: &'static str,
    pub col_modalities: &'static str,
    pub col_description: &'static str,
    pub col_series: &'static str,
    pub col_instances: &'static str,
    pub open_study: &'static str,
    pub no_studies: &'static str,
    // study page
    pub study_title: &'static str,
    pub back_to_worklist: &'static str,
    pub series_label: &'static str,
    pub images_label: &'static str,
    pub frames_label: &'static str,
    pub no_description: &'static str,
    pub accession_label: &'static str,
    pub viewer_hint: &'static str,
    pub close: &'static str,
    // share links
    pub share_title: &'static str,
    pub share_passcode: &'static str,
    pub share_open: &'static str,
    pub share_passcode_wrong: &'static str,
    pub share_locked: &'static str,
    // audit
    pub audit_title: &'static str,
    pub audit_chain_ok: &'static str,
    pub audit_chain_broken: &'static str,
    // second factor
    pub totp_title: &'static str,
    pub totp_code: &'static str,
    pub totp_verify: &'static str,
    pub totp_failed: &'static str,
    pub totp_enrol_title: &'static str,
    pub totp_scan: &'static str,
    pub totp_secret_label: &'static str,
    pub totp_enrolled: &'static str,
    pub totp_recovery_hint: &'static str,
    pub too_many_requests: &'static str,
}

pub static EN: Strings = Strings {
    app_name: "Mado",
    tagline: "DICOM image sharing",
    login_title: "Sign in",
    username: "Username",
    password: "Password",
    sign_in: "Sign in",
    sign_out: "Sign out",
    signed_in_as: "Signed in as",
    login_failed: "Invalid username or password.",
    form_expired: "The form has expired. Please try again.",
    worklist_title: "Studies",
    col_patient: "Patient",
    col_patient_id: "Patient ID",
    col_study_date: "Study date",
    col_modalities: "Modalities",
    col_description: "Description",
    col_series: "Series",
    col_instances: "Images",
    open_study: "Open",
    no_studies: "No studies yet.",
    study_title: "Study",
    back_to_worklist: "All studies",
    series_label: "Series",
    images_label: "images",
    frames_label: "frames",
    no_description: "(no description)",
    accession_label: "Accession",
    viewer_hint: "Scroll or use the arrow keys to move through the series. Esc closes.",
    close: "Close",
    share_title: "Shared study",
    share_passcode: "Passcode",
    share_open: "Open study",
    share_passcode_wrong: "Wrong passcode.",
    share_locked: "Too many wrong passcodes. Try again later.",
    audit_title: "Audit trail",
    audit_chain_ok: "Hash chain verified.",
    audit_chain_broken: "Hash chain broken:",
    totp_title: "Two-step verification",
    totp_code: "Code from your authenticator app (or a recovery code)",
    totp_verify: "Verify",
    totp_failed: "Invalid code.",
    totp_enrol_title: "Set up two-step verification",
    totp_scan: "Scan this QR code with an authenticator app, then enter the 6-digit code it shows.",
    totp_secret_label: "Or enter this key manually:",
    totp_enrolled: "Two-step verification is on.",
    totp_recovery_hint:
        "Recovery codes: each works once if you lose your device. They are shown only now.",
    too_many_requests: "Too many attempts. Please wait a minute.",
};

pub static JA: Strings = Strings {
    app_name: "Mado",
    tagline: "DICOM 画像共有",
    login_title: "サインイン",
    username: "ユーザー名",
    password: "パスワード",
    sign_in: "サインイン",
    sign_out: "サインアウト",
    signed_in_as: "サインイン中:",
    login_failed: "ユーザー名またはパスワードが正しくありません。",
    form_expired: "フォームの有効期限が切れました。もう一度お試しください。",
    worklist_title: "検査一覧",
    col_patient: "患者",
    col_patient_id: "患者ID",
    col_study_date: "検査日",
    col_modalities: "モダリティ",
    col_description: "検査内容",
    col_series: "シリーズ",
    col_instances: "画像",
    open_study: "開く",
    no_studies: "検査はまだありません。",
    study_title: "検査",
    back_to_worklist: "検査一覧へ",
    series_label: "シリーズ",
    images_label: "枚",
    frames_label: "フレーム",
    no_description: "(説明なし)",
    accession_label: "受付番号",
    viewer_hint: "スクロールまたは矢印キーで画像を切り替えます。Esc で閉じます。",
    close: "閉じる",
    share_title: "共有された検査",
    share_passcode: "パスコード",
    share_open: "検査を開く",
    share_passcode_wrong: "パスコードが正しくありません。",
    share_locked: "誤ったパスコードが多すぎます。しばらくしてからお試しください。",
    audit_title: "監査証跡",
    audit_chain_ok: "ハッシュチェーンを検証しました。",
    audit_chain_broken: "ハッシュチェーンが壊れています:",
    totp_title: "2段階認証",
    totp_code: "認証アプリのコード（またはリカバリーコード）",
    totp_verify: "確認",
    totp_failed: "コードが正しくありません。",
    totp_enrol_title: "2段階認証の設定",
    totp_scan: "認証アプリでこのQRコードを読み取り、表示された6桁のコードを入力してください。",
    totp_secret_label: "または次のキーを手動で入力:",
    totp_enrolled: "2段階認証は有効です。",
    totp_recovery_hint: "リカバリーコード（各1回のみ使用可）。今だけ表示されます。",
    too_many_requests: "試行回数が多すぎます。1分ほどお待ちください。",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language() {
        assert_eq!(Lang::from_accept_language("ja,en-US;q=0.9"), Lang::Ja);
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,ja;q=0.8"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr-FR"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }
}
