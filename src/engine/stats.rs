//! The stats actor: the single place that knows how the current run is
//! going. The status endpoint and the Prometheus metrics both read from it;
//! it never touches the database.

use super::history::{History, Sample};
use super::lease::BatchView;
use super::messages::{BatchCounts, GetOwn, GetStatus, Outcome, Own, StatsEvent};
use crate::db::chunks::{ChunkCounts, WorkerRow};
use crate::model::{BatchState, Direction, PerKind};
use crate::telemetry::metrics::{bounded, Metrics, DIRECTIONS, ROLLBACK_OUTCOMES};
use actix::{Actor, Context, Handler};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub is_active: bool,
    pub batch_id: Option<Uuid>,
    pub direction: Option<Direction>,
    pub state: Option<BatchState>,
    pub resumed: bool,
    pub total: i64,
    pub waiting: i64,
    pub active: i64,
    pub completed: i64,
    pub adopted: i64,
    /// Completed files that replaced a stale copy no row pointed at.
    pub replaced: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Always 0: kept for the gallery's status shape (queue counters).
    pub delayed: i64,
    /// Files waiting while the run is paused (then `waiting` is 0), as the
    /// gallery's queue counts its paused jobs.
    pub paused: i64,
    pub bytes_moved: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub files_per_second: f64,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub failure_reasons: BTreeMap<String, i64>,
    /// Completed files per kind (the `fileTypes` keys).
    #[schema(value_type = BTreeMap<String, i64>)]
    pub completed_by_kind: serde_json::Value,
    /// Database transactions the run's ledger made (each records many
    /// files); null for a run of another process.
    pub ledger_commits: Option<i64>,
    pub error: Option<String>,
    /// The processes working on the batch (this one included), most
    /// recently seen first; at most 32.
    #[serde(default)]
    pub workers: Vec<WorkerRow>,
    /// The batch's chunks by state; null when not known.
    #[serde(default)]
    pub chunks: Option<ChunkCounts>,
    /// Files moved in parallel per process, as in force now; null when no
    /// run is open.
    #[serde(default)]
    pub concurrency: Option<u8>,
    /// The bandwidth limit in force, as given (`20M`, a timetable); null
    /// when there is none.
    #[serde(default)]
    pub bandwidth_limit: Option<String>,
    /// What that limit allows now, in bytes per second; null when
    /// unlimited.
    #[serde(default)]
    pub bandwidth_now: Option<u64>,
    /// This run's progress over time, about once a second (thinned to at
    /// most 720 samples that span the run); empty for a run of another
    /// process.
    #[serde(default)]
    pub history: Vec<Sample>,
    /// Files this run visits per kind (the `fileTypes` keys), beside
    /// `completedByKind`.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, i64>)]
    pub planned_by_kind: serde_json::Value,
}

impl StatusView {
    /// What status says before any migration ever ran.
    pub fn idle() -> StatusView {
        StatusView {
            is_active: false,
            batch_id: None,
            direction: None,
            state: None,
            resumed: false,
            total: 0,
            waiting: 0,
            active: 0,
            completed: 0,
            adopted: 0,
            replaced: 0,
            failed: 0,
            skipped: 0,
            delayed: 0,
            paused: 0,
            bytes_moved: 0,
            started_at: None,
            finished_at: None,
            files_per_second: 0.0,
            bytes_per_second: 0.0,
            eta_seconds: None,
            failure_reasons: BTreeMap::new(),
            completed_by_kind: PerKind::<i64>::default().to_json(),
            ledger_commits: None,
            error: None,
            workers: Vec::new(),
            chunks: None,
            concurrency: None,
            bandwidth_limit: None,
            bandwidth_now: None,
            history: Vec::new(),
            planned_by_kind: PerKind::<i64>::default().to_json(),
        }
    }

    /// The gallery's queue shape while paused: the files not yet started
    /// wait as `paused`.
    pub fn count_paused(&mut self) {
        if self.state == Some(BatchState::Paused) {
            self.paused = self.waiting;
            self.waiting = 0;
        }
    }
}

