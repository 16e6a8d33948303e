//! DICOM TLS (PS3.15 Annex B) with client certificates: a CA, a server
//! certificate (SAN 127.0.0.1/localhost) and a client certificate are made
//! at test time with the `openssl` CLI; the gateway gets a `[dicom.tls]`
//! listener with `client_ca` (mutual TLS). dcmtk `echoscu`/`storescu +tls`
//! with the client certificate succeed and the instances are uploaded and
//! indexed; a TLS client without a certificate, and a plain client on the
//! TLS port, fail; the allow-list applies as on the plain listener, which
//! keeps working.

use super::common::*;
use crate::apps::{spawn_gateway, spawn_server, GatewayConfig, ServerConfig};
use crate::dcmtk::dcmtk_storescu;
use crate::process::run_with_timeout;
use crate::samples::SampleOptions;
use crate::storage::Storage;
use crate::util::scaled;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TLS_READY: &str = "mado-gateway listening dicom-tls=";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(60))?;
    if !status.success() {
        bail!("openssl {args:?} failed: {status}\n{out}\n{err}");
    }
    Ok(())
}

/// `ca.pem`, `server.{pem,key}` (SAN 127.0.0.1, localhost), `client.{pem,key}`.
fn make_pki(dir: &Path) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Mado e2e CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"),
        )?;
        let (key, csr, pem, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN=mado-e2e-{name}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subj,
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        )?;
    }
    Ok(())
}

/// How a dcmtk tool connects.
enum Tls<'a> {
    /// `+tls KEY CERT +cf CA`
    Client(&'a Path),
    /// `+tla +cf CA`: TLS without a client certificate
    Anonymous(&'a Path),
    /// plain TCP
    Off,
}

fn tls_args(cmd: &mut Command, tls: &Tls) {
    match tls {
        Tls::Client(pki) => {
            cmd.arg("+tls")
                .arg(pki.join("client.key"))
                .arg(pki.join("client.pem"))
                .arg("+cf")
                .arg(pki.join("ca.pem"));
        }
        Tls::Anonymous(pki) => {
            cmd.arg("+tla").arg("+cf").arg(pki.join("ca.pem"));
        }
        Tls::Off => {}
    }
}

/// `/usr/bin/echoscu -v [tls] -aec MADO 127.0.0.1 PORT` → (exit ok, output).
fn echo(tls: Tls, port: u16) -> (bool, String) {
    echo_as("MADOTEST", tls, port)
}

fn echo_as(calling: &str, tls: Tls, port: u16) -> (bool, String) {
    let mut cmd = Command::new("/usr/bin/echoscu");
    cmd.env("TCP_NODELAY", "1").arg("-v");
    tls_args(&mut cmd, &tls);
    cmd.args(["-aet", calling, "-aec", "MADO", "-to", "20", "-ta", "20"])
        .args(["127.0.0.1", &port.to_string()]);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(60)).unwrap();
    (status.success(), format!("{out}\n{err}"))
}

