//! Every migration runs up, down and up again on SQLite and on PostgreSQL.
//!
//! PostgreSQL: `MADO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database
//! `mado_test_<uuid>` is created and dropped. Set `MADO_TEST_SKIP_POSTGRES=1`
//! to skip the PostgreSQL half on a machine without it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use migrations::{Migrator, MigratorTrait, SchemaManager};
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const TABLES: [&str; 6] = [
    "patients",
    "studies",
    "series",
    "instances",
    "users",
    "sessions",
];

async fn check_up_down(db: &DatabaseConnection) {
    Migrator::up(db, None).await.unwrap();
    let manager = SchemaManager::new(db);
    for t in TABLES {
        assert!(manager.has_table(t).await.unwrap(), "table {t} after up");
    }
    // Running up twice is a no-op.
    Migrator::up(db, None).await.unwrap();

    Migrator::down(db, None).await.unwrap();
    for t in TABLES {
        assert!(!manager.has_table(t).await.unwrap(), "table {t} after down");
    }

    Migrator::up(db, None).await.unwrap();
    for t in TABLES {
        assert!(manager.has_table(t).await.unwrap(), "table {t} after re-up");
    }
}

#[tokio::test]
async fn sqlite_up_down() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.unwrap();
    check_up_down(&db).await;
}

fn pg_admin_url() -> Option<String> {
    if std::env::var("MADO_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(
        std::env::var("MADO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    )
}

#[tokio::test]
async fn postgres_up_down() {
    let Some(admin_url) = pg_admin_url() else {
        eprintln!("skipping: MADO_TEST_SKIP_POSTGRES=1");
        return;
    };
    let name = format!("mado_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    let db = Database::connect(format!("{base}/{name}")).await.unwrap();
    check_up_down(&db).await;
    db.close().await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

/// `m20261207_000001_patients_per_org`: a patient whose studies belong to
/// two organisations becomes one row per organisation, each study points
/// to its organisation's row, and the key is (org, patient id, issuer).
async fn check_patients_split(db: &DatabaseConnection) {
    let all = Migrator::migrations().len() as u32;
    Migrator::up(db, Some(all - 1)).await.unwrap();
    for sql in [
        "INSERT INTO organisations (id, name, created_at) VALUES (11, 'a', '2025-01-01T00:00:00Z'), (12, 'b', '2025-01-01T00:00:00Z')",
        "INSERT INTO patients (id, patient_id, name, birth_date, sex, created_at) VALUES (1, 'P', 'ALPHA', '', '', '2025-01-01T00:00:00Z'), (2, 'Q', 'ONLY', '', '', '2025-01-01T00:00:00Z')",
        "INSERT INTO studies (id, study_uid, patient_id, study_date, study_time, accession, description, modalities_in_study, num_series, num_instances, created_at, org_id) VALUES \
         (1, '2.25.1', 1, '', '', '', '', '', 0, 0, '2025-01-01T00:00:00Z', 11), \
         (2, '2.25.2', 1, '', '', '', '', '', 0, 0, '2025-01-01T00:00:00Z', 12), \
         (3, '2.25.3', 2, '', '', '', '', '', 0, 0, '2025-01-01T00:00:00Z', 12)",
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
    if db.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres {
        // Rows inserted with explicit ids: move the sequence past them.
        db.execute_unprepared("SELECT setval(pg_get_serial_sequence('patients', 'id'), 100)")
            .await
            .unwrap();
    }
    Migrator::up(db, None).await.unwrap();
    let rows = db
        .query_all_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT s.study_uid, p.org_id, p.patient_id, p.name FROM studies s JOIN patients p ON p.id = s.patient_id ORDER BY s.study_uid",
        ))
        .await
        .unwrap();
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "study_uid").unwrap(),
                r.try_get::<i64>("", "org_id").unwrap(),
                r.try_get::<String>("", "patient_id").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2.25.1".to_owned(), 11, "P".to_owned()),
            ("2.25.2".to_owned(), 12, "P".to_owned()),
            ("2.25.3".to_owned(), 12, "Q".to_owned()),
        ]
    );
    // The key allows the same Patient ID in another organisation only.
    db.execute_unprepared("INSERT INTO patients (org_id, patient_id, issuer, name, birth_date, sex, created_at) VALUES (13, 'P', '', 'C', '', '', '2025-01-01T00:00:00Z')")
        .await
        .unwrap();
    assert!(db
        .execute_unprepared("INSERT INTO patients (org_id, patient_id, issuer, name, birth_date, sex, created_at) VALUES (11, 'P', '', 'D', '', '', '2025-01-01T00:00:00Z')")
        .await
        .is_err());
    // Down merges them back.
    Migrator::down(db, Some(1)).await.unwrap();
    Migrator::up(db, None).await.unwrap();
}

#[tokio::test]
async fn sqlite_patients_split() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.unwrap();
    check_patients_split(&db).await;
}

#[tokio::test]
async fn postgres_patients_split() {
    let Some(admin_url) = pg_admin_url() else {
        eprintln!("skipping: MADO_TEST_SKIP_POSTGRES=1");
        return;
    };
    let name = format!("mado_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    let db = Database::connect(format!("{base}/{name}")).await.unwrap();
    check_patients_split(&db).await;
    db.close().await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}
