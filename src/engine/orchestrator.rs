//! The orchestrator: accepts a start, runs the pre-flight checks, cuts the
//! candidates of each selected kind into chunks (keyset pages of 1000,
//! recorded in the database), then leases chunk after chunk, reads its
//! rows and hands them one by one to a pool of movers, waiting for an idle
//! mover before handing out the next file. That wait is the
//! back-pressure: at most one page and `concurrency` files are in memory,
//! whatever the size of the library.
//!
//! Other processes (`noodle-migrate worker`) may join the batch: they
//! lease chunks of the same table with their own movers. The process that
//! started the batch holds the migration lock, writes the chunks and
//! closes the batch when cancelled; whoever sees the last chunk done
//! closes it otherwise.

use super::control::{RunControl, Settings};
use super::lease::Heartbeat;
use super::ledger::Ledger;
use super::messages::{
    BatchCounts, Cancel, Copying, Flush, GetControl, GetStatus, Handoff, Join, MoveFile, Outcome,
    RunEnded, Start, StartReply, StatsEvent,
};
use super::mover::{self, Ahead, Mover};
use super::run_state::{CancelSignal, RunState};
use super::stats::Stats;
use super::{EngineError, RunContext, Shared, StartOptions};
use crate::db::batches;
use crate::db::candidates::{self, Candidate, PAGE_SIZE};
use crate::db::chunks::{self, Lease, NewChunk};
use crate::db::ledger::LedgerBatch;
use crate::db::lock::MigrationLock;
use crate::db::{self};
use crate::model::{Backend, BatchState, Direction, FileKind, PerKind};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

pub struct Orchestrator {
    shared: Arc<Shared>,
    stats: Addr<Stats>,
    state: RunState,
    /// Tells the engine's handle whether the state is idle: it refuses
    /// work that needs no run in progress, and shutdown awaits it.
    idle: tokio::sync::watch::Sender<bool>,
}

impl Orchestrator {
    pub fn new(
        shared: Arc<Shared>,
        stats: Addr<Stats>,
        idle: tokio::sync::watch::Sender<bool>,
    ) -> Orchestrator {
        Orchestrator {
            shared,
            stats,
            state: RunState::Idle,
            idle,
        }
    }

    fn set(&mut self, state: RunState) {
        self.idle.send_replace(state.is_idle());
        self.state = state;
    }
}

impl Actor for Orchestrator {
    type Context = Context<Self>;
}

impl Handler<RunEnded> for Orchestrator {
    type Result = ();
    fn handle(&mut self, _: RunEnded, _: &mut Context<Self>) {
        self.set(RunState::Idle);
    }
}

impl Handler<GetControl> for Orchestrator {
    type Result = Option<(Uuid, Arc<RunControl>)>;
    fn handle(&mut self, _: GetControl, _: &mut Context<Self>) -> Self::Result {
        self.state.control()
    }
}

impl Handler<Cancel> for Orchestrator {
    type Result = Option<Option<Uuid>>;
    fn handle(&mut self, _: Cancel, _: &mut Context<Self>) -> Option<Option<Uuid>> {
        let batch = self.state.cancel()?;
        if matches!(self.state, RunState::Running { .. }) {
            self.stats.do_send(StatsEvent::Cancelling);
        }
        Some(batch)
    }
}

/// What the pre-flight hands to the run.
struct Prepared {
    lock: MigrationLock,
    batch: Opened,
}

/// The batch a start opened (or re-opened).
struct Opened {
    batch_id: Uuid,
    /// Where its log rows go.
    log: crate::db::log::LogTable,
    resumed: bool,
    /// Its counters once opened.
    earlier: BatchCounts,
    planned: PerKind<i64>,
    /// Rows to read per kind (planned plus those to report as skipped).
    to_visit: PerKind<i64>,
    dump_name: Option<String>,
}

impl Handler<Start> for Orchestrator {
    // Not atomic: the pre-flight (and a dump before the first file, which
    // can take minutes) runs beside the orchestrator's other messages, so
    // status, cancel and shutdown answer meanwhile. The state, set to
    // preparing at once, keeps a second start out.
    type Result = ResponseActFuture<Self, Result<StartReply, EngineError>>;

