//! Fit with the real gallery: the paths it reads, its media location, its
//! log table and batch ids, its own API and credentials, and what it
//! leaves behind. The gallery's side is played with its own SQL (the
//! statements of its repositories and migrations, written out here).

use crate::cli::cli;
use crate::helpers::{EnvOptions, TestApp, TestEnv};
use crate::seed::{self, SeededFile};
use noodle_migrate::config::{Config, Vars};
use noodle_migrate::model::FileKind;
use serde_json::Value;
use uuid::Uuid;

/// The gallery's rollback of a batch (its service and repository, one
/// row at a time): returns (reverted, failed).
async fn gallery_rollback(env: &TestEnv, batch: Uuid) -> (i64, i64) {
    let rows = env
        .db
        .query(
            r#"SELECT "entityType", "entityId", "fileType", "oldPath", "newPath"
               FROM storage_migration_log WHERE "batchId" = $1"#,
            &[&batch],
        )
        .await
        .expect("the gallery reads its log");
    let (mut reverted, mut failed) = (0, 0);
    for row in rows {
        let (entity_type, id): (String, Uuid) = (row.get(0), row.get(1));
        let file_type: Option<String> = row.get(2);
        let (old, new): (String, String) = (row.get(3), row.get(4));
        let sql = match (entity_type.as_str(), file_type.as_deref()) {
            ("asset", Some("encodedVideo")) => {
                r#"UPDATE asset_file SET path = $2 WHERE "assetId" = $1 AND type = 'encoded_video' AND path = $3"#
            }
            ("asset", _) => {
                r#"UPDATE asset SET "originalPath" = $2 WHERE id = $1 AND "originalPath" = $3"#
            }
            ("assetFile", _) => "UPDATE asset_file SET path = $2 WHERE id = $1 AND path = $3",
            ("person", _) => {
                r#"UPDATE person SET "thumbnailPath" = $2 WHERE id = $1 AND "thumbnailPath" = $3"#
            }
            ("user", _) => {
                r#"UPDATE "user" SET "profileImagePath" = $2 WHERE id = $1 AND "profileImagePath" = $3"#
            }
            _ => {
                failed += 1;
                continue;
            }
        };
        match env
            .db
            .execute(sql, &[&id, &old, &new])
            .await
            .expect("update")
        {
            0 => failed += 1,
            _ => reverted += 1,
        }
    }
    if failed == 0 {
        env.db
            .execute(
                r#"DELETE FROM storage_migration_log WHERE "batchId" = $1"#,
                &[&batch],
            )
            .await
            .expect("delete log");
    }
    (reverted, failed)
}

/// The gallery's own migration moving one file to S3: the object at the
/// relative key, the optimistic path update, then its log row.
async fn gallery_moves(env: &TestEnv, file: &SeededFile, batch: Uuid) {
    let key = file.relative(env.media_path());
    env.put_object(&key, &file.content).await;
    env.set_path(file.kind, file.row_id, &key).await;
    env.db
        .execute(
            r#"INSERT INTO storage_migration_log ("entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
               VALUES ($1, $2, $3, $4, $5, 'toS3', $6)"#,
            &[
                &file.kind.log_entity_type(),
                &file.entity_id,
                &file.kind.log_file_type(),
                &file.path,
                &key,
                &batch,
            ],
        )
        .await
        .expect("the gallery's log row");
}

