//! `mado-server serve` refuses the built-in demo secrets unless demo mode
//! is on, with one line saying why.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mado-server"));
    cmd.env_clear()
        .current_dir(dir)
        .arg("serve")
        .env("MADO_SERVER__HTTP__BIND", "127.0.0.1:0")
        .env(
            "MADO_SERVER__DATABASE__URL",
            format!("sqlite://{}?mode=rwc", dir.join("m.db").display()),
        )
        .env("MADO_SERVER__STORAGE__PATH", dir.join("objects"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The first stdout line (the readiness line), then the process is killed.
fn first_line(mut child: std::process::Child) -> String {
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    let _ = BufReader::new(out).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn demo_secrets_refused_outside_demo_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(dir.path(), &[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for field in ["audit.key", "security.secret", "ingest.gateway_tokens"] {
        assert!(err.contains(field), "{err}");
    }
    assert!(err.contains("demo mode"), "{err}");

    // Only the demo gateway token left: still refused, naming it alone.
    let real = [
        ("MADO_SERVER__AUDIT__KEY", "a real audit key 0123456789"),
        (
            "MADO_SERVER__SECURITY__SECRET",
            "a real server secret 0123456789abcdef",
        ),
    ];
    let out = serve(dir.path(), &real).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ingest.gateway_tokens") && !err.contains("audit.key"),
        "{err}"
    );

    // Real secrets: starts.
    let mut all = real.to_vec();
    all.push((
        "MADO_SERVER__INGEST__GATEWAY_TOKENS",
        r#"["a real gateway token 0123456789"]"#,
    ));
    let line = first_line(serve(dir.path(), &all));
    assert!(line.starts_with("mado-server listening"), "{line:?}");

    // Demo mode: starts with the demo secrets.
    let line = first_line(serve(dir.path(), &[("MADO_SERVER__DEMO__ENABLED", "true")]));
    assert!(line.starts_with("mado-server listening"), "{line:?}");
}
