//! PutObject of a small body to a plain-HTTP endpoint, sent without the
//! SDK's per-request machinery.
//!
//! Why: a library is mostly thumbnails of a few tens of kilobytes, and
//! against a server on the local network the SDK's work around each
//! request (its interceptors, configuration layers and endpoint rules)
//! cost as much CPU as the rest of a file's move: on a two-core machine
//! shared with the S3 server, that CPU is taken from the server. This
//! path sends the same PutObject (SigV4 over `UNSIGNED-PAYLOAD`) with a
//! fraction of the work, on quick-ACK connections of its own (`http1`).
//! Its body is checked by `x-amz-checksum-sha1` (the SHA-1 the gallery
//! needs anyway) rather than Content-MD5: MD5 was a fifth of the CPU a
//! small upload cost this process, and is computed only when a server
//! does not say it checked the SHA-1. Everything else, and every upload
//! this path does not fit
//! (HTTPS, credentials from the environment's chain, virtual-hosted or
//! accelerated addressing, server-side encryption, larger bodies), goes
//! through the SDK.
//!
//! It retries as the SDK's standard mode does: up to five attempts, on a
//! lost connection, a timeout, a 5xx other than 501, a 429 or a
//! throttling code, with an exponential, jittered backoff.

use super::hash::Digest;
use super::http1::{Connections, Failed};
use super::s3::{
    plain_http, static_credentials, CHECKSUM_SHA1_HEADER, CONNECT_TIMEOUT, READ_TIMEOUT,
    SHA1_HEADER,
};
use super::StoreError;
use crate::config::S3Config;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use hyper_014::StatusCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bodies up to this size take this path: above it the request's own
/// overhead no longer matters next to its bytes, and a body this small
/// is sent well within [`READ_TIMEOUT`] even over a slow link.
pub const SMALL_PUT_MAX: usize = 1024 * 1024;
/// As the SDK's standard retry mode is configured for this store.
const MAX_ATTEMPTS: u32 = 5;
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Enough of an error's body for its code and message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Error codes S3 servers send for "slow down" or a transient fault,
/// whatever the status they come with.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
];

/// The request's conditions and content, as the caller decided them.
pub struct SmallPut<'a> {
    pub key: &'a str,
    pub data: Bytes,
    pub digest: &'a Digest,
    pub content_type: &'a str,
    pub if_none_match: Option<&'a str>,
    pub if_match: Option<&'a str>,
}

#[derive(Clone)]
pub struct SmallPutClient {
    connections: Arc<Connections>,
    /// `host[:port]`, as the endpoint names it: the Host header, signed.
    authority: String,
    /// `/bucket` (after the endpoint's own path, if any): every key is
    /// appended to it.
    bucket_path: String,
    region: String,
    identity: Identity,
}

/// What the server answered to a PutObject it took.
pub struct Stored {
    pub etag: Option<String>,
    /// The answer names the SHA-1 sent as the body's: the server checked it.
    pub sha1_checked: bool,
}

/// One attempt's failure.
struct Failure {
    status: Option<u16>,
    message: String,
    retry: bool,
    /// Sent on a kept-alive connection the server had closed: worth
    /// sending again at once on a new one.
    stale: bool,
}

