//! Every file path the gallery's rows point at, for the orphan scan.

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

/// Every path a logged move came from, and whether any of those moves
/// asked for its source to be deleted.
pub async fn moved_from(conn: &mut DbConn) -> Result<Vec<(String, bool)>, DbError> {
    let rows: Vec<SourceRow> = timed(
        diesel::sql_query(
            r#"SELECT l."oldPath" AS path,
                      bool_or(COALESCE((b.options->>'deleteSource')::boolean, false)) AS delete_source
               FROM storage_migration_log l
               LEFT JOIN noodle_migrate_batch b ON b.id = l."batchId"
               GROUP BY l."oldPath""#,
        )
        .load(conn),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.path, r.delete_source))
        .collect())
}
