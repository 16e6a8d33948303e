//! Start the real `mado-server` and `mado-gateway` binaries, each in a fresh
//! temp dir with a generated config file.

use crate::process::{run_with_timeout, scrub_env, Proc};
use crate::storage::Storage;
use crate::util::scaled;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

pub const SERVER_READY: &str = "mado-server listening http=";
pub const GATEWAY_READY: &str = "mado-gateway listening dicom=";

/// Keep temp dirs after the test when `MADO_E2E_KEEP=1`.
fn keep_dirs() -> bool {
    std::env::var("MADO_E2E_KEEP").is_ok_and(|v| v == "1")
}

fn fresh_dir(prefix: &str) -> Result<TempDir> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir()?)
}

fn finish_dir(dir: TempDir) {
    if keep_dirs() || std::thread::panicking() {
        let p = dir.keep();
        eprintln!("kept {}", p.display());
    }
}

/// Parse `HOST:PORT` after a readiness prefix.
pub fn parse_addr(line: &str, prefix: &str) -> Result<(String, u16)> {
    let rest = line
        .strip_prefix(prefix)
        .ok_or_else(|| anyhow!("readiness line {line:?} does not start with {prefix:?}"))?;
    let addr = rest.split_whitespace().next().unwrap_or("");
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("readiness line {line:?}: no HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("readiness line {line:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1".to_owned(),
        "::" => "::1".to_owned(),
        h => h.to_owned(),
    };
    Ok((host, port))
}

fn write_toml(path: &Path, t: &toml::Table) -> Result<()> {
    let text = toml::to_string(t).context("serialising config")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn table(pairs: Vec<(&str, toml::Value)>) -> toml::Value {
    toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Merge `extra` into `base` (tables recursively, other values replaced).
fn merge(base: &mut toml::Table, extra: &toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

// ---------------------------------------------------------------- server

/// `[audit] key` of the servers the harness starts.
pub const E2E_AUDIT_KEY: &str = "e2e-audit-key-0123456789abcdef";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `None`: a fresh SQLite file in the server's temp dir.
    pub database_url: Option<String>,
    /// `None`: a local directory in the server's temp dir.
    pub storage: Option<Storage>,
    pub gateway_token: String,
    /// 0: let the OS choose.
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
    /// Extra keys merged over the generated config.
    pub extra: toml::Table,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            storage: None,
            gateway_token: "e2e-gateway-token-0123456789abcdef".into(),
            port: 0,
            admin_user: "admin".into(),
            admin_password: "e2e-admin-password".into(),
            extra: toml::Table::new(),
        }
    }
}

/// A running `mado-server serve`.
pub struct ServerProc {
    pub proc: Proc,
    pub base_url: String,
    pub port: u16,
    pub database_url: String,
    pub config_path: PathBuf,
    pub cfg: ServerConfig,
    dir: Option<TempDir>,
}

impl ServerProc {
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new("."))
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.proc.kill();
        if let Some(d) = self.dir.take() {
            finish_dir(d);
        }
    }
}

fn server_command(bin: &Path, dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    scrub_env(&mut cmd);
    cmd.current_dir(dir)
        .arg("--config")
        .arg(config)
        .env("RUST_BACKTRACE", "1");
    cmd
}

/// Write the config, run `migrate` and `create-admin`, then `serve` and wait
/// for the readiness line.
pub async fn spawn_server(cfg: ServerConfig) -> Result<ServerProc> {
    let bin = crate::bins::server_bin()?;
    let dir = fresh_dir("mado-e2e-server-")?;
    let database_url = cfg
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("mado.db").display()));
    let storage = cfg.storage.clone().unwrap_or_else(|| Storage::Local {
        path: dir.path().join("objects"),
    });
    let mut t = toml::Table::new();
    t.insert(
        "http".into(),
        table(vec![("bind", format!("127.0.0.1:{}", cfg.port).into())]),
    );
    t.insert(
        "database".into(),
        table(vec![("url", database_url.clone().into())]),
    );
    t.insert("storage".into(), toml::Value::Table(storage.to_toml()));
    t.insert(
        "ingest".into(),
        table(vec![(
            "gateway_tokens",
            toml::Value::Array(vec![cfg.gateway_token.clone().into()]),
        )]),
    );
    // Real (test) secrets: the built-in demo ones are refused outside demo mode.
    t.insert("audit".into(), table(vec![("key", E2E_AUDIT_KEY.into())]));
    t.insert(
        "security".into(),
        table(vec![(
            "secret",
            "e2e-server-secret-0123456789abcdef0123".into(),
        )]),
    );
    merge(&mut t, &cfg.extra);
    let config_path = dir.path().join("server.toml");
    write_toml(&config_path, &t)?;

    for (what, args) in [
        ("migrate", vec!["migrate"]),
        (
            "create-admin",
            vec!["create-admin", "--username", cfg.admin_user.as_str()],
        ),
    ] {
        let mut cmd = server_command(&bin, dir.path(), &config_path);
        cmd.args(&args)
            .env("MADO_ADMIN_PASSWORD", &cfg.admin_password);
        let (status, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(60)))?;
        if !status.success() {
            bail!("`mado-server {what}` failed ({status})\nstdout:\n{out}\nstderr:\n{err}");
        }
    }

    let mut cmd = server_command(&bin, dir.path(), &config_path);
    cmd.arg("serve");
    let (proc, line) = Proc::spawn(
        "mado-server",
        cmd,
        dir.path(),
        Some(SERVER_READY),
        scaled(Duration::from_secs(60)),
    )?;
    let line = line.ok_or_else(|| anyhow!("no readiness line"))?;
    let (host, port) = parse_addr(&line, SERVER_READY)?;
    let base_url = if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    };
    Ok(ServerProc {
        proc,
        base_url,
        port,
        database_url,
        config_path,
        cfg,
        dir: Some(dir),
    })
}