impl SmallPutClient {
    /// The client for `config`, or `None` when its uploads need the SDK.
    pub fn for_config(config: &S3Config) -> Option<SmallPutClient> {
        let endpoint = config.endpoint.as_deref()?;
        let credentials = static_credentials(config)?;
        if !plain_http(config)
            || !config.force_path_style
            || config.use_accelerate
            || config.sse.is_some()
        {
            return None;
        }
        // `plain_http` has checked the scheme.
        let rest = endpoint.get("http://".len()..)?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return None;
        }
        Some(SmallPutClient {
            connections: Arc::new(Connections::new(authority, CONNECT_TIMEOUT)),
            authority: authority.to_string(),
            bucket_path: format!(
                "{}/{}",
                path.trim_end_matches('/'),
                encode_path(&config.bucket)
            ),
            region: config.region.clone(),
            identity: credentials.into(),
        })
    }

    /// Sends the PutObject, retried like the SDK's.
    pub async fn put(&self, put: &SmallPut<'_>) -> Result<Stored, StoreError> {
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(put, false).await {
                Err(failure) if failure.stale => self.attempt(put, true).await,
                sent => sent,
            };
            let failure = match failure {
                Ok(stored) => return Ok(stored),
                Err(failure) => failure,
            };
            if !failure.retry || attempt >= MAX_ATTEMPTS {
                return Err(StoreError::S3 {
                    operation: "PutObject",
                    status: failure.status,
                    message: failure.message,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, put: &SmallPut<'_>, fresh: bool) -> Result<Stored, Failure> {
        let checksum = aws_smithy_types::base64::encode(put.digest.sha1);
        let head = self
            .signed_head(put, &checksum)
            .map_err(|message| Failure {
                status: None,
                message,
                retry: false,
                stale: false,
            })?;
        let exchange = self
            .connections
            .exchange(&head, &put.data, ERROR_BODY_LIMIT, fresh);
        let response = tokio::time::timeout(READ_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure {
                status: None,
                message: format!("no answer within {}s", READ_TIMEOUT.as_secs()),
                retry: true,
                stale: false,
            })?
            .map_err(transport)?;
        match StatusCode::from_u16(response.status) {
            Ok(status) if status.is_success() => Ok(Stored {
                sha1_checked: response.checksum_sha1.as_deref() == Some(checksum.as_str()),
                etag: response.etag,
            }),
            Ok(status) => Err(refused(status, &response.body)),
            Err(_) => Err(Failure {
                status: None,
                message: format!("an answer with status {}", response.status),
                retry: true,
                stale: false,
            }),
        }
    }

    /// The request line and headers, with their SigV4 signature;
    /// `checksum` is the body's SHA-1 in base64.
    fn signed_head(&self, put: &SmallPut<'_>, checksum: &str) -> Result<Vec<u8>, String> {
        let path = format!("{}/{}", self.bucket_path, encode_path(put.key));
        let url = format!("http://{}{path}", self.authority);
        let length = put.data.len().to_string();
        let md5 = put.digest.md5.map(aws_smithy_types::base64::encode);
        let sha1 = hex::encode(put.digest.sha1);
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &self.authority),
            ("content-length", &length),
            ("content-type", put.content_type),
            (SHA1_HEADER, &sha1),
            // The server checks the body against it (what Content-MD5
            // would do) and, when it does, says so in its answer: the MD5
            // is then never computed.
            (CHECKSUM_SHA1_HEADER, checksum),
        ];
        if let Some(md5) = &md5 {
            headers.push(("content-md5", md5));
        }
        if let Some(v) = put.if_none_match {
            headers.push(("if-none-match", v));
        }
        if let Some(v) = put.if_match {
            headers.push(("if-match", v));
        }
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent: encoded once, never normalized.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "PUT",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        let mut head = format!("PUT {path} HTTP/1.1\r\n");
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            if value.contains(['\r', '\n']) {
                return Err(format!("header {name} of {} holds a line break", put.key));
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        Ok(head.into_bytes())
    }
}

/// A request that got no answer: worth another attempt.
fn transport(failed: Failed) -> Failure {
    Failure {
        status: None,
        message: format!("dispatch failure: {}", failed.error),
        retry: true,
        stale: failed.stale,
    }
}

/// The server's refusal, with its S3 error code and message when given.
fn refused(status: StatusCode, body: &[u8]) -> Failure {
    let text = String::from_utf8_lossy(body);
    let code = xml_element(&text, "Code");
    let retry = (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || status == StatusCode::TOO_MANY_REQUESTS
        || code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
    let message = match (code, xml_element(&text, "Message")) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {})", status.as_u16()),
        (Some(code), None) => format!("{code} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {}", status),
    };
    Failure {
        status: Some(status.as_u16()),
        message,
        retry,
        stale: false,
    }
}

