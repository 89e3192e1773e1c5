//! Every file path the gallery's rows point at, for the orphan scan.

use super::log::LogTable;
use super::{timed, DbConn, DbError};
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct PathRow {
    #[diesel(sql_type = Text)]
    path: String,
}

/// All non-empty paths in the four tables that hold files, external
/// libraries included (their files are not ours to call orphans either).
pub async fn referenced_paths(conn: &mut DbConn) -> Result<Vec<String>, DbError> {
    let rows: Vec<PathRow> = timed(
        diesel::sql_query(
            r#"SELECT "originalPath" AS path FROM asset WHERE "originalPath" <> ''
               UNION ALL SELECT path FROM asset_file WHERE path <> ''
               UNION ALL SELECT "thumbnailPath" FROM person WHERE "thumbnailPath" <> ''
               UNION ALL SELECT "profileImagePath" FROM "user" WHERE "profileImagePath" <> ''"#,
        )
        .load(conn),
    )
    .await?;
    Ok(rows.into_iter().map(|r| r.path).collect())
}

#[derive(QueryableByName)]
struct SourceRow {
    #[diesel(sql_type = Text)]
    path: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    delete_source: bool,
}

/// Every path a logged move came from (in any of `logs`), and whether any
/// of those moves asked for its source to be deleted.
pub async fn moved_from(
    conn: &mut DbConn,
    logs: &[LogTable],
) -> Result<Vec<(String, bool)>, DbError> {
    let union = logs
        .iter()
        .map(|t| format!(r#"SELECT "oldPath", "batchId" FROM {}"#, t.name()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows: Vec<SourceRow> = timed(
        diesel::sql_query(format!(
            r#"SELECT l."oldPath" AS path,
                      bool_or(COALESCE((b.options->>'deleteSource')::boolean, false)) AS delete_source
               FROM ({union}) l
               LEFT JOIN noodle_migrate_batch b ON b.id = l."batchId"
               GROUP BY l."oldPath""#
        ))
        .load(conn),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.path, r.delete_source))
        .collect())
}

#[derive(QueryableByName)]
struct Referenced {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    referenced: bool,
}

/// Whether any row of the four tables that hold files stores one of
/// `paths` (the forms a file's path can take).
pub async fn is_referenced(conn: &mut DbConn, paths: &[String]) -> Result<bool, DbError> {
    let row: Referenced = timed(
        diesel::sql_query(
            r#"SELECT EXISTS (SELECT 1 FROM asset WHERE "originalPath" = ANY($1))
                   OR EXISTS (SELECT 1 FROM asset_file WHERE path = ANY($1))
                   OR EXISTS (SELECT 1 FROM person WHERE "thumbnailPath" = ANY($1))
                   OR EXISTS (SELECT 1 FROM "user" WHERE "profileImagePath" = ANY($1))
                 AS referenced"#,
        )
        .bind::<diesel::sql_types::Array<Text>, _>(paths)
        .get_result(conn),
    )
    .await?;
    Ok(row.referenced)
}
