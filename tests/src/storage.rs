//! The `[storage]` section both binaries share, and independent readers of
//! what ended up in the store (plain directory walk, raw aws-sdk-s3), so the
//! tests do not check the store through the code under test.

use anyhow::{Context, Result};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum Storage {
    Local { path: PathBuf },
    S3(S3Spec),
}

#[derive(Debug, Clone)]
pub struct S3Spec {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub create_bucket: bool,
}

impl Storage {
    pub fn to_toml(&self) -> toml::Table {
        let mut t = toml::Table::new();
        match self {
            Storage::Local { path } => {
                t.insert("kind".into(), "local".into());
                t.insert("path".into(), path.display().to_string().into());
            }
            Storage::S3(s) => {
                t.insert("kind".into(), "s3".into());
                t.insert("endpoint".into(), s.endpoint.clone().into());
                t.insert("region".into(), s.region.clone().into());
                t.insert("bucket".into(), s.bucket.clone().into());
                t.insert("path_style".into(), true.into());
                t.insert("access_key_id".into(), s.access_key_id.clone().into());
                t.insert(
                    "secret_access_key".into(),
                    s.secret_access_key.clone().into(),
                );
                t.insert("create_bucket".into(), s.create_bucket.into());
            }
        }
        t
    }

    /// Every object key under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self {
            Storage::Local { path } => list_local(path, prefix),
            Storage::S3(s) => s.list(prefix).await,
        }
    }

    /// The bytes of one object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Storage::Local { path } => std::fs::read(path.join(key))
                .with_context(|| format!("reading {}", path.join(key).display())),
            Storage::S3(s) => s.get(key).await,
        }
    }
}

fn list_local(root: &Path, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(p);
            } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                // LocalStore's in-flight write (renamed into place when
                // complete): not an object yet, as LocalStore::list says
                continue;
            } else if let Ok(rel) = p.strip_prefix(root) {
                let key = rel.to_string_lossy().replace('\\', "/");
                if key.starts_with(prefix) {
                    out.push(key);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

impl S3Spec {
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key_id,
                &self.secret_access_key,
                None,
                None,
                "mado-tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let client = self.client();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let no_bucket = e.as_service_error().is_some_and(|s| s.is_no_such_bucket());
                    if no_bucket {
                        return Ok(Vec::new());
                    }
                    return Err(anyhow::anyhow!(
                        "listing s3://{}/{prefix}: {}",
                        self.bucket,
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    ));
                }
            };
            keys.extend(
                resp.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let resp = self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "get s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
        let body = resp.body.collect().await.context("reading object body")?;
        Ok(body.into_bytes().to_vec())
    }
}