/// The text of `<name>…</name>`, in an S3 error document.
fn xml_element<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let start = text.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].trim())
}

/// The wait before attempt `attempt + 1`: full jitter over an exponential
/// bound, as the SDK's standard retry mode.
fn backoff(attempt: u32) -> Duration {
    let bound = INITIAL_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    bound.mul_f64(rand::random::<f64>())
}

/// A key or bucket as an S3 path: every byte but the unreserved ones and
/// `/` percent-encoded, as SigV4 expects it.
fn encode_path(name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Sse};

    fn config(endpoint: &str) -> S3Config {
        S3Config {
            bucket: "photos".into(),
            region: "garage".into(),
            prefix: String::new(),
            endpoint: Some(endpoint.into()),
            force_path_style: true,
            access_key_id: Some("key".into()),
            secret_access_key: Some(Secret::new("secret")),
            use_accelerate: false,
            sse: None,
        }
    }

    #[test]
    fn only_plain_http_path_style_static_keys_without_encryption() {
        assert!(SmallPutClient::for_config(&config("http://127.0.0.1:3900")).is_some());
        assert!(SmallPutClient::for_config(&config("HTTP://nas:3900/")).is_some());
        assert!(SmallPutClient::for_config(&config("https://s3.example.com")).is_none());
        let mut c = config("http://nas:3900");
        c.force_path_style = false;
        assert!(SmallPutClient::for_config(&c).is_none());
        let mut c = config("http://nas:3900");
        c.access_key_id = None;
        c.secret_access_key = None;
        assert!(SmallPutClient::for_config(&c).is_none());
        let mut c = config("http://nas:3900");
        c.sse = Some(Sse::Aes256);
        assert!(SmallPutClient::for_config(&c).is_none());
        let mut c = config("http://nas:3900");
        c.endpoint = None;
        assert!(SmallPutClient::for_config(&c).is_none());
    }

    #[test]
    fn keys_are_encoded_once_keeping_slashes() {
        assert_eq!(
            encode_path("upload/a b/ü+%~x.jpg"),
            "upload/a%20b/%C3%BC%2B%25~x.jpg"
        );
        assert_eq!(encode_path("plain/key-1_2.JPG"), "plain/key-1_2.JPG");
    }

    #[test]
    fn refusals_keep_the_servers_code_and_say_whether_to_retry() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>";
        let f = refused(StatusCode::SERVICE_UNAVAILABLE, body);
        assert_eq!(f.status, Some(503));
        assert!(f.retry);
        assert_eq!(f.message, "SlowDown: Reduce your rate (HTTP 503)");
        let f = refused(
            StatusCode::PRECONDITION_FAILED,
            b"<Error><Code>PreconditionFailed</Code></Error>",
        );
        assert!(!f.retry);
        assert_eq!(f.message, "PreconditionFailed (HTTP 412)");
        assert!(!refused(StatusCode::NOT_IMPLEMENTED, b"").retry);
        assert!(
            !refused(
                StatusCode::FORBIDDEN,
                b"<Error><Code>AccessDenied</Code></Error>"
            )
            .retry
        );
        assert!(
            refused(
                StatusCode::BAD_REQUEST,
                b"<Error><Code>RequestTimeout</Code></Error>"
            )
            .retry
        );
        assert!(refused(StatusCode::TOO_MANY_REQUESTS, b"").retry);
        assert_eq!(
            refused(StatusCode::BAD_GATEWAY, b"oops").message,
            "HTTP 502 Bad Gateway"
        );
    }

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        for attempt in 1..=10 {
            let bound = INITIAL_BACKOFF * (1 << (attempt - 1)).min(20);
            assert!(backoff(attempt) <= bound.min(MAX_BACKOFF));
        }
    }
}
