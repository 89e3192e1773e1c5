//! The orphan report: files and objects in the gallery's folders that no
//! row points at. A crash can leave some behind, and only these:
//!
//! - `temp_file`: a download cut short (`.<name>.noodle-tmp-<id>` next to
//!   its target); always safe to delete;
//! - `undeleted_source`: the source of a move that asked for
//!   `deleteSource`, committed just before a crash (the delete comes after
//!   the commit); safe to delete;
//! - `kept_source`: the source of a move made without `deleteSource`,
//!   kept on purpose: a rollback needs it;
//! - `unreferenced`: anything else in those folders that no row and no
//!   logged move knows;
//!
//! Disk paths are reported as this machine sees them (under
//! `NOODLE_MIGRATE_MEDIA_DIR` when set).
//! - `incomplete_upload`: a multipart upload cut short (invisible, but the
//!   server keeps its parts until it is aborted).
//!
//! Memory stays flat whatever the size of the library: the database hands
//! over the paths rows point at, and the paths logged moves came from, as
//! sorted streams (cursors); the disk is walked in the same order and the
//! bucket lists in key order, so each side is merged with them as it goes.

use super::{EngineError, Shared};
use crate::db::log::LogTable;
use crate::db::orphans::{self, Entry};
use crate::db::{self, DbConn};
use crate::model::Backend;
use crate::store::disk::TEMP_MARKER;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use utoipa::ToSchema;

/// The folders the gallery keeps its own files in (dumps live in
/// `backups/` and are not files of rows).
pub const MANAGED_FOLDERS: [&str; 5] = ["upload", "library", "thumbs", "encoded-video", "profile"];

/// Why a file or object no row points at is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanReason {
    /// A temporary file of an interrupted write.
    TempFile,
    /// A source a move with `deleteSource` should have removed.
    UndeletedSource,
    /// A source kept by a move without `deleteSource`.
    KeptSource,
    /// Nothing logged explains it.
    Unreferenced,
    /// A multipart upload never completed nor aborted.
    IncompleteUpload,
}

impl OrphanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanReason::TempFile => "temp_file",
            OrphanReason::UndeletedSource => "undeleted_source",
            OrphanReason::KeptSource => "kept_source",
            OrphanReason::Unreferenced => "unreferenced",
            OrphanReason::IncompleteUpload => "incomplete_upload",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Orphan {
    pub backend: Backend,
    /// The file's path, or the object's key.
    pub path: String,
    pub size: u64,
    pub reason: OrphanReason,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanReport {
    pub files_scanned: u64,
    pub objects_scanned: u64,
    pub temp_files: u64,
    pub undeleted_sources: u64,
    pub kept_sources: u64,
    pub unreferenced: u64,
    /// Null when the S3 server cannot list multipart uploads.
    pub incomplete_uploads: Option<u64>,
    /// The first `limit` orphans, disk first.
    pub orphans: Vec<Orphan>,
    /// True when there were more orphans than listed.
    pub truncated: bool,
}

impl OrphanReport {
    fn add(&mut self, orphan: Orphan, limit: usize) {
        match orphan.reason {
            OrphanReason::TempFile => self.temp_files += 1,
            OrphanReason::UndeletedSource => self.undeleted_sources += 1,
            OrphanReason::KeptSource => self.kept_sources += 1,
            OrphanReason::Unreferenced => self.unreferenced += 1,
            OrphanReason::IncompleteUpload => {}
        }
        if self.orphans.len() < limit {
            self.orphans.push(orphan);
        } else {
            self.truncated = true;
        }
    }
}

/// Why a file no row points at is there, from the logged moves.
fn source_reason(logged: Option<Entry>) -> OrphanReason {
    match logged {
        Some(entry) if entry.delete_source => OrphanReason::UndeletedSource,
        Some(_) => OrphanReason::KeptSource,
        None => OrphanReason::Unreferenced,
    }
}

/// The folders in the order a sorted walk or listing meets them.
fn folders_in_order() -> Vec<&'static str> {
    let mut folders = MANAGED_FOLDERS.to_vec();
    folders.sort_unstable();
    folders
}

pub async fn scan(shared: &Shared, limit: usize) -> Result<OrphanReport, EngineError> {
    let mut conn = db::conn(&shared.pool).await?;
    let logs = crate::db::log::tables(&mut conn).await?;
    let mut report = OrphanReport::default();
    scan_disk(shared, &mut conn, &logs, limit, &mut report).await?;
    scan_bucket(shared, &mut conn, &logs, limit, &mut report).await?;
    Ok(report)
}

