//! The object-storage side, with nothing but standard S3 calls so that AWS,
//! MinIO, Garage, Ceph RGW, B2 and R2 all work.
//!
//! Checksums are only sent when an operation requires them
//! (`WhenRequired`), because several S3-compatible servers reject the
//! SDK's newer default trailers; integrity is checked here instead, with
//! Content-MD5 on every upload and our own SHA-1 in the object's metadata.
//! Uploads are signed without their payload (`UNSIGNED-PAYLOAD`, which
//! every S3 server accepts): the Content-MD5 already protects the bytes,
//! and a SHA-256 of every byte sent would cost more CPU than the copy.

use super::disk::Loaded;
use super::hash::{md5_of, sha1_digest_of, Digest, Hasher, StreamHasher};
use super::small_put::{SmallPut, SmallPutClient, Stored, SMALL_PUT_MAX};
use super::{BucketProblem, DiskStore, Listed, Store, StoreError, StoreListing, StoreWriter};
use crate::bandwidth::Throttle;
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
macro_rules! sha1_metadata {
    () => {
        "noodle-sha1"
    };
}
const SHA1_METADATA: &str = sha1_metadata!();
/// The same, as the header a PutObject carries it in.
pub(super) const SHA1_HEADER: &str = concat!("x-amz-meta-", sha1_metadata!());
/// The standard header a PutObject names the body's SHA-1 in (base64), and
/// the answer of a server that checked it repeats.
pub(super) const CHECKSUM_SHA1_HEADER: &str = "x-amz-checksum-sha1";
/// How long a connection may take to open, on either request path.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for its answer, on either request path.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(120);
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
    /// As the server sent it, for a write that must find this very object.
    pub etag: Option<String>,
}

/// What a write expects to find at its key: it never lands on an object
/// someone else put there since the target was checked (the gallery may
/// write at the same key during a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteIf {
    /// Whatever is there (a dump's own, freshly chosen name).
    Any,
    /// Nothing (`If-None-Match: *`).
    Absent,
    /// This object, a stale copy being replaced (`If-Match`).
    Matches(String),
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    sse: Option<Sse>,
    metrics: Arc<Metrics>,
    /// Every object byte sent or received passes through it.
    throttle: Arc<Throttle>,
    /// The extra streams large downloads may open, for the whole process:
    /// each holds up to one segment in memory.
    extra_streams: Arc<tokio::sync::Semaphore>,
    /// Small uploads to a plain-HTTP endpoint, when the settings allow it.
    small_put: Option<SmallPutClient>,
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

/// A file on disk being uploaded, with the size its source check saw.
#[derive(Clone, Copy)]
struct Source<'a> {
    disk: &'a DiskStore,
    path: &'a Path,
    size: u64,
}

/// `<op>` on one object of the bucket: every such call starts the same way.
macro_rules! object_call {
    ($store:expr, $op:ident, $key:expr) => {
        $store.client.$op().bucket(&$store.bucket).key($key)
    };
}

