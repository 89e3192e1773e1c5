//! Every Prometheus metric the engine exports, declared here with its help
//! text. The stats actor feeds the migration metrics; the S3 store counts
//! its own request errors.
//!
//! Labels are bounded (direction, kind, outcome, reason, operation, state):
//! never a path or an id. Every label combination is created at start-up
//! so alerts see a zero before the first failure. Setting metrics up can
//! fail only with an error, never a panic.

use crate::db::chunks::{ChunkCounts, WorkerRow};
use crate::model::{Direction, FileKind, Reason};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

const NAMESPACE: &str = "noodle_migrate";

/// The most `worker` label values at once.
pub const MAX_WORKER_SERIES: usize = 32;

/// The `reason` labels of failures, and of skips: the reasons themselves.
fn reasons(failures: bool) -> impl Iterator<Item = &'static str> {
    Reason::ALL
        .into_iter()
        .filter(move |r| r.is_failure() == failures)
        .map(Reason::as_str)
}

/// The S3 operations the engine makes.
pub const S3_OPERATIONS: &[&str] = &[
    "HeadBucket",
    "HeadObject",
    "GetObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObject",
    "ListObjectsV2",
    "ListMultipartUploads",
];

pub const FILE_OUTCOMES: &[&str] = &["completed", "failed", "skipped"];
pub const ROLLBACK_OUTCOMES: &[&str] = &["complete", "partial", "error"];
pub const DUMP_OUTCOMES: &[&str] = &["success", "failure"];
pub const CHUNK_STATES: &[&str] = &["pending", "leased", "done"];
pub const WORKER_OUTCOMES: &[&str] = &["completed", "failed"];
pub const DIRECTIONS: [Direction; 2] = [Direction::ToS3, Direction::ToDisk];

