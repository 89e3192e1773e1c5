//! Database dumps on the gallery's active backend, in the gallery's own
//! naming, so that the gallery lists, keeps and restores them too.
//!
//! - on S3: `<prefix>/backups/<name>` (multipart, constant memory);
//! - on disk: `<media folder>/backups/<name>` (temporary file, fsync,
//!   rename), in the media folder as this machine sees it.
//!
//! A dump that fails leaves nothing behind: the multipart upload is
//! aborted, the temporary file removed. After each dump only the newest
//! dumps are kept: `NOODLE_MIGRATE_DUMP_KEEP` when set, else the gallery's
//! own `backup.database.keepLastAmount` when an admin set it, else 14.
//! Files that do not carry a dump's name are never touched.

pub mod name;
pub mod pg_dump;

use crate::config::{Secret, DEFAULT_DUMP_KEEP};
use crate::db::{self, gallery, versions, DbError, DbPool};
use crate::model::Backend;
use crate::store::{DiskStore, S3Store, Store, StoreError, StoreListing, StoreWriter};
use crate::telemetry::Metrics;
use name::DumpName;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The folder (or key prefix) the gallery keeps its dumps in.
pub const BACKUPS_FOLDER: &str = "backups";

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("a database dump is already running")]
    Busy,
    #[error("pg_dump failed ({0})")]
    PgDump(String),
    #[error("{0}")]
    Setup(String),
    #[error("the dump stopped because its target failed")]
    Cancelled,
    #[error("{0:?} is not a database dump's name (immich-db-backup-<yyyyMMdd'T'HHmmss>-v<version>-pg<version>.sql.gz)")]
    InvalidName(String),
    #[error("no database dump named {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One dump in a listing.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpInfo {
    pub name: String,
    pub size: u64,
    /// When the backend last wrote it.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    stamp: i64,
}

/// What one dump did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpReport {
    pub name: String,
    pub backend: Backend,
    /// `s3://bucket/key` or the file's path.
    pub location: String,
    /// Compressed size.
    pub size: u64,
    pub duration_ms: u64,
    /// Older dumps removed by retention.
    pub deleted: Vec<String>,
}

/// What dumping needs; one per engine.
pub struct Dumps {
    database_url: Secret,
    pool: DbPool,
    pg_dump: Option<PathBuf>,
    /// `NOODLE_MIGRATE_DUMP_KEEP`, when set.
    keep: Option<usize>,
    /// Where dumps go on each side, ending in `/`: a folder on this
    /// machine, a key prefix.
    disk_folder: String,
    s3_prefix: String,
    disk: DiskStore,
    s3: S3Store,
    metrics: Arc<Metrics>,
    /// Held for the length of a dump: one at a time.
    busy: tokio::sync::Mutex<()>,
}

/// Runs `$body` with `$store` and `$folder` bound to the side `$backend`
/// names: the one place that tells the two apart.
macro_rules! on_side {
    ($dumps:expr, $backend:expr, |$store:ident, $folder:ident| $body:expr) => {
        match $backend {
            Backend::Disk => {
                let ($store, $folder) = (&$dumps.disk, $dumps.disk_folder.as_str());
                $body
            }
            Backend::S3 => {
                let ($store, $folder) = (&$dumps.s3, $dumps.s3_prefix.as_str());
                $body
            }
        }
    };
}

pub struct DumpSettings {
    pub database_url: Secret,
    pub pg_dump: Option<PathBuf>,
    pub keep: Option<usize>,
    /// The media folder on this machine.
    pub media_dir: PathBuf,
    pub s3_prefix: String,
}

