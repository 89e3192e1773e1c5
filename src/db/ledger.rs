//! The ledger's statement: many files' path updates, their log rows, their
//! failure records and the batch's counters, in one SQL statement (one
//! round trip, atomic like a transaction).
//!
//! Every path update is optimistic (`AND path = old`): a row the gallery
//! changed meanwhile is left alone and reported back as a conflict, and it
//! gets no log row. A log row exists exactly when its path update happened.
//!
//! Its cost must not grow with the batch: a run writes up to millions of
//! log rows, and the gallery's log table has no index we could lean on to
//! look them up by batch (and we add none to its tables). So the statement
//! never searches the log: a file's log row is recognised by its own id,
//! made once per file, through the primary key, which also turns a
//! repeated insert into nothing.

use super::log::LogTable;
use super::tables::PathTable;
use super::{timed, DbConn, DbError};
use crate::model::{Direction, FileKind, Reason};
use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use std::collections::HashSet;
use uuid::Uuid;

/// A file that was copied (or adopted) and whose row should now point at
/// the copy.
#[derive(Debug, Clone)]
pub struct PathChange {
    /// The id of its log row, made once: a commit sent again after its
    /// answer was lost carries the same id, and the log's primary key makes
    /// the second insert a no-op.
    pub log_id: Uuid,
    pub kind: FileKind,
    pub row_id: Uuid,
    pub entity_id: Uuid,
    pub old_path: String,
    pub new_path: String,
    pub bytes: i64,
    pub adopted: bool,
    /// The copy replaced a stale object or file that no row pointed at.
    pub replaced: bool,
    /// The lease of the chunk the file belongs to.
    pub lease: Uuid,
}

/// The batch a group belongs to, and the log table it writes.
#[derive(Debug, Clone, Copy)]
pub struct LedgerBatch {
    pub id: Uuid,
    pub direction: Direction,
    pub log: LogTable,
}

/// A file that ended without moving.
#[derive(Debug, Clone)]
pub struct Unmoved {
    /// Made once per attempt at the file: a commit sent again carries the
    /// same one, and its record is then neither written nor counted again.
    pub attempt: Uuid,
    pub kind: FileKind,
    pub row_id: Uuid,
    pub entity_id: Uuid,
    pub path: String,
    /// A failure or a skip, by its reason.
    pub reason: Reason,
    pub message: String,
    /// The lease of the chunk the file belongs to.
    pub lease: Uuid,
}

/// What became of one record of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written (for a path change: the row now points at the copy).
    Done,
    /// The gallery changed the row meanwhile: nothing written but the skip.
    RowChanged,
    /// The chunk's lease was taken over by another process: nothing was
    /// written, the file is that process's now.
    Fenced,
}

/// A row of the group's answer: a path change that happened, or a lease
/// still held.
#[derive(QueryableByName)]
struct Answer {
    #[diesel(sql_type = Nullable<SqlUuid>)]
    log_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    lease: Option<Uuid>,
}