struct Run {
    batch_id: Uuid,
    direction: Direction,
    resumed: bool,
    /// Concurrency, bandwidth limit and pause as they are now.
    settings: tokio::sync::watch::Receiver<super::control::Settings>,
    /// The batch's counters when this run began: the rates count only
    /// what this run did.
    earlier: BatchCounts,
    total: i64,
    /// Files a mover holds (checking, copying): at most the concurrency.
    active: i64,
    /// Files copied, waiting for their commit (and source deletion).
    recording: i64,
    completed: i64,
    adopted: i64,
    replaced: i64,
    failed: i64,
    skipped: i64,
    bytes_moved: i64,
    completed_by_kind: PerKind<i64>,
    reasons: BTreeMap<String, i64>,
    ledger_commits: i64,
    started_at: DateTime<Utc>,
    clock: Instant,
    cancelling: bool,
    finished: Option<(DateTime<Utc>, f64, BatchState, Option<String>)>,
    /// The whole batch, when the heartbeat last looked.
    batch: Option<BatchView>,
    /// Files this run means to visit, per kind.
    planned: PerKind<i64>,
    /// Progress over time (the chart).
    history: History,
}

impl Run {
    /// Seconds since the run began, or its length once it ended.
    fn elapsed(&self) -> f64 {
        match &self.finished {
            Some((_, secs, _, _)) => *secs,
            None => self.clock.elapsed().as_secs_f64(),
        }
    }

    /// Where the run stands now: the batch's numbers when several
    /// processes share it, else this one's.
    fn sample(&self) -> Sample {
        let t = self.elapsed();
        let (done, bytes) = match self.batch.as_ref().filter(|b| b.workers.len() > 1) {
            Some(b) => (b.counts.done(), b.counts.bytes_moved),
            None => (
                self.completed + self.failed + self.skipped,
                self.bytes_moved,
            ),
        };
        Sample {
            t,
            files: done - self.earlier.done(),
            bytes: bytes - self.earlier.bytes_moved,
        }
    }
}

/// Holds the current run's numbers and keeps the Prometheus metrics in step.
pub struct Stats {
    run: Option<Run>,
    metrics: Arc<Metrics>,
}

impl Stats {
    pub fn new(metrics: Arc<Metrics>) -> Stats {
        Stats { run: None, metrics }
    }

    fn update_jobs(&self) {
        let (waiting, active) = match &self.run {
            Some(run) if run.finished.is_none() => {
                let done = run.completed + run.failed + run.skipped;
                (
                    (run.total - done - run.active - run.recording).max(0),
                    run.active,
                )
            }
            _ => (0, 0),
        };
        self.metrics
            .jobs
            .with_label_values(&["waiting"])
            .set(waiting);
        self.metrics.jobs.with_label_values(&["active"]).set(active);
    }
}

impl Actor for Stats {
    type Context = Context<Self>;
}

fn unix_now() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

impl Handler<StatsEvent> for Stats {
    type Result = ();

