//! `mado-server [--config FILE] [serve] | migrate | create-admin --username U`

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::services::auth::{upsert_user, Upserted};
use server::{db, telemetry, Application, Settings};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Large, short-lived buffers (DICOM files, decoded frames) are reused
/// instead of mapped and faulted in on every request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The audit trail: verify the hash chain, export events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the keyed hash chain, the signed checkpoints and the signed
    /// head file (`[audit] head_file`); exit 1 naming the first edited,
    /// deleted or reordered row, or the deleted tail or checkpoints.
    Verify,
    /// Sign the current chain head now.
    Checkpoint,
    /// Print events as DICOM audit messages (PS3.15 A.5 XML) or a FHIR R4
    /// AuditEvent bundle (JSON).
    Export {
        #[arg(long, value_parser = ["dicom", "fhir"])]
        format: String,
        /// RFC 3339 start (inclusive).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339 end (exclusive).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// User id or username.
        #[arg(long)]
        user: Option<String>,
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
    },
}

fn main() -> ExitCode {
    mado_core::no_library_backtraces();
    let cli = Cli::parse();
    telemetry::init();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mado-server: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, None | Some(Command::Serve)) {
        if let Some(why) = settings.insecure_defaults() {
            eprintln!("mado-server: {why}");
            return ExitCode::from(2);
        }
    }
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::CreateAdmin { username } => create_admin(settings, &username).await,
            Command::Audit { command } => audit(settings, command).await,
        }
    });
    let result = match result {
        Err(e) if e.is::<ChainBroken>() => {
            eprintln!("mado-server: {e}");
            return ExitCode::from(1);
        }
        other => other,
    };
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

/// `audit verify` found a problem.
#[derive(Debug)]
struct ChainBroken(String);

impl std::fmt::Display for ChainBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit chain broken: {}", self.0)
    }
}

impl std::error::Error for ChainBroken {}

async fn audit(settings: Settings, command: AuditCommand) -> anyhow::Result<()> {
    use server::services::audit;
    let conn = db::connect(&settings.database.url).await?;
    db::migrate(&conn).await?;
    let key = settings.audit.key.expose().as_bytes().to_vec();
    match command {
        AuditCommand::Verify => {
            let report =
                audit::verify_with_head(&conn, &key, Some(&settings.audit.head_file)).await?;
            match report.problem {
                Some(p) => Err(ChainBroken(p).into()),
                None => {
                    println!(
                        "audit chain ok: {} events, {} checkpoints",
                        report.rows, report.checkpoints
                    );
                    Ok(())
                }
            }
        }
        AuditCommand::Checkpoint => {
            let log =
                audit::AuditLog::new(settings.audit.key.expose(), settings.audit.checkpoint_every)
                    .with_head_file(settings.audit.head_file.clone());
            match log.checkpoint(&conn).await? {
                Some(seq) => println!("checkpoint signed at seq={seq}"),
                None => println!("audit trail is empty"),
            }
            Ok(())
        }
        AuditCommand::Export {
            format,
            from,
            to,
            user,
            study,
        } => {
            let rows = audit::query(
                &conn,
                &audit::Filter {
                    from,
                    to,
                    user,
                    study,
                    limit: None,
                },
            )
            .await?;
            let mut out = std::io::stdout().lock();
            if format == "fhir" {
                serde_json::to_writer_pretty(&mut out, &audit::export::fhir_bundle(&rows))?;
                writeln!(out)?;
            } else {
                out.write_all(audit::export::dicom_xml(&rows).as_bytes())?;
            }
            out.flush()?;
            Ok(())
        }
    }
}
