//! `mado-server [--config FILE] [serve] | migrate | create-admin --username U`

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::services::auth::{upsert_user, Upserted};
use server::{db, telemetry, Application, Settings};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mado-server",
    version,
    about = "Mado cloud server: ingest, index, viewer"
)]
struct Cli {
    /// TOML config file layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve HTTP (the default).
    Serve,
    /// Migrate the database and exit.
    Migrate,
    /// Create an administrator, or reset its password if it exists.
    /// The password comes from MADO_ADMIN_PASSWORD, else from stdin.
    CreateAdmin {
        #[arg(long)]
        username: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mado-server: {e}");
            return ExitCode::from(2);
        }
    };
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::CreateAdmin { username } => create_admin(settings, &username).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mado-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), "listening");
    let mut out = std::io::stdout().lock();
    writeln!(out, "mado-server listening http={}", app.local_addr())?;
    out.flush()?;
    drop(out);
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let conn = db::connect(&settings.database.url).await?;
    db::migrate(&conn).await?;
    tracing::info!("database schema is up to date");
    Ok(())
}

async fn create_admin(settings: Settings, username: &str) -> anyhow::Result<()> {
    let username = username.trim();
    if username.is_empty() || username.len() > 128 || username.chars().any(char::is_control) {
        anyhow::bail!("--username must be 1 to 128 printable characters");
    }
    let password = match std::env::var("MADO_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        anyhow::bail!("empty password (set MADO_ADMIN_PASSWORD or pipe it on stdin)");
    }
    if password.chars().count() < 8 {
        tracing::warn!("the admin password is shorter than 8 characters");
    }
    let conn = db::connect(&settings.database.url).await?;
    db::migrate(&conn).await?;
    let outcome = upsert_user(&conn, username, &password, "admin").await?;
    match outcome {
        Upserted::Created => println!("created admin user {username}"),
        Upserted::Updated => println!("updated admin user {username}"),
    }
    Ok(())
}
