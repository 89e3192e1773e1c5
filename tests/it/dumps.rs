//! Database dumps: the real pg_dump, gzipped, on S3 and on disk; restored
//! with gunzip | psql; retention; failures that leave nothing behind.

use crate::helpers::{admin_url, pg, EnvOptions, TestApp, TestEnv};
use noodle_migrate::config::{Config, Secret, Vars};
use noodle_migrate::db;
use noodle_migrate::dumps::{DumpError, DumpSettings, Dumps};
use noodle_migrate::model::Backend;
use noodle_migrate::store::S3Store;
use noodle_migrate::telemetry::Metrics;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use uuid::Uuid;

const TABLES: [&str; 5] = [
    "asset",
    "asset_file",
    "person",
    "\"user\"",
    "noodle_migrate_batch",
];

async fn row_counts(url: &str) -> Vec<i64> {
    let db = pg(url).await;
    let mut counts = Vec::new();
    for table in TABLES {
        let row = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"));
        counts.push(row.get(0));
    }
    counts
}

/// Restores a `.sql.gz` into a fresh database with the real tools
/// (`gunzip | psql`, stopping at the first error); returns its URL.
async fn restore(dump: &[u8]) -> String {
    let name = format!("nm_test_{}", Uuid::new_v4().simple());
    pg(&admin_url())
        .await
        .batch_execute(&format!(r#"CREATE DATABASE "{name}""#))
        .await
        .expect("create restore database");
    let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL");
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), dump).expect("write dump");
    let out = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!(
            "gunzip -c '{}' | psql -q -v ON_ERROR_STOP=1 '{url}'",
            file.path().display()
        ))
        .stdout(Stdio::null())
        .output()
        .expect("run gunzip | psql");
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    url
}

fn assert_dump_name(name: &str) {
    assert!(
        name.starts_with("immich-db-backup-") && name.ends_with(".sql.gz") && name.contains("-pg"),
        "{name}"
    );
    assert!(
        noodle_migrate::dumps::name::DumpName::parse(name).is_some(),
        "{name} parses as a dump name"
    );
}

async fn dump_via_api(app: &TestApp) -> Value {
    let (status, report) = app.post("/database-dumps", "").await;
    assert_eq!(status, 201, "{report}");
    assert_dump_name(report["name"].as_str().expect("name"));
    assert!(report["size"].as_u64().expect("size") > 0);
    assert!(report["durationMs"].is_u64());
    report
}

fn backups(env: &TestEnv) -> PathBuf {
    env.media_path().join("backups")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A stand-in for pg_dump (set with NOODLE_MIGRATE_PG_DUMP): the real
/// setting, pointed at a script, to make failures happen on purpose.
fn fake_pg_dump(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("pg_dump");
    let mut f = std::fs::File::create(&path).expect("script");
    writeln!(f, "#!/bin/sh\n{body}").expect("write script");
    drop(f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[actix_rt::test]
async fn a_dump_to_s3_restores_with_the_same_rows() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "lib").await;
    let report = dump_via_api(&app).await;
    let name = report["name"].as_str().expect("name");
    assert_eq!(report["backend"], "s3");
    let key = format!("lib/backups/{name}");
    assert_eq!(
        report["location"],
        format!("s3://{}/{key}", env.bucket),
        "{report}"
    );
    let object = env.object(&key).await.expect("the dump object");
    assert_eq!(object.len() as u64, report["size"].as_u64().expect("size"));
    assert_eq!(&object[..2], &[0x1f, 0x8b], "gzip magic");
    let restored = restore(&object).await;
    assert_eq!(row_counts(&restored).await, row_counts(&env.db_url).await);
    assert!(row_counts(&env.db_url).await[0] > 0, "the gallery has rows");

    let (status, list) = app.get("/database-dumps").await;
    assert_eq!(status, 200);
    assert_eq!(list["backend"], "s3");
    assert_eq!(list["dumps"][0]["name"], name);
    assert_eq!(list["dumps"][0]["size"], report["size"]);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"noodle_migrate_database_dumps_total{outcome="success"} 1"#));
    assert!(metrics.contains(&format!(
        "noodle_migrate_last_database_dump_size_bytes {}",
        report["size"]
    )));
}

#[actix_rt::test]
async fn a_dump_to_disk_restores_with_the_same_rows() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("disk", "").await;
    let report = dump_via_api(&app).await;
    let name = report["name"].as_str().expect("name");
    assert_eq!(report["backend"], "disk");
    let path = backups(&env).join(name);
    assert_eq!(report["location"], path.display().to_string());
    assert_eq!(
        names_in(&backups(&env)),
        vec![name.to_string()],
        "no temporary file left"
    );
    let restored = restore(&std::fs::read(&path).expect("dump file")).await;
    assert_eq!(row_counts(&restored).await, row_counts(&env.db_url).await);
    assert!(env.keys().await.is_empty(), "nothing written to S3");
}