async fn scan_disk(
    shared: &Shared,
    conn: &mut DbConn,
    logs: &[LogTable],
    limit: usize,
    report: &mut OrphanReport,
) -> Result<(), EngineError> {
    let root = shared.layout.media_root();
    let mut referenced = orphans::referenced_disk(conn, &root).await?;
    let mut sources = orphans::moved_from_disk(conn, logs, &root).await?;
    // The walk runs on a blocking thread and hands files over through a
    // small channel: at most one folder's names and the channel in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(PathBuf, u64)>(1024);
    let dir = shared.layout.media_dir.clone();
    let walker = tokio::task::spawn_blocking(move || {
        for folder in folders_in_order() {
            if !walk_sorted(&dir.join(folder), &mut |path, size| {
                tx.blocking_send((path.to_path_buf(), size)).is_ok()
            })? {
                break;
            }
        }
        Ok::<_, StoreError>(())
    });
    let media_dir = &shared.layout.media_dir;
    let merged = async {
        while let Some((path, size)) = rx.recv().await {
            report.files_scanned += 1;
            let temp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(TEMP_MARKER));
            let reason = if temp {
                OrphanReason::TempFile
            } else {
                // Rows name the gallery's location, not this machine's.
                let relative = path.strip_prefix(media_dir).unwrap_or(&path);
                let stored = format!("{root}{}", relative.to_string_lossy());
                if referenced.find(&mut *conn, &stored).await?.is_some() {
                    continue;
                }
                source_reason(sources.find(&mut *conn, &stored).await?)
            };
            report.add(
                Orphan {
                    backend: Backend::Disk,
                    path: path.display().to_string(),
                    size,
                    reason,
                },
                limit,
            );
        }
        Ok::<_, EngineError>(())
    }
    .await;
    referenced.close(conn).await;
    sources.close(conn).await;
    merged?;
    walker
        .await
        .map_err(|e| EngineError::Internal(format!("the disk scan stopped: {e}")))??;
    Ok(())
}

async fn scan_bucket(
    shared: &Shared,
    conn: &mut DbConn,
    logs: &[LogTable],
    limit: usize,
    report: &mut OrphanReport,
) -> Result<(), EngineError> {
    let bucket = shared.s3.bucket().to_string();
    let mut referenced = orphans::referenced_keys(conn, &bucket).await?;
    let mut sources = orphans::moved_from_keys(conn, logs, &bucket).await?;
    let merged = async {
        let mut incomplete = Some(0);
        for folder in folders_in_order() {
            let prefix = format!("{}/", shared.layout.object_key(folder));
            let mut listing = shared.s3.listing(&prefix);
            while let Some(page) = listing.next_page().await? {
                for object in page {
                    report.objects_scanned += 1;
                    if referenced.find(&mut *conn, &object.key).await?.is_some() {
                        continue;
                    }
                    let reason = source_reason(sources.find(&mut *conn, &object.key).await?);
                    report.add(
                        Orphan {
                            backend: Backend::S3,
                            path: object.key,
                            size: object.size,
                            reason,
                        },
                        limit,
                    );
                }
            }
            match shared.s3.incomplete_uploads(&prefix).await? {
                None => incomplete = None,
                Some(uploads) => {
                    incomplete = incomplete.map(|n| n + uploads.len() as u64);
                    for upload in uploads {
                        report.add(
                            Orphan {
                                backend: Backend::S3,
                                path: upload.key,
                                size: 0,
                                reason: OrphanReason::IncompleteUpload,
                            },
                            limit,
                        );
                    }
                }
            }
        }
        report.incomplete_uploads = incomplete;
        Ok::<_, EngineError>(())
    }
    .await;
    referenced.close(conn).await;
    sources.close(conn).await;
    merged
}

/// Every regular file under `dir`, depth first, each folder's entries in
/// the order of their names' bytes: the order of
/// [`orphans::component_order`]. Symbolic links are not followed: what
/// they lead to is not in the media location's keeping. `each` answers
/// false to stop; so does this, then.
fn walk_sorted(dir: &Path, each: &mut impl FnMut(&Path, u64) -> bool) -> Result<bool, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::io("cannot list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("cannot list", dir, e))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (_, path) in names {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| StoreError::io("cannot stat", &path, e))?;
        let going_on = if meta.is_dir() {
            walk_sorted(&path, each)?
        } else if meta.is_file() {
            each(&path, meta.len())
        } else {
            true
        };
        if !going_on {
            return Ok(false);
        }
    }
    Ok(true)
}
