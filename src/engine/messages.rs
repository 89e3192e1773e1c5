//! The messages the actors exchange, in one place so the protocol reads
//! top to bottom: orchestrator → mover → ledger, and everyone → stats.

use super::{EngineError, StartOptions};
use crate::db::candidates::Candidate;
use crate::db::ledger::{PathChange, Unmoved};
use crate::model::{BatchState, Direction, FileKind, PerKind, Reason};
use actix::Message;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// HTTP → orchestrator: begin (or resume) a migration; with `retry_of`,
/// run only the files that failed in that batch (and continue it).
#[derive(Message)]
#[rtype(result = "Result<StartReply, EngineError>")]
pub struct Start {
    pub options: StartOptions,
    pub retry_of: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct StartReply {
    pub batch_id: Uuid,
    pub resumed: bool,
    /// The dump taken before the run, when one was asked for.
    pub dump_name: Option<String>,
}

/// Worker loop → orchestrator: take part in a batch another process
/// started (its chunks, with this process's own movers).
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct Join(pub crate::db::chunks::Joinable);

/// Run task → orchestrator: the run is over, a new one may start.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunEnded;

/// HTTP or shutdown → orchestrator: stop handing out files, let the
/// in-flight ones finish, close the batch as cancelled (or stop a start
/// that is still preparing). Answers `None` when nothing runs, else the
/// batch id once the start has chosen it.
#[derive(Message)]
#[rtype(result = "Option<Option<Uuid>>")]
pub struct Cancel;

/// The batch this process runs, with its live settings; none when idle or
/// still preparing.
#[derive(Message)]
#[rtype(result = "Option<(Uuid, std::sync::Arc<super::control::RunControl>)>")]
pub struct GetControl;

/// Orchestrator → mover: move one file. The mover answers as soon as its
/// part is done (the copy made and verified, or the file refused); the
/// answer carries the file's final outcome, which comes once the ledger
/// has committed its record and the source is deleted.
#[derive(Message)]
#[rtype(result = "Handoff")]
pub struct MoveFile {
    pub kind: FileKind,
    pub candidate: Candidate,
    /// The lease of the file's chunk, which its records must name.
    pub lease: uuid::Uuid,
    /// What was done for the file before a mover was free for it.
    pub ahead: Option<super::mover::Ahead>,
}

/// A mover's answer: the file's outcome, to come.
pub struct Handoff(pub tokio::sync::oneshot::Receiver<Outcome>);

/// How one file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied (or adopted) and its row now points at the copy; `replaced`
    /// when the copy took the place of a stale one no row pointed at.
    Completed {
        adopted: bool,
        replaced: bool,
        bytes: u64,
    },
    /// Could not move: reported with a reason, retried on the next run.
    Failed { reason: Reason },
    /// Deliberately not moved (refused path, row changed meanwhile).
    Skipped { reason: Reason },
    /// Left to another process: the chunk's lease was taken over while the
    /// file was in flight, so nothing of it was written here.
    HandedOver,
    /// Handed to a mover behind the file it was busy with, and not begun:
    /// the run was cancelled (or closed elsewhere) meanwhile. Its chunk is
    /// not done.
    NotStarted,
}

/// Mover → ledger: write this down. The answer says whether it was
/// written, or why not (the gallery changed the row meanwhile, or the
/// chunk's lease was taken over).
#[derive(Message)]
#[rtype(result = "Result<crate::db::ledger::Committed, EngineError>")]
pub enum Record {
    Change(PathChange),
    Unmoved(Unmoved),
}

/// Orchestrator → ledger: no mover is copying, so no record is coming to
/// keep the pending ones company: commit them, and the records of files
/// already copied as they come, without lingering (until `Copying`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Orchestrator → ledger: movers are copying again, so records may linger
/// for company again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Copying;

/// Events for the stats actor (fire-and-forget: they are tiny and there is
/// at most a handful per file in flight).
#[derive(Message)]
#[rtype(result = "()")]
pub enum StatsEvent {
    RunStarted {
        batch_id: Uuid,
        direction: Direction,
        resumed: bool,
        /// The batch's counters as the run begins: status counts the
        /// batch, and a resumed batch or a retry carries on from them.
        earlier: BatchCounts,
        planned: PerKind<i64>,
        started_at: DateTime<Utc>,
        /// The run's live settings (concurrency, limit, pause).
        settings: tokio::sync::watch::Receiver<super::control::Settings>,
    },
    FileStarted,
    /// The mover let go of the file: copied (or refused), now on its way
    /// to the ledger.
    FileCopied,
    FileDone {
        kind: FileKind,
        outcome: Outcome,
        /// Time spent checking, copying and verifying (before the commit).
        copy_seconds: f64,
    },
    RunFinished {
        state: BatchState,
        error: Option<String>,
    },
    /// A ledger transaction committed (or failed) after `seconds`.
    CommitDone {
        seconds: f64,
        files: usize,
    },
    RollbackDone {
        outcome: &'static str,
    },
    Cancelling,
    /// The whole batch, as the database says, from the heartbeat.
    Batch(super::lease::BatchView),
}

/// Heartbeat → stats: this process's own part of the run.
#[derive(Message)]
#[rtype(result = "Own")]
pub struct GetOwn;

/// What this process did in the run (not the batch's earlier runs, nor the
/// other processes').
#[derive(Debug, Clone, Copy, Default, actix::MessageResponse)]
pub struct Own {
    pub active: i64,
    pub completed: i64,
    pub failed: i64,
    pub bytes_moved: i64,
    pub files_per_second: f64,
}

/// HTTP → stats: the current (or last) run in this process.
#[derive(Message)]
#[rtype(result = "Option<super::stats::StatusView>")]
pub struct GetStatus;

/// A batch's counters, as its row holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub total: i64,
    pub completed: i64,
    pub adopted: i64,
    pub replaced: i64,
    pub failed: i64,
    pub skipped: i64,
    pub bytes_moved: i64,
}

impl BatchCounts {
    pub fn of(row: &crate::db::batches::BatchRow) -> BatchCounts {
        BatchCounts {
            total: row.total,
            completed: row.completed,
            adopted: row.adopted,
            replaced: row.replaced,
            failed: row.failed,
            skipped: row.skipped,
            bytes_moved: row.bytes_moved,
        }
    }

    pub fn done(&self) -> i64 {
        self.completed + self.failed + self.skipped
    }
}