#[actix_rt::test]
async fn retention_removes_only_the_oldest_dumps() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let dir = backups(&env);
    std::fs::create_dir_all(&dir).expect("backups");
    let old = [
        "immich-db-backup-1600000000000.sql.gz",
        "immich-db-backup-20210101T000000-v1.90.0-pg14.sql.gz",
        "immich-db-backup-20220101T000000-v1.100.0-pg15.sql.gz",
        "immich-db-backup-20230101T000000-v1.120.0-pg15.4.sql.gz",
    ];
    let others = [
        "notes.txt",
        "immich-db-backup-latest.sql.gz",
        "immich-db-backup-20200101T000000-v1.0.0-pg14.sql.gz.tmp",
    ];
    for name in old.iter().chain(others.iter()) {
        std::fs::write(dir.join(name), b"x").expect("file");
    }
    let mut vars = env.vars("disk", "");
    vars.insert("NOODLE_MIGRATE_DUMP_KEEP".into(), "3".into());
    let app = env.spawn(vars).await;
    let report = dump_via_api(&app).await;
    let name = report["name"].as_str().expect("name").to_string();
    let deleted: Vec<&str> = report["deleted"]
        .as_array()
        .expect("deleted")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        deleted,
        vec![old[1], old[0]],
        "the two oldest, newest first"
    );
    let mut expected: Vec<String> = vec![name, old[2].into(), old[3].into()];
    expected.extend(others.iter().map(|s| s.to_string()));
    expected.sort();
    assert_eq!(names_in(&dir), expected);

    let (_, list) = app.get("/database-dumps").await;
    let listed: Vec<&str> = list["dumps"]
        .as_array()
        .expect("dumps")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        listed,
        vec![report["name"].as_str().expect("name"), old[3], old[2]]
    );
}

#[actix_rt::test]
async fn retention_on_s3_stays_inside_the_backups_prefix() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let dump = "immich-db-backup-20220101T000000-v1.100.0-pg15.sql.gz";
    for key in [
        format!("p/backups/{dump}"),
        format!("p/other/{dump}"),
        format!("backups/{dump}"),
        "p/backups/readme.txt".to_string(),
    ] {
        env.put_object(&key, b"x").await;
    }
    let mut vars = env.vars("s3", "p");
    vars.insert("NOODLE_MIGRATE_DUMP_KEEP".into(), "1".into());
    let app = env.spawn(vars).await;
    let report = dump_via_api(&app).await;
    assert_eq!(report["deleted"], serde_json::json!([dump]));
    let mut keys = env.keys().await;
    keys.sort();
    let mut expected = vec![
        format!("backups/{dump}"),
        "p/backups/readme.txt".to_string(),
        format!("p/backups/{}", report["name"].as_str().expect("name")),
        format!("p/other/{dump}"),
    ];
    expected.sort();
    assert_eq!(keys, expected);
}

#[actix_rt::test]
async fn dumps_in_the_same_second_get_their_own_names() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("disk", "").await;
    let first = dump_via_api(&app).await;
    let second = dump_via_api(&app).await;
    assert_ne!(first["name"], second["name"]);
    assert_eq!(names_in(&backups(&env)).len(), 2);
}

