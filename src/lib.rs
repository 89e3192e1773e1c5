//! noodle-migrate moves a Noodle Gallery's media between local disk and
//! S3-compatible object storage, in both directions, and rewrites each
//! file's path in the gallery's PostgreSQL database while the gallery runs.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, with the gallery's names.
//! - [`model`]: directions and the eight file kinds, with the gallery's strings.
//! - [`paths`]: disk path ↔ object key mapping, and what is refused.
//! - [`store`]: the disk and S3 sides (stat, hash, atomic write, multipart).
//! - [`db`]: the connection pool, our migrations, and every SQL statement.
//! - [`engine`]: the actors (orchestrator, movers, ledger, stats), the
//!   estimate and the rollback.
//! - [`http`]: the API, its errors and authentication.
//! - [`telemetry`]: how the engine logs (tracing, text or JSON).

pub mod config;
pub mod db;
pub mod engine;
pub mod http;
pub mod model;
pub mod paths;
pub mod store;
pub mod telemetry;
