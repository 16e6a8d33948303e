//! `mado-gateway [--config FILE] [serve]`

use clap::{Parser, Subcommand};
use dicom_gateway::config::GatewayConfig;
use dicom_gateway::Gateway;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mado-gateway",
    version,
    about = "Mado hospital-edge DICOM gateway"
)]
struct Cli {
    /// TOML configuration file (layered over the built-in defaults; env
    /// variables MADO_GATEWAY__SECTION__KEY override both).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

// One variant per subcommand; each dispatches to a function below (or in
// its own module), so new subcommands are one variant + one match arm.
#[derive(Subcommand)]
enum Command {
    /// Run the DICOM SCP and the upload worker (default).
    Serve,
    /// Print the spool state as JSON (pending / failed / quarantined counts
    /// and bytes, age of the oldest pending instance). Safe next to a
    /// running gateway: reads only.
    Status,
    /// Pseudonym vault: re-identify a pseudonymous study or patient (audited).
    #[command(subcommand)]
    Vault(dicom_gateway::vault::VaultCmd),
    /// Quarantine review: list, release, delete.
    #[command(subcommand)]
    Quarantine(dicom_gateway::quarantine::QuarantineCmd),
    /// Batch de-identification of a directory tree (same engine and key as the gateway).
    Deid(dicom_gateway::deid_cmd::DeidArgs),
}

fn main() -> ExitCode {
    mado_core::no_library_backtraces();
    let cli = Cli::parse();
    let cfg = match GatewayConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg),
        Command::Status => status(&cfg),
        Command::Vault(c) => dicom_gateway::vault::main(&cfg, c),
        Command::Quarantine(c) => dicom_gateway::quarantine::main(&cfg, c),
        Command::Deid(a) => dicom_gateway::deid_cmd::main(&cfg, a),
    }
}

fn status(cfg: &GatewayConfig) -> ExitCode {
    let spool = dicom_gateway::spool::Spool::at(&cfg.spool.dir);
    match spool.stats() {
        Ok(st) => {
            let v = serde_json::json!({
                "spool": cfg.spool.dir.display().to_string(),
                "incoming": st.incoming,
                "pending": st.pending,
                "pending_bytes": st.pending_bytes,
                "failed": st.failed,
                "failed_bytes": st.failed_bytes,
                "quarantined": st.quarantined,
                "quarantined_bytes": st.quarantined_bytes,
                "oldest_pending_secs": st.oldest_pending_secs,
            });
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "mado-gateway status: cannot read spool {}: {e}",
                cfg.spool.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn serve(cfg: GatewayConfig) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        dicom_gateway::quarantine_http::install(&cfg);
        let gw = Gateway::build(cfg)
            .await?
            .with_admin_routes(vec![dicom_gateway::quarantine_http::routes]);
        let addr = gw.local_addr();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mado-gateway listening dicom={addr}");
        if let Some(tls) = gw.tls_local_addr() {
            let _ = writeln!(out, "mado-gateway listening dicom-tls={tls}");
        }
        let _ = out.flush();
        drop(out);
        gw.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mado-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
