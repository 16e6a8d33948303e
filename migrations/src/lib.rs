//! Schema migrations for the Mado server index (SQLite and PostgreSQL).
//!
//! One file per change, registered in order in [`Migrator::migrations`].
//! Migrations are frozen history: they never depend on the server's
//! entities and are never edited once shipped; add a new one instead.

pub use sea_orm_migration::prelude::*;

mod m20250601_000001_create_patients;
mod m20250601_000002_create_studies;
mod m20250601_000003_create_series;
mod m20250601_000004_create_instances;
mod m20250601_000005_create_users;
mod m20250601_000006_create_sessions;
mod m20251120_000001_orgs_grants_audit;
mod m20261123_000002_totp_last_step;
mod m20261207_000001_patients_per_org;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250601_000001_create_patients::Migration),
            Box::new(m20250601_000002_create_studies::Migration),
            Box::new(m20250601_000003_create_series::Migration),
            Box::new(m20250601_000004_create_instances::Migration),
            Box::new(m20250601_000005_create_users::Migration),
            Box::new(m20250601_000006_create_sessions::Migration),
            Box::new(m20251120_000001_orgs_grants_audit::Migration),
            Box::new(m20261123_000002_totp_last_step::Migration),
            Box::new(m20261207_000001_patients_per_org::Migration),
        ]
    }
}
