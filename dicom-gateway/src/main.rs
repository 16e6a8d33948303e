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

#[derive(Subcommand)]
enum Command {
    /// Run the DICOM SCP and the upload worker (default).
    Serve,
}

fn main() -> ExitCode {
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
        let gw = Gateway::build(cfg).await?;
        let addr = gw.local_addr();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mado-gateway listening dicom={addr}");
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