// ---------------------------------------------------------------- gateway

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub server_url: String,
    pub token: String,
    pub storage: Storage,
    pub ae_title: String,
    /// `None`: `spool/` in the gateway's temp dir.
    pub spool_dir: Option<PathBuf>,
    pub deid_secret: String,
    pub port: u16,
    pub extra: toml::Table,
}

impl GatewayConfig {
    pub fn new(server_url: &str, token: &str, storage: Storage) -> Self {
        Self {
            server_url: server_url.to_owned(),
            token: token.to_owned(),
            storage,
            ae_title: "MADO".into(),
            spool_dir: None,
            deid_secret: "e2e-deid-secret-not-for-production-0123456789".into(),
            port: 0,
            extra: toml::Table::new(),
        }
    }
}

/// A running `mado-gateway`.
pub struct GatewayProc {
    pub proc: Proc,
    pub dicom_port: u16,
    pub host: String,
    pub spool_dir: PathBuf,
    pub config_path: PathBuf,
    pub cfg: GatewayConfig,
    dir: Option<TempDir>,
}

impl GatewayProc {
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new("."))
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.proc.kill();
        if let Some(d) = self.dir.take() {
            finish_dir(d);
        }
    }
}

pub fn gateway_config_table(cfg: &GatewayConfig, spool: &Path) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert(
        "dicom".into(),
        table(vec![
            ("bind", format!("127.0.0.1:{}", cfg.port).into()),
            ("ae_title", cfg.ae_title.clone().into()),
        ]),
    );
    t.insert(
        "spool".into(),
        table(vec![("dir", spool.display().to_string().into())]),
    );
    t.insert("storage".into(), toml::Value::Table(cfg.storage.to_toml()));
    t.insert(
        "server".into(),
        table(vec![
            ("url", cfg.server_url.clone().into()),
            ("token", cfg.token.clone().into()),
        ]),
    );
    t.insert(
        "deid".into(),
        table(vec![("secret", cfg.deid_secret.clone().into())]),
    );
    // The built-in demo vault key is refused outside demo mode.
    t.insert(
        "vault".into(),
        table(vec![(
            "key",
            "e2e-vault-key-not-for-production-0123".into(),
        )]),
    );
    merge(&mut t, &cfg.extra);
    t
}

pub async fn spawn_gateway(cfg: GatewayConfig) -> Result<GatewayProc> {
    let bin = crate::bins::gateway_bin()?;
    let dir = fresh_dir("mado-e2e-gateway-")?;
    let spool_dir = cfg
        .spool_dir
        .clone()
        .unwrap_or_else(|| dir.path().join("spool"));
    let t = gateway_config_table(&cfg, &spool_dir);
    let config_path = dir.path().join("gateway.toml");
    write_toml(&config_path, &t)?;
    let mut cmd = Command::new(&bin);
    scrub_env(&mut cmd);
    cmd.current_dir(dir.path())
        .arg("--config")
        .arg(&config_path)
        .env("RUST_BACKTRACE", "1");
    let (proc, line) = Proc::spawn(
        "mado-gateway",
        cmd,
        dir.path(),
        Some(GATEWAY_READY),
        scaled(Duration::from_secs(60)),
    )?;
    let line = line.ok_or_else(|| anyhow!("no readiness line"))?;
    let (host, dicom_port) = parse_addr(&line, GATEWAY_READY)?;
    Ok(GatewayProc {
        proc,
        dicom_port,
        host,
        spool_dir,
        config_path,
        cfg,
        dir: Some(dir),
    })
}

/// Run `bin --config FILE [args]` where FILE holds `text`, expecting it to
/// fail fast; returns (exit status, stdout, stderr, config path).
pub fn run_with_config_text(
    bin: &Path,
    file_name: &str,
    text: &str,
    args: &[&str],
) -> Result<(std::process::ExitStatus, String, String, PathBuf, TempDir)> {
    let dir = fresh_dir("mado-e2e-badcfg-")?;
    let path = dir.path().join(file_name);
    std::fs::write(&path, text)?;
    let mut cmd = Command::new(bin);
    scrub_env(&mut cmd);
    cmd.current_dir(dir.path())
        .arg("--config")
        .arg(&path)
        .args(args);
    let (status, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(30)))?;
    Ok((status, out, err, path, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_readiness_lines() {
        assert_eq!(
            parse_addr("mado-server listening http=127.0.0.1:4321", SERVER_READY).unwrap(),
            ("127.0.0.1".into(), 4321)
        );
        assert_eq!(
            parse_addr("mado-gateway listening dicom=0.0.0.0:104", GATEWAY_READY).unwrap(),
            ("127.0.0.1".into(), 104)
        );
        assert!(parse_addr("mado-server listening http=nope", SERVER_READY).is_err());
    }
}
