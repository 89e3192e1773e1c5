//! Moving libraries: both directions, prefixes, adoption, idempotency,
//! concurrent changes.

use crate::helpers::{EnvOptions, TestEnv};
use crate::seed::{SeedSpec, SeededFile};
use noodle_migrate::model::FileKind;
use serde_json::Value;
use uuid::Uuid;

/// Every seeded file is in the bucket, byte for byte, its row holds the
/// relative path, and it has exactly one log row of this batch.
async fn assert_all_in_s3(env: &TestEnv, prefix: &str, batch: Uuid) {
    for file in &env.seeded.files {
        let relative = file.relative(env.media_path());
        let stored = env.stored_s3_path(prefix, &relative);
        assert_eq!(
            env.current_path(file.kind, file.row_id).await,
            stored,
            "{file:?}"
        );
        let object = env.object(&env.key(prefix, &relative)).await;
        assert!(
            object.as_deref() == Some(file.content.as_slice()),
            "object for {relative} differs"
        );
        assert_log_row(env, file, &file.path, &stored, "toS3", batch).await;
    }
}

async fn assert_log_row(
    env: &TestEnv,
    file: &SeededFile,
    old: &str,
    new: &str,
    direction: &str,
    batch: Uuid,
) {
    let table = env.log_table().await;
    let rows = env
        .db
        .query(
            &format!(
                r#"SELECT "entityType", "fileType", "oldPath", "newPath", "direction"
                   FROM {table} WHERE "batchId" = $1 AND "entityId" = $2 AND "newPath" = $3"#
            ),
            &[&batch, &file.entity_id, &new],
        )
        .await
        .expect("log rows");
    assert_eq!(rows.len(), 1, "one log row for {new}");
    let row = &rows[0];
    assert_eq!(row.get::<_, String>(0), file.kind.log_entity_type());
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        file.kind.log_file_type()
    );
    assert_eq!(row.get::<_, String>(2), old);
    assert_eq!(row.get::<_, String>(4), direction);
}

async fn assert_untouched(env: &TestEnv) {
    for file in env.seeded.external.iter().chain(&env.seeded.outside) {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        assert_eq!(
            std::fs::read(&file.path).expect("still on disk"),
            file.content
        );
    }
}

#[actix_rt::test]
async fn estimate_equals_the_truth() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (status, json) = app.get("/storage-migration/estimate?direction=toS3").await;
    assert_eq!(status, 200, "{json}");
    for kind in FileKind::ALL {
        let files: Vec<&SeededFile> = env.seeded.of_kind(kind).collect();
        assert_eq!(
            json["fileCounts"][kind.api_key()],
            files.len() as i64,
            "count of {kind}"
        );
        let bytes: usize = files.iter().map(|f| f.content.len()).sum();
        // Small kinds are sampled whole, so the "estimate" must be exact here.
        assert_eq!(
            json["estimatedSizeBytesByKind"][kind.api_key()],
            bytes as i64,
            "size of {kind}"
        );
    }
    assert_eq!(json["fileCounts"]["total"], env.seeded.files.len() as i64);
    let total: usize = env.seeded.files.iter().map(|f| f.content.len()).sum();
    assert_eq!(json["estimatedSizeBytes"], total as i64);
    assert_eq!(
        json["unmovable"], 1,
        "the stray original outside the media location"
    );

    let (status, json) = app
        .get("/storage-migration/estimate?direction=toDisk")
        .await;
    assert_eq!(status, 200);
    assert_eq!(json["fileCounts"]["total"], 0);
}