impl Dumps {
    pub fn new(settings: DumpSettings, pool: DbPool, s3: S3Store, metrics: Arc<Metrics>) -> Dumps {
        let s3_prefix = if settings.s3_prefix.is_empty() {
            format!("{BACKUPS_FOLDER}/")
        } else {
            format!("{}/{BACKUPS_FOLDER}/", settings.s3_prefix)
        };
        Dumps {
            database_url: settings.database_url,
            pool,
            pg_dump: settings.pg_dump,
            keep: settings.keep.map(|k| k.max(1)),
            disk_folder: format!("{}/", settings.media_dir.join(BACKUPS_FOLDER).display()),
            s3_prefix,
            disk: DiskStore,
            s3,
            metrics,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    fn location(&self, backend: Backend, name: &str) -> String {
        on_side!(self, backend, |store, folder| store
            .describe(&format!("{folder}{name}")))
    }

    /// Dumps the gallery database to `backend`, then applies retention.
    pub async fn create(&self, backend: Backend) -> Result<DumpReport, DumpError> {
        let _busy = self.busy.try_lock().map_err(|_| DumpError::Busy)?;
        let started = Instant::now();
        let result = self.dump(backend).await;
        match &result {
            Ok((name, size)) => {
                let elapsed = started.elapsed();
                self.metrics.dumps.with_label_values(&["success"]).inc();
                self.metrics
                    .last_dump_time
                    .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                self.metrics.last_dump_size.set(*size as i64);
                self.metrics.last_dump_duration.set(elapsed.as_secs_f64());
                tracing::info!(name = %name, size, backend = backend.as_str(), seconds = elapsed.as_secs_f64(), "Database dump written");
            }
            Err(e) => {
                self.metrics.dumps.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, backend = backend.as_str(), "Database dump failed; nothing was left behind");
            }
        }
        let (name, size) = result?;
        let duration_ms = started.elapsed().as_millis() as u64;
        // The dump itself is safe by now: a failing clean-up only warns.
        let deleted = match self.apply_retention(backend).await {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot remove old database dumps");
                Vec::new()
            }
        };
        Ok(DumpReport {
            location: self.location(backend, name.as_str()),
            name: name.to_string(),
            backend,
            size,
            duration_ms,
            deleted,
        })
    }

    async fn dump(&self, backend: Backend) -> Result<(DumpName, u64), DumpError> {
        let (major, pg_version, version) = {
            let mut conn = db::conn(&self.pool).await?;
            let major = versions::server_major(&mut conn).await?;
            let pg_version = versions::server_version(&mut conn).await?;
            let version = versions::gallery_version(&mut conn).await;
            (major, pg_version, version)
        };
        let version = version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        let name = self.unused_name(backend, &version, &pg_version).await?;
        let program = pg_dump::locate(self.pg_dump.as_deref(), major).await;
        let connection = pg_dump::Connection::from_url(self.database_url.expose())?;
        let mut chunks = pg_dump::spawn(&program, connection);
        let size = on_side!(self, backend, |store, folder| {
            write_dump(store, &format!("{folder}{name}"), &mut chunks).await
        })?;
        Ok((name, size))
    }

    /// Names carry the second they were taken in: a second dump within the
    /// same second waits for the next one rather than replace the first.
    async fn unused_name(
        &self,
        backend: Backend,
        version: &str,
        pg_version: &str,
    ) -> Result<DumpName, DumpError> {
        loop {
            let name = DumpName::new(chrono::Local::now(), version, pg_version);
            let taken = on_side!(self, backend, |store, folder| store
                .size(&format!("{folder}{name}"))
                .await)?
            .is_some();
            if !taken {
                return Ok(name);
            }
            let into_second = chrono::Local::now().timestamp_subsec_millis() as u64;
            tokio::time::sleep(std::time::Duration::from_millis(
                1001 - into_second.min(1000),
            ))
            .await;
        }
    }

    /// The dumps on `backend`, newest first.
    pub async fn list(&self, backend: Backend) -> Result<Vec<DumpInfo>, DumpError> {
        let mut dumps = on_side!(self, backend, |store, folder| list_dumps(store, folder)
            .await)?;
        dumps.sort_by(|a, b| {
            (b.stamp, b.created_at, &b.name).cmp(&(a.stamp, a.created_at, &a.name))
        });
        Ok(dumps)
    }

