//! Where the migration log lives. The gallery owns `storage_migration_log`
//! and creates it itself (a plain `CREATE TABLE` in its v2.5.0 migration);
//! on a gallery that has not created it yet, our rows wait in
//! `noodle_migrate_log`, which has the same columns, and move to the
//! gallery's table once it exists. Rollback and the orphan report read
//! both; the gallery's own rollback sees our rows as soon as they moved.
//!
//! This module must never create, alter or index the gallery's table.

use super::{timed, DbConn, DbError};
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

/// One of the two tables that hold log rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTable {
    /// `storage_migration_log`, the gallery's.
    Gallery,
    /// `noodle_migrate_log`, ours, while the gallery has no table.
    Own,
}

impl LogTable {
    pub fn name(self) -> &'static str {
        match self {
            LogTable::Gallery => "storage_migration_log",
            LogTable::Own => "noodle_migrate_log",
        }
    }
}

/// The log's columns, in the order both tables declare them.
pub const COLUMNS: &str = r#""id", "entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId", "migratedAt""#;

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Whether the gallery has created its log table.
pub async fn gallery_table_exists(conn: &mut DbConn) -> Result<bool, DbError> {
    let row: Exists = timed(
        diesel::sql_query("SELECT to_regclass('storage_migration_log') IS NOT NULL AS exists")
            .get_result(conn),
    )
    .await?;
    Ok(row.exists)
}

/// The tables that hold log rows now: ours always, the gallery's when it
/// exists.
pub async fn tables(conn: &mut DbConn) -> Result<Vec<LogTable>, DbError> {
    Ok(if gallery_table_exists(conn).await? {
        vec![LogTable::Gallery, LogTable::Own]
    } else {
        vec![LogTable::Own]
    })
}

/// Moves our rows into the gallery's table once it exists, and says which
/// table new rows go to. Call it only under the migration lock: a run
/// writing to our table meanwhile would miss the rows it checks against.
pub async fn settle(conn: &mut DbConn) -> Result<LogTable, DbError> {
    if !gallery_table_exists(conn).await? {
        return Ok(LogTable::Own);
    }
    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = BigInt)]
        moved: i64,
    }
    // One statement: the rows leave our table exactly when they arrive in
    // the gallery's.
    let moved: Moved = timed(
        diesel::sql_query(format!(
            "WITH moved AS (DELETE FROM noodle_migrate_log RETURNING {COLUMNS}),
                  inserted AS (INSERT INTO storage_migration_log ({COLUMNS})
                               SELECT {COLUMNS} FROM moved RETURNING 1)
             SELECT count(*) AS moved FROM inserted"
        ))
        .get_result(conn),
    )
    .await?;
    if moved.moved > 0 {
        tracing::info!(
            rows = moved.moved,
            "The gallery has created storage_migration_log: moved our log rows there"
        );
    }
    Ok(LogTable::Gallery)
}
