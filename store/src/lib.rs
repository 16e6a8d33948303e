//! The object store both binaries use: a trait with two backends, a local
//! directory (the embedded default) and S3-compatible storage (aws-sdk-s3).
//!
//! Keys come from `mado_core::keys`; this crate treats them as opaque but
//! refuses anything that could escape the local root.

mod local;
mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

pub use local::LocalStore;
pub use s3::S3Store;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key")]
    BadKey,
    #[error("integrity check failed: expected sha256 {expected}, got {actual}")]
    Integrity { expected: String, actual: String },
    #[error("object store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Config(String),
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Lower-case hex SHA-256, when the backend knows it.
    pub sha256: Option<String>,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Store `data` under `key`. `sha256` (lower-case hex) is verified by
    /// the backend (S3: `x-amz-checksum-sha256`); the write is durable when
    /// this returns. Writing the same bytes again is harmless (idempotent).
    async fn put(&self, key: &str, data: Bytes, sha256: &str) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// `Ok(None)` when the object does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// All keys under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Short description for logs (never contains credentials).
    fn describe(&self) -> String;
}

pub type DynStore = Arc<dyn ObjectStore>;

/// Which backend `[storage]` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Objects as files under a local directory (`path`).
    Local,
    /// S3-compatible object storage (`bucket`, `endpoint`, …).
    S3,
}

/// `[storage]` section shared by gateway and server configs.
///
/// Flat on purpose: layered config (defaults → file → env) merges tables
/// key by key, so switching `kind` from the default `local` to `s3` in a
/// file or with `…__STORAGE__KIND=s3` must not trip over the default
/// `path`. Keys of the other backend are simply unused.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// `local`: the directory that holds the objects.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: endpoint URL, e.g. `http://127.0.0.1:9000`; empty for AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3`: region name.
    #[serde(default = "default_region")]
    pub region: String,
    /// `s3`: bucket name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: path-style addressing (`endpoint/bucket/key`), needed by most
    /// self-hosted servers (Garage, MinIO, moto).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// `s3`: static credentials; when absent the standard AWS environment /
    /// profile chain is used.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `s3`: create the bucket at start-up if it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl StoreConfig {
    /// A local-directory store at `path`.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: StoreKind::Local,
            path: Some(path.into()),
            endpoint: None,
            region: default_region(),
            bucket: None,
            path_style: true,
            access_key_id: None,
            secret_access_key: None,
            create_bucket: false,
        }
    }
}

/// The S3 settings, once `kind = "s3"` has been checked.
#[derive(Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub create_bucket: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}

/// Build the configured backend.
pub async fn open(cfg: &StoreConfig) -> Result<DynStore, StoreError> {
    Ok(match cfg.kind {
        StoreKind::Local => {
            let path = cfg.path.clone().ok_or_else(|| {
                StoreError::Config("storage.path is required when storage.kind = \"local\"".into())
            })?;
            Arc::new(LocalStore::new(path)?)
        }
        StoreKind::S3 => {
            let bucket = cfg
                .bucket
                .clone()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    StoreError::Config(
                        "storage.bucket is required when storage.kind = \"s3\"".into(),
                    )
                })?;
            Arc::new(
                S3Store::connect(&S3Config {
                    endpoint: cfg.endpoint.clone(),
                    region: cfg.region.clone(),
                    bucket,
                    path_style: cfg.path_style,
                    access_key_id: cfg.access_key_id.clone(),
                    secret_access_key: cfg.secret_access_key.clone(),
                    create_bucket: cfg.create_bucket,
                })
                .await?,
            )
        }
    })
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Reject keys that are empty, absolute, or contain `..`, `\` or NUL.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(StoreError::BadKey);
    }
    Ok(())
}
