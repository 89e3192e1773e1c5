//! The `noodle-migrate` binary: parses arguments and settings, then hands
//! over to the library.

use clap::{Parser, Subcommand};
use noodle_migrate::config::Config;
use noodle_migrate::http::Application;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How long a SIGTERM waits for the files in flight.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "noodle-migrate",
    version,
    about = "Move a Noodle Gallery library between disk and S3"
)]
struct Cli {
    /// Read settings from a gallery `.env` file (the environment wins).
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP API and the migration engine.
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    noodle_migrate::telemetry::init_logging();
    let config = match Config::load(cli.env_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("noodle-migrate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let app = Application::build(config)
            .await
            .map_err(|e| e.to_string())?;
        let engine = app.engine().clone();
        let server = app.run_until_stopped();
        tokio::select! {
            r = server => r.map_err(|e| e.to_string()),
            _ = shutdown_signal() => {
                tracing::info!("Shutting down: letting the files in flight finish");
                engine.shutdown(SHUTDOWN_DEADLINE).await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "noodle-migrate stopped");
            eprintln!("noodle-migrate: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