    fn handle(&mut self, start: Start, _: &mut Context<Self>) -> Self::Result {
        let Start { options, retry_of } = start;
        if !self.state.is_idle() {
            return Box::pin(actix::fut::ready(Err(EngineError::AlreadyRunning)));
        }
        let cancel = Arc::new(CancelSignal::default());
        let chosen = Arc::new(OnceLock::new());
        self.set(RunState::Preparing {
            cancel: cancel.clone(),
            batch_id: chosen.clone(),
        });
        let shared = self.shared.clone();
        let opts = options.clone();
        let signal = cancel.clone();
        Box::pin(
            async move { prepare(&shared, &opts, retry_of, &signal, &chosen).await }
                .into_actor(self)
                .map(move |prepared, act, ctx| {
                    let Prepared { lock, batch } = match prepared {
                        Ok(prepared) => prepared,
                        Err(e) => {
                            act.set(RunState::Idle);
                            return Err(e);
                        }
                    };
                    let control = Arc::new(RunControl::new(
                        Settings::of(&options, BatchState::Running),
                        act.shared.s3.throttle().clone(),
                    ));
                    act.set(RunState::Running {
                        cancel: cancel.clone(),
                        batch_id: batch.batch_id,
                        control: control.clone(),
                    });
                    let reply = StartReply {
                        batch_id: batch.batch_id,
                        resumed: batch.resumed,
                        dump_name: batch.dump_name.clone(),
                    };
                    let run = Arc::new(RunContext {
                        shared: act.shared.clone(),
                        layout: act.shared.layout.clone(),
                        batch_id: batch.batch_id,
                        direction: options.direction,
                        delete_source: options.delete_source,
                        verify: options.verify,
                        log: batch.log,
                        cancel,
                        ended: AtomicBool::new(false),
                        retry: retry_of.is_some(),
                        leases: Default::default(),
                        worker: act.shared.worker.clone(),
                        side_work: tokio::sync::Semaphore::new(options.concurrency.get().into()),
                        targets: Default::default(),
                        control,
                        chunks_added: tokio::sync::Notify::new(),
                    });
                    act.stats.do_send(StatsEvent::RunStarted {
                        batch_id: batch.batch_id,
                        direction: options.direction,
                        resumed: batch.resumed,
                        earlier: batch.earlier,
                        planned: batch.planned,
                        started_at: chrono::Utc::now(),
                        settings: run.control.watch(),
                    });
                    let span = tracing::info_span!("batch", batch_id = %batch.batch_id);
                    let me = ctx.address();
                    let stats = act.stats.clone();
                    actix::spawn(
                        async move {
                            execute(run, options, batch.to_visit, lock, stats).await;
                            me.do_send(RunEnded);
                        }
                        .instrument(span),
                    );
                    Ok(reply)
                }),
        )
    }
}

impl Handler<Join> for Orchestrator {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, join: Join, ctx: &mut Context<Self>) -> Result<(), EngineError> {
        if !self.state.is_idle() {
            return Err(EngineError::AlreadyRunning);
        }
        let chunks::Joinable {
            batch, log_table, ..
        } = join.0;
        let options = super::options_of(&batch)?;
        let log = match log_table.as_deref() {
            Some(name) if name == crate::db::log::LogTable::Gallery.name() => {
                crate::db::log::LogTable::Gallery
            }
            Some(name) if name == crate::db::log::LogTable::Own.name() => {
                crate::db::log::LogTable::Own
            }
            other => {
                return Err(EngineError::Internal(format!(
                    "batch {} names no known log table ({other:?})",
                    batch.id
                )))
            }
        };
        let cancel = Arc::new(CancelSignal::default());
        let control = Arc::new(RunControl::new(
            Settings::of(&options, batch.state),
            self.shared.s3.throttle().clone(),
        ));
        self.set(RunState::Running {
            cancel: cancel.clone(),
            batch_id: batch.id,
            control: control.clone(),
        });
        let run = Arc::new(RunContext {
            shared: self.shared.clone(),
            layout: self.shared.layout.clone(),
            batch_id: batch.id,
            direction: options.direction,
            delete_source: options.delete_source,
            verify: options.verify,
            log,
            cancel,
            ended: AtomicBool::new(false),
            retry: false,
            leases: Default::default(),
            worker: self.shared.worker.clone(),
            side_work: tokio::sync::Semaphore::new(options.concurrency.get().into()),
            targets: Default::default(),
            control,
            chunks_added: tokio::sync::Notify::new(),
        });
        let earlier = BatchCounts::of(&batch);
        self.stats.do_send(StatsEvent::RunStarted {
            batch_id: batch.id,
            direction: options.direction,
            resumed: false,
            earlier,
            planned: PerKind::default(),
            started_at: chrono::Utc::now(),
            settings: run.control.watch(),
        });
        tracing::info!(
            batch_id = %batch.id,
            direction = %options.direction,
            worker = %run.worker,
            concurrency = options.concurrency.get(),
            "Joined a migration"
        );
        let span = tracing::info_span!("batch", batch_id = %batch.id);
        let me = ctx.address();
        let stats = self.stats.clone();
        actix::spawn(
            async move {
                take_part(run, stats).await;
                me.do_send(RunEnded);
            }
            .instrument(span),
        );
        Ok(())
    }
}