fn only(kinds: &[FileKind]) -> String {
    let types: Vec<String> = FileKind::ALL
        .iter()
        .map(|k| format!(r#""{}":{}"#, k.api_key(), kinds.contains(k)))
        .collect();
    format!("{{{}}}", types.join(","))
}

async fn table_exists(env: &TestEnv, table: &str) -> bool {
    env.db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .expect("regclass")
        .get(0)
}

#[actix_rt::test]
async fn the_noodle_gallery_reads_each_key_as_stored() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // Its settings have no prefix: one is refused, by name, before anything.
    let mut vars = env.vars("s3", "");
    vars.insert("S3_PREFIX".into(), "photos".into());
    let err = Config::from_vars(&Vars::new(vars.clone()))
        .expect_err("a prefix under IMMICH_STORAGE_BACKEND")
        .to_string();
    assert!(err.starts_with("S3_PREFIX"), "{err}");
    let out = cli(&vars, &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("S3_PREFIX"));

    let app = env.app("s3", "").await;
    let (_, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 0, "{status}");
    for file in &env.seeded.files {
        let stored = env.current_path(file.kind, file.row_id).await;
        assert!(!stored.starts_with('/') && !stored.starts_with("s3://"));
        // The gallery reads exactly the stored path as the key.
        env.assert_whole(&stored, &file.content).await;
    }
    // A file the gallery itself uploaded to S3 meanwhile: its key, as is.
    let key = format!("upload/{}/gallery-upload.jpg", env.seeded.users[0]);
    let data = seed::content(777, 4321);
    env.put_object(&key, &data).await;
    let asset_id = Uuid::new_v4();
    env.db
        .execute(
            r#"INSERT INTO asset ("id", "deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                 "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName")
               VALUES ($1, 'new', $2, 'phone', 'IMAGE', $3, now(), now(), now(), '\x01', 'new.jpg')"#,
            &[&asset_id, &env.seeded.users[0], &key],
        )
        .await
        .expect("gallery upload");

    let app = env.app("disk", "").await;
    let (_, status) = app.migrate(r#"{"direction":"toDisk"}"#).await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64 + 1,
        "{status}"
    );
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        env.assert_whole(&file.path, &file.content).await;
    }
    let back = format!("{}/{key}", env.media_path().display());
    assert_eq!(env.current_path(FileKind::Originals, asset_id).await, back);
    env.assert_whole(&back, &data).await;
}