impl S3Store {
    pub async fn connect(config: &S3Config, metrics: Arc<Metrics>) -> S3Store {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            );
        if let Some(credentials) = static_credentials(config) {
            loader = loader.credentials_provider(credentials);
        }
        // Plain HTTP (a bucket on the local network): acknowledge every
        // segment at once, or small downloads wait on delayed ACKs (see
        // `quickack`). HTTPS keeps the SDK's default client.
        if plain_http(config) {
            loader = loader.http_client(
                aws_smithy_http_client::hyper_014::HyperClientBuilder::new()
                    .build(super::quickack::QuickAckConnector::new()),
            );
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
            throttle: Default::default(),
            extra_streams: Arc::new(tokio::sync::Semaphore::new(EXTRA_STREAMS)),
            small_put: SmallPutClient::for_config(config),
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

    /// A write refused because its key no longer holds what it expected
    /// is an answer (someone else wrote there), not a failed request.
    fn write_failed<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: std::error::Error + 'static,
    {
        self.write_refused(key, s3_error(operation, err))
    }

    /// As [`S3Store::write_failed`], for an error already made a store
    /// error (a small upload sent without the SDK).
    fn write_refused(&self, key: &str, err: StoreError) -> StoreError {
        match err {
            StoreError::S3 {
                status: Some(412), ..
            } => taken(key),
            StoreError::S3 { operation, .. } => {
                self.metrics.s3_error(operation);
                err
            }
            other => other,
        }
    }

    /// The bandwidth limit of this process's transfers.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
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
        match object_call!(self, head_object, key).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                md5: self.etag_md5(out.e_tag()),
                sha1: Self::meta_sha1(out.metadata()),
                etag: out.e_tag().map(str::to_string),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failed("HeadObject", e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        object_call!(self, delete_object, key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed("DeleteObject", e))
    }

    /// Starts a streamed download; a missing object is an `S3` error with
    /// status 404. A large object comes over several connections at once,
    /// in order all the same (see `SEGMENT`).
    pub async fn get(&self, key: &str) -> Result<Download, StoreError> {
        let out = object_call!(self, get_object, key)
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
        let meta = ObjectMeta {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            md5: self.etag_md5(out.e_tag()),
            sha1: Self::meta_sha1(out.metadata()),
            etag: out.e_tag().map(str::to_string),
        };
        let body = match (&meta.etag, meta.size > SEGMENT) {
            (Some(etag), true) => match self
                .extra_streams
                .clone()
                .try_acquire_many_owned(STREAMS_PER_DOWNLOAD - 1)
            {
                Ok(permits) => Body::Segments(Box::new(
                    self.segments(key, etag, meta.size, out.body, permits),
                )),
                Err(_) => Body::Stream(out.body),
            },
            _ => Body::Stream(out.body),
        };
        Ok(Download {
            meta,
            body,
            throttle: self.throttle.clone(),
        })
    }

    /// A large object's bytes in order, `SEGMENT` at a time, over
    /// `STREAMS_PER_DOWNLOAD` connections: the first from the GET already
    /// open (cut short after one segment), the rest by ranged GETs sent
    /// ahead, which must find the same object (`If-Match`), or the
    /// download fails rather than mix two versions.
    fn segments(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        first: ByteStream,
        permits: tokio::sync::OwnedSemaphorePermit,
    ) -> Segmented {
        let mut segmented = Segmented {
            current: Some((first, SEGMENT.min(size))),
            ahead: std::collections::VecDeque::new(),
            next_start: SEGMENT.min(size),
            size,
            request: RangedGet {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: key.to_string(),
                etag: etag.to_string(),
                metrics: self.metrics.clone(),
            },
            _permits: permits,
        };
        segmented.send_ahead();
        segmented
    }

    /// Reads a whole object to hash it (used only when no cheaper
    /// fingerprint can decide whether two copies are the same).
    pub async fn hash_object(&self, key: &str) -> Result<Digest, StoreError> {
        let mut download = self.get(key).await?;
        let mut hasher = StreamHasher::new(Hasher::new());
        while let Some(chunk) = download.next_chunk().await? {
            hasher.update(chunk).await?;
        }
        hasher.finish().await
    }

    fn content_type(key: &str) -> String {
        mime_guess::from_path(key)
            .first_or_octet_stream()
            .essence_str()
            .to_string()
    }

    /// The encryption settings every upload carries.
    fn sse_params(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
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
        write_if: &WriteIf,
    ) -> Result<Digest, StoreError> {
        if expected_size > MULTIPART_THRESHOLD {
            let source = Source {
                disk,
                path,
                size: expected_size,
            };
            return self.put_multipart(&source, key, write_if).await;
        }
        let (data, digest) = match disk.load(path, MULTIPART_THRESHOLD).await? {
            Some(Loaded::Whole { data, digest }) if digest.size == expected_size => (data, digest),
            found => {
                let now = match found {
                    Some(Loaded::Whole { digest, .. }) => format!("read {}", digest.size),
                    Some(Loaded::Large(size)) => format!("now {size}"),
                    None => "now gone".to_string(),
                };
                return Err(StoreError::SourceChanged(format!(
                    "{} was {expected_size} bytes, {now}",
                    path.display()
                )));
            }
        };
        self.put_whole(key, data, &digest, write_if).await?;
        Ok(digest)
    }

    /// Uploads bytes already read and hashed, in one PutObject.
    pub async fn put_whole(
        &self,
        key: &str,
        data: Bytes,
        digest: &Digest,
        write_if: &WriteIf,
    ) -> Result<(), StoreError> {
        self.write_if(key, write_if, |condition| {
            self.put_bytes(key, data.clone(), digest, condition)
        })
        .await
    }

    /// Runs `write` under `write_if`. A server without conditional writes
    /// (`501`) gets the condition checked by a HEAD just before the write
    /// is sent again unconditionally: a narrower window, not none.
    async fn write_if<'a, F, Fut>(
        &self,
        key: &str,
        write_if: &'a WriteIf,
        write: F,
    ) -> Result<(), StoreError>
    where
        F: Fn(&'a WriteIf) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        match write(write_if).await {
            Err(StoreError::S3 {
                status: Some(501), ..
            }) if *write_if != WriteIf::Any => {}
            done => return done,
        }
        if !self.condition_holds(key, write_if).await? {
            return Err(taken(key));
        }
        write(&WriteIf::Any).await
    }

    /// Whether `key` holds what `write_if` expects, by a HEAD.
    async fn condition_holds(&self, key: &str, write_if: &WriteIf) -> Result<bool, StoreError> {
        let found = self.head(key).await?;
        Ok(match write_if {
            WriteIf::Any => true,
            WriteIf::Absent => found.is_none(),
            WriteIf::Matches(etag) => found.and_then(|m| m.etag).as_deref() == Some(etag),
        })
    }

    /// A server may refuse a conditional write as soon as it has read the
    /// headers and close the connection while the body is still on its
    /// way: the client then sees a broken connection (or no answer), not
    /// the 412. What the key holds now tells which it was; a write of ours
    /// that landed unanswered reads as taken too, and the mover's check of
    /// a taken target adopts identical bytes.
    async fn unanswered_write(&self, key: &str, write_if: &WriteIf, err: StoreError) -> StoreError {
        let unanswered = matches!(err, StoreError::S3 { status: None, .. });
        if !unanswered || *write_if == WriteIf::Any {
            return err;
        }
        match self.condition_holds(key, write_if).await {
            Ok(false) => taken(key),
            _ => err,
        }
    }

    /// One PutObject, checked end to end: by the server against the SHA-1
    /// sent, when it says it did; otherwise with Content-MD5 (through the
    /// SDK) and the ETag. `digest` may lack the MD5; it is computed only
    /// where it is needed.
    async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        digest: &Digest,
        write_if: &WriteIf,
    ) -> Result<(), StoreError> {
        let (if_none_match, if_match) = write_if.headers();
        self.throttle.pass(data.len() as u64).await;
        let lean = self
            .small_put
            .as_ref()
            .filter(|_| data.len() <= SMALL_PUT_MAX);
        // The SDK's request carries Content-MD5; the lean one needs the
        // MD5 only when its answer does not confirm the SHA-1.
        let mut md5 = digest.md5;
        if lean.is_none() && md5.is_none() {
            md5 = Some(md5_of(data.clone()).await);
        }
        let sent = match lean {
            Some(client) => {
                let put = SmallPut {
                    key,
                    data: data.clone(),
                    digest,
                    content_type: &Self::content_type(key),
                    if_none_match: if_none_match.as_deref(),
                    if_match: if_match.as_deref(),
                };
                client
                    .put(&put)
                    .await
                    .map_err(|e| self.write_refused(key, e))
            }
            None => {
                let (sse, kms_key) = self.sse_params();
                object_call!(self, put_object, key)
                    .set_if_none_match(if_none_match)
                    .set_if_match(if_match)
                    .content_length(data.len() as i64)
                    .set_content_md5(md5.map(aws_smithy_types::base64::encode))
                    .content_type(Self::content_type(key))
                    .metadata(SHA1_METADATA, hex::encode(digest.sha1))
                    .set_server_side_encryption(sse)
                    .set_ssekms_key_id(kms_key)
                    .body(ByteStream::from(data.clone()))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map(|out| Stored {
                        etag: out.e_tag,
                        // Content-MD5 was sent: the server checked that.
                        sha1_checked: false,
                    })
                    .map_err(|e| self.write_failed("PutObject", key, e))
            }
        };
        let stored = match sent {
            Ok(stored) => stored,
            Err(e) => return Err(self.unanswered_write(key, write_if, e).await),
        };
        if stored.sha1_checked {
            return Ok(());
        }
        let Some(etag_md5) = self.etag_md5(stored.etag.as_deref()) else {
            return Ok(());
        };
        let md5 = match md5 {
            Some(md5) => md5,
            None => md5_of(data).await,
        };
        if etag_md5 != md5 {
            return Err(StoreError::S3 {
                operation: "PutObject",
                status: None,
                message: "the ETag returned does not match the MD5 of the data sent".into(),
            });
        }
        Ok(())
    }

    /// Multipart upload. The file is hashed first so that the object can
    /// carry its SHA-1 (what makes a later adoption cheap), then sent part
    /// by part; a file written meanwhile (its size or modification time
    /// changed) is refused and the upload aborted.
    async fn put_multipart(
        &self,
        source: &Source<'_>,
        key: &str,
        write_if: &WriteIf,
    ) -> Result<Digest, StoreError> {
        let Source { disk, path, size } = *source;
        let before = disk.version(path).await?;
        let digest = disk.sha1_file(path).await?;
        if digest.size != size {
            return Err(StoreError::SourceChanged(path.display().to_string()));
        }
        let upload_id = self.create_upload(key, Some(&digest)).await?;
        let result = async {
            let parts = self.send_parts(disk, path, key, &upload_id).await?;
            if disk.version(path).await? != before {
                return Err(StoreError::SourceChanged(path.display().to_string()));
            }
            self.write_if(key, write_if, |condition| {
                self.complete_upload(key, &upload_id, parts.clone(), condition)
            })
            .await
        }
        .await;
        if result.is_err() {
            self.abort_upload(key, &upload_id).await;
        }
        result.map(|_| digest)
    }

    async fn create_upload(
        &self,
        key: &str,
        digest: Option<&Digest>,
    ) -> Result<String, StoreError> {
        let (sse, kms_key) = self.sse_params();
        let created = object_call!(self, create_multipart_upload, key)
            .content_type(Self::content_type(key))
            .set_metadata(digest.map(|d| {
                std::collections::HashMap::from([(SHA1_METADATA.to_string(), hex::encode(d.sha1))])
            }))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| self.failed("CreateMultipartUpload", e))?;
        Ok(created.upload_id().unwrap_or_default().to_string())
    }

    /// An incomplete upload is invisible but billed: always abort it.
    async fn abort_upload(&self, key: &str, upload_id: &str) {
        if let Err(e) = object_call!(self, abort_multipart_upload, key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(error = %DisplayErrorContext(&e), key, "Cannot abort a failed multipart upload");
            self.metrics.s3_error("AbortMultipartUpload");
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        part: Bytes,
        md5: [u8; 16],
    ) -> Result<CompletedPart, StoreError> {
        self.throttle.pass(part.len() as u64).await;
        let out = object_call!(self, upload_part, key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(part.len() as i64)
            .content_md5(aws_smithy_types::base64::encode(md5))
            .body(ByteStream::from(part))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.failed("UploadPart", e))?;
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag().map(str::to_string))
            .part_number(part_number)
            .build())
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        write_if: &WriteIf,
    ) -> Result<(), StoreError> {
        let (if_none_match, if_match) = write_if.headers();
        object_call!(self, complete_multipart_upload, key)
            .upload_id(upload_id)
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.write_failed("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    async fn send_parts(
        &self,
        disk: &DiskStore,
        path: &Path,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        loop {
            let (part, md5) = disk.read_part(path, offset, PART_SIZE).await?;
            if part.is_empty() {
                break;
            }
            offset += part.len() as u64;
            let number = parts.len() as i32 + 1;
            parts.push(self.upload_part(key, upload_id, number, part, md5).await?);
            crate::failpoint::crash_point("mid-multipart");
        }
        Ok(parts)
    }

    /// Starts writing an object of unknown length piece by piece.
    pub fn writer(&self, key: &str) -> ObjectWriter<'_> {
        ObjectWriter {
            store: self,
            key: key.to_string(),
            buffer: bytes::BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
            size: 0,
        }
    }

    /// Hands every object under `prefix` to `each`, a page at a time, so
    /// that a listing of millions of keys never sits in memory.
    pub async fn list_each(
        &self,
        prefix: &str,
        mut each: impl FnMut(Listed),
    ) -> Result<(), StoreError> {
        let mut listing = self.listing(prefix);
        while let Some(page) = listing.next_page().await? {
            page.into_iter().for_each(&mut each);
        }
        Ok(())
    }

    /// The objects under `prefix`, a page at a time, in key order.
    pub fn listing(&self, prefix: &str) -> Listing<'_> {
        Listing {
            store: self,
            prefix: prefix.to_string(),
            token: None,
            done: false,
        }
    }

    /// Multipart uploads started under `prefix` and never completed or
    /// aborted (what a process killed mid-upload leaves). `None` when the
    /// server does not implement the listing.
    pub async fn incomplete_uploads(
        &self,
        prefix: &str,
    ) -> Result<Option<Vec<Listed>>, StoreError> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let result = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) if matches!(status_of(&e), Some(501)) => return Ok(None),
                Err(e) => return Err(self.failed("ListMultipartUploads", e)),
            };
            for upload in out.uploads() {
                uploads.push(Listed {
                    name: upload.key().unwrap_or_default().to_string(),
                    size: 0,
                    modified: upload
                        .initiated()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                });
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if !out.is_truncated().unwrap_or(false) || key_marker.is_none() {
                return Ok(Some(uploads));
            }
        }
    }
}

