//! The study page's share dialog and the admin page, driven in headless
//! Chromium (`tests/browser/ui_forms.mjs`) in English and Japanese: create
//! a share link (expiry, passcode, max uses, pixels only), list and revoke
//! it; create a user, grant and revoke a study grant. Screenshots are kept
//! in `CARGO_TARGET_TMPDIR/browser-shots/`.

use crate::helpers::{registration, simple_metadata, spawn_app, Backend, Uids};
use crate::oidc_browser::{assert_png, chromium, run_script, shot_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_dialog_and_admin_page_in_chromium() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let uids = Uids::new("2.25.8801", "2.25.8802", "2.25.8803");
    let reg = registration(&uids, simple_metadata(&uids, "CT", "P-UI"), b"x");
    assert_eq!(app.register(&reg).await.status(), 201);
    app.create_user("root", "root password 1").await;
    let dir = shot_dir();
    let report = run_script(
        "ui_forms.mjs",
        serde_json::json!({
            "base": app.base,
            "username": "root",
            "password": "root password 1",
            "study": "2.25.8801",
            "outDir": dir,
            "executable": chromium(),
            "timeoutMs": 60000,
        }),
    )
    .await;
    assert_eq!(report["ok"], true, "{report:#}");
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "{report:#}");
    // Share dialog: a link shown once, listed with its options, revoked.
    let url = report["shareUrl"].as_str().unwrap();
    assert!(url.starts_with(&app.url("/s/")), "{report:#}");
    let links = report["linksAfterCreate"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{report:#}");
    let row = links[0].as_str().unwrap();
    for want in ["0 / 3", "passcode", "images only", "Active"] {
        assert!(row.contains(want), "{want}: {row}");
    }
    assert_eq!(report["statusAfterRevoke"][0], "Revoked", "{report:#}");
    assert_eq!(report["revokeButtonsAfterRevoke"], 0);
    // The revoked link no longer opens.
    let res = app.api.get(url).send().await.unwrap();
    assert_ne!(res.status(), 303, "revoked link still opens");
    // Admin page: user created, grant created then revoked.
    let users = report["adminUsers"].to_string();
    assert!(
        users.contains("yuki") && users.contains("referring"),
        "{users}"
    );
    let grants = report["adminGrants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{report:#}");
    let g = grants[0].as_str().unwrap();
    assert!(
        g.contains("2.25.8801") && g.contains("yuki") && g.contains("view_pixels"),
        "{g}"
    );
    assert!(report["duplicateError"]
        .as_str()
        .unwrap()
        .contains("username taken"));
    assert_eq!(report["grantsAfterRevoke"], 0);
    // Japanese pages.
    assert_eq!(report["ja"]["lang"], "ja");
    assert_eq!(
        report["ja"]["adminTitle"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .next(),
        Some("管理")
    );
    assert_eq!(report["ja"]["shareTitle"], "この検査を共有");
    for name in [
        "share-dialog-created-en.png",
        "share-dialog-list-en.png",
        "admin-en.png",
        "admin-ja.png",
        "share-dialog-ja.png",
    ] {
        assert_png(&dir.join(name));
    }
    // The audit trail has the admin and share actions.
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use server::db::entities::audit_events;
    for action in [
        "share.create",
        "share.revoke",
        "admin.user_create",
        "grant.create",
        "grant.revoke",
    ] {
        let n = audit_events::Entity::find()
            .filter(audit_events::Column::Action.eq(action))
            .all(&app.db)
            .await
            .unwrap()
            .len();
        assert!(n >= 1, "{action} not audited");
    }
    app.cleanup().await;
}