/// The whole group in one statement. Data-modifying CTEs all see the same
/// snapshot, so each step reads `v` (the group) and the `RETURNING` of the
/// path updates, never another step's writes.
///
/// It is idempotent, so a commit whose answer was lost can be sent again:
/// a row already at its new path with this file's log row counts as moved
/// (never as "changed by the gallery", which would delete the copy it now
/// points at), while one the gallery itself pointed there (no such log
/// row: it wrote its own object) is a changed row, not a move; its log row,
/// with the same id, is not inserted again (nor counted again), and a
/// failure record of the same attempt is not written or counted again.
///
/// It is fenced: it writes only the records of chunks whose lease is still
/// the one they name. `FOR SHARE` on those chunk rows makes a process
/// taking a chunk over wait for (or skip) a commit in flight, and a commit
/// that starts after the takeover finds the new token and writes nothing
/// of that chunk.
fn group_sql(log: LogTable) -> String {
    let log = log.name();
    // One optimistic update per table that holds paths (`u0` …): a row
    // moves from its old path, or is already at its new one with this
    // file's log row (a commit sent again).
    let updates: Vec<String> = PathTable::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"u{i} AS (UPDATE {table} t SET {col} = v.new_path FROM v
                 WHERE v.kind IN {kinds} AND t.id = v.row_id AND (t.{col} = v.old_path OR (t.{col} = v.new_path AND EXISTS (SELECT 1 FROM {log} l WHERE l."id" = v.log_id)))
                 RETURNING v.log_id)"#,
                table = t.name(),
                col = t.path(),
                kinds = t.kind_list(),
            )
        })
        .collect();
    let done: Vec<String> = (0..updates.len())
        .map(|i| format!("SELECT log_id FROM u{i}"))
        .collect();
    let (updates, done) = (updates.join(",\n           "), done.join(" UNION ALL "));
    format!(
        r#"WITH held AS (
             SELECT c.lease FROM noodle_migrate_chunk c
             WHERE c.batch_id = $1 AND c.lease = ANY($23::uuid[]) AND c.state = 'leased'
             FOR SHARE
           ),
           v AS (
             SELECT * FROM unnest($3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                                  $8::text[], $9::text[], $10::bool[], $11::bigint[], $12::uuid[],
                                  $20::bool[], $24::uuid[])
               AS v(kind, row_id, entity_id, old_path, new_path, entity_type, file_type, adopted, bytes, log_id,
                    replaced, lease)
             WHERE v.lease IN (SELECT lease FROM held)
           ),
           {updates},
           done AS ({done}),
           done_rows AS (SELECT v.* FROM v JOIN done USING (log_id)),
           -- A log row that is already there was written by an earlier
           -- attempt of this very commit whose answer was lost: the
           -- primary key skips it, and only the rows inserted now count.
           logged AS (
             INSERT INTO {log}
               ("id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
             SELECT log_id, entity_type, entity_id, NULLIF(file_type, ''), old_path, new_path, $2, $1
             FROM done_rows
             ON CONFLICT DO NOTHING
             RETURNING "id"
           ),
           moved AS (SELECT d.* FROM done_rows d JOIN logged l ON l."id" = d.log_id),
           cleared AS (
             DELETE FROM noodle_migrate_failure fl USING moved
             WHERE fl.batch_id = $1 AND fl.kind = moved.kind AND fl.entity_id = moved.entity_id
           ),
           changed AS (SELECT v.* FROM v WHERE v.log_id NOT IN (SELECT log_id FROM done)),
           unmoved AS (
             SELECT kind, row_id, entity_id, path, outcome, reason, message, attempt
             FROM unnest($13::text[], $14::uuid[], $15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[],
                         $21::uuid[], $25::uuid[])
               AS w(kind, row_id, entity_id, path, outcome, reason, message, attempt, lease)
             WHERE (w.kind, w.entity_id) NOT IN (SELECT kind, entity_id FROM changed)
               AND w.lease IN (SELECT lease FROM held)
             UNION ALL
             SELECT kind, row_id, entity_id, old_path, 'skipped', $22,
                    'the gallery changed this row''s path during the migration', log_id
             FROM changed
           ),
           -- Only records written now count: one from an earlier attempt
           -- of this very commit (same attempt) is left as it is.
           recorded AS (
             INSERT INTO noodle_migrate_failure AS fl
               (batch_id, kind, row_id, entity_id, path, outcome, reason, message, attempt)
             SELECT $1, kind, row_id, entity_id, path, outcome, reason, message, attempt FROM unmoved
             ON CONFLICT (batch_id, kind, entity_id) DO UPDATE
               SET row_id = EXCLUDED.row_id, path = EXCLUDED.path, outcome = EXCLUDED.outcome,
                   reason = EXCLUDED.reason, message = EXCLUDED.message, at = clock_timestamp(),
                   attempt = EXCLUDED.attempt
               WHERE fl.attempt IS DISTINCT FROM EXCLUDED.attempt
             RETURNING fl.outcome
           ),
           counted AS (
             UPDATE noodle_migrate_batch SET
               completed = completed + (SELECT count(*) FROM moved),
               adopted = adopted + (SELECT count(*) FROM moved WHERE adopted),
               replaced = replaced + (SELECT count(*) FROM moved WHERE replaced),
               bytes_moved = bytes_moved + (SELECT COALESCE(sum(bytes), 0) FROM moved WHERE NOT adopted),
               failed = failed + (SELECT count(*) FROM recorded WHERE outcome = 'failed'),
               skipped = skipped + (SELECT count(*) FROM recorded WHERE outcome = 'skipped')
             WHERE id = $1
           )
           SELECT log_id, NULL::uuid AS lease FROM done
           UNION ALL SELECT NULL::uuid, lease FROM held"#
    )
}

