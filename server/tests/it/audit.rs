//! The audit trail: events are written for logins and study access, the
//! keyed hash chain verifies, and editing, deleting, reordering or
//! truncating rows, deleting checkpoints or recomputing the chain is
//! detected (also through `mado-server audit verify`), on SQLite and
//! PostgreSQL.

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

/// The server's writer anchors every committed batch in its head file.
async fn head_file_follows_the_server(app: &TestApp) {
    app.create_user("headed", "headed password").await;
    let _ = app.signed_in_browser("headed", "headed password").await;
    let head = audit::read_head(&app.audit_key, &app.audit_head)
        .unwrap()
        .expect("head file written");
    let last = audit_events::Entity::find()
        .order_by_desc(audit_events::Column::Seq)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((head.seq, head.hash), (last.seq, last.hash));
    let report = audit::verify_with_head(&app.db, &app.audit_key, Some(&app.audit_head))
        .await
        .unwrap();
    assert_eq!(report.problem, None);
    // The newest row deleted: detected through the head file alone.
    app.db
        .execute_unprepared(&format!(
            "DELETE FROM audit_events WHERE seq = {}",
            last.seq
        ))
        .await
        .unwrap();
    let p = audit::verify_with_head(&app.db, &app.audit_key, Some(&app.audit_head))
        .await
        .unwrap()
        .problem
        .unwrap();
    assert!(p.contains("deleted"), "{p}");
}

crate::both_backends!(audit_head_file, crate::audit::head_file_follows_the_server);

/// Empty the trail (rows and checkpoints) of `db`.
async fn wipe(db: &DatabaseConnection) {
    db.execute_unprepared("DELETE FROM audit_events")
        .await
        .unwrap();
    db.execute_unprepared("DELETE FROM audit_checkpoints")
        .await
        .unwrap();
}

/// Recompute the chain from row `from` on with the old unkeyed SHA-256 (what
/// an attacker holding only the database can do), as SQL updates.
async fn recompute_unkeyed(db: &DatabaseConnection, from: i64) {
    let rows = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(db)
        .await
        .unwrap();
    let mut prev = rows
        .iter()
        .find(|r| r.seq == from - 1)
        .map_or(audit::GENESIS.to_owned(), |r| r.hash.clone());
    for mut r in rows.into_iter().filter(|r| r.seq >= from) {
        r.prev_hash = prev.clone();
        r.hash = audit::legacy_row_hash(&r);
        db.execute_unprepared(&format!(
            "UPDATE audit_events SET prev_hash = '{}', hash = '{}' WHERE seq = {}",
            r.prev_hash, r.hash, r.seq
        ))
        .await
        .unwrap();
        prev = r.hash;
    }
}

/// The tamper matrix: each attack alone makes `verify` fail; the untouched
/// trail verifies.
async fn tamper_matrix(app: &TestApp) {
    type Attack = (&'static str, &'static str, Option<&'static str>);
    // (name, SQL run after 12 events with checkpoints at 5 and 10,
    //  recompute the chain unkeyed from this seq first)
    let attacks: [Attack; 6] = [
        ("untouched", "", None),
        (
            "newest rows after the last checkpoint deleted",
            "DELETE FROM audit_events WHERE seq > 10",
            None,
        ),
        (
            "every checkpoint deleted",
            "DELETE FROM audit_checkpoints",
            None,
        ),
        (
            "a row rewritten, the chain recomputed (unkeyed), checkpoints deleted",
            "UPDATE audit_events SET outcome = 'success', detail = 'rewritten' WHERE seq = 4; \
             DELETE FROM audit_checkpoints",
            Some("4"),
        ),
        (
            "every row rewritten unkeyed, checkpoints deleted",
            "UPDATE audit_events SET detail = 'rewritten' WHERE seq = 1; \
             DELETE FROM audit_checkpoints",
            Some("1"),
        ),
        (
            "a plain row edit",
            "UPDATE audit_events SET detail = 'edited' WHERE seq = 7",
            None,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, sql, recompute)) in attacks.into_iter().enumerate() {
        wipe(&app.db).await;
        let head = dir.path().join(format!("head-{i}.log"));
        let log = AuditLog::new(std::str::from_utf8(KEY).unwrap(), 5).with_head_file(head.clone());
        write_events(&app.db, &log, 12).await;
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            app.db.execute_unprepared(stmt).await.unwrap();
        }
        if let Some(from) = recompute {
            recompute_unkeyed(&app.db, from.parse().unwrap()).await;
        }
        let report = audit::verify_with_head(&app.db, KEY, Some(&head))
            .await
            .unwrap();
        if name == "untouched" {
            assert_eq!(report.problem, None, "{name}");
            assert_eq!((report.rows, report.checkpoints), (12, 2));
        } else {
            assert!(report.problem.is_some(), "not detected: {name}");
        }
    }
    wipe(&app.db).await;
}

crate::both_backends!(audit_tamper_matrix, crate::audit::tamper_matrix);

/// A fresh SQLite trail in `dir`: its URL, connection and a writer with
/// the head file `dir/head.log`.
async fn fresh_db(dir: &std::path::Path) -> (String, DatabaseConnection, AuditLog) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("a.db").display());
    let db = server::db::connect(&DatabaseUrl(url.clone()))
        .await
        .unwrap();
    server::db::migrate(&db).await.unwrap();
    let log =
        AuditLog::new("mado-demo-audit-key-change-me", 5).with_head_file(dir.join("head.log"));
    (url, db, log)
}

fn cli_verify(url: &str) -> (bool, String) {
    let head = std::path::Path::new(url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .join("head.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mado-server"))
        .args(["audit", "verify"])
        .env("MADO_SERVER__DATABASE__URL", url)
        .env("MADO_SERVER__AUDIT__HEAD_FILE", head)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected() {
    // Deleted row in the middle.
    let dir = tempfile::tempdir().unwrap();
    let (url, db, log) = fresh_db(dir.path()).await;
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
    let (url, db, log) = fresh_db(dir.path()).await;
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
    let (url, db, log) = fresh_db(dir.path()).await;
    write_events(&db, &log, 11).await;
    db.execute_unprepared("DELETE FROM audit_events WHERE seq >= 9")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("after seq=8"), "{out}");

    // Truncated tail after the last checkpoint (seq 10 of 12), and every
    // checkpoint deleted: the signed head file tells.
    let dir = tempfile::tempdir().unwrap();
    let (url, db, log) = fresh_db(dir.path()).await;
    write_events(&db, &log, 12).await;
    let (ok, out) = cli_verify(&url);
    assert!(ok, "{out}");
    db.execute_unprepared("DELETE FROM audit_events WHERE seq > 10")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(
        out.contains("after seq=10") && out.contains("head file"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (url, db, log) = fresh_db(dir.path()).await;
    write_events(&db, &log, 12).await;
    db.execute_unprepared("DELETE FROM audit_checkpoints")
        .await
        .unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("checkpoint at seq=10 was deleted"), "{out}");
    // The head file itself gone.
    std::fs::remove_file(dir.path().join("head.log")).unwrap();
    let (ok, out) = cli_verify(&url);
    assert!(!ok);
    assert!(out.contains("missing"), "{out}");

    // Forged checkpoint signature.
    let dir = tempfile::tempdir().unwrap();
    let (url, db, log) = fresh_db(dir.path()).await;
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