#[actix_rt::test]
async fn the_url_gallery_gets_s3_urls_with_or_without_a_prefix() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    vars.remove("IMMICH_STORAGE_BACKEND");
    vars.insert("IMMICH_STORAGE_ENGINE".into(), "s3".into());
    let app = env.spawn(vars.clone()).await;
    let kinds = only(&[FileKind::Previews, FileKind::ProfileImages]);
    let (_, status) = app
        .migrate(&format!(r#"{{"direction":"toS3","fileTypes":{kinds}}}"#))
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    let moved: Vec<&SeededFile> = env
        .seeded
        .files
        .iter()
        .filter(|f| matches!(f.kind, FileKind::Previews | FileKind::ProfileImages))
        .collect();
    for file in &moved {
        let relative = file.relative(env.media_path());
        let url = format!("s3://{}/{relative}", env.bucket);
        assert_eq!(env.current_path(file.kind, file.row_id).await, url);
        env.assert_whole(&url, &file.content).await;
    }
    vars.insert("IMMICH_STORAGE_ENGINE".into(), "local".into());
    let app = env.spawn(vars).await;
    let (_, status) = app.migrate(r#"{"direction":"toDisk"}"#).await;
    assert_eq!(status["completed"], moved.len() as i64, "{status}");
    for file in &moved {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
}

#[actix_rt::test]
async fn one_setting_in_two_spellings_must_agree() {
    let env = TestEnv::new(EnvOptions::default()).await;
    for (ours, gallerys, a, b) in [
        ("S3_BUCKET", "IMMICH_S3_BUCKET", "one", "two"),
        (
            "S3_ENDPOINT",
            "IMMICH_S3_ENDPOINT",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        ),
        ("S3_ACCESS_KEY_ID", "IMMICH_S3_ACCESS_KEY_ID", "a", "b"),
    ] {
        let mut vars = env.vars("s3", "");
        vars.insert(ours.into(), a.into());
        vars.insert(gallerys.into(), b.into());
        let out = cli(&vars, &["serve"]);
        assert_eq!(out.status.code(), Some(2), "{ours}/{gallerys}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(ours) && stderr.contains(gallerys),
            "{stderr}"
        );
    }
    // The gallery's own spelling alone is enough.
    let mut vars = env.vars("s3", "");
    for (ours, gallerys) in [
        ("S3_BUCKET", "IMMICH_S3_BUCKET"),
        ("S3_ENDPOINT", "IMMICH_S3_ENDPOINT"),
        ("S3_ACCESS_KEY_ID", "IMMICH_S3_ACCESS_KEY_ID"),
        ("S3_SECRET_ACCESS_KEY", "IMMICH_S3_SECRET_ACCESS_KEY"),
    ] {
        let value = vars.remove(ours).expect("set");
        vars.insert(gallerys.into(), value);
    }
    let app = env.spawn(vars).await;
    let (code, json) = app.get("/storage-migration/estimate?direction=toS3").await;
    assert_eq!(code, 200, "{json}");
}

#[actix_rt::test]
async fn the_media_location_the_gallery_recorded_is_used_and_checked() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let media = env.media_path().display().to_string();
    // Unset: the gallery's record (seeded as the media folder) applies.
    let mut vars = env.vars("s3", "");
    vars.remove("IMMICH_MEDIA_LOCATION");
    let app = env.spawn(vars.clone()).await;
    let (code, json) = app.get("/storage-migration/estimate?direction=toS3").await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["fileCounts"]["total"], env.seeded.files.len() as i64);

    // The gallery moves its location (it rewrites paths on its next start):
    // nothing starts until noodle-migrate is restarted.
    env.db
        .execute(
            r#"UPDATE system_metadata SET "value" = '{"location": "/srv/moved"}' WHERE "key" = 'MediaLocation'"#,
            &[],
        )
        .await
        .expect("move");
    let (code, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(json["error"], "media_location_mismatch");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/srv/moved") && message.contains(&media),
        "{message}"
    );

    // Set and different from the record: refused, naming both.
    let mut vars = env.vars("s3", "");
    vars.insert("IMMICH_MEDIA_LOCATION".into(), media.clone());
    let app = env.spawn(vars).await;
    for (code, json) in [
        app.post("/storage-migration/start", r#"{"direction":"toS3"}"#)
            .await,
        app.get("/storage-migration/estimate?direction=toS3").await,
    ] {
        assert_eq!(code, 409, "{json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("IMMICH_MEDIA_LOCATION")
                && message.contains(&media)
                && message.contains("/srv/moved"),
            "{message}"
        );
    }
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_batch").await,
        0
    );
}

#[actix_rt::test]
async fn a_media_folder_mounted_elsewhere_on_this_machine() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // The gallery's rows say <A>/…; on this machine the folder is at <B>.
    let stored_root = env.media_path().display().to_string();
    let host = tempfile::Builder::new()
        .prefix("nm-host-")
        .tempdir()
        .expect("host dir");
    let mount = host.path().join("gallery-media");
    std::fs::rename(env.media_path(), &mount).expect("move the folder");
    let local = |file: &SeededFile| mount.join(file.relative(std::path::Path::new(&stored_root)));
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_MEDIA_DIR".into(),
        mount.display().to_string(),
    );
    let app = env.spawn(vars.clone()).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","deleteSource":true}"#)
        .await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    for file in &env.seeded.files {
        let relative = file.relative(std::path::Path::new(&stored_root));
        assert_eq!(env.current_path(file.kind, file.row_id).await, relative);
        env.assert_whole(&relative, &file.content).await;
        assert!(!local(file).exists(), "source deleted on this machine");
    }
    assert!(
        !std::path::Path::new(&stored_root).exists(),
        "nothing written at the gallery's own path"
    );

    // The orphan report speaks of files on this machine.
    let stray = mount.join("upload/stray.bin");
    std::fs::write(&stray, b"left over").expect("stray");
    let (code, report) = app.get("/storage-migration/orphans").await;
    assert_eq!(code, 200, "{report}");
    let paths: Vec<&str> = report["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .filter_map(|o| o["path"].as_str())
        .collect();
    assert_eq!(paths, vec![stray.display().to_string().as_str()]);

    vars.insert("IMMICH_STORAGE_BACKEND".into(), "disk".into());
    let app = env.spawn(vars).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toDisk","deleteSource":true}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    for file in &env.seeded.files {
        // The row names the gallery's location; the file is on this machine.
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        assert_eq!(std::fs::read(local(file)).expect("back"), file.content);
    }
    // Dumps to disk go to the folder on this machine.
    let (code, dump) = app.post("/database-dumps", "").await;
    assert_eq!(code, 201, "{dump}");
    let name = dump["name"].as_str().expect("name");
    assert!(mount.join("backups").join(name).is_file());
    assert!(!std::path::Path::new(&stored_root).exists());
}

