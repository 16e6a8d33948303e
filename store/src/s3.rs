use crate::{check_key, ObjectInfo, ObjectStore, S3Config, StoreError};
use async_trait::async_trait;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Objects larger than this go up as a multipart upload.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Part size of a multipart upload (S3 minimum: 5 MiB except the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// User metadata holding the whole object's SHA-256 (hex) of a multipart
/// object, whose S3 checksum is composite (a checksum of part checksums).
const SHA256_META: &str = "sha256";

/// S3-compatible backend (AWS, Garage, MinIO, moto).
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    multipart_threshold: usize,
    part_size: usize,
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
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
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        };
        if cfg.create_bucket {
            store.ensure_bucket().await?;
        }
        Ok(store)
    }

    /// Change the multipart threshold and part size (the part size is at
    /// least 5 MiB, S3's minimum).
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(5 * 1024 * 1024);
        self
    }

    /// Multipart upload: every part carries its SHA-256 (checked by S3),
    /// the object's composite checksum is compared with the one computed
    /// here, and the whole object's SHA-256 is kept as metadata for `head`.
    /// A failed upload is aborted (no orphan parts left behind).
    async fn put_multipart(&self, key: &str, data: Bytes, sha256: &str) -> Result<(), StoreError> {
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .content_type("application/dicom")
            .metadata(SHA256_META, sha256.to_ascii_lowercase())
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let upload_id = create
            .upload_id()
            .ok_or_else(|| StoreError::Backend("multipart upload without an upload id".into()))?
            .to_string();
        let result = self.upload_parts(key, &upload_id, data).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let mut parts = Vec::new();
        let mut composite = Sha256::new();
        let mut offset = 0usize;
        let mut number = 1i32;
        while offset < data.len() {
            let end = (offset + self.part_size).min(data.len());
            let part = data.slice(offset..end);
            let digest = Sha256::digest(&part);
            composite.update(digest);
            let checksum = b64(&digest);
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&checksum)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .checksum_sha256(checksum)
                    .build(),
            );
            offset = end;
            number += 1;
        }
        let expected = format!("{}-{}", b64(&composite.finalize()), parts.len());
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        // servers that report the composite checksum: it must be ours
        if let Some(actual) = done.checksum_sha256() {
            let actual = if actual.contains('-') {
                actual.to_string()
            } else {
                format!("{actual}-{}", number - 1)
            };
            if actual != expected {
                let _ = self.delete(key).await;
                return Err(StoreError::Integrity { expected, actual });
            }
        }
        Ok(())
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
        if data.len() > self.multipart_threshold {
            return self.put_multipart(key, data, sha256).await;
        }
        let b64 = b64(&raw);
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
            Ok(o) => {
                // a multipart object (ETag "md5-N", composite checksum, which
                // some servers give without its "-N"): its S3 checksum is a
                // checksum of part checksums, verified at upload; the
                // whole-object SHA-256 recorded then is in the metadata
                let multipart = o.e_tag().is_some_and(|e| e.contains('-'))
                    || o.checksum_sha256().is_some_and(|c| c.contains('-'))
                    || o.checksum_type() == Some(&aws_sdk_s3::types::ChecksumType::Composite);
                let sha256 = if multipart {
                    o.metadata()
                        .and_then(|m| m.get(SHA256_META))
                        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                        .map(|h| h.to_ascii_lowercase())
                } else {
                    o.checksum_sha256().and_then(|c| {
                        base64::engine::general_purpose::STANDARD
                            .decode(c)
                            .ok()
                            .map(hex::encode)
                    })
                };
                Ok(Some(ObjectInfo {
                    size: o.content_length().unwrap_or(0).max(0) as u64,
                    sha256,
                }))
            }
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
