//! Who may send: the calling-AE allow-list bound to source addresses and
//! the called-AE check (A-ASSOCIATE-RJ with the PS3.8 reasons), and C-ECHO
//! as a health check of the spool. Real gateway, dcmtk `echoscu`.

use crate::apps::{spawn_gateway, GatewayConfig};
use crate::process::run_with_timeout;
use crate::storage::Storage;
use std::process::Command;
use std::time::Duration;

/// `echoscu -v -aet CALLING -aec CALLED 127.0.0.1 PORT` → (exit ok, output).
fn echo(calling: &str, called: &str, port: u16) -> (bool, String) {
    let mut cmd = Command::new("/usr/bin/echoscu");
    cmd.env("TCP_NODELAY", "1")
        .args([
            "-v", "-aet", calling, "-aec", called, "-to", "20", "-ta", "20",
        ])
        .args(["127.0.0.1", &port.to_string()]);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
    (status.success(), format!("{out}\n{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_allow_list_and_echo_health() {
    let objects = tempfile::tempdir().unwrap();
    let mut cfg = GatewayConfig::new(
        "http://127.0.0.1:9",
        "e2e-gateway-token-0123456789abcdef",
        Storage::Local {
            path: objects.path().join("objects"),
        },
    );
    cfg.extra = toml::toml! {
        [dicom]
        check_called_ae_title = true
        [[dicom.allowed]]
        ae_title = "MADOTEST"
        hosts = ["127.0.0.0/8"]
        [[dicom.allowed]]
        ae_title = "REMOTECT"
        hosts = ["10.99.0.0/16"]
        [[dicom.allowed]]
        ae_title = "ANYWHERE"
        [upload]
        enabled = false
        [admin]
        bind = "127.0.0.1:0"
    };
    let gw = spawn_gateway(cfg).await.unwrap();
    let port = gw.dicom_port;

    let (ok, out) = echo("MADOTEST", "MADO", port);
    assert!(
        ok && out.contains("Success"),
        "allowed AE from its network:\n{out}"
    );
    let (ok, out) = echo("ANYWHERE", "MADO", port);
    assert!(ok, "allowed AE without address binding:\n{out}");

    for calling in ["STRANGER", "REMOTECT"] {
        let (ok, out) = echo(calling, "MADO", port);
        assert!(!ok, "{calling} must be rejected:\n{out}");
        assert!(
            out.contains("Rejected Permanent") && out.contains("Calling AE Title Not Recognized"),
            "{calling}: expected A-ASSOCIATE-RJ permanent, reason 3:\n{out}"
        );
    }
    let (ok, out) = echo("MADOTEST", "NOTMADO", port);
    assert!(!ok, "wrong called AE must be rejected:\n{out}");
    assert!(
        out.contains("Called AE Title Not Recognized"),
        "expected reason 7:\n{out}"
    );

    // C-ECHO reports the spool's health
    let incoming = gw.spool_dir.join("incoming");
    std::fs::remove_dir_all(&incoming).unwrap();
    let (_, out) = echo("MADOTEST", "MADO", port);
    assert!(
        out.contains("Received Echo Response") && !out.contains("(Success)"),
        "an unwritable spool must fail C-ECHO:\n{out}\n{}",
        gw.proc.logs()
    );
    std::fs::create_dir(&incoming).unwrap();
    let (ok, out) = echo("MADOTEST", "MADO", port);
    assert!(ok && out.contains("Success"), "healthy again:\n{out}");

    // admin endpoint: JSON /status and Prometheus /metrics
    let log = gw.proc.stderr_text();
    let addr = log
        .split("admin=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin address in the log:\n{log}"))
        .to_string();
    let http = reqwest::Client::new();
    let st: serde_json::Value = http
        .get(format!("http://{addr}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["spool"]["pending"], 0, "{st}");
    let m = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "mado_gateway_associations_rejected_total",
        "mado_gateway_spool_pending",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics:\n{m}");
    }

    // `mado-gateway status` (read-only, next to the running gateway)
    let mut cmd = Command::new(crate::bins::gateway_bin().unwrap());
    cmd.arg("--config").arg(&gw.config_path).arg("status");
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pending"], 0, "{out}");
    assert_eq!(v["quarantined"], 0, "{out}");
}
