//! Identity and access: `organisations`, `users.org_id` (+ MFA columns and
//! lockout counters), `studies.org_id` (the uploading organisation),
//! `study_grants`, `share_links`, `share_sessions`, and the tamper-evident
//! audit trail (`audit_events`, `audit_checkpoints`).
//!
//! Existing rows are moved into the organisation named `default`; the
//! walking-slice role `user` becomes `radiologist`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    OrgId,
    TotpSecret,
    RecoveryCodes,
    FailedLogins,
    LockedUntil,
}

#[derive(DeriveIden)]
enum Studies {
    Table,
    OrgId,
}

#[derive(DeriveIden)]
enum StudyGrants {
    Table,
    Id,
    StudyId,
    GranteeUserId,
    GranteeOrgId,
    Permission,
    ExpiresAt,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ShareLinks {
    Table,
    Id,
    StudyId,
    TokenHash,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    PasscodeHash,
    MaxUses,
    Uses,
    PixelsOnly,
    RevokedAt,
    FailedAttempts,
    LockedUntil,
}

#[derive(DeriveIden)]
enum ShareSessions {
    Table,
    Id,
    ShareId,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Seq,
    At,
    ActorKind,
    Actor,
    OrgId,
    StudyUid,
    Action,
    Outcome,
    ClientAddr,
    UserAgent,
    RequestId,
    Detail,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Id,
    Seq,
    Hash,
    At,
    Signature,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organisations::Table)
                    .col(big_pk_auto(Organisations::Id))
                    .col(string_len_uniq(Organisations::Name, 128))
                    .col(timestamp_with_time_zone(Organisations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let now = chrono_now_literal();
        db.execute_unprepared(&format!(
            "INSERT INTO organisations (name, created_at) VALUES ('default', '{now}')"
        ))
        .await?;

        // SQLite adds one column per ALTER TABLE.
        for col in [
            ColumnDef::new(Users::OrgId).big_integer().null().to_owned(),
            ColumnDef::new(Users::TotpSecret)
                .string_len(128)
                .null()
                .to_owned(),
            ColumnDef::new(Users::RecoveryCodes)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Users::FailedLogins)
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(Users::LockedUntil)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Studies::Table)
                    .add_column(ColumnDef::new(Studies::OrgId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "UPDATE users SET org_id = (SELECT id FROM organisations WHERE name = 'default')",
        )
        .await?;
        db.execute_unprepared("UPDATE users SET role = 'radiologist' WHERE role = 'user'")
            .await?;
        db.execute_unprepared(
            "UPDATE studies SET org_id = (SELECT id FROM organisations WHERE name = 'default')",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_studies_org")
                    .table(Studies::Table)
                    .col(Studies::OrgId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StudyGrants::Table)
                    .col(big_pk_auto(StudyGrants::Id))
                    .col(big_integer(StudyGrants::StudyId))
                    .col(big_integer_null(StudyGrants::GranteeUserId))
                    .col(big_integer_null(StudyGrants::GranteeOrgId))
                    // view | view_pixels | download | report | share
                    .col(string_len(StudyGrants::Permission, 32))
                    .col(timestamp_with_time_zone_null(StudyGrants::ExpiresAt))
                    .col(big_integer_null(StudyGrants::CreatedBy))
                    .col(timestamp_with_time_zone(StudyGrants::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_study_grants_study")
                            .from(StudyGrants::Table, StudyGrants::StudyId)
                            .to(Alias::new("studies"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_study_grants_study")
                    .table(StudyGrants::Table)
                    .col(StudyGrants::StudyId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ShareLinks::Table)
                    .col(big_pk_auto(ShareLinks::Id))
                    .col(big_integer(ShareLinks::StudyId))
                    .col(string_len_uniq(ShareLinks::TokenHash, 64))
                    .col(big_integer_null(ShareLinks::CreatedBy))
                    .col(timestamp_with_time_zone(ShareLinks::CreatedAt))
                    .col(timestamp_with_time_zone(ShareLinks::ExpiresAt))
                    .col(string_len_null(ShareLinks::PasscodeHash, 255))
                    .col(integer_null(ShareLinks::MaxUses))
                    .col(integer(ShareLinks::Uses).default(0))
                    .col(boolean(ShareLinks::PixelsOnly).default(false))
                    .col(timestamp_with_time_zone_null(ShareLinks::RevokedAt))
                    .col(integer(ShareLinks::FailedAttempts).default(0))
                    .col(timestamp_with_time_zone_null(ShareLinks::LockedUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_share_links_study")
                            .from(ShareLinks::Table, ShareLinks::StudyId)
                            .to(Alias::new("studies"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ShareSessions::Table)
                    .col(string_len(ShareSessions::Id, 64).primary_key())
                    .col(big_integer(ShareSessions::ShareId))
                    .col(timestamp_with_time_zone(ShareSessions::CreatedAt))
                    .col(timestamp_with_time_zone(ShareSessions::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_share_sessions_share")
                            .from(ShareSessions::Table, ShareSessions::ShareId)
                            .to(ShareLinks::Table, ShareLinks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    // Assigned by the writer (previous + 1) under a lock, so
                    // the chain has no gaps.
                    .col(big_integer(AuditEvents::Seq).primary_key())
                    .col(string_len(AuditEvents::At, 40))
                    .col(string_len(AuditEvents::ActorKind, 16))
                    .col(string_len(AuditEvents::Actor, 160))
                    .col(big_integer_null(AuditEvents::OrgId))
                    .col(string_len_null(AuditEvents::StudyUid, 64))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(string_len(AuditEvents::Outcome, 16))
                    .col(string_len(AuditEvents::ClientAddr, 64).default(""))
                    .col(string_len(AuditEvents::UserAgent, 256).default(""))
                    .col(string_len(AuditEvents::RequestId, 64).default(""))
                    .col(string_len(AuditEvents::Detail, 256).default(""))
                    .col(string_len(AuditEvents::PrevHash, 64))
                    .col(string_len(AuditEvents::Hash, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_events_study")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::StudyUid)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .col(big_pk_auto(AuditCheckpoints::Id))
                    .col(big_integer(AuditCheckpoints::Seq))
                    .col(string_len(AuditCheckpoints::Hash, 64))
                    .col(string_len(AuditCheckpoints::At, 40))
                    .col(string_len(AuditCheckpoints::Signature, 128))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            AuditCheckpoints::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            ShareSessions::Table.into_iden(),
            ShareLinks::Table.into_iden(),
            StudyGrants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("idx_studies_org")
                    .table(Studies::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Studies::Table)
                    .drop_column(Studies::OrgId)
                    .to_owned(),
            )
            .await?;
        for c in [
            Users::OrgId.into_iden(),
            Users::TotpSecret.into_iden(),
            Users::RecoveryCodes.into_iden(),
            Users::FailedLogins.into_iden(),
            Users::LockedUntil.into_iden(),
        ] {
            manager
                .alter_table(Table::alter().table(Users::Table).drop_column(c).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Organisations::Table).to_owned())
            .await
    }
}

/// An ISO timestamp literal both SQLite and PostgreSQL accept.
fn chrono_now_literal() -> String {
    // Migrations avoid a chrono dependency; a fixed epoch-like value is
    // fine for the seed row.
    "2025-11-20T00:00:00+00:00".to_owned()
}
