//! The object-storage side, with nothing but standard S3 calls so that AWS,
//! MinIO, Garage, Ceph RGW, B2 and R2 all work.
//!
//! Checksums are only sent when an operation requires them
//! (`WhenRequired`), because several S3-compatible servers reject the
//! SDK's newer default trailers; integrity is checked here instead, with
//! Content-MD5 on every upload and our own SHA-1 in the object's metadata.

use super::hash::{digest_of, Digest, Hasher};
use super::{BucketProblem, DiskStore, StoreError};
use crate::config::{S3Config, Sse};
use crate::telemetry::Metrics;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{Credentials, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Object metadata key holding the SHA-1 of the content, hex.
const SHA1_METADATA: &str = "noodle-sha1";
/// Files above this size are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each part: large enough to keep the request count low, small
/// enough that one in flight per mover keeps memory flat.
pub const PART_SIZE: usize = 16 * 1024 * 1024;

/// What a HEAD tells about an object, without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// From a plain (single-part, not KMS-encrypted) ETag.
    pub md5: Option<[u8; 16]>,
    /// From our own metadata, when we wrote the object.
    pub sha1: Option<[u8; 20]>,
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    sse: Option<Sse>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish()
    }
}

fn status_of<E, R>(err: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    err.raw_response().map(|r| r.status_code())
}

trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn s3_error<E>(
    operation: &'static str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: std::error::Error + 'static,
{
    StoreError::S3 {
        operation,
        status: status_of(&err),
        message: DisplayErrorContext(&err).to_string(),
    }
}

impl S3Store {
    pub async fn connect(config: &S3Config, metrics: Arc<Metrics>) -> S3Store {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                key.clone(),
                secret.expose().to_string(),
                None,
                None,
                "noodle-migrate",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .accelerate(config.use_accelerate)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            sse: config.sse.clone(),
            metrics,
        }
    }

    /// Counts a failed request and turns it into a store error.
    fn failed<E>(
        &self,
        operation: &'static str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: std::error::Error + 'static,
    {
        self.metrics.s3_error(operation);
        s3_error(operation, err)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// HEAD bucket, with the failure explained.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        self.metrics.s3_error("HeadBucket");
        let problem = match (&err, status_of(&err)) {
            (_, Some(401 | 403)) => BucketProblem::AccessDenied,
            (_, Some(404)) => BucketProblem::NotFound,
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _) => {
                BucketProblem::Unreachable(DisplayErrorContext(&err).to_string())
            }
            _ => BucketProblem::Other(DisplayErrorContext(&err).to_string()),
        };
        Err(StoreError::Bucket {
            bucket: self.bucket.clone(),
            problem,
        })
    }

    fn etag_md5(&self, etag: Option<&str>) -> Option<[u8; 16]> {
        // With SSE-KMS (and SSE-C) the ETag is not the MD5 of the content.
        if matches!(self.sse, Some(Sse::Kms { .. })) {
            return None;
        }
        let etag = etag?.trim_matches('"');
        if etag.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(etag, &mut out).ok()?;
        Some(out)
    }

    fn meta_sha1(metadata: Option<&std::collections::HashMap<String, String>>) -> Option<[u8; 20]> {
        let value = metadata?.get(SHA1_METADATA)?;
        let mut out = [0u8; 20];
        hex::decode_to_slice(value, &mut out).ok()?;
        Some(out)
    }

    /// HEAD object; `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                md5: self.etag_md5(out.e_tag()),
                sha1: Self::meta_sha1(out.metadata()),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failed("HeadObject", e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed("DeleteObject", e))
    }

    /// Starts a streamed download; a missing object is an `S3` error with
    /// status 404.
    pub async fn get(&self, key: &str) -> Result<Download, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                // A missing object is an answer, not a failed request.
                if status_of(&e) == Some(404) {
                    s3_error("GetObject", e)
                } else {
                    self.failed("GetObject", e)
                }
            })?;
        Ok(Download {
            meta: ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                md5: self.etag_md5(out.e_tag()),
                sha1: Self::meta_sha1(out.metadata()),
            },
            body: out.body,
        })
    }

    /// Reads a whole object to hash it (used only when no cheaper
    /// fingerprint can decide whether two copies are the same).
    pub async fn hash_object(&self, key: &str) -> Result<Digest, StoreError> {
        let mut download = self.get(key).await?;
        let mut hasher = Hasher::new();
        while let Some(chunk) = download.next_chunk().await? {
            hasher.update(chunk).await;
        }
        Ok(hasher.finish())
    }

    fn content_type(key: &str) -> String {
        mime_guess::from_path(key)
            .first_or_octet_stream()
            .essence_str()
            .to_string()
    }

    /// Uploads a file from disk and returns the digest of what was sent.
    /// `expected_size` is the size the source check saw: a file that grows
    /// or shrinks meanwhile is refused rather than uploaded half-changed.
    pub async fn put_file(
        &self,
        disk: &DiskStore,
        path: &Path,
        key: &str,
        expected_size: u64,
    ) -> Result<Digest, StoreError> {
        if expected_size > MULTIPART_THRESHOLD {
            return self.put_multipart(disk, path, key, expected_size).await;
        }
        let data = disk.read_all(path).await?;
        if data.len() as u64 != expected_size {
            return Err(StoreError::SourceChanged(format!(
                "{} was {} bytes, read {}",
                path.display(),
                expected_size,
                data.len()
            )));
        }
        let digest = digest_of(&data);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(data.len() as i64)
            .content_md5(aws_smithy_types::base64::encode(digest.md5))
            .content_type(Self::content_type(key))
            .metadata(SHA1_METADATA, hex::encode(digest.sha1))
            .body(ByteStream::from(data));
        request = match &self.sse {
            None => request,
            Some(Sse::Aes256) => request.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        let out = request
            .send()
            .await
            .map_err(|e| self.failed("PutObject", e))?;
        if let Some(md5) = self.etag_md5(out.e_tag()) {
            if md5 != digest.md5 {
                return Err(StoreError::S3 {
                    operation: "PutObject",
                    status: None,
                    message: "the ETag returned does not match the MD5 of the data sent".into(),
                });
            }
        }
        Ok(digest)
    }

    /// Multipart upload. The file is hashed first so that the object can
    /// carry its SHA-1 (what makes a later adoption cheap), then sent part
    /// by part while being hashed again to catch a file changing under us.
    async fn put_multipart(
        &self,
        disk: &DiskStore,
        path: &Path,
        key: &str,
        expected_size: u64,
    ) -> Result<Digest, StoreError> {
        let digest = disk.hash_file(path).await?;
        if digest.size != expected_size {
            return Err(StoreError::SourceChanged(path.display().to_string()));
        }
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(Self::content_type(key))
            .metadata(SHA1_METADATA, hex::encode(digest.sha1));
        create = match &self.sse {
            None => create,
            Some(Sse::Aes256) => create.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => create
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        let created = create
            .send()
            .await
            .map_err(|e| self.failed("CreateMultipartUpload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = self.send_parts(disk, path, key, &upload_id, &digest).await;
        if result.is_err() {
            // An incomplete upload is invisible but billed: always abort it.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(error = %DisplayErrorContext(&e), key, "Cannot abort a failed multipart upload");
                self.metrics.s3_error("AbortMultipartUpload");
            }
        }
        result.map(|_| digest)
    }

    async fn send_parts(
        &self,
        disk: &DiskStore,
        path: &Path,
        key: &str,
        upload_id: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let mut file = disk.open(path).await?;
        let mut rehash = Hasher::new();
        let mut parts = Vec::new();
        let mut part_number = 1;
        loop {
            let mut part = bytes::BytesMut::with_capacity(PART_SIZE);
            while part.len() < PART_SIZE {
                let chunk = disk.read_chunk(&mut file, path).await?;
                if chunk.is_empty() {
                    break;
                }
                part.extend_from_slice(&chunk);
            }
            if part.is_empty() {
                break;
            }
            let part: Bytes = part.freeze();
            rehash.update(part.clone()).await;
            let md5 = digest_of(&part).md5;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(part.len() as i64)
                .content_md5(aws_smithy_types::base64::encode(md5))
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| self.failed("UploadPart", e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(part_number)
                    .build(),
            );
            part_number += 1;
        }
        if rehash.finish() != *digest {
            return Err(StoreError::SourceChanged(path.display().to_string()));
        }
        self.client
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
            .map_err(|e| self.failed("CompleteMultipartUpload", e))?;
        Ok(())
    }
}

/// A GetObject in progress.
pub struct Download {
    pub meta: ObjectMeta,
    body: ByteStream,
}

impl Download {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        self.body.try_next().await.map_err(|e| StoreError::S3 {
            operation: "GetObject",
            status: None,
            message: format!("reading the body: {e}"),
        })
    }
}
