//! `mado-migrate`: the sea-orm-migration CLI over Mado's [`Migrator`]
//! (reads `DATABASE_URL`; subcommands `up`, `down`, `fresh`, `status`, ...).

use migrations::Migrator;
use sea_orm_migration::cli;

#[tokio::main]
async fn main() {
    cli::run_cli(Migrator).await;
}