/// A listing in progress (see [`S3Store::listing`]).
pub struct Listing<'a> {
    store: &'a S3Store,
    prefix: String,
    token: Option<String>,
    done: bool,
}

impl Listing<'_> {
    /// The next page of objects (up to 1000), or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let store = self.store;
        let out = store
            .client
            .list_objects_v2()
            .bucket(&store.bucket)
            .prefix(&self.prefix)
            .set_continuation_token(self.token.take())
            .send()
            .await
            .map_err(|e| store.failed("ListObjectsV2", e))?;
        let page = out
            .contents()
            .iter()
            .filter_map(|object| {
                Some(Listed {
                    name: object.key()?.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                })
            })
            .collect();
        match out.next_continuation_token() {
            Some(next) if out.is_truncated().unwrap_or(false) => {
                self.token = Some(next.to_string())
            }
            _ => self.done = true,
        }
        Ok(Some(page))
    }
}

/// An object written piece by piece: parts go up as they fill, so memory
/// holds one part whatever the length. Small objects become one PutObject.
/// After an error, call `abort` so that no partial upload is left behind;
/// a writer dropped unfinished (its caller went away) aborts in the
/// background.
pub struct ObjectWriter<'a> {
    store: &'a S3Store,
    key: String,
    buffer: bytes::BytesMut,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    size: u64,
}

