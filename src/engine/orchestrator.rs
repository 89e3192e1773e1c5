//! The orchestrator: accepts a start, runs the pre-flight checks, then
//! pages the candidates of each selected kind (keyset pages of 1000) and
//! hands them one by one to a pool of movers, waiting for an idle mover
//! before handing out the next file. That wait is the back-pressure: at
//! most one page and `concurrency` files are in memory, whatever the size
//! of the library.

use super::ledger::Ledger;
use super::messages::{
    BatchCounts, Cancel, GetStatus, Handoff, MoveFile, Outcome, RunEnded, Start, StartReply,
    StatsEvent,
};
use super::mover::Mover;
use super::run_state::{CancelSignal, RunState};
use super::stats::Stats;
use super::{EngineError, RunContext, Shared, StartOptions};
use crate::db::batches;
use crate::db::candidates::{self, PAGE_SIZE};
use crate::db::ledger::LedgerBatch;
use crate::db::lock::MigrationLock;
use crate::db::{self};
use crate::model::{Backend, BatchState, Direction, PerKind};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::{Arc, OnceLock};
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
                    act.set(RunState::Running {
                        cancel: cancel.clone(),
                        batch_id: batch.batch_id,
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
                        failed_in: retry_of,
                        side_work: tokio::sync::Semaphore::new(options.concurrency.get().into()),
                        targets: Default::default(),
                    });
                    act.stats.do_send(StatsEvent::RunStarted {
                        batch_id: batch.batch_id,
                        direction: options.direction,
                        resumed: batch.resumed,
                        earlier: batch.earlier,
                        planned: batch.planned,
                        started_at: chrono::Utc::now(),
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

/// The run itself: page, dispatch, drain, close the batch.
async fn execute(
    run: Arc<RunContext>,
    options: StartOptions,
    to_visit: PerKind<i64>,
    lock: MigrationLock,
    stats: Addr<Stats>,
) {
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
    let movers: Vec<Addr<Mover>> = (0..options.concurrency.get())
        .map(|_| Mover::new(run.clone(), ledger.clone(), stats.clone()).start())
        .collect();
    let lock = lock.keep(
        run.shared.config.database_url.expose().to_string(),
        run.cancel.flag(),
    );
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

    let result = dispatch_all(&run, &options, &to_visit, movers).await;
    if lock.lost() {
        // The batch is no longer ours to close: the process holding the
        // lock now has marked it interrupted and may be resuming it.
        let error = "another noodle-migrate process took the migration lock while the database restarted; this run stopped and left the batch to it".to_string();
        tracing::error!(error = %error, "Migration stopped");
        lock.release().await;
        stats.do_send(StatsEvent::RunFinished {
            state: BatchState::Interrupted,
            error: Some(error),
        });
        announce_end(&run, &stats).await;
        return;
    }
    let (final_state, error) = match result {
        Ok(_) if run.cancelled() => (BatchState::Cancelled, None),
        Ok(0) => (BatchState::Completed, None),
        Ok(_) => (BatchState::CompletedWithFailures, None),
        Err(e) => (BatchState::Failed, Some(e.to_string())),
    };
    match &error {
        None => tracing::info!(state = %final_state, "Migration finished"),
        Some(e) => tracing::error!(error = %e, "Migration stopped"),
    }
    let closed = async {
        let mut conn = db::conn(&run.shared.pool).await?;
        batches::finish(&mut conn, run.batch_id, final_state, error.as_deref()).await
    }
    .await;
    if let Err(e) = closed {
        tracing::error!(error = %e, "Cannot record the end of the batch; the next start will resume it");
    }
    lock.release().await;
    stats.do_send(StatsEvent::RunFinished {
        state: final_state,
        error,
    });
    announce_end(&run, &stats).await;
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

/// Files copied whose records are not committed yet, at most: enough for
/// the ledger to group a few hundred per transaction, few enough to keep
/// memory small.
const MAX_UNCOMMITTED: usize = 2000;

/// Feeds every candidate to the movers; returns how many files failed.
/// Two kinds of work are in flight: movers copying (at most
/// `concurrency`), and copied files waiting for their commit and source
/// deletion (at most `MAX_UNCOMMITTED`).
async fn dispatch_all(
    run: &RunContext,
    options: &StartOptions,
    to_visit: &PerKind<i64>,
    movers: Vec<Addr<Mover>>,
) -> Result<i64, EngineError> {
    let mut idle = movers;
    let mut copying = FuturesUnordered::new();
    let mut committing = FuturesUnordered::new();
    let mut failed = 0i64;
    let mut count = |outcome: Outcome| {
        if matches!(outcome, Outcome::Failed { .. }) {
            failed += 1;
        }
    };
    let mut page_error = None;
    // Kinds the pre-flight found nothing of cost no page read.
    let kinds = options.kinds().into_iter().filter(|k| to_visit.get(*k) > 0);
    'kinds: for kind in kinds {
        let mut after = Uuid::nil();
        loop {
            let page = async {
                let mut conn = db::conn(&run.shared.pool).await?;
                candidates::page(
                    &mut conn,
                    kind,
                    run.direction,
                    after,
                    PAGE_SIZE,
                    run.failed_in,
                )
                .await
            }
            .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    page_error = Some(EngineError::from(e));
                    break 'kinds;
                }
            };
            for candidate in page.rows {
                if run.cancelled() {
                    break 'kinds;
                }
                while committing.len() >= MAX_UNCOMMITTED {
                    if let Some(outcome) = committing.next().await {
                        count(outcome);
                    }
                }
                // Back-pressure: wait for a mover to come free, collecting
                // the outcomes that are ready meanwhile.
                let mover = loop {
                    if let Some(m) = idle.pop() {
                        break m;
                    }
                    tokio::select! {
                        Some((mover, handoff)) = copying.next() => {
                            committing.push(settle(handoff));
                            break mover;
                        }
                        Some(outcome) = committing.next(), if !committing.is_empty() => count(outcome),
                    }
                };
                copying.push(async move {
                    let handoff = mover.send(MoveFile { kind, candidate }).await;
                    (mover, handoff)
                });
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    while let Some((_, handoff)) = copying.next().await {
        committing.push(settle(handoff));
    }
    while let Some(outcome) = committing.next().await {
        count(outcome);
    }
    match page_error {
        Some(e) => Err(e),
        None => Ok(failed),
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
