//! The dry run: the plan lists what a start then does, file for file, and
//! changes nothing.

use crate::helpers::{EnvOptions, TestEnv};
use crate::seed::SeededFile;
use noodle_migrate::model::FileKind;
use serde_json::Value;
use std::collections::HashMap;

#[actix_rt::test]
async fn the_plan_is_what_a_start_then_does() {
    let env = TestEnv::new(EnvOptions::default()).await;
    // A bucket an earlier sync half filled: identical copies (adopted),
    // one edited since (replaced), one whose key a row already points at
    // (target_in_use); one source gone from disk (source_missing); and
    // the fixture's original outside the media location (skipped).
    let files: Vec<&SeededFile> = env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind != FileKind::PersonThumbnails)
        .collect();
    let (stale, in_use, gone) = (files[3], files[5], files[7]);
    for file in files.iter().step_by(2) {
        let key = file.relative(env.media_path());
        let mut data = file.content.clone();
        if file.row_id == stale.row_id || file.row_id == in_use.row_id {
            data.extend_from_slice(b"edited");
        }
        env.put_object(&key, &data).await;
    }
    for file in [stale, in_use] {
        let key = file.relative(env.media_path());
        env.put_object(&key, &[file.content.as_slice(), b"edited"].concat())
            .await;
    }
    let owner = env.seeded.users[0];
    env.db
        .execute(
            r#"INSERT INTO person ("ownerId", "name", "thumbnailPath") VALUES ($1, 'Shared', $2)"#,
            &[&owner, &in_use.relative(env.media_path())],
        )
        .await
        .expect("a row pointing at the object");
    std::fs::remove_file(&gone.path).expect("remove a source");
    let app = env.app("s3", "").await;

    let keys_before = env.keys().await;
    let (code, plan) = app.get("/storage-migration/plan?direction=toS3").await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["error"], Value::Null, "{plan}");
    let rows = plan["files"].as_array().expect("files").clone();
    let action_of: HashMap<(String, String), (String, Value)> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["entityId"].as_str().unwrap().to_string(),
                ),
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["reason"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(action_of.len(), rows.len(), "one row per file");
    let of = |f: &SeededFile| {
        action_of
            .get(&(f.kind.api_key().to_string(), f.entity_id.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("{} {} is not in the plan", f.kind, f.path))
    };
    assert_eq!(of(stale).0, "replace");
    assert_eq!(of(in_use), ("fail".into(), "target_in_use".into()));
    assert_eq!(of(gone), ("fail".into(), "source_missing".into()));
    assert_eq!(of(files[0]).0, "adopt");
    assert_eq!(of(files[1]).0, "copy");
    for outside in &env.seeded.outside {
        assert_eq!(
            of(outside),
            ("skip".into(), "outside_media_location".into())
        );
    }
    // The totals, and the estimate.
    let totals = &plan["totals"];
    assert_eq!(
        totals["files"].as_u64(),
        Some(rows.len() as u64),
        "{totals}"
    );
    let (_, estimate) = app.get("/storage-migration/estimate?direction=toS3").await;
    assert_eq!(
        totals["files"].as_i64().unwrap(),
        estimate["fileCounts"]["total"].as_i64().unwrap() + estimate["unmovable"].as_i64().unwrap(),
        "{totals} {estimate}"
    );
    // CSV says the same, one line per file.
    let csv = reqwest::get(format!(
        "{}/storage-migration/plan?direction=toS3&format=csv",
        app.base
    ))
    .await
    .expect("csv")
    .text()
    .await
    .expect("csv body");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "kind,entityId,source,target,size,action,reason");
    assert_eq!(lines.len(), rows.len() + 1);
    let replace_line = lines
        .iter()
        .find(|l| l.contains(&stale.entity_id.to_string()))
        .expect("the stale file's line");
    assert!(replace_line.contains(",replace,"), "{replace_line}");
    // Nothing changed.
    assert_eq!(env.keys().await, keys_before);
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_batch").await,
        0
    );
    for f in &files {
        if f.row_id != gone.row_id {
            assert_eq!(env.current_path(f.kind, f.row_id).await, f.path);
        }
    }

    // The start does what the plan said, file for file.
    let (batch, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    let count = |action: &str| rows.iter().filter(|r| r["action"] == action).count() as i64;
    assert_eq!(status["adopted"], count("adopt"), "{status}");
    assert_eq!(status["replaced"], count("replace"), "{status}");
    assert_eq!(
        status["completed"],
        count("copy") + count("adopt") + count("replace"),
        "{status}"
    );
    assert_eq!(status["failed"], count("fail"), "{status}");
    assert_eq!(status["skipped"], count("skip"), "{status}");
    let unmoved = env
        .db
        .query(
            "SELECT kind, entity_id::text, reason FROM noodle_migrate_failure WHERE batch_id = $1",
            &[&batch],
        )
        .await
        .expect("failures");
    let mut planned_unmoved: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| r["action"] == "skip" || r["action"] == "fail")
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["entityId"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut done_unmoved: Vec<(String, String, String)> = unmoved
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    planned_unmoved.sort();
    done_unmoved.sort();
    assert_eq!(done_unmoved, planned_unmoved);
    for r in rows.iter().filter(|r| r["target"].is_string()) {
        let file = files
            .iter()
            .find(|f| f.entity_id.to_string() == r["entityId"] && f.kind.api_key() == r["kind"]);
        if let Some(file) = file {
            if r["action"] != "fail" {
                assert_eq!(
                    env.current_path(file.kind, file.row_id).await,
                    r["target"].as_str().unwrap(),
                    "{r}"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn a_bad_plan_request_says_what_is_wrong() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (code, json) = app.get("/storage-migration/plan").await;
    assert_eq!(
        (code, json["error"].as_str()),
        (400, Some("invalid_direction")),
        "{json}"
    );
    let (code, json) = app
        .get("/storage-migration/plan?direction=toS3&format=xml")
        .await;
    assert_eq!(
        (code, json["error"].as_str()),
        (400, Some("invalid_format")),
        "{json}"
    );
}