pub fn bounded<'a>(value: &str, allowed: &'a [&'a str]) -> &'a str {
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .unwrap_or("other")
}

pub struct Metrics {
    registry: Registry,
    pub migration_active: IntGaugeVec,
    pub migration_started: Gauge,
    pub last_finished: Gauge,
    pub files_planned: IntGaugeVec,
    pub run_files_done: IntGaugeVec,
    pub jobs: IntGaugeVec,
    pub files: IntCounterVec,
    pub files_adopted: IntCounterVec,
    pub files_replaced: IntCounterVec,
    pub failures: IntCounterVec,
    pub skips: IntCounterVec,
    pub bytes_moved: IntCounterVec,
    pub copy_duration: HistogramVec,
    pub commit_duration: Histogram,
    pub commit_files: Histogram,
    pub s3_errors: IntCounterVec,
    pub rollbacks: IntCounterVec,
    pub dumps: IntCounterVec,
    pub last_dump_time: Gauge,
    pub last_dump_size: IntGauge,
    pub last_dump_duration: Gauge,
    pub files_handed_over: IntCounter,
    pub chunks: IntGaugeVec,
    pub workers: IntGauge,
    pub worker_files: IntGaugeVec,
    pub worker_rate: GaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            migration_active: IntGaugeVec::new(
                opts("migration_active", "1 while a migration runs in this direction, else 0."),
                &["direction"],
            )?,
            migration_started: Gauge::with_opts(opts(
                "migration_started_timestamp_seconds",
                "Unix time the current or last migration started.",
            ))?,
            last_finished: Gauge::with_opts(opts(
                "last_migration_finished_timestamp_seconds",
                "Unix time the last migration finished (0: none yet).",
            ))?,
            files_planned: IntGaugeVec::new(
                opts("files_planned", "Files the current or last run set out to move, by kind."),
                &["kind"],
            )?,
            run_files_done: IntGaugeVec::new(
                opts("run_files_done", "Files the current or last run has finished (any outcome), by kind."),
                &["kind"],
            )?,
            jobs: IntGaugeVec::new(
                opts("jobs", "Files of the current run by state: waiting or active."),
                &["state"],
            )?,
            files: IntCounterVec::new(
                opts(
                    "files_total",
                    "Files that reached an outcome: completed (copied or adopted), failed or skipped.",
                ),
                &["direction", "kind", "outcome"],
            )?,
            files_adopted: IntCounterVec::new(
                opts(
                    "files_adopted_total",
                    "Completed files whose identical target already existed (no copy made).",
                ),
                &["direction", "kind"],
            )?,
            files_replaced: IntCounterVec::new(
                opts(
                    "files_replaced_total",
                    "Completed files whose target held a stale copy that no row pointed at; the source replaced it.",
                ),
                &["direction", "kind"],
            )?,
            failures: IntCounterVec::new(
                opts("file_failures_total", "Files that failed, by reason."),
                &["direction", "reason"],
            )?,
            skips: IntCounterVec::new(
                opts("file_skips_total", "Files deliberately not moved, by reason."),
                &["direction", "reason"],
            )?,
            bytes_moved: IntCounterVec::new(
                opts("bytes_moved_total", "Bytes copied (adopted files not included)."),
                &["direction", "kind"],
            )?,
            copy_duration: HistogramVec::new(
                HistogramOpts::new(
                    "file_copy_duration_seconds",
                    "Time to check, copy and verify one file (before its database commit).",
                )
                .namespace(NAMESPACE)
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
                &["direction"],
            )?,
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "ledger_commit_duration_seconds",
                    "Time of one ledger transaction (path updates, log rows, counters).",
                )
                .namespace(NAMESPACE)
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            )?,
            commit_files: Histogram::with_opts(
                HistogramOpts::new("ledger_batch_size", "Files recorded per ledger transaction.")
                    .namespace(NAMESPACE)
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
            )?,
            s3_errors: IntCounterVec::new(
                opts(
                    "s3_request_errors_total",
                    "S3 requests that failed after the SDK's retries, by operation.",
                ),
                &["operation"],
            )?,
            rollbacks: IntCounterVec::new(
                opts(
                    "rollbacks_total",
                    "Rollbacks by outcome: complete, partial (some rows changed since) or error.",
                ),
                &["outcome"],
            )?,
            dumps: IntCounterVec::new(
                opts("database_dumps_total", "Database dumps by outcome: success or failure."),
                &["outcome"],
            )?,
            last_dump_time: Gauge::with_opts(opts(
                "last_database_dump_timestamp_seconds",
                "Unix time the last successful database dump finished (0: none yet).",
            ))?,
            last_dump_size: IntGauge::with_opts(opts(
                "last_database_dump_size_bytes",
                "Compressed size of the last successful database dump.",
            ))?,
            last_dump_duration: Gauge::with_opts(opts(
                "last_database_dump_duration_seconds",
                "How long the last successful database dump took.",
            ))?,
            files_handed_over: IntCounter::with_opts(opts(
                "files_handed_over_total",
                "Files left to another process because their chunk's lease ran out and was taken over while they were in flight.",
            ))?,
            chunks: IntGaugeVec::new(
                opts("chunks", "The current or last batch's chunks by state: pending, leased or done (the same in every process of the batch)."),
                &["state"],
            )?,
            workers: IntGauge::with_opts(opts(
                "workers",
                "Processes working on the current batch, as their heartbeats say (the same in every process of the batch).",
            ))?,
            worker_files: IntGaugeVec::new(
                opts("worker_files", "Files each process of the current batch finished, by outcome; `worker` is host:pid, at most 32 of them."),
                &["worker", "outcome"],
            )?,
            worker_rate: GaugeVec::new(
                opts("worker_files_per_second", "Each process's rate over its part of the current batch; `worker` is host:pid, at most 32 of them."),
                &["worker"],
            )?,
            registry,
        };
        m.register_all()?;
        m.initialise();
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.migration_active.clone()))?;
        r.register(Box::new(self.migration_started.clone()))?;
        r.register(Box::new(self.last_finished.clone()))?;
        r.register(Box::new(self.files_planned.clone()))?;
        r.register(Box::new(self.run_files_done.clone()))?;
        r.register(Box::new(self.jobs.clone()))?;
        r.register(Box::new(self.files.clone()))?;
        r.register(Box::new(self.files_adopted.clone()))?;
        r.register(Box::new(self.files_replaced.clone()))?;
        r.register(Box::new(self.failures.clone()))?;
        r.register(Box::new(self.skips.clone()))?;
        r.register(Box::new(self.bytes_moved.clone()))?;
        r.register(Box::new(self.copy_duration.clone()))?;
        r.register(Box::new(self.commit_duration.clone()))?;
        r.register(Box::new(self.commit_files.clone()))?;
        r.register(Box::new(self.s3_errors.clone()))?;
        r.register(Box::new(self.rollbacks.clone()))?;
        r.register(Box::new(self.dumps.clone()))?;
        r.register(Box::new(self.last_dump_time.clone()))?;
        r.register(Box::new(self.last_dump_size.clone()))?;
        r.register(Box::new(self.last_dump_duration.clone()))?;
        r.register(Box::new(self.files_handed_over.clone()))?;
        r.register(Box::new(self.chunks.clone()))?;
        r.register(Box::new(self.workers.clone()))?;
        r.register(Box::new(self.worker_files.clone()))?;
        r.register(Box::new(self.worker_rate.clone()))?;
        Ok(())
    }

    /// Creates every label combination at zero.
    fn initialise(&self) {
        for direction in DIRECTIONS {
            let d = direction.as_str();
            self.migration_active.with_label_values(&[d]);
            self.copy_duration.with_label_values(&[d]);
            for kind in FileKind::ALL {
                let k = kind.api_key();
                self.files_adopted.with_label_values(&[d, k]);
                self.files_replaced.with_label_values(&[d, k]);
                self.bytes_moved.with_label_values(&[d, k]);
                for outcome in FILE_OUTCOMES {
                    self.files.with_label_values(&[d, k, outcome]);
                }
            }
            for reason in reasons(true) {
                self.failures.with_label_values(&[d, reason]);
            }
            for reason in reasons(false) {
                self.skips.with_label_values(&[d, reason]);
            }
        }
        for kind in FileKind::ALL {
            self.files_planned.with_label_values(&[kind.api_key()]);
            self.run_files_done.with_label_values(&[kind.api_key()]);
        }
        for state in ["waiting", "active"] {
            self.jobs.with_label_values(&[state]);
        }
        for op in S3_OPERATIONS {
            self.s3_errors.with_label_values(&[op]);
        }
        for outcome in ROLLBACK_OUTCOMES {
            self.rollbacks.with_label_values(&[outcome]);
        }
        for outcome in DUMP_OUTCOMES {
            self.dumps.with_label_values(&[outcome]);
        }
        for state in CHUNK_STATES {
            self.chunks.with_label_values(&[state]);
        }
    }

    /// This process's own per-worker series, at zero until it works on a
    /// batch, so that they exist from start-up like every other series.
    pub fn show_self(&self, worker: &str) {
        for outcome in WORKER_OUTCOMES {
            self.worker_files.with_label_values(&[worker, outcome]);
        }
        self.worker_rate.with_label_values(&[worker]);
    }

    /// The batch as the latest heartbeat saw it. The worker series are
    /// replaced as a whole, so a process that left the batch drops out and
    /// their number stays bounded by the workers listed.
    pub fn show_batch(&self, chunks: &ChunkCounts, workers: &[WorkerRow]) {
        self.chunks
            .with_label_values(&["pending"])
            .set(chunks.pending);
        self.chunks
            .with_label_values(&["leased"])
            .set(chunks.leased);
        self.chunks.with_label_values(&["done"]).set(chunks.done);
        self.workers
            .set(workers.iter().filter(|w| w.is_live()).count() as i64);
        self.worker_files.reset();
        self.worker_rate.reset();
        for w in workers.iter().take(MAX_WORKER_SERIES) {
            let id = w.id.as_str();
            self.worker_files
                .with_label_values(&[id, "completed"])
                .set(w.completed);
            self.worker_files
                .with_label_values(&[id, "failed"])
                .set(w.failed);
            self.worker_rate
                .with_label_values(&[id])
                .set(w.files_per_second);
        }
    }

    /// Counts one failed S3 request.
    pub fn s3_error(&self, operation: &str) {
        self.s3_errors
            .with_label_values(&[bounded(operation, S3_OPERATIONS)])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_before_anything_happens() {
        let m = Metrics::new().expect("metrics");
        let text = m.render().expect("render");
        assert!(text.contains(
            r#"noodle_migrate_file_failures_total{direction="toS3",reason="target_in_use"} 0"#
        ));
        assert!(
            text.contains(r#"noodle_migrate_s3_request_errors_total{operation="UploadPart"} 0"#)
        );
        assert!(text.contains("noodle_migrate_ledger_commit_duration_seconds_count 0"));
        assert!(!text.contains("/"), "no paths in metrics");
    }

    #[test]
    fn unknown_labels_are_bounded() {
        assert_eq!(bounded("SelectObjectContent", S3_OPERATIONS), "other");
        assert_eq!(bounded("Complete", ROLLBACK_OUTCOMES), "other");
    }
}
