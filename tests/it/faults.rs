//! S3 faults: a small HTTP proxy on loopback sits between the engine and
//! the S3 server and answers 500/503 SlowDown, drops connections or stalls
//! on a share of the requests (or always, for "poisoned" requests), or
//! tampers with what passes through it.

use crate::helpers::{EnvOptions, TestEnv};
use crate::seed::SeedSpec;
use noodle_migrate::model::FileKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicUsize,
    pub faults: AtomicUsize,
    pub lines: Mutex<Vec<String>>,
}

pub struct FaultProxy {
    pub endpoint: String,
    pub counters: Arc<Counters>,
}

#[derive(Clone)]
struct Plan {
    upstream: String,
    rate: f64,
    poison: Option<String>,
    /// Added to every request.
    delay: Duration,
    tamper: Tamper,
}

/// What the proxy changes in every PUT that passes through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    Nothing,
    /// One bit of the body flipped on its way to the server.
    Body,
    /// The answer without `x-amz-checksum-sha1`: a server that ignores it.
    HideChecksum,
    /// As `HideChecksum`, and the ETag of other bytes than those sent.
    HideChecksumWrongEtag,
    /// The ETag of other bytes, the checksums kept.
    WrongEtag,
}

impl FaultProxy {
    /// `rate`: share of requests that get a fault; requests whose first line
    /// contains `poison` always fail with 500.
    pub async fn start(upstream: &str, rate: f64, poison: Option<String>) -> FaultProxy {
        Self::launch(upstream, rate, poison, Duration::ZERO, Tamper::Nothing).await
    }

    /// No faults, only a delay on every request: a slow server.
    pub async fn slow(upstream: &str, delay: Duration) -> FaultProxy {
        Self::launch(upstream, 0.0, None, delay, Tamper::Nothing).await
    }

    /// Every PUT changed as `tamper` says.
    pub async fn tampering(upstream: &str, tamper: Tamper) -> FaultProxy {
        Self::launch(upstream, 0.0, None, Duration::ZERO, tamper).await
    }

    async fn launch(
        upstream: &str,
        rate: f64,
        poison: Option<String>,
        delay: Duration,
        tamper: Tamper,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let counters = Arc::new(Counters::default());
        let plan = Plan {
            upstream: upstream.trim_start_matches("http://").to_string(),
            rate,
            poison,
            delay,
            tamper,
        };
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (plan, c) = (plan.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, plan, c).await;
                });
            }
        });
        FaultProxy { endpoint, counters }
    }
}

fn error_response(status: u16, code: &str) -> Vec<u8> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>");
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request per connection: read it, maybe break it, else forward it
/// with `Connection: close` and relay the whole answer.
async fn serve(mut client: TcpStream, plan: Plan, counters: Arc<Counters>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut expect_continue = false;
    let mut forwarded = format!("{first}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("expect:") {
            expect_continue = lower.contains("100-continue");
            continue;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    if expect_continue {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).await?;
    counters.requests.fetch_add(1, Ordering::SeqCst);
    counters
        .lines
        .lock()
        .map(|mut l| l.push(first.clone()))
        .ok();

    let poisoned = plan.poison.as_deref().is_some_and(|p| first.contains(p));
    let roll: f64 = rand::random();
    if poisoned || roll < plan.rate {
        counters.faults.fetch_add(1, Ordering::SeqCst);
        let which = if poisoned {
            1
        } else {
            rand::random_range(0..4)
        };
        match which {
            0 => return client.write_all(&error_response(503, "SlowDown")).await,
            1 => {
                return client
                    .write_all(&error_response(500, "InternalError"))
                    .await
            }
            2 => return Ok(()), // dropped without an answer
            _ => tokio::time::sleep(Duration::from_millis(800)).await,
        }
    }
    tokio::time::sleep(plan.delay).await;
    let put = first.starts_with("PUT ");
    if put && plan.tamper == Tamper::Body && !body.is_empty() {
        body[0] ^= 1;
    }
    let mut upstream = TcpStream::connect(&plan.upstream).await?;
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&body).await?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await?;
    let (hide, wrong_etag) = match plan.tamper {
        Tamper::HideChecksum => (true, false),
        Tamper::HideChecksumWrongEtag => (true, true),
        Tamper::WrongEtag => (false, true),
        Tamper::Nothing | Tamper::Body => (false, false),
    };
    if put && (hide || wrong_etag) {
        answer = edit_answer_head(&answer, hide, wrong_etag);
    }
    client.write_all(&answer).await?;
    client.shutdown().await
}

/// The answer without its `x-amz-checksum-*` headers when `hide`, with
/// the ETag of other bytes when `wrong_etag`.
fn edit_answer_head(answer: &[u8], hide: bool, wrong_etag: bool) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut edited = String::new();
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if hide && lower.starts_with("x-amz-checksum-") {
            continue;
        }
        if wrong_etag && lower.starts_with("etag:") {
            edited.push_str("ETag: \"0123456789abcdef0123456789abcdef\"\r\n");
            continue;
        }
        edited.push_str(line);
        edited.push_str("\r\n");
    }
    let mut out = edited.into_bytes();
    out.extend_from_slice(&answer[end + 2..]);
    out
}

fn with_big_file(env: &TestEnv) -> (Uuid, String, Vec<u8>) {
    let owner = env.seeded.users[0];
    let asset_id = Uuid::now_v7();
    let path = format!(
        "{}/upload/{owner}/bb/00/{asset_id}.mp4",
        env.media_path().display()
    );
    let data = crate::seed::content(7, 20 * 1024 * 1024 + 17);
    (asset_id, path, data)
}