#[actix_rt::test]
async fn delete_takes_only_dump_names() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let report = dump_via_api(&app).await;
    let name = report["name"].as_str().expect("name");
    env.put_object("backups/notes.txt", b"keep me").await;

    for bad in [
        "notes.txt",
        "..%2F..%2Fetc%2Fpasswd",
        "immich-db-backup-1600000000000.sql.gz.tmp",
        "%2Fimmich-db-backup-1600000000000.sql.gz",
    ] {
        let (status, body) = app.delete(&format!("/database-dumps/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_dump_name");
    }
    let (status, body) = app
        .delete("/database-dumps/immich-db-backup-1600000000000.sql.gz")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "dump_not_found");

    let (status, body) = app.delete(&format!("/database-dumps/{name}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.keys().await, vec!["backups/notes.txt".to_string()]);
    let (_, list) = app.get("/database-dumps").await;
    assert_eq!(list["dumps"], serde_json::json!([]));
}

#[actix_rt::test]
async fn a_dump_failing_mid_stream_leaves_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let scripts = tempfile::tempdir().expect("dir");
    // 20 MB of output, more than one multipart part, then an error.
    let failing = fake_pg_dump(
        scripts.path(),
        "head -c 20000000 /dev/urandom; echo 'pg_dump: error: connection lost' >&2; exit 1",
    );
    for backend in ["s3", "disk"] {
        let mut vars = env.vars(backend, "");
        vars.insert(
            "NOODLE_MIGRATE_PG_DUMP".into(),
            failing.display().to_string(),
        );
        let app = env.spawn(vars).await;
        let (status, body) = app.post("/database-dumps", "{}").await;
        assert_eq!(status, 502, "{backend}: {body}");
        assert_eq!(body["error"], "dump_failed");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("connection lost"),
            "pg_dump's reason is passed on: {body}"
        );
        let metrics = app.metrics().await;
        assert!(metrics.contains(r#"noodle_migrate_database_dumps_total{outcome="failure"} 1"#));
    }
    assert!(env.keys().await.is_empty(), "no object");
    assert!(names_in(&backups(&env)).is_empty(), "no file");
    let uploads = env
        .s3
        .list_multipart_uploads()
        .bucket(&env.bucket)
        .send()
        .await;
    if let Ok(uploads) = uploads {
        assert!(uploads.uploads().is_empty(), "the upload was aborted");
    }
}

/// The dump service on its own, with settings a test can break.
async fn dumps_for(env: &TestEnv, database_url: &str) -> Dumps {
    dumps_with(env, env.vars("s3", ""), database_url, None).await
}

async fn dumps_with(
    env: &TestEnv,
    vars: HashMap<String, String>,
    database_url: &str,
    pg_dump: Option<PathBuf>,
) -> Dumps {
    let config = Config::from_vars(&Vars::new(vars)).expect("config");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let s3 = S3Store::connect(&config.s3, metrics.clone()).await;
    Dumps::new(
        DumpSettings {
            database_url: Secret::new(database_url),
            pg_dump,
            keep: Some(14),
            media_dir: env.media_path().to_path_buf(),
            s3_prefix: String::new(),
        },
        db::pool(database_url, 2).expect("pool"),
        s3,
        metrics,
    )
}

#[actix_rt::test]
async fn bad_credentials_and_pg_dump_errors_leave_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // A role that may connect but not read the gallery's tables: pg_dump
    // starts, writes, then stops with "permission denied".
    let role = format!("nm_test_role_{}", Uuid::new_v4().simple());
    env.db
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'"))
        .await
        .expect("create role");
    let mut url = url::Url::parse(&env.db_url).expect("url");
    url.set_username(&role).expect("user");
    url.set_password(Some("pw")).expect("password");
    let limited = dumps_for(&env, url.as_str()).await;
    url.set_username("nm_no_such_role").expect("user");
    let unknown = dumps_for(&env, url.as_str()).await;

    for backend in [Backend::S3, Backend::Disk] {
        match limited.create(backend).await {
            Err(DumpError::PgDump(message)) => {
                assert!(message.contains("permission denied"), "{message}")
            }
            other => panic!("expected a pg_dump error, got {other:?}"),
        }
        let err = unknown.create(backend).await.expect_err("unknown role");
        assert!(
            err.to_string().contains("nm_no_such_role"),
            "the reason names the role: {err}"
        );
        assert!(!err.to_string().contains(":pw@"), "no password: {err}");
    }
    assert!(env.keys().await.is_empty(), "no object");
    assert!(names_in(&backups(&env)).is_empty(), "no file");
    env.db
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .expect("drop role");
}

