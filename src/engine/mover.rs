//! A file mover: takes one file at a time through the six steps — source
//! check, target check (adopt a verified identical copy), streamed copy,
//! verify, database (through the ledger), delete the source if asked.
//!
//! It must never delete a source before the ledger has committed the row
//! that stops needing it, never leave a partial file at a final path, and
//! never adopt a target that differs from its source.

use super::ledger::Ledger;
use super::messages::{MoveFile, Outcome, Record, StatsEvent};
use super::stats::Stats;
use super::RunContext;
use crate::db::candidates::Candidate;
use crate::db::ledger::{PathChange, Unmoved};
use crate::failpoint::crash_point;
use crate::model::{Direction, FileKind};
use crate::paths::{Location, Plan};
use crate::store::{Digest, Hasher, ObjectMeta, StoreError};
use actix::{Actor, Addr, AtomicResponse, Context, Handler, WrapFuture};
use std::path::Path;
use std::sync::Arc;
use tracing::Instrument;

pub struct Mover {
    run: Arc<RunContext>,
    ledger: Addr<Ledger>,
    stats: Addr<Stats>,
}

impl Mover {
    pub fn new(run: Arc<RunContext>, ledger: Addr<Ledger>, stats: Addr<Stats>) -> Mover {
        Mover { run, ledger, stats }
    }
}

impl Actor for Mover {
    type Context = Context<Self>;
}

impl Handler<MoveFile> for Mover {
    // Atomic: a mover works on exactly one file at a time, which is what
    // makes the pool size the real concurrency.
    type Result = AtomicResponse<Self, Outcome>;

    fn handle(&mut self, msg: MoveFile, _: &mut Context<Self>) -> Self::Result {
        let run = self.run.clone();
        let ledger = self.ledger.clone();
        let stats = self.stats.clone();
        let span = tracing::info_span!("file", batch_id = %run.batch_id, kind = %msg.kind, id = %msg.candidate.entity_id);
        AtomicResponse::new(Box::pin(
            async move {
                stats.do_send(StatsEvent::FileStarted);
                let (outcome, copy_seconds) =
                    move_file(&run, &ledger, msg.kind, msg.candidate).await;
                stats.do_send(StatsEvent::FileDone {
                    kind: msg.kind,
                    outcome: outcome.clone(),
                    copy_seconds,
                });
                outcome
            }
            .instrument(span)
            .into_actor(self),
        ))
    }
}

/// Why a file stopped short of its move.
struct Stop {
    failed: bool,
    reason: String,
    message: String,
}

