//! `studies`: one row per Study Instance UID, with the denormalised counts
//! and modalities the worklist shows.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Studies {
    Table,
    Id,
    StudyUid,
    PatientId,
    StudyDate,
    StudyTime,
    Accession,
    Description,
    ModalitiesInStudy,
    NumSeries,
    NumInstances,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Studies::Table)
                    .col(big_pk_auto(Studies::Id))
                    .col(string_len_uniq(Studies::StudyUid, 64))
                    .col(big_integer(Studies::PatientId))
                    // Study Date (0008,0020), DICOM DA (YYYYMMDD) so that it sorts.
                    .col(string_len(Studies::StudyDate, 16).default(""))
                    .col(string_len(Studies::StudyTime, 32).default(""))
                    .col(string_len(Studies::Accession, 64).default(""))
                    .col(string_len(Studies::Description, 128).default(""))
                    // Distinct series modalities joined with '\' (DICOM multi-value).
                    .col(string_len(Studies::ModalitiesInStudy, 256).default(""))
                    .col(integer(Studies::NumSeries).default(0))
                    .col(integer(Studies::NumInstances).default(0))
                    .col(timestamp_with_time_zone(Studies::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_studies_patient")
                            .from(Studies::Table, Studies::PatientId)
                            .to(Patients::Table, Patients::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_studies_study_date")
                    .table(Studies::Table)
                    .col(Studies::StudyDate)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_studies_patient")
                    .table(Studies::Table)
                    .col(Studies::PatientId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Studies::Table).to_owned())
            .await
    }
}
