//! Gateway configuration: embedded defaults (`config/defaults.toml`), then
//! `--config FILE`, then `MADO_GATEWAY__SECTION__KEY` environment variables.

use mado_core::config::ConfigError;
use mado_store::{StoreConfig, StoreKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");
/// Prefix of the environment variables overriding the configuration.
pub const ENV_PREFIX: &str = "MADO_GATEWAY__";

/// Shortest remapped-UID suffix we accept (decimal digits of the HMAC).
const MIN_UID_SUFFIX_DIGITS: usize = 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub dicom: DicomConfig,
    pub spool: SpoolConfig,
    /// Object store receiving the de-identified instances.
    pub storage: StoreConfig,
    pub server: ServerConfig,
    pub deid: DeidConfig,
    pub upload: UploadConfig,
    /// `[admin]`: local HTTP status endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[vault]`: the on-prem encrypted pseudonym vault.
    #[serde(default)]
    pub vault: crate::vault::VaultConfig,
    /// `[commitment]`: Storage Commitment Push Model SCP.
    #[serde(default)]
    pub commitment: CommitmentConfig,
    /// `[demo]`: accept the built-in demo secrets (`scripts/demo.sh`).
    #[serde(default)]
    pub demo: DemoConfig,
}

/// `[demo] enabled = true` (or `MADO_GATEWAY__DEMO__ENABLED=true`): the
/// built-in demo token, de-identification secret and vault key are
/// accepted. Off (the default): the gateway refuses to start with them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    #[serde(default)]
    pub enabled: bool,
}

/// The built-in demo secrets (`config/defaults.toml`, `vault::VaultConfig`).
const DEMO_SECRETS: [(&str, &str); 3] = [
    ("server.token", "mado-demo-gateway-token"),
    ("deid.secret", "mado-demo-deid-secret-change-me"),
    ("vault.key", "mado-demo-vault-key-change-me"),
];

/// `[commitment]`: Storage Commitment Push Model (N-ACTION / N-EVENT-REPORT).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentConfig {
    /// Offer the Storage Commitment Push Model SOP class.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Longest wait for the referenced instances to be confirmed in the
    /// object store; then the report lists the missing ones as failed.
    #[serde(default = "default_commitment_timeout")]
    pub timeout_secs: u64,
    /// Attempts to deliver a report on a new association.
    #[serde(default = "default_delivery_attempts")]
    pub delivery_attempts: u32,
    /// Connect / read / write timeout of such an association, seconds.
    #[serde(default = "default_association_timeout")]
    pub association_timeout_secs: u64,
    /// Most SOP instances referenced by one N-ACTION request; a larger one is
    /// refused with 0x0213 (resource limitation).
    #[serde(default = "default_max_references")]
    pub max_references: usize,
    /// Most accepted transactions waiting for their instances at a time
    /// (also after a restart); further N-ACTIONs get 0x0213.
    #[serde(default = "default_max_pending_transactions")]
    pub max_pending_transactions: usize,
    /// Where to send a report when the requesting association has closed:
    /// calling AE title → `host:port` of that AE's SCP.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, String>,
}

fn default_max_references() -> usize {
    10_000
}
fn default_max_pending_transactions() -> usize {
    64
}
fn default_commitment_timeout() -> u64 {
    3600
}
fn default_delivery_attempts() -> u32 {
    5
}
fn default_association_timeout() -> u64 {
    30
}

impl Default for CommitmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_secs: default_commitment_timeout(),
            delivery_attempts: default_delivery_attempts(),
            association_timeout_secs: default_association_timeout(),
            max_references: default_max_references(),
            max_pending_transactions: default_max_pending_transactions(),
            peers: Default::default(),
        }
    }
}

