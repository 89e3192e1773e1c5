//! "One migration at a time", across processes: a session-level PostgreSQL
//! advisory lock held on a dedicated connection for the whole run. If the
//! process dies, the connection closes and PostgreSQL frees the lock; there
//! is no window between checking and taking it.
//!
//! A database restart also closes that connection and frees the lock while
//! the run goes on. The [`LockKeeper`] notices within
//! [`KEEPER_INTERVAL`], takes the lock again, and if another process got
//! it first, flags the loss so that the run stops.

use super::DbError;
use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the keeper checks that the lock's connection is alive.
pub const KEEPER_INTERVAL: Duration = Duration::from_secs(1);

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

    async fn alive(&mut self) -> bool {
        let ping = diesel::sql_query("SELECT true AS locked").get_result::<Locked>(&mut self.conn);
        matches!(
            tokio::time::timeout(Duration::from_secs(5), ping).await,
            Ok(Ok(_))
        )
    }

    /// Holds the lock for a run. `on_lost` is set if the lock is lost to
    /// another process (after a database restart).
    pub fn keep(self, database_url: String, on_lost: Arc<AtomicBool>) -> LockKeeper {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let task = tokio::spawn(async move {
            let mut lock = self;
            loop {
                tokio::select! {
                    _ = &mut stopped => {
                        lock.release().await;
                        return;
                    }
                    _ = tokio::time::sleep(KEEPER_INTERVAL) => {}
                }
                if lock.alive().await {
                    continue;
                }
                tracing::warn!("The connection holding the migration lock is gone (database restart?); taking the lock again");
                loop {
                    match MigrationLock::try_acquire(&database_url).await {
                        Ok(Some(again)) => {
                            tracing::info!("Migration lock taken again");
                            lock = again;
                            break;
                        }
                        Ok(None) => {
                            tracing::error!("Another process took the migration lock while the database was restarting; stopping this run");
                            flag.store(true, Ordering::SeqCst);
                            on_lost.store(true, Ordering::SeqCst);
                            let _ = stopped.await;
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "The database is not back yet");
                            tokio::select! {
                                _ = &mut stopped => return,
                                _ = tokio::time::sleep(KEEPER_INTERVAL) => {}
                            }
                        }
                    }
                }
            }
        });
        LockKeeper {
            stop: Some(stop),
            task: Some(task),
            lost,
        }
    }
}

/// The lock, held for the length of a run by a background task.
pub struct LockKeeper {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<AtomicBool>,
}

impl LockKeeper {
    /// True when another process holds the lock now.
    pub fn lost(&self) -> bool {
        AtomicBool::load(&self.lost, Ordering::SeqCst)
    }

    /// Releases the lock (if still ours) and waits for the keeper to end.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