#[actix_rt::test]
async fn to_s3_moves_every_file_and_logs_it() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (batch, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(status["skipped"], 1, "the stray original: {status}");
    assert_eq!(status["failureReasons"]["outside_media_location"], 1);
    assert_eq!(status["waiting"], 0);
    assert_eq!(status["state"], "completed");
    let bytes: usize = env.seeded.files.iter().map(|f| f.content.len()).sum();
    assert_eq!(status["bytesMoved"], bytes as i64);
    assert!(status["finishedAt"].is_string());

    assert_all_in_s3(&env, "", batch).await;
    assert_untouched(&env).await;
    // Without deleteSource the disk copies stay.
    for file in &env.seeded.files {
        assert!(std::path::Path::new(&file.path).exists());
    }
    let logs = env
        .count("SELECT count(*) FROM storage_migration_log")
        .await;
    assert_eq!(logs, env.seeded.files.len() as i64);
    // Content-Type comes from the extension.
    let jpg = env
        .seeded
        .of_kind(FileKind::Previews)
        .next()
        .expect("a preview");
    let head = env
        .s3
        .head_object()
        .bucket(&env.bucket)
        .key(jpg.relative(env.media_path()))
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some("image/jpeg"));
    // The batch is recorded.
    let state = env.batch_state(batch).await;
    assert_eq!(state, "completed");

    // Running it again finds nothing to do, and changes nothing.
    let (code, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(json["error"], "nothing_to_migrate");
    assert_eq!(
        env.count("SELECT count(*) FROM storage_migration_log")
            .await,
        logs
    );
}

#[actix_rt::test]
async fn to_s3_with_a_prefix_and_no_log_table_yet() {
    let env = TestEnv::new(EnvOptions {
        gallery_log_table: false,
        ..Default::default()
    })
    .await;
    let app = env.app("s3", "gallery/media").await;
    let (batch, status) = app
        .migrate(r#"{"direction":"toS3","concurrency":20}"#)
        .await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    assert_all_in_s3(&env, "gallery/media", batch).await;
    assert!(env
        .keys()
        .await
        .iter()
        .all(|k| k.starts_with("gallery/media/")));
}

#[actix_rt::test]
async fn only_selected_kinds_move() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","fileTypes":{"originals":false,"thumbnails":false,"previews":true}}"#)
        .await;
    let expected = env
        .seeded
        .files
        .iter()
        .filter(|f| !matches!(f.kind, FileKind::Originals | FileKind::Thumbnails))
        .count();
    assert_eq!(status["completed"], expected as i64, "{status}");
    for file in env
        .seeded
        .of_kind(FileKind::Originals)
        .chain(env.seeded.of_kind(FileKind::Thumbnails))
    {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
}

#[actix_rt::test]
async fn a_prefilled_bucket_is_adopted_stale_copies_replaced_and_used_objects_kept() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // As `aws s3 sync` would leave it: every file, no metadata of ours,
    // one of them edited since (a stale copy), and one whose key a row of
    // the gallery already points at.
    let stale = &env.seeded.files[3];
    let in_use = &env.seeded.files[5];
    let altered = |file: &SeededFile| {
        let mut other = file.content.clone();
        other[0] ^= 0xff;
        other.extend_from_slice(b"edited");
        other
    };
    for file in &env.seeded.files {
        let key = file.relative(env.media_path());
        if file.row_id == stale.row_id || file.row_id == in_use.row_id {
            env.put_object(&key, &altered(file)).await;
        } else {
            env.put_object(&key, &file.content).await;
        }
    }
    let owner = env.seeded.users[0];
    env.db
        .execute(
            r#"INSERT INTO person ("ownerId", "name", "thumbnailPath") VALUES ($1, 'Shared', $2)"#,
            &[&owner, &in_use.relative(env.media_path())],
        )
        .await
        .expect("a row pointing at the object");
    let app = env.app("s3", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","fileTypes":{"personThumbnails":false}}"#)
        .await;
    let n = env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind != FileKind::PersonThumbnails)
        .count() as i64;
    assert_eq!(status["adopted"], n - 2, "{status}");
    assert_eq!(status["replaced"], 1, "{status}");
    assert_eq!(status["completed"], n - 1, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["failureReasons"]["target_in_use"], 1, "{status}");
    assert_eq!(
        status["bytesMoved"],
        stale.content.len() as i64,
        "only the stale copy is uploaded again"
    );
    assert_eq!(status["state"], "completed_with_failures");

    // The stale copy now holds the source, and its row points at it.
    let stale_key = stale.relative(env.media_path());
    assert_eq!(env.current_path(stale.kind, stale.row_id).await, stale_key);
    env.assert_whole(&stale_key, &stale.content).await;
    let replaced = app.metrics().await;
    assert!(
        replaced
            .lines()
            .any(|l| l.starts_with("noodle_migrate_files_replaced_total")
                && l.contains(&format!("kind=\"{}\"", stale.kind))
                && l.ends_with(" 1")),
        "replaced counted in /metrics"
    );

    // The object a row points at is untouched, and its file stays on disk.
    assert_eq!(
        env.current_path(in_use.kind, in_use.row_id).await,
        in_use.path
    );
    let object = env
        .object(&in_use.relative(env.media_path()))
        .await
        .expect("object");
    assert_eq!(object, altered(in_use));
    let reason: String = env
        .db
        .query_one(
            "SELECT reason FROM noodle_migrate_failure WHERE entity_id = $1",
            &[&in_use.entity_id],
        )
        .await
        .expect("failure row")
        .get(0);
    assert_eq!(reason, "target_in_use");
    // Adopted objects were not rewritten: they still lack our metadata.
    let head = env
        .s3
        .head_object()
        .bucket(&env.bucket)
        .key(env.seeded.files[0].relative(env.media_path()))
        .send()
        .await
        .expect("head");
    assert!(head
        .metadata()
        .is_none_or(|m| !m.contains_key("noodle-sha1")));
}