#[actix_rt::test]
async fn the_gallery_log_table_is_never_created_and_gets_our_rows_later() {
    let env = TestEnv::new(EnvOptions {
        gallery_log_table: false,
        ..Default::default()
    })
    .await;
    let app = env.app("s3", "").await;
    let (first, status) = app
        .migrate(&format!(
            r#"{{"direction":"toS3","fileTypes":{}}}"#,
            only(&[FileKind::ProfileImages])
        ))
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(
        first.get_version_num(),
        4,
        "a v4 batch id, as the gallery's"
    );
    assert!(
        !table_exists(&env, "storage_migration_log").await,
        "the gallery's table is never created"
    );
    let ours = env.count("SELECT count(*) FROM noodle_migrate_log").await;
    let profiles = env.seeded.of_kind(FileKind::ProfileImages).count() as i64;
    assert_eq!(ours, profiles);
    // Rollback works from our table.
    let (code, report) = app
        .post(&format!("/storage-migration/rollback/{first}"), "")
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["rolledBack"], profiles);
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_log").await,
        0
    );

    let (second, _) = app
        .migrate(&format!(
            r#"{{"direction":"toS3","fileTypes":{}}}"#,
            only(&[FileKind::PersonThumbnails])
        ))
        .await;
    // The gallery upgrades: its own migration creates its table, and must
    // not fail.
    env.db
        .batch_execute(seed::GALLERY_LOG_TABLE)
        .await
        .expect("the gallery's own DDL runs after the engine");
    // Our next start moves our rows over; from then on the gallery's own
    // rollback sees them.
    let (third, _) = app
        .migrate(&format!(
            r#"{{"direction":"toS3","fileTypes":{}}}"#,
            only(&[FileKind::ProfileImages])
        ))
        .await;
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_log").await,
        0
    );
    assert_eq!(env.log_rows(third).await, profiles);
    let people = env.seeded.of_kind(FileKind::PersonThumbnails).count() as i64;
    assert_eq!(env.log_rows(second).await, people);
    assert_eq!(gallery_rollback(&env, second).await, (people, 0));
    for file in env.seeded.of_kind(FileKind::PersonThumbnails) {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
}

#[actix_rt::test]
async fn a_log_table_an_earlier_release_created_is_handed_back() {
    // A gallery without the table, on which an earlier noodle-migrate made
    // storage_migration_log itself (its own default, no gallery record).
    let env = TestEnv::new(EnvOptions {
        gallery_log_table: false,
        ..Default::default()
    })
    .await;
    let batch = Uuid::new_v4();
    let file = env
        .seeded
        .of_kind(FileKind::ProfileImages)
        .next()
        .expect("profile")
        .clone();
    let key = file.relative(env.media_path());
    env.db
        .batch_execute(
            r#"CREATE TABLE storage_migration_log (
                 "id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                 "entityType" varchar NOT NULL, "entityId" uuid NOT NULL, "fileType" varchar NULL,
                 "oldPath" text NOT NULL, "newPath" text NOT NULL, "direction" varchar NOT NULL,
                 "batchId" uuid NOT NULL, "migratedAt" timestamptz NOT NULL DEFAULT clock_timestamp());
               CREATE INDEX IF NOT EXISTS "IDX_storage_migration_log_batchId" ON storage_migration_log ("batchId");
               CREATE INDEX IF NOT EXISTS "IDX_storage_migration_log_entityId" ON storage_migration_log ("entityId");"#,
        )
        .await
        .expect("the earlier table");
    env.put_object(&key, &file.content).await;
    env.set_path(file.kind, file.row_id, &key).await;
    env.db
        .execute(
            r#"INSERT INTO storage_migration_log ("entityType", "entityId", "oldPath", "newPath", "direction", "batchId")
               VALUES ('user', $1, $2, $3, 'toS3', $4)"#,
            &[&file.entity_id, &file.path, &key, &batch],
        )
        .await
        .expect("a row");
    let app = env.app("s3", "").await;
    assert!(!table_exists(&env, "storage_migration_log").await);
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_log").await,
        1,
        "its rows are kept"
    );
    env.db
        .batch_execute(seed::GALLERY_LOG_TABLE)
        .await
        .expect("the gallery can create its table again");
    let (code, report) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["rolledBack"], 1);
    assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
}

