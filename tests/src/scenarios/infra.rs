//! `infra/`: the example configs mirror the embedded defaults exactly and
//! are accepted by the real binaries.

use crate::apps::{GATEWAY_READY, SERVER_READY};
use crate::bins::{gateway_bin, server_bin};
use crate::process::{run_with_timeout, scrub_env, Proc};
use crate::util::{scaled, workspace_root};
use std::process::Command;
use std::time::Duration;

fn parse(rel: &str) -> toml::Table {
    let path = workspace_root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_configs_mirror_the_embedded_defaults() {
    for (example, defaults) in [
        (
            "infra/gateway.example.toml",
            "dicom-gateway/config/defaults.toml",
        ),
        ("infra/server.example.toml", "server/config/defaults.toml"),
    ] {
        assert_eq!(
            parse(example),
            parse(defaults),
            "{example} must list every key of {defaults} with the same value"
        );
    }
}

#[test]
fn example_configs_are_accepted_by_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace_root();

    let mut cmd = Command::new(gateway_bin().unwrap());
    scrub_env(&mut cmd);
    cmd.current_dir(dir.path())
        .arg("--config")
        .arg(root.join("infra/gateway.example.toml"))
        .env("MADO_GATEWAY__DICOM__BIND", "127.0.0.1:0")
        .env("MADO_GATEWAY__SPOOL__DIR", dir.path().join("spool"))
        .env("MADO_GATEWAY__STORAGE__PATH", dir.path().join("objects"))
        .env("MADO_GATEWAY__UPLOAD__ENABLED", "false")
        // The built-in demo secrets are refused outside demo mode.
        .env(
            "MADO_GATEWAY__SERVER__TOKEN",
            "infra-test-gateway-token-0123456789",
        )
        .env(
            "MADO_GATEWAY__DEID__SECRET",
            "infra-test-deid-secret-0123456789",
        )
        .env(
            "MADO_GATEWAY__VAULT__KEY",
            "infra-test-vault-key-0123456789",
        );
    let (gw, _) = Proc::spawn(
        "mado-gateway",
        cmd,
        dir.path(),
        Some(GATEWAY_READY),
        scaled(Duration::from_secs(60)),
    )
    .unwrap();
    drop(gw);

    let server_cmd = |sub: &str| {
        let mut cmd = Command::new(server_bin().unwrap());
        scrub_env(&mut cmd);
        cmd.current_dir(dir.path())
            .arg("--config")
            .arg(root.join("infra/server.example.toml"))
            .arg(sub)
            .env("MADO_SERVER__HTTP__BIND", "127.0.0.1:0")
            .env(
                "MADO_SERVER__DATABASE__URL",
                format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
            )
            .env("MADO_SERVER__STORAGE__PATH", dir.path().join("objects"))
            // The built-in demo secrets are refused outside demo mode.
            .env("MADO_SERVER__AUDIT__KEY", "infra-test-audit-key-0123456789")
            .env(
                "MADO_SERVER__SECURITY__SECRET",
                "infra-test-server-secret-0123456789abcdef",
            )
            .env(
                "MADO_SERVER__INGEST__GATEWAY_TOKENS",
                r#"["infra-test-gateway-token-0123456789"]"#,
            );
        cmd
    };
    let (status, out, err) =
        run_with_timeout(server_cmd("migrate"), scaled(Duration::from_secs(60))).unwrap();
    assert!(status.success(), "migrate: {status}\n{out}\n{err}");
    let (srv, _) = Proc::spawn(
        "mado-server",
        server_cmd("serve"),
        dir.path(),
        Some(SERVER_READY),
        scaled(Duration::from_secs(60)),
    )
    .unwrap();
    drop(srv);
}