/// Pre-flight: everything that can refuse a start, in the order a user
/// would want to hear about it.
async fn prepare(
    shared: &Shared,
    options: &StartOptions,
    retry_of: Option<Uuid>,
    cancel: &CancelSignal,
    chosen: &OnceLock<Uuid>,
) -> Result<Prepared, EngineError> {
    let wanted = options.direction.target_backend();
    let variable = shared.config.backend_variable();
    // Unset means disk, as the gallery reads it.
    let backend = shared.config.current_storage_backend().await?;
    match backend {
        None if wanted == Backend::S3 => return Err(EngineError::BackendUnset { variable }),
        Some(backend) if backend != wanted => {
            return Err(EngineError::BackendMismatch {
                backend: backend.as_str(),
                direction: options.direction,
                variable,
            })
        }
        _ => {}
    }
    shared.check_media().await?;
    shared.s3.check_bucket().await?;
    let lock = MigrationLock::try_acquire(shared.config.database_url.expose())
        .await?
        .ok_or(EngineError::LockedElsewhere)?;
    match prepare_locked(shared, options, retry_of, cancel, chosen).await {
        Ok(batch) => Ok(Prepared { lock, batch }),
        Err(e) => {
            lock.release().await;
            Err(e)
        }
    }
}

async fn prepare_locked(
    shared: &Shared,
    options: &StartOptions,
    retry_of: Option<Uuid>,
    cancel: &CancelSignal,
    chosen: &OnceLock<Uuid>,
) -> Result<Opened, EngineError> {
    let mut conn = db::conn(&shared.pool).await?;
    let in_flight = batches::gallery_moves_in_flight(&mut conn).await?;
    if in_flight > 0 {
        if !options.ignore_move_history {
            return Err(EngineError::GalleryMovingFiles(in_flight));
        }
        tracing::warn!(
            rows = in_flight,
            "Starting although the gallery's move_history has rows (ignoreMoveHistory)"
        );
    }
    // Under the lock: our waiting log rows join the gallery's table if it
    // has appeared, and this run writes where they are.
    let log = crate::db::log::settle(&mut conn).await?;
    let stale = batches::mark_stale_interrupted(&mut conn).await?;
    if stale > 0 {
        tracing::warn!(
            batches = stale,
            "Found batches left running by a stopped engine; marked interrupted"
        );
    }
    if let Some(batch_id) = retry_of {
        let _ = chosen.set(batch_id);
        let mut planned = PerKind::default();
        for (kind, n) in batches::failed_per_kind(&mut conn, batch_id).await? {
            if let Some(kind) = crate::model::FileKind::from_api_key(&kind) {
                planned.set(kind, n);
            }
        }
        if planned.total() == 0 {
            return Err(EngineError::NothingToMigrate {
                direction: options.direction,
                unmovable: 0,
            });
        }
        let row = batches::reopen_for_retry(&mut conn, batch_id).await?;
        chunks::reset(&mut conn, batch_id, &shared.scope(), log.name()).await?;
        tracing::info!(batch_id = %batch_id, files = planned.total(), "Retrying the failed files of a batch");
        return Ok(Opened {
            batch_id,
            log,
            resumed: true,
            earlier: BatchCounts::of(&row),
            to_visit: planned,
            planned,
            dump_name: None,
        });
    }
    let (movable, unmovable) = candidates::totals(
        &mut conn,
        &options.kinds(),
        options.direction,
        &shared.layout.media_root(),
    )
    .await?;
    if movable.total() == 0 {
        return Err(EngineError::NothingToMigrate {
            direction: options.direction,
            unmovable: unmovable.total(),
        });
    }
    // The rows a run visits per kind: movable ones, and the ones it will
    // report as skipped.
    let mut to_visit = movable;
    for (kind, n) in unmovable.iter() {
        to_visit.add(kind, n);
    }
    let unmovable = unmovable.total();
    let resume = batches::resumable(&mut conn, options.direction).await?;
    // Version 4, as the gallery's own batch ids: its rollback endpoint and
    // admin page accept nothing else.
    let batch_id = resume.unwrap_or_else(Uuid::new_v4);
    let _ = chosen.set(batch_id);
    let total = movable.total() + unmovable;
    let dump = if options.dump_database {
        // Under the lock, before the first file: the dump shows the
        // database exactly as it was before this run. A cancel drops it
        // (the dump cleans up after itself) and the start with it.
        drop(conn);
        let backend = shared.config.active_backend().await?;
        let report = tokio::select! {
            report = shared.dumps.create(backend) => report?,
            _ = cancel.wait() => return Err(EngineError::CancelledBeforeStart),
        };
        conn = db::conn(&shared.pool).await?;
        Some(report.name)
    } else {
        None
    };
    if cancel.is_set() {
        return Err(EngineError::CancelledBeforeStart);
    }
    let row = batches::open(
        &mut conn,
        batch_id,
        options.direction,
        &options.to_value(),
        total,
        dump.as_deref(),
    )
    .await?;
    chunks::reset(&mut conn, batch_id, &shared.scope(), log.name()).await?;
    tracing::info!(
        batch_id = %batch_id,
        direction = %options.direction,
        files = total,
        resumed = resume.is_some(),
        dump = dump.as_deref().unwrap_or("none"),
        concurrency = options.concurrency.get(),
        delete_source = options.delete_source,
        "Migration started"
    );
    Ok(Opened {
        batch_id,
        log,
        resumed: resume.is_some(),
        earlier: BatchCounts::of(&row),
        planned: movable,
        to_visit,
        dump_name: dump,
    })
}

