//! The ledger's statements: many files' path updates, their log rows, their
//! failure records and the batch's counters, all in one transaction.
//!
//! Every path update is optimistic (`AND path = old`): a row the gallery
//! changed meanwhile is left alone and reported back as a conflict, and it
//! gets no log row. A log row exists exactly when its path update happened.

use super::{DbConn, DbError};
use crate::model::{Direction, FileKind};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
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

/// The table and column a kind's path lives in.
fn target(kind: FileKind) -> (&'static str, &'static str) {
    match kind {
        FileKind::Originals => ("asset", r#""originalPath""#),
        FileKind::PersonThumbnails => ("person", r#""thumbnailPath""#),
        FileKind::ProfileImages => (r#""user""#, r#""profileImagePath""#),
        _ => ("asset_file", "path"),
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Commits a group; returns, for each change, whether its row was updated.
pub async fn commit(
    conn: &mut DbConn,
    batch_id: Uuid,
    direction: Direction,
    changes: &[PathChange],
    unmoved: &[Unmoved],
) -> Result<Vec<bool>, DbError> {
    let work = conn.transaction::<_, DbError, _>(async move |conn| {
        {
            let mut updated: HashSet<(&'static str, Uuid)> = HashSet::new();
            let mut tables: Vec<&'static str> = changes.iter().map(|c| target(c.kind).0).collect();
            tables.sort_unstable();
            tables.dedup();
            for table in tables {
                let group: Vec<&PathChange> = changes.iter().filter(|c| target(c.kind).0 == table).collect();
                let column = target(group[0].kind).1;
                let sql = format!(
                    "UPDATE {table} t SET {column} = v.new_path
                     FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, old_path, new_path)
                     WHERE t.id = v.id AND t.{column} = v.old_path
                     RETURNING t.id"
                );
                let ids: Vec<Id> = diesel::sql_query(sql)
                    .bind::<Array<SqlUuid>, _>(group.iter().map(|c| c.row_id).collect::<Vec<_>>())
                    .bind::<Array<Text>, _>(group.iter().map(|c| c.old_path.clone()).collect::<Vec<_>>())
                    .bind::<Array<Text>, _>(group.iter().map(|c| c.new_path.clone()).collect::<Vec<_>>())
                    .load(conn)
                    .await?;
                updated.extend(ids.into_iter().map(|r| (table, r.id)));
            }
            let done: Vec<bool> = changes
                .iter()
                .map(|c| updated.contains(&(target(c.kind).0, c.row_id)))
                .collect();
            let committed: Vec<&PathChange> =
                changes.iter().zip(&done).filter(|(_, ok)| **ok).map(|(c, _)| c).collect();

            if !committed.is_empty() {
                diesel::sql_query(
                    r#"INSERT INTO storage_migration_log
                         ("id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
                       SELECT v.id, v.entity_type, v.entity_id, v.file_type, v.old_path, v.new_path, $7, $8
                       FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[])
                         AS v(id, entity_type, entity_id, file_type, old_path, new_path)"#,
                )
                .bind::<Array<SqlUuid>, _>(committed.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(
                    committed.iter().map(|c| c.kind.log_entity_type().to_string()).collect::<Vec<_>>(),
                )
                .bind::<Array<SqlUuid>, _>(committed.iter().map(|c| c.entity_id).collect::<Vec<_>>())
                .bind::<Array<Nullable<Text>>, _>(
                    committed
                        .iter()
                        .map(|c| c.kind.log_file_type().map(str::to_string))
                        .collect::<Vec<_>>(),
                )
                .bind::<Array<Text>, _>(committed.iter().map(|c| c.old_path.clone()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(committed.iter().map(|c| c.new_path.clone()).collect::<Vec<_>>())
                .bind::<Text, _>(direction.as_str())
                .bind::<SqlUuid, _>(batch_id)
                .execute(conn)
                .await?;
            }

            // A file that moved is no longer a failure (a retry, a resume).
            if !committed.is_empty() {
                diesel::sql_query(
                    "DELETE FROM noodle_migrate_failure f
                     USING unnest($2::text[], $3::uuid[]) AS v(kind, entity_id)
                     WHERE f.batch_id = $1 AND f.kind = v.kind AND f.entity_id = v.entity_id",
                )
                .bind::<SqlUuid, _>(batch_id)
                .bind::<Array<Text>, _>(committed.iter().map(|c| c.kind.api_key().to_string()).collect::<Vec<_>>())
                .bind::<Array<SqlUuid>, _>(committed.iter().map(|c| c.entity_id).collect::<Vec<_>>())
                .execute(conn)
                .await?;
            }

            // Rows changed by the gallery meanwhile are reported as skipped.
            let mut records: Vec<Unmoved> = unmoved.to_vec();
            for (change, ok) in changes.iter().zip(&done) {
                if !ok {
                    records.push(Unmoved {
                        kind: change.kind,
                        row_id: change.row_id,
                        entity_id: change.entity_id,
                        path: change.old_path.clone(),
                        failed: false,
                        reason: "row_changed".into(),
                        message: "the gallery changed this row's path during the migration".into(),
                    });
                }
            }
            // One record per file; a later one in the same group wins.
            records.reverse();
            let mut seen = HashSet::new();
            records.retain(|r| seen.insert((r.kind, r.entity_id)));
            if !records.is_empty() {
                diesel::sql_query(
                    "INSERT INTO noodle_migrate_failure (batch_id, kind, row_id, entity_id, path, outcome, reason, message)
                     SELECT $1, v.kind, v.row_id, v.entity_id, v.path, v.outcome, v.reason, v.message
                     FROM unnest($2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[])
                       AS v(kind, row_id, entity_id, path, outcome, reason, message)
                     ON CONFLICT (batch_id, kind, entity_id) DO UPDATE
                       SET row_id = EXCLUDED.row_id, path = EXCLUDED.path, outcome = EXCLUDED.outcome,
                           reason = EXCLUDED.reason, message = EXCLUDED.message, at = clock_timestamp()",
                )
                .bind::<SqlUuid, _>(batch_id)
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
                .bind::<Array<Text>, _>(records.iter().map(|r| r.message.clone()).collect::<Vec<_>>())
                .execute(conn)
                .await?;
            }

            let conflicts = done.iter().filter(|ok| !**ok).count() as i64;
            let failed = unmoved.iter().filter(|u| u.failed).count() as i64;
            let skipped = unmoved.len() as i64 - failed + conflicts;
            diesel::sql_query(
                "UPDATE noodle_migrate_batch
                 SET completed = completed + $2, adopted = adopted + $3, bytes_moved = bytes_moved + $4,
                     failed = failed + $5, skipped = skipped + $6
                 WHERE id = $1",
            )
            .bind::<SqlUuid, _>(batch_id)
            .bind::<BigInt, _>(committed.len() as i64)
            .bind::<BigInt, _>(committed.iter().filter(|c| c.adopted).count() as i64)
            .bind::<BigInt, _>(committed.iter().filter(|c| !c.adopted).map(|c| c.bytes).sum::<i64>())
            .bind::<BigInt, _>(failed)
            .bind::<BigInt, _>(skipped)
            .execute(conn)
            .await?;
            Ok(done)
        }
    });
    match tokio::time::timeout(super::QUERY_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(DbError::Timeout(super::QUERY_TIMEOUT)),
    }
}
