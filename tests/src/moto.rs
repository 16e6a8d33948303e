//! A private moto S3 server (`moto_server`) on a probed free port.

use crate::process::Proc;
use crate::storage::S3Spec;
use crate::util::{free_port, scaled, tool_dirs, wait_for, which};
use anyhow::{anyhow, Result};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

pub struct Moto {
    pub endpoint: String,
    pub port: u16,
    proc: Proc,
    _dir: TempDir,
}

const HINT: &str =
    "install it with scripts/install-test-deps.sh (pip install 'moto[server]' into .tools/venv)";

/// Start `moto_server -H 127.0.0.1 -p PORT` and wait until it answers HTTP.
pub async fn moto() -> Result<Moto> {
    let bin = which("moto_server", &tool_dirs())
        .ok_or_else(|| anyhow!("moto_server not found on PATH or in .tools/venv/bin; {HINT}"))?;
    let dir = tempfile::Builder::new()
        .prefix("mado-e2e-moto-")
        .tempdir()?;
    // A port can be taken between the probe and the bind: retry a few times.
    let mut last_err = None;
    for _ in 0..3 {
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.current_dir(dir.path())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let (mut proc, _) = Proc::spawn("moto", cmd, dir.path(), None, Duration::ZERO)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let probe = wait_for(
            "moto_server to answer",
            scaled(Duration::from_secs(30)),
            || {
                let client = client.clone();
                let url = format!("{endpoint}/");
                async move {
                    match client.get(&url).send().await {
                        Ok(_) => Ok(Some(())),
                        Err(e) => Err(e.into()),
                    }
                }
            },
        )
        .await;
        match (probe, proc.try_status()) {
            (Ok(()), None) => {
                return Ok(Moto {
                    endpoint,
                    port,
                    proc,
                    _dir: dir,
                })
            }
            (r, status) => {
                last_err = Some(anyhow!(
                    "moto_server on port {port} not usable ({:?}, exit {:?})\n{}",
                    r.err(),
                    status,
                    proc.logs()
                ));
                proc.kill();
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("moto_server failed to start")))
}

impl Moto {
    /// An S3 spec for a fresh bucket name on this server.
    pub fn bucket(&self, name: &str, create_bucket: bool) -> S3Spec {
        S3Spec {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            bucket: name.to_owned(),
            access_key_id: "mado-e2e-test".into(),
            secret_access_key: "mado-e2e-test-secret".into(),
            create_bucket,
        }
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}
