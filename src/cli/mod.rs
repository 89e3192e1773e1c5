//! The command-line front: commands that talk to a running engine over its
//! API, and `run`, which runs a whole migration in this process. Every
//! command ends with an exit status: 0 when everything moved, 1 when some
//! files failed (or the engine refused), 2 for usage or configuration
//! errors.

pub mod client;
pub mod dumps;
pub mod progress;

use crate::config::Config;
use crate::db::rollback::RollbackReport;
use crate::engine::options::{FileTypes, RunChange};
use crate::engine::orphans::OrphanReport;
use crate::engine::stats::StatusView;
use crate::engine::{Engine, StartOptions};
use crate::http::bodies::{Cancelling, EstimateBody, Started};
use crate::model::{BatchState, Direction, FileKind};
use client::{ApiClient, ClientError};
use serde::Serialize;
use std::time::Duration;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failed,
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
        }
    }
}

/// Parses `originals,thumbnails,…` (for clap).
pub fn parse_file_types(value: &str) -> Result<FileTypes, String> {
    let mut kinds = Vec::new();
    for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let kind = FileKind::from_api_key(key).ok_or_else(|| {
            format!(
                "unknown file type {key:?}; expected some of {}",
                FileKind::API_KEYS.join(",")
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err("select at least one file type".into());
    }
    Ok(FileTypes::only(&kinds))
}

pub(crate) fn report(err: ClientError) -> Exit {
    eprintln!("noodle-migrate: {err}");
    if err.is_usage() {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// An engine's answer, printed as JSON or as text; a refusal is reported
/// and becomes the command's exit status.
pub(crate) fn show<T: Serialize>(
    answer: Result<T, ClientError>,
    as_json: bool,
    text: impl FnOnce(&T),
) -> Result<T, Exit> {
    let value = answer.map_err(report)?;
    if as_json {
        print_json(&value);
    } else {
        text(&value);
    }
    Ok(value)
}

/// The exit status of a command that only shows an answer.
pub(crate) fn exit_of<T>(shown: Result<T, Exit>) -> Exit {
    match shown {
        Err(exit) => exit,
        Ok(_) => Exit::Ok,
    }
}

pub(crate) fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("noodle-migrate: cannot print the answer: {e}"),
    }
}

pub async fn estimate(client: &ApiClient, direction: Direction, as_json: bool) -> Exit {
    let answer = client
        .get::<EstimateBody>(&format!(
            "/storage-migration/estimate?direction={direction}"
        ))
        .await;
    exit_of(show(answer, as_json, progress::print_estimate))
}

pub async fn start(client: &ApiClient, options: &StartOptions, wait: bool, as_json: bool) -> Exit {
    let answer = client
        .post::<Started>("/storage-migration/start", Some(&options.to_value()))
        .await;
    let text = |reply: &Started| {
        let verb = if reply.resumed { "Resumed" } else { "Started" };
        println!("{verb} batch {}", reply.batch_id);
        if let Some(name) = &reply.dump_name {
            println!("Database dumped to {name}");
        }
    };
    if wait {
        if let Err(e) = answer {
            return report(e);
        }
        return watch(client, as_json).await;
    }
    exit_of(show(answer, as_json, text))
}

pub async fn status(client: &ApiClient, follow: bool, as_json: bool) -> Exit {
    if follow {
        return watch(client, as_json).await;
    }
    let answer = client.get::<StatusView>("/storage-migration/status").await;
    exit_of(show(answer, as_json, progress::print_summary))
}

/// Follows the run with a progress bar until it ends.
async fn watch(client: &ApiClient, as_json: bool) -> Exit {
    let bar = progress::Bar::new(!as_json);
    loop {
        let status = match client.get::<StatusView>("/storage-migration/status").await {
            Err(e) => {
                bar.finish();
                return report(e);
            }
            Ok(v) => v,
        };
        bar.update(&status);
        if !status.is_active {
            bar.finish();
            return finish(&status, as_json);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn finish(status: &StatusView, as_json: bool) -> Exit {
    if as_json {
        print_json(status);
    } else {
        progress::print_summary(status);
    }
    let stopped = matches!(
        status.state,
        Some(BatchState::Failed | BatchState::Cancelled)
    );
    if status.failed > 0 || stopped {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

pub async fn rollback(client: &ApiClient, batch_id: uuid::Uuid, as_json: bool) -> Exit {
    let answer = client
        .post::<RollbackReport>(&format!("/storage-migration/rollback/{batch_id}"), None)
        .await;
    let text = |r: &RollbackReport| {
        println!(
            "Rolled back {} of {} paths; {} rows changed since and were left alone.",
            r.rolled_back, r.total, r.failed
        )
    };
    match show(answer, as_json, text) {
        Err(exit) => exit,
        Ok(r) if r.failed > 0 => Exit::Failed,
        Ok(_) => Exit::Ok,
    }
}

pub async fn cancel(client: &ApiClient, as_json: bool) -> Exit {
    let answer = client
        .post::<Cancelling>("/storage-migration/cancel", None)
        .await;
    let text = |c: &Cancelling| match c.batch_id {
        Some(id) => println!("Cancelling batch {id}: the files in flight finish first."),
        None => println!("Cancelling the start: it stops before its first file."),
    };
    exit_of(show(answer, as_json, text))
}

/// The dry run: every file a start would handle, and what it would do.
/// Text by default (one line per file, then the totals), or the server's
/// CSV or JSON as it streams. Exits 1 when some file would fail.
pub async fn plan(client: &ApiClient, direction: Direction, csv: bool, as_json: bool) -> Exit {
    use std::io::Write;
    let format = if csv && !as_json { "csv" } else { "json" };
    let path = format!("/storage-migration/plan?direction={direction}&format={format}");
    let mut out = std::io::stdout().lock();
    if csv || as_json {
        let streamed = client.stream(&path, |chunk| {
            let _ = out.write_all(chunk);
        });
        return match streamed.await {
            Ok(()) => Exit::Ok,
            Err(e) => report(e),
        };
    }
    // The JSON has one file per line, then a line with the totals.
    let mut pending = Vec::new();
    let mut summary: Option<serde_json::Value> = None;
    let streamed = client.stream(&path, |chunk| {
        pending.extend_from_slice(chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim().trim_end_matches(',');
            if line.starts_with("{\"kind\"") {
                if let Ok(row) = serde_json::from_str::<serde_json::Value>(line) {
                    let _ = writeln!(out, "{}", progress::plan_line(&row));
                }
            } else if line.starts_with("\"totals\"") {
                summary = serde_json::from_str(&format!("{{{line}")).ok();
            }
        }
    });
    if let Err(e) = streamed.await {
        return report(e);
    }
    let Some(summary) = summary else {
        eprintln!("noodle-migrate: the plan ended without its totals");
        return Exit::Failed;
    };
    progress::print_plan_totals(&summary["totals"]);
    if let Some(error) = summary["error"].as_str() {
        eprintln!("noodle-migrate: the plan stopped short: {error}");
        return Exit::Failed;
    }
    if summary["totals"]["fail"].as_i64().unwrap_or(0) > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// Changes the running migration's concurrency and/or bandwidth limit.
pub async fn set(client: &ApiClient, change: &RunChange, as_json: bool) -> Exit {
    let body = serde_json::to_value(change).unwrap_or_default();
    let answer = client
        .patch::<StatusView>("/storage-migration/run", &body)
        .await;
    exit_of(show(answer, as_json, progress::print_summary))
}

/// Pauses the running migration, or resumes it.
pub async fn pause(client: &ApiClient, pause: bool, as_json: bool) -> Exit {
    let path = if pause {
        "/storage-migration/pause"
    } else {
        "/storage-migration/resume"
    };
    let answer = client.post::<StatusView>(path, None).await;
    exit_of(show(answer, as_json, |s: &StatusView| {
        match s.state {
            Some(BatchState::Paused) => println!(
                "Paused batch {}: no new files; {} in flight finish.",
                s.batch_id.map(|b| b.to_string()).unwrap_or_default(),
                s.active
            ),
            _ => println!(
                "Batch {} goes on.",
                s.batch_id.map(|b| b.to_string()).unwrap_or_default()
            ),
        }
        progress::print_summary(s);
    }))
}

/// Files and objects no row points at; exits 1 when there are any.
pub async fn orphans(client: &ApiClient, limit: u32, as_json: bool) -> Exit {
    let answer = client
        .get::<OrphanReport>(&format!("/storage-migration/orphans?limit={limit}"))
        .await;
    match show(answer, as_json, progress::print_orphans) {
        Err(exit) => exit,
        Ok(report) if report.orphans.is_empty() => Exit::Ok,
        Ok(_) => Exit::Failed,
    }
}

/// A whole migration in this process, without a server. Ctrl-C or SIGTERM
/// cancels it cleanly (the next run resumes).
pub async fn run(config: Config, options: StartOptions, as_json: bool) -> Exit {
    let engine = match Engine::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("noodle-migrate: {e}");
            return Exit::Usage;
        }
    };
    match engine.start_migration(options).await {
        Err(e) => {
            eprintln!("noodle-migrate: {e}");
            return Exit::Failed;
        }
        Ok(reply) => {
            if let Some(name) = reply.dump_name {
                eprintln!("Database dumped to {name}");
            }
        }
    }
    let bar = progress::Bar::new(!as_json);
    let mut interrupted = Box::pin(crate::shutdown_signal());
    // The status is read every 250 ms for the bar, and at once when the run
    // closes: a run should not end up to a quarter second after its work.
    let mut closed = false;
    loop {
        let status = match engine.status().await {
            Ok(s) => s,
            Err(e) => {
                bar.finish();
                eprintln!("noodle-migrate: {e}");
                return Exit::Failed;
            }
        };
        bar.update(&status);
        if !status.is_active {
            bar.finish();
            // The process exits next: let the run's end reach the webhook.
            engine.settle(engine.config().shutdown_deadline).await;
            return finish(&status, as_json);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = engine.until_idle(), if !closed => closed = true,
            _ = &mut interrupted => {
                eprintln!("noodle-migrate: stopping; the files in flight finish first");
                engine.shutdown(engine.config().shutdown_deadline).await;
                // The signal has fired: it is not waited on again. The run
                // either ended within the deadline or is left to resume.
                let status = engine.status().await;
                bar.finish();
                return match status {
                    Ok(status) if !status.is_active => {
                        engine.settle(engine.config().shutdown_deadline).await;
                        finish(&status, as_json)
                    }
                    Ok(_) => {
                        eprintln!("noodle-migrate: files still in flight at the deadline; the next start resumes the batch");
                        Exit::Failed
                    }
                    Err(e) => {
                        eprintln!("noodle-migrate: {e}");
                        Exit::Failed
                    }
                };
            }
        }
    }
}
