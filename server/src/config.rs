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
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub ohif: OhifSettings,
    /// OpenID Connect sign-in; off when absent.
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
    #[serde(default)]
    pub limits: LimitsSettings,
    /// Demo mode: the built-in demo secrets are accepted.
    #[serde(default)]
    pub demo: DemoSettings,
}

/// `[limits]`: bounds on hostile or merely huge input (DICOMweb, rendering).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Largest STOW-RS request body (bytes): 413 beyond, before buffering.
    pub stow_max_bytes: u64,
    /// Deepest sequence nesting of a DICOM data set the server parses.
    pub dicom_max_depth: usize,
    /// Largest inflated size of a Deflated data set (bytes).
    pub dicom_max_inflated: u64,
    /// Most frames in one WADO-RS frames request.
    pub max_frames_per_request: usize,
    /// Largest frames / bulk data answer built in memory (bytes).
    pub max_answer_bytes: u64,
    /// Bytes that decoding, rendering and STOW may hold at once; requests
    /// beyond it wait for their share.
    pub memory_budget: u64,
    /// Requests waiting for the memory budget at once; beyond, 503 with
    /// Retry-After.
    pub memory_queue: usize,
    /// Longest wait for the memory budget (seconds) before a 503.
    pub memory_wait_seconds: u64,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            stow_max_bytes: 512 * 1024 * 1024,
            dicom_max_depth: 32,
            dicom_max_inflated: 256 * 1024 * 1024,
            max_frames_per_request: 256,
            max_answer_bytes: 512 * 1024 * 1024,
            memory_budget: 1024 * 1024 * 1024,
            memory_queue: 64,
            memory_wait_seconds: 30,
        }
    }
}

impl LimitsSettings {
    /// The structure limits for [`mado_core::guard`].
    pub fn guard(&self) -> mado_core::guard::Limits {
        mado_core::guard::Limits {
            max_depth: self.dicom_max_depth,
            max_inflated: self.dicom_max_inflated,
            ..Default::default()
        }
    }
}

/// `[demo]`: whether the built-in demo secrets may be used
/// (`scripts/demo.sh` turns it on; `MADO_SERVER__DEMO__ENABLED=true`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    #[serde(default)]
    pub enabled: bool,
}

/// The built-in demo audit key (accepted in demo mode only).
pub const DEMO_AUDIT_KEY: &str = "mado-demo-audit-key-change-me";
/// The built-in demo server secret (accepted in demo mode only).
pub const DEMO_SERVER_SECRET: &str = "mado-demo-server-secret-change-me";
/// The built-in demo gateway token (accepted in demo mode only).
pub const DEMO_GATEWAY_TOKEN: &str = "mado-demo-gateway-token";

/// `[oidc]`: sign-in through an OpenID Provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `https://mado.example.org/auth/oidc/callback`
    pub redirect_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID token claim naming the Mado role (optional).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// Role of users created on first sign-in when the claim is absent.
    #[serde(default = "default_oidc_role")]
    pub default_role: String,
    /// Organisation of users created on first sign-in (and of API clients).
    #[serde(default = "default_oidc_org")]
    pub org: String,
    /// Accept `Authorization: Bearer` JWT access tokens from the provider
    /// with this audience (API clients); off when unset.
    #[serde(default)]
    pub api_audience: Option<String>,
    /// Scope an API access token must carry.
    #[serde(default = "default_api_scope")]
    pub api_scope: String,
    /// Role of API clients (in `org`).
    #[serde(default = "default_oidc_role")]
    pub api_role: String,
}

fn default_api_scope() -> String {
    "mado.read".into()
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn default_oidc_role() -> String {
    "referring".into()
}

fn default_oidc_org() -> String {
    "default".into()
}

/// The bundled OHIF viewer (served at `/ohif/`, see `scripts/fetch-ohif.sh`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OhifSettings {
    /// Directory of a built OHIF `dist/` prepared for the `/ohif/` base;
    /// unset = no OHIF.
    #[serde(default)]
    pub dist_dir: Option<std::path::PathBuf>,
}

