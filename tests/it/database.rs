//! The database goes away in the middle of a run: a private PostgreSQL
//! cluster (so that no other test is disturbed) is stopped and started
//! again while files are moving. The engine either rides it out or stops
//! cleanly; a second start finishes the job, and no row is half-updated.

use crate::helpers::{pg, s3_access_key, s3_endpoint, s3_secret_key, EnvOptions};
use crate::resume::free_port;
use crate::seed::{self, SeedSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A throwaway cluster run by the `postgres` system user.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(cmd: &str) -> bool {
    // The postgres user may not enter the test's working directory.
    let cmd = &format!("cd / && {cmd}");
    let status = if nix_uid() == 0 {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", cmd])
            .status()
    } else {
        Command::new("sh").args(["-c", cmd]).status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(1)
}

impl Cluster {
    fn start() -> Cluster {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (make test installs them)")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .expect("a PostgreSQL version");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = tempfile::Builder::new()
            .prefix("nm-pg-")
            .tempdir()
            .expect("cluster dir");
        if nix_uid() == 0 {
            Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .expect("chown");
        }
        let port = free_port();
        let data = dir.path().join("data");
        assert!(
            as_postgres(&format!(
                "{}/initdb -D {} -A trust -U postgres >/dev/null",
                bin.display(),
                data.display()
            )),
            "initdb"
        );
        let cluster = Cluster { dir, bin, port };
        cluster.pg_ctl("start");
        cluster
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        assert!(
            as_postgres(&format!(
                "{}/pg_ctl -D {} -o '{opts}' -l {}/log -w -m fast {action} >/dev/null",
                self.bin.display(),
                data.display(),
                self.dir.path().display()
            )),
            "pg_ctl {action}"
        );
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        as_postgres(&format!(
            "{}/pg_ctl -D {} -m immediate stop >/dev/null 2>&1",
            self.bin.display(),
            data.display()
        ));
    }
}

/// A gallery on a private cluster, with its media and a bucket.
struct Gallery {
    cluster: Cluster,
    media: tempfile::TempDir,
    _outside: tempfile::TempDir,
    seeded: seed::Seeded,
    bucket: String,
    s3: aws_sdk_s3::Client,
}

impl Gallery {
    async fn new(assets: usize) -> Gallery {
        let cluster = Cluster::start();
        let admin = pg(&cluster.url("postgres")).await;
        admin
            .batch_execute("CREATE DATABASE gallery")
            .await
            .expect("create db");
        let db = pg(&cluster.url("gallery")).await;
        seed::create_schema(&db, true).await;
        let media = tempfile::tempdir().expect("media");
        let outside = tempfile::tempdir().expect("outside");
        let options = EnvOptions {
            spec: SeedSpec {
                users: 1,
                assets_per_user: assets,
                max_size: 3000,
            },
            ..Default::default()
        };
        let seeded = seed::seed(&db, media.path(), outside.path(), &options.spec).await;
        let bucket = format!("nm-pg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let s3 = crate::helpers::s3_client();
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("bucket");
        Gallery {
            cluster,
            media,
            _outside: outside,
            seeded,
            bucket,
            s3,
        }
    }

    fn vars(&self, s3_endpoint: String) -> HashMap<String, String> {
        [
            ("DB_URL", self.cluster.url("gallery")),
            (
                "IMMICH_MEDIA_LOCATION",
                self.media.path().display().to_string(),
            ),
            ("IMMICH_STORAGE_BACKEND", "s3".into()),
            ("S3_BUCKET", self.bucket.clone()),
            ("S3_ENDPOINT", s3_endpoint),
            ("S3_ACCESS_KEY_ID", s3_access_key()),
            ("S3_SECRET_ACCESS_KEY", s3_secret_key()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn restart(&self) {
        self.cluster.pg_ctl("stop");
        std::thread::sleep(Duration::from_secs(2));
        self.cluster.pg_ctl("start");
    }

    /// Every row moved once, its object whole, one log row each.
    async fn assert_all_moved(&self) {
        let db = pg(&self.cluster.url("gallery")).await;
        for file in &self.seeded.files {
            let sql = match file.kind {
                noodle_migrate::model::FileKind::Originals => {
                    r#"SELECT "originalPath" FROM asset WHERE id = $1"#
                }
                noodle_migrate::model::FileKind::PersonThumbnails => {
                    r#"SELECT "thumbnailPath" FROM person WHERE id = $1"#
                }
                noodle_migrate::model::FileKind::ProfileImages => {
                    r#"SELECT "profileImagePath" FROM "user" WHERE id = $1"#
                }
                _ => "SELECT path FROM asset_file WHERE id = $1",
            };
            let path: String = db
                .query_one(sql, &[&file.row_id])
                .await
                .expect("row")
                .get(0);
            let relative = file.relative(self.media.path());
            assert_eq!(path, relative, "every row moved");
            let object = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&relative)
                .send()
                .await
                .expect("object");
            let bytes = object.body.collect().await.expect("body").into_bytes();
            assert!(
                bytes.as_ref() == file.content.as_slice(),
                "{relative} whole"
            );
            let logged: i64 = db
                .query_one(
                    r#"SELECT count(*) FROM storage_migration_log WHERE "entityId" = $1 AND "newPath" = $2"#,
                    &[&file.entity_id, &relative],
                )
                .await
                .expect("log")
                .get(0);
            assert_eq!(logged, 1, "exactly one log row for {relative}");
        }
    }
}

impl Gallery {
    /// Every batch's counters equal what the database holds for it, even
    /// where a commit was sent again across the restart.
    async fn assert_counters_match(&self) {
        let db = pg(&self.cluster.url("gallery")).await;
        let rows = db
            .query(
                r#"SELECT b.id::text, b.completed, b.failed, b.skipped,
                          (SELECT count(*) FROM storage_migration_log l WHERE l."batchId" = b.id),
                          (SELECT count(*) FROM noodle_migrate_failure f WHERE f.batch_id = b.id AND f.outcome = 'failed'),
                          (SELECT count(*) FROM noodle_migrate_failure f WHERE f.batch_id = b.id AND f.outcome = 'skipped')
                   FROM noodle_migrate_batch b"#,
                &[],
            )
            .await
            .expect("counters");
        assert!(!rows.is_empty());
        for r in rows {
            let id: String = r.get(0);
            let counted: (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
            let held: (i64, i64, i64) = (r.get(4), r.get(5), r.get(6));
            assert_eq!(
                counted, held,
                "batch {id}: counters (completed, failed, skipped) vs rows"
            );
        }
    }
}

async fn wait_for_progress(app: &crate::helpers::TestApp, files: i64) {
    for _ in 0..1000 {
        let (_, s) = app.get("/storage-migration/status").await;
        if s["completed"].as_i64().unwrap_or(0) >= files {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_database_restart_mid_run_loses_nothing() {
    let gallery = Gallery::new(150).await;
    let vars = gallery.vars(s3_endpoint());
    let (mut child, app) = crate::resume::spawn_binary(&vars, free_port()).await;
    app.start(r#"{"direction":"toS3","concurrency":2,"deleteSource":true}"#)
        .await;
    wait_for_progress(&app, 20).await;
    gallery.restart();
    let first = app.wait_idle().await;
    let state = first["state"].as_str().unwrap_or_default().to_string();
    eprintln!("after the restart the run ended as {state}: {first}");
    assert!(
        ["completed", "completed_with_failures", "failed"].contains(&state.as_str()),
        "a clear end state: {first}"
    );
    if state == "failed" {
        assert!(
            first["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{first}"
        );
    }

    // Whatever happened, a second start (resuming if needed) finishes.
    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","deleteSource":true}"#,
        )
        .await;
    if code == 201 {
        let second = app.wait_idle().await;
        assert_eq!(second["failed"], 0, "{second}");
    } else {
        assert_eq!(json["error"], "nothing_to_migrate", "{json}");
    }
    child.kill().ok();
    child.wait().ok();
    gallery.assert_all_moved().await;
    gallery.assert_counters_match().await;
}

/// The engine's advisory lock key.
const LOCK_KEY: i64 = 0x6E6F_6F64_6C65_6D67;

async fn advisory_locks(url: &str) -> i64 {
    pg(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .expect("pg_locks")
        .get(0)
}

#[actix_rt::test]
async fn the_lock_survives_a_restart_or_the_run_stops() {
    let gallery = Gallery::new(40).await;
    // Every S3 request takes 150 ms more: the run outlives two restarts.
    let proxy = crate::faults::FaultProxy::slow(&s3_endpoint(), Duration::from_millis(150)).await;
    let vars = gallery.vars(proxy.endpoint.clone());
    let (mut child, app) = crate::resume::spawn_binary(&vars, free_port()).await;
    let batch = app.start(r#"{"direction":"toS3","concurrency":1}"#).await;
    wait_for_progress(&app, 2).await;
    let url = gallery.cluster.url("gallery");
    assert_eq!(advisory_locks(&url).await, 1, "the run holds the lock");

    // A restart frees the lock; the engine takes it back.
    gallery.restart();
    let mut retaken = false;
    for _ in 0..100 {
        if advisory_locks(&url).await == 1 {
            retaken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retaken, "the engine holds the lock again");
    let (_, status) = app.get("/storage-migration/status").await;
    assert_eq!(status["isActive"], true, "the run goes on: {status}");

    // Another process grabs the lock right after a restart, before the
    // engine takes it back (rarely the engine is quicker: restart again).
    // The run stops and leaves the batch alone.
    let mut thief = None;
    for _ in 0..5 {
        gallery.restart();
        let client = pg(&url).await;
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .expect("try lock")
            .get(0);
        if taken {
            thief = Some(client);
            break;
        }
    }
    let thief = thief.expect("the lock is free right after a restart");
    let stopped = app.wait_idle().await;
    assert_eq!(stopped["state"], "interrupted", "{stopped}");
    assert!(
        stopped["error"]
            .as_str()
            .unwrap_or_default()
            .contains("took the migration lock"),
        "{stopped}"
    );
    let (code, refused) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "the other process holds the lock: {refused}");
    assert_eq!(refused["error"], "migration_running");

    // Once it lets go, the batch resumes where it stopped.
    drop(thief);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, json) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","concurrency":4}"#,
        )
        .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["batchId"], batch.to_string());
    assert_eq!(json["resumed"], true);
    let done = app.wait_idle().await;
    assert_eq!(done["failed"], 0, "{done}");
    child.kill().ok();
    child.wait().ok();
    gallery.assert_all_moved().await;
}

#[actix_rt::test]
async fn a_database_restart_under_several_workers_loses_nothing() {
    let gallery = Gallery::new(120).await;
    // Slower S3 requests: the run spans the restart.
    let proxy = crate::faults::FaultProxy::slow(&s3_endpoint(), Duration::from_millis(20)).await;
    let vars = gallery.vars(proxy.endpoint.clone());
    let crew: Vec<_> = (0..2)
        .map(|_| crate::workers::Worker::spawn(&vars, &[]))
        .collect();
    for w in &crew {
        w.wait_for_log("Waiting for a migration to join").await;
    }
    let (mut child, app) = crate::resume::spawn_binary(&vars, free_port()).await;
    let batch = app
        .start(r#"{"direction":"toS3","concurrency":2,"deleteSource":true}"#)
        .await;
    for w in &crew {
        w.wait_for_log("Joined a migration").await;
    }
    wait_for_progress(&app, 30).await;
    gallery.restart();
    let status = app.wait_idle().await;
    assert_eq!(
        status["state"], "completed",
        "the run rode the restart out: {status}"
    );
    child.kill().ok();
    child.wait().ok();
    gallery.assert_all_moved().await;
    gallery.assert_counters_match().await;
    let db = pg(&gallery.cluster.url("gallery")).await;
    let busy: i64 = db
        .query_one(
            "SELECT count(*) FROM noodle_migrate_worker WHERE batch_id = $1 AND completed > 0",
            &[&batch],
        )
        .await
        .expect("workers")
        .get(0);
    assert!(busy >= 2, "several processes worked on the batch");
}
