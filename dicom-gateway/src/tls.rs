//! DICOM TLS (PS3.15 Annex B, secure transport connection profiles) for the
//! SCP: a second listener (`[dicom.tls] bind`) whose connections start with
//! a TLS handshake (rustls, TLS 1.2/1.3, ring provider), then run the same
//! association handling as the plain listener. With `client_ca`, clients
//! must present a certificate issued by that CA (mutual TLS).

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// A TLS setup error naming the configuration field at fault.
#[derive(Debug, thiserror::Error)]
#[error("field `{field}`: {what}")]
pub struct TlsError {
    pub field: &'static str,
    pub what: String,
}

fn err(field: &'static str, what: impl Into<String>) -> TlsError {
    TlsError {
        field,
        what: what.into(),
    }
}

fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string().replace(['\n', '\r'], " ")
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    if path.as_os_str().is_empty() {
        return Err(err(field, "expected a PEM file path"));
    }
    std::fs::read(path).map_err(|e| err(field, format!("cannot read {}: {e}", path.display())))
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                field,
                format!("{}: bad PEM: {}", path.display(), one_line(e)),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            field,
            format!("{}: no CERTIFICATE block found", path.display()),
        ));
    }
    Ok(certs)
}

/// Build the rustls server configuration from `[dicom.tls]`.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("dicom.tls.cert", &cfg.cert)?;
    let key_pem = read("dicom.tls.key", &cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            "dicom.tls.key",
            format!(
                "{}: no usable PEM private key: {}",
                cfg.key.display(),
                one_line(e)
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("dicom.tls", one_line(e)))?;
    let builder = match cfg.client_ca.as_deref() {
        Some(ca) if !ca.as_os_str().is_empty() => {
            let mut roots = RootCertStore::empty();
            for c in certs("dicom.tls.client_ca", ca)? {
                roots.add(c).map_err(|e| {
                    err(
                        "dicom.tls.client_ca",
                        format!("{}: {}", ca.display(), one_line(e)),
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        err(
                            "dicom.tls.client_ca",
                            format!("{}: {}", ca.display(), one_line(e)),
                        )
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        err(
            "dicom.tls.key",
            format!(
                "does not match the certificate or is unsupported: {}",
                one_line(e)
            ),
        )
    })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(cert: &str, key: &str) -> TlsConfig {
        TlsConfig {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
            client_ca: None,
            bind: "127.0.0.1:0".into(),
        }
    }

    #[test]
    fn missing_files_name_the_field() {
        let e = server_config(&cfg("/nonexistent/cert.pem", "/nonexistent/key.pem")).unwrap_err();
        assert_eq!(e.field, "dicom.tls.cert");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn config_file_error_is_one_line_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(
            &f,
            "[dicom.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let err = crate::config::GatewayConfig::load(Some(&f))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dicom.tls.cert") && err.contains("gw.toml"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        std::fs::write(&f, "[dicom.tls]\ncert = \"c.pem\"\nbogus = 1\n").unwrap();
        let err = crate::config::GatewayConfig::load(Some(&f))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_pem_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pem");
        std::fs::write(&f, "not a pem file\n").unwrap();
        let p = f.to_str().unwrap();
        let e = server_config(&cfg(p, p)).unwrap_err();
        assert_eq!(e.field, "dicom.tls.cert", "{e}");
        assert!(e.to_string().contains("dicom.tls.cert"), "{e}");
    }
}
