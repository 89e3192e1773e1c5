//! The real binary, killed mid-run and started again: the batch resumes and
//! every file ends up moved exactly once. Also large files (multipart).

use crate::helpers::{EnvOptions, TestApp, TestEnv};
use crate::seed::SeedSpec;
use noodle_migrate::model::FileKind;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends SIGTERM and waits for a clean exit.
pub async fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    for _ in 0..400 {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "clean exit: {status:?}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().ok();
    child.wait().ok();
    panic!("noodle-migrate ignored SIGTERM");
}

pub async fn spawn_binary(vars: &HashMap<String, String>, port: u16) -> (Child, TestApp) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_noodle-migrate"))
        .arg("serve")
        .env_clear()
        .envs(vars)
        .env("NOODLE_MIGRATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start noodle-migrate");
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        token: None,
    };
    for _ in 0..300 {
        if app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .is_ok()
        {
            return (child, app);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().ok();
    child.wait().ok();
    panic!("noodle-migrate did not come up");
}

#[actix_rt::test]
async fn a_killed_engine_resumes_its_batch() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 200,
            max_size: 3000,
        },
        ..Default::default()
    })
    .await;
    let vars = env.vars("s3", "");
    let port = free_port();
    let (mut child, app) = spawn_binary(&vars, port).await;
    let batch = app.start(r#"{"direction":"toS3","concurrency":2}"#).await;
    for _ in 0..600 {
        let (_, s) = app.get("/storage-migration/status").await;
        if s["completed"].as_i64().unwrap_or(0) >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let moved: i64 = env.log_rows(batch).await;
    assert!(
        moved > 0 && moved < env.seeded.files.len() as i64,
        "killed mid-run ({moved} moved)"
    );

    let (mut child, app) = spawn_binary(&vars, free_port()).await;
    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","concurrency":5}"#,
        )
        .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(
        json["batchId"],
        batch.to_string(),
        "the interrupted batch continues"
    );
    assert_eq!(json["resumed"], true);
    let status = app.wait_idle().await;
    assert_eq!(status["failed"], 0, "{status}");
    child.kill().ok();
    child.wait().ok();

    for file in &env.seeded.files {
        let relative = file.relative(env.media_path());
        assert_eq!(env.current_path(file.kind, file.row_id).await, relative);
        assert_eq!(
            env.object(&relative).await.as_deref(),
            Some(file.content.as_slice())
        );
    }
    let logged = env
        .count(&format!(r#"SELECT count(DISTINCT ("entityId", "newPath")) FROM storage_migration_log WHERE "batchId" = '{batch}'"#))
        .await;
    let rows = env.log_rows(batch).await;
    assert_eq!(rows, env.seeded.files.len() as i64, "one log row per file");
    assert_eq!(logged, rows);
    let state = env.batch_state(batch).await;
    assert_eq!(state, "completed");
}

#[actix_rt::test]
async fn large_files_go_up_in_parts_and_come_back_whole() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 2,
            max_size: 2000,
        },
        ..Default::default()
    })
    .await;
    let owner = env.seeded.users[0];
    let asset_id = Uuid::now_v7();
    let path = format!(
        "{}/upload/{owner}/bi/g0/{asset_id}.mov",
        env.media_path().display()
    );
    let data = crate::seed::content(99, 37 * 1024 * 1024 + 123);
    env.insert_original(asset_id, &path, &data).await;

    let app = env.app("s3", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","verify":true,"deleteSource":true}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    let relative = format!("upload/{owner}/bi/g0/{asset_id}.mov");
    assert_eq!(
        env.current_path(FileKind::Originals, asset_id).await,
        relative
    );
    let head = env
        .s3
        .head_object()
        .bucket(&env.bucket)
        .key(&relative)
        .send()
        .await
        .expect("head");
    assert!(
        head.e_tag().is_some_and(|e| e.contains('-')),
        "a multipart ETag: {:?}",
        head.e_tag()
    );
    assert_eq!(head.content_type(), Some("video/quicktime"));
    assert!(!std::path::Path::new(&path).exists());

    let app = env.app("disk", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toDisk","verify":true,"deleteSource":true}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(std::fs::read(&path).expect("back").len(), data.len());
    assert!(std::fs::read(&path).expect("back") == data);
    assert_eq!(env.current_path(FileKind::Originals, asset_id).await, path);
    assert!(env.keys().await.is_empty());
}

/// Starts (or resumes) a migration on a fresh engine process, lets it run
/// for a random moment and SIGKILLs it. Returns false once nothing is left.
async fn run_and_kill(vars: &HashMap<String, String>, body: &str) -> bool {
    let (mut child, app) = spawn_binary(vars, free_port()).await;
    let (code, json) = app.post("/storage-migration/start", body).await;
    if code == 409 && json["error"] == "nothing_to_migrate" {
        child.kill().ok();
        child.wait().ok();
        return false;
    }
    assert_eq!(code, 201, "{json}");
    tokio::time::sleep(Duration::from_millis(rand::random_range(30..400))).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    true
}

/// Kills the engine `kills` times, runs it to the end, and returns what
/// it reports as orphans, having checked that the report names exactly
/// what the test finds unreferenced.
async fn crash_loop(
    env: &TestEnv,
    vars: &HashMap<String, String>,
    body: &str,
    kills: usize,
) -> Value {
    let mut killed = 0;
    while killed < kills && run_and_kill(vars, body).await {
        killed += 1;
    }
    // And once more to the end.
    let (mut child, app) = spawn_binary(vars, free_port()).await;
    let (code, json) = app.post("/storage-migration/start", body).await;
    if code == 201 {
        let status = app.wait_idle().await;
        assert_eq!(status["failed"], 0, "{status}");
    } else {
        assert_eq!(json["error"], "nothing_to_migrate", "{json}");
    }
    let report = assert_leftovers_reported(env, &app).await;
    child.kill().ok();
    child.wait().ok();
    report
}

/// Asks the engine for its orphan report and checks that it names exactly
/// what the test itself finds unreferenced; returns the report.
pub async fn assert_leftovers_reported(env: &TestEnv, app: &TestApp) -> Value {
    let (code, report) = app.get("/storage-migration/orphans?limit=100000").await;
    assert_eq!(code, 200, "{report}");
    let mut reported: Vec<(String, String)> = report["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .filter(|o| o["reason"] != "incomplete_upload")
        .map(|o| {
            (
                o["backend"].as_str().unwrap_or_default().to_string(),
                o["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        env.unreferenced().await,
        "the only leftovers are the orphans the engine reports"
    );
    report
}

#[actix_rt::test]
async fn killed_ten_times_each_way_nothing_is_lost() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 2,
            assets_per_user: 60,
            max_size: 30_000,
        },
        ..Default::default()
    })
    .await;
    // One file large enough for a multipart upload, to be killed mid-way.
    let owner = env.seeded.users[0];
    let big_id = Uuid::now_v7();
    let big_path = format!(
        "{}/upload/{owner}/cr/as/{big_id}.mov",
        env.media_path().display()
    );
    let big = crate::seed::content(42, 40 * 1024 * 1024);
    env.insert_original(big_id, &big_path, &big).await;
    let mut all = env.seeded.files.clone();
    all.push(crate::seed::SeededFile {
        kind: FileKind::Originals,
        row_id: big_id,
        entity_id: big_id,
        path: big_path.clone(),
        content: big,
    });

    let body = r#"{"direction":"toS3","deleteSource":true,"concurrency":4}"#;
    let report = crash_loop(&env, &env.vars("s3", ""), body, 10).await;
    // Toward S3 the only possible orphans are sources whose move was
    // committed just before a kill: each is a whole copy of a moved file.
    for orphan in report["orphans"].as_array().expect("orphans") {
        assert_eq!(orphan["reason"], "undeleted_source", "{orphan}");
        let path = orphan["path"].as_str().expect("path");
        let file = all.iter().find(|f| f.path == path).expect("a source");
        assert!(std::fs::read(path).expect("left") == file.content);
    }
    for file in &all {
        let relative = file.relative(env.media_path());
        assert_eq!(
            env.current_path(file.kind, file.row_id).await,
            relative,
            "every row moved"
        );
        assert!(
            env.object(&relative).await.as_deref() == Some(file.content.as_slice()),
            "{relative} whole"
        );
    }
    let logged = env
        .count("SELECT count(*) FROM storage_migration_log WHERE direction = 'toS3'")
        .await;
    assert_eq!(logged, all.len() as i64, "exactly one log row per file");

    let body = r#"{"direction":"toDisk","deleteSource":true,"concurrency":4,"verify":true}"#;
    let report = crash_loop(&env, &env.vars("disk", ""), body, 10).await;
    eprintln!(
        "orphans after 10 kills each way: {}",
        serde_json::to_string(&report["orphans"]).unwrap_or_default()
    );
    for file in &all {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        assert!(
            std::fs::read(&file.path).expect("on disk") == file.content,
            "{} whole",
            file.path
        );
    }
    let logged = env
        .count("SELECT count(*) FROM storage_migration_log WHERE direction = 'toDisk'")
        .await;
    assert_eq!(logged, all.len() as i64, "exactly one log row per file");
    // Sources of committed moves may survive a kill (deleted after the
    // commit), and temporary files of downloads cut short; nothing else:
    // every object left is a copy of a file.
    for key in env.keys().await {
        let file = all
            .iter()
            .find(|f| f.relative(env.media_path()) == key)
            .expect("a known file");
        assert!(env.object(&key).await.as_deref() == Some(file.content.as_slice()));
    }
}
