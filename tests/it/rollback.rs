//! Rollback: paths come back, the log goes only when everything reverted.

use crate::helpers::{EnvOptions, TestEnv};

#[actix_rt::test]
async fn rollback_restores_every_path_and_deletes_the_log() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (batch, _) = app.migrate(r#"{"direction":"toS3"}"#).await;
    let n = env.seeded.files.len() as i64;

    let (code, json) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["rolledBack"], n);
    assert_eq!(json["failed"], 0);
    assert_eq!(json["total"], n);
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
    let left = env.log_rows(batch).await;
    assert_eq!(left, 0);
    // Rollback never touches files: the objects are still there.
    assert_eq!(env.keys().await.len() as i64, n);
    // The same batch again is unknown to the log but known to us: nothing to do.
    let (code, json) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["total"], 0);
}

#[actix_rt::test]
async fn a_row_changed_after_the_migration_is_reported_and_the_log_kept() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (batch, _) = app.migrate(r#"{"direction":"toS3"}"#).await;
    let n = env.seeded.files.len() as i64;
    let changed = &env.seeded.files[5];
    env.set_path(
        changed.kind,
        changed.row_id,
        "upload/changed-by-the-gallery.jpg",
    )
    .await;

    let (code, json) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["rolledBack"], n - 1);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["total"], n);
    assert_eq!(
        env.current_path(changed.kind, changed.row_id).await,
        "upload/changed-by-the-gallery.jpg"
    );
    let left = env.log_rows(batch).await;
    assert_eq!(left, n, "the log is kept for debugging");

    // Once the row is put back, a second rollback completes and clears the log.
    env.set_path(
        changed.kind,
        changed.row_id,
        &changed.relative(env.media_path()),
    )
    .await;
    let (_, json) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["rolledBack"], n);
    for file in &env.seeded.files {
        assert_eq!(env.current_path(file.kind, file.row_id).await, file.path);
    }
}

#[actix_rt::test]
async fn a_batch_written_by_the_gallery_itself_rolls_back() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    // The gallery's built-in tool moved one encoded video and one sidecar.
    let batch = uuid::Uuid::new_v4();
    let video = env
        .seeded
        .of_kind(noodle_migrate::model::FileKind::EncodedVideos)
        .next()
        .expect("video")
        .clone();
    let relative = video.relative(env.media_path());
    env.set_path(video.kind, video.row_id, &relative).await;
    env.db
        .execute(
            r#"INSERT INTO storage_migration_log ("entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
               VALUES ('asset', $1, 'encodedVideo', $2, $3, 'toS3', $4)"#,
            &[&video.entity_id, &video.path, &relative, &batch],
        )
        .await
        .expect("gallery log row");
    let (code, json) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["rolledBack"], 1);
    assert_eq!(env.current_path(video.kind, video.row_id).await, video.path);
}
