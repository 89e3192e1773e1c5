//! The ledger's statement: many files' path updates, their log rows, their
//! failure records and the batch's counters, in one SQL statement (one
//! round trip, atomic like a transaction).
//!
//! Every path update is optimistic (`AND path = old`): a row the gallery
//! changed meanwhile is left alone and reported back as a conflict, and it
//! gets no log row. A log row exists exactly when its path update happened.

use super::log::LogTable;
use super::{timed, DbConn, DbError};
use crate::model::{Direction, FileKind};
use diesel::sql_types::{Array, BigInt, Bool, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use std::collections::HashSet;
use uuid::Uuid;

/// A file that was copied (or adopted) and whose row should now point at
/// the copy.
#[derive(Debug, Clone)]
pub struct PathChange {
    pub kind: FileKind,
    pub row_id: Uuid,
    pub entity_id: Uuid,
    pub old_path: String,
    pub new_path: String,
    pub bytes: i64,
    pub adopted: bool,
    /// The copy replaced a stale object or file that no row pointed at.
    pub replaced: bool,
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
    pub kind: FileKind,
    pub row_id: Uuid,
    pub entity_id: Uuid,
    pub path: String,
    pub failed: bool,
    pub reason: String,
    pub message: String,
}

/// `v.kind` values whose path lives in `asset_file.path`.
const ASSET_FILE_KINDS: &str =
    "('thumbnails', 'previews', 'fullsize', 'sidecars', 'encodedVideos')";

#[derive(QueryableByName)]
struct Done {
    #[diesel(sql_type = SqlUuid)]
    log_id: Uuid,
}

/// The whole group in one statement. Data-modifying CTEs all see the same
/// snapshot, so each step reads `v` (the group) and the `RETURNING` of the
/// path updates, never another step's writes.
///
/// It is idempotent, so a commit whose answer was lost can be sent again:
/// a row already at its new path counts as moved (never as "changed by the
/// gallery", which would delete the copy it now points at), and gets no
/// second log row.
fn group_sql(log: LogTable) -> String {
    let log = log.name();
    format!(
        r#"WITH v AS (
             SELECT * FROM unnest($3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                                  $8::text[], $9::text[], $10::bool[], $11::bigint[], $12::uuid[],
                                  $20::bool[])
               AS v(kind, row_id, entity_id, old_path, new_path, entity_type, file_type, adopted, bytes, log_id,
                    replaced)
           ),
           a AS (UPDATE asset t SET "originalPath" = v.new_path FROM v
                 WHERE v.kind = 'originals' AND t.id = v.row_id AND t."originalPath" IN (v.old_path, v.new_path)
                 RETURNING v.log_id),
           f AS (UPDATE asset_file t SET path = v.new_path FROM v
                 WHERE v.kind IN {ASSET_FILE_KINDS} AND t.id = v.row_id AND t.path IN (v.old_path, v.new_path)
                 RETURNING v.log_id),
           p AS (UPDATE person t SET "thumbnailPath" = v.new_path FROM v
                 WHERE v.kind = 'personThumbnails' AND t.id = v.row_id AND t."thumbnailPath" IN (v.old_path, v.new_path)
                 RETURNING v.log_id),
           u AS (UPDATE "user" t SET "profileImagePath" = v.new_path FROM v
                 WHERE v.kind = 'profileImages' AND t.id = v.row_id AND t."profileImagePath" IN (v.old_path, v.new_path)
                 RETURNING v.log_id),
           done AS (SELECT log_id FROM a UNION ALL SELECT log_id FROM f
                    UNION ALL SELECT log_id FROM p UNION ALL SELECT log_id FROM u),
           done_rows AS (SELECT v.* FROM v JOIN done USING (log_id)),
           -- A row already at its new path with its log row was committed by
           -- an earlier attempt whose answer was lost: count it once.
           moved AS (
             SELECT d.* FROM done_rows d
             WHERE NOT EXISTS (
               SELECT 1 FROM {log} l
               WHERE l."entityId" = d.entity_id AND l."batchId" = $1 AND l."newPath" = d.new_path
             )
           ),
           logged AS (
             INSERT INTO {log}
               ("id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
             SELECT log_id, entity_type, entity_id, NULLIF(file_type, ''), old_path, new_path, $2, $1 FROM moved
           ),
           cleared AS (
             DELETE FROM noodle_migrate_failure fl USING moved
             WHERE fl.batch_id = $1 AND fl.kind = moved.kind AND fl.entity_id = moved.entity_id
           ),
           changed AS (SELECT v.* FROM v WHERE v.log_id NOT IN (SELECT log_id FROM done)),
           unmoved AS (
             SELECT * FROM unnest($13::text[], $14::uuid[], $15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[])
               AS w(kind, row_id, entity_id, path, outcome, reason, message)
             WHERE (w.kind, w.entity_id) NOT IN (SELECT kind, entity_id FROM changed)
             UNION ALL
             SELECT kind, row_id, entity_id, old_path, 'skipped', 'row_changed',
                    'the gallery changed this row''s path during the migration'
             FROM changed
           ),
           recorded AS (
             INSERT INTO noodle_migrate_failure (batch_id, kind, row_id, entity_id, path, outcome, reason, message)
             SELECT $1, kind, row_id, entity_id, path, outcome, reason, message FROM unmoved
             ON CONFLICT (batch_id, kind, entity_id) DO UPDATE
               SET row_id = EXCLUDED.row_id, path = EXCLUDED.path, outcome = EXCLUDED.outcome,
                   reason = EXCLUDED.reason, message = EXCLUDED.message, at = clock_timestamp()
           ),
           counted AS (
             UPDATE noodle_migrate_batch SET
               completed = completed + (SELECT count(*) FROM moved),
               adopted = adopted + (SELECT count(*) FROM moved WHERE adopted),
               replaced = replaced + (SELECT count(*) FROM moved WHERE replaced),
               bytes_moved = bytes_moved + (SELECT COALESCE(sum(bytes), 0) FROM moved WHERE NOT adopted),
               failed = failed + (SELECT count(*) FROM unmoved WHERE outcome = 'failed'),
               skipped = skipped + (SELECT count(*) FROM unmoved WHERE outcome = 'skipped')
             WHERE id = $1
           )
           SELECT log_id FROM done"#
    )
}

/// Commits a group; returns, for each change, whether its row was updated.
pub async fn commit(
    conn: &mut DbConn,
    batch: LedgerBatch,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<Vec<bool>, DbError> {
    let log_ids: Vec<Uuid> = changes.iter().map(|_| Uuid::now_v7()).collect();
    // One record per file; a later one in the same group wins.
    let mut records: Vec<&Unmoved> = unmoved.iter().rev().collect();
    let mut seen = HashSet::new();
    records.retain(|r| seen.insert((r.kind, r.entity_id)));
    let texts = |f: &dyn Fn(&PathChange) -> String| changes.iter().map(f).collect::<Vec<_>>();
    let query = diesel::sql_query(group_sql(batch.log))
        .bind::<SqlUuid, _>(batch.id)
        .bind::<Text, _>(batch.direction.as_str())
        .bind::<Array<Text>, _>(texts(&|c| c.kind.api_key().to_string()))
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.row_id).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(changes.iter().map(|c| c.entity_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(texts(&|c| c.old_path.clone()))
        .bind::<Array<Text>, _>(texts(&|c| c.new_path.clone()))
        .bind::<Array<Text>, _>(texts(&|c| c.kind.log_entity_type().to_string()))
        .bind::<Array<Text>, _>(texts(&|c| c.kind.log_file_type().unwrap_or("").to_string()))
        .bind::<Array<Bool>, _>(changes.iter().map(|c| c.adopted).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(changes.iter().map(|c| c.bytes).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(log_ids.clone())
        .bind::<Array<Text>, _>(
            records
                .iter()
                .map(|r| r.kind.api_key().to_string())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.row_id).collect::<Vec<_>>())
        .bind::<Array<SqlUuid>, _>(records.iter().map(|r| r.entity_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(records.iter().map(|r| r.path.clone()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            records
                .iter()
                .map(|r| if r.failed { "failed" } else { "skipped" }.to_string())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(records.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            records
                .iter()
                .map(|r| r.message.clone())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Bool>, _>(changes.iter().map(|c| c.replaced).collect::<Vec<_>>());
    let done: Vec<Done> = timed(query.load(conn)).await?;
    let done: HashSet<Uuid> = done.into_iter().map(|d| d.log_id).collect();
    Ok(log_ids.iter().map(|id| done.contains(id)).collect())
}