    fn handle(&mut self, event: StatsEvent, _: &mut Context<Self>) {
        let m = self.metrics.clone();
        match event {
            StatsEvent::RunStarted {
                batch_id,
                direction,
                resumed,
                earlier,
                planned,
                started_at,
                settings,
            } => {
                for d in DIRECTIONS {
                    m.migration_active
                        .with_label_values(&[d.as_str()])
                        .set((d == direction) as i64);
                }
                m.migration_started.set(unix_now());
                for (kind, n) in planned.iter() {
                    m.files_planned.with_label_values(&[kind.api_key()]).set(n);
                    m.run_files_done.with_label_values(&[kind.api_key()]).set(0);
                }
                self.run = Some(Run {
                    batch_id,
                    direction,
                    resumed,
                    settings,
                    earlier,
                    total: earlier.total,
                    active: 0,
                    recording: 0,
                    completed: earlier.completed,
                    adopted: earlier.adopted,
                    replaced: earlier.replaced,
                    failed: earlier.failed,
                    skipped: earlier.skipped,
                    bytes_moved: earlier.bytes_moved,
                    completed_by_kind: PerKind::default(),
                    reasons: BTreeMap::new(),
                    ledger_commits: 0,
                    started_at,
                    clock: Instant::now(),
                    cancelling: false,
                    finished: None,
                    batch: None,
                    planned,
                    history: History::default(),
                });
            }
            StatsEvent::FileStarted => {
                if let Some(run) = self.run.as_mut() {
                    run.active += 1;
                }
            }
            StatsEvent::FileCopied => {
                if let Some(run) = self.run.as_mut() {
                    run.active -= 1;
                    run.recording += 1;
                }
            }
            StatsEvent::FileDone {
                kind,
                outcome,
                copy_seconds,
            } => {
                let Some(run) = self.run.as_mut() else { return };
                let (d, k) = (run.direction.as_str(), kind.api_key());
                run.recording -= 1;
                m.run_files_done.with_label_values(&[k]).inc();
                match outcome {
                    Outcome::Completed {
                        adopted,
                        replaced,
                        bytes,
                    } => {
                        run.completed += 1;
                        run.completed_by_kind.add(kind, 1);
                        m.files.with_label_values(&[d, k, "completed"]).inc();
                        if replaced {
                            run.replaced += 1;
                            m.files_replaced.with_label_values(&[d, k]).inc();
                        }
                        if adopted {
                            run.adopted += 1;
                            m.files_adopted.with_label_values(&[d, k]).inc();
                        } else {
                            run.bytes_moved += bytes as i64;
                            m.bytes_moved.with_label_values(&[d, k]).inc_by(bytes);
                            m.copy_duration
                                .with_label_values(&[d])
                                .observe(copy_seconds);
                        }
                    }
                    Outcome::Failed { reason } => {
                        run.failed += 1;
                        m.files.with_label_values(&[d, k, "failed"]).inc();
                        m.failures.with_label_values(&[d, reason.as_str()]).inc();
                        *run.reasons.entry(reason.as_str().to_string()).or_default() += 1;
                    }
                    Outcome::Skipped { reason } => {
                        run.skipped += 1;
                        m.files.with_label_values(&[d, k, "skipped"]).inc();
                        m.skips.with_label_values(&[d, reason.as_str()]).inc();
                        *run.reasons.entry(reason.as_str().to_string()).or_default() += 1;
                    }
                    Outcome::HandedOver => m.files_handed_over.inc(),
                    // Never reported: the file did not begin.
                    Outcome::NotStarted => {}
                }
            }
            StatsEvent::RunFinished { state, error } => {
                let Some(run) = self.run.as_mut() else { return };
                run.finished = Some((Utc::now(), run.clock.elapsed().as_secs_f64(), state, error));
                m.migration_active
                    .with_label_values(&[run.direction.as_str()])
                    .set(0);
                m.last_finished.set(unix_now());
            }
            StatsEvent::CommitDone { seconds, files } => {
                m.commit_duration.observe(seconds);
                m.commit_files.observe(files as f64);
                if let Some(run) = self.run.as_mut() {
                    run.ledger_commits += 1;
                }
            }
            StatsEvent::Cancelling => {
                if let Some(run) = self.run.as_mut() {
                    run.cancelling = true;
                }
            }
            StatsEvent::Batch(view) => {
                m.show_batch(&view.chunks, &view.workers);
                if let Some(run) = self.run.as_mut() {
                    run.batch = Some(view);
                    let now = run.sample();
                    run.history.record(now);
                }
            }
            StatsEvent::RollbackDone { outcome } => {
                m.rollbacks
                    .with_label_values(&[bounded(outcome, ROLLBACK_OUTCOMES)])
                    .inc();
            }
        }
        self.update_jobs();
    }
}

impl Handler<GetOwn> for Stats {
    type Result = Own;

