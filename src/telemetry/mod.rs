//! Telemetry: logging ([`logging`]) and Prometheus metrics ([`metrics`]).

pub mod logging;
pub mod metrics;

pub use logging::init_logging;
pub use metrics::Metrics;
