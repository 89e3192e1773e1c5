//! The `noodle-migrate` binary: parses arguments and settings, then hands
//! over to the library.

use clap::{Args, Parser, Subcommand};
use noodle_migrate::bandwidth::BandwidthLimit;
use noodle_migrate::cli::{self, client::ApiClient, Exit};
use noodle_migrate::config::{Config, DEFAULT_LISTEN};
use noodle_migrate::engine::options::{Concurrency, FileTypes, RunChange, StartOptions};
use noodle_migrate::http::Application;
use noodle_migrate::model::Direction;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

// Every file's way allocates many small buffers (requests, headers,
// records): in a profile of small uploads, glibc's allocator took about a
// tenth of the engine's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "noodle-migrate",
    version,
    about = "Move a Noodle Gallery library between disk and S3-compatible storage",
    after_help = "Exit status: 0 everything moved, 1 some files failed or the engine refused, 2 usage or configuration error."
)]
struct Cli {
    /// Read settings from a gallery `.env` file (the environment wins).
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Remote {
    /// The engine's URL (default: http:// + NOODLE_MIGRATE_LISTEN).
    #[arg(long, env = "NOODLE_MIGRATE_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The engine's API token.
    #[arg(long, env = "NOODLE_MIGRATE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct Migration {
    /// toS3 or toDisk.
    #[arg(long, value_parser = parse_direction)]
    direction: Direction,
    /// Delete each source file once its new path is committed.
    #[arg(long)]
    delete_source: bool,
    /// Files moved in parallel, 1–20 [default: 5].
    #[arg(long, value_parser = parse_concurrency)]
    concurrency: Option<Concurrency>,
    /// Comma-separated kinds (default: all): originals, thumbnails, previews,
    /// fullsize, sidecars, encodedVideos, personThumbnails, profileImages.
    #[arg(long, value_parser = cli::parse_file_types)]
    file_types: Option<FileTypes>,
    /// Check originals against their recorded SHA-1 before committing.
    #[arg(long)]
    verify: bool,
    /// Dump the database to the active backend before the first file.
    #[arg(long)]
    dump_database: bool,
    /// Start even when the gallery's move_history has rows (left behind by
    /// moves that failed).
    #[arg(long)]
    ignore_move_history: bool,
    /// Bytes per second for all transfers: 512k, 20M, off, or a timetable
    /// in local time such as "08:00,2M 23:00,off" (as rclone's --bwlimit).
    #[arg(long, value_name = "RATE")]
    bwlimit: Option<BandwidthLimit>,
}

impl Migration {
    fn options(&self) -> StartOptions {
        StartOptions {
            direction: self.direction,
            delete_source: self.delete_source,
            concurrency: self.concurrency.unwrap_or_default(),
            file_types: self.file_types.unwrap_or_default(),
            verify: self.verify,
            dump_database: self.dump_database,
            ignore_move_history: self.ignore_move_history,
            bandwidth_limit: self.bwlimit.clone().filter(|l| !l.is_off()),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP API, the admin page and the migration engine.
    Serve,
    /// Take part in the migrations started on this database by another
    /// process (`serve` or `run`, on any host), with this process's own
    /// movers; wait for one while none runs. Serves the same HTTP API.
    Worker,
    /// Run a whole migration in this process, without a server.
    Run {
        #[command(flatten)]
        migration: Migration,
    },
    /// Ask a running engine for an estimate.
    Estimate {
        #[arg(long, value_parser = parse_direction)]
        direction: Direction,
        #[command(flatten)]
        remote: Remote,
    },
    /// List every file a start would handle and what it would do with it
    /// (copy, adopt, replace, skip, fail); changes nothing.
    Plan {
        #[arg(long, value_parser = parse_direction)]
        direction: Direction,
        /// The server's CSV instead of text.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a migration on a running engine.
    Start {
        #[command(flatten)]
        migration: Migration,
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show the current or last migration.
    Status {
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revert the database paths of a batch.
    Rollback {
        batch_id: uuid::Uuid,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change the running migration: its concurrency, its bandwidth limit.
    Set {
        /// Files moved in parallel per process, 1–20.
        #[arg(long, value_parser = parse_concurrency)]
        concurrency: Option<Concurrency>,
        /// 512k, 20M, off, or a timetable such as "08:00,2M 23:00,off".
        #[arg(long, value_name = "RATE")]
        bwlimit: Option<BandwidthLimit>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Hand out no more files until resumed (the files in flight finish).
    Pause {
        #[command(flatten)]
        remote: Remote,
    },
    /// Go on with a paused migration.
    Resume {
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop the running migration after the files in flight.
    Cancel {
        #[command(flatten)]
        remote: Remote,
    },
    /// List files and objects no row points at (what a crash can leave).
    Orphans {
        /// Orphans listed at most.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Database dumps on the gallery's active backend.
    Dump {
        #[command(subcommand)]
        action: DumpAction,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum DumpAction {
    /// Dump the database now (older dumps beyond NOODLE_MIGRATE_DUMP_KEEP are removed).
    Create,
    /// List the dumps, newest first.
    List,
    /// Delete one dump by name.
    Delete { name: String },
}

fn parse_concurrency(value: &str) -> Result<Concurrency, String> {
    value
        .parse()
        .ok()
        .and_then(Concurrency::new)
        .ok_or_else(|| format!("expected a whole number from 1 to 20, got {value:?}"))
}

fn parse_direction(value: &str) -> Result<Direction, String> {
    Direction::parse(value).ok_or_else(|| format!("expected toS3 or toDisk, got {value:?}"))
}

fn client(remote: &Remote) -> ApiClient {
    let base = remote.server.clone().unwrap_or_else(|| {
        let listen =
            std::env::var("NOODLE_MIGRATE_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.into());
        format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"))
    });
    ApiClient::new(&base, remote.token.clone().filter(|t| !t.is_empty()))
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = noodle_migrate::failpoint::setup();
    let cli = Cli::parse();
    let json = cli.json;
    let exit =
        match cli.command {
            Command::Serve => match load(&cli.env_file) {
                Ok(config) => serve(config, false),
                Err(exit) => exit,
            },
            Command::Worker => match load(&cli.env_file) {
                Ok(config) => serve(config, true),
                Err(exit) => exit,
            },
            Command::Run { migration } => match load(&cli.env_file) {
                Ok(config) => {
                    block_on(async move { cli::run(config, migration.options(), json).await })
                }
                Err(exit) => exit,
            },
            Command::Estimate { direction, remote } => {
                block_on(async move { cli::estimate(&client(&remote), direction, json).await })
            }
            Command::Plan {
                direction,
                csv,
                remote,
            } => block_on(async move { cli::plan(&client(&remote), direction, csv, json).await }),
            Command::Start {
                migration,
                wait,
                remote,
            } => block_on(async move {
                cli::start(&client(&remote), &migration.options(), wait, json).await
            }),
            Command::Status { watch, remote } => {
                block_on(async move { cli::status(&client(&remote), watch, json).await })
            }
            Command::Rollback { batch_id, remote } => {
                block_on(async move { cli::rollback(&client(&remote), batch_id, json).await })
            }
            Command::Set {
                concurrency,
                bwlimit,
                remote,
            } => {
                if concurrency.is_none() && bwlimit.is_none() {
                    eprintln!("noodle-migrate: set needs --concurrency, --bwlimit, or both");
                    Exit::Usage
                } else {
                    let change = RunChange {
                        concurrency,
                        bandwidth_limit: bwlimit,
                    };
                    block_on(async move { cli::set(&client(&remote), &change, json).await })
                }
            }
            Command::Pause { remote } => {
                block_on(async move { cli::pause(&client(&remote), true, json).await })
            }
            Command::Resume { remote } => {
                block_on(async move { cli::pause(&client(&remote), false, json).await })
            }
            Command::Cancel { remote } => {
                block_on(async move { cli::cancel(&client(&remote), json).await })
            }
            Command::Orphans { limit, remote } => {
                block_on(async move { cli::orphans(&client(&remote), limit, json).await })
            }
            Command::Dump { action, remote } => block_on(async move {
                let client = client(&remote);
                match action {
                    DumpAction::Create => cli::dumps::create(&client, json).await,
                    DumpAction::List => cli::dumps::list(&client, json).await,
                    DumpAction::Delete { name } => cli::dumps::delete(&client, &name, json).await,
                }
            }),
        };
    ExitCode::from(exit.code())
}

fn load(env_file: &Option<PathBuf>) -> Result<Config, Exit> {
    noodle_migrate::telemetry::init_logging();
    Config::load(env_file.as_deref()).map_err(|e| {
        eprintln!("noodle-migrate: configuration error: {e}");
        Exit::Usage
    })
}

fn block_on<F: Future<Output = Exit>>(fut: F) -> Exit {
    actix_rt::System::new().block_on(fut)
}

/// Runs the API, and either the engine alone (`serve`) or the engine
/// joining the batches started elsewhere (`worker`), until a signal.
fn serve(config: Config, worker: bool) -> Exit {
    let result = actix_rt::System::new().block_on(async move {
        let app = Application::build(config)
            .await
            .map_err(|e| e.to_string())?;
        let engine = app.engine().clone();
        let server = app.run_until_stopped();
        if worker {
            // The worker loop answers the signal itself: it leaves its
            // batch (handing its chunks back) before returning.
            return tokio::select! {
                r = server => r.map_err(|e| e.to_string()),
                r = engine.work(noodle_migrate::shutdown_signal()) => r.map_err(|e| e.to_string()),
            };
        }
        tokio::select! {
            r = server => r.map_err(|e| e.to_string()),
            _ = noodle_migrate::shutdown_signal() => {
                tracing::info!("Shutting down: letting the files in flight finish");
                engine.shutdown(engine.config().shutdown_deadline).await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(error = %e, "noodle-migrate stopped");
            eprintln!("noodle-migrate: {e}");
            Exit::Failed
        }
    }
}