/// The tamper-evident audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// HMAC-SHA256 key of the hash chain, its checkpoints and the head
    /// file (at least 16 characters). Signs nothing else: auditors hold it.
    pub key: Secret,
    /// Write a signed checkpoint of the chain head every this many events.
    pub checkpoint_every: u32,
    /// Append-only file on the server's disk receiving the signed chain
    /// head after every committed batch (a database user alone cannot
    /// rewrite it); `audit verify` checks the database against it.
    #[serde(default = "default_head_file")]
    pub head_file: std::path::PathBuf,
}

fn default_head_file() -> std::path::PathBuf {
    "mado-data/audit-head.log".into()
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            key: Secret::new(DEMO_AUDIT_KEY),
            checkpoint_every: 100,
            head_file: default_head_file(),
        }
    }
}

/// Account and link hardening.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Server secret (at least 32 characters): every server-side signing
    /// key (MFA sign-in cookie, …) is derived from it with HKDF-SHA256 and
    /// a label per purpose (`services::auth::derive_key`).
    #[serde(default = "default_server_secret")]
    pub secret: Secret,
    /// Failed sign-ins after which an account is locked (with exponential backoff).
    pub lockout_threshold: u32,
    /// Lock duration after the threshold, doubled on each further failure.
    pub lockout_base_seconds: u32,
    /// Wrong passcodes after which a share link is locked.
    pub share_passcode_attempts: u32,
    /// Longest lifetime of a share link.
    pub share_max_days: u32,
    /// Roles that must use a second factor (TOTP); a user of such a role
    /// without one must enrol (or pass) TOTP before a session exists,
    /// for local and OIDC sign-ins (unless the provider reports MFA).
    #[serde(default)]
    pub mfa_roles: Vec<String>,
    /// Requests per minute per client address on sign-in, second-factor
    /// and passcode endpoints.
    #[serde(default = "default_rate")]
    pub auth_rate_per_minute: u32,
}

fn default_rate() -> u32 {
    30
}

fn default_server_secret() -> Secret {
    Secret::new(DEMO_SERVER_SECRET)
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            secret: default_server_secret(),
            lockout_threshold: 5,
            lockout_base_seconds: 30,
            share_passcode_attempts: 5,
            share_max_days: 30,
            mfa_roles: Vec::new(),
            auth_rate_per_minute: default_rate(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `HOST:PORT` to bind; port 0 picks a free port.
    pub bind: String,
    /// Externally visible base URL, e.g. `https://mado.example.org`: the
    /// base of every absolute URL the server writes (DICOMweb RetrieveURL).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Reverse proxies (IP addresses or CIDR networks) whose
    /// `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` headers are
    /// honoured when `public_url` is unset; from anyone else they are
    /// ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl HttpSettings {
    /// `trusted_proxies` parsed (a bare address is a /32 or /128).
    pub fn proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("expected an IP address or CIDR network, found {p:?}"))
            })
            .collect()
    }

    /// `public_url` without a trailing slash, when set and valid.
    pub fn public_base(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
    }
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
    /// Bearer tokens accepted from gateways of the `default` organisation.
    pub gateway_tokens: Vec<Secret>,
    /// Named gateways, each bound to one organisation.
    #[serde(default)]
    pub gateways: Vec<GatewaySettings>,
}

