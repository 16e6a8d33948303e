//! `patients` per organisation: a Patient ID is unique only within its
//! organisation and issuer (Issuer of Patient ID, 0010,0021), so the row
//! key becomes `(org_id, patient_id, issuer)` instead of `patient_id`.
//!
//! `org_id` is `0` for a patient of studies without an organisation (rows
//! older than organisations; the server never writes one any more).
//! Existing rows take the organisation of their studies; a patient whose
//! studies belong to several organisations is split into one row per
//! organisation and each study points to its organisation's row.
//!
//! SQLite cannot drop a column's UNIQUE constraint: the table is rebuilt
//! (create, copy, drop, rename) on one connection with foreign keys off,
//! inside one transaction, followed by `PRAGMA foreign_key_check`.

use sea_orm_migration::sea_orm::{sqlx, DatabaseExecutor, DbBackend};
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
    OrgId,
    PatientId,
    Issuer,
    Name,
    BirthDate,
    Sex,
    CreatedAt,
}

const INDEX: &str = "idx_patients_org_patient";

/// Split patients shared by several organisations (after `org_id` holds
/// the organisation of one of the patient's studies).
const SPLIT: &str = "
INSERT INTO patients (org_id, patient_id, issuer, name, birth_date, sex, created_at)
  SELECT DISTINCT COALESCE(s.org_id, 0), p.patient_id, p.issuer, p.name, p.birth_date, p.sex, p.created_at
  FROM studies s JOIN patients p ON p.id = s.patient_id
  WHERE COALESCE(s.org_id, 0) <> p.org_id;
UPDATE studies SET patient_id = (
    SELECT q.id FROM patients p JOIN patients q
      ON q.patient_id = p.patient_id AND q.issuer = p.issuer
    WHERE p.id = studies.patient_id AND q.org_id = COALESCE(studies.org_id, 0))
  WHERE COALESCE(org_id, 0) <> (SELECT p.org_id FROM patients p WHERE p.id = studies.patient_id);
";

/// Merge the rows of one Patient ID back into one (down).
const MERGE: &str = "
UPDATE studies SET patient_id = (
    SELECT MIN(q.id) FROM patients p JOIN patients q ON q.patient_id = p.patient_id
    WHERE p.id = studies.patient_id);
DELETE FROM patients WHERE id NOT IN (SELECT MIN(id) FROM patients GROUP BY patient_id);
";

/// The organisation of one of the patient's studies (0 without).
const OWNER: &str =
    "COALESCE((SELECT MIN(s.org_id) FROM studies s WHERE s.patient_id = patients.id), 0)";

fn new_table(name: &str, per_org: bool) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(Alias::new(name)).col(big_pk_auto(Patients::Id));
    if per_org {
        t.col(big_integer(Patients::OrgId).default(0))
            .col(string_len(Patients::PatientId, 64))
            .col(string_len(Patients::Issuer, 64).default(""));
    } else {
        t.col(string_len_uniq(Patients::PatientId, 64));
    }
    t.col(string_len(Patients::Name, 324).default(""))
        .col(string_len(Patients::BirthDate, 16).default(""))
        .col(string_len(Patients::Sex, 16).default(""))
        .col(timestamp_with_time_zone(Patients::CreatedAt))
        .to_owned()
}

/// Rebuild `patients` on SQLite: `create` makes `patients_new`, `copy`
/// fills it from `patients`, then the old table is replaced and `after`
/// runs, all in one transaction with foreign keys off.
async fn sqlite_rebuild(
    conn: &DatabaseExecutor<'_>,
    create: TableCreateStatement,
    copy: &str,
    after: &str,
) -> Result<(), DbErr> {
    let DatabaseExecutor::Connection(db) = conn else {
        return Err(DbErr::Migration(
            "patients_per_org: SQLite rebuild must not run inside a transaction".into(),
        ));
    };
    let err = |e: sqlx::Error| DbErr::Migration(format!("patients_per_org: {e}"));
    let mut c = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .map_err(err)?;
    sqlx::raw_sql("PRAGMA foreign_keys = OFF")
        .execute(&mut *c)
        .await
        .map_err(err)?;
    let script = format!(
        "BEGIN IMMEDIATE;\n{};\n{copy};\nDROP TABLE patients;\n\
         ALTER TABLE patients_new RENAME TO patients;\n{after}\nCOMMIT;",
        create.to_string(SqliteQueryBuilder)
    );
    let res = sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut *c)
        .await;
    if res.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *c).await;
    }
    let check = match res {
        Ok(_) => sqlx::raw_sql("PRAGMA foreign_key_check")
            .fetch_all(&mut *c)
            .await
            .map_err(err)
            .and_then(|rows| {
                if rows.is_empty() {
                    Ok(())
                } else {
                    Err(DbErr::Migration(
                        "patients_per_org: foreign keys broken".into(),
                    ))
                }
            }),
        Err(e) => Err(err(e)),
    };
    sqlx::raw_sql("PRAGMA foreign_keys = ON")
        .execute(&mut *c)
        .await
        .map_err(err)?;
    check
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                let copy = format!(
                    "INSERT INTO patients_new (id, org_id, patient_id, issuer, name, birth_date, sex, created_at) \
                     SELECT id, {OWNER}, patient_id, '', name, birth_date, sex, created_at FROM patients"
                );
                let after = format!("{SPLIT}\nCREATE UNIQUE INDEX {INDEX} ON patients (org_id, patient_id, issuer);");
                sqlite_rebuild(conn, new_table("patients_new", true), &copy, &after).await
            }
            _ => {
                manager
                    .alter_table(
                        Table::alter()
                            .table(Patients::Table)
                            .add_column(big_integer(Patients::OrgId).default(0))
                            .add_column(string_len(Patients::Issuer, 64).default(""))
                            .to_owned(),
                    )
                    .await?;
                conn.execute_unprepared(
                    "ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_patient_id_key",
                )
                .await?;
                conn.execute_unprepared(&format!("UPDATE patients SET org_id = {OWNER}"))
                    .await?;
                conn.execute_unprepared(SPLIT).await?;
                manager
                    .create_index(
                        Index::create()
                            .name(INDEX)
                            .table(Patients::Table)
                            .col(Patients::OrgId)
                            .col(Patients::PatientId)
                            .col(Patients::Issuer)
                            .unique()
                            .to_owned(),
                    )
                    .await
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                conn.execute_unprepared(MERGE).await?;
                conn.execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
                    .await?;
                let copy =
                    "INSERT INTO patients_new (id, patient_id, name, birth_date, sex, created_at) \
                            SELECT id, patient_id, name, birth_date, sex, created_at FROM patients";
                sqlite_rebuild(conn, new_table("patients_new", false), copy, "").await
            }
            _ => {
                conn.execute_unprepared(MERGE).await?;
                manager
                    .drop_index(Index::drop().name(INDEX).table(Patients::Table).to_owned())
                    .await?;
                manager
                    .alter_table(
                        Table::alter()
                            .table(Patients::Table)
                            .drop_column(Patients::OrgId)
                            .drop_column(Patients::Issuer)
                            .to_owned(),
                    )
                    .await?;
                conn.execute_unprepared(
                    "ALTER TABLE patients ADD CONSTRAINT patients_patient_id_key UNIQUE (patient_id)",
                )
                .await
                .map(|_| ())
            }
        }
    }
}
