//! Logging with `tracing`: key/value fields, human-readable by default and
//! JSON lines with `NOODLE_MIGRATE_LOG_FORMAT=json`. The level comes from
//! `RUST_LOG` (default `info`). Logs go to standard error; standard output
//! belongs to the CLI's results.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json =
        std::env::var("NOODLE_MIGRATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests start several engines) is harmless: keep the first.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