/// `[dicom]`: the DIMSE SCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomConfig {
    /// Listen address, `HOST:PORT`; port 0 picks a free port.
    pub bind: String,
    /// Our AE title (1-16 characters, no backslash or control characters).
    #[serde(deserialize_with = "lenient_string")]
    pub ae_title: String,
    /// Reject associations whose Called AE Title is not `ae_title`.
    #[serde(default)]
    pub check_called_ae_title: bool,
    /// Largest PDU we accept, in bytes (4096 ..= 16 MiB).
    pub max_pdu: u32,
    /// Concurrent associations.
    pub max_associations: usize,
    /// Abort an association after this many seconds without a PDU.
    pub idle_timeout_secs: u64,
    /// The A-ASSOCIATE-RQ (and the TLS handshake) must be complete within
    /// this many seconds of the connection.
    #[serde(default = "default_association_timeout_secs")]
    pub association_timeout_secs: u64,
    /// A PDU, once its header has arrived, must be complete within this many
    /// seconds plus its length at `min_bytes_per_sec`.
    #[serde(default = "default_pdu_timeout_secs")]
    pub pdu_timeout_secs: u64,
    /// Slowest transfer rate accepted within a PDU, bytes per second.
    #[serde(default = "default_min_bytes_per_sec")]
    pub min_bytes_per_sec: u64,
    /// Open connections from one source address (negotiating or associated).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Connections still negotiating (no association yet); beyond, the
    /// oldest is dropped. They do not take association slots.
    #[serde(default = "default_max_pending_connections")]
    pub max_pending_connections: usize,
    /// Largest data set of one C-STORE, bytes; a larger one aborts the
    /// association and its temp file is removed.
    #[serde(default = "default_max_instance_bytes")]
    pub max_instance_bytes: u64,
    /// Largest DIMSE command set or storage commitment (N-ACTION) data set,
    /// bytes: these are parsed whole in memory.
    #[serde(default = "default_max_parsed_bytes")]
    pub max_parsed_bytes: usize,
    /// Who may open associations: calling AE titles, each optionally bound
    /// to source addresses. Empty: any calling AE from any address.
    #[serde(default)]
    pub allowed: Vec<AllowedPeer>,
    /// SOP Class UIDs accepted in addition to the standard storage classes
    /// (private or newer classes), stored as received.
    #[serde(default)]
    pub extra_sop_classes: Vec<String>,
    /// `[dicom.tls]`: a second, TLS listener (PS3.15 Annex B). Absent: none.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_association_timeout_secs() -> u64 {
    10
}
fn default_pdu_timeout_secs() -> u64 {
    10
}
fn default_min_bytes_per_sec() -> u64 {
    64 * 1024
}
fn default_max_connections_per_peer() -> usize {
    8
}
fn default_max_pending_connections() -> usize {
    32
}
fn default_max_instance_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_max_parsed_bytes() -> usize {
    1024 * 1024
}

impl DicomConfig {
    pub fn association_timeout(&self) -> Duration {
        Duration::from_secs(self.association_timeout_secs)
    }

    /// How long a PDU of `len` bytes may take once its header arrived.
    pub fn pdu_time(&self, len: u64) -> Duration {
        Duration::from_secs(self.pdu_timeout_secs)
            + Duration::from_secs_f64(len as f64 / self.min_bytes_per_sec.max(1) as f64)
    }

    /// Checks serde cannot express (`field`, what was expected).
    fn validate_limits(&self) -> Result<(), (&'static str, &'static str)> {
        if self.association_timeout_secs == 0 {
            return Err(("dicom.association_timeout_secs", "expected at least 1"));
        }
        if self.pdu_timeout_secs == 0 {
            return Err(("dicom.pdu_timeout_secs", "expected at least 1"));
        }
        if self.min_bytes_per_sec == 0 {
            return Err(("dicom.min_bytes_per_sec", "expected at least 1"));
        }
        if self.max_connections_per_peer == 0 {
            return Err(("dicom.max_connections_per_peer", "expected at least 1"));
        }
        if self.max_pending_connections == 0 {
            return Err(("dicom.max_pending_connections", "expected at least 1"));
        }
        if self.max_instance_bytes < 1024 {
            return Err(("dicom.max_instance_bytes", "expected at least 1024"));
        }
        if !(4096..=64 * 1024 * 1024).contains(&self.max_parsed_bytes) {
            return Err((
                "dicom.max_parsed_bytes",
                "expected a value from 4096 to 67108864",
            ));
        }
        Ok(())
    }
}