impl Stop {
    fn failed(reason: &str, message: impl Into<String>) -> Stop {
        Stop {
            failed: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
    fn skipped(reason: &str, message: impl Into<String>) -> Stop {
        Stop {
            failed: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::failed(e.reason(), e.to_string())
    }
}

/// The copy step's result.
struct Copied {
    digest: Digest,
    /// False when an identical target already existed and was adopted.
    created: bool,
}

/// Moves one file; returns its outcome and the seconds spent before the commit.
async fn move_file(
    run: &RunContext,
    ledger: &Addr<Ledger>,
    kind: FileKind,
    item: Candidate,
) -> (Outcome, f64) {
    let clock = std::time::Instant::now();
    let mut copy_seconds = 0.0;
    let outcome = async {
    let plan = match run.layout.plan(run.direction, &item.path) {
        Ok(plan) => plan,
        Err(refusal) => {
            let stop = Stop::skipped(refusal.code(), refusal.to_string());
            return settle_unmoved(ledger, kind, &item, stop).await;
        }
    };
    let copied = match copy(run, kind, &item, &plan).await {
        Ok(c) => c,
        Err(stop) => return settle_unmoved(ledger, kind, &item, stop).await,
    };
    copy_seconds = clock.elapsed().as_secs_f64();
    crash_point("after-copy");

    let change = PathChange {
        kind,
        row_id: item.row_id,
        entity_id: item.entity_id,
        old_path: item.path.clone(),
        new_path: plan.new_path.clone(),
        bytes: copied.digest.size as i64,
        adopted: !copied.created,
    };
    match ledger.send(Record::Change(change)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            // The gallery changed the row meanwhile: our copy serves nobody.
            if copied.created {
                if let Err(e) = delete(run, &plan.target).await {
                    tracing::warn!(error = %e, "Cannot remove the copy of a row that changed");
                }
            }
            tracing::info!(path = %item.path, "Skipped: the row changed during the migration");
            return Outcome::Skipped {
                reason: "row_changed".into(),
            };
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, path = %item.path, "Path update failed; the copy stays for the next run");
            return Outcome::Failed {
                reason: "database_error".into(),
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "The ledger is gone");
            return Outcome::Failed {
                reason: "database_error".into(),
            };
        }
    }

    crash_point("after-commit");
    if run.delete_source {
        if let Err(e) = delete(run, &plan.source).await {
            tracing::warn!(error = %e, path = %item.path, "Migrated, but the source could not be deleted");
        }
    }
    tracing::debug!(from = %item.path, to = %plan.new_path, adopted = !copied.created, "Migrated");
    Outcome::Completed {
        adopted: !copied.created,
        bytes: copied.digest.size,
    }
    }
    .await;
    (outcome, copy_seconds)
}

async fn settle_unmoved(
    ledger: &Addr<Ledger>,
    kind: FileKind,
    item: &Candidate,
    stop: Stop,
) -> Outcome {
    if stop.failed {
        tracing::warn!(path = %item.path, reason = %stop.reason, detail = %stop.message, "File failed");
    } else {
        tracing::info!(path = %item.path, reason = %stop.reason, detail = %stop.message, "File skipped");
    }
    let record = Record::Unmoved(Unmoved {
        kind,
        row_id: item.row_id,
        entity_id: item.entity_id,
        path: item.path.clone(),
        failed: stop.failed,
        reason: stop.reason.clone(),
        message: stop.message,
    });
    if let Ok(Err(e)) | Err(e) = ledger
        .send(record)
        .await
        .map_err(|e| super::EngineError::Internal(e.to_string()))
    {
        tracing::warn!(error = %e, "Cannot record the failure");
    }
    if stop.failed {
        Outcome::Failed {
            reason: stop.reason,
        }
    } else {
        Outcome::Skipped {
            reason: stop.reason,
        }
    }
}

async fn delete(run: &RunContext, location: &Location) -> Result<(), StoreError> {
    match location {
        Location::Disk(path) => run.shared.disk.delete(path).await,
        Location::Object(key) => run.shared.s3.delete(key).await,
    }
}

/// Steps 1–4 for one file.
async fn copy(
    run: &RunContext,
    kind: FileKind,
    item: &Candidate,
    plan: &Plan,
) -> Result<Copied, Stop> {
    // The path is lexically safe; make sure no symbolic link leads out of
    // the media location either (a file sent out, or written outside).
    let local = match (&plan.source, &plan.target) {
        (Location::Disk(p), _) | (_, Location::Disk(p)) => p,
        _ => return Err(Stop::failed("internal", "no disk side in the plan")),
    };
    if !run
        .shared
        .disk
        .stays_under(&run.shared.media_root_real, local)
        .await?
    {
        return Err(Stop::skipped(
            "unsafe_path",
            format!(
                "{} leads outside the media location through a symbolic link",
                local.display()
            ),
        ));
    }
    let copied = match (&plan.source, &plan.target, run.direction) {
        (Location::Disk(src), Location::Object(key), Direction::ToS3) => {
            to_s3(run, src, key).await?
        }
        (Location::Object(key), Location::Disk(dst), Direction::ToDisk) => {
            to_disk(run, key, dst).await?
        }
        _ => {
            return Err(Stop::failed(
                "internal",
                "path plan does not match the direction",
            ))
        }
    };
    if run.verify && kind == FileKind::Originals {
        if let Some(expected) = &item.checksum {
            if expected.as_slice() != copied.digest.sha1 {
                if copied.created {
                    let _ = delete(run, &plan.target).await;
                }
                return Err(Stop::failed(
                    "checksum_mismatch",
                    format!(
                        "SHA-1 {} does not match asset.checksum {}",
                        hex::encode(copied.digest.sha1),
                        hex::encode(expected)
                    ),
                ));
            }
        }
    }
    Ok(copied)
}

async fn to_s3(run: &RunContext, src: &Path, key: &str) -> Result<Copied, Stop> {
    let (disk, s3) = (&run.shared.disk, &run.shared.s3);
    // The source check and the target check are independent: do both at once.
    let (size, existing) = tokio::join!(disk.stat(src), s3.head(key));
    let size = size?.ok_or_else(|| {
        Stop::failed(
            "source_missing",
            format!("{} does not exist", src.display()),
        )
    })?;
    if let Some(existing) = existing? {
        if existing.size != size {
            return Err(target_differs(key, existing.size, size));
        }
        let local = disk.hash_file(src).await?;
        if !same_content(run, key, &existing, &local).await? {
            return Err(Stop::failed(
                "target_differs",
                format!("object {key} exists with the same size but different content"),
            ));
        }
        return Ok(Copied {
            digest: local,
            created: false,
        });
    }
    let digest = s3.put_file(disk, src, key, size).await?;
    Ok(Copied {
        digest,
        created: true,
    })
}

async fn to_disk(run: &RunContext, key: &str, dst: &Path) -> Result<Copied, Stop> {
    let (disk, s3) = (&run.shared.disk, &run.shared.s3);
    let missing = || Stop::failed("source_missing", format!("object {key} does not exist"));
    if let Some(size) = disk.stat(dst).await? {
        let source = s3.head(key).await?.ok_or_else(missing)?;
        if size != source.size {
            return Err(target_differs(
                &dst.display().to_string(),
                size,
                source.size,
            ));
        }
        let local = disk.hash_file(dst).await?;
        if !same_content(run, key, &source, &local).await? {
            return Err(Stop::failed(
                "target_differs",
                format!(
                    "{} exists with the same size but different content",
                    dst.display()
                ),
            ));
        }
        return Ok(Copied {
            digest: local,
            created: false,
        });
    }

    // No target yet: the GET is the source check (a HEAD first would only
    // cost a round trip).
    let mut download = match s3.get(key).await {
        Ok(d) => d,
        Err(StoreError::S3 {
            status: Some(404), ..
        }) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let mut temp = disk.create_temp(dst).await?;
    let mut hasher = Hasher::new();
    let streamed: Result<(), StoreError> = async {
        while let Some(chunk) = download.next_chunk().await? {
            temp.write(&chunk).await?;
            hasher.update(chunk).await;
            crash_point("mid-download");
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        temp.discard().await;
        return Err(e.into());
    }
    let digest = hasher.finish();
    let meta = &download.meta;
    let problem = if digest.size != meta.size {
        Some(format!(
            "received {} bytes, expected {}",
            digest.size, meta.size
        ))
    } else if meta.md5.is_some_and(|m| m != digest.md5) {
        Some("MD5 of the data received does not match the ETag".to_string())
    } else if meta.sha1.is_some_and(|s| s != digest.sha1) {
        Some("SHA-1 of the data received does not match the object's metadata".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        temp.discard().await;
        return Err(Stop::failed(
            "verification_failed",
            format!("object {key}: {problem}"),
        ));
    }
    temp.commit().await?;
    Ok(Copied {
        digest,
        created: true,
    })
}

/// Whether an object holds the same bytes as a local file of the same size:
/// by the SHA-1 we stored, else the MD5 of a plain ETag, else by reading it.
async fn same_content(
    run: &RunContext,
    key: &str,
    object: &ObjectMeta,
    local: &Digest,
) -> Result<bool, Stop> {
    Ok(match (object.sha1, object.md5) {
        (Some(sha1), _) => sha1 == local.sha1,
        (None, Some(md5)) => md5 == local.md5,
        (None, None) => run.shared.s3.hash_object(key).await?.sha1 == local.sha1,
    })
}

fn target_differs(target: &str, target_size: u64, source_size: u64) -> Stop {
    Stop::failed(
        "target_differs",
        format!("{target} already exists with {target_size} bytes; the source has {source_size}"),
    )
}