/// The run itself, in the process that started it: write the chunks,
/// take part like any worker, close the batch.
async fn execute(
    run: Arc<RunContext>,
    options: StartOptions,
    to_visit: PerKind<i64>,
    lock: MigrationLock,
    stats: Addr<Stats>,
) {
    let lock = lock.keep(
        run.shared.config.database_url.expose().to_string(),
        run.cancel.flag(),
    );
    let kinds: Vec<FileKind> = options
        .kinds()
        .into_iter()
        .filter(|k| to_visit.get(*k) > 0)
        .collect();
    let chunker = {
        let run = run.clone();
        tokio::spawn(async move {
            let written = write_chunks(&run, &kinds).await;
            if written.is_err() {
                // Nobody would ever find the batch done: stop it (it
                // closes as failed, with the chunker's error).
                run.cancel.cancel();
            }
            written
        })
    };
    let heartbeat = Heartbeat::start(run.clone(), stats.clone());
    let result = work_on_chunks(&run, &stats).await;
    if !chunker.is_finished() {
        chunker.abort();
    }
    let chunked = match chunker.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    };
    if lock.lost() {
        // The batch is no longer ours to close: the process holding the
        // lock now has marked it interrupted and may be resuming it.
        let error = "another noodle-migrate process took the migration lock while the database restarted; this run stopped and left the batch to it".to_string();
        tracing::error!(error = %error, "Migration stopped");
        heartbeat.stop(&run, &stats).await;
        lock.release().await;
        stats.do_send(StatsEvent::RunFinished {
            state: BatchState::Interrupted,
            error: Some(error),
        });
        announce_end(&run, &stats).await;
        return;
    }
    let (final_state, error) = close(&run, chunked.and(result)).await;
    match &error {
        None => tracing::info!(state = %final_state, "Migration finished"),
        Some(e) => tracing::error!(error = %e, "Migration stopped"),
    }
    wait_for_last_reports(&run).await;
    heartbeat.stop(&run, &stats).await;
    lock.release().await;
    stats.do_send(StatsEvent::RunFinished {
        state: final_state,
        error,
    });
    // A batch left paused has not ended.
    if final_state != BatchState::Paused {
        announce_end(&run, &stats).await;
    }
}

/// Tells the webhook, when one is set, how the run ended: the final
/// status, as the status endpoint now shows it.
async fn announce_end(run: &RunContext, stats: &Addr<Stats>) {
    let Some(webhook) = &run.shared.config.webhook else {
        return;
    };
    match stats.send(GetStatus).await {
        Ok(Some(status)) => super::notify::run_ended(webhook, status, &run.shared.deliveries),
        _ => tracing::warn!("Cannot read the run's final status for the webhook"),
    }
}

/// Closes the batch as the starting process sees its end: cancelled (once
/// the other processes have let go of their chunks), failed, or as
/// whoever marked the last chunk done found it.
async fn close(run: &RunContext, result: Result<i64, EngineError>) -> (BatchState, Option<String>) {
    let outcome = async {
        let mut conn = db::conn(&run.shared.pool).await?;
        let (state, error) = match result {
            Err(e) => (BatchState::Failed, Some(e.to_string())),
            Ok(_)
                if run.cancelled()
                    && chunks::state(&mut conn, run.batch_id).await?
                        == Some(BatchState::Paused) =>
            {
                // A shutdown while paused: the batch stays paused, and a
                // resume after the restart goes on with it.
                tracing::info!("Stopped while paused: the batch stays paused until resumed");
                return Ok((BatchState::Paused, None));
            }
            Ok(_) if run.cancelled() => {
                // Every process stops handing out files at its next
                // heartbeat; the batch closes once their files in flight
                // are recorded (or their leases ran out).
                chunks::request_cancel(&mut conn, run.batch_id).await?;
                drop(conn);
                wait_for_other_leases(run).await;
                conn = db::conn(&run.shared.pool).await?;
                (BatchState::Cancelled, None)
            }
            Ok(_) => {
                if let Some(state) = chunks::close_if_done(&mut conn, run.batch_id).await? {
                    return Ok::<_, EngineError>((state, None));
                }
                match chunks::state(&mut conn, run.batch_id).await? {
                    Some(state) if state.is_final() => return Ok((state, None)),
                    // Not closed by anyone and not done: stopped short.
                    _ => (
                        BatchState::Failed,
                        Some("the run stopped with chunks left to do".to_string()),
                    ),
                }
            }
        };
        batches::finish(&mut conn, run.batch_id, state, error.as_deref()).await?;
        Ok((state, error))
    };
    match outcome.await {
        Ok(closed) => closed,
        Err(e) => {
            tracing::error!(error = %e, "Cannot record the end of the batch; the next start will resume it");
            (BatchState::Interrupted, Some(e.to_string()))
        }
    }
}

