//! "One migration at a time", across processes: a session-level PostgreSQL
//! advisory lock held on a dedicated connection for the whole run. If the
//! process dies, the connection closes and PostgreSQL frees the lock; there
//! is no window between checking and taking it.

use super::DbError;
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// "noodlemg" in ASCII: a key no other application is likely to pick.
const LOCK_KEY: i64 = 0x6E6F_6F64_6C65_6D67;

pub struct MigrationLock {
    conn: AsyncPgConnection,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

impl MigrationLock {
    /// Takes the lock, or returns `None` when another session holds it.
    pub async fn try_acquire(database_url: &str) -> Result<Option<MigrationLock>, DbError> {
        let mut conn = tokio::time::timeout(
            super::QUERY_TIMEOUT,
            AsyncPgConnection::establish(database_url),
        )
        .await
        .map_err(|_| DbError::Timeout(super::QUERY_TIMEOUT))?
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let row: Locked = super::timed(
            diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
                .bind::<BigInt, _>(LOCK_KEY)
                .get_result(&mut conn),
        )
        .await?;
        Ok(row.locked.then_some(MigrationLock { conn }))
    }

    pub async fn release(mut self) {
        let _ = super::timed(
            diesel::sql_query("SELECT pg_advisory_unlock($1) AS locked")
                .bind::<BigInt, _>(LOCK_KEY)
                .get_result::<Locked>(&mut self.conn),
        )
        .await;
    }
}
