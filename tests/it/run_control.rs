//! Run control: the bandwidth limit, changes to a run in progress, pause
//! and resume (across a restart of the engine).

use crate::helpers::{EnvOptions, TestApp, TestEnv};
use crate::resume::{free_port, spawn_binary, terminate};
use crate::seed::SeedSpec;
use noodle_migrate::model::FileKind;
use serde_json::Value;
use std::time::{Duration, Instant};

fn library(assets: usize, max_size: usize) -> EnvOptions {
    EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: assets,
            max_size,
        },
        ..Default::default()
    }
}

async fn status(app: &TestApp) -> Value {
    let (code, s) = app.get("/storage-migration/status").await;
    assert_eq!(code, 200, "{s}");
    s
}

/// Polls the status until `done` holds (at most `secs`); returns it.
async fn until(app: &TestApp, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(app).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} did not happen: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn n(s: &Value, field: &str) -> i64 {
    s[field].as_i64().unwrap_or(-1)
}

/// The limit paces every byte: the files after the first wait for the
/// time the bytes before them take at the rate, so the run cannot finish
/// sooner than (all bytes − the largest file) ÷ rate, however fast the
/// machine. A slow machine only makes it longer: the bound cannot flake.
#[actix_rt::test]
async fn a_bandwidth_limit_bounds_the_rate_from_above() {
    let env = TestEnv::new(library(70, 300_000)).await;
    let app = env.app("s3", "").await;
    let sizes: Vec<usize> = env.seeded.files.iter().map(|f| f.content.len()).collect();
    let total: usize = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(total > 8 << 20, "the library holds {total} bytes");
    let rate = 2u64 << 20;
    let started = Instant::now();
    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","bandwidthLimit":"2M"}"#,
        )
        .await;
    assert_eq!(code, 201, "{json}");
    let running = until(&app, 30, "the status shows the limit", |s| {
        s["bandwidthLimit"] == "2M"
    })
    .await;
    assert_eq!(n(&running, "bandwidthNow"), rate as i64, "{running}");
    let finished = app.wait_idle().await;
    let took = started.elapsed();
    assert_eq!(finished["state"], "completed", "{finished}");
    let floor = Duration::from_secs_f64((total - largest) as f64 / rate as f64);
    assert!(
        took >= floor,
        "{total} bytes at 2 MiB/s took {took:?}, less than {floor:?}"
    );
    assert!(floor >= Duration::from_millis(3500), "{floor:?}");
    println!("{total} bytes at 2M: {took:?} (floor {floor:?})");
}