/// The group's statement with every value bound, after `prefix` (empty, or
/// an `EXPLAIN`).
fn group_query<'a>(
    prefix: &str,
    batch: LedgerBatch,
    changes: &'a [PathChange],
    unmoved: &'a [Unmoved],
) -> diesel::query_builder::BoxedSqlQuery<'a, Pg, diesel::query_builder::SqlQuery> {
    // One record per file; a later one in the same group wins.
    let mut records: Vec<&Unmoved> = unmoved.iter().rev().collect();
    let mut seen = HashSet::new();
    records.retain(|r| seen.insert((r.kind, r.entity_id)));
    let changed = |f: &dyn Fn(&PathChange) -> String| changes.iter().map(f).collect::<Vec<_>>();
    let recorded =
        |f: &dyn Fn(&Unmoved) -> String| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let leases: Vec<Uuid> = changes
        .iter()
        .map(|c| c.lease)
        .chain(records.iter().map(|r| r.lease))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    diesel::sql_query(format!("{prefix}{}", group_sql(batch.log)))
        .into_boxed::<Pg>()
        .bind::<SqlUuid, _>(batch.id)
        .bind::<Text, _>(batch.direction.as_str())
        .bind::<Array<Text>, _>(changed(&|c| c.kind.api_key().to_string()))
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.row_id).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.entity_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(changed(&|c| c.old_path.clone()))
        .bind::<Array<Text>, _>(changed(&|c| c.new_path.clone()))
        .bind::<Array<Text>, _>(changed(&|c| c.kind.log_entity_type().to_string()))
        .bind::<Array<Text>, _>(changed(&|c| {
            c.kind.log_file_type().unwrap_or("").to_string()
        }))
        .bind::<Array<Bool>, _>(changes.iter().map(|c| c.adopted).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(changes.iter().map(|c| c.bytes).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.log_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(recorded(&|r| r.kind.api_key().to_string()))
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.row_id).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.entity_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(recorded(&|r| r.path.clone()))
        .bind::<Array<Text>, _>(recorded(&|r| {
            if r.reason.is_failure() {
                "failed"
            } else {
                "skipped"
            }
            .to_string()
        }))
        .bind::<Array<Text>, _>(recorded(&|r| r.reason.as_str().to_string()))
        .bind::<Array<Text>, _>(recorded(&|r| r.message.clone()))
        .bind::<Array<Bool>, _>(changes.iter().map(|c| c.replaced).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.attempt).collect::<Vec<_>>())
        .bind::<Text, _>(Reason::RowChanged.as_str())
        .bind::<Array<SqlUuid>, _>(leases)
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.lease).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.lease).collect::<Vec<_>>())
}

/// What a group's commit did: each change's fate, in order, and each
/// unmoved record's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResult {
    pub changes: Vec<Committed>,
    pub unmoved: Vec<Committed>,
}

/// Commits a group.
pub async fn commit(
    conn: &mut DbConn,
    batch: LedgerBatch,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<GroupResult, DbError> {
    let answer: Vec<Answer> = timed(group_query("", batch, changes, unmoved).load(conn)).await?;
    let done: HashSet<Uuid> = answer.iter().filter_map(|a| a.log_id).collect();
    let held: HashSet<Uuid> = answer.iter().filter_map(|a| a.lease).collect();
    let fate = |lease: Uuid, done: bool| match (held.contains(&lease), done) {
        (false, _) => Committed::Fenced,
        (true, true) => Committed::Done,
        (true, false) => Committed::RowChanged,
    };
    Ok(GroupResult {
        changes: changes
            .iter()
            .map(|c| fate(c.lease, done.contains(&c.log_id)))
            .collect(),
        unmoved: unmoved.iter().map(|u| fate(u.lease, true)).collect(),
    })
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

/// How PostgreSQL runs a group's statement, as `EXPLAIN (ANALYZE,
/// BUFFERS)` prints it: the statement really runs, inside a transaction
/// that is then rolled back, so nothing changes.
pub async fn explain(
    conn: &mut DbConn,
    batch: LedgerBatch,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<Vec<String>, DbError> {
    timed(diesel::sql_query("BEGIN").execute(conn)).await?;
    // The group's chunks, held, as a run would hold them (rolled back
    // with the rest).
    let leases: Vec<Uuid> = changes
        .iter()
        .map(|c| c.lease)
        .chain(unmoved.iter().map(|u| u.lease))
        .collect();
    let held = timed(
        diesel::sql_query(
            "WITH b AS (
               INSERT INTO noodle_migrate_batch (id, direction, state, options)
               VALUES ($1, $2, 'running', '{}') ON CONFLICT (id) DO NOTHING
             )
             INSERT INTO noodle_migrate_chunk (batch_id, seq, kind, after_id, last_id, state, lease, lease_until)
             SELECT $1, -row_number() OVER (), 'originals', '00000000-0000-0000-0000-000000000000',
                    'ffffffff-ffff-ffff-ffff-ffffffffffff', 'leased', l, clock_timestamp() + interval '1 hour'
             FROM (SELECT DISTINCT unnest($3::uuid[]) AS l) AS leases",
        )
        .bind::<SqlUuid, _>(batch.id)
        .bind::<Text, _>(batch.direction.as_str())
        .bind::<Array<SqlUuid>, _>(leases)
        .execute(conn),
    )
    .await;
    if let Err(e) = held {
        timed(diesel::sql_query("ROLLBACK").execute(conn)).await?;
        return Err(e);
    }
    let plan: Result<Vec<PlanLine>, DbError> =
        timed(group_query("EXPLAIN (ANALYZE, BUFFERS) ", batch, changes, unmoved).load(conn)).await;
    timed(diesel::sql_query("ROLLBACK").execute(conn)).await?;
    Ok(plan?.into_iter().map(|l| l.line).collect())
}
