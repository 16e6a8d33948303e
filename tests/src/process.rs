//! A child process with logs in files, a readiness line, and kill-on-drop.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running child process. Killed (and its logs printed if the test is
/// failing) when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Remove every inherited `MADO_*` variable so a developer's environment
/// cannot leak into a test's configuration.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MADO_") {
            cmd.env_remove(&k);
        }
    }
}

impl Proc {
    /// Start `cmd` with stdout and stderr going to `<log_dir>/<name>.{stdout,stderr}.log`.
    /// If `ready_prefix` is given, wait (up to `timeout`) for a stdout line
    /// starting with it and return that line.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        ready_prefix: Option<&str>,
        timeout: Duration,
    ) -> Result<(Self, Option<String>)> {
        std::fs::create_dir_all(log_dir)?;
        let stdout_log = log_dir.join(format!("{name}.stdout.log"));
        let stderr_log = log_dir.join(format!("{name}.stderr.log"));
        let err_file = File::create(&stderr_log)?;
        let mut out_file = File::create(&stdout_log)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {:?}", cmd.get_program()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let prefix = ready_prefix.map(str::to_owned);
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out_file, "{line}");
                let _ = out_file.flush();
                if !sent {
                    if let Some(p) = &prefix {
                        if line.starts_with(p.as_str()) {
                            let _ = tx.send(line);
                            sent = true;
                        }
                    }
                }
            }
        });
        let mut me = Self {
            name: name.to_owned(),
            child: Some(child),
            stdout_log,
            stderr_log,
            reader: Some(reader),
        };
        let Some(prefix) = ready_prefix else {
            return Ok((me, None));
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => return Ok((me, Some(line))),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process has (almost certainly) exited
                    let status = me.wait_exit(Duration::from_secs(5));
                    bail!(
                        "{name} exited ({}) before printing `{prefix}…`\n{}",
                        status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "still running".into()),
                        me.logs()
                    );
                }
            }
            if let Some(status) = me.try_status() {
                bail!(
                    "{name} exited ({status}) before printing `{prefix}…`\n{}",
                    me.logs()
                );
            }
            if Instant::now() >= deadline {
                me.kill();
                bail!(
                    "{name} did not print `{prefix}…` within {timeout:?}\n{}",
                    me.logs()
                );
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kill the process (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Both logs, last 200 lines each, for error messages.
    pub fn logs(&self) -> String {
        format!(
            "----- {name} stdout ({}) -----\n{}\n----- {name} stderr ({}) -----\n{}",
            self.stdout_log.display(),
            tail(&self.stdout_text(), 200),
            self.stderr_log.display(),
            tail(&self.stderr_text(), 200),
            name = self.name
        )
    }

    /// Copy both logs to `target/e2e-artifacts/logs/<test>-<name>.*.log`.
    pub fn keep_logs(&self) {
        let dir = crate::util::artifacts_dir("logs");
        let t = crate::util::test_name();
        let _ = std::fs::copy(
            &self.stdout_log,
            dir.join(format!("{t}-{}.stdout.log", self.name)),
        );
        let _ = std::fs::copy(
            &self.stderr_log,
            dir.join(format!("{t}-{}.stderr.log", self.name)),
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            self.keep_logs();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Run a command to completion with a deadline; returns (status, stdout, stderr).
pub fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(ExitStatus, String, String)> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out)?))
        .stderr(Stdio::from(File::create(&err)?));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                cmd.get_program(),
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((
        status,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    ))
}
