//! Metrics, dashboard and alert rules: the engine's /metrics passes
//! `promtool check metrics` and agrees with the database after a real run;
//! the rules pass their promtool tests; the dashboard and the rules name
//! only metrics the engine exports.

use crate::helpers::{EnvOptions, TestEnv};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn dashboards() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn promtool() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("promtool").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "promtool not found: `make test` installs it (Debian package prometheus)"
    );
    Command::new("promtool")
}

/// Sum of the samples of `name` whose labels contain every `filters` pair.
fn sum(text: &str, name: &str, filters: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = filters
                .iter()
                .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every `noodle_migrate_…` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("noodle_migrate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[actix_rt::test]
async fn metrics_after_a_real_migration_match_the_database() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let (batch, _) = app.migrate(r#"{"direction":"toS3"}"#).await;
    let text = app.metrics().await;

    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let logged = env.log_rows(batch).await as f64;
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_files_total",
            &[("outcome", "completed")]
        ),
        logged
    );
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_files_total",
            &[("outcome", "skipped")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_file_skips_total",
            &[("reason", "outside_media_location")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_files_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    assert_eq!(sum(&text, "noodle_migrate_file_failures_total", &[]), 0.0);
    for kind in noodle_migrate::model::FileKind::ALL {
        let expected = env.seeded.of_kind(kind).count() as f64;
        let k = kind.api_key();
        assert_eq!(
            sum(
                &text,
                "noodle_migrate_files_total",
                &[("kind", k), ("outcome", "completed")]
            ),
            expected
        );
        assert_eq!(
            sum(&text, "noodle_migrate_files_planned", &[("kind", k)]),
            expected
        );
        let bytes: usize = env.seeded.of_kind(kind).map(|f| f.content.len()).sum();
        assert_eq!(
            sum(&text, "noodle_migrate_bytes_moved_total", &[("kind", k)]),
            bytes as f64
        );
    }
    assert_eq!(sum(&text, "noodle_migrate_migration_active", &[]), 0.0);
    assert_eq!(sum(&text, "noodle_migrate_jobs", &[]), 0.0);
    assert!(
        sum(
            &text,
            "noodle_migrate_last_migration_finished_timestamp_seconds",
            &[]
        ) > 0.0
    );
    assert_eq!(
        sum(&text, "noodle_migrate_ledger_batch_size_sum", &[]),
        logged + 1.0
    );
    assert!(
        sum(
            &text,
            "noodle_migrate_ledger_commit_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_file_copy_duration_seconds_count",
            &[("direction", "toS3")]
        ),
        logged
    );
    assert!(
        !text.contains(&env.bucket) && !text.contains(env.media_path().to_str().unwrap_or("/"))
    );

    let (code, _) = app
        .post(&format!("/storage-migration/rollback/{batch}"), "")
        .await;
    assert_eq!(code, 200);
    let text = app.metrics().await;
    assert_eq!(
        sum(
            &text,
            "noodle_migrate_rollbacks_total",
            &[("outcome", "complete")]
        ),
        1.0
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = promtool()
            .args(args)
            .current_dir(dashboards())
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[actix_rt::test]
async fn dashboard_and_rules_use_only_exported_metrics() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let app = env.app("s3", "").await;
    let exported_text = app.metrics().await;
    let exported: BTreeSet<String> = exported_text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| exported.contains(base))
            })
    };

    let dashboard_text =
        std::fs::read_to_string(dashboards().join("noodle-migrate.json")).expect("dashboard");
    let mut used = metric_names(&dashboard_text);
    assert!(
        used.len() >= 10,
        "the dashboard uses {} metrics",
        used.len()
    );
    for file in ["alerts.yml", "alerts.test.yml"] {
        used.extend(metric_names(
            &std::fs::read_to_string(dashboards().join(file)).expect("rules"),
        ));
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !known(n)).collect();
    assert!(unknown.is_empty(), "named but not exported: {unknown:?}");

    // The dashboard is importable and provisionable as it is.
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).expect("valid JSON");
    assert!(!dashboard_text.contains("DS_PROMETHEUS"));
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(vars
        .iter()
        .any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} has a description"
        );
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title} has a unit"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
            }
        }
    }
}

/// A loopback webhook: answers 500 to the first `failures` requests, 204
/// after, and hands over each accepted request's target and JSON body.
pub async fn webhook_receiver(
    failures: usize,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        let mut answered = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then as many bytes as Content-Length says.
            let body_at = loop {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(body_at) = body_at else { continue };
            let head = String::from_utf8_lossy(&request[..body_at]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while request.len() < body_at + length {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let status = if answered < failures {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            answered += 1;
            let _ = socket
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            if status.starts_with("204") {
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let body =
                    serde_json::from_slice(&request[body_at..]).unwrap_or(serde_json::Value::Null);
                let _ = tx.send((target, body));
            }
        }
    });
    (port, rx)
}

/// When a run ends, its final status reaches the webhook once, with the
/// final counts, though the first delivery fails; the URL's secret goes
/// with the request, as the receiver expects.
#[actix_rt::test]
async fn the_end_of_a_run_is_posted_to_the_webhook() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let (port, mut deliveries) = webhook_receiver(1).await;
    let mut vars = env.vars("s3", "");
    vars.insert(
        "NOODLE_MIGRATE_WEBHOOK_URL".into(),
        format!("http://127.0.0.1:{port}/hooks/migration?token=s3cr3t"),
    );
    let app = env.spawn(vars).await;
    let (batch, status) = app.migrate(r#"{"direction":"toS3"}"#).await;
    let (target, body) =
        tokio::time::timeout(std::time::Duration::from_secs(30), deliveries.recv())
            .await
            .expect("the run's end is delivered within 30 s")
            .expect("a delivery");
    assert_eq!(target, "/hooks/migration?token=s3cr3t");
    assert_eq!(body["batchId"], batch.to_string());
    assert_eq!(body["isActive"], false);
    assert_eq!(body["state"], "completed");
    assert_eq!(body["completed"], status["completed"]);
    assert_eq!(body["completed"], env.seeded.files.len() as i64);
    assert_eq!(body["failed"], 0);
    // One run end, one delivery.
    let again = tokio::time::timeout(std::time::Duration::from_secs(3), deliveries.recv()).await;
    assert!(again.is_err(), "a second delivery: {again:?}");
}
