//! Crashes at named points (src/failpoint.rs; built with the `failpoints`
//! feature, which `make test` turns on): the engine aborts there, as
//! abruptly as a power cut, and a restarted engine resumes the batch.
//! Afterwards every row points at a whole file, each file has exactly one
//! log row per move, and the only leftovers are the orphans the engine
//! reports.

use crate::helpers::{EnvOptions, TestEnv};
use crate::resume::{assert_leftovers_reported, free_port, spawn_binary};
use crate::seed::{SeedSpec, SeededFile};
use noodle_migrate::model::FileKind;
use std::time::Duration;
use uuid::Uuid;

/// Runs `body` with `FAILPOINTS` set and waits for the abort.
async fn crash_at(env: &TestEnv, backend: &str, point: &str, body: &str) {
    let mut vars = env.vars(backend, "");
    vars.insert("FAILPOINTS".into(), point.into());
    let (mut child, app) = spawn_binary(&vars, free_port()).await;
    let (code, json) = app.post("/storage-migration/start", body).await;
    assert_eq!(code, 201, "{point}: {json}");
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "{point}: the engine aborted");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().ok();
    panic!("{point}: the engine never reached its crash point");
}

/// Resumes on a fresh engine, runs to the end and checks everything.
async fn resume_and_check(env: &TestEnv, backend: &str, body: &str, all: &[SeededFile]) {
    let (mut child, app) = spawn_binary(&env.vars(backend, ""), free_port()).await;
    let (code, json) = app.post("/storage-migration/start", body).await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["resumed"], true, "the interrupted batch goes on");
    let status = app.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(status["state"], "completed", "{status}");
    let to_s3 = backend == "s3";
    for file in all {
        let expected = if to_s3 {
            file.relative(env.media_path())
        } else {
            file.path.clone()
        };
        assert_eq!(env.current_path(file.kind, file.row_id).await, expected);
        env.assert_whole(&expected, &file.content).await;
    }
    let direction = if to_s3 { "toS3" } else { "toDisk" };
    let per_file = env
        .count(&format!(
            r#"SELECT count(*) FROM (SELECT "entityId", "fileType", count(*) AS n
               FROM storage_migration_log WHERE direction = '{direction}'
               GROUP BY "entityId", "fileType", "batchId") m WHERE n <> 1"#
        ))
        .await;
    assert_eq!(per_file, 0, "one log row per file and batch");
    let report = assert_leftovers_reported(env, &app).await;
    for orphan in report["orphans"].as_array().expect("orphans") {
        assert!(
            ["temp_file", "undeleted_source"].contains(&orphan["reason"].as_str().unwrap_or("")),
            "only what a crash can leave: {orphan}"
        );
    }
    child.kill().ok();
    child.wait().ok();
}

#[actix_rt::test]
async fn crashes_at_named_points_lose_nothing() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 25,
            max_size: 20_000,
        },
        ..Default::default()
    })
    .await;
    // Large enough for a multipart upload (three parts) and a long download.
    let owner = env.seeded.users[0];
    let big_id = Uuid::now_v7();
    let big_path = format!(
        "{}/upload/{owner}/bi/gg/{big_id}.mov",
        env.media_path().display()
    );
    let big = crate::seed::content(7, 40 * 1024 * 1024);
    env.insert_original(big_id, &big_path, &big).await;
    let mut all = env.seeded.files.clone();
    all.push(SeededFile {
        kind: FileKind::Originals,
        row_id: big_id,
        entity_id: big_id,
        path: big_path,
        content: big,
    });

    let to_s3 = r#"{"direction":"toS3","deleteSource":true,"concurrency":3}"#;
    let to_disk = r#"{"direction":"toDisk","deleteSource":true,"concurrency":3}"#;
    // Each point is passed by many files; crash at a random one of them.
    let nth = |max: u32| format!("{}*off->return", rand::random_range(0..max));
    for (s3_point, disk_point) in [
        (
            format!("after-copy={}", nth(20)),
            format!("after-copy={}", nth(20)),
        ),
        (
            format!("after-commit={}", nth(20)),
            format!("after-commit={}", nth(20)),
        ),
        (
            format!("mid-multipart={}", nth(2)),
            format!("mid-download={}", nth(20)),
        ),
    ] {
        crash_at(&env, "s3", &s3_point, to_s3).await;
        resume_and_check(&env, "s3", to_s3, &all).await;
        crash_at(&env, "disk", &disk_point, to_disk).await;
        resume_and_check(&env, "disk", to_disk, &all).await;
    }
}
