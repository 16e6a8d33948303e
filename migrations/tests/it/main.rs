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