/// `[dicom.tls]`: DICOM over TLS on its own port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (server certificate first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, clients must present a certificate
    /// issued by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Listen address of the TLS listener, `HOST:PORT` (port 0 = any free port).
    pub bind: String,
}

/// One `[[dicom.allowed]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedPeer {
    /// Calling AE title (compared without trailing spaces, case-sensitive).
    #[serde(deserialize_with = "lenient_string")]
    pub ae_title: String,
    /// Source addresses: IPs or CIDR networks (`10.0.0.0/24`, `::1`).
    /// Empty: any address.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl AllowedPeer {
    /// The parsed `hosts` (a plain IP is a /32 or /128 network).
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.hosts
            .iter()
            .map(|h| {
                let h = h.trim();
                h.parse::<ipnet::IpNet>()
                    .or_else(|_| h.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{h:?} is not an IP address or CIDR network"))
            })
            .collect()
    }
}

/// `[admin]`: local HTTP status endpoint (JSON `/status`, Prometheus
/// `/metrics`). Empty `bind`: off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub bind: String,
}

/// `[spool]`: the durable on-premises spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    pub dir: PathBuf,
}

/// `[server]`: where instances are registered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Base URL of mado-server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Gateway bearer token. The default is a demo value; production must
    /// override it (`MADO_GATEWAY__SERVER__TOKEN`).
    #[serde(deserialize_with = "lenient_secret")]
    pub token: SecretString,
}

/// `[deid]`: keyed pseudonymisation and the PS3.15 Annex E engine options
/// (every other key of the section is a field of [`mado_core::deid::DeidConfig`],
/// which rejects unknown keys).
#[derive(Debug, Clone, Deserialize)]
pub struct DeidConfig {
    /// Site secret keying pseudonyms and UID remapping (HMAC-SHA256).
    #[serde(deserialize_with = "lenient_secret")]
    pub secret: SecretString,
    /// Root of remapped UIDs (a valid UID of at most 24 characters, engine limit). In the
    /// environment, quote a root with a single dot so it is not read as a
    /// number: `MADO_GATEWAY__DEID__UID_ROOT='"2.25"'`.
    #[serde(deserialize_with = "lenient_string")]
    pub uid_root: String,
    /// Engine options (`uid_root` above takes precedence over the engine's own).
    #[serde(flatten)]
    pub profile: mado_core::deid::DeidConfig,
}

impl DeidConfig {
    /// The engine configuration: the profile options with our `uid_root`.
    pub fn engine_config(&self) -> mado_core::deid::DeidConfig {
        let mut c = self.profile.clone();
        c.uid_root = self.uid_root.clone();
        c
    }
}

/// `[upload]`: the background upload worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Run the upload worker (off: instances stay in spool/pending/).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Instances processed in parallel.
    pub concurrency: usize,
    /// First retry delay in milliseconds.
    pub retry_base_ms: u64,
    /// Largest retry delay in milliseconds.
    pub retry_max_ms: u64,
    /// Periodic rescan of spool/pending/, in seconds.
    pub rescan_secs: u64,
    /// Timeout of one registration request, in seconds.
    pub http_timeout_secs: u64,
    /// Niceness of the upload threads (0 = normal priority, up to 19).
    #[serde(default = "default_upload_nice")]
    pub nice: u8,
}

fn default_upload_nice() -> u8 {
    10
}

fn default_true() -> bool {
    true
}

/// Environment values are parsed as TOML-like values, so `1234` arrives as
/// an integer: accept integers for string fields. A float is refused with a
/// hint, as its text may have changed (`2.250` → `2.25`).
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string (quote it in the environment, e.g. VAR='\"2.25\"')")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

fn lenient_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    lenient_string(d).map(SecretString::from)
}

impl DicomConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

impl UploadConfig {
    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms)
    }
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

