//! Stopping and acting on failures: cancel, SIGTERM, batch history, the
//! failure list, retrying only the failed files.

use crate::helpers::{EnvOptions, TestApp, TestEnv};
use crate::seed::SeedSpec;
use std::time::Duration;
use uuid::Uuid;

async fn wait_for_progress(app: &TestApp, files: i64) {
    for _ in 0..1000 {
        let (_, s) = app.get("/storage-migration/status").await;
        if s["completed"].as_i64().unwrap_or(0) >= files {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no progress");
}

/// Every row either still points at its disk file or at an object that
/// holds its bytes.
async fn assert_consistent(env: &TestEnv) {
    for file in &env.seeded.files {
        let path = env.current_path(file.kind, file.row_id).await;
        env.assert_whole(&path, &file.content).await;
    }
}

fn big() -> EnvOptions {
    EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 150,
            max_size: 2000,
        },
        ..Default::default()
    }
}

#[actix_rt::test]
async fn cancel_stops_cleanly_and_a_later_start_resumes() {
    let env = TestEnv::new(big()).await;
    let app = env.app("s3", "").await;
    let (code, json) = app.post("/storage-migration/cancel", "").await;
    assert_eq!(code, 409, "nothing to cancel: {json}");
    assert_eq!(json["error"], "not_running");

    let batch = app.start(r#"{"direction":"toS3","concurrency":1}"#).await;
    wait_for_progress(&app, 5).await;
    let (code, json) = app.post("/storage-migration/cancel", "").await;
    assert_eq!(code, 202, "{json}");
    assert_eq!(json["batchId"], batch.to_string());
    let status = app.wait_idle().await;
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["active"], 0);
    let done = status["completed"].as_i64().unwrap_or(0);
    assert!(done > 0 && done < env.seeded.files.len() as i64, "{status}");
    assert_eq!(env.batch_state(batch).await, "cancelled");
    assert_consistent(&env).await;

    let (code, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["batchId"], batch.to_string());
    assert_eq!(json["resumed"], true);
    let status = app.wait_idle().await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(env.log_rows(batch).await, env.seeded.files.len() as i64);
    assert_consistent(&env).await;
}

#[actix_rt::test]
async fn sigterm_lets_files_in_flight_finish_and_records_the_batch() {
    let env = TestEnv::new(big()).await;
    let vars = env.vars("s3", "");
    let (mut child, app) = crate::resume::spawn_binary(&vars, crate::resume::free_port()).await;
    let batch = app.start(r#"{"direction":"toS3","concurrency":2}"#).await;
    wait_for_progress(&app, 5).await;
    crate::resume::terminate(&mut child).await;
    assert_eq!(env.batch_state(batch).await, "cancelled");
    assert_consistent(&env).await;
}

/// `run` stopped by SIGTERM while an upload outlasts the shutdown deadline:
/// it says so and exits 1, leaving the batch to resume (it used to wait on
/// the spent signal again and panic).
#[actix_rt::test]
async fn run_past_the_shutdown_deadline_exits_without_panicking() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let proxy =
        crate::faults::FaultProxy::slow(&crate::helpers::s3_endpoint(), Duration::from_secs(4))
            .await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    vars.insert("NOODLE_MIGRATE_SHUTDOWN_SECS".into(), "1".into());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_noodle-migrate"))
        .args(["run", "--direction", "toS3", "--concurrency", "2"])
        .env_clear()
        .envs(&vars)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run noodle-migrate");
    // The first uploads are on their way once requests beyond the start's
    // own (the bucket check) reach the server.
    let uploading = async {
        while proxy
            .counters
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            < 3
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), uploading)
        .await
        .expect("the run never started uploading");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("next start resumes the batch"), "{stderr}");
}

#[actix_rt::test]
async fn failures_are_listed_and_only_they_are_retried() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let missing: Vec<_> = env
        .seeded
        .files
        .iter()
        .skip(2)
        .step_by(7)
        .take(3)
        .cloned()
        .collect();
    for f in &missing {
        std::fs::rename(&f.path, format!("{}.away", f.path)).expect("hide");
    }
    let app = env.app("s3", "").await;
    let (batch, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 3, "{status}");
    assert_eq!(status["failureReasons"]["source_missing"], 3);

    let (code, json) = app.get("/storage-migration/batches").await;
    assert_eq!(code, 200, "{json}");
    let first = &json["batches"][0];
    assert_eq!(first["id"], batch.to_string());
    assert_eq!(first["failed"], 3);
    assert_eq!(first["skipped"], 1);
    assert_eq!(first["state"], "completed_with_failures");

    // Three failures and one skip, two per page.
    let mut seen = Vec::new();
    let mut url = format!("/storage-migration/batches/{batch}/failures?limit=2");
    loop {
        let (code, page) = app.get(&url).await;
        assert_eq!(code, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push((
                item["outcome"].as_str().unwrap_or_default().to_string(),
                item["reason"].clone(),
            ));
            assert!(item["path"].is_string() && item["message"].is_string());
        }
        match page["nextAfter"].as_str() {
            Some(next) => {
                url = format!("/storage-migration/batches/{batch}/failures?limit=2&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen.iter().filter(|(o, _)| o == "failed").count(), 3);

    for (path, code, error) in [
        (
            format!("/storage-migration/batches/{}/failures", Uuid::new_v4()),
            404,
            "batch_not_found",
        ),
        (
            format!("/storage-migration/batches/{batch}/failures?limit=0"),
            400,
            "invalid_limit",
        ),
        (
            format!("/storage-migration/batches/{batch}/failures?after=nonsense"),
            400,
            "invalid_cursor",
        ),
        (
            "/storage-migration/batches/xyz/failures".to_string(),
            400,
            "invalid_batch_id",
        ),
        (
            "/storage-migration/batches?before=yesterday".to_string(),
            400,
            "invalid_before",
        ),
    ] {
        let (status, json) = app.get(&path).await;
        assert_eq!(status, code, "{path}: {json}");
        assert_eq!(json["error"], error);
    }

    // Put the files back and retry just them.
    for f in &missing {
        std::fs::rename(format!("{}.away", f.path), &f.path).expect("restore");
    }
    let (code, json) = app
        .post(&format!("/storage-migration/batches/{batch}/retry"), "")
        .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["batchId"], batch.to_string());
    let status = app.wait_idle().await;
    // The status counts the batch, as the batch list does.
    let (_, list) = app.get("/storage-migration/batches").await;
    let row = &list["batches"][0];
    for field in ["total", "completed", "failed", "skipped"] {
        assert_eq!(status[field], row[field], "{field}: {status} vs {row}");
    }
    let (total, completed, skipped) = (
        status["total"].as_i64().unwrap_or(0),
        status["completed"].as_i64().unwrap_or(0),
        status["skipped"].as_i64().unwrap_or(0),
    );
    assert!(
        total > 3,
        "the whole batch, not the three retried: {status}"
    );
    assert_eq!(completed + skipped, total, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    for f in &missing {
        assert_eq!(
            env.current_path(f.kind, f.row_id).await,
            f.relative(env.media_path())
        );
    }
    let (_, page) = app
        .get(&format!("/storage-migration/batches/{batch}/failures"))
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "only the skip is left: {page}");
    assert_eq!(items[0]["reason"], "outside_media_location");
    assert_eq!(env.batch_state(batch).await, "completed");
    let (code, json) = app
        .post(&format!("/storage-migration/batches/{batch}/retry"), "")
        .await;
    assert_eq!(code, 409, "nothing left to retry: {json}");
}
