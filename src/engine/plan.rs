//! The dry run: every file a start would handle now, and what it would do
//! with it (copy, adopt, replace, skip or fail, with the reason), found by
//! the very checks a mover makes before it copies. Nothing is written.
//!
//! Rows are produced page by page (the run's keyset pages) into a bounded
//! channel that the HTTP response drains: memory stays flat on a million
//! rows, and a client that reads slowly slows the plan down.

use super::mover::{self, Target};
use super::{targets::TargetSnapshot, EngineError, Shared};
use crate::db::{self, candidates};
use crate::model::{Direction, FileKind, Reason};
use crate::paths::Location;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What a start would do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing at the target: the file is copied.
    Copy,
    /// The same bytes are at the target already: the row is pointed there.
    Adopt,
    /// A stale copy no row points at is at the target: the source replaces it.
    Replace,
    /// Not moved, and not a failure (see `reason`).
    Skip,
    /// Not moved: the run would count it as failed (see `reason`).
    Fail,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Adopt => "adopt",
            Action::Replace => "replace",
            Action::Skip => "skip",
            Action::Fail => "fail",
        }
    }
}

/// One file of the plan.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    /// The `fileTypes` key.
    pub kind: &'static str,
    pub entity_id: Uuid,
    /// The path the row holds now.
    pub source: String,
    /// The path the row would hold; null when the file would not move.
    pub target: Option<String>,
    /// Bytes, when known (the source's, or the target's when adopted).
    pub size: Option<u64>,
    pub action: Action,
    /// Why a file would be skipped or fail (the run's reason codes).
    pub reason: Option<&'static str>,
}

/// Rows checked at the same time (each may stat, HEAD or hash).
const CHECKS_IN_FLIGHT: usize = 8;
/// Rows waiting for the client at most.
const BUFFERED: usize = 2048;

/// Starts the plan of a start in `direction` over `kinds`; its rows come
/// out of the receiver, then at most one error (the plan stops there).
/// The caller checks first what would refuse the start itself.
pub fn start(
    shared: Arc<Shared>,
    direction: Direction,
    kinds: Vec<FileKind>,
) -> mpsc::Receiver<Result<PlanRow, EngineError>> {
    let (tx, rx) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        if let Err(e) = produce(&shared, direction, &kinds, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn produce(
    shared: &Shared,
    direction: Direction,
    kinds: &[FileKind],
    tx: &mpsc::Sender<Result<PlanRow, EngineError>>,
) -> Result<(), EngineError> {
    // As a run does: the bucket's keys once, so that most files toward S3
    // need no HEAD.
    let targets = TargetSnapshot::default();
    if direction == Direction::ToS3 {
        let prefix = shared.layout.object_key("");
        if let Err(e) = targets.take(&shared.s3, &prefix).await {
            tracing::warn!(error = %e, "Cannot list the bucket for the plan: every file gets a HEAD");
        }
    }
    for &kind in kinds {
        let mut after = Uuid::nil();
        loop {
            let page = {
                let mut conn = db::conn(&shared.pool).await?;
                candidates::page(
                    &mut conn,
                    kind,
                    direction,
                    after,
                    Uuid::max(),
                    candidates::PAGE_SIZE,
                    None,
                )
                .await?
            };
            let mut rows = stream::iter(page.rows)
                .map(|item| look(shared, &targets, direction, kind, item))
                .buffered(CHECKS_IN_FLIGHT);
            while let Some(row) = rows.next().await {
                if tx.send(Ok(row)).await.is_err() {
                    // The client went away.
                    return Ok(());
                }
            }
            match page.next {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    Ok(())
}

/// One file: the checks a mover makes before its copy, and nothing else.
async fn look(
    shared: &Shared,
    targets: &TargetSnapshot,
    direction: Direction,
    kind: FileKind,
    item: candidates::Candidate,
) -> PlanRow {
    let mut row = PlanRow {
        kind: kind.api_key(),
        entity_id: item.entity_id,
        source: item.path.clone(),
        target: None,
        size: None,
        action: Action::Copy,
        reason: None,
    };
    let decided = async {
        let plan = mover::plan_for(shared, direction, &item).await?;
        row.target = Some(plan.new_path.clone());
        match (&plan.source, &plan.target) {
            (Location::Disk(src), Location::Object(key)) => {
                let absent = targets.known_absent(key);
                let (size, target) =
                    mover::check_object_target(shared, src, key, &plan.new_path, absent).await?;
                Ok((Some(size), target))
            }
            (Location::Object(key), Location::Disk(dst)) => {
                let target = mover::check_disk_target(shared, key, dst, &plan.new_path).await?;
                // With nothing at the target, the run's GET is the source
                // check: a HEAD here.
                let size = match &target {
                    Target::Identical(digest) => Some(digest.size),
                    _ => Some(
                        shared
                            .s3
                            .head(key)
                            .await?
                            .ok_or_else(|| mover::object_missing(key))?
                            .size,
                    ),
                };
                Ok((size, target))
            }
            _ => Err(mover::Stop::new(
                Reason::Internal,
                "path plan does not match the direction",
            )),
        }
    }
    .await;
    match decided {
        Ok((size, target)) => {
            row.size = size;
            row.action = match target {
                Target::Absent => Action::Copy,
                Target::Identical(_) => Action::Adopt,
                Target::Stale(_) => Action::Replace,
            };
        }
        Err(stop) => {
            row.target = None;
            row.action = if stop.reason.is_failure() {
                Action::Fail
            } else {
                Action::Skip
            };
            row.reason = Some(stop.reason.as_str());
        }
    }
    row
}

/// The CSV header and one row per line (RFC 4180 quoting).
pub const CSV_HEADER: &str = "kind,entityId,source,target,size,action,reason\r\n";

pub fn csv_line(row: &PlanRow) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    format!(
        "{},{},{},{},{},{},{}\r\n",
        row.kind,
        row.entity_id,
        quote(&row.source),
        quote(row.target.as_deref().unwrap_or("")),
        row.size.map(|s| s.to_string()).unwrap_or_default(),
        row.action.as_str(),
        row.reason.unwrap_or(""),
    )
}

/// Files per action and kind, for the plan's closing totals.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanTotals {
    pub files: i64,
    pub copy: i64,
    pub adopt: i64,
    pub replace: i64,
    pub skip: i64,
    pub fail: i64,
    /// Bytes of the files that would be copied or replaced.
    pub bytes_to_copy: u64,
    /// Files per kind, every action included.
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub by_kind: std::collections::BTreeMap<&'static str, i64>,
}

impl PlanTotals {
    pub fn add(&mut self, row: &PlanRow) {
        self.files += 1;
        *self.by_kind.entry(row.kind).or_default() += 1;
        match row.action {
            Action::Copy => self.copy += 1,
            Action::Adopt => self.adopt += 1,
            Action::Replace => self.replace += 1,
            Action::Skip => self.skip += 1,
            Action::Fail => self.fail += 1,
        }
        if matches!(row.action, Action::Copy | Action::Replace) {
            self.bytes_to_copy += row.size.unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let row = PlanRow {
            kind: "originals",
            entity_id: Uuid::nil(),
            source: "/media/upload/a,\"b\".jpg".into(),
            target: None,
            size: None,
            action: Action::Skip,
            reason: Some(Reason::OutsideMediaLocation.as_str()),
        };
        assert_eq!(
            csv_line(&row),
            "originals,00000000-0000-0000-0000-000000000000,\"/media/upload/a,\"\"b\"\".jpg\",,,skip,outside_media_location\r\n"
        );
    }
}