impl GatewayConfig {
    /// Load and validate the layered configuration.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: GatewayConfig = mado_core::config::load(DEFAULTS, file, ENV_PREFIX)?;
        // the defaults are valid, so a bad value comes from the file or the environment
        let source = match file {
            Some(p) => format!("config file {}", p.display()),
            None => format!("environment ({ENV_PREFIX}*)"),
        };
        cfg.validate()
            .map_err(|e| ConfigError(format!("{source}: {}", e.0)))?;
        if let Some(why) = cfg.insecure_defaults() {
            return Err(ConfigError(why));
        }
        Ok(cfg)
    }

    /// Outside demo mode, the built-in demo secrets still in use: one line
    /// saying why the gateway refuses to start.
    pub fn insecure_defaults(&self) -> Option<String> {
        if self.demo.enabled {
            return None;
        }
        let in_use = |field: &str| match field {
            "server.token" => self.server.token.expose_secret(),
            "deid.secret" => self.deid.secret.expose_secret(),
            // Used only when the vault is on and keyed by `key`.
            _ if self.vault.enabled && self.vault.key_file.is_none() => {
                self.vault.key.expose_secret()
            }
            _ => "",
        };
        let found: Vec<&str> = DEMO_SECRETS
            .iter()
            .filter(|(field, demo)| in_use(field) == *demo)
            .map(|(field, _)| *field)
            .collect();
        if found.is_empty() {
            return None;
        }
        Some(format!(
            "refusing to start: {} still set to the built-in demo value; set real secrets \
             (MADO_GATEWAY__SERVER__TOKEN, MADO_GATEWAY__DEID__SECRET, MADO_GATEWAY__VAULT__KEY) \
             or turn on demo mode ([demo] enabled = true)",
            found.join(", ")
        ))
    }

    /// Checks serde cannot express. Errors are one line naming the field
    /// (`field `x`: expected ...`); [`GatewayConfig::load`] prefixes the source.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, what: &str| Err(ConfigError(format!("field `{field}`: {what}")));
        let ae = &self.dicom.ae_title;
        if ae.trim().is_empty()
            || ae.len() > 16
            || !ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
        {
            return bad(
                "dicom.ae_title",
                "expected 1-16 printable ASCII characters without backslash",
            );
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.dicom.max_pdu) {
            return bad("dicom.max_pdu", "expected a value from 4096 to 16777216");
        }
        if self.dicom.max_associations == 0 {
            return bad("dicom.max_associations", "expected at least 1");
        }
        if self.dicom.idle_timeout_secs == 0 {
            return bad("dicom.idle_timeout_secs", "expected at least 1");
        }
        if let Err((field, what)) = self.dicom.validate_limits() {
            return bad(field, what);
        }
        for (i, uid) in self.dicom.extra_sop_classes.iter().enumerate() {
            if mado_core::Uid::parse(uid.trim()).is_err() {
                return bad(
                    &format!("dicom.extra_sop_classes[{i}]"),
                    "expected a valid UID (digits and dots, at most 64 characters)",
                );
            }
        }
        for (i, a) in self.dicom.allowed.iter().enumerate() {
            let t = a.ae_title.trim();
            if t.is_empty()
                || t.len() > 16
                || !t.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
            {
                return bad(
                    &format!("dicom.allowed[{i}].ae_title"),
                    "expected 1-16 printable ASCII characters without backslash",
                );
            }
            if let Err(e) = a.networks() {
                return bad(&format!("dicom.allowed[{i}].hosts"), &e);
            }
        }
        if let Some(tls) = &self.dicom.tls {
            if tls.bind.trim().is_empty() {
                return bad(
                    "dicom.tls.bind",
                    "expected HOST:PORT, e.g. \"0.0.0.0:2762\"",
                );
            }
            if let Err(e) = crate::tls::server_config(tls) {
                return Err(ConfigError(e.to_string()));
            }
        }
        match self.storage.kind {
            StoreKind::Local
                if self
                    .storage
                    .path
                    .as_deref()
                    .is_none_or(|p| p.as_os_str().is_empty()) =>
            {
                return bad("storage.path", "required when storage.kind = \"local\"");
            }
            StoreKind::S3 if self.storage.bucket.as_deref().is_none_or(str::is_empty) => {
                return bad("storage.bucket", "required when storage.kind = \"s3\"");
            }
            _ => {}
        }
        if self.spool.dir.as_os_str().is_empty() {
            return bad("spool.dir", "expected a directory path");
        }
        if self.commitment.timeout_secs == 0 {
            return bad("commitment.timeout_secs", "expected at least 1");
        }
        if self.commitment.max_references == 0 || self.commitment.max_references > 65_536 {
            return bad(
                "commitment.max_references",
                "expected a value from 1 to 65536",
            );
        }
        if self.commitment.max_pending_transactions == 0 {
            return bad("commitment.max_pending_transactions", "expected at least 1");
        }
        for (ae, addr) in &self.commitment.peers {
            let t = ae.trim();
            if t.is_empty()
                || t.len() > 16
                || !t.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
            {
                return bad(
                    &format!("commitment.peers.{ae}"),
                    "expected an AE title of 1-16 printable ASCII characters",
                );
            }
            let ok = addr
                .trim()
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return bad(
                    &format!("commitment.peers.{ae}"),
                    "expected HOST:PORT of the requester's SCP, e.g. \"10.1.2.3:104\"",
                );
            }
        }
        match reqwest::Url::parse(&self.server.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => return bad("server.url", "expected an http:// or https:// URL"),
        }
        if self.server.token.expose_secret().trim().is_empty() {
            return bad("server.token", "expected a non-empty token");
        }
        if self.deid.secret.expose_secret().len() < 16 {
            return bad("deid.secret", "expected at least 16 characters");
        }

        if mado_core::Uid::parse(&self.deid.uid_root).is_err()
            || self.deid.uid_root.len() + 1 + MIN_UID_SUFFIX_DIGITS > 64
            || self.deid.uid_root.len() > 24
        {
            return bad(
                "deid.uid_root",
                "expected a valid UID root of at most 24 characters (e.g. \"2.25\")",
            );
        }
        if let Err(e) = self.deid.engine_config().validate() {
            return bad("deid", &e.to_string());
        }
        if let Err(e) = self.vault.validate() {
            return Err(ConfigError(e));
        }
        if self.upload.concurrency == 0 || self.upload.concurrency > 256 {
            return bad("upload.concurrency", "expected a value from 1 to 256");
        }
        if self.upload.retry_base_ms == 0 || self.upload.retry_max_ms < self.upload.retry_base_ms {
            return bad(
                "upload.retry_max_ms",
                "expected retry_base_ms >= 1 and retry_max_ms >= retry_base_ms",
            );
        }
        if self.upload.rescan_secs == 0 {
            return bad("upload.rescan_secs", "expected at least 1");
        }
        if self.upload.http_timeout_secs == 0 {
            return bad("upload.http_timeout_secs", "expected at least 1");
        }
        if self.upload.nice > 19 {
            return bad("upload.nice", "expected 0 to 19");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let cfg: GatewayConfig =
            mado_core::config::load(DEFAULTS, None, "MADO_GATEWAY_TEST_NONE__").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.dicom.ae_title, "MADO");
        assert!(cfg.dicom.max_pdu >= 262_144);
        assert_eq!(cfg.storage.kind, mado_store::StoreKind::Local);
    }

    #[test]
    fn unknown_field_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(&f, "[dicom]\nbogus = 1\n").unwrap();
        let err = mado_core::config::load::<GatewayConfig>(
            DEFAULTS,
            Some(&f),
            "MADO_GATEWAY_TEST_NONE__",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn numeric_env_values_for_strings() {
        let cfg: GatewayConfig =
            mado_core::config::load(&format!("{DEFAULTS}\n"), None, "MADO_GATEWAY_TEST_NONE__")
                .unwrap();
        assert_eq!(cfg.deid.uid_root, "2.25");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(&f, "[dicom]\nae_title = 1234\n[server]\ntoken = 99\n").unwrap();
        let cfg = mado_core::config::load::<GatewayConfig>(
            DEFAULTS,
            Some(&f),
            "MADO_GATEWAY_TEST_NONE__",
        )
        .unwrap();
        assert_eq!(cfg.dicom.ae_title, "1234");
        assert_eq!(cfg.server.token.expose_secret(), "99");
        std::fs::write(&f, "[deid]\nuid_root = 2.25\n").unwrap();
        let err = mado_core::config::load::<GatewayConfig>(
            DEFAULTS,
            Some(&f),
            "MADO_GATEWAY_TEST_NONE__",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("deid.uid_root") && err.contains("quote"),
            "{err}"
        );
    }

    #[test]
    fn s3_without_bucket_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(&f, "[storage]\nkind = \"s3\"\n").unwrap();
        let cfg: GatewayConfig =
            mado_core::config::load(DEFAULTS, Some(&f), "MADO_GATEWAY_TEST_NONE__").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("storage.bucket"), "{err}");
    }

    #[test]
    fn validation_error_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad-config.toml");
        std::fs::write(&f, "[dicom]\nae_title = \"THIS-AE-TITLE-IS-TOO-LONG\"\n").unwrap();
        let err = GatewayConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(
            err.contains("bad-config.toml") && err.contains("dicom.ae_title"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn allow_list_parses_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(
            &f,
            "[[dicom.allowed]]\nae_title = \"CT01\"\nhosts = [\"10.0.0.0/24\", \"127.0.0.1\", \"::1\"]\n[[dicom.allowed]]\nae_title = \"ANY\"\n",
        )
        .unwrap();
        std::fs::write(
            &f,
            "[demo]\nenabled = true\n[[dicom.allowed]]\nae_title = \"CT01\"\nhosts = [\"10.0.0.0/24\", \"127.0.0.1\", \"::1\"]\n[[dicom.allowed]]\nae_title = \"ANY\"\n",
        )
        .unwrap();
        let cfg = GatewayConfig::load(Some(&f)).unwrap();
        assert_eq!(cfg.dicom.allowed.len(), 2);
        assert_eq!(cfg.dicom.allowed[0].networks().unwrap().len(), 3);
        std::fs::write(
            &f,
            "[[dicom.allowed]]\nae_title = \"CT01\"\nhosts = [\"10.0.0.0/33\"]\n",
        )
        .unwrap();
        let err = GatewayConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("dicom.allowed[0].hosts"), "{err}");
    }

    #[test]
    fn bad_uid_root_rejected() {
        let mut cfg: GatewayConfig =
            mado_core::config::load(DEFAULTS, None, "MADO_GATEWAY_TEST_NONE__").unwrap();
        cfg.deid.uid_root = "2.025".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("deid.uid_root"), "{err}");
    }

    #[test]
    fn demo_secrets_refused_outside_demo_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gw.toml");
        std::fs::write(&f, "[dicom]\nae_title = \"MADO\"\n").unwrap();
        let err = GatewayConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(
            err.contains("server.token")
                && err.contains("deid.secret")
                && err.contains("vault.key"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        // Real secrets, or the vault off: accepted.
        std::fs::write(
            &f,
            "[server]\ntoken = \"a-real-token-0123456789\"\n[deid]\nsecret = \"a-real-deid-secret-0123456789\"\n[vault]\nenabled = false\n",
        )
        .unwrap();
        GatewayConfig::load(Some(&f)).unwrap();
        std::fs::write(&f, "[demo]\nenabled = true\n").unwrap();
        GatewayConfig::load(Some(&f)).unwrap();
    }

    #[test]
    fn upload_nice_defaults_and_bounds() {
        let mut cfg: GatewayConfig =
            mado_core::config::load(DEFAULTS, None, "MADO_GATEWAY_TEST_NONE__").unwrap();
        assert_eq!(cfg.upload.nice, 10);
        cfg.upload.nice = 20;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("upload.nice"), "{err}");
    }
}