/// dcmtk `storescu -v [tls] -aec MADO 127.0.0.1 PORT files…` → (exit ok, successes, output).
fn store(tls: Tls, port: u16, files: &[PathBuf]) -> (bool, usize, String) {
    let mut cmd = Command::new(dcmtk_storescu().unwrap());
    cmd.env("TCP_NODELAY", "1").arg("-v");
    tls_args(&mut cmd, &tls);
    cmd.args(["-aet", "MADOTEST", "-aec", "MADO"])
        .args(["-to", "30", "-ta", "30", "-td", "120", "--required"])
        .args(["127.0.0.1", &port.to_string()])
        .args(files);
    let (status, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(120))).unwrap();
    let all = format!("{out}\n{err}");
    let ok = all
        .lines()
        .filter(|l| l.contains("Received Store Response") && l.contains("(Success)"))
        .count();
    (status.success(), ok, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tls_mutual_auth_push_is_uploaded_and_indexed() {
    let pki = tempfile::Builder::new()
        .prefix("mado-e2e-pki-")
        .tempdir()
        .unwrap();
    make_pki(pki.path()).unwrap();
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let (_dir, samples) = samples(&SampleOptions {
        ct_slices: 3,
        ct2_slices: 0,
        cr_images: 1,
        seed: 23,
        japanese: false,
    })
    .unwrap();

    let server = spawn_server(ServerConfig {
        storage: Some(storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mut gcfg = GatewayConfig::new(&server.base_url, &server.cfg.gateway_token, storage.clone());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    gcfg.extra = fast_upload_retries();
    let mut tls = toml::Table::new();
    tls.insert("cert".into(), cert.into());
    tls.insert("key".into(), key.into());
    tls.insert("client_ca".into(), ca.into());
    tls.insert("bind".into(), "127.0.0.1:0".into());
    let mut dicom = toml::Table::new();
    dicom.insert("tls".into(), toml::Value::Table(tls));
    let mut allowed = toml::Table::new();
    allowed.insert("ae_title".into(), "MADOTEST".into());
    dicom.insert(
        "allowed".into(),
        toml::Value::Array(vec![toml::Value::Table(allowed)]),
    );
    gcfg.extra.insert("dicom".into(), toml::Value::Table(dicom));
    let gw = spawn_gateway(gcfg).await.unwrap();

    // the TLS listener is announced on the line after the readiness line
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let tls_port: u16 = loop {
        let out = gw.proc.stdout_text();
        if let Some(port) = out
            .lines()
            .find_map(|l| l.strip_prefix(TLS_READY))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
        {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{TLS_READY}` line:\n{}",
            gw.proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gw.proc
            .stdout_text()
            .starts_with("mado-gateway listening dicom="),
        "the readiness line must stay first"
    );
    assert_ne!(tls_port, gw.dicom_port);

    // C-ECHO over mutual TLS
    let (ok, out) = echo(Tls::Client(pki.path()), tls_port);
    assert!(ok && out.contains("(Success)"), "echoscu +tls:\n{out}");

    // same allow-list as the plain listener
    let (ok, out) = echo_as("STRANGER", Tls::Client(pki.path()), tls_port);
    assert!(
        !ok && out.contains("Calling AE Title Not Recognized"),
        "an unknown calling AE over TLS must be rejected (reason 3):\n{out}"
    );

    // no client certificate: the handshake is refused
    let (ok, out) = echo(Tls::Anonymous(pki.path()), tls_port);
    assert!(!ok, "TLS without a client certificate must fail:\n{out}");
    let files = samples.paths();
    let (ok, n, out) = store(Tls::Anonymous(pki.path()), tls_port, &files[..1]);
    assert!(!ok && n == 0, "storescu +tla must fail:\n{out}");

    // plain DICOM on the TLS port fails; TLS on the plain port fails
    let (ok, out) = echo(Tls::Off, tls_port);
    assert!(!ok, "plain echoscu on the TLS port must fail:\n{out}");
    let (ok, n, out) = store(Tls::Off, tls_port, &files[..1]);
    assert!(
        !ok && n == 0,
        "plain storescu on the TLS port must fail:\n{out}"
    );
    let (ok, out) = echo(Tls::Client(pki.path()), gw.dicom_port);
    assert!(!ok, "TLS on the plain port must fail:\n{out}");
    // nothing was spooled by the refused attempts
    let pending = std::fs::read_dir(gw.spool_dir.join("pending"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pending, 0);

    // C-STORE over mutual TLS: every instance acknowledged, uploaded, indexed
    let (ok, n, out) = store(Tls::Client(pki.path()), tls_port, &files);
    assert!(
        ok && n == files.len(),
        "storescu +tls: {n}/{} acknowledged:\n{out}\n{}",
        files.len(),
        gw.proc.logs()
    );
    let keys = wait_for_objects(&storage, files.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let summary = check_store(&storage, &samples, &keys).await.unwrap();
    summary.assert_no_leaks();
    wait_indexed(&server, &summary, Duration::from_secs(120))
        .await
        .unwrap();

    // the plain listener still works next to the TLS one
    let (ok, out) = echo(Tls::Off, gw.dicom_port);
    assert!(ok && out.contains("(Success)"), "plain echoscu:\n{out}");
    let log = gw.proc.stderr_text();
    assert!(
        log.contains("tls=true"),
        "TLS associations are logged as such"
    );
}
