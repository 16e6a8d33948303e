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

/// `[storage]` section shared by gateway and server configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// Objects as files under a local directory.
    Local { path: PathBuf },
    /// S3-compatible object storage.
    S3(S3Config),
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; empty for AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// self-hosted servers (Garage, MinIO, moto).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Static credentials; when absent the standard AWS environment /
    /// profile chain is used.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Create the bucket at start-up if it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}

/// Build the configured backend.
pub async fn open(cfg: &StoreConfig) -> Result<DynStore, StoreError> {
    Ok(match cfg {
        StoreConfig::Local { path } => Arc::new(LocalStore::new(path.clone())?),
        StoreConfig::S3(s3) => Arc::new(S3Store::connect(s3).await?),
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
        || key.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(StoreError::BadKey);
    }
    Ok(())
}
