//! Settings the gallery keeps in its own tables, read the way the gallery
//! reads them. Every table here may be missing (an older gallery, a
//! restricted role): that reads as "not set", never as an error.

use super::{timed, DbConn, DbError};
use diesel::sql_types::{Bool, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct Readable {
    #[diesel(sql_type = Bool)]
    readable: bool,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// Whether `table` exists in the search path and this role may read it.
pub async fn readable(conn: &mut DbConn, table: &str) -> Result<bool, DbError> {
    let row: Readable = timed(
        diesel::sql_query(
            "SELECT CASE WHEN to_regclass($1) IS NULL THEN false
                         ELSE has_table_privilege(to_regclass($1), 'SELECT') END AS readable",
        )
        .bind::<Text, _>(table)
        .get_result(conn),
    )
    .await?;
    Ok(row.readable)
}

/// The first row's text, or `None`.
async fn text(conn: &mut DbConn, sql: &str) -> Result<Option<String>, DbError> {
    let rows: Vec<Value> = timed(diesel::sql_query(sql).load(conn)).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.value)
        .filter(|v| !v.trim().is_empty()))
}

/// The media location the gallery recorded (`system_metadata`, key
/// `MediaLocation`): where its stored disk paths begin.
pub async fn media_location(conn: &mut DbConn) -> Result<Option<String>, DbError> {
    if !readable(conn, "system_metadata").await? {
        return Ok(None);
    }
    text(
        conn,
        r#"SELECT "value"->>'location' AS value FROM system_metadata WHERE "key" = 'MediaLocation'"#,
    )
    .await
}

/// How many database dumps the gallery keeps, when an admin set it: the
/// `system_config` row `backup.database.keepLastAmount`, or the same
/// setting inside the `system-config` document of newer releases.
pub async fn dump_keep(conn: &mut DbConn) -> Result<Option<usize>, DbError> {
    let mut value = None;
    if readable(conn, "system_config").await? {
        value = text(
            conn,
            r#"SELECT "value"::text AS value FROM system_config WHERE "key" = 'backup.database.keepLastAmount'"#,
        )
        .await?;
    }
    if value.is_none() && readable(conn, "system_metadata").await? {
        value = text(
            conn,
            r#"SELECT "value" #>> '{backup,database,keepLastAmount}' AS value
               FROM system_metadata WHERE "key" = 'system-config'"#,
        )
        .await?;
    }
    // The value is JSON: `7` or `"7"`.
    Ok(value.and_then(|v| {
        v.trim()
            .trim_matches('"')
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
    }))
}

/// The newest version in the gallery's `version_history`.
pub async fn version(conn: &mut DbConn) -> Result<Option<String>, DbError> {
    if !readable(conn, "version_history").await? {
        return Ok(None);
    }
    text(
        conn,
        r#"SELECT "version"::text AS value FROM version_history ORDER BY "createdAt" DESC LIMIT 1"#,
    )
    .await
}
