//! What a dump's name records: the server's version and the gallery's own
//! version.

use super::{gallery, timed, DbConn, DbError};
use diesel::sql_types::{Integer, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

#[derive(QueryableByName)]
struct Major {
    #[diesel(sql_type = Integer)]
    major: i32,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// The server's major version (15 for 15.4), to pick a matching pg_dump.
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

/// The server's version as the gallery writes it in a dump's name:
/// `server_version` up to the first space (`15.19` of
/// `15.19 (Debian 15.19-0+deb12u1)`).
pub async fn server_version(conn: &mut DbConn) -> Result<String, DbError> {
    let row: Version = timed(
        diesel::sql_query("SELECT current_setting('server_version') AS version").get_result(conn),
    )
    .await?;
    Ok(first_word(&row.version).to_string())
}

fn first_word(version: &str) -> &str {
    version.split(' ').next().unwrap_or(version)
}

/// The newest version in the gallery's `version_history`, when the table
/// exists and this role may read it.
pub async fn gallery_version(conn: &mut DbConn) -> Option<String> {
    match gallery::version(conn).await {
        Ok(version) => version,
        Err(e) => {
            tracing::debug!(error = %e, "Cannot read the gallery's version");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_ends_at_the_first_space() {
        assert_eq!(super::first_word("15.19 (Debian 15.19-0+deb12u1)"), "15.19");
        assert_eq!(super::first_word("16.4"), "16.4");
    }
}
