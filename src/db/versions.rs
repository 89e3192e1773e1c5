//! What a dump's name records: the server's major version and the
//! gallery's own version.

use super::{timed, DbConn, DbError};
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct Major {
    #[diesel(sql_type = Integer)]
    major: i32,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

/// The server's major version (15 for 15.4).
pub async fn server_major(conn: &mut DbConn) -> Result<u32, DbError> {
    let row: Major = timed(
        diesel::sql_query(
            "SELECT (current_setting('server_version_num')::int / 10000)::int AS major",
        )
        .get_result(conn),
    )
    .await?;
    Ok(row.major.max(0) as u32)
}

#[derive(QueryableByName)]
struct Readable {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    readable: bool,
}

/// The newest version in the gallery's `version_history`, when the table
/// exists and this role may read it.
pub async fn gallery_version(conn: &mut DbConn) -> Option<String> {
    let readable = diesel::sql_query(
        "SELECT CASE WHEN to_regclass('version_history') IS NULL THEN false
                     ELSE has_table_privilege('version_history', 'SELECT') END AS readable",
    );
    let newest = diesel::sql_query(
        "SELECT version::text AS version FROM version_history ORDER BY \"createdAt\" DESC LIMIT 1",
    );
    let result = async {
        if !timed(readable.get_result::<Readable>(conn)).await?.readable {
            return Ok(None);
        }
        timed(newest.get_result::<Version>(conn))
            .await
            .map(|row| row.version)
    }
    .await;
    match result {
        Ok(version) => version.filter(|v| !v.trim().is_empty()),
        Err(e) => {
            tracing::debug!(error = %e, "Cannot read the gallery's version");
            None
        }
    }
}
