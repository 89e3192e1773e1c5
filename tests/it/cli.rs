//! The command line: `run` in-process, and the client commands against a
//! running engine, with their exit statuses.

use crate::helpers::{EnvOptions, TestEnv};
use crate::resume::{free_port, spawn_binary};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Output};

pub fn cli(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noodle-migrate"))
        .args(args)
        .env_clear()
        .envs(vars)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run noodle-migrate")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[actix_rt::test]
async fn run_migrates_in_process_with_exit_statuses() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let vars = env.vars("s3", "");
    let missing = env.seeded.files[4].clone();
    std::fs::rename(&missing.path, format!("{}.away", missing.path)).expect("hide");

    let out = cli(
        &vars,
        &["run", "--direction", "toS3", "--concurrency", "8", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a file failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json_of(&out);
    assert_eq!(status["failed"], 1);
    assert_eq!(status["completed"], env.seeded.files.len() as i64 - 1);

    std::fs::rename(format!("{}.away", missing.path), &missing.path).expect("restore");
    let out = cli(&vars, &["run", "--direction", "toS3", "--file-types", "originals,thumbnails,previews,fullsize,sidecars,encodedVideos,personThumbnails,profileImages"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 completed"), "a text summary: {text}");
    for file in &env.seeded.files {
        assert_eq!(
            env.current_path(file.kind, file.row_id).await,
            file.relative(env.media_path())
        );
    }

    let mut broken = vars.clone();
    broken.remove("S3_BUCKET");
    let out = cli(&broken, &["run", "--direction", "toS3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("S3_BUCKET"));
    let out = cli(&vars, &["run", "--direction", "toS3", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[actix_rt::test]
async fn client_commands_drive_a_running_engine() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_API_TOKEN".into(),
        "cli-test-token-0123456789".into(),
    );
    let port = free_port();
    let (mut child, _) = spawn_binary(&vars, port).await;
    let mut client_vars: HashMap<String, String> = HashMap::new();
    client_vars.insert(
        "NOODLE_MIGRATE_SERVER".into(),
        format!("http://127.0.0.1:{port}"),
    );
    client_vars.insert(
        "NOODLE_MIGRATE_API_TOKEN".into(),
        "cli-test-token-0123456789".into(),
    );

    let files = env.seeded.files.len();
    let out = cli(&client_vars, &["estimate", "--direction", "toS3", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["fileCounts"]["total"], files as i64);
    let out = cli(&client_vars, &["estimate", "--direction", "toS3"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("Estimate for toS3:"), "{text}");
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap_or_default();
    assert_eq!(
        total.split_whitespace().nth(1),
        Some(files.to_string().as_str()),
        "{text}"
    );

    let out = cli(
        &client_vars,
        &[
            "start",
            "--direction",
            "toS3",
            "--dump-database",
            "--wait",
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json_of(&out);
    assert_eq!(status["completed"], env.seeded.files.len() as i64);
    let batch = status["batchId"].as_str().expect("batch").to_string();
    // The seeded row outside the media location.
    let skipped = status["skipped"].as_i64().expect("skipped");

    let out = cli(&client_vars, &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with(&format!("Batch {batch} (toS3): completed\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{files} completed (0 adopted, 0 replaced), 0 failed, {skipped} skipped, 0 waiting, 0 active"
        )),
        "{text}"
    );

    let out = cli(&client_vars, &["cancel"]);
    assert_eq!(out.status.code(), Some(1), "nothing to cancel is a refusal");

    // The sources were kept: the orphan report lists and counts them.
    let out = cli(&client_vars, &["orphans"]);
    assert_eq!(out.status.code(), Some(1), "orphans found");
    let text = String::from_utf8_lossy(&out.stdout);
    let kept = env.seeded.files.len();
    assert_eq!(
        text.lines().filter(|l| l.contains("kept_source")).count(),
        kept,
        "{text}"
    );
    assert!(text.contains(&format!("{kept} kept sources")), "{text}");

    let out = cli(&client_vars, &["rollback", &batch]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Rolled back {files} of {files} paths; 0 rows changed since and were left alone.")
    );

    // Moved again: every object is already there and is adopted.
    let out = cli(&client_vars, &["start", "--direction", "toS3"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let again = text
        .trim()
        .strip_prefix("Started batch ")
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert_ne!(again, batch);
    let out = cli(&client_vars, &["status", "--watch"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("Batch {again} (toS3): completed")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{files} completed ({files} adopted, 0 replaced)")),
        "{text}"
    );
    let out = cli(&client_vars, &["rollback", &again, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["rolledBack"], files as i64);

    // The start dumped the database first; dump again, list, delete.
    let out = cli(&client_vars, &["dump", "create"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with(&format!(
            "Dumped the database to s3://{}/backups/immich-db-backup-",
            env.bucket
        )),
        "{text}"
    );
    let out = cli(&client_vars, &["dump", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let listed = json_of(&out);
    let names: Vec<String> = listed["dumps"]
        .as_array()
        .expect("dumps")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    let out = cli(&client_vars, &["dump", "delete", &names[1]]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("Deleted {}", names[1])
    );
    let out = cli(&client_vars, &["dump", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("1 database dump on s3"), "{text}");
    assert!(text.contains(&names[0]), "{text}");
    let out = cli(&client_vars, &["dump", "delete", "../../etc/passwd"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refused name is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a database dump's name"));

    let mut no_token = client_vars.clone();
    no_token.remove("NOODLE_MIGRATE_API_TOKEN");
    let out = cli(&no_token, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing token is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOODLE_MIGRATE_API_TOKEN"));

    child.kill().ok();
    child.wait().ok();
}

/// `run` exits only once the run's end has reached the webhook (here after
/// a failed first delivery), not as soon as the status turns idle.
#[actix_rt::test]
async fn run_delivers_the_end_to_the_webhook_before_it_exits() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let (port, mut deliveries) = crate::observability::webhook_receiver(1).await;
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_WEBHOOK_URL".into(),
        format!("http://127.0.0.1:{port}/done"),
    );
    // Not `cli`: the receiver runs on this thread and must keep answering.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_noodle-migrate"))
        .args(["run", "--direction", "toS3", "--json"])
        .env_clear()
        .envs(&vars)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run noodle-migrate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json_of(&out);
    let (target, body) = deliveries
        .try_recv()
        .expect("delivered before the process exited");
    assert_eq!(target, "/done");
    assert_eq!(body["batchId"], status["batchId"]);
    assert_eq!(body["state"], "completed");
    assert_eq!(body["completed"], status["completed"]);
}