    fn handle(&mut self, _: GetOwn, _: &mut Context<Self>) -> Own {
        let Some(run) = self.run.as_ref() else {
            return Own::default();
        };
        let e = &run.earlier;
        let completed = run.completed - e.completed;
        let failed = run.failed - e.failed;
        let done = completed + failed + (run.skipped - e.skipped);
        let elapsed = run.elapsed().max(0.001);
        Own {
            active: if run.finished.is_some() {
                0
            } else {
                run.active
            },
            completed,
            failed,
            bytes_moved: run.bytes_moved - e.bytes_moved,
            files_per_second: done as f64 / elapsed,
        }
    }
}

impl Handler<GetStatus> for Stats {
    type Result = Option<StatusView>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Option<StatusView> {
        let run = self.run.as_ref()?;
        let done = run.completed + run.failed + run.skipped;
        let elapsed = run.elapsed().max(0.001);
        let mut files_per_second = (done - run.earlier.done()) as f64 / elapsed;
        let mut bytes_per_second = (run.bytes_moved - run.earlier.bytes_moved) as f64 / elapsed;
        let mut waiting = (run.total - done - run.active - run.recording).max(0);
        let mut counts = BatchCounts {
            total: run.total,
            completed: run.completed,
            adopted: run.adopted,
            replaced: run.replaced,
            failed: run.failed,
            skipped: run.skipped,
            bytes_moved: run.bytes_moved,
        };
        let mut active = run.active;
        // Several processes share the batch: the counts are the batch's,
        // as the database holds them, and the rates everyone's.
        if let Some(b) = run.batch.as_ref().filter(|b| b.workers.len() > 1) {
            counts = b.counts;
            let live = b.workers.iter().filter(|w| w.is_live());
            active = live.clone().map(|w| w.active).sum::<i64>().max(run.active);
            files_per_second = if run.finished.is_some() {
                (counts.done() - run.earlier.done()) as f64 / elapsed
            } else {
                live.clone().map(|w| w.files_per_second).sum()
            };
            bytes_per_second = (counts.bytes_moved - run.earlier.bytes_moved) as f64 / elapsed;
            waiting = (counts.total - counts.done() - active).max(0);
        }
        if run.finished.is_some() {
            active = 0;
        }
        let settings = run.settings.borrow().clone();
        let paused = run.finished.is_none() && !run.cancelling && settings.paused;
        let eta_seconds = match (&run.finished, files_per_second > 0.0) {
            (None, true) => Some((waiting + active) as f64 / files_per_second),
            (Some(_), _) => Some(0.0),
            _ => None,
        };
        let mut view = StatusView {
            is_active: run.finished.is_none(),
            batch_id: Some(run.batch_id),
            direction: Some(run.direction),
            state: Some(match &run.finished {
                Some((_, _, state, _)) => *state,
                None if run.cancelling => BatchState::Cancelling,
                None if paused => BatchState::Paused,
                None => BatchState::Running,
            }),
            resumed: run.resumed,
            total: counts.total,
            waiting,
            active,
            completed: counts.completed,
            adopted: counts.adopted,
            replaced: counts.replaced,
            failed: counts.failed,
            skipped: counts.skipped,
            delayed: 0,
            paused: 0,
            bytes_moved: counts.bytes_moved,
            started_at: Some(run.started_at),
            concurrency: Some(settings.concurrency),
            bandwidth_limit: settings.bandwidth_limit.as_ref().map(|l| l.to_string()),
            bandwidth_now: settings.bandwidth_limit.as_ref().and_then(|l| l.rate_now()),
            finished_at: run.finished.as_ref().map(|f| f.0),
            files_per_second,
            bytes_per_second,
            eta_seconds,
            failure_reasons: run.reasons.clone(),
            completed_by_kind: run.completed_by_kind.to_json(),
            ledger_commits: Some(run.ledger_commits),
            error: run.finished.as_ref().and_then(|f| f.3.clone()),
            workers: run
                .batch
                .as_ref()
                .map(|b| b.workers.clone())
                .unwrap_or_default(),
            chunks: run.batch.as_ref().map(|b| b.chunks),
            history: run.history.with_now(run.sample()),
            planned_by_kind: run.planned.to_json(),
        };
        view.count_paused();
        Some(view)
    }
}
