//! The ledger actor: every file's outcome goes through it (path updates,
//! log rows, failure records, batch counters), grouped into one statement
//! per group. The orchestrator's own writes (opening and closing the
//! batch) and the movers' reads go straight to the pool. A group
//! commits once it holds `GROUP_TARGET` records or its first record has
//! waited `LINGER`, or at once while the orchestrator says no mover is
//! copying (from `Flush` to `Copying`: a file's record comes a moment
//! after its copy, and the last files of a run would otherwise wait out
//! the linger); records that arrive while one commit is in flight go into
//! the next.
//!
//! Movers do not wait for commits; each file's own task does, and deletes
//! the source only after its record is committed, so a source is never
//! deleted before the database stops needing it.

use super::messages::{Copying, Flush, Record, StatsEvent};
use super::stats::Stats;
use super::EngineError;
use crate::db::ledger::{commit, Committed, GroupResult, LedgerBatch, PathChange, Unmoved};
use crate::db::{self, DbConn, DbPool};
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseFuture, WrapFuture,
};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// The most records in one transaction.
const MAX_GROUP: usize = 500;
/// A group this large commits at once.
const GROUP_TARGET: usize = 200;
/// How long the first record of a group waits for company. Nobody waits
/// on a commit but the file's own task, so this costs no throughput and
/// saves most round trips.
const LINGER: Duration = Duration::from_millis(100);
/// How long a group commit is tried again while the database is away (a
/// restart, a failover): longer than a restart takes, so the files in
/// flight ride it out instead of failing.
const COMMIT_PATIENCE: Duration = Duration::from_secs(60);

struct Pending {
    record: Record,
    reply: oneshot::Sender<Result<Committed, EngineError>>,
}

pub struct Ledger {
    pool: DbPool,
    batch: LedgerBatch,
    pending: Vec<Pending>,
    /// When the oldest pending record arrived.
    first_at: Option<std::time::Instant>,
    /// A wake-up for when the oldest pending record has lingered enough.
    timer: Option<actix::SpawnHandle>,
    /// A commit is in flight; records arriving meanwhile form the next group.
    committing: bool,
    /// No mover is copying: what is pending, and what comes, commits
    /// without lingering.
    hurry: bool,
    /// The connection commits run on, between commits.
    conn: Option<DbConn>,
    stats: Addr<Stats>,
}

impl Ledger {
    pub fn new(pool: DbPool, batch: LedgerBatch, stats: Addr<Stats>) -> Ledger {
        Ledger {
            pool,
            batch,
            pending: Vec::new(),
            first_at: None,
            timer: None,
            committing: false,
            hurry: false,
            conn: None,
            stats,
        }
    }

    /// Commits the pending records if the group is big or old enough and
    /// no commit is in flight; otherwise makes sure a timer will look again.
    fn consider(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        let waited = self.first_at.map(|t| t.elapsed()).unwrap_or(LINGER);
        if self.pending.len() >= GROUP_TARGET || waited >= LINGER || self.hurry {
            if let Some(timer) = self.timer.take() {
                ctx.cancel_future(timer);
            }
            self.flush(ctx);
        } else if self.timer.is_none() {
            self.timer = Some(ctx.run_later(LINGER - waited, |act, ctx| {
                act.timer = None;
                act.consider(ctx);
            }));
        }
    }

    /// Commits everything pending (up to `MAX_GROUP`); when it lands, the
    /// records that arrived meanwhile are considered next.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.committing = true;
        let take = self.pending.len().min(MAX_GROUP);
        let group: Vec<Pending> = self.pending.drain(..take).collect();
        self.first_at = if self.pending.is_empty() {
            None
        } else {
            Some(std::time::Instant::now())
        };
        let pool = self.pool.clone();
        let mut held = self.conn.take();
        let batch = self.batch;
        let stats = self.stats.clone();
        let span = tracing::info_span!("ledger", batch_id = %batch.id);
        ctx.spawn(
            async move {
                let mut changes: Vec<PathChange> = Vec::new();
                let mut unmoved: Vec<Unmoved> = Vec::new();
                for p in &group {
                    match &p.record {
                        Record::Change(c) => changes.push(c.clone()),
                        Record::Unmoved(u) => unmoved.push(u.clone()),
                    }
                }
                let clock = std::time::Instant::now();
                let result = commit_with_retry(&pool, &mut held, batch, &changes, &unmoved).await;
                stats.do_send(StatsEvent::CommitDone {
                    seconds: clock.elapsed().as_secs_f64(),
                    files: group.len(),
                });
                (group, result, held)
            }
            .instrument(span)
            .into_actor(self)
            .map(|(group, result, held), act, ctx| {
                act.conn = held;
                let (mut changed, mut unmoved) = match &result {
                    Ok(r) => (r.changes.clone().into_iter(), r.unmoved.clone().into_iter()),
                    Err(_) => (Vec::new().into_iter(), Vec::new().into_iter()),
                };
                for p in group {
                    let answer = match (&result, &p.record) {
                        (Err(e), _) => Err(EngineError::Ledger(e.to_string())),
                        (Ok(_), Record::Change(_)) => changed
                            .next()
                            .ok_or_else(|| EngineError::Ledger("a change went unanswered".into())),
                        (Ok(_), Record::Unmoved(_)) => unmoved
                            .next()
                            .ok_or_else(|| EngineError::Ledger("a record went unanswered".into())),
                    };
                    let _ = p.reply.send(answer);
                }
                act.committing = false;
                act.consider(ctx);
            }),
        );
    }
}

/// Commits on the ledger's own connection (kept between groups, so a commit
/// is one round trip: no pool check-out and its liveness probe), opening a
/// new one after an error.
async fn commit_with_retry(
    pool: &DbPool,
    held: &mut Option<DbConn>,
    batch: LedgerBatch,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<GroupResult, db::DbError> {
    let started = std::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = async {
            // A kept connection may have died since the last group (a
            // database restart): on any error, try once more on a fresh one.
            if let Some(mut conn) = held.take() {
                if let Ok(done) = commit(&mut conn, batch, changes, unmoved).await {
                    *held = Some(conn);
                    return Ok(done);
                }
            }
            let mut conn = db::conn(pool).await?;
            let result = commit(&mut conn, batch, changes, unmoved).await;
            if result.is_ok() {
                *held = Some(conn);
            }
            result
        }
        .await;
        match result {
            Err(e) if e.is_unavailable() && started.elapsed() < COMMIT_PATIENCE => {
                tracing::warn!(error = %e, attempt, "Ledger commit failed, retrying");
                let backoff = 200u64 * 2u64.pow(attempt.min(3)) + rand::random_range(0..200);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            other => return other,
        }
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Flush> for Ledger {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.hurry = true;
        self.consider(ctx);
    }
}

impl Handler<Copying> for Ledger {
    type Result = ();

    fn handle(&mut self, _: Copying, _: &mut Context<Self>) {
        self.hurry = false;
    }
}

impl Handler<Record> for Ledger {
    type Result = ResponseFuture<Result<Committed, EngineError>>;

    fn handle(&mut self, record: Record, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        if self.pending.is_empty() {
            self.first_at = Some(std::time::Instant::now());
        }
        self.pending.push(Pending { record, reply });
        self.consider(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Ledger("the ledger stopped".into())))
        })
    }
}
