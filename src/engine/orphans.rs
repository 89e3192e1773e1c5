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
use crate::db::orphans::{self, Entry, Sorted};
use crate::db::{self, DbConn};
use crate::model::Backend;
use crate::store::disk::TEMP_MARKER;
use crate::store::{Store, StoreListing};
use serde::{Deserialize, Serialize};
use std::path::Path;
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

    // Rows name the gallery's location, not this machine's.
    let root = shared.layout.media_root();
    let media_dir = shared.layout.media_dir.display().to_string();
    let disk = Side {
        backend: Backend::Disk,
        folders: folders_in_order()
            .into_iter()
            .map(|f| format!("{media_dir}/{f}/"))
            .collect(),
        referenced: orphans::referenced_disk(&mut conn, &root).await?,
        sources: orphans::moved_from_disk(&mut conn, &logs, &root).await?,
        stored: Box::new(|name: &str| {
            let relative = name.strip_prefix(&media_dir).unwrap_or(name);
            format!("{root}{}", relative.trim_start_matches('/'))
        }),
    };
    disk.scan(&shared.disk, &mut conn, limit, &mut report)
        .await?;

    let bucket = shared.s3.bucket().to_string();
    let prefixes: Vec<String> = folders_in_order()
        .into_iter()
        .map(|f| format!("{}/", shared.layout.object_key(f)))
        .collect();
    let objects = Side {
        backend: Backend::S3,
        folders: prefixes.clone(),
        referenced: orphans::referenced_keys(&mut conn, &bucket).await?,
        sources: orphans::moved_from_keys(&mut conn, &logs, &bucket).await?,
        stored: Box::new(|key: &str| key.to_string()),
    };
    objects
        .scan(&shared.s3, &mut conn, limit, &mut report)
        .await?;
    report.incomplete_uploads = Some(0);
    for prefix in &prefixes {
        match shared.s3.incomplete_uploads(prefix).await? {
            None => report.incomplete_uploads = None,
            Some(uploads) => {
                if let Some(n) = report.incomplete_uploads.as_mut() {
                    *n += uploads.len() as u64;
                }
                for upload in uploads {
                    report.add(
                        Orphan {
                            backend: Backend::S3,
                            path: upload.name,
                            size: 0,
                            reason: OrphanReason::IncompleteUpload,
                        },
                        limit,
                    );
                }
            }
        }
    }
    Ok(report)
}

/// One side of the scan: its folders, and the sorted streams of what rows
/// point at there and what logged moves came from there.
struct Side<'a> {
    backend: Backend,
    /// In the order a sorted walk or listing meets them.
    folders: Vec<String>,
    referenced: Sorted,
    sources: Sorted,
    /// The form a row stores a file of this side by.
    stored: Box<dyn Fn(&str) -> String + 'a>,
}

impl Side<'_> {
    /// Merges the side's sorted listing with its two streams: a file is an
    /// orphan when no row points at it, and the logged moves say why.
    async fn scan<S: Store>(
        mut self,
        store: &S,
        conn: &mut DbConn,
        limit: usize,
        report: &mut OrphanReport,
    ) -> Result<(), EngineError> {
        let merged = async {
            for folder in &self.folders {
                let mut listing = store.list(folder);
                while let Some(page) = listing.next_page().await? {
                    for file in page {
                        if self.backend == Backend::Disk {
                            report.files_scanned += 1;
                        } else {
                            report.objects_scanned += 1;
                        }
                        let reason = if self.backend == Backend::Disk && is_temp(&file.name) {
                            OrphanReason::TempFile
                        } else {
                            let stored = (self.stored)(&file.name);
                            if self.referenced.find(&mut *conn, &stored).await?.is_some() {
                                continue;
                            }
                            source_reason(self.sources.find(&mut *conn, &stored).await?)
                        };
                        report.add(
                            Orphan {
                                backend: self.backend,
                                path: file.name,
                                size: file.size,
                                reason,
                            },
                            limit,
                        );
                    }
                }
            }
            Ok::<_, EngineError>(())
        }
        .await;
        self.referenced.close(conn).await;
        self.sources.close(conn).await;
        merged
    }
}

/// One of our temporary files (a download a crash cut short).
fn is_temp(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(TEMP_MARKER))
}
