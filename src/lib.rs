//! noodle-migrate moves a Noodle Gallery's media between local disk and
//! S3-compatible object storage, in both directions, and rewrites each
//! file's path in the gallery's PostgreSQL database while the gallery runs.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, with the gallery's names.
//! - [`model`]: directions, the eight file kinds (with the gallery's
//!   strings), the reasons a file did not move, batch states.
//! - [`paths`]: disk path ↔ object key mapping, and what is refused.
//! - [`bandwidth`]: the bandwidth limit (a rate, or rclone's timetable)
//!   and the throttle every object byte of this process passes through.
//! - [`store`]: the disk and S3 sides behind one `Store` trait (stat,
//!   list, create, delete), plus what each alone does (hashing, atomic
//!   and conditional writes, multipart).
//! - [`db`]: the connection pool, our migrations, and every SQL statement
//!   (the ledger's, paging, the chunks and leases several processes share,
//!   rollback, the orphan streams, credentials), built on one table of
//!   where each kind's path lives (`db::tables`).
//! - [`dumps`]: database dumps with pg_dump on the active backend, and
//!   their retention.
//! - [`engine`]: the actors (orchestrator, movers, ledger, stats), the
//!   start options (the API's contract for them), the run state, this
//!   process's chunk leases and heartbeat (a batch may be shared by many
//!   processes: `noodle-migrate worker`), the estimate, the orphan report
//!   and the media location check.
//! - [`failpoint`]: named crash points for the crash tests.
//! - [`http`]: the API (ours and the gallery's `/api` routes), its errors,
//!   authentication, the OpenAPI document and the admin page.
//! - [`cli`]: the command-line commands (an API client that reads the
//!   server's own body types, progress bars).
//! - [`telemetry`]: logs (tracing, text or JSON, on standard error) and
//!   the Prometheus metrics.

pub mod bandwidth;
pub mod cli;
pub mod config;
pub mod db;
pub mod dumps;
pub mod engine;
pub mod failpoint;
pub mod http;
pub mod model;
pub mod paths;
pub mod store;
pub mod telemetry;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
