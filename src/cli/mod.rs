//! The command-line front: commands that talk to a running engine over its
//! API, and `run`, which runs a whole migration in this process. Every
//! command ends with an exit status: 0 when everything moved, 1 when some
//! files failed (or the engine refused), 2 for usage or configuration
//! errors.

pub mod client;
pub mod dumps;
pub mod progress;

use crate::config::Config;
use crate::engine::{Engine, StartOptions};
use crate::model::{Direction, FileKind};
use client::{ApiClient, ClientError};
use serde_json::{json, Value};
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

/// What `start` and `run` were asked to do.
#[derive(Debug, Clone)]
pub struct MigrateArgs {
    pub direction: Direction,
    pub delete_source: bool,
    pub concurrency: u8,
    pub kinds: Vec<FileKind>,
    pub verify: bool,
    pub dump_database: bool,
    pub ignore_move_history: bool,
}

impl MigrateArgs {
    fn body(&self) -> Value {
        let file_types: serde_json::Map<String, Value> = FileKind::ALL
            .iter()
            .map(|k| (k.api_key().to_string(), self.kinds.contains(k).into()))
            .collect();
        json!({
            "direction": self.direction,
            "deleteSource": self.delete_source,
            "concurrency": self.concurrency,
            "fileTypes": file_types,
            "verify": self.verify,
            "dumpDatabase": self.dump_database,
            "ignoreMoveHistory": self.ignore_move_history,
        })
    }
}

