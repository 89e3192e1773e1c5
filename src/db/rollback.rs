//! Reverting a batch's path changes, as the gallery's own rollback does:
//! `SET path = oldPath WHERE id = … AND path = newPath`, never moving a file.
//! A row already back at its old path counts as reverted, so a rollback
//! that was partly refused can be run again once the cause is fixed.
//! The batch's log rows are deleted only when every row reverted.

use super::log::LogTable;
use super::tables::{log_target, PathTable};
use super::{timed, DbConn, DbError};
use crate::model::BatchState;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde::Serialize;
use uuid::Uuid;

const PAGE: i64 = 1000;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    pub rolled_back: i64,
    pub failed: i64,
    pub total: i64,
}

#[derive(Debug, QueryableByName)]
struct LogRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    entity_type: String,
    #[diesel(sql_type = SqlUuid)]
    entity_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    file_type: Option<String>,
    #[diesel(sql_type = Text)]
    old_path: String,
    #[diesel(sql_type = Text)]
    new_path: String,
}

#[derive(QueryableByName)]
struct LogId {
    #[diesel(sql_type = SqlUuid)]
    log_id: Uuid,
}

/// Where a log row's path lives: its table, and how its row is found.
type Target = (PathTable, String);

fn target(row: &LogRow) -> Option<Target> {
    log_target(&row.entity_type, row.file_type.as_deref())
}

pub async fn log_count(conn: &mut DbConn, log: LogTable, batch_id: Uuid) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: N = timed(
        diesel::sql_query(format!(
            r#"SELECT count(*) AS n FROM {} WHERE "batchId" = $1"#,
            log.name()
        ))
        .bind::<SqlUuid, _>(batch_id)
        .get_result(conn),
    )
    .await?;
    Ok(row.n)
}

/// Reverts the batch's rows of `log` (see [`super::log::settle`]: after it,
/// every row of ours is in one table).
pub async fn rollback(
    conn: &mut DbConn,
    log: LogTable,
    batch_id: Uuid,
) -> Result<RollbackReport, DbError> {
    // One pass over the batch's log rows, through a cursor: the rows are
    // read once, whatever the size of the batch (paging by key would have
    // to find the batch's rows again for every page, and the gallery's
    // table has no index for that order). WITH HOLD keeps the cursor
    // across the transactions of the reverts below.
    // The id is written into the statement (DECLARE takes no parameters);
    // a `Uuid` prints as hex digits and hyphens only.
    let cursor = format!("noodle_rollback_{}", Uuid::new_v4().simple());
    timed(
        diesel::sql_query(format!(
            r#"DECLARE {cursor} NO SCROLL CURSOR WITH HOLD FOR
               SELECT id, "entityType" AS entity_type, "entityId" AS entity_id,
                      "fileType" AS file_type, "oldPath" AS old_path, "newPath" AS new_path
               FROM {} WHERE "batchId" = '{batch_id}'"#,
            log.name()
        ))
        .execute(conn),
    )
    .await?;
    let result = revert_all(conn, &cursor).await;
    // Closed whatever happened: the connection goes back to the pool.
    let _ = timed(diesel::sql_query(format!("CLOSE {cursor}")).execute(conn)).await;
    let report = result?;
    if report.failed == 0 && report.total > 0 {
        timed(
            diesel::sql_query(format!(
                r#"DELETE FROM {} WHERE "batchId" = $1"#,
                log.name()
            ))
            .bind::<SqlUuid, _>(batch_id)
            .execute(conn),
        )
        .await?;
    }
    if report.failed == 0 {
        timed(
            diesel::sql_query(
                "UPDATE noodle_migrate_batch SET state = $2 WHERE id = $1 AND state <> $3",
            )
            .bind::<SqlUuid, _>(batch_id)
            .bind::<Text, _>(BatchState::RolledBack)
            .bind::<Text, _>(BatchState::Running)
            .execute(conn),
        )
        .await?;
    }
    Ok(report)
}

/// Reverts the rows of an open cursor, a page at a time.
async fn revert_all(conn: &mut DbConn, cursor: &str) -> Result<RollbackReport, DbError> {
    let mut report = RollbackReport::default();
    loop {
        let rows: Vec<LogRow> =
            timed(diesel::sql_query(format!("FETCH {PAGE} FROM {cursor}")).load(conn)).await?;
        if rows.is_empty() {
            break;
        }
        report.total += rows.len() as i64;
        let mut groups: Vec<(Target, Vec<&LogRow>)> = Vec::new();
        for row in &rows {
            match target(row) {
                None => report.failed += 1,
                Some(t) => match groups.iter_mut().find(|(k, _)| *k == t) {
                    Some((_, list)) => list.push(row),
                    None => groups.push((t, vec![row])),
                },
            }
        }
        for ((table, matches), list) in groups {
            let (table, column) = (table.name(), table.path());
            let sql = format!(
                "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[])
                              AS v(log_id, id, old_path, new_path)),
                 reverted AS (UPDATE {table} t SET {column} = v.old_path FROM v
                              WHERE {matches} AND t.{column} = v.new_path RETURNING v.log_id)
                 SELECT log_id FROM reverted
                 UNION
                 SELECT v.log_id FROM v JOIN {table} t ON {matches} AND t.{column} = v.old_path"
            );
            let ok: Vec<LogId> = timed(
                diesel::sql_query(sql)
                    .bind::<Array<SqlUuid>, _>(list.iter().map(|r| r.id).collect::<Vec<_>>())
                    .bind::<Array<SqlUuid>, _>(list.iter().map(|r| r.entity_id).collect::<Vec<_>>())
                    .bind::<Array<Text>, _>(
                        list.iter().map(|r| r.old_path.clone()).collect::<Vec<_>>(),
                    )
                    .bind::<Array<Text>, _>(
                        list.iter().map(|r| r.new_path.clone()).collect::<Vec<_>>(),
                    )
                    .load(conn),
            )
            .await?;
            let ok = ok
                .iter()
                .map(|r| r.log_id)
                .collect::<std::collections::HashSet<_>>()
                .len() as i64;
            report.rolled_back += ok;
            report.failed += list.len() as i64 - ok;
        }
    }
    Ok(report)
}
