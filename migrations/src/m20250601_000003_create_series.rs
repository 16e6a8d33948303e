//! `series`: one row per Series Instance UID.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

// Column names are the schema's; they happen to repeat the table name.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum Series {
    Table,
    Id,
    SeriesUid,
    StudyId,
    Modality,
    SeriesNumber,
    Description,
    BodyPart,
    NumInstances,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Studies {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Series::Table)
                    .col(big_pk_auto(Series::Id))
                    .col(string_len_uniq(Series::SeriesUid, 64))
                    .col(big_integer(Series::StudyId))
                    .col(string_len(Series::Modality, 16).default(""))
                    .col(integer_null(Series::SeriesNumber))
                    .col(string_len(Series::Description, 128).default(""))
                    .col(string_len(Series::BodyPart, 64).default(""))
                    .col(integer(Series::NumInstances).default(0))
                    .col(timestamp_with_time_zone(Series::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_series_study")
                            .from(Series::Table, Series::StudyId)
                            .to(Studies::Table, Studies::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_series_study")
                    .table(Series::Table)
                    .col(Series::StudyId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Series::Table).to_owned())
            .await
    }
}
