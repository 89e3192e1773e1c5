//! How several processes share one batch: its candidates cut into chunks
//! (one kind, a range of row ids), leased with `FOR UPDATE SKIP LOCKED`,
//! renewed by heartbeats, and marked done; and one row per process with
//! its latest numbers. The database's clock times every lease, so hosts
//! whose clocks disagree still agree on when a lease ran out.
//!
//! A lease is a token. Whoever takes an expired chunk over gets a new one,
//! and every write made for a chunk names its token (the ledger's commits
//! through [`super::ledger`], marking it done here), so a process whose
//! lease was taken writes nothing more for that chunk.

use super::{timed, DbConn, DbError};
use crate::db::batches::BatchRow;
use crate::model::BatchState;
use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A chunk to be written: `after < row id <= last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChunk {
    pub seq: i32,
    pub kind: String,
    pub after: Uuid,
    pub last: Uuid,
    pub failed_only: bool,
}

/// A chunk this process holds, and the token that proves it.
#[derive(Debug, Clone, QueryableByName)]
pub struct Lease {
    #[diesel(sql_type = Integer)]
    pub seq: i32,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = SqlUuid)]
    pub after_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub last_id: Uuid,
    #[diesel(sql_type = Bool)]
    pub failed_only: bool,
    #[diesel(sql_type = SqlUuid)]
    pub lease: Uuid,
    /// More than 1: the chunk was taken over from a process that stopped
    /// renewing it.
    #[diesel(sql_type = Integer)]
    pub leases: i32,
}

/// Forgets the chunks and workers of an earlier run of the batch (a resume
/// or a retry cuts it anew) and records where it works.
pub async fn reset(
    conn: &mut DbConn,
    batch: Uuid,
    scope: &str,
    log_table: &str,
) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM noodle_migrate_chunk WHERE batch_id = $1",
        "DELETE FROM noodle_migrate_worker WHERE batch_id = $1",
    ] {
        timed(
            diesel::sql_query(sql)
                .bind::<SqlUuid, _>(batch)
                .execute(conn),
        )
        .await?;
    }
    timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET chunked = false, scope = $2, log_table = $3 WHERE id = $1",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Text, _>(scope)
        .bind::<Text, _>(log_table)
        .execute(conn),
    )
    .await?;
    Ok(())
}

/// Writes chunks, in one statement.
pub async fn add(conn: &mut DbConn, batch: Uuid, chunks: &[NewChunk]) -> Result<(), DbError> {
    if chunks.is_empty() {
        return Ok(());
    }
    timed(
        diesel::sql_query(
            "INSERT INTO noodle_migrate_chunk (batch_id, seq, kind, after_id, last_id, failed_only)
             SELECT $1, * FROM unnest($2::int[], $3::text[], $4::uuid[], $5::uuid[], $6::bool[])
             ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Array<Integer>, _>(chunks.iter().map(|c| c.seq).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(chunks.iter().map(|c| c.kind.clone()).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(chunks.iter().map(|c| c.after).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(chunks.iter().map(|c| c.last).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(chunks.iter().map(|c| c.failed_only).collect::<Vec<_>>())
        .execute(conn),
    )
    .await?;
    Ok(())
}

/// Every chunk of the batch is written.
pub async fn set_chunked(conn: &mut DbConn, batch: Uuid) -> Result<(), DbError> {
    timed(
        diesel::sql_query("UPDATE noodle_migrate_batch SET chunked = true WHERE id = $1")
            .bind::<SqlUuid, _>(batch)
            .execute(conn),
    )
    .await?;
    Ok(())
}

/// Leases the first chunk nobody holds (pending, or leased by a process
/// whose lease ran out) while the batch runs. Rows another process is
/// claiming or committing for are skipped, never waited for.
pub async fn claim(
    conn: &mut DbConn,
    batch: Uuid,
    owner: &str,
    lease_secs: u64,
) -> Result<Option<Lease>, DbError> {
    let rows: Vec<Lease> = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_chunk c
             SET state = 'leased', owner = $2, lease = gen_random_uuid(),
                 lease_until = clock_timestamp() + make_interval(secs => $3), leases = c.leases + 1
             WHERE (c.batch_id, c.seq) = (
               SELECT batch_id, seq FROM noodle_migrate_chunk
               WHERE batch_id = $1
                 AND (state = 'pending' OR (state = 'leased' AND lease_until < clock_timestamp()))
                 AND EXISTS (SELECT 1 FROM noodle_migrate_batch b WHERE b.id = $1 AND b.state = $4)
               ORDER BY seq LIMIT 1
               FOR UPDATE SKIP LOCKED)
             RETURNING c.seq, c.kind, c.after_id, c.last_id, c.failed_only, c.lease, c.leases",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Text, _>(owner)
        .bind::<Double, _>(lease_secs as f64)
        .bind::<Text, _>(BatchState::Running)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next())
}

#[derive(QueryableByName)]
struct Token {
    #[diesel(sql_type = SqlUuid)]
    lease: Uuid,
}

/// Extends the leases still held; returns those (a lease missing from the
/// answer was taken over, or its chunk is gone).
pub async fn renew(
    conn: &mut DbConn,
    batch: Uuid,
    leases: &[Uuid],
    lease_secs: u64,
) -> Result<Vec<Uuid>, DbError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Token> = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_chunk SET lease_until = clock_timestamp() + make_interval(secs => $3)
             WHERE batch_id = $1 AND lease = ANY($2) AND state = 'leased'
             RETURNING lease",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Array<SqlUuid>, _>(leases)
        .bind::<Double, _>(lease_secs as f64)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().map(|t| t.lease).collect())
}

/// Marks a chunk done, if the lease is still this process's.
pub async fn complete(conn: &mut DbConn, batch: Uuid, lease: Uuid) -> Result<bool, DbError> {
    let n = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_chunk SET state = 'done', lease_until = NULL
             WHERE batch_id = $1 AND lease = $2 AND state = 'leased'",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<SqlUuid, _>(lease)
        .execute(conn),
    )
    .await?;
    Ok(n == 1)
}

/// Hands chunks back unfinished (a cancel, a shutdown): another process,
/// or the next run, takes them at once.
pub async fn release(conn: &mut DbConn, batch: Uuid, leases: &[Uuid]) -> Result<(), DbError> {
    if leases.is_empty() {
        return Ok(());
    }
    timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_chunk SET state = 'pending', owner = NULL, lease = NULL, lease_until = NULL
             WHERE batch_id = $1 AND lease = ANY($2) AND state = 'leased'",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Array<SqlUuid>, _>(leases)
        .execute(conn),
    )
    .await?;
    Ok(())
}

/// How far the batch's chunks are.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    QueryableByName,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ChunkCounts {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// Leased by a process (its lease may have run out: another takes the
    /// chunk over).
    #[diesel(sql_type = BigInt)]
    pub leased: i64,
    #[diesel(sql_type = BigInt)]
    pub done: i64,
    /// Leases that ran out and were taken over by another process.
    #[diesel(sql_type = BigInt)]
    pub taken_over: i64,
    /// Every chunk of the batch is written.
    #[diesel(sql_type = Bool)]
    pub complete: bool,
}

impl ChunkCounts {
    /// Nothing is left to lease or to wait for.
    pub fn all_done(&self) -> bool {
        self.complete && self.pending == 0 && self.leased == 0
    }
}

pub async fn counts(conn: &mut DbConn, batch: Uuid) -> Result<ChunkCounts, DbError> {
    timed(
        diesel::sql_query(
            "SELECT count(*) FILTER (WHERE c.state = 'pending') AS pending,
                    count(*) FILTER (WHERE c.state = 'leased') AS leased,
                    count(*) FILTER (WHERE c.state = 'done') AS done,
                    COALESCE(sum(c.leases - 1) FILTER (WHERE c.leases > 1), 0)::bigint AS taken_over,
                    COALESCE((SELECT chunked FROM noodle_migrate_batch WHERE id = $1), false) AS complete
             FROM noodle_migrate_chunk c WHERE c.batch_id = $1",
        )
        .bind::<SqlUuid, _>(batch)
        .get_result(conn),
    )
    .await
}

/// Unexpired leases of the batch: processes still finishing chunks.
pub async fn live_leases(conn: &mut DbConn, batch: Uuid) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: N = timed(
        diesel::sql_query(
            "SELECT count(*) AS n FROM noodle_migrate_chunk
             WHERE batch_id = $1 AND state = 'leased' AND lease_until >= clock_timestamp()",
        )
        .bind::<SqlUuid, _>(batch)
        .get_result(conn),
    )
    .await?;
    Ok(row.n)
}

/// Closes the batch once its last chunk is done, whoever marked it: the
/// first process to see that wins, the others find it closed. Completed
/// with failures while a file's latest outcome is a failure.
pub async fn close_if_done(conn: &mut DbConn, batch: Uuid) -> Result<Option<BatchState>, DbError> {
    #[derive(QueryableByName)]
    struct Closed {
        #[diesel(sql_type = Text)]
        state: BatchState,
    }
    let rows: Vec<Closed> = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch b
             SET state = CASE WHEN EXISTS (SELECT 1 FROM noodle_migrate_failure f
                                           WHERE f.batch_id = b.id AND f.outcome = 'failed')
                              THEN $3 ELSE $2 END,
                 finished_at = clock_timestamp()
             WHERE b.id = $1 AND b.state IN ($4, $5) AND b.chunked
               AND NOT EXISTS (SELECT 1 FROM noodle_migrate_chunk c WHERE c.batch_id = b.id AND c.state <> 'done')
             RETURNING b.state",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Text, _>(BatchState::Completed)
        .bind::<Text, _>(BatchState::CompletedWithFailures)
        .bind::<Text, _>(BatchState::Running)
        .bind::<Text, _>(BatchState::Paused)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next().map(|c| c.state))
}

/// Asks every process of a running batch to stop (they read the state at
/// each heartbeat). True when the batch was running.
pub async fn request_cancel(conn: &mut DbConn, batch: Uuid) -> Result<bool, DbError> {
    let n = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET state = $2 WHERE id = $1 AND state IN ($3, $4)",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Text, _>(BatchState::Cancelling)
        .bind::<Text, _>(BatchState::Running)
        .bind::<Text, _>(BatchState::Paused)
        .execute(conn),
    )
    .await?;
    Ok(n == 1)
}

/// A batch a worker may join, and where it works.
#[derive(Debug, Clone)]
pub struct Joinable {
    pub batch: BatchRow,
    pub scope: Option<String>,
    pub log_table: Option<String>,
}

/// The running batch, if any.
pub async fn running(conn: &mut DbConn) -> Result<Option<Joinable>, DbError> {
    #[derive(QueryableByName)]
    struct Where {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Nullable<Text>)]
        scope: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        log_table: Option<String>,
    }
    let rows: Vec<Where> = timed(
        diesel::sql_query(
            "SELECT id, scope, log_table FROM noodle_migrate_batch WHERE state = $1
             ORDER BY started_at DESC LIMIT 1",
        )
        .bind::<Text, _>(BatchState::Running)
        .load(conn),
    )
    .await?;
    let Some(w) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(super::batches::get(conn, w.id)
        .await?
        .map(|batch| Joinable {
            batch,
            scope: w.scope,
            log_table: w.log_table,
        }))
}

/// A batch's state now.
pub async fn state(conn: &mut DbConn, batch: Uuid) -> Result<Option<BatchState>, DbError> {
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = Text)]
        state: BatchState,
    }
    let rows: Vec<S> = timed(
        diesel::sql_query("SELECT state FROM noodle_migrate_batch WHERE id = $1")
            .bind::<SqlUuid, _>(batch)
            .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next().map(|s| s.state))
}

/// One process's numbers for a batch, as its heartbeat reports them.
#[derive(Debug, Clone, PartialEq, QueryableByName, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRow {
    /// `host:pid`.
    #[diesel(sql_type = Text)]
    pub id: String,
    /// `running`, `draining` (finishing the files in flight), `left`, or
    /// `lost` (no heartbeat for longer than a lease: it died, or lost the
    /// database).
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub active: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub bytes_moved: i64,
    #[diesel(sql_type = Double)]
    pub files_per_second: f64,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen: DateTime<Utc>,
}

impl WorkerRow {
    /// Still working on the batch (running, or finishing its files in
    /// flight).
    pub fn is_live(&self) -> bool {
        self.state == "running" || self.state == "draining"
    }
}

pub async fn beat(conn: &mut DbConn, batch: Uuid, w: &WorkerRow) -> Result<(), DbError> {
    timed(
        diesel::sql_query(
            "INSERT INTO noodle_migrate_worker
               (batch_id, id, state, active, completed, failed, bytes_moved, files_per_second, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())
             ON CONFLICT (batch_id, id) DO UPDATE SET
               state = EXCLUDED.state, active = EXCLUDED.active, completed = EXCLUDED.completed,
               failed = EXCLUDED.failed, bytes_moved = EXCLUDED.bytes_moved,
               files_per_second = EXCLUDED.files_per_second, last_seen = EXCLUDED.last_seen",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<Text, _>(&w.id)
        .bind::<Text, _>(&w.state)
        .bind::<BigInt, _>(w.active)
        .bind::<BigInt, _>(w.completed)
        .bind::<BigInt, _>(w.failed)
        .bind::<BigInt, _>(w.bytes_moved)
        .bind::<Double, _>(w.files_per_second)
        .execute(conn),
    )
    .await?;
    Ok(())
}

/// The batch's processes, most recently seen first.
pub async fn workers(
    conn: &mut DbConn,
    batch: Uuid,
    limit: i64,
    lease_secs: u64,
) -> Result<Vec<WorkerRow>, DbError> {
    timed(
        diesel::sql_query(
            "SELECT id,
                    CASE WHEN state <> 'left' AND last_seen < clock_timestamp() - make_interval(secs => $3)
                         THEN 'lost' ELSE state END AS state,
                    CASE WHEN state IN ('running', 'draining') AND last_seen >= clock_timestamp() - make_interval(secs => $3)
                         THEN active ELSE 0 END AS active,
                    completed, failed, bytes_moved, files_per_second, last_seen
             FROM noodle_migrate_worker WHERE batch_id = $1 ORDER BY last_seen DESC, id LIMIT $2",
        )
        .bind::<SqlUuid, _>(batch)
        .bind::<BigInt, _>(limit)
        .bind::<Double, _>(lease_secs as f64)
        .load(conn),
    )
    .await
}