/// `[[ingest.gateways]]`: a gateway's machine identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub name: String,
    /// Organisation name; studies it uploads belong to it.
    pub org: String,
    pub token: Secret,
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

    /// The built-in demo secrets still in use, outside demo mode: one line
    /// saying why the server refuses to start, `None` when it may start.
    pub fn insecure_defaults(&self) -> Option<String> {
        if self.demo.enabled {
            return None;
        }
        let mut found = Vec::new();
        if self.audit.key.expose() == DEMO_AUDIT_KEY {
            found.push("audit.key");
        }
        if self.security.secret.expose() == DEMO_SERVER_SECRET {
            found.push("security.secret");
        }
        if self
            .ingest
            .gateway_tokens
            .iter()
            .chain(self.ingest.gateways.iter().map(|g| &g.token))
            .any(|t| t.expose() == DEMO_GATEWAY_TOKEN)
        {
            found.push("ingest.gateway_tokens");
        }
        if found.is_empty() {
            return None;
        }
        Some(format!(
            "refusing to start: {} still set to the built-in demo value; set real secrets \
             (e.g. MADO_SERVER__AUDIT__KEY, MADO_SERVER__SECURITY__SECRET, \
             MADO_SERVER__INGEST__GATEWAY_TOKENS) or turn on demo mode ([demo] enabled = true)",
            found.join(", ")
        ))
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
            .chain(self.ingest.gateways.iter().map(|g| &g.token))
            .any(|t| t.expose().len() < 16)
        {
            return Err(ConfigError(
                "field `ingest.gateway_tokens`: every token must be at least 16 characters".into(),
            ));
        }
        if self.audit.key.expose().len() < 16 {
            return Err(ConfigError(
                "field `audit.key`: expected at least 16 characters".into(),
            ));
        }
        if self.audit.head_file.as_os_str().is_empty() {
            return Err(ConfigError(
                "field `audit.head_file`: expected a file path".into(),
            ));
        }
        if self.security.secret.expose().len() < 32 {
            return Err(ConfigError(
                "field `security.secret`: expected at least 32 characters".into(),
            ));
        }
        if let Err(e) = self.http.proxy_networks() {
            return Err(ConfigError(format!("field `http.trusted_proxies`: {e}")));
        }
        if let Some(u) = self.http.public_base() {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= 512
                && !u.contains(['?', '#', ' '])
                && u.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ConfigError(
                    "field `http.public_url`: expected an http:// or https:// URL without query"
                        .into(),
                ));
            }
        }
        if self
            .ingest
            .gateways
            .iter()
            .any(|g| g.org.trim().is_empty() || g.org.len() > 128 || g.name.len() > 128)
        {
            return Err(ConfigError(
                "field `ingest.gateways`: name and org must be 1 to 128 characters".into(),
            ));
        }
        let l = &self.limits;
        if l.stow_max_bytes == 0
            || l.dicom_max_depth == 0
            || l.max_frames_per_request == 0
            || l.memory_budget < 1024 * 1024
            || l.memory_queue == 0
        {
            return Err(ConfigError(
                "field `limits`: sizes and counts must be positive (memory_budget at least 1 MiB)"
                    .into(),
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
        // Demo secrets refused unless demo mode is on.
        let why = s.insecure_defaults().unwrap();
        assert!(
            why.contains("audit.key") && why.contains("security.secret"),
            "{why}"
        );
        assert!(why.contains("ingest.gateway_tokens") && !why.contains('\n'));
        let mut demo = s.clone();
        demo.demo.enabled = true;
        assert_eq!(demo.insecure_defaults(), None);
        let mut real = s;
        real.audit.key = Secret::new("a real audit key 0123456789");
        real.security.secret = Secret::new("a real server secret 0123456789abcdef");
        real.ingest.gateway_tokens = vec![Secret::new("a real gateway token 0123456789")];
        assert_eq!(real.insecure_defaults(), None);
    }

    #[test]
    fn trusted_proxies_parse() {
        let mut h = HttpSettings {
            bind: "127.0.0.1:0".into(),
            public_url: Some("https://mado.example.org/".into()),
            trusted_proxies: vec!["10.0.0.0/8".into(), "127.0.0.1".into(), "::1".into()],
        };
        assert_eq!(h.proxy_networks().unwrap().len(), 3);
        assert_eq!(h.public_base().unwrap(), "https://mado.example.org");
        h.trusted_proxies.push("10.0.0.0/33".into());
        assert!(h.proxy_networks().is_err());
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
