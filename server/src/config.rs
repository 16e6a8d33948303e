//! `mado-server` configuration: embedded `config/defaults.toml`, then the
//! `--config` file, then `MADO_SERVER__SECTION__KEY` environment variables
//! (see `mado_core::config`). Unknown keys are rejected.

use mado_store::StoreConfig;
use serde::Deserialize;
use std::fmt;
use std::path::Path;

pub use mado_core::config::ConfigError;

/// The compiled-in defaults.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MADO_SERVER__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub storage: StoreConfig,
    pub ingest: IngestSettings,
    pub session: SessionSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `HOST:PORT` to bind; port 0 picks a free port.
    pub bind: String,
    /// Externally visible base URL, e.g. `https://mado.example.org`.
    #[serde(default)]
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH?mode=rwc` or `postgres://USER[:PASS]@HOST:PORT/DB`.
    pub url: DatabaseUrl,
}

/// A database URL; `Debug` hides a password if there is one.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any `user:password@` credentials replaced, for logs.
    pub fn redacted(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://***@{}", &self.0[..scheme_end], &self.0[at + 1..])
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Bearer tokens accepted from gateways.
    pub gateway_tokens: Vec<Secret>,
}

/// A secret string from the config; never printed by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Minutes without a request after which a session ends.
    pub idle_minutes: u32,
    /// Hours after sign-in after which a session ends regardless.
    pub absolute_hours: u32,
    /// Mark cookies `Secure` (HTTPS deployments).
    pub secure_cookie: bool,
}

impl Settings {
    /// Load defaults → `file` → environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let settings: Settings = mado_core::config::load(DEFAULTS, file, ENV_PREFIX)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() && !self.http.bind.contains(':')
        {
            return Err(ConfigError(format!(
                "field `http.bind`: expected HOST:PORT, found {:?}",
                self.http.bind
            )));
        }
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "field `database.url`: expected a sqlite:// or postgres:// URL".into(),
            ));
        }
        if self
            .ingest
            .gateway_tokens
            .iter()
            .any(|t| t.expose().len() < 16)
        {
            return Err(ConfigError(
                "field `ingest.gateway_tokens`: every token must be at least 16 characters".into(),
            ));
        }
        if self.session.idle_minutes == 0 || self.session.absolute_hours == 0 {
            return Err(ConfigError(
                "field `session`: idle_minutes and absolute_hours must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        let s: Settings = mado_core::config::load(DEFAULTS, None, "MADO_TEST_NOTHING__").unwrap();
        s.validate().unwrap();
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.session.idle_minutes, 30);
        assert!(format!("{s:?}").contains("<redacted>"));
        assert!(!format!("{s:?}").contains("mado-demo-gateway-token"));
    }

    #[test]
    fn redacts_db_password() {
        let u = DatabaseUrl("postgres://u:pw@h:5432/db".into());
        assert_eq!(u.redacted(), "postgres://***@h:5432/db");
        assert!(!format!("{u:?}").contains("pw"));
    }

    #[test]
    fn unknown_field_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[http]\nbindd = \"x\"\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("bindd"), "{e}");
        assert!(!e.contains('\n'));
    }
}
