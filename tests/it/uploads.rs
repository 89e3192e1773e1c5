//! Single-request uploads: a small body goes out on the store's own lean
//! request path (plain HTTP, static keys), a larger one through the SDK.
//! Both must write the same object and honour the same conditions.

use crate::faults::{FaultProxy, Tamper};
use crate::helpers::{EnvOptions, TestEnv};
use noodle_migrate::config::{Config, Vars};
use noodle_migrate::store::hash::{digest_of, sha1_digest_of};
use noodle_migrate::store::{S3Store, StoreError, WriteIf};
use noodle_migrate::telemetry::Metrics;
use std::collections::HashMap;
use std::sync::Arc;

/// Under the lean path's limit, over it, and far more than the sockets
/// buffer: a server that refuses a conditional write on its headers (as
/// s3s-fs does) closes the connection long before such a body is sent.
const SIZES: [usize; 3] = [30_000, 2 * 1024 * 1024 + 3, 32 * 1024 * 1024];

async fn store(vars: HashMap<String, String>) -> S3Store {
    let config = Config::from_vars(&Vars::new(vars)).expect("config");
    S3Store::connect(&config.s3, Arc::new(Metrics::new().expect("metrics"))).await
}

async fn read_all(s3: &S3Store, key: &str) -> Vec<u8> {
    let mut download = s3.get(key).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = download.next_chunk().await.expect("chunk") {
        out.extend_from_slice(&chunk);
    }
    out
}

#[actix_rt::test]
async fn both_request_paths_write_the_same_object_under_the_same_conditions() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let s3 = store(env.vars("disk", "")).await;
    for (i, size) in SIZES.into_iter().enumerate() {
        // Every byte a key may hold that needs encoding in a URL.
        let key = format!("upload/{i}/ü ä/a+b%c=(1)&~*'.jpg");
        let data = crate::seed::content(20 + i as u64, size);
        // As a file is read for an upload: the SHA-1 alone.
        let digest = sha1_digest_of(&data);
        s3.put_whole(&key, data.clone().into(), &digest, &WriteIf::Absent)
            .await
            .expect("put");
        let meta = s3.head(&key).await.expect("head").expect("there");
        assert_eq!(meta.size, size as u64);
        assert_eq!(
            meta.md5,
            digest_of(&data).md5,
            "plain ETag: the MD5 of what was sent"
        );
        assert_eq!(meta.sha1, Some(digest.sha1), "the SHA-1 in the metadata");
        assert!(read_all(&s3, &key).await == data, "the same bytes");

        let again = s3
            .put_whole(&key, data.clone().into(), &digest, &WriteIf::Absent)
            .await;
        assert!(
            matches!(again, Err(StoreError::TargetTaken(_))),
            "{again:?}"
        );

        let other = crate::seed::content(40 + i as u64, size);
        // The MD5 known beforehand is used, not computed again.
        let other_digest = digest_of(&other);
        let stale = s3
            .put_whole(
                &key,
                other.clone().into(),
                &other_digest,
                &WriteIf::Matches("\"0123456789abcdef0123456789abcdef\"".into()),
            )
            .await;
        assert!(
            matches!(stale, Err(StoreError::TargetTaken(_))),
            "{stale:?}"
        );
        let etag = meta.etag.expect("etag");
        s3.put_whole(
            &key,
            other.clone().into(),
            &other_digest,
            &WriteIf::Matches(etag),
        )
        .await
        .expect("replace the copy looked at");
        assert!(read_all(&s3, &key).await == other, "replaced");
    }
}

#[actix_rt::test]
async fn a_refused_small_upload_is_retried_a_bounded_number_of_times_and_reported() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let key = "upload/poisoned/x.jpg";
    let proxy = FaultProxy::start(&crate::helpers::s3_endpoint(), 0.0, Some(key.into())).await;
    let mut vars = env.vars("disk", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    let s3 = store(vars).await;
    let data = crate::seed::content(3, SIZES[0]);
    let digest = digest_of(&data);
    let error = s3
        .put_whole(key, data.into(), &digest, &WriteIf::Absent)
        .await
        .expect_err("always refused");
    match &error {
        StoreError::S3 {
            operation,
            status,
            message,
        } => {
            assert_eq!(*operation, "PutObject");
            assert_eq!(*status, Some(500));
            assert!(message.contains("InternalError"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let attempts = proxy
        .counters
        .lines
        .lock()
        .map(|l| l.iter().filter(|line| line.contains("poisoned")).count())
        .unwrap_or(0);
    assert_eq!(attempts, 5, "as many attempts as the SDK's standard mode");
}

#[actix_rt::test]
async fn a_body_changed_on_its_way_is_refused_whether_or_not_the_server_checks_the_sha1() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // What each case ends in: on the lean path (small bodies), then
    // through the SDK with Content-MD5 (larger ones), which reads no
    // checksum from the answer.
    let cases = [
        // The server checks what it was sent and refuses the changed body.
        (Tamper::Body, [Some("BadDigest"), Some("BadDigest")]),
        // A server that names no checksum: the ETag is checked instead,
        // and matches...
        (Tamper::HideChecksum, [None, None]),
        // ... or does not.
        (
            Tamper::HideChecksumWrongEtag,
            [
                Some("does not match the MD5"),
                Some("does not match the MD5"),
            ],
        ),
        // A server that checked the SHA-1 sent is taken at its word: the
        // ETag (not always an MD5) is not compared.
        (Tamper::WrongEtag, [None, Some("does not match the MD5")]),
    ];
    for (i, (tamper, outcomes)) in cases.into_iter().enumerate() {
        let proxy = FaultProxy::tampering(&crate::helpers::s3_endpoint(), tamper).await;
        let mut vars = env.vars("disk", "");
        vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
        let s3 = store(vars).await;
        for (j, size) in SIZES[..2].iter().enumerate() {
            let key = format!("upload/tampered/{i}-{j}.jpg");
            let data = crate::seed::content(60 + i as u64, *size);
            let digest = sha1_digest_of(&data);
            let sent = s3
                .put_whole(&key, data.clone().into(), &digest, &WriteIf::Any)
                .await;
            match (outcomes[j], &sent) {
                (None, Ok(())) => assert!(read_all(&s3, &key).await == data),
                (Some(why), Err(e)) => assert!(e.to_string().contains(why), "{tamper:?} {j}: {e}"),
                _ => panic!("case {i}, size {size}: {sent:?}"),
            }
        }
    }
}
