//! Logging set-up: tracing to stderr (stdout carries only the readiness
//! line). `RUST_LOG` selects levels; `MADO_LOG_FORMAT=json` switches to
//! JSON lines. SQL statement logging is off: statements can carry patient
//! attributes.

use std::io::IsTerminal;
use tracing_subscriber::{fmt, EnvFilter};

const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=info,actix_server=warn";

/// Install the global subscriber (a second call is a no-op).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("MADO_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