#[actix_rt::test]
async fn to_disk_with_delete_source_brings_everything_back() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let prefix = "p";
    let app = env.app("s3", prefix).await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","deleteSource":true}"#)
        .await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    for file in &env.seeded.files {
        assert!(
            !std::path::Path::new(&file.path).exists(),
            "source deleted after commit"
        );
    }
    assert_untouched(&env).await;
    // Back to a media location that does not even exist yet.
    std::fs::remove_dir_all(env.media_path()).expect("remove media");
    // With a prefix, the rows hold the second gallery's s3:// URLs.
    let url_file = &env.seeded.files[1];
    assert_eq!(
        env.current_path(url_file.kind, url_file.row_id).await,
        format!(
            "s3://{}/{prefix}/{}",
            env.bucket,
            url_file.relative(env.media_path())
        )
    );

    let app = env.app("disk", prefix).await;
    let (code, json) = app
        .get("/storage-migration/estimate?direction=toDisk")
        .await;
    assert_eq!(code, 200);
    assert_eq!(json["fileCounts"]["total"], env.seeded.files.len() as i64);
    let (batch, status) = app
        .migrate(r#"{"direction":"toDisk","deleteSource":true,"verify":true}"#)
        .await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    assert_eq!(status["failed"], 0, "{status}");
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
        assert_eq!(
            std::fs::read(&file.path).expect("back on disk"),
            file.content
        );
        let old = env.stored_s3_path(prefix, &file.relative(env.media_path()));
        assert_log_row(&env, file, &old, &file.path, "toDisk", batch).await;
    }
    assert!(
        env.keys().await.is_empty(),
        "objects removed: {:?}",
        env.keys().await
    );
    // No temporary files were left behind.
    let leftovers = walk(env.media_path())
        .into_iter()
        .filter(|p| p.contains(".noodle-tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[actix_rt::test]
async fn one_migration_at_a_time_even_across_processes() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 250,
            max_size: 2000,
        },
        ..Default::default()
    })
    .await;
    let app = env.app("s3", "").await;
    let other_process = env.app("s3", "").await;
    app.start(r#"{"direction":"toS3","concurrency":1}"#).await;
    let (code, json) = app
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(json["error"], "migration_running");
    let (code, json) = other_process
        .post("/storage-migration/start", r#"{"direction":"toS3"}"#)
        .await;
    assert_eq!(code, 409, "{json}");
    assert_eq!(json["error"], "migration_running");
    // The other engine sees the run in the batch table.
    let (_, seen) = other_process.get("/storage-migration/status").await;
    assert_eq!(seen["isActive"], true, "{seen}");
    let status = app.wait_idle().await;
    assert_eq!(
        status["completed"],
        env.seeded.files.len() as i64,
        "{status}"
    );
    assert_eq!(status["isActive"], false);
}

#[actix_rt::test]
async fn a_row_changed_during_the_run_is_skipped_and_stays_correct() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 1100,
            max_size: 1500,
        },
        ..Default::default()
    })
    .await;
    let app = env.app("s3", "").await;
    // The gallery re-uploads an original that sits late in the first page.
    let mut originals: Vec<&SeededFile> = env.seeded.of_kind(FileKind::Originals).collect();
    originals.sort_by_key(|f| f.row_id);
    let victim = originals[980];
    let replacement = format!(
        "{}/upload/replaced/new-original.jpg",
        env.media_path().display()
    );
    std::fs::create_dir_all(std::path::Path::new(&replacement).parent().expect("dir"))
        .expect("mkdir");
    std::fs::write(&replacement, b"a new upload").expect("write");

    let batch = app.start(r#"{"direction":"toS3","concurrency":1,"fileTypes":{"originals":true,"thumbnails":false,"previews":false,"fullsize":false,"sidecars":false,"encodedVideos":false,"personThumbnails":false,"profileImages":false}}"#).await;
    // Wait until the first page has been read, then change the row.
    for _ in 0..600 {
        let (_, s) = app.get("/storage-migration/status").await;
        if s["completed"].as_i64().unwrap_or(0) >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    env.set_path(FileKind::Originals, victim.row_id, &replacement)
        .await;
    let status = app.wait_idle().await;
    assert_eq!(status["failureReasons"]["row_changed"], 1, "{status}");
    assert_eq!(
        env.current_path(FileKind::Originals, victim.row_id).await,
        replacement
    );
    assert!(
        env.object(&victim.relative(env.media_path()))
            .await
            .is_none(),
        "the orphan copy was removed"
    );
    let logged = env
        .db
        .query(
            r#"SELECT 1 FROM storage_migration_log WHERE "batchId" = $1 AND "entityId" = $2"#,
            &[&batch, &victim.entity_id],
        )
        .await
        .expect("log");
    assert!(logged.is_empty(), "no log row for a skipped file");

    // A second run picks the new upload up.
    let (_, status) = app.migrate(r#"{"direction":"toS3","fileTypes":{"thumbnails":false,"previews":false,"fullsize":false,"sidecars":false,"encodedVideos":false,"personThumbnails":false,"profileImages":false}}"#).await;
    assert_eq!(status["completed"], 1, "{status}");
    assert_eq!(
        env.current_path(FileKind::Originals, victim.row_id).await,
        "upload/replaced/new-original.jpg"
    );
}

#[actix_rt::test]
async fn verify_refuses_a_corrupt_original() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let corrupt = env
        .seeded
        .of_kind(FileKind::Originals)
        .nth(2)
        .expect("original")
        .clone();
    let mut bytes = corrupt.content.clone();
    bytes[10] ^= 0x01;
    std::fs::write(&corrupt.path, &bytes).expect("corrupt");
    let app = env.app("s3", "").await;
    let (_, status) = app.migrate(r#"{"direction":"toS3","verify":true}"#).await;
    assert_eq!(status["failureReasons"]["checksum_mismatch"], 1, "{status}");
    assert_eq!(
        env.current_path(corrupt.kind, corrupt.row_id).await,
        corrupt.path
    );
    assert!(env
        .object(&corrupt.relative(env.media_path()))
        .await
        .is_none());
    let _: &Value = &status;
}

#[actix_rt::test]
async fn symlinks_out_of_the_media_location_are_refused() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let secret_dir = tempfile::tempdir().expect("dir");
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, b"not a photo").expect("write");
    // A file link and a folder link inside the media location, both leading out.
    let victim = env
        .seeded
        .of_kind(FileKind::Previews)
        .next()
        .expect("preview")
        .clone();
    let link = format!("{}/thumbs/link-to-secret.jpeg", env.media_path().display());
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    env.set_path(victim.kind, victim.row_id, &link).await;

    let app = env.app("s3", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toS3","deleteSource":true}"#)
        .await;
    assert_eq!(status["failureReasons"]["unsafe_path"], 1, "{status}");
    assert_eq!(env.current_path(victim.kind, victim.row_id).await, link);
    assert!(env.object("thumbs/link-to-secret.jpeg").await.is_none());
    assert!(secret.exists());

    // Back to disk: a row whose folder is a link out of the media location.
    let other = env
        .seeded
        .of_kind(FileKind::Thumbnails)
        .next()
        .expect("thumbnail")
        .clone();
    let escape = format!("{}/escape", env.media_path().display());
    std::os::unix::fs::symlink(secret_dir.path(), &escape).expect("symlink");
    env.put_object("escape/planted.jpeg", b"planted").await;
    env.set_path(other.kind, other.row_id, "escape/planted.jpeg")
        .await;
    let app = env.app("disk", "").await;
    let (_, status) = app.migrate(r#"{"direction":"toDisk"}"#).await;
    assert_eq!(status["failureReasons"]["unsafe_path"], 1, "{status}");
    assert!(
        !secret_dir.path().join("planted.jpeg").exists(),
        "nothing written outside"
    );
    assert_eq!(
        env.current_path(other.kind, other.row_id).await,
        "escape/planted.jpeg"
    );
}

#[actix_rt::test]
async fn a_gallery_writing_during_the_run_corrupts_nothing() {
    let env = TestEnv::new(EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 100,
            max_size: 3000,
        },
        ..Default::default()
    })
    .await;
    let app = env.app("s3", "").await;
    app.start(r#"{"direction":"toS3","concurrency":3}"#).await;

    // Meanwhile the gallery re-renders thumbnails (new files, new paths) and
    // accepts uploads, as fast as it can, until the run ends.
    let owner = env.seeded.users[0];
    let thumbs: Vec<SeededFile> = env.seeded.of_kind(FileKind::Thumbnails).cloned().collect();
    let mut rewritten: Vec<(SeededFile, String, Vec<u8>)> = Vec::new();
    let mut uploads: Vec<(Uuid, String, Vec<u8>)> = Vec::new();
    let mut i = 0;
    loop {
        let (_, s) = app.get("/storage-migration/status").await;
        if s["isActive"] == false {
            break;
        }
        if let Some(t) = thumbs.get(i * 3) {
            let path = format!(
                "{}/thumbs/rerendered/{}_thumbnail.webp",
                env.media_path().display(),
                t.row_id
            );
            let data = crate::seed::content(10_000 + i as u64, 900);
            std::fs::create_dir_all(std::path::Path::new(&path).parent().expect("dir"))
                .expect("mkdir");
            std::fs::write(&path, &data).expect("write");
            env.set_path(t.kind, t.row_id, &path).await;
            rewritten.push((t.clone(), path, data));
        }
        let id = Uuid::now_v7();
        let path = format!("{}/upload/{owner}/new/{id}.jpg", env.media_path().display());
        let data = crate::seed::content(20_000 + i as u64, 1500);
        env.insert_original(id, &path, &data).await;
        uploads.push((id, path, data));
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(i > 3, "the gallery wrote during the run ({i} rounds)");

    // Whatever each row says now, it points at a whole file.
    for file in &env.seeded.files {
        let current = env.current_path(file.kind, file.row_id).await;
        let expected = match rewritten.iter().find(|(t, _, _)| t.row_id == file.row_id) {
            Some((_, _, data)) => data.clone(),
            None => file.content.clone(),
        };
        env.assert_whole(&current, &expected).await;
    }
    for (id, _, data) in &uploads {
        let current = env.current_path(FileKind::Originals, *id).await;
        env.assert_whole(&current, data).await;
    }

    // A second run picks up what the first could not.
    let (_, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 0, "{status}");
    for (t, _, data) in &rewritten {
        let current = env.current_path(t.kind, t.row_id).await;
        assert!(!current.starts_with('/'), "moved on the second run");
        env.assert_whole(&current, data).await;
    }
    for (id, _, data) in &uploads {
        let current = env.current_path(FileKind::Originals, *id).await;
        assert!(!current.starts_with('/'));
        env.assert_whole(&current, data).await;
    }
}

#[actix_rt::test]
async fn a_missing_object_is_reported_as_source_missing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let file = env
        .seeded
        .of_kind(FileKind::Previews)
        .next()
        .expect("preview")
        .clone();
    env.set_path(file.kind, file.row_id, "thumbs/never-uploaded.jpeg")
        .await;
    let app = env.app("disk", "").await;
    let (_, status) = app
        .migrate(r#"{"direction":"toDisk","fileTypes":{"originals":false,"thumbnails":false,"fullsize":false,"sidecars":false,"encodedVideos":false,"personThumbnails":false,"profileImages":false}}"#)
        .await;
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["failureReasons"]["source_missing"], 1, "{status}");
    assert_eq!(
        env.current_path(file.kind, file.row_id).await,
        "thumbs/never-uploaded.jpeg"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"noodle_migrate_s3_request_errors_total{operation="GetObject"} 0"#));
}