/// Parses `originals,thumbnails,…` (for clap).
pub fn parse_kinds(value: &str) -> Result<Vec<FileKind>, String> {
    let mut kinds = Vec::new();
    for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let kind = FileKind::from_api_key(key).ok_or_else(|| {
            let known: Vec<&str> = FileKind::ALL.iter().map(|k| k.api_key()).collect();
            format!(
                "unknown file type {key:?}; expected some of {}",
                known.join(",")
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err("select at least one file type".into());
    }
    kinds.sort();
    Ok(kinds)
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
pub(crate) fn show(
    answer: Result<Value, ClientError>,
    as_json: bool,
    text: impl FnOnce(&Value),
) -> Result<Value, Exit> {
    let value = answer.map_err(report)?;
    if as_json {
        print_json(&value);
    } else {
        text(&value);
    }
    Ok(value)
}

/// The exit status of a command that only shows an answer.
pub(crate) fn exit_of(shown: Result<Value, Exit>) -> Exit {
    match shown {
        Err(exit) => exit,
        Ok(_) => Exit::Ok,
    }
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

pub async fn estimate(client: &ApiClient, direction: Direction, as_json: bool) -> Exit {
    let answer = client
        .get(&format!(
            "/storage-migration/estimate?direction={direction}"
        ))
        .await;
    exit_of(show(answer, as_json, progress::print_estimate))
}

pub async fn start(client: &ApiClient, args: &MigrateArgs, wait: bool, as_json: bool) -> Exit {
    let reply = match client
        .post("/storage-migration/start", Some(args.body()))
        .await
    {
        Err(e) => return report(e),
        Ok(v) => v,
    };
    if !wait {
        if as_json {
            print_json(&reply);
        } else {
            let verb = if reply["resumed"] == true {
                "Resumed"
            } else {
                "Started"
            };
            println!("{verb} batch {}", reply["batchId"].as_str().unwrap_or("?"));
            if let Some(name) = reply["dumpName"].as_str() {
                println!("Database dumped to {name}");
            }
        }
        return Exit::Ok;
    }
    watch(client, as_json).await
}

pub async fn status(client: &ApiClient, follow: bool, as_json: bool) -> Exit {
    if follow {
        return watch(client, as_json).await;
    }
    let answer = client.get("/storage-migration/status").await;
    exit_of(show(answer, as_json, progress::print_summary))
}

/// Follows the run with a progress bar until it ends.
async fn watch(client: &ApiClient, as_json: bool) -> Exit {
    let bar = progress::Bar::new(!as_json);
    loop {
        let status = match client.get("/storage-migration/status").await {
            Err(e) => {
                bar.finish();
                return report(e);
            }
            Ok(v) => v,
        };
        bar.update(&status);
        if status["isActive"] != true {
            bar.finish();
            return finish(&status, as_json);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn finish(status: &Value, as_json: bool) -> Exit {
    if as_json {
        print_json(status);
    } else {
        progress::print_summary(status);
    }
    let failed = status["failed"].as_i64().unwrap_or(0) > 0;
    let stopped = matches!(status["state"].as_str(), Some("failed" | "cancelled"));
    if failed || stopped {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

pub async fn rollback(client: &ApiClient, batch_id: uuid::Uuid, as_json: bool) -> Exit {
    let answer = client
        .post(&format!("/storage-migration/rollback/{batch_id}"), None)
        .await;
    let text = |v: &Value| {
        println!(
            "Rolled back {} of {} paths; {} rows changed since and were left alone.",
            v["rolledBack"], v["total"], v["failed"]
        )
    };
    match show(answer, as_json, text) {
        Err(exit) => exit,
        Ok(v) if v["failed"].as_i64().unwrap_or(0) > 0 => Exit::Failed,
        Ok(_) => Exit::Ok,
    }
}

pub async fn cancel(client: &ApiClient, as_json: bool) -> Exit {
    let answer = client.post("/storage-migration/cancel", None).await;
    let text = |v: &Value| {
        println!(
            "Cancelling batch {}: the files in flight finish first.",
            v["batchId"].as_str().unwrap_or("?")
        )
    };
    exit_of(show(answer, as_json, text))
}

/// Files and objects no row points at; exits 1 when there are any.
pub async fn orphans(client: &ApiClient, limit: u32, as_json: bool) -> Exit {
    let answer = client
        .get(&format!("/storage-migration/orphans?limit={limit}"))
        .await;
    let value = match answer {
        Ok(value) => value,
        Err(e) => return report(e),
    };
    let orphans: crate::engine::orphans::OrphanReport = match serde_json::from_value(value.clone())
    {
        Ok(orphans) => orphans,
        Err(e) => {
            eprintln!("noodle-migrate: the engine's orphan report cannot be read: {e}");
            return Exit::Failed;
        }
    };
    if as_json {
        print_json(&value);
    } else {
        progress::print_orphans(&orphans);
    }
    if orphans.orphans.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// A whole migration in this process, without a server. Ctrl-C or SIGTERM
/// cancels it cleanly (the next run resumes).
pub async fn run(config: Config, args: &MigrateArgs, as_json: bool) -> Exit {
    let engine = match Engine::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("noodle-migrate: {e}");
            return Exit::Usage;
        }
    };
    let options = StartOptions {
        direction: args.direction,
        delete_source: args.delete_source,
        concurrency: args.concurrency,
        kinds: args.kinds.clone(),
        verify: args.verify,
        retry_failed_of: None,
        dump_database: args.dump_database,
        ignore_move_history: args.ignore_move_history,
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
    loop {
        let status = match engine.status().await {
            Ok(s) => serde_json::to_value(s).unwrap_or(Value::Null),
            Err(e) => {
                bar.finish();
                eprintln!("noodle-migrate: {e}");
                return Exit::Failed;
            }
        };
        bar.update(&status);
        if status["isActive"] != true {
            bar.finish();
            return finish(&status, as_json);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = &mut interrupted => {
                eprintln!("noodle-migrate: stopping; the files in flight finish first");
                engine.shutdown(engine.config().shutdown_deadline).await;
                // The signal has fired: it is not waited on again. The run
                // either ended within the deadline or is left to resume.
                let status = engine.status().await.map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
                bar.finish();
                return match status {
                    Ok(status) if status["isActive"] != true => finish(&status, as_json),
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