impl ObjectWriter<'_> {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(data);
        self.size += data.len() as u64;
        while self.buffer.len() >= PART_SIZE {
            let part = self.buffer.split_to(PART_SIZE).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.store.create_upload(&self.key, None).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        let md5 = md5_of(part.clone()).await;
        let done = self
            .store
            .upload_part(&self.key, &upload_id, number, part, md5)
            .await?;
        self.parts.push(done);
        Ok(())
    }

    /// Completes the object; returns its size.
    pub async fn finish(&mut self) -> Result<u64, StoreError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if self.upload_id.is_none() {
            let digest = sha1_digest_of(&rest);
            self.store
                .put_bytes(&self.key, rest, &digest, &WriteIf::Any)
                .await?;
            return Ok(self.size);
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let parts = std::mem::take(&mut self.parts);
        self.store
            .complete_upload(&self.key, &upload_id, parts, &WriteIf::Any)
            .await?;
        self.upload_id = None;
        Ok(self.size)
    }

    /// Drops whatever was uploaded so far.
    pub async fn abort(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            self.store.abort_upload(&self.key, &upload_id).await;
        }
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { store.abort_upload(&key, &upload_id).await });
            }
            Err(_) => {
                tracing::warn!(
                    key,
                    upload_id,
                    "An unfinished multipart upload is left: no runtime to abort it"
                )
            }
        }
    }
}

