//! Our batch table: one row per migration (a resumed run continues its
//! batch), with its options, state and cumulative counters.

use super::{timed, DbConn, DbError};
use crate::model::{BatchState, Direction};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, QueryableByName, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub direction: String,
    #[diesel(sql_type = Text)]
    pub state: BatchState,
    /// The start options, as sent.
    #[diesel(sql_type = Jsonb)]
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub adopted: i64,
    /// Completed files that replaced a stale copy no row pointed at.
    #[diesel(sql_type = BigInt)]
    pub replaced: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub skipped: i64,
    #[diesel(sql_type = BigInt)]
    pub bytes_moved: i64,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    /// The database dump taken before the batch started.
    #[diesel(sql_type = Nullable<Text>)]
    pub dump_name: Option<String>,
}

const COLUMNS: &str =
    "id, direction, state, options, total, completed, adopted, replaced, failed, skipped,
                       bytes_moved, started_at, finished_at, error, dump_name";

/// Batches left `running` by a process that died. Only call this while
/// holding the migration lock, when no batch can really be running.
pub async fn mark_stale_interrupted(conn: &mut DbConn) -> Result<usize, DbError> {
    timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET state = $1, finished_at = clock_timestamp()
             WHERE state IN ($2, $3, $4)",
        )
        .bind::<Text, _>(BatchState::Interrupted)
        .bind::<Text, _>(BatchState::Running)
        .bind::<Text, _>(BatchState::Cancelling)
        .bind::<Text, _>(BatchState::Paused)
        .execute(conn),
    )
    .await
}

/// The most recent interrupted batch of this direction, to be resumed.
pub async fn resumable(conn: &mut DbConn, direction: Direction) -> Result<Option<Uuid>, DbError> {
    let rows: Vec<BatchRow> = timed(
        diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM noodle_migrate_batch
             WHERE direction = $1 AND state IN ($2, $3)
             ORDER BY started_at DESC LIMIT 1"
        ))
        .bind::<Text, _>(direction.as_str())
        .bind::<Text, _>(BatchState::Interrupted)
        .bind::<Text, _>(BatchState::Cancelled)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next().map(|r| r.id))
}

/// Creates a batch, or re-opens an interrupted one. Failures and skips of
/// earlier attempts are cleared: those files are tried again.
pub async fn open(
    conn: &mut DbConn,
    id: Uuid,
    direction: Direction,
    options: &serde_json::Value,
    to_do: i64,
    dump_name: Option<&str>,
) -> Result<BatchRow, DbError> {
    timed(
        diesel::sql_query("DELETE FROM noodle_migrate_failure WHERE batch_id = $1")
            .bind::<SqlUuid, _>(id)
            .execute(conn),
    )
    .await?;
    timed(
        diesel::sql_query(format!(
            "INSERT INTO noodle_migrate_batch (id, direction, state, options, total, dump_name)
             VALUES ($1, $2, $6, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE
               SET state = EXCLUDED.state, options = EXCLUDED.options,
                   total = noodle_migrate_batch.completed + EXCLUDED.total,
                   failed = 0, skipped = 0, finished_at = NULL, error = NULL,
                   dump_name = COALESCE(EXCLUDED.dump_name, noodle_migrate_batch.dump_name)
             RETURNING {COLUMNS}"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(direction.as_str())
        .bind::<Jsonb, _>(options.clone())
        .bind::<BigInt, _>(to_do)
        .bind::<Nullable<Text>, _>(dump_name)
        .bind::<Text, _>(BatchState::Running)
        .get_result(conn),
    )
    .await
}

pub async fn finish(
    conn: &mut DbConn,
    id: Uuid,
    state: BatchState,
    error: Option<&str>,
) -> Result<(), DbError> {
    timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET state = $2, error = $3, finished_at = clock_timestamp()
             WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(state)
        .bind::<Nullable<Text>, _>(error)
        .execute(conn),
    )
    .await?;
    Ok(())
}

pub async fn get(conn: &mut DbConn, id: Uuid) -> Result<Option<BatchRow>, DbError> {
    let rows: Vec<BatchRow> = timed(
        diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM noodle_migrate_batch WHERE id = $1"
        ))
        .bind::<SqlUuid, _>(id)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next())
}

