use crate::{check_key, ObjectInfo, ObjectStore, S3Config, StoreError};
use async_trait::async_trait;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use std::time::Duration;

/// S3-compatible backend (AWS, Garage, MinIO, moto).
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl S3Store {
    pub async fn connect(cfg: &S3Config) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()));
        if let (Some(ak), Some(sk)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader =
                loader.credentials_provider(Credentials::new(ak, sk, None, None, "mado-config"));
        }
        let shared = loader.load().await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(300))
            .build();
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
        if let Some(ep) = cfg.endpoint.as_deref().filter(|e| !e.is_empty()) {
            b = b.endpoint_url(ep);
        }
        let client = Client::from_conf(b.build());
        let store = Self {
            client,
            bucket: cfg.bucket.clone(),
            endpoint: cfg.endpoint.clone().unwrap_or_else(|| "aws".into()),
        };
        if cfg.create_bucket {
            store.ensure_bucket().await?;
        }
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let svc = e
                    .as_service_error()
                    .map(|s| s.is_bucket_already_owned_by_you());
                if svc == Some(true) {
                    Ok(())
                } else {
                    Err(backend(aws_sdk_s3::error::DisplayErrorContext(e)))
                }
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes, sha256: &str) -> Result<(), StoreError> {
        check_key(key)?;
        let raw = hex::decode(sha256).map_err(|_| StoreError::BadKey)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(b64)
            .content_type("application/dicom")
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().map(|s| s.is_no_such_key()) == Some(true) {
                    StoreError::NotFound
                } else {
                    backend(aws_sdk_s3::error::DisplayErrorContext(e))
                }
            })?;
        let body = out.body.collect().await.map_err(backend)?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(o) => Ok(Some(ObjectInfo {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                sha256: o.checksum_sha256().and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .ok()
                        .map(hex::encode)
                }),
            })),
            Err(e) => {
                if e.as_service_error().map(|s| s.is_not_found()) == Some(true) {
                    Ok(None)
                } else {
                    Err(backend(aws_sdk_s3::error::DisplayErrorContext(e)))
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3:{}/{}", self.endpoint, self.bucket)
    }
}
