//! The API's edges: bad input, refusals, authentication. Each refusal is a
//! clear 4xx/5xx JSON error and changes nothing.

use crate::helpers::{EnvOptions, TestEnv};

async fn assert_nothing_changed(env: &TestEnv) {
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
    assert_eq!(
        env.count("SELECT count(*) FROM storage_migration_log")
            .await,
        0
    );
    assert!(env.keys().await.is_empty());
}

#[actix_rt::test]
async fn bad_input_gets_its_4xx_and_changes_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "GET",
            "/storage-migration/estimate",
            None,
            400,
            "invalid_direction",
        ),
        (
            "GET",
            "/storage-migration/estimate?direction=sideways",
            None,
            400,
            "invalid_direction",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some("{not json"),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(""),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"up"}"#),
            400,
            "invalid_direction",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toS3","concurrency":0}"#),
            400,
            "invalid_concurrency",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toS3","concurrency":21}"#),
            400,
            "invalid_concurrency",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toS3","concurrency":"five"}"#),
            400,
            "invalid_concurrency",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toS3","deleteSource":1}"#),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toS3","extra":true}"#),
            400,
            "unknown_field",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(
                r#"{"direction":"toS3","fileTypes":{"originals":false,"thumbnails":false,"previews":false,"fullsize":false,"sidecars":false,"encodedVideos":false,"personThumbnails":false,"profileImages":false}}"#,
            ),
            400,
            "no_file_types",
        ),
        (
            "POST",
            "/storage-migration/rollback/not-a-uuid",
            Some(""),
            400,
            "invalid_batch_id",
        ),
        (
            "POST",
            "/storage-migration/rollback/0193e5d2-0000-7000-8000-000000000000",
            Some(""),
            404,
            "batch_not_found",
        ),
        (
            "POST",
            "/storage-migration/start",
            Some(r#"{"direction":"toDisk"}"#),
            409,
            "backend_mismatch",
        ),
        ("GET", "/no/such/endpoint", None, 404, "not_found"),
    ];
    for (method, path, body, expected, code) in cases {
        let (status, json) = match *method {
            "GET" => app.get(path).await,
            _ => app.post(path, body.unwrap_or("")).await,
        };
        assert_eq!(status, *expected, "{method} {path} {body:?}: {json}");
        assert_eq!(json["error"], *code, "{method} {path}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A method a route does not have: 405, and the methods it has.
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/storage-migration/status", "GET"),
        (reqwest::Method::PUT, "/database-dumps", "GET, POST"),
        (
            reqwest::Method::GET,
            "/storage-migration/rollback/0193e5d2-0000-7000-8000-000000000000",
            "POST",
        ),
    ] {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .expect("the engine answers");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let json: serde_json::Value = response.json().await.expect("a JSON error");
        assert_eq!(
            json["error"], "method_not_allowed",
            "{method} {path}: {json}"
        );
    }
    let big = format!(r#"{{"direction":"toS3","pad":"{}"}}"#, "x".repeat(200_000));
    let (status, _) = app.post("/storage-migration/start", &big).await;
    assert_eq!(status, 413);
    assert_nothing_changed(&env).await;
}

#[actix_rt::test]
async fn the_backend_must_match_the_direction() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("disk", "").await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(json["error"], "backend_mismatch");
    assert!(json["message"]
        .as_str()
        .is_some_and(|m| m.contains("IMMICH_STORAGE_BACKEND=s3")));
    assert_nothing_changed(&env).await;

    // Unset means disk, as the gallery reads it: toS3 is refused and the
    // message says what to set.
    let mut vars = env.vars("s3", "");
    vars.remove("IMMICH_STORAGE_BACKEND");
    let app = env.spawn(vars).await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(json["error"], "backend_mismatch");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("IMMICH_STORAGE_BACKEND is unset")
                && m.contains("IMMICH_STORAGE_BACKEND=s3")),
        "{json}"
    );
    assert_nothing_changed(&env).await;
    // The second gallery's variable is named the same way, with its words.
    let mut vars = env.vars("s3", "p");
    vars.insert("IMMICH_STORAGE_ENGINE".into(), "local".into());
    let app = env.spawn(vars).await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 409, "{json}");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("IMMICH_STORAGE_ENGINE=s3")),
        "{json}"
    );
    // Toward disk, unset is what it needs.
    let mut vars = env.vars("disk", "");
    vars.remove("IMMICH_STORAGE_BACKEND");
    let app = env.spawn(vars).await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toDisk"}"#)
        .await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(json["error"], "nothing_to_migrate", "not a backend problem");
    assert_nothing_changed(&env).await;
}

#[actix_rt::test]
async fn an_unreachable_bucket_is_explained() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_BUCKET".into(), "no-such-bucket-here".into());
    let app = env.spawn(vars).await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error"], "bucket_unavailable");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such bucket")),
        "{json}"
    );

    let mut vars = env.vars("s3", "");
    vars.insert("S3_SECRET_ACCESS_KEY".into(), "wrong-secret".into());
    let app = env.spawn(vars).await;
    let (status, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 503, "{json}");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("access denied")),
        "{json}"
    );
    assert!(!json.to_string().contains("wrong-secret"));
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"noodle_migrate_s3_request_errors_total{operation="HeadBucket"} 1"#));
    assert!(!metrics.contains("wrong-secret"));
    assert_nothing_changed(&env).await;
}

#[actix_rt::test]
async fn the_api_token_guards_everything_but_healthz() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_API_TOKEN".into(),
        "a-long-enough-test-token".into(),
    );
    let mut app = env.spawn(vars).await;
    let (status, _) = app.get("/storage-migration/status").await;
    assert_eq!(status, 200, "with the token");
    let token = app.token.take();
    let (status, json) = app.get("/storage-migration/status").await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(json["error"], "unauthorized");
    let (status, _) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(status, 401);
    app.token = Some("a-long-enough-test-tokeX".into());
    let (status, _) = app.get("/storage-migration/status").await;
    assert_eq!(status, 401, "a wrong token");
    let (status, json) = app.get("/healthz").await;
    assert_eq!(status, 200, "{json}");
    app.token = token;
    assert_nothing_changed(&env).await;
}

#[actix_rt::test]
async fn status_before_any_run() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (status, json) = app.get("/storage-migration/status").await;
    assert_eq!(status, 200);
    assert_eq!(json["isActive"], false);
    assert!(json["batchId"].is_null());
    for field in [
        "waiting",
        "active",
        "completed",
        "failed",
        "skipped",
        "bytesMoved",
    ] {
        assert_eq!(json[field], 0, "{field}");
    }
}

/// An estimate leaves most of the pool to a run reading its pages: it
/// never holds more than a few connections at once.
#[actix_rt::test]
async fn an_estimate_takes_a_few_connections_not_the_pool() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let others = r#"SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend'"#;
    let before = env.count(others).await;
    let (code, json) = app.get("/storage-migration/estimate?direction=toS3").await;
    assert_eq!(code, 200, "{json}");
    // The pool keeps what it opened: the connections the estimate needed.
    let opened = env.count(others).await - before;
    assert!(opened <= 3, "the estimate opened {opened} connections");
}
