//! Integration tests: real PostgreSQL, a real S3 server on loopback, real
//! files, through the HTTP API. One binary, one module per area.

mod api;
mod browser;
mod cli;
mod control;
#[cfg(feature = "failpoints")]
mod crashpoints;
mod database;
mod deploy;
mod dumps;
mod faults;
mod gallery;
mod helpers;
mod ledger;
mod migration;
mod observability;
mod openapi;
mod orphans;
mod plan;
mod resume;
mod rollback;
mod run_control;
mod scale;
mod seed;
mod uploads;
mod workers;