/// The keys the settings give, when they give them (else the SDK's
/// credential chain applies).
pub(super) fn static_credentials(config: &S3Config) -> Option<Credentials> {
    let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) else {
        return None;
    };
    Some(Credentials::new(
        key.clone(),
        secret.expose().to_string(),
        None,
        None,
        "noodle-migrate",
    ))
}

/// An `http://` endpoint: a bucket on the local network.
pub(super) fn plain_http(config: &S3Config) -> bool {
    config
        .endpoint
        .as_deref()
        .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"))
}

/// The answer to a write whose key no longer holds what it expected.
fn taken(key: &str) -> StoreError {
    StoreError::TargetTaken(format!("object {key}"))
}

impl WriteIf {
    /// `If-None-Match` and `If-Match`.
    fn headers(&self) -> (Option<String>, Option<String>) {
        match self {
            WriteIf::Any => (None, None),
            WriteIf::Absent => (Some("*".into()), None),
            WriteIf::Matches(etag) => (None, Some(etag.clone())),
        }
    }
}

/// The bytes each ranged GET asks for; an object larger than this comes
/// over several connections. Large, because a server pays for every
/// request (Garage looks the object up again for each: serving 256 MB
/// objects in 32 MB segments costs it about a tenth less CPU per MB than
/// in 8 MB ones), while the bytes of a segment not yet read wait in its
/// connection, not here.
const SEGMENT: u64 = 32 * 1024 * 1024;
/// Connections per large download, the first GET's included.
const STREAMS_PER_DOWNLOAD: u32 = 4;
/// Extra connections for the whole process. A large download that finds
/// none free comes over its one connection.
const EXTRA_STREAMS: usize = 12;

