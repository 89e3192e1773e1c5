//! Several processes on one batch: `noodle-migrate worker` processes join
//! the batch a server started, lease its chunks through PostgreSQL, take
//! over the chunks of one that dies, and stop when it is cancelled.

use crate::helpers::{EnvOptions, TestApp, TestEnv};
use crate::seed::SeedSpec;
use noodle_migrate::model::FileKind;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A `noodle-migrate worker` process, killed when dropped (a failing test
/// leaves none behind), with its log in a file.
pub struct Worker {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    pub fn spawn(vars: &HashMap<String, String>, extra: &[(&str, &str)]) -> Worker {
        let dir = tempfile::tempdir().expect("log dir");
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_noodle-migrate"))
            .arg("worker")
            .env_clear()
            .envs(vars)
            .envs(extra.iter().copied())
            .env("NOODLE_MIGRATE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start noodle-migrate worker");
        Worker {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the worker never logged {text:?}:\n{}", self.log());
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spec(assets_per_user: usize) -> EnvOptions {
    EnvOptions {
        spec: SeedSpec {
            users: 2,
            assets_per_user,
            max_size: 2000,
        },
        ..Default::default()
    }
}

/// Workers that are up and looking for a batch.
async fn workers(n: usize, vars: &HashMap<String, String>, extra: &[(&str, &str)]) -> Vec<Worker> {
    let workers: Vec<Worker> = (0..n).map(|_| Worker::spawn(vars, extra)).collect();
    for w in &workers {
        w.wait_for_log("Waiting for a migration to join").await;
    }
    workers
}

/// Every file's row points where the direction sends it, the file there
/// is whole, and the batch logged each file exactly once.
async fn assert_moved_once(env: &TestEnv, batch: Uuid, to_s3: bool) {
    for file in &env.seeded.files {
        let path = env.current_path(file.kind, file.row_id).await;
        if to_s3 {
            assert_eq!(
                path,
                file.relative(env.media_path()),
                "{:?} moved",
                file.kind
            );
            let object = env.object(&path).await;
            assert_eq!(
                object.as_deref(),
                Some(file.content.as_slice()),
                "{path} whole"
            );
        } else {
            assert_eq!(path, file.path, "{:?} back on disk", file.kind);
            env.assert_whole(&path, &file.content).await;
        }
    }
    let table = env.log_table().await;
    let (rows, distinct) = {
        let row = env
            .db
            .query_one(
                &format!(
                    r#"SELECT count(*), count(DISTINCT ("entityId", "fileType", "oldPath")) FROM {table} WHERE "batchId" = $1"#
                ),
                &[&batch],
            )
            .await
            .expect("log rows");
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    assert_eq!(rows, env.seeded.files.len() as i64, "one log row per file");
    assert_eq!(distinct, rows, "no file logged twice");
}

/// Status agrees with the batch row, and lists the processes.
async fn assert_status_is_the_database(env: &TestEnv, status: &serde_json::Value, batch: Uuid) {
    let row = env
        .db
        .query_one(
            "SELECT completed, failed, skipped, total, bytes_moved FROM noodle_migrate_batch WHERE id = $1",
            &[&batch],
        )
        .await
        .expect("batch");
    let held: (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let shown = (
        status["completed"].as_i64().unwrap_or(-1),
        status["failed"].as_i64().unwrap_or(-1),
        status["skipped"].as_i64().unwrap_or(-1),
        status["total"].as_i64().unwrap_or(-1),
        status["bytesMoved"].as_i64().unwrap_or(-1),
    );
    assert_eq!(shown, held, "status counts are the batch's: {status}");
    assert_eq!(held.0, env.seeded.files.len() as i64);
}

/// Processes that moved files in the batch.
async fn busy_workers(env: &TestEnv, batch: Uuid) -> Vec<(String, i64)> {
    env.db
        .query(
            "SELECT id, completed FROM noodle_migrate_worker WHERE batch_id = $1 AND completed > 0 ORDER BY id",
            &[&batch],
        )
        .await
        .expect("workers")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn wait_finished(app: &TestApp) -> serde_json::Value {
    let status = app.wait_idle().await;
    assert!(
        ["completed", "cancelled", "completed_with_failures"]
            .contains(&status["state"].as_str().unwrap_or("")),
        "{status}"
    );
    status
}

#[actix_rt::test]
async fn three_workers_and_a_server_share_a_batch_each_way() {
    let env = TestEnv::new(spec(300)).await;
    let files = env.seeded.files.len() as i64;
    assert!(files > 1500, "a few thousand files: {files}");
    let workers = workers(3, &env.vars("s3", ""), &[]).await;

    let app = env.app("s3", "").await;
    let batch = app.start(r#"{"direction":"toS3","concurrency":2}"#).await;
    let status = wait_finished(&app).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_moved_once(&env, batch, true).await;
    assert_status_is_the_database(&env, &status, batch).await;
    let busy = busy_workers(&env, batch).await;
    assert!(
        busy.len() >= 3,
        "the work spread over the processes: {busy:?}"
    );
    assert_eq!(busy.iter().map(|b| b.1).sum::<i64>(), files, "{busy:?}");
    let listed = status["workers"].as_array().map(Vec::len).unwrap_or(0);
    assert!(listed >= 3, "status lists the processes: {status}");
    assert_eq!(status["chunks"]["pending"], 0, "{status}");
    assert_eq!(status["chunks"]["leased"], 0, "{status}");
    assert!(
        status["chunks"]["done"].as_i64().unwrap_or(0) >= 5,
        "{status}"
    );
    // The command line's status says who did what.
    // On a thread of its own: the engine answering it runs on this one.
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::cli::cli(&HashMap::new(), &["status", "--server", &base])
    })
    .await
    .expect("noodle-migrate status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chunks: "), "{text}");
    assert!(text.matches("  worker ").count() >= 3, "{text}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"noodle_migrate_chunks{state="done"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("noodle_migrate_worker_files{outcome=\"completed\",worker="),
        "{metrics}"
    );

    // The same workers wait for the next batch, and join it.
    let back = env.app("disk", "").await;
    let batch = back
        .start(r#"{"direction":"toDisk","concurrency":2}"#)
        .await;
    let status = wait_finished(&back).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_moved_once(&env, batch, false).await;
    assert_status_is_the_database(&env, &status, batch).await;
    let busy = busy_workers(&env, batch).await;
    assert!(
        busy.len() >= 3,
        "the work spread over the processes: {busy:?}"
    );
    drop(workers);
}

#[actix_rt::test]
async fn a_killed_worker_s_chunk_is_taken_over_after_its_lease() {
    let env = TestEnv::new(spec(150)).await;
    let lease = [("NOODLE_MIGRATE_LEASE_SECS", "2")];
    let mut vars = env.vars("s3", "");
    vars.insert("NOODLE_MIGRATE_LEASE_SECS".into(), "2".into());
    let mut crew = workers(2, &vars, &lease).await;
    let app = env.spawn(vars).await;
    // Held back, so that a chunk lasts several heartbeats: unpaced, a
    // process can take a chunk, move it and let it go between two of them.
    let batch = app
        .start(
            r#"{"direction":"toS3","concurrency":1,"deleteSource":true,"bandwidthLimit":"256k"}"#,
        )
        .await;
    // Kill the first worker while it holds a chunk it has begun.
    let victim = crew[0].pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the worker never got going");
        let holding = env
            .count(&format!(
                "SELECT count(*) FROM noodle_migrate_chunk c JOIN noodle_migrate_worker w
                   ON w.batch_id = c.batch_id AND w.id = c.owner
                 WHERE c.batch_id = '{batch}' AND c.state = 'leased' AND c.owner LIKE '%:{victim}' AND w.completed > 0"
            ))
            .await;
        if holding > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crew[0].kill();
    let status = wait_finished(&app).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_moved_once(&env, batch, true).await;
    assert_status_is_the_database(&env, &status, batch).await;
    assert!(
        status["chunks"]["takenOver"].as_i64().unwrap_or(0) >= 1,
        "another process took the chunk over: {status}"
    );
    // No source was deleted before its row moved (the rows all point at
    // whole objects, above). Those the killed worker had committed but not
    // yet deleted stay, and the orphan report names them.
    let left: Vec<&str> = env
        .seeded
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    let (code, orphans) = app.get("/storage-migration/orphans?limit=1000").await;
    assert_eq!(code, 200, "{orphans}");
    assert_eq!(
        orphans["undeletedSources"].as_u64(),
        Some(left.len() as u64),
        "{left:?} {orphans}"
    );
    assert_eq!(orphans["unreferenced"], 0, "{orphans}");
}

#[actix_rt::test]
async fn a_cancel_reaches_every_worker_and_a_start_finishes_the_batch() {
    let env = TestEnv::new(spec(150)).await;
    let crew = workers(2, &env.vars("s3", ""), &[]).await;
    let app = env.app("s3", "").await;
    // Held back, so that the cancel finds files still to move.
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":1,"bandwidthLimit":"256k"}"#)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while busy_workers(&env, batch).await.len() < 3 {
        assert!(Instant::now() < deadline, "the workers never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = app.post("/storage-migration/cancel", "").await;
    assert_eq!(code, 202, "{body}");
    let asked = Instant::now();
    let status = app.wait_idle().await;
    assert_eq!(status["state"], "cancelled", "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "every process stopped within a few seconds"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM noodle_migrate_chunk WHERE batch_id = '{batch}' AND state = 'leased'"
        ))
        .await,
        0,
        "the chunks were handed back"
    );
    for w in &crew {
        assert!(w.log().contains("Left the migration"), "{}", w.log());
    }
    // A start resumes the batch; the workers join it again.
    let again = app.start(r#"{"direction":"toS3","concurrency":1}"#).await;
    assert_eq!(again, batch, "the batch resumes");
    let status = wait_finished(&app).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_moved_once(&env, batch, true).await;
}

#[actix_rt::test]
async fn a_worker_waits_and_joins_only_its_own_batch() {
    let env = TestEnv::new(spec(40)).await;
    let elsewhere = TestEnv::new(spec(1)).await;
    let mut other_bucket = env.vars("s3", "");
    other_bucket.insert("S3_BUCKET".into(), elsewhere.bucket.clone());
    let mut wrong = workers(1, &other_bucket, &[]).await.remove(0);
    let waiting = workers(1, &elsewhere.vars("s3", ""), &[]).await.remove(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        wrong.exited().is_none(),
        "a worker waits while nothing runs"
    );

    let app = env.app("s3", "").await;
    // Held back until the misconfigured worker has seen it: a batch this
    // small could otherwise end between two of the worker's looks.
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":2,"bandwidthLimit":"1k"}"#)
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(code) = wrong.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the misconfigured worker did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code_lifted, s) = app
        .patch("/storage-migration/run", r#"{"bandwidthLimit":"off"}"#)
        .await;
    assert_eq!(code_lifted, 200, "{s}");
    let status = wait_finished(&app).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert!(!code.success());
    let log = wrong.log();
    assert!(
        log.contains("a worker joins only a batch of the same bucket")
            && log.contains(&elsewhere.bucket),
        "{log}"
    );
    assert!(waiting.log().contains("Waiting for a migration to join"));
    assert!(
        !waiting.log().contains("Joined a migration"),
        "{}",
        waiting.log()
    );
    let workers = env
        .count(&format!(
            "SELECT count(*) FROM noodle_migrate_worker WHERE batch_id = '{batch}'"
        ))
        .await;
    assert_eq!(workers, 1, "only the server worked on the batch");
    assert_eq!(
        elsewhere
            .count("SELECT count(*) FROM noodle_migrate_batch")
            .await,
        0
    );
    assert_moved_once(&env, batch, true).await;
    for f in env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Originals)
        .take(1)
    {
        assert!(
            std::path::Path::new(&f.path).exists(),
            "sources stay without deleteSource"
        );
    }
}
