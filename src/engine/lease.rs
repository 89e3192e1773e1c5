//! This process's part in a batch that several may share: the chunk
//! leases it holds, and the heartbeat that renews them, reports its
//! numbers, and watches the batch's state (a cancel asked for anywhere,
//! a close by another process).
//!
//! It must never let a process go on writing for a chunk whose lease is
//! gone: a lease the heartbeat cannot renew is flagged lost at once, the
//! orchestrator hands out no more of its files, and the ledger's fence
//! refuses the commits still in flight.

use super::messages::{GetOwn, StatsEvent};
use super::stats::Stats;
use super::RunContext;
use crate::db::{self, chunks};
use crate::model::BatchState;
use actix::Addr;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The most workers a status or the metrics list.
pub const MAX_WORKERS_SHOWN: i64 = 32;

/// `host:pid`: who this process is in the worker table and the logs.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// How often the heartbeat runs: a few times per lease, and at least once
/// a second so that a cancel reaches every process quickly.
pub fn beat_interval(lease_secs: u64) -> Duration {
    Duration::from_millis((lease_secs * 1000 / 3).clamp(200, 1000))
}

/// The chunk leases this process holds, each with the flag that says it
/// was lost.
#[derive(Default)]
pub struct Leases {
    held: Mutex<HashMap<Uuid, Arc<AtomicBool>>>,
}

impl Leases {
    pub fn hold(&self, lease: Uuid) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        self.lock().insert(lease, lost.clone());
        lost
    }

    pub fn forget(&self, lease: Uuid) {
        self.lock().remove(&lease);
    }

    pub fn tokens(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Flags every lease not in `still` as lost; returns how many were.
    fn keep_only(&self, asked: &[Uuid], still: &[Uuid]) -> usize {
        let mut lost = 0;
        let held = self.lock();
        for token in asked.iter().filter(|t| !still.contains(t)) {
            if let Some(flag) = held.get(token) {
                if !flag.swap(true, Ordering::SeqCst) {
                    lost += 1;
                }
            }
        }
        lost
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<AtomicBool>>> {
        // A panic elsewhere while holding this cannot leave the map torn
        // (every change is one insert or remove).
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The batch as every process sees it, as of the latest heartbeat.
#[derive(Debug, Clone, Default)]
pub struct BatchView {
    pub counts: super::messages::BatchCounts,
    pub chunks: chunks::ChunkCounts,
    pub workers: Vec<chunks::WorkerRow>,
}

/// The heartbeat task of one run; stopped when the run ends.
pub struct Heartbeat {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(run: Arc<RunContext>, stats: Addr<Stats>) -> Heartbeat {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let every = beat_interval(run.shared.config.lease_secs);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = beat(&run, &stats, "running").await {
                    tracing::warn!(error = %e, "Heartbeat failed; leases stay ours until they run out");
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        Heartbeat {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the heartbeat, then reports this process's last numbers.
    pub async fn stop(mut self, run: &RunContext, stats: &Addr<Stats>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = beat(run, stats, "left").await {
            tracing::warn!(error = %e, "Cannot report this process's last numbers");
        }
    }
}

/// One heartbeat: renew, report, watch.
async fn beat(run: &RunContext, stats: &Addr<Stats>, state: &str) -> Result<(), db::DbError> {
    let mut conn = db::conn(&run.shared.pool).await?;
    let batch = run.batch_id;
    let asked = run.leases.tokens();
    let still = chunks::renew(&mut conn, batch, &asked, run.shared.config.lease_secs).await?;
    let lost = run.leases.keep_only(&asked, &still);
    if lost > 0 {
        tracing::warn!(
            chunks = lost,
            "Chunk leases lost (taken over by another process after they ran out): their files in flight are that process's now"
        );
    }
    if let Ok(own) = stats.send(GetOwn).await {
        let row = chunks::WorkerRow {
            id: run.worker.clone(),
            state: if state == "running" && run.cancelled() {
                "draining".into()
            } else {
                state.into()
            },
            active: own.active,
            completed: own.completed,
            failed: own.failed,
            bytes_moved: own.bytes_moved,
            files_per_second: own.files_per_second,
            last_seen: chrono::Utc::now(),
        };
        chunks::beat(&mut conn, batch, &row).await?;
    }
    // One read of the batch's row: its state, its settings, and its
    // counts below.
    let read_at = tokio::time::Instant::now();
    let row = db::batches::get(&mut conn, batch).await?;
    if let Some(row) = &row {
        match super::options_of(row) {
            Ok(options) if row.state == BatchState::Running || row.state == BatchState::Paused => {
                run.control
                    .follow(super::control::Settings::of(&options, row.state), read_at)
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "The batch's options cannot be read; its settings stay as they were")
            }
        }
    }
    match row.as_ref().map(|r| r.state) {
        Some(BatchState::Running) | Some(BatchState::Paused) => {}
        Some(BatchState::Cancelling) => {
            if run.cancel.cancel() {
                tracing::info!(
                    "The batch is being cancelled: no new files; waiting for the files in flight"
                );
                stats.do_send(StatsEvent::Cancelling);
            }
        }
        _ => run.ended.store(true, Ordering::SeqCst),
    }
    let view = BatchView {
        counts: row
            .as_ref()
            .map(super::messages::BatchCounts::of)
            .unwrap_or_default(),
        chunks: chunks::counts(&mut conn, batch).await?,
        workers: chunks::workers(
            &mut conn,
            batch,
            MAX_WORKERS_SHOWN,
            run.shared.config.lease_secs,
        )
        .await?,
    };
    stats.do_send(StatsEvent::Batch(view));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_missing_from_the_renewal_is_lost_once() {
        let leases = Leases::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (lost_a, lost_b) = (leases.hold(a), leases.hold(b));
        assert_eq!(leases.keep_only(&[a, b], &[b]), 1);
        assert!(lost_a.load(Ordering::SeqCst));
        assert!(!lost_b.load(Ordering::SeqCst));
        assert_eq!(leases.keep_only(&[a, b], &[b]), 0);
        leases.forget(a);
        assert_eq!(leases.tokens(), vec![b]);
    }

    #[test]
    fn the_heartbeat_runs_several_times_per_lease_and_at_least_every_second() {
        assert_eq!(beat_interval(30), Duration::from_secs(1));
        assert_eq!(beat_interval(2), Duration::from_millis(666));
        assert!(beat_interval(2) * 3 <= Duration::from_secs(2));
    }

    #[test]
    fn a_worker_is_named_by_host_and_pid() {
        let id = worker_id();
        assert!(id.ends_with(&format!(":{}", std::process::id())), "{id}");
    }
}