/// What a ranged GET of a large download asks for.
#[derive(Clone)]
struct RangedGet {
    client: Client,
    bucket: String,
    key: String,
    etag: String,
    metrics: Arc<Metrics>,
}

impl RangedGet {
    /// The body of `len` bytes from `start` of an object of `size` bytes,
    /// once the server has answered (its bytes not read yet).
    async fn send(&self, start: u64, len: u64, size: u64) -> Result<ByteStream, StoreError> {
        let last = start + len - 1;
        let replaced = || {
            StoreError::SourceChanged(format!(
                "object {} was replaced during its download",
                self.key
            ))
        };
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .if_match(&self.etag)
            .range(format!("bytes={start}-{last}"))
            .send()
            .await
            .map_err(|e| {
                if status_of(&e) == Some(412) {
                    return replaced();
                }
                self.metrics.s3_error("GetObject");
                s3_error("GetObject", e)
            })?;
        // A server that ignores If-Match still names the version it sent.
        if out.e_tag() != Some(self.etag.as_str()) {
            return Err(replaced());
        }
        // Range is part of every S3 API: a server that answers with other
        // bytes fails the file.
        let range = format!("bytes {start}-{last}/{size}");
        if out.content_length() != Some(len as i64) || out.content_range() != Some(range.as_str()) {
            return Err(StoreError::S3 {
                operation: "GetObject",
                status: None,
                message: format!(
                    "a ranged GET for {range} answered {:?} ({:?} bytes)",
                    out.content_range(),
                    out.content_length()
                ),
            });
        }
        Ok(out.body)
    }
}