    /// Removes one dump; the name must be a dump's name.
    pub async fn delete(&self, backend: Backend, name: &str) -> Result<(), DumpError> {
        if !DumpName::has_shape(name) {
            return Err(DumpError::InvalidName(name.to_string()));
        }
        let listed = self.list(backend).await?.iter().any(|d| d.name == name);
        let parsed = DumpName::parse(name)
            .filter(|_| listed)
            .ok_or_else(|| DumpError::NotFound(name.to_string()))?;
        self.remove(backend, &parsed).await?;
        tracing::info!(name = %parsed, backend = backend.as_str(), "Database dump deleted");
        Ok(())
    }

    async fn remove(&self, backend: Backend, name: &DumpName) -> Result<(), StoreError> {
        on_side!(self, backend, |store, folder| Store::delete(
            store,
            &format!("{folder}{}", name.as_str())
        )
        .await)
    }

    /// How many dumps to keep: ours when set, else the gallery's.
    async fn keep(&self) -> usize {
        if let Some(keep) = self.keep {
            return keep;
        }
        let gallery = async {
            let mut conn = db::conn(&self.pool).await?;
            gallery::dump_keep(&mut conn).await
        }
        .await;
        match gallery {
            Ok(Some(keep)) => keep,
            Ok(None) => DEFAULT_DUMP_KEEP,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the gallery's dump retention; keeping {DEFAULT_DUMP_KEEP}");
                DEFAULT_DUMP_KEEP
            }
        }
    }

    /// Keeps the newest dumps; returns the names removed.
    async fn apply_retention(&self, backend: Backend) -> Result<Vec<String>, DumpError> {
        let keep = self.keep().await;
        let dumps = self.list(backend).await?;
        let mut deleted = Vec::new();
        for old in dumps.iter().skip(keep) {
            // Listed names have been parsed already; parse again to hold a
            // `DumpName`, the only thing `remove` accepts.
            let Some(name) = DumpName::parse(&old.name) else {
                continue;
            };
            self.remove(backend, &name).await?;
            tracing::info!(name = %name, "Old database dump removed by retention");
            deleted.push(old.name.clone());
        }
        Ok(deleted)
    }
}

/// Streams pg_dump's output into a new file of `store`; nothing is left
/// at `name` unless the whole dump is.
async fn write_dump<S: Store>(
    store: &S,
    name: &str,
    chunks: &mut tokio::sync::mpsc::Receiver<Result<Option<Vec<u8>>, DumpError>>,
) -> Result<u64, DumpError> {
    let mut writer = store.create(name).await?;
    let written = async {
        while let Some(chunk) = next(chunks).await? {
            writer.write(&chunk).await?;
        }
        Ok::<_, DumpError>(())
    }
    .await;
    match written {
        Ok(()) => Ok(writer.finish().await?),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The dumps in `folder` of `store`: files that carry a dump's name.
async fn list_dumps<S: Store>(store: &S, folder: &str) -> Result<Vec<DumpInfo>, StoreError> {
    let mut listing = store.list(folder);
    let mut dumps = Vec::new();
    while let Some(page) = listing.next_page().await? {
        for file in page {
            let Some(parsed) = file.name.strip_prefix(folder).and_then(DumpName::parse) else {
                continue;
            };
            dumps.push(DumpInfo {
                name: parsed.to_string(),
                size: file.size,
                created_at: file.modified,
                stamp: parsed.stamp(),
            });
        }
    }
    Ok(dumps)
}

/// The next compressed chunk, or `None` once pg_dump has succeeded.
async fn next(
    chunks: &mut tokio::sync::mpsc::Receiver<Result<Option<Vec<u8>>, DumpError>>,
) -> Result<Option<Vec<u8>>, DumpError> {
    match chunks.recv().await {
        Some(item) => item,
        None => Err(DumpError::PgDump("pg_dump stopped without a result".into())),
    }
}