/// A limit no run could finish under is lifted mid-run; the run finishes.
#[actix_rt::test]
async fn a_limit_raised_mid_run_takes_effect() {
    let env = TestEnv::new(library(30, 20_000)).await;
    let app = env.app("s3", "").await;
    let batch = app
        .start(r#"{"direction":"toS3","bandwidthLimit":"1k","concurrency":3}"#)
        .await;
    // At 1 KiB/s this library takes far longer than the test waits.
    until(&app, 30, "a first file", |s| n(s, "completed") >= 1).await;
    let s = status(&app).await;
    assert_eq!(s["bandwidthLimit"], "1k", "{s}");
    assert!(
        n(&s, "completed") < env.seeded.files.len() as i64 / 2,
        "{s}"
    );

    let (code, s) = app
        .patch("/storage-migration/run", r#"{"bandwidthLimit":"off"}"#)
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["bandwidthLimit"], Value::Null, "{s}");
    assert_eq!(s["concurrency"], 3, "{s}");
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(env.log_rows(batch).await, env.seeded.files.len() as i64);
    // The batch keeps the change.
    let options = env
        .count(&format!(
            "SELECT count(*) FROM noodle_migrate_batch WHERE id = '{batch}' AND NOT options ? 'bandwidthLimit'"
        ))
        .await;
    assert_eq!(options, 1);
}

/// The files in flight follow the concurrency in force (status `active`).
#[actix_rt::test]
async fn concurrency_changed_mid_run_is_followed() {
    let env = TestEnv::new(library(150, 2000)).await;
    let app = env.app("s3", "").await;
    // Slow enough that files queue behind the limit: the movers stay busy.
    app.start(r#"{"direction":"toS3","concurrency":1,"bandwidthLimit":"8k"}"#)
        .await;
    for _ in 0..20 {
        let s = status(&app).await;
        assert!(n(&s, "active") <= 1, "concurrency 1: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, s) = app
        .patch("/storage-migration/run", r#"{"concurrency":8}"#)
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["concurrency"], 8);
    let s = until(&app, 10, "8 files in flight", |s| n(s, "active") >= 8).await;
    assert!(n(&s, "active") <= 8, "{s}");

    let (code, s) = app
        .patch("/storage-migration/run", r#"{"concurrency":2}"#)
        .await;
    assert_eq!(code, 200, "{s}");
    until(&app, 30, "back to 2 in flight", |s| n(s, "active") <= 2).await;
    for _ in 0..20 {
        let s = status(&app).await;
        assert!(n(&s, "active") <= 2, "concurrency 2: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = app
        .patch("/storage-migration/run", r#"{"bandwidthLimit":"off"}"#)
        .await;
    assert_eq!(code, 200);
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "completed", "{finished}");
}

#[actix_rt::test]
async fn bad_changes_are_refused_and_change_nothing() {
    let env = TestEnv::new(library(5, 2000)).await;
    let app = env.app("s3", "").await;
    let (code, json) = app
        .patch("/storage-migration/run", r#"{"concurrency":4}"#)
        .await;
    assert_eq!(
        (code, json["error"].as_str()),
        (409, Some("not_running")),
        "{json}"
    );
    let (code, json) = app.post("/storage-migration/pause", "").await;
    assert_eq!(
        (code, json["error"].as_str()),
        (409, Some("not_running")),
        "{json}"
    );
    let (code, json) = app.post("/storage-migration/resume", "").await;
    assert_eq!(
        (code, json["error"].as_str()),
        (409, Some("not_running")),
        "{json}"
    );
    for (body, error) in [
        ("{}", "no_change"),
        (r#"{"concurrency":0}"#, "invalid_concurrency"),
        (r#"{"concurrency":"many"}"#, "invalid_concurrency"),
        (r#"{"bandwidthLimit":"fast"}"#, "invalid_bandwidth_limit"),
        (
            r#"{"bandwidthLimit":"25:00,1M"}"#,
            "invalid_bandwidth_limit",
        ),
        (r#"{"paused":true}"#, "unknown_field"),
        ("not json", "malformed_json"),
    ] {
        let (code, json) = app.patch("/storage-migration/run", body).await;
        assert_eq!(code, 400, "{body}: {json}");
        assert_eq!(json["error"], error, "{body}: {json}");
    }
    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","bandwidthLimit":"08:00,2M 23:00"}"#,
        )
        .await;
    assert_eq!(code, 400, "{json}");
    assert_eq!(json["error"], "invalid_bandwidth_limit");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or("")
            .contains("bandwidthLimit"),
        "{json}"
    );
}

/// Pause lets the files in flight finish and starts no more; the batch
/// stays paused through a restart of the engine; resume finishes it with
/// one log row per file.
#[actix_rt::test]
async fn pause_holds_through_a_restart_and_resume_finishes() {
    let env = TestEnv::new(library(120, 2000)).await;
    let vars = env.vars("s3", "");
    let port = free_port();
    let (mut child, app) = spawn_binary(&vars, port).await;
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":4,"bandwidthLimit":"64k"}"#)
        .await;
    until(&app, 30, "some progress", |s| n(s, "completed") >= 10).await;
    let (code, s) = app.post("/storage-migration/pause", "").await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(env.batch_state(batch).await, "paused");
    let done_of = |s: &Value| n(s, "completed") + n(s, "failed") + n(s, "skipped");
    // Every file is done or waits as paused: none is copying or being
    // recorded any more.
    let settled = until(&app, 30, "the files in flight to finish", |s| {
        n(s, "active") == 0 && done_of(s) + n(s, "paused") == n(s, "total")
    })
    .await;
    let done = done_of(&settled);
    assert!(done < env.seeded.files.len() as i64, "{settled}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = status(&app).await;
    assert_eq!(later["state"], "paused", "{later}");
    assert_eq!(n(&later, "active"), 0, "nothing new started: {later}");
    assert_eq!(done_of(&later), done, "nothing new finished: {later}");
    assert_eq!(n(&later, "waiting"), 0, "{later}");
    assert!(
        n(&later, "paused") > 0,
        "the files left wait as paused: {later}"
    );
    let (code, again) = app.post("/storage-migration/pause", "").await;
    assert_eq!(code, 200, "pausing twice is no error: {again}");

    terminate(&mut child).await;
    assert_eq!(env.batch_state(batch).await, "paused");
    let (mut child, app) = spawn_binary(&vars, port).await;
    let s = status(&app).await;
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["batchId"], batch.to_string());
    let (code, s) = app.post("/storage-migration/resume", "").await;
    assert_eq!(code, 200, "{s}");
    let (code, s) = app
        .patch("/storage-migration/run", r#"{"bandwidthLimit":"off"}"#)
        .await;
    assert_eq!(code, 200, "{s}");
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["batchId"], batch.to_string());
    assert_eq!(env.log_rows(batch).await, env.seeded.files.len() as i64);
    for file in &env.seeded.files {
        let path = env.current_path(file.kind, file.row_id).await;
        env.assert_whole(&path, &file.content).await;
    }
    terminate(&mut child).await;
}

/// A cancel during a pause closes the batch as cancelled, as at any time.
#[actix_rt::test]
async fn a_cancel_during_a_pause_cancels() {
    let env = TestEnv::new(library(60, 2000)).await;
    let app = env.app("s3", "").await;
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":2,"bandwidthLimit":"32k"}"#)
        .await;
    until(&app, 30, "some progress", |s| n(s, "completed") >= 3).await;
    let (code, s) = app.post("/storage-migration/pause", "").await;
    assert_eq!(code, 200, "{s}");
    let (code, s) = app.post("/storage-migration/cancel", "").await;
    assert_eq!(code, 202, "{s}");
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "cancelled", "{finished}");
    assert_eq!(env.batch_state(batch).await, "cancelled");
}

/// Files are read ahead of a free mover, but their bytes are only sent
/// within a moment of the reading: a file the gallery rewrites during a
/// pause goes with its new bytes.
#[actix_rt::test]
async fn a_file_rewritten_during_a_pause_goes_with_its_new_bytes() {
    let env = TestEnv::new(library(60, 2000)).await;
    let app = env.app("s3", "").await;
    let batch = app
        .start(&format!(
            r#"{{"direction":"toS3","concurrency":2,"bandwidthLimit":"16k","fileTypes":{THUMBNAILS}}}"#
        ))
        .await;
    pause_after_a_few(&app).await;
    let mut rewritten = Vec::new();
    for file in env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Thumbnails)
    {
        let path = env.current_path(file.kind, file.row_id).await;
        if path.starts_with('/') {
            let new: Vec<u8> = file.content.iter().map(|b| b ^ 0x5a).collect();
            std::fs::write(&path, &new).expect("rewrite a thumbnail");
            rewritten.push((file, new));
        }
    }
    assert!(!rewritten.is_empty(), "the pause came before the end");
    let finished = resume_unlimited(&app).await;
    assert_eq!(finished["batchId"], batch.to_string());
    for (file, new) in rewritten {
        let path = env.current_path(file.kind, file.row_id).await;
        assert!(!path.starts_with('/'), "{path} moved");
        env.assert_whole(&path, &new).await;
    }
}

/// The look-ahead's finding that a download's target is free holds for a
/// moment only: a stale copy put there during a pause is checked again,
/// and replaced (no row points at it), instead of failing the file.
#[actix_rt::test]
async fn a_copy_put_at_a_target_during_a_pause_is_checked_again() {
    let env = TestEnv::new(library(60, 2000)).await;
    let app = env.app("s3", "").await;
    let (_, up) = app
        .migrate(&format!(
            r#"{{"direction":"toS3","deleteSource":true,"fileTypes":{THUMBNAILS}}}"#
        ))
        .await;
    assert_eq!(up["failed"], 0, "{up}");
    let app = env.app("disk", "").await;
    app.start(&format!(
        r#"{{"direction":"toDisk","concurrency":2,"bandwidthLimit":"16k","fileTypes":{THUMBNAILS}}}"#
    ))
    .await;
    pause_after_a_few(&app).await;
    let mut put = 0;
    for file in env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Thumbnails)
    {
        if !env
            .current_path(file.kind, file.row_id)
            .await
            .starts_with('/')
        {
            let target = std::path::Path::new(&file.path);
            std::fs::create_dir_all(target.parent().expect("a folder")).expect("its folder");
            std::fs::write(target, b"a stale copy").expect("write at the target");
            put += 1;
        }
    }
    assert!(put > 0, "the pause came before the end");
    let finished = resume_unlimited(&app).await;
    assert_eq!(finished["failed"], 0, "{finished}");
    for file in env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Thumbnails)
    {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        env.assert_whole(&file.path, &file.content).await;
    }
}

/// Only the gallery's thumbnails.
const THUMBNAILS: &str = r#"{"originals":false,"thumbnails":true,"previews":false,"fullsize":false,"sidecars":false,"encodedVideos":false,"personThumbnails":false,"profileImages":false}"#;

/// Pauses a run once a few files are done, waits for the files in flight
/// to settle, then for longer than what was learnt ahead stays good.
async fn pause_after_a_few(app: &TestApp) {
    until(app, 30, "some progress", |s| n(s, "completed") >= 3).await;
    let (code, s) = app.post("/storage-migration/pause", "").await;
    assert_eq!(code, 200, "{s}");
    until(app, 30, "the files in flight to finish", |s| {
        n(s, "active") == 0
            && n(s, "completed") + n(s, "failed") + n(s, "skipped") + n(s, "paused")
                == n(s, "total")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Lifts the bandwidth limit, resumes, and returns the status of the run
/// finished whole.
async fn resume_unlimited(app: &TestApp) -> Value {
    let (code, s) = app
        .patch("/storage-migration/run", r#"{"bandwidthLimit":"off"}"#)
        .await;
    assert_eq!(code, 200, "{s}");
    let (code, s) = app.post("/storage-migration/resume", "").await;
    assert_eq!(code, 200, "{s}");
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "completed", "{finished}");
    finished
}

/// A mover is handed its next file while it copies one. A cancel that
/// comes before that file begins leaves it unbegun, and its chunk, though
/// wholly handed out, is not marked done: another process of the batch,
/// or the next start, moves it.
#[actix_rt::test]
async fn a_file_not_begun_before_a_cancel_leaves_its_chunk_undone() {
    let env = TestEnv::new(library(4, 4000)).await;
    let total = env.seeded.files.len() as i64;
    let app = env.app("s3", "").await;
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":1,"bandwidthLimit":"4k"}"#)
        .await;
    // The last but one copying, the last handed over behind it.
    let settled = |s: &Value| n(s, "completed") + n(s, "skipped") + n(s, "failed");
    until(&app, 60, "all but two settled", |s| settled(s) == total - 2).await;
    let (code, s) = app.post("/storage-migration/cancel", "").await;
    assert_eq!(code, 202, "{s}");
    let cancelled = app.wait_idle().await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(settled(&cancelled), total - 1, "{cancelled}");
    assert_eq!(n(&cancelled, "active"), 0, "{cancelled}");
    // No chunk is marked done while a file of it is where it was (in a
    // batch shared by several processes, no other would take it).
    let mut unmoved = 0;
    for file in &env.seeded.files {
        if !env
            .current_path(file.kind, file.row_id)
            .await
            .starts_with('/')
        {
            continue;
        }
        unmoved += 1;
        let done: i64 = env
            .db
            .query_one(
                "SELECT count(*) FROM noodle_migrate_chunk WHERE batch_id = $1 AND kind = $2
                   AND after_id < $3 AND $3 <= last_id AND state = 'done'",
                &[&batch, &file.kind.api_key(), &file.row_id],
            )
            .await
            .expect("chunk of a file")
            .get(0);
        assert_eq!(
            done, 0,
            "the chunk of {:?} {} is done",
            file.kind, file.row_id
        );
    }
    assert!(unmoved > 0, "the cancel came too late: {cancelled}");

    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","bandwidthLimit":"off"}"#,
        )
        .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["resumed"], true, "{json}");
    let finished = app.wait_idle().await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(
        env.log_rows(batch).await,
        env.seeded.files.len() as i64,
        "every file was moved, the one not begun included: {finished}"
    );
    for file in &env.seeded.files {
        let path = env.current_path(file.kind, file.row_id).await;
        assert!(!path.starts_with('/'), "{path} was left behind");
    }
}