/// A large download over several connections. The segments after the
/// one being read are asked for ahead, each in a task of its own; their
/// bytes wait in the connections (the kernel's buffers, then the server)
/// until their turn, not in this process's memory.
struct Segmented {
    /// The segment being read, and the bytes still to take from it.
    current: Option<(ByteStream, u64)>,
    /// The ranged GETs sent ahead, in order, with their lengths.
    ahead:
        std::collections::VecDeque<(tokio::task::JoinHandle<Result<ByteStream, StoreError>>, u64)>,
    /// Where the next segment to ask for starts.
    next_start: u64,
    size: u64,
    request: RangedGet,
    /// The extra connections it holds, given back with the download.
    _permits: tokio::sync::OwnedSemaphorePermit,
}

impl Segmented {
    /// Keeps `STREAMS_PER_DOWNLOAD - 1` ranged GETs ahead of the segment
    /// being read.
    fn send_ahead(&mut self) {
        while self.ahead.len() < (STREAMS_PER_DOWNLOAD - 1) as usize && self.next_start < self.size
        {
            let (start, size) = (self.next_start, self.size);
            let len = SEGMENT.min(size - start);
            let request = self.request.clone();
            let task = tokio::spawn(async move { request.send(start, len, size).await });
            self.ahead.push_back((task, len));
            self.next_start += len;
        }
    }

    async fn next_chunk(&mut self, throttle: &Throttle) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some((body, left)) = &mut self.current {
                if *left > 0 {
                    let Some(chunk) = body.try_next().await.map_err(body_failed)? else {
                        return Err(body_failed(format!("the body ended {left} bytes short")));
                    };
                    // The first GET asked for the whole object: it is cut
                    // short where the ranged GETs take over.
                    let chunk = chunk.slice(..chunk.len().min(*left as usize));
                    *left -= chunk.len() as u64;
                    throttle.pass(chunk.len() as u64).await;
                    return Ok(Some(chunk));
                }
            }
            self.current = None;
            let Some((task, len)) = self.ahead.pop_front() else {
                return Ok(None);
            };
            self.send_ahead();
            let body = task
                .await
                .map_err(|e| body_failed(format!("the request stopped: {e}")))??;
            self.current = Some((body, len));
        }
    }
}

impl Drop for Segmented {
    fn drop(&mut self) {
        // A download given up (a failed file, a cancelled run) asks for
        // nothing more.
        for (task, _) in &self.ahead {
            task.abort();
        }
    }
}

fn body_failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::S3 {
        operation: "GetObject",
        status: None,
        message: format!("reading the body: {e}"),
    }
}

enum Body {
    Stream(ByteStream),
    Segments(Box<Segmented>),
}

/// A GetObject in progress.
pub struct Download {
    pub meta: ObjectMeta,
    body: Body,
    throttle: Arc<Throttle>,
}

impl Download {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match &mut self.body {
            Body::Stream(body) => {
                let chunk = body.try_next().await.map_err(body_failed)?;
                // Paid after it came: while this waits, the connection's
                // window fills and the server slows down to the limit.
                if let Some(chunk) = &chunk {
                    self.throttle.pass(chunk.len() as u64).await;
                }
                Ok(chunk)
            }
            Body::Segments(segments) => segments.next_chunk(&self.throttle).await,
        }
    }
}

impl Store for S3Store {
    type Writer<'a> = ObjectWriter<'a>;
    type Listing<'a> = Listing<'a>;

    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.head(key).await?.map(|meta| meta.size))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        S3Store::delete(self, key).await
    }

    async fn create(&self, key: &str) -> Result<ObjectWriter<'_>, StoreError> {
        Ok(self.writer(key))
    }

    fn list<'a>(&'a self, prefix: &str) -> Listing<'a> {
        self.listing(prefix)
    }
}

impl StoreWriter for ObjectWriter<'_> {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        ObjectWriter::write(self, data).await
    }

    async fn finish(mut self) -> Result<u64, StoreError> {
        let finished = ObjectWriter::finish(&mut self).await;
        if finished.is_err() {
            ObjectWriter::abort(&mut self).await;
        }
        finished
    }

    async fn abort(mut self) {
        ObjectWriter::abort(&mut self).await
    }
}

impl StoreListing for Listing<'_> {
    async fn next_page(&mut self) -> Result<Option<Vec<Listed>>, StoreError> {
        Listing::next_page(self).await
    }
}