#[actix_rt::test]
async fn flaky_s3_still_gets_every_file_both_ways() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 30,
            max_size: 20_000,
        },
        ..Default::default()
    })
    .await;
    let (asset_id, big_path, big) = with_big_file(&env);
    env.insert_original(asset_id, &big_path, &big).await;
    let proxy = FaultProxy::start(&crate::helpers::s3_endpoint(), 0.1, None).await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());

    let app = env.spawn(vars.clone()).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","deleteSource":true,"concurrency":8}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64 + 1,
        "{status}"
    );
    for file in &env.seeded.files {
        let relative = file.relative(env.media_path());
        assert_eq!(env.current_path(file.kind, file.row_id).await, relative);
        assert_eq!(
            env.object(&relative).await.as_deref(),
            Some(file.content.as_slice())
        );
    }
    let big_key = env.current_path(FileKind::Originals, asset_id).await;
    assert!(env.object(&big_key).await == Some(big.clone()));

    vars.insert("IMMICH_STORAGE_BACKEND".into(), "disk".into());
    let app = env.spawn(vars).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toDisk","deleteSource":true,"verify":true}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    for file in &env.seeded.files {
        assert_eq!(std::fs::read(&file.path).expect("back"), file.content);
    }
    assert!(std::fs::read(&big_path).expect("big file back") == big);
    assert!(env.keys().await.is_empty());
    let faults = proxy.counters.faults.load(Ordering::SeqCst);
    let requests = proxy.counters.requests.load(Ordering::SeqCst);
    assert!(
        faults >= 5,
        "{faults} faults injected in {requests} requests"
    );
}

#[actix_rt::test]
async fn a_permanent_failure_is_reported_and_counted_not_retried_forever() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let victim = env
        .seeded
        .of_kind(FileKind::Previews)
        .next()
        .expect("preview")
        .clone();
    let poison = victim.relative(env.media_path());
    let proxy = FaultProxy::start(&crate::helpers::s3_endpoint(), 0.0, Some(poison.clone())).await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    let app = env.spawn(vars).await;
    let (_, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["failureReasons"]["s3_error"], 1, "{status}");
    assert_eq!(status["completed"], env.seeded.files.len() as i64 - 1);
    assert_eq!(
        env.current_path(victim.kind, victim.row_id).await,
        victim.path
    );
    let attempts = proxy
        .counters
        .lines
        .lock()
        .map(|l| l.iter().filter(|line| line.contains(&poison)).count())
        .unwrap_or(0);
    assert!(
        (1..=10).contains(&attempts),
        "bounded retries, got {attempts}"
    );
    let metrics = app.metrics().await;
    // The bucket was empty when the run began, so the file went straight
    // to its upload (no HEAD): that is the request that failed.
    assert!(
        metrics.contains(r#"noodle_migrate_s3_request_errors_total{operation="PutObject"} 1"#),
        "counted"
    );
    assert!(metrics
        .contains(r#"noodle_migrate_file_failures_total{direction="toS3",reason="s3_error"} 1"#));
}

#[actix_rt::test]
async fn a_failed_multipart_upload_is_aborted() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 1,
            max_size: 1000,
        },
        ..Default::default()
    })
    .await;
    let (asset_id, big_path, big) = with_big_file(&env);
    env.insert_original(asset_id, &big_path, &big).await;
    // The second part always fails.
    let proxy = FaultProxy::start(
        &crate::helpers::s3_endpoint(),
        0.0,
        Some("partNumber=2".into()),
    )
    .await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    let app = env.spawn(vars).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","deleteSource":true}"#)
        .await;
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(
        env.current_path(FileKind::Originals, asset_id).await,
        big_path
    );
    assert!(std::fs::read(&big_path).expect("source kept") == big);
    let lines = proxy
        .counters
        .lines
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DELETE ") && l.contains("uploadId=")),
        "AbortMultipartUpload was sent"
    );
    let key = format!("upload/{}/bb/00/{asset_id}.mp4", env.seeded.users[0]);
    assert!(
        env.object(&key).await.is_none(),
        "no object from the failed upload"
    );
}

/// A large object comes over several connections at once: whole and in
/// order, and never mixed with another version written meanwhile.
#[actix_rt::test]
async fn a_large_download_is_whole_and_never_mixes_two_versions() {
    use noodle_migrate::config::{Config, Vars};
    use noodle_migrate::store::S3Store;
    use noodle_migrate::telemetry::Metrics;
    let env = TestEnv::new(EnvOptions::default()).await;
    let config = Config::from_vars(&Vars::new(env.vars("disk", ""))).expect("config");
    let metrics = std::sync::Arc::new(Metrics::new().expect("metrics"));
    let s3 = S3Store::connect(&config.s3, metrics).await;
    // More segments than go ahead at once (32 MiB each, four at a time),
    // so that one is asked for after the object is replaced.
    let size = 4 * 32 * 1024 * 1024 + 5;
    let first = crate::seed::content(11, size);
    env.put_object("big.mov", &first).await;

    let mut download = s3.get("big.mov").await.expect("get");
    let mut received = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = download.next_chunk().await.expect("chunk") {
        received.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks > 1, "came in segments");
    assert!(received == first, "whole and in order");

    let mut download = s3.get("big.mov").await.expect("get");
    download.next_chunk().await.expect("first segment");
    env.put_object("big.mov", &crate::seed::content(12, size))
        .await;
    let error = loop {
        match download.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a download went on over a replaced object"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(error, noodle_migrate::store::StoreError::SourceChanged(_)),
        "{error}"
    );
}
