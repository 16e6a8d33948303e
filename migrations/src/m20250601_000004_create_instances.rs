//! `instances`: one row per SOP Instance UID, pointing at its object in the
//! store and carrying the de-identified DICOM JSON metadata (without bulk
//! data) so that metadata requests never read the object store.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    SopInstanceUid,
    SeriesId,
    SopClassUid,
    InstanceNumber,
    TransferSyntaxUid,
    ObjectKey,
    Size,
    Sha256,
    Rows,
    Columns,
    NumberOfFrames,
    Metadata,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Series {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Instances::Table)
                    .col(big_pk_auto(Instances::Id))
                    .col(string_len_uniq(Instances::SopInstanceUid, 64))
                    .col(big_integer(Instances::SeriesId))
                    .col(string_len(Instances::SopClassUid, 64))
                    .col(integer_null(Instances::InstanceNumber))
                    .col(string_len(Instances::TransferSyntaxUid, 64))
                    .col(string_len(Instances::ObjectKey, 512))
                    .col(big_integer(Instances::Size))
                    // Lower-case hex SHA-256 of the stored object.
                    .col(string_len(Instances::Sha256, 64))
                    .col(integer_null(Instances::Rows))
                    .col(integer_null(Instances::Columns))
                    .col(integer(Instances::NumberOfFrames).default(1))
                    // DICOM JSON model (PS3.18 F.2) as text.
                    .col(text(Instances::Metadata))
                    .col(timestamp_with_time_zone(Instances::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_instances_series")
                            .from(Instances::Table, Instances::SeriesId)
                            .to(Series::Table, Series::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_instances_series")
                    .table(Instances::Table)
                    .col(Instances::SeriesId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Instances::Table).to_owned())
            .await
    }
}