/// Waits, up to a lease and a little, for the other processes to record
/// their files in flight and hand their chunks back.
async fn wait_for_other_leases(run: &RunContext) {
    let deadline = std::time::Instant::now()
        + Duration::from_secs(run.shared.config.lease_secs)
        + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let live = async {
            let mut conn = db::conn(&run.shared.pool).await?;
            chunks::live_leases(&mut conn, run.batch_id).await
        }
        .await;
        if matches!(live, Ok(0)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!("Other processes still hold chunks of the cancelled batch; closing it anyway (their commits are fenced)");
}

/// Gives the other processes a moment to report their last numbers once
/// the batch is closed, so that the final status (and the webhook's) lists
/// what each did.
async fn wait_for_last_reports(run: &RunContext) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let still = async {
            let mut conn = db::conn(&run.shared.pool).await?;
            let workers = chunks::workers(
                &mut conn,
                run.batch_id,
                super::lease::MAX_WORKERS_SHOWN,
                run.shared.config.lease_secs,
            )
            .await?;
            Ok::<_, EngineError>(workers.iter().any(|w| w.id != run.worker && w.is_live()))
        }
        .await;
        if !matches!(still, Ok(true)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker's part in a batch another process started.
async fn take_part(run: Arc<RunContext>, stats: Addr<Stats>) {
    let heartbeat = Heartbeat::start(run.clone(), stats.clone());
    let result = work_on_chunks(&run, &stats).await;
    let state = async {
        let mut conn = db::conn(&run.shared.pool).await?;
        if let Some(state) = chunks::close_if_done(&mut conn, run.batch_id).await? {
            tracing::info!(state = %state, "Migration finished: this process closed the batch");
            return Ok::<_, EngineError>(state);
        }
        Ok(chunks::state(&mut conn, run.batch_id)
            .await?
            .unwrap_or(BatchState::Interrupted))
    }
    .await;
    let (state, error) = match (result, state) {
        (Err(e), _) | (_, Err(e)) => (BatchState::Failed, Some(e.to_string())),
        (Ok(_), Ok(state)) => (state, None),
    };
    match &error {
        None => tracing::info!(batch_state = %state, "Left the migration"),
        Some(e) => tracing::error!(error = %e, "Left the migration"),
    }
    heartbeat.stop(&run, &stats).await;
    stats.do_send(StatsEvent::RunFinished { state, error });
}

/// Movers, ledger and the bucket's listing for this process's part of a
/// run, then the chunks until none is left.
async fn work_on_chunks(run: &Arc<RunContext>, stats: &Addr<Stats>) -> Result<i64, EngineError> {
    let ledger = Ledger::new(
        run.shared.pool.clone(),
        LedgerBatch {
            id: run.batch_id,
            direction: run.direction,
            log: run.log,
        },
        stats.clone(),
    )
    .start();
    // Movers are made as the concurrency in force asks for them; it may
    // grow during the run.
    let movers = {
        let run = run.clone();
        let stats = stats.clone();
        let ledger = ledger.clone();
        move || Mover::new(run.clone(), ledger.clone(), stats.clone()).start()
    };
    if run.direction == Direction::ToS3 {
        // The prefix followed by a slash, or the whole bucket.
        let prefix = run.layout.object_key("");
        match run.targets.take(&run.shared.s3, &prefix).await {
            Ok(()) => match run.targets.keys_held() {
                Some(n) => tracing::info!(
                    keys = n,
                    "Bucket listed: files without a target skip the HEAD"
                ),
                None => tracing::info!("Bucket too large to list up front: every file gets a HEAD"),
            },
            Err(e) => tracing::warn!(error = %e, "Cannot list the bucket: every file gets a HEAD"),
        }
    }
    dispatch_all(run, movers, ledger).await
}

/// How long a database call that fails because the database is away is
/// tried again before the run gives up.
const DB_PATIENCE: Duration = Duration::from_secs(120);

/// Runs a database step, trying again while the database is briefly away.
async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match step().await {
            Err(e) if super::is_transient(&e) && started.elapsed() < DB_PATIENCE => {
                tracing::warn!(error = %e, step = what, "Database away; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// One keyset page of a kind's candidates, `after < id <= until`.
async fn read_page(
    run: &RunContext,
    kind: FileKind,
    after: Uuid,
    until: Uuid,
    failed_in: Option<Uuid>,
) -> Result<candidates::Page, EngineError> {
    patiently("page", || async {
        let mut conn = db::conn(&run.shared.pool).await?;
        Ok(candidates::page(
            &mut conn,
            kind,
            run.direction,
            after,
            until,
            PAGE_SIZE,
            failed_in,
        )
        .await?)
    })
    .await
}

/// Cuts the candidates into chunks, one per keyset page, kind after kind;
/// then marks the batch as wholly cut. The pages end where a run's pages
/// would, so a chunk is at most one page of rows.
async fn write_chunks(run: &RunContext, kinds: &[FileKind]) -> Result<(), EngineError> {
    let failed_in = run.retry.then_some(run.batch_id);
    let mut seq = 0i32;
    for &kind in kinds {
        let mut after = Uuid::nil();
        loop {
            if run.cancelled() {
                return Ok(());
            }
            let page = read_page(run, kind, after, Uuid::max(), failed_in).await?;
            if !page.rows.is_empty() {
                let chunk = NewChunk {
                    seq,
                    kind: kind.api_key().to_string(),
                    after,
                    // The last chunk of a kind takes every id after it.
                    last: page.next.unwrap_or(Uuid::max()),
                    failed_only: run.retry,
                };
                seq += 1;
                patiently("chunk", || async {
                    let mut conn = db::conn(&run.shared.pool).await?;
                    Ok(chunks::add(&mut conn, run.batch_id, std::slice::from_ref(&chunk)).await?)
                })
                .await?;
                run.chunks_added.notify_one();
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    patiently("chunked", || async {
        let mut conn = db::conn(&run.shared.pool).await?;
        Ok(chunks::set_chunked(&mut conn, run.batch_id).await?)
    })
    .await?;
    run.chunks_added.notify_one();
    tracing::info!(chunks = seq, "Batch cut into chunks");
    Ok(())
}

/// Files copied whose records are not committed yet, at most: enough for
/// the ledger to group a few hundred per transaction, few enough to keep
/// memory small.
const MAX_UNCOMMITTED: usize = 2000;

/// A chunk this process holds, while its files are in flight.
struct ChunkWork {
    lease: Uuid,
    /// Set by the heartbeat when the lease was taken over.
    lost: Arc<AtomicBool>,
    /// Files in flight, plus one while its rows are being read.
    left: AtomicUsize,
    /// Every row of the chunk was handed out.
    whole: AtomicBool,
    /// A file handed out was not begun (`Outcome::NotStarted`).
    unbegun: AtomicBool,
}

impl ChunkWork {
    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// One file settled (or the reading ended); the last one marks the
    /// chunk done, or hands it back if it was not wholly handed out.
    async fn settle_one(&self, run: &RunContext) {
        if self.left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        if !self.lost() {
            let whole = self.whole.load(Ordering::SeqCst) && !self.unbegun.load(Ordering::SeqCst);
            let written = patiently("chunk done", || async {
                let mut conn = db::conn(&run.shared.pool).await?;
                Ok(if whole {
                    chunks::complete(&mut conn, run.batch_id, self.lease).await?
                } else {
                    chunks::release(&mut conn, run.batch_id, &[self.lease]).await?;
                    true
                })
            })
            .await;
            match written {
                Ok(true) => {}
                Ok(false) => tracing::warn!("A chunk's lease was taken over as it finished"),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot mark a chunk done; its lease runs out and another process checks it again")
                }
            }
        }
        run.leases.forget(self.lease);
    }
}

/// Leases chunk after chunk and feeds their files to the movers, until no
/// chunk is left to do (or the run is cancelled, or closed elsewhere);
/// returns how many files failed here. Two kinds of work are in flight:
/// movers copying (at most `concurrency`, each perhaps holding its next
/// file, see `Movers`), and copied files waiting for their commit and
/// source deletion (at most `MAX_UNCOMMITTED`).
async fn dispatch_all(
    run: &Arc<RunContext>,
    new_mover: impl Fn() -> Addr<Mover>,
    ledger: Addr<Ledger>,
) -> Result<i64, EngineError> {
    let mut movers = Movers::default();
    let mut settings = run.control.watch();
    let mut copying = FuturesUnordered::new();
    let mut committing = FuturesUnordered::new();
    let mut failed = 0i64;
    let mut count = |outcome: Outcome| {
        if matches!(outcome, Outcome::Failed { .. }) {
            failed += 1;
        }
    };
    let mut error = None;
    let lease_secs = run.shared.config.lease_secs;
    // The ledger was told that no mover is copying (see `Flush`).
    let mut told_idle = false;
    'chunks: loop {
        if run.cancelled() || run.ended() {
            break;
        }
        let claimed = patiently("lease", || async {
            let mut conn = db::conn(&run.shared.pool).await?;
            Ok(chunks::claim(&mut conn, run.batch_id, &run.worker, lease_secs).await?)
        })
        .await;
        let lease: Lease = match claimed {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let counts = patiently("chunks", || async {
                    let mut conn = db::conn(&run.shared.pool).await?;
                    Ok(chunks::counts(&mut conn, run.batch_id).await?)
                })
                .await;
                match counts {
                    Ok(c) if c.all_done() => break,
                    Ok(_) => {}
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
                // Chunks still being cut, held by processes that may stop
                // renewing them, or our own last ones still in flight: look
                // again soon, collecting the outcomes that come in
                // meanwhile, and at once when our own have all settled (the
                // end of a run waits on nothing else).
                let ours = !copying.is_empty() || !committing.is_empty();
                let pause = tokio::time::sleep(Duration::from_millis(250));
                tokio::pin!(pause);
                loop {
                    if copying.is_empty() {
                        ledger.do_send(Flush);
                        told_idle = true;
                    }
                    tokio::select! {
                        _ = &mut pause => break,
                        // A chunk this process cut: no need to wait the pause out.
                        _ = run.chunks_added.notified() => break,
                        Some((slot, handoff, chunk)) = copying.next(), if !copying.is_empty() => {
                            movers.done(slot);
                            committing.push(settle_in(run, handoff, chunk));
                        }
                        Some(outcome) = committing.next(), if !committing.is_empty() => count(outcome),
                    }
                    if ours && copying.is_empty() && committing.is_empty() {
                        break;
                    }
                }
                continue;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        let Some(kind) = FileKind::from_api_key(&lease.kind) else {
            error = Some(EngineError::Internal(format!(
                "chunk {} names an unknown kind {:?}",
                lease.seq, lease.kind
            )));
            break;
        };
        if lease.leases > 1 {
            tracing::info!(chunk = lease.seq, "Took over a chunk whose lease ran out");
        }
        let chunk = Arc::new(ChunkWork {
            lease: lease.lease,
            lost: run.leases.hold(lease.lease),
            left: AtomicUsize::new(1),
            whole: AtomicBool::new(false),
            unbegun: AtomicBool::new(false),
        });
        let failed_in = lease.failed_only.then_some(run.batch_id);
        let mut after = Some(lease.after_id);
        let mut rows = Vec::<Candidate>::new().into_iter();
        // The files about to be handed out, each with its look-ahead (see
        // `mover::look_ahead`) under way: as many as the concurrency.
        let mut ahead: VecDeque<(Candidate, JoinHandle<Ahead>)> = VecDeque::new();
        let whole = 'files: loop {
            let depth = usize::from(settings.borrow().concurrency);
            while ahead.len() < depth {
                if let Some(candidate) = rows.next() {
                    let look = actix::spawn(mover::look_ahead(run.clone(), candidate.clone()));
                    ahead.push_back((candidate, look));
                    continue;
                }
                let Some(from) = after else { break };
                match read_page(run, kind, from, lease.last_id, failed_in).await {
                    Ok(page) => {
                        rows = page.rows.into_iter();
                        after = page.next;
                    }
                    Err(e) => {
                        error = Some(e);
                        break 'files false;
                    }
                }
            }
            let Some((candidate, look)) = ahead.pop_front() else {
                break 'files true;
            };
            if run.cancelled() || run.ended() || chunk.lost() {
                break 'files false;
            }
            while committing.len() >= MAX_UNCOMMITTED {
                if let Some(outcome) = committing.next().await {
                    count(outcome);
                }
            }
            // Back-pressure: wait until a mover may take the file and the
            // run is not paused, collecting the outcomes that come in
            // meanwhile.
            let slot = loop {
                let now = settings.borrow_and_update().clone();
                if !now.paused {
                    if let Some(slot) = movers.pick(usize::from(now.concurrency), &new_mover) {
                        break slot;
                    }
                }
                tokio::select! {
                    Some((slot, handoff, done)) = copying.next(), if !copying.is_empty() => {
                        movers.done(slot);
                        committing.push(settle_in(run, handoff, done));
                    }
                    Some(outcome) = committing.next(), if !committing.is_empty() => count(outcome),
                    Ok(()) = settings.changed() => {}
                    _ = run.cancel.wait() => {}
                    // A close by another process is seen by the
                    // heartbeat, not announced.
                    _ = tokio::time::sleep(Duration::from_millis(500)), if now.paused => {}
                }
                if run.cancelled() || run.ended() || chunk.lost() {
                    break 'files false;
                }
            };
            // A look-ahead that failed to finish leaves the work to the
            // mover.
            let ahead = look.await.ok();
            chunk.left.fetch_add(1, Ordering::SeqCst);
            let this = chunk.clone();
            let mover = movers.addr(slot);
            if std::mem::take(&mut told_idle) {
                ledger.do_send(Copying);
            }
            copying.push(async move {
                let handoff = mover
                    .send(MoveFile {
                        kind,
                        candidate,
                        lease: this.lease,
                        ahead,
                    })
                    .await;
                (slot, handoff, this)
            });
        };
        chunk.whole.store(whole, Ordering::SeqCst);
        // The reading's own share of the chunk.
        committing.push(Box::pin(async move {
            chunk.settle_one(run).await;
            Outcome::HandedOver
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + '_>>);
        if error.is_some() {
            break 'chunks;
        }
    }
    while let Some((_, handoff, chunk)) = copying.next().await {
        committing.push(settle_in(run, handoff, chunk));
    }
    ledger.do_send(Flush);
    while let Some(outcome) = committing.next().await {
        count(outcome);
    }
    // Chunks held but not handed out whole (a cancel, an error) go back.
    let left = run.leases.tokens();
    if !left.is_empty() {
        if let Ok(mut conn) = db::conn(&run.shared.pool).await {
            let _ = chunks::release(&mut conn, run.batch_id, &left).await;
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(failed),
    }
}

/// A file's final outcome, and its share of its chunk.
fn settle_in<'a>(
    run: &'a RunContext,
    handoff: Result<Handoff, actix::MailboxError>,
    chunk: Arc<ChunkWork>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + 'a>> {
    Box::pin(async move {
        let outcome = settle(handoff).await;
        if outcome == Outcome::NotStarted {
            // Before its share is given back: the chunk goes back undone.
            tracing::info!(chunk_lease = %chunk.lease, "A file handed to a busy mover was not begun: its chunk goes back");
            chunk.unbegun.store(true, Ordering::SeqCst);
        }
        chunk.settle_one(run).await;
        outcome
    })
}

/// The movers, and how many files each holds: the one it copies and, at
/// most one, the next, handed over early so that it begins the moment the
/// mover is free rather than after a round trip through the orchestrator
/// (at concurrency 5 that trip was a tenth of each file's time).
#[derive(Default)]
struct Movers {
    slots: Vec<Slot>,
}

struct Slot {
    addr: Addr<Mover>,
    /// Files handed to it and not yet copied: 0, 1 or 2.
    holds: usize,
    /// When it began the file it copies (as the orchestrator knows it:
    /// handed over while free, or the file before it done).
    since: std::time::Instant,
}

impl Movers {
    /// The mover to hand the next file to, if any may take it: a free one
    /// while fewer than `concurrency` are copying, else (as many copying)
    /// the busy one that began its file the longest ago, if it holds no
    /// next file yet.
    fn pick(&mut self, concurrency: usize, new_mover: impl Fn() -> Addr<Mover>) -> Option<usize> {
        let copying = self.slots.iter().filter(|s| s.holds > 0).count();
        if copying < concurrency {
            let now = std::time::Instant::now();
            if let Some(i) = self.slots.iter().position(|s| s.holds == 0) {
                self.slots[i].holds = 1;
                self.slots[i].since = now;
                return Some(i);
            }
            self.slots.push(Slot {
                addr: new_mover(),
                holds: 1,
                since: now,
            });
            return Some(self.slots.len() - 1);
        }
        if copying > concurrency {
            // The concurrency was lowered: let the movers drain first.
            return None;
        }
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.holds == 1)
            .min_by_key(|(_, s)| s.since)?;
        slot.holds = 2;
        Some(i)
    }

    fn addr(&self, slot: usize) -> Addr<Mover> {
        self.slots[slot].addr.clone()
    }

    /// A mover has copied one of its files.
    fn done(&mut self, slot: usize) {
        let slot = &mut self.slots[slot];
        slot.holds = slot.holds.saturating_sub(1);
        if slot.holds == 1 {
            // It began the next file just now.
            slot.since = std::time::Instant::now();
        }
    }
}

/// A file's final outcome, from its mover's handoff.
async fn settle(handoff: Result<Handoff, actix::MailboxError>) -> Outcome {
    let internal = || Outcome::Failed {
        reason: crate::model::Reason::Internal,
    };
    match handoff {
        Ok(Handoff(outcome)) => outcome.await.unwrap_or_else(|_| internal()),
        Err(_) => internal(),
    }
}
