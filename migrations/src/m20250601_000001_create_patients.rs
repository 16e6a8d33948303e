//! `patients`: one row per pseudonymous patient (the gateway has already
//! replaced the real identifiers).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
    PatientId,
    Name,
    BirthDate,
    Sex,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Patients::Table)
                    .col(big_pk_auto(Patients::Id))
                    // Pseudonymous Patient ID (0010,0020); "" when absent.
                    .col(string_len_uniq(Patients::PatientId, 64))
                    // Patient's Name (0010,0010), Alphabetic group.
                    .col(string_len(Patients::Name, 324).default(""))
                    // Patient's Birth Date (0010,0030), DICOM DA (YYYYMMDD).
                    .col(string_len(Patients::BirthDate, 16).default(""))
                    // Patient's Sex (0010,0040).
                    .col(string_len(Patients::Sex, 16).default(""))
                    .col(timestamp_with_time_zone(Patients::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Patients::Table).to_owned())
            .await
    }
}
