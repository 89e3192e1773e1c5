//! The ledger actor: every database write of a run goes through it, so
//! writes never interleave, and they are grouped: the records that arrive
//! while one commit is in flight commit together in the next one (path
//! updates, log rows, failure records, batch counters: one statement).
//!
//! A mover waits for its record to be committed before it deletes a
//! source, so a source is never deleted before the database stops
//! needing it.

use super::messages::{Record, StatsEvent};
use super::stats::Stats;
use super::EngineError;
use crate::db::ledger::{commit, PathChange, Unmoved};
use crate::db::{self, DbConn, DbPool};
use crate::model::Direction;
use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseFuture, WrapFuture,
};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

/// The most records in one transaction.
const MAX_GROUP: usize = 500;
/// Attempts at a group commit when the database is briefly away.
const COMMIT_ATTEMPTS: u32 = 4;

struct Pending {
    record: Record,
    reply: oneshot::Sender<Result<bool, EngineError>>,
}

pub struct Ledger {
    pool: DbPool,
    batch_id: Uuid,
    direction: Direction,
    pending: Vec<Pending>,
    /// A commit is in flight; records arriving meanwhile form the next group.
    committing: bool,
    /// The connection commits run on, between commits.
    conn: Option<DbConn>,
    stats: Addr<Stats>,
}

impl Ledger {
    pub fn new(pool: DbPool, batch_id: Uuid, direction: Direction, stats: Addr<Stats>) -> Ledger {
        Ledger {
            pool,
            batch_id,
            direction,
            pending: Vec::new(),
            committing: false,
            conn: None,
            stats,
        }
    }

    /// Commits everything pending (up to `MAX_GROUP`) unless a commit is in
    /// flight; when it lands, the records that arrived meanwhile go next.
    /// No timer: a lone record commits at once, a busy run groups itself.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        self.committing = true;
        let take = self.pending.len().min(MAX_GROUP);
        let group: Vec<Pending> = self.pending.drain(..take).collect();
        let pool = self.pool.clone();
        let mut held = self.conn.take();
        let (batch_id, direction) = (self.batch_id, self.direction);
        let stats = self.stats.clone();
        let span = tracing::info_span!("ledger", batch_id = %batch_id);
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
                let result =
                    commit_with_retry(&pool, &mut held, batch_id, direction, &changes, &unmoved)
                        .await;
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
                let mut done = match &result {
                    Ok(done) => done.clone().into_iter(),
                    Err(_) => Vec::new().into_iter(),
                };
                for p in group {
                    let answer = match (&result, &p.record) {
                        (Err(e), _) => Err(EngineError::Ledger(e.to_string())),
                        (Ok(_), Record::Change(_)) => Ok(done.next().unwrap_or(false)),
                        (Ok(_), Record::Unmoved(_)) => Ok(true),
                    };
                    let _ = p.reply.send(answer);
                }
                act.committing = false;
                act.flush(ctx);
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
    batch_id: Uuid,
    direction: Direction,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<Vec<bool>, db::DbError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            // A kept connection may have died since the last group (a
            // database restart): on any error, try once more on a fresh one.
            if let Some(mut conn) = held.take() {
                if let Ok(done) = commit(&mut conn, batch_id, direction, changes, unmoved).await {
                    *held = Some(conn);
                    return Ok(done);
                }
            }
            let mut conn = db::conn(pool).await?;
            let result = commit(&mut conn, batch_id, direction, changes, unmoved).await;
            if result.is_ok() {
                *held = Some(conn);
            }
            result
        }
        .await;
        match result {
            Err(e) if e.is_unavailable() && attempt < COMMIT_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "Ledger commit failed, retrying");
                let backoff = 200u64 * 2u64.pow(attempt) + rand::random_range(0..200);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            other => return other,
        }
    }
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Record> for Ledger {
    type Result = ResponseFuture<Result<bool, EngineError>>;

    fn handle(&mut self, record: Record, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.pending.push(Pending { record, reply });
        self.flush(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Ledger("the ledger stopped".into())))
        })
    }
}