pub async fn latest(conn: &mut DbConn) -> Result<Option<BatchRow>, DbError> {
    let rows: Vec<BatchRow> = timed(
        diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM noodle_migrate_batch ORDER BY started_at DESC LIMIT 1"
        ))
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// The batch open now (running, cancelling or paused), if any.
pub async fn current(conn: &mut DbConn) -> Result<Option<BatchRow>, DbError> {
    let rows: Vec<BatchRow> = timed(
        diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM noodle_migrate_batch WHERE state IN ($1, $2, $3)
             ORDER BY started_at DESC LIMIT 1"
        ))
        .bind::<Text, _>(BatchState::Running)
        .bind::<Text, _>(BatchState::Cancelling)
        .bind::<Text, _>(BatchState::Paused)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// Moves a batch from `from` to `to`; true when it was in `from`.
pub async fn switch(
    conn: &mut DbConn,
    id: Uuid,
    from: BatchState,
    to: BatchState,
) -> Result<bool, DbError> {
    let n = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET state = $3 WHERE id = $1 AND state = $2",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(from)
        .bind::<Text, _>(to)
        .execute(conn),
    )
    .await?;
    Ok(n == 1)
}

/// Replaces the options of a batch that runs or is paused (a change to a
/// run in progress); true when it does.
pub async fn set_options(
    conn: &mut DbConn,
    id: Uuid,
    options: &serde_json::Value,
) -> Result<bool, DbError> {
    let n = timed(
        diesel::sql_query(
            "UPDATE noodle_migrate_batch SET options = $2 WHERE id = $1 AND state IN ($3, $4)",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Jsonb, _>(options.clone())
        .bind::<Text, _>(BatchState::Running)
        .bind::<Text, _>(BatchState::Paused)
        .execute(conn),
    )
    .await?;
    Ok(n == 1)
}

/// Re-opens a batch to retry its failed files; their failure records stay
/// (they select the files) and are replaced as the files settle again.
pub async fn reopen_for_retry(conn: &mut DbConn, id: Uuid) -> Result<BatchRow, DbError> {
    timed(
        diesel::sql_query(format!(
            "UPDATE noodle_migrate_batch
             SET state = $2, failed = 0, finished_at = NULL, error = NULL WHERE id = $1
             RETURNING {COLUMNS}"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(BatchState::Running)
        .get_result(conn),
    )
    .await
}

/// Failed files of a batch, per kind.
pub async fn failed_per_kind(conn: &mut DbConn, id: Uuid) -> Result<Vec<(String, i64)>, DbError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let rows: Vec<Row> = timed(
        diesel::sql_query(
            "SELECT kind, count(*) AS n FROM noodle_migrate_failure
             WHERE batch_id = $1 AND outcome = 'failed' GROUP BY kind",
        )
        .bind::<SqlUuid, _>(id)
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.n)).collect())
}

/// Batches, newest first, started before `before` when given.
pub async fn list(
    conn: &mut DbConn,
    limit: i64,
    before: Option<DateTime<Utc>>,
) -> Result<Vec<BatchRow>, DbError> {
    timed(
        diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM noodle_migrate_batch
             WHERE ($1::timestamptz IS NULL OR started_at < $1)
             ORDER BY started_at DESC LIMIT $2"
        ))
        .bind::<Nullable<Timestamptz>, _>(before)
        .bind::<BigInt, _>(limit)
        .load(conn),
    )
    .await
}

#[derive(Debug, Clone, QueryableByName, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = SqlUuid)]
    pub entity_id: Uuid,
    #[diesel(sql_type = Text)]
    pub path: String,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

/// One page of a batch's failures and skips, in (kind, entity id) order,
/// after the given position.
pub async fn failures(
    conn: &mut DbConn,
    id: Uuid,
    after: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<FailureRow>, DbError> {
    let (kind, entity) = match after {
        Some((k, e)) => (k, e),
        None => (String::new(), Uuid::nil()),
    };
    timed(
        diesel::sql_query(
            "SELECT kind, entity_id, path, outcome, reason, message, at FROM noodle_migrate_failure
             WHERE batch_id = $1 AND (kind, entity_id) > ($2, $3)
             ORDER BY kind, entity_id LIMIT $4",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(kind)
        .bind::<SqlUuid, _>(entity)
        .bind::<BigInt, _>(limit)
        .load(conn),
    )
    .await
}

/// Rows in the gallery's `move_history`: the gallery is moving files itself.
pub async fn gallery_moves_in_flight(conn: &mut DbConn) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let exists: Vec<N> = timed(
        diesel::sql_query("SELECT count(*) AS n FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'move_history'")
            .load(conn),
    )
    .await?;
    if exists.iter().map(|r| r.n).next().unwrap_or(0) == 0 {
        return Ok(0);
    }
    let rows: Vec<N> =
        timed(diesel::sql_query("SELECT count(*) AS n FROM move_history").load(conn)).await?;
    Ok(rows.iter().map(|r| r.n).next().unwrap_or(0))
}
