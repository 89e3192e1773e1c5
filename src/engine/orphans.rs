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
//! The scan holds every current path and every logged source path in
//! memory (about 150 bytes each), then walks the disk folders and lists
//! the bucket.

use super::{EngineError, Shared};
use crate::db::{self, orphans};
use crate::model::Backend;
use crate::store::disk::TEMP_MARKER;
use crate::store::StoreError;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use utoipa::ToSchema;

/// The folders the gallery keeps its own files in (dumps live in
/// `backups/` and are not files of rows).
pub const MANAGED_FOLDERS: [&str; 5] = ["upload", "library", "thumbs", "encoded-video", "profile"];

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Orphan {
    pub backend: Backend,
    /// The file's path, or the object's key.
    pub path: String,
    pub size: u64,
    /// `temp_file`, `undeleted_source`, `kept_source`, `unreferenced` or
    /// `incomplete_upload`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
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
            "temp_file" => self.temp_files += 1,
            "undeleted_source" => self.undeleted_sources += 1,
            "kept_source" => self.kept_sources += 1,
            "unreferenced" => self.unreferenced += 1,
            _ => {}
        }
        if self.orphans.len() < limit {
            self.orphans.push(orphan);
        } else {
            self.truncated = true;
        }
    }
}

/// Why a file no row points at is there, from the logged moves.
fn source_reason(moved_from: &HashMap<String, bool>, stored: &str) -> Option<&'static str> {
    moved_from.get(stored).map(|delete_source| {
        if *delete_source {
            "undeleted_source"
        } else {
            "kept_source"
        }
    })
}

pub async fn scan(shared: &Shared, limit: usize) -> Result<OrphanReport, EngineError> {
    let (disk_paths, object_keys, moved_from) = {
        let mut conn = db::conn(&shared.pool).await?;
        let mut disk = HashSet::new();
        let mut objects = HashSet::new();
        // Stored disk paths name the gallery's location: index them by the
        // file on this machine, as the walk finds them.
        for path in orphans::referenced_paths(&mut conn).await? {
            if path.starts_with('/') {
                disk.insert(local(shared, path));
            } else if let Some(key) = shared.layout.stored_object_key(&path) {
                objects.insert(key);
            }
        }
        // Stored S3 paths are relative or s3:// URLs: index both by key.
        let logs = crate::db::log::tables(&mut conn).await?;
        let mut moved_from: HashMap<String, bool> = HashMap::new();
        for (path, delete_source) in orphans::moved_from(&mut conn, &logs).await? {
            let path = if path.starts_with('/') {
                local(shared, path).display().to_string()
            } else {
                match shared.layout.stored_object_key(&path) {
                    Some(key) => key,
                    None => continue,
                }
            };
            *moved_from.entry(path).or_default() |= delete_source;
        }
        (disk, objects, moved_from)
    };
    let moved_from = std::sync::Arc::new(moved_from);
    let mut report = OrphanReport::default();

    let root = shared.layout.media_dir.clone();
    let sources = moved_from.clone();
    let walked = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut scanned = 0u64;
        for folder in MANAGED_FOLDERS {
            walk(&root.join(folder), &mut |path, size| {
                scanned += 1;
                let temp = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(TEMP_MARKER));
                if temp {
                    found.push((path.to_path_buf(), size, "temp_file"));
                } else if !disk_paths.contains(path) {
                    let reason = path
                        .to_str()
                        .and_then(|p| source_reason(&sources, p))
                        .unwrap_or("unreferenced");
                    found.push((path.to_path_buf(), size, reason));
                }
            })?;
        }
        Ok::<_, StoreError>((scanned, found))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("the disk scan stopped: {e}")))?;
    let (scanned, found) = walked?;
    report.files_scanned = scanned;
    for (path, size, reason) in found {
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

    let mut incomplete = Some(0);
    for folder in MANAGED_FOLDERS {
        let prefix = format!("{}/", shared.layout.object_key(folder));
        let mut unreferenced = Vec::new();
        let mut scanned = 0u64;
        shared
            .s3
            .list_each(&prefix, |object| {
                scanned += 1;
                if !object_keys.contains(&object.key) {
                    unreferenced.push(object);
                }
            })
            .await?;
        report.objects_scanned += scanned;
        for object in unreferenced {
            let reason = source_reason(&moved_from, &object.key).unwrap_or("unreferenced");
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
                            reason: "incomplete_upload",
                        },
                        limit,
                    );
                }
            }
        }
    }
    report.incomplete_uploads = incomplete;
    Ok(report)
}

/// The file on this machine a stored disk path names (unchanged when it
/// is outside the media location: no walk finds it there anyway).
fn local(shared: &Shared, stored: String) -> PathBuf {
    shared
        .layout
        .local_path(&stored)
        .unwrap_or_else(|| PathBuf::from(stored))
}

/// Every regular file under `dir`, depth first. Symbolic links are not
/// followed: what they lead to is not in the media location's keeping.
fn walk(dir: &Path, each: &mut impl FnMut(&Path, u64)) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("cannot list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("cannot list", dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| StoreError::io("cannot stat", &path, e))?;
        if meta.is_dir() {
            walk(&path, each)?;
        } else if meta.is_file() {
            each(&path, meta.len());
        }
    }
    Ok(())
}