#[actix_rt::test]
async fn batches_roll_back_from_either_tool() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let kinds = [
        FileKind::Originals,
        FileKind::Sidecars,
        FileKind::EncodedVideos,
    ];
    let (ours, status) = app
        .migrate(&format!(
            r#"{{"direction":"toS3","fileTypes":{}}}"#,
            only(&kinds)
        ))
        .await;
    let moved = env
        .seeded
        .files
        .iter()
        .filter(|f| kinds.contains(&f.kind))
        .count() as i64;
    assert_eq!(status["completed"], moved, "{status}");
    assert_eq!(ours.get_version_num(), 4);
    // Our batch, reverted by the gallery's own rollback.
    assert_eq!(gallery_rollback(&env, ours).await, (moved, 0));
    for file in env.seeded.files.iter().filter(|f| kinds.contains(&f.kind)) {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
    assert_eq!(env.log_rows(ours).await, 0);

    // A batch of the gallery's own tool, reverted by ours through the
    // gallery's contract.
    let theirs = Uuid::new_v4();
    let sample: Vec<SeededFile> = FileKind::ALL
        .iter()
        .filter_map(|k| env.seeded.of_kind(*k).next().cloned())
        .collect();
    for file in &sample {
        gallery_moves(&env, file, theirs).await;
    }
    let key = admin_key(&env, &["all"]).await;
    let (code, report) = app
        .call(
            "POST",
            &format!("/api/storage-migration/rollback/{theirs}"),
            None,
            &[("x-api-key", &key)],
        )
        .await;
    assert_eq!(code, 201, "{report}");
    assert_eq!(report["rolledBack"], sample.len() as i64, "{report}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["total"], sample.len() as i64);
    for file in &sample {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
    assert_eq!(env.log_rows(theirs).await, 0);
}

/// An API key of the first seeded user, made an admin.
async fn admin_key(env: &TestEnv, permissions: &[&str]) -> String {
    let admin = env.seeded.users[0];
    env.db
        .execute(
            r#"UPDATE "user" SET "isAdmin" = true WHERE id = $1"#,
            &[&admin],
        )
        .await
        .expect("admin");
    key_of(env, admin, permissions).await
}

/// A new API key, stored as the gallery stores it (its SHA-256).
async fn key_of(env: &TestEnv, user: Uuid, permissions: &[&str]) -> String {
    let key = format!("gallery-key-{}", Uuid::new_v4().simple());
    let permissions: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
    env.db
        .execute(
            r#"INSERT INTO api_key ("name", "key", "userId", "permissions")
               VALUES ('test', sha256(convert_to($1, 'UTF8')), $2, $3)"#,
            &[&key, &user, &permissions],
        )
        .await
        .expect("api key");
    key
}

/// A login session of `user`, expiring in `expires_in` (SQL interval).
async fn session_of(env: &TestEnv, user: Uuid, expires_in: Option<&str>) -> String {
    let token = format!("session-{}", Uuid::new_v4().simple());
    env.db
        .execute(
            r#"INSERT INTO session ("token", "userId", "expiresAt")
               VALUES (sha256(convert_to($1, 'UTF8')), $2, now() + $3::text::interval)"#,
            &[&token, &user, &expires_in],
        )
        .await
        .expect("session");
    token
}

async fn api(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let body = (method == "POST").then_some("");
    app.call(
        method,
        &format!("/api/storage-migration/{path}"),
        body,
        headers,
    )
    .await
}

#[actix_rt::test]
async fn the_gallerys_contract_with_the_gallerys_credentials() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let admin = env.seeded.users[0];
    let other = env.seeded.users[1];
    let all = admin_key(&env, &["all"]).await;
    let read = key_of(&env, admin, &["job.read"]).await;
    let not_admin = key_of(&env, other, &["all"]).await;
    let session = session_of(&env, admin, None).await;
    let bearer = format!("Bearer {session}");
    let cookie = format!(
        "theme=dark; immich_access_token={}",
        session_of(&env, admin, Some("1 hour")).await
    );
    let expired = format!(
        "Bearer {}",
        session_of(&env, admin, Some("-1 minute")).await
    );

    // Credentials are always needed here, even without a token of ours.
    let (code, json) = api(&app, "GET", "status", &[]).await;
    assert_eq!(code, 401, "{json}");
    assert_eq!(json["statusCode"], 401);
    assert_eq!(json["error"], "Unauthorized");
    for (headers, expected) in [
        (vec![("x-api-key", "not-a-key")], 401),
        (vec![("authorization", expired.as_str())], 401),
        (vec![("x-api-key", not_admin.as_str())], 403),
        (vec![("x-api-key", all.as_str())], 200),
        (vec![("x-api-key", read.as_str())], 200),
        (vec![("authorization", bearer.as_str())], 200),
        (vec![("cookie", cookie.as_str())], 200),
    ] {
        let (code, json) = api(&app, "GET", "status", &headers).await;
        assert_eq!(code, expected, "{headers:?}: {json}");
    }
    let (_, status) = api(&app, "GET", "status", &[("x-api-key", &all)]).await;
    for field in [
        "isActive",
        "active",
        "completed",
        "failed",
        "delayed",
        "waiting",
        "paused",
    ] {
        assert!(
            status[field].is_boolean() || status[field].is_i64(),
            "{field}: {status}"
        );
    }
    let (code, estimate) = api(
        &app,
        "GET",
        "estimate?direction=toS3",
        &[("x-api-key", &read)],
    )
    .await;
    assert_eq!(code, 200, "{estimate}");
    assert_eq!(estimate["direction"], "toS3");
    assert_eq!(
        estimate["fileCounts"]["total"],
        env.seeded.files.len() as i64
    );
    assert!(estimate["estimatedSizeBytes"]
        .as_i64()
        .is_some_and(|n| n > 0));
    let (code, json) = api(
        &app,
        "GET",
        "estimate?direction=up",
        &[("x-api-key", &read)],
    )
    .await;
    assert_eq!(code, 400, "{json}");

    // Starting needs job.create.
    let body = r#"{"direction":"toS3","deleteSource":false,"concurrency":2,"fileTypes":{"originals":true,"thumbnails":true,"previews":true,"fullsize":true,"encodedVideos":true,"sidecars":true,"personThumbnails":true,"profileImages":true}}"#;
    let start = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.call("POST", "/api/storage-migration/start", Some(body), &headers)
                .await
        }
    };
    let (code, json) = start(vec![("x-api-key", read.clone())]).await;
    assert_eq!(code, 403, "{json}");
    assert!(json["message"]
        .as_str()
        .is_some_and(|m| m.contains("job.create")));
    let (code, json) = start(vec![("authorization", bearer.clone())]).await;
    assert_eq!(code, 201, "{json}");
    let batch = Uuid::parse_str(json["batchId"].as_str().expect("batchId")).expect("uuid");
    assert_eq!(batch.get_version_num(), 4);
    // Running (or, on a fast machine, already done with nothing left):
    // either way the gallery's answer is 400.
    let (code, json) = start(vec![("x-api-key", all.clone())]).await;
    assert_eq!(code, 400, "{json}");
    app.wait_idle().await;
    let (code, json) = start(vec![("x-api-key", all.clone())]).await;
    assert_eq!(code, 400, "nothing left: {json}");
    assert_eq!(json["code"], "nothing_to_migrate");

    // Rollback: v4 ids only; an unknown batch reverts nothing.
    let (code, json) = api(
        &app,
        "POST",
        "rollback/0193e5d2-0000-7000-8000-000000000000",
        &[("x-api-key", &all)],
    )
    .await;
    assert_eq!(code, 400, "{json}");
    let (code, json) = api(
        &app,
        "POST",
        &format!("rollback/{}", Uuid::new_v4()),
        &[("x-api-key", &all)],
    )
    .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["total"], 0);
    let (code, json) = api(
        &app,
        "POST",
        &format!("rollback/{batch}"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["rolledBack"], env.seeded.files.len() as i64, "{json}");
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }

    // The native routes stay open without a token of ours.
    let (code, _) = app
        .call("GET", "/storage-migration/status", None, &[])
        .await;
    assert_eq!(code, 200);
}

