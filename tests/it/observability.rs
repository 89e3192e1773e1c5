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