/// A caller that goes away mid-dump (a client that disconnects) drops the
/// dump: its multipart upload is aborted and its temporary file removed.
#[actix_rt::test]
async fn a_dump_dropped_midway_leaves_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let scripts = tempfile::tempdir().expect("dir");
    // More than a part of output (random bytes do not compress), then a
    // pg_dump that never ends.
    let endless = fake_pg_dump(scripts.path(), "head -c 40000000 /dev/urandom; sleep 60");
    // Requests go through a proxy that records them: the loopback server
    // cannot list incomplete uploads.
    let proxy = crate::faults::FaultProxy::start(&crate::helpers::s3_endpoint(), 0.0, None).await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    let dumps = dumps_with(&env, vars, &env.db_url, Some(endless)).await;
    let sent = |prefix: &str, part: &str| {
        proxy
            .counters
            .lines
            .lock()
            .map(|l| l.iter().any(|l| l.starts_with(prefix) && l.contains(part)))
            .unwrap_or(false)
    };
    // Each dump is dropped once it is midway: a part has reached the
    // server, or a temporary file has been written to.
    let midway = |backend: Backend| match backend {
        Backend::S3 => sent("PUT ", "partNumber=1"),
        Backend::Disk => std::fs::read_dir(backups(&env))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0)),
    };
    for backend in [Backend::S3, Backend::Disk] {
        let reached = async {
            while !midway(backend) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            done = dumps.create(backend) => panic!("the dump cannot finish: {done:?}"),
            _ = reached => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(120)) => {
                panic!("the {} dump never got midway", backend.as_str())
            }
        }
    }
    let mut left = (Vec::new(), false);
    for _ in 0..100 {
        left = (names_in(&backups(&env)), sent("DELETE ", "uploadId="));
        if left == (Vec::new(), true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        left,
        (Vec::new(), true),
        "(temporary files, upload aborted)"
    );
    assert!(env.keys().await.is_empty(), "no object");
}

#[actix_rt::test]
async fn one_dump_at_a_time() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let scripts = tempfile::tempdir().expect("dir");
    let slow = fake_pg_dump(scripts.path(), "sleep 2; echo 'SELECT 1;'");
    let mut vars: HashMap<String, String> = env.vars("disk", "");
    vars.insert("NOODLE_MIGRATE_PG_DUMP".into(), slow.display().to_string());
    let app = env.spawn(vars).await;
    let (a, b) = futures_util::join!(
        app.post("/database-dumps", ""),
        app.post("/database-dumps", "")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    let refused = if a.0 == 409 { a.1 } else { b.1 };
    assert_eq!(refused["error"], "dump_running");
    let (status, list) = app.get("/database-dumps").await;
    assert_eq!(status, 200);
    assert_eq!(list["dumps"].as_array().map(Vec::len), Some(1));
}

#[actix_rt::test]
async fn dump_bodies_are_checked() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("disk", "").await;
    for (body, code) in [
        ("{", "malformed_json"),
        ("[]", "invalid_body"),
        (r#"{"keep":3}"#, "unknown_field"),
    ] {
        let (status, json) = app.post("/database-dumps", body).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert_eq!(json["error"], code, "{body}");
    }
    assert!(names_in(&backups(&env)).is_empty(), "nothing dumped");
}

#[actix_rt::test]
async fn a_start_can_dump_first_and_records_the_dump() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (status, reply) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","dumpDatabase":true}"#,
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let name = reply["dumpName"].as_str().expect("dumpName").to_string();
    assert_dump_name(&name);
    app.wait_idle().await;
    let dump = env
        .object(&format!("backups/{name}"))
        .await
        .expect("the dump object");
    // The dump shows the database before the run: every original on disk.
    let restored = restore(&dump).await;
    let before = pg(&restored)
        .await
        .query_one(
            r#"SELECT count(*) FROM asset WHERE "originalPath" LIKE '/%'"#,
            &[],
        )
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert!(before > 0);
    let (_, batches) = app.get("/storage-migration/batches").await;
    assert_eq!(batches["batches"][0]["dumpName"], name.as_str());
}

#[actix_rt::test]
async fn a_start_whose_dump_fails_is_refused_and_changes_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let scripts = tempfile::tempdir().expect("dir");
    let failing = fake_pg_dump(
        scripts.path(),
        "echo 'pg_dump: error: out of memory' >&2; exit 1",
    );
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_PG_DUMP".into(),
        failing.display().to_string(),
    );
    let app = env.spawn(vars).await;
    let (status, body) = app
        .post(
            "/storage-migration/start",
            r#"{"direction":"toS3","dumpDatabase":true}"#,
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "dump_failed");
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .contains("out of memory"));
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_batch").await,
        0
    );
    assert!(env.keys().await.is_empty(), "no file moved");
    // The lock was let go: a start without a dump goes ahead.
    let (_, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 0, "{status}");
}

