//! The orphan report: what no row points at, on disk and in the bucket,
//! and nothing else.

use crate::helpers::{EnvOptions, TestEnv};
use serde_json::Value;

fn listed(report: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = report["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| {
            (
                o["backend"].as_str().unwrap_or_default().to_string(),
                o["reason"].as_str().unwrap_or_default().to_string(),
                o["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[actix_rt::test]
async fn orphans_are_what_no_row_points_at() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "p").await;
    let (status, report) = app.get("/storage-migration/orphans").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(listed(&report), vec![], "a seeded gallery has none");
    assert_eq!(
        report["filesScanned"].as_u64(),
        Some(
            env.seeded
                .files
                .iter()
                .filter(|f| f.path.starts_with(&env.media_path().display().to_string()))
                .count() as u64
        )
    );

    let media = env.media_path();
    let dir = media.join("thumbs/x/ab/cd");
    std::fs::create_dir_all(&dir).expect("dir");
    let temp = dir.join(".a_preview.jpeg.noodle-tmp-0123456789abcdef");
    let stray = dir.join("b_preview.jpeg");
    std::fs::write(&temp, b"partial").expect("temp");
    std::fs::write(&stray, b"stray").expect("stray");
    // Not the gallery's folders: never reported.
    std::fs::create_dir_all(media.join("backups")).expect("backups");
    std::fs::write(media.join("backups/notes.txt"), b"x").expect("notes");
    std::os::unix::fs::symlink(&stray, dir.join("link.jpeg")).expect("link");
    env.put_object("p/upload/u/left.jpg", b"left").await;
    env.put_object("p/backups/immich-db-backup-1600000000000.sql.gz", b"x")
        .await;
    env.put_object("elsewhere/upload/u/left.jpg", b"x").await;

    // A migrated file is referenced under its new key.
    let (_, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    assert_eq!(status["failed"], 0, "{status}");

    let (status, report) = app.get("/storage-migration/orphans").await;
    assert_eq!(status, 200, "{report}");
    // Without deleteSource every moved file's source stays, on purpose.
    let root = media.display().to_string();
    let kept: Vec<(String, String, String)> = env
        .seeded
        .files
        .iter()
        .filter(|f| f.path.starts_with(&root))
        .map(|f| {
            (
                "disk".to_string(),
                "kept_source".to_string(),
                f.path.clone(),
            )
        })
        .collect();
    let mut expected = vec![
        (
            "disk".to_string(),
            "temp_file".to_string(),
            temp.display().to_string(),
        ),
        (
            "disk".to_string(),
            "unreferenced".to_string(),
            stray.display().to_string(),
        ),
        (
            "s3".to_string(),
            "unreferenced".to_string(),
            "p/upload/u/left.jpg".to_string(),
        ),
    ];
    expected.extend(kept.iter().cloned());
    expected.sort();
    assert_eq!(listed(&report), expected);
    assert_eq!(report["tempFiles"], 1);
    assert_eq!(report["unreferenced"], 2);
    assert_eq!(report["keptSources"], kept.len());
    assert_eq!(report["undeletedSources"], 0);

    let (status, report) = app.get("/storage-migration/orphans?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(report["orphans"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["truncated"], true);
    let (status, body) = app.get("/storage-migration/orphans?limit=0").await;
    assert_eq!(status, 400, "{body}");
}
