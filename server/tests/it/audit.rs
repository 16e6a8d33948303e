//! The audit trail: events are written for logins and study access, the
//! hash chain verifies, and editing, deleting, reordering or truncating
//! rows is detected (also through `mado-server audit verify`).

use crate::helpers::{hidden_field, TestApp};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder};
use server::config::DatabaseUrl;
use server::db::entities::audit_events;
use server::services::audit::{self, AuditLog, Event, Outcome};

const KEY: &[u8] = b"mado-demo-audit-key-change-me";

async fn write_events(db: &DatabaseConnection, log: &AuditLog, n: usize) {
    for i in 0..n {
        log.record(
            db,
            Event::new("user", format!("{i}:tester"), "study.view")
                .study(Some("2.25.42"))
                .outcome(if i % 2 == 0 {
                    Outcome::Success
                } else {
                    Outcome::Denied
                }),
        )
        .await
        .unwrap();
    }
}

async fn problem(db: &DatabaseConnection) -> Option<String> {
    audit::verify(db, KEY).await.unwrap().problem
}

async fn trail(app: &TestApp) {
    // Logins (failed and successful) and the worklist are audited.
    app.create_user("auditee", "auditee password").await;
    let b = app.browser();
    let page = b
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf");
    let res = b
        .post(app.url("/login"))
        .form(&[
            ("username", "auditee"),
            ("password", "bad"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let _ = app.signed_in_browser("auditee", "auditee password").await;
    let rows = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();
    let actions: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.action.clone(), r.outcome.clone()))
        .collect();
    assert!(
        actions.contains(&("login".into(), "failure".into())),
        "{actions:?}"
    );
    assert!(actions.contains(&("login".into(), "success".into())));
    assert!(actions.contains(&("study.search".into(), "success".into())));
    assert!(rows.iter().all(|r| !r.actor.contains("password")));

    // Concurrent writers keep one linear chain.
    let log = std::sync::Arc::new(AuditLog::new("mado-demo-audit-key-change-me", 7));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (db, log) = (app.db.clone(), log.clone());
        tasks.push(tokio::spawn(
            async move { write_events(&db, &log, 10).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(problem(&app.db).await, None);
    // The server's writer still holds the head it last wrote, made stale
    // by the other writer: its next append must land after theirs.
    let before = audit_events::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .len();
    let _ = app.signed_in_browser("auditee", "auditee password").await;
    let after = audit_events::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .len();
    assert!(after > before);
    assert_eq!(problem(&app.db).await, None);

    // Exports.
    let rows = audit::query(&app.db, &audit::Filter::default())
        .await
        .unwrap();
    let xml = audit::export::dicom_xml(&rows);
    assert!(xml.contains(r#"csd-code="110114""#));
    assert!(xml.contains(r#"csd-code="110112""#));
    assert!(xml.contains(r#"csd-code="110110""#));
    let fhir = audit::export::fhir_bundle(&rows);
    assert_eq!(fhir["resourceType"], "Bundle");
    assert_eq!(fhir["entry"][0]["resource"]["resourceType"], "AuditEvent");

    // Edit a row.
    let target = rows[5].seq;
    app.db
        .execute_unprepared(&format!(
            "UPDATE audit_events SET outcome = 'success' WHERE seq = {target} AND outcome <> 'success'; \
             UPDATE audit_events SET detail = 'edited' WHERE seq = {target}"
        ))
        .await
        .unwrap();
    let p = problem(&app.db).await.unwrap();
    assert!(
        p.contains(&format!("seq={target}")) && p.contains("edited"),
        "{p}"
    );
}

crate::both_backends!(audit_trail, crate::audit::trail);

async fn fresh_db(dir: &std::path::Path) -> (String, DatabaseConnection) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("a.db").display());
    let db = server::db::connect(&DatabaseUrl(url.clone()))
        .await
        .unwrap();
    server::db::migrate(&db).await.unwrap();
    (url, db)
}

fn cli_verify(url: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mado-server"))
        .args(["audit", "verify"])
        .env("MADO_SERVER__DATABASE__URL", url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected() {
    let log = AuditLog::new("mado-demo-audit-key-change-me", 5);

    // Deleted row in the middle.
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = fresh_db(dir.path()).await;
    write_events(&db, &log, 12).await;
    let (ok, out) = cli_verify(&url);
    assert!(ok, "{out}");
    assert!(out.contains("12 events"), "{out}");
    db.execute_unprepared("DELETE FROM audit_events WHERE seq = 4")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("seq=4"), "{out}");

    // Reordered rows (two rows' contents swapped, seqs kept).
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = fresh_db(dir.path()).await;
    write_events(&db, &log, 8).await;
    db.execute_unprepared(
        "UPDATE audit_events SET seq = -1 WHERE seq = 3; \
         UPDATE audit_events SET seq = 3 WHERE seq = 4; \
         UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )
    .await
    .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("seq=3"), "{out}");

    // Truncated tail past a signed checkpoint (at seq 10).
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = fresh_db(dir.path()).await;
    write_events(&db, &log, 11).await;
    db.execute_unprepared("DELETE FROM audit_events WHERE seq >= 9")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("after seq=8"), "{out}");

    // Forged checkpoint signature.
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = fresh_db(dir.path()).await;
    write_events(&db, &log, 5).await;
    db.execute_unprepared("UPDATE audit_checkpoints SET signature = '00'")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("bad signature"), "{out}");

    // Export through the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mado-server"))
        .args(["audit", "export", "--format", "fhir", "--study", "2.25.42"])
        .env("MADO_SERVER__DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entry"].as_array().unwrap().len(), 5);
}