#[actix_rt::test]
async fn dumps_are_named_and_kept_as_the_gallery_does() {
    let env = TestEnv::new(EnvOptions::default()).await;
    env.db
        .batch_execute(
            r#"INSERT INTO version_history ("version", "createdAt") VALUES ('2.6.1', now() + interval '1 minute');
               INSERT INTO system_config ("key", "value") VALUES ('backup.database.keepLastAmount', '2')"#,
        )
        .await
        .expect("gallery settings");
    let server: String = env
        .db
        .query_one("SHOW server_version", &[])
        .await
        .expect("version")
        .get(0);
    let pg = server.split(' ').next().expect("a version").to_string();
    let dir = backups(&env);
    std::fs::create_dir_all(&dir).expect("backups");
    let old = [
        "immich-db-backup-20210101T000000-v1.90.0-pg14.sql.gz",
        "immich-db-backup-20220101T000000-v1.100.0-pg15.sql.gz",
    ];
    for name in old {
        std::fs::write(dir.join(name), b"x").expect("old dump");
    }
    let app = env.app("disk", "").await;
    let report = dump_via_api(&app).await;
    let name = report["name"].as_str().expect("name").to_string();
    let stamp = name
        .strip_prefix("immich-db-backup-")
        .and_then(|rest| rest.strip_suffix(&format!("-v2.6.1-pg{pg}.sql.gz")))
        .unwrap_or_else(|| panic!("{name} is not named as the gallery names dumps"));
    assert!(stamp.len() == 15 && stamp.as_bytes()[8] == b'T', "{stamp}");
    // The gallery's keepLastAmount (2): the newest old one stays.
    assert_eq!(report["deleted"], serde_json::json!([old[0]]));
    let mut expected = vec![name.clone(), old[1].to_string()];
    expected.sort();
    assert_eq!(names_in(&dir), expected);

    // Newer releases keep it in the system-config document.
    env.db
        .batch_execute(
            r#"DELETE FROM system_config;
               INSERT INTO system_metadata ("key", "value")
                 VALUES ('system-config', '{"backup": {"database": {"keepLastAmount": 1}}}')"#,
        )
        .await
        .expect("newer setting");
    let report = dump_via_api(&app).await;
    assert_eq!(
        report["deleted"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(
        names_in(&dir),
        vec![report["name"].as_str().expect("name").to_string()]
    );
}

/// A start that dumps the database first does not hold the engine: status
/// and cancel answer while the dump runs, and a cancel stops the start
/// before its first file, leaving no dump behind.
#[actix_rt::test]
async fn a_start_dumping_first_can_be_watched_and_cancelled() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let scripts = tempfile::tempdir().expect("dir");
    let slow = fake_pg_dump(scripts.path(), "echo 'SELECT 1;'; sleep 60");
    let mut vars: HashMap<String, String> = env.vars("s3", "");
    vars.insert("NOODLE_MIGRATE_PG_DUMP".into(), slow.display().to_string());
    let app = env.spawn(vars).await;
    let started = std::time::Instant::now();
    let (start, cancelled) = futures_util::join!(
        app.post(
            "/storage-migration/start",
            r#"{"direction":"toS3","dumpDatabase":true}"#
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let (status_code, status) = app.get("/storage-migration/status").await;
            assert_eq!(status_code, 200, "{status}");
            let (again, refused) = app
                .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
                .await;
            assert_eq!(
                (again, refused["error"].as_str()),
                (409, Some("migration_running"))
            );
            app.post("/storage-migration/cancel", "").await
        }
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the dump was not waited for"
    );
    assert_eq!(cancelled.0, 202, "{:?}", cancelled.1);
    assert_eq!(start.0, 409, "{:?}", start.1);
    assert_eq!(start.1["error"], "cancelled");
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
    let dumps = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("backups/"))
        .count();
    assert_eq!(dumps, 0, "no dump left");
    // The engine is free again.
    let (code, json) = app.get("/storage-migration/orphans").await;
    assert_eq!(code, 200, "{json}");
}