#[actix_rt::test]
async fn a_token_of_ours_and_the_gallerys_credentials_side_by_side() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    let token = "a-long-enough-test-token";
    vars.insert("NOODLE_MIGRATE_API_TOKEN".into(), token.into());
    let app = env.spawn(vars).await;
    let all = admin_key(&env, &["all"]).await;
    let read = key_of(&env, env.seeded.users[0], &["job.read"]).await;
    let not_admin = key_of(&env, env.seeded.users[1], &["all"]).await;
    let bearer = format!("Bearer {token}");
    for (path, headers, expected) in [
        ("/storage-migration/status", vec![], 401),
        (
            "/storage-migration/status",
            vec![("x-api-key", all.as_str())],
            200,
        ),
        (
            "/storage-migration/status",
            vec![("x-api-key", not_admin.as_str())],
            403,
        ),
        (
            "/storage-migration/status",
            vec![("authorization", bearer.as_str())],
            200,
        ),
        (
            "/api/storage-migration/status",
            vec![("authorization", bearer.as_str())],
            200,
        ),
        ("/metrics", vec![("x-api-key", read.as_str())], 200),
        ("/healthz", vec![], 200),
    ] {
        let (code, json) = app.call("GET", path, None, &headers).await;
        assert_eq!(code, expected, "{path} {headers:?}: {json}");
    }
    let (code, json) = app
        .call(
            "POST",
            "/storage-migration/cancel",
            Some(""),
            &[("x-api-key", &read)],
        )
        .await;
    assert_eq!(code, 403, "a write needs job.create: {json}");
    assert_eq!(json["error"], "forbidden");

    // Without the gallery's tables, only our token opens the door.
    env.db
        .batch_execute("DROP TABLE api_key; DROP TABLE session")
        .await
        .expect("drop");
    let (code, _) = app
        .call(
            "GET",
            "/api/storage-migration/status",
            None,
            &[("x-api-key", &all)],
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = app
        .call(
            "GET",
            "/api/storage-migration/status",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(code, 200);
}

#[actix_rt::test]
async fn rows_in_move_history_stop_a_start_unless_ignored() {
    let env = TestEnv::new(EnvOptions::default()).await;
    for n in 0..2 {
        env.db
            .execute(
                r#"INSERT INTO move_history ("entityId", "pathType", "oldPath", "newPath")
                   VALUES ($1, 'original', $2, $3)"#,
                &[&Uuid::new_v4(), &format!("/old/{n}"), &format!("/new/{n}")],
            )
            .await
            .expect("move_history");
    }
    let app = env.app("s3", "").await;
    let (code, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(json["error"], "gallery_moving_files");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 rows") && message.contains("ignoreMoveHistory"),
        "{message}"
    );
    // The command line says the same and takes the flag.
    let vars = env.vars("s3", "");
    let kinds = ["--file-types", "profileImages"];
    let out = cli(
        &vars,
        &[&["run", "--direction", "toS3"][..], &kinds[..]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ignore-move-history"));
    let out = cli(
        &vars,
        &[
            &["run", "--direction", "toS3", "--ignore-move-history"][..],
            &kinds[..],
        ]
        .concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","ignoreMoveHistory":true}"#)
        .await;
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64 - env.seeded.of_kind(FileKind::ProfileImages).count() as i64,
        "{status}"
    );
}

#[actix_rt::test]
async fn external_files_the_gallery_sent_to_s3_are_reported_on_the_way_back() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // The gallery's own tool sent external-library files to S3 (it strips
    // the leading slash), and one file of the media location.
    let batch = Uuid::new_v4();
    for file in &env.seeded.external {
        let key = file.path.trim_start_matches('/').to_string();
        env.put_object(&key, &file.content).await;
        env.set_path(file.kind, file.row_id, &key).await;
    }
    let normal = env
        .seeded
        .of_kind(FileKind::Previews)
        .next()
        .expect("preview")
        .clone();
    gallery_moves(&env, &normal, batch).await;

    let app = env.app("disk", "").await;
    let (code, estimate) = app
        .get("/storage-migration/estimate?direction=toDisk")
        .await;
    assert_eq!(code, 200, "{estimate}");
    assert_eq!(estimate["fileCounts"]["total"], 1);
    assert_eq!(estimate["unmovable"], env.seeded.external.len() as i64);
    let (_, status) = app.migrate(r#"{"direction":"toDisk"}"#).await;
    assert_eq!(status["completed"], 1, "{status}");
    assert_eq!(
        status["failureReasons"]["external_library"],
        env.seeded.external.len() as i64,
        "{status}"
    );
    for file in &env.seeded.external {
        let key = file.path.trim_start_matches('/');
        assert_eq!(env.current_path(file.kind, file.row_id).await, key);
    }
    assert_eq!(
        env.current_path(normal.kind, normal.row_id).await,
        normal.path
    );
}

#[actix_rt::test]
async fn a_stale_file_on_disk_is_replaced_on_the_way_back() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let kinds = only(&[FileKind::Sidecars, FileKind::PersonThumbnails]);
    app.migrate(&format!(r#"{{"direction":"toS3","fileTypes":{kinds}}}"#))
        .await;
    // The disk copies stayed; one was edited since, one is now also the
    // path of another row.
    let mut moved = env
        .seeded
        .files
        .iter()
        .filter(|f| matches!(f.kind, FileKind::Sidecars | FileKind::PersonThumbnails));
    let stale = moved.next().expect("a file").clone();
    let used = moved.next().expect("another").clone();
    std::fs::write(&stale.path, b"edited after the migration").expect("edit");
    std::fs::write(&used.path, b"someone else's file").expect("edit");
    env.db
        .execute(
            r#"INSERT INTO person ("ownerId", "name", "thumbnailPath") VALUES ($1, 'Other', $2)"#,
            &[&env.seeded.users[0], &used.path],
        )
        .await
        .expect("a row pointing at it");

    let app = env.app("disk", "").await;
    let (_, status) = app.migrate(r#"{"direction":"toDisk"}"#).await;
    assert_eq!(status["replaced"], 1, "{status}");
    assert_eq!(status["failureReasons"]["target_in_use"], 1, "{status}");
    assert_eq!(env.current_path(stale.kind, stale.row_id).await, stale.path);
    assert_eq!(std::fs::read(&stale.path).expect("file"), stale.content);
    assert_eq!(
        std::fs::read(&used.path).expect("file"),
        b"someone else's file",
        "never overwritten"
    );
    assert_ne!(env.current_path(used.kind, used.row_id).await, used.path);
}

/// The gallery, switched to S3, writes its own object at the very key the
/// engine is about to upload a file to (it regenerates thumbnails and
/// previews at the same relative keys), and points the file's row there.
/// Its object survives byte for byte, and no log row claims a move that
/// never happened.
#[actix_rt::test]
async fn an_object_the_gallery_writes_at_a_target_key_during_a_run_is_its_own() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // The run's pages go in row order: the last original comes last of
    // its page, which the run has read once its first file is done.
    let file = env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Originals)
        .max_by_key(|f| f.row_id)
        .cloned()
        .expect("an original");
    let key = file.relative(env.media_path());
    // A slow server: seconds between the first file and that one.
    let proxy = crate::faults::FaultProxy::slow(
        &crate::helpers::s3_endpoint(),
        std::time::Duration::from_millis(150),
    )
    .await;
    let mut vars = env.vars("s3", "");
    vars.insert("S3_ENDPOINT".into(), proxy.endpoint.clone());
    let app = env.spawn(vars).await;
    let batch = app.start(r#"{"direction":"toS3","concurrency":1}"#).await;
    loop {
        let (_, status) = app.get("/storage-migration/status").await;
        assert_eq!(status["isActive"], true, "still running: {status}");
        if status["completed"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let theirs = b"the gallery's own new thumbnail".to_vec();
    env.put_object(&key, &theirs).await;
    env.db
        .execute(
            r#"UPDATE asset SET "originalPath" = $2 WHERE id = $1"#,
            &[&file.row_id, &key],
        )
        .await
        .expect("the gallery points its row at its object");

    let status = app.wait_idle().await;
    let survived = env.object(&key).await.is_some_and(|o| o == theirs);
    assert!(survived, "the gallery's object was overwritten: {status}");
    assert_eq!(
        env.current_path(FileKind::Originals, file.row_id).await,
        key
    );
    let table = env.log_table().await;
    let claimed = env
        .count(&format!(
            r#"SELECT count(*) FROM {table} WHERE "batchId" = '{batch}' AND "entityId" = '{}'"#,
            file.entity_id
        ))
        .await;
    assert_eq!(
        claimed, 0,
        "no log row for the gallery's own write: {status}"
    );
    let reason = env
        .db
        .query_one(
            "SELECT reason FROM noodle_migrate_failure WHERE entity_id = $1 AND kind = 'originals'",
            &[&file.entity_id],
        )
        .await
        .expect("the file is reported, not counted as moved")
        .get::<_, String>(0);
    assert!(
        ["target_in_use", "row_changed"].contains(&reason.as_str()),
        "{reason}"
    );
}
