//! The gallery's PostgreSQL database: the pool, our own migrations, and
//! every statement the engine runs, one module per concern.
//!
//! Every query runs under a timeout. No transaction is ever held open
//! across a network copy: writes that must stand together are one
//! statement, atomic on its own (the ledger's group, a page of rollback's
//! reverts); the only explicit transaction is `ledger::explain`'s, which
//! rolls back what it measured.
//! [`tables`] says where each kind's path lives; the statements build their
//! SQL from it.

pub mod batches;
pub mod candidates;
pub mod chunks;
pub mod credentials;
pub mod gallery;
pub mod ledger;
pub mod lock;
pub mod log;
pub mod orphans;
pub mod rollback;
pub mod tables;
pub mod versions;

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::future::Future;
use std::time::Duration;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How long any single statement may take before we give up on it.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = Object<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach the database: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database query timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot apply noodle-migrate's database migrations: {0}")]
    Migration(String),
}

impl DbError {
    /// True when the database itself is away (as opposed to a bad query).
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        matches!(
            self,
            DbError::Unavailable(_)
                | DbError::Timeout(_)
                | DbError::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _))
                | DbError::Query(Error::BrokenTransactionManager)
        )
    }
}

pub fn pool(database_url: &str, max_size: usize) -> Result<DbPool, DbError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

pub async fn conn(pool: &DbPool) -> Result<DbConn, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Runs `fut` under the query timeout.
pub async fn timed<T>(
    fut: impl Future<Output = Result<T, diesel::result::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(QUERY_TIMEOUT, fut).await {
        Ok(result) => result.map_err(DbError::from),
        Err(_) => Err(DbError::Timeout(QUERY_TIMEOUT)),
    }
}

/// "noodlemi" in ASCII: the key our migrations are applied under.
const MIGRATION_LOCK_KEY: i64 = 0x6E6F_6F64_6C65_6D69;

/// Applies our migrations. Diesel's harness is synchronous, so it runs on a
/// thread of its own with its own connection. Several processes starting
/// at once (workers beside a server) take turns under an advisory lock:
/// two that both found a migration pending would otherwise both apply it.
pub async fn migrate(database_url: &str) -> Result<(), DbError> {
    use diesel::Connection;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    let url = database_url.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            use diesel::RunQueryDsl;
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn)?;
            let applied = conn
                .run_pending_migrations(MIGRATIONS)
                .map(|_| ())
                .map_err(|e| DbError::Migration(e.to_string()));
            // The lock ends with the connection anyway.
            let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                .execute(&mut conn);
            applied
        })();
        let _ = tx.send(result);
    });
    rx.await
        .map_err(|_| DbError::Migration("the migration thread stopped".into()))?
}
