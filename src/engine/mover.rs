//! A file mover: takes one file at a time through the six steps — source
//! check, target check (adopt a verified identical copy), streamed copy,
//! verify, database (through the ledger), delete the source if asked.
//!
//! It must never delete a source before the ledger has committed the row
//! that stops needing it, never leave a partial file at a final path, never
//! adopt a target that differs from its source, and never overwrite a
//! target that some row points at. A differing target no row points at is
//! a stale copy (an earlier `aws s3 sync`, a sidecar edited since): the
//! source replaces it.

use super::ledger::Ledger;
use super::messages::{Handoff, MoveFile, Outcome, Record, StatsEvent};
use super::stats::Stats;
use super::{RunContext, Shared};
use crate::db::candidates::Candidate;
use crate::db::ledger::{Committed, PathChange, Unmoved};
use crate::failpoint::crash_point;
use crate::model::{Direction, FileKind, Reason};
use crate::paths::{Location, Plan};
use crate::store::disk::{Loaded, TempFile};
use crate::store::s3::MULTIPART_THRESHOLD;
use crate::store::{Digest, Hasher, ObjectMeta, StoreError, StreamHasher, WriteIf};
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
    // Atomic: a mover copies exactly one file at a time, which is what
    // makes the pool size the real concurrency. The rest of a file's way
    // (durable rename, commit, source deletion) goes on in a task of its
    // own, so the mover takes the next file while the ledger groups many
    // records into one transaction.
    type Result = AtomicResponse<Self, Handoff>;

    fn handle(&mut self, msg: MoveFile, _: &mut Context<Self>) -> Self::Result {
        let run = self.run.clone();
        let ledger = self.ledger.clone();
        let stats = self.stats.clone();
        let span = tracing::info_span!("file", batch_id = %run.batch_id, kind = %msg.kind, id = %msg.candidate.entity_id);
        AtomicResponse::new(Box::pin(
            async move {
                // A file handed over while the mover was busy begins only
                // once the run is not paused, and not at all once it is
                // cancelled.
                if !run.may_begin().await {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = tx.send(Outcome::NotStarted);
                    return Handoff(rx);
                }
                stats.do_send(StatsEvent::FileStarted);
                let clock = std::time::Instant::now();
                let kind = msg.kind;
                let item = msg.candidate;
                let lease = msg.lease;
                let copied = prepare(&run, kind, &item, msg.ahead).await;
                let copy_seconds = clock.elapsed().as_secs_f64();
                stats.do_send(StatsEvent::FileCopied);
                let (tx, rx) = tokio::sync::oneshot::channel();
                actix::spawn(
                    async move {
                        let outcome = match copied {
                            Ok(ready) => finish(&run, &ledger, kind, &item, lease, ready).await,
                            Err(stop) => settle_unmoved(&ledger, kind, &item, lease, stop).await,
                        };
                        stats.do_send(StatsEvent::FileDone {
                            kind,
                            outcome: outcome.clone(),
                            copy_seconds,
                        });
                        let _ = tx.send(outcome);
                    }
                    .instrument(tracing::Span::current()),
                );
                Handoff(rx)
            }
            .instrument(span)
            .into_actor(self),
        ))
    }
}

/// Why a file stopped short of its move.
pub(super) struct Stop {
    pub reason: Reason,
    pub message: String,
}

impl Stop {
    pub(super) fn new(reason: Reason, message: impl Into<String>) -> Stop {
        Stop {
            reason,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::new(e.reason(), e.to_string())
    }
}

/// The copy step's result.
struct Copied {
    digest: Digest,
    /// False when an identical target already existed and was adopted.
    created: bool,
    /// The copy took the place of a stale one that no row pointed at.
    replaced: bool,
    /// A download, written and verified but not yet flushed and renamed
    /// into place: that happens off the mover, in `finish`.
    temp: Option<TempFile>,
}

/// A verified copy, not yet recorded.
struct Ready {
    plan: Plan,
    copied: Copied,
}

/// The mover's part: plan (unless done ahead), check, copy, verify.
async fn prepare(
    run: &RunContext,
    kind: FileKind,
    item: &Candidate,
    ahead: Option<Ahead>,
) -> Result<Ready, Stop> {
    let (plan, learnt) = match ahead {
        Some(ahead) => (ahead.plan?, ahead.learnt.filter(|l| l.fresh())),
        None => (plan_for(&run.shared, run.direction, item).await?, None),
    };
    let copied = copy(run, kind, item, &plan, learnt.map(|l| l.what)).await?;
    Ok(Ready { plan, copied })
}

/// Files up to this size are read whole ahead of their mover.
const AHEAD_WHOLE_UP_TO: u64 = 512 * 1024;
/// What the look-ahead learnt is used only this soon after: after a
/// pause, or a long wait for a mover, the mover looks again (the gallery
/// may have rewritten the file, or written the target, meanwhile).
const AHEAD_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// What is done for a file while the movers are still busy with the files
/// before it, so that a mover set free goes straight to the transfer: the
/// file's plan and, where it is the usual case, the first check.
pub struct Ahead {
    plan: Result<Plan, Stop>,
    learnt: Option<Learnt>,
}

struct Learnt {
    what: Foreseen,
    at: std::time::Instant,
}

impl Learnt {
    fn fresh(&self) -> bool {
        self.at.elapsed() < AHEAD_FRESH
    }
}

/// The first check of a file, made ahead.
enum Foreseen {
    /// A small upload whose key the bucket's listing does not hold: its
    /// bytes and their digest.
    Source(Loaded),
    /// A download with nothing at its target yet. Still placed only if
    /// nothing is there by then (`commit_new`).
    NoTarget,
}

/// The work on a file that needs no mover; reads only. A file that cannot
/// be read here is left for its mover to read, and to report.
pub(super) async fn look_ahead(run: Arc<RunContext>, item: Candidate) -> Ahead {
    let shared = &run.shared;
    let plan = match lexical_plan(shared, run.direction, &item) {
        Ok(plan) => plan,
        Err(stop) => return Ahead::stopped(stop),
    };
    let disk = &shared.disk;
    let what = match (&plan.source, &plan.target) {
        // The usual upload: the confinement check and the read in one
        // trip, on the file opened.
        (Location::Disk(src), Location::Object(key)) if run.targets.known_absent(key) => {
            match disk
                .load_under(&shared.media_root_real, src, AHEAD_WHOLE_UP_TO)
                .await
            {
                Ok(Some(source @ Loaded::Whole { .. })) => Some(Foreseen::Source(source)),
                Ok(_) => None,
                Err(outside @ StoreError::Outside(_)) => return Ahead::stopped(outside.into()),
                // Unreadable: confined below, read (and reported) by its mover.
                Err(_) => return Ahead::planned(confined(shared, plan).await, None),
            }
        }
        (Location::Object(_), Location::Disk(dst)) => {
            let dst = dst.clone();
            let plan = confined(shared, plan).await;
            let what = match (&plan, disk.stat(&dst).await) {
                (Ok(_), Ok(None)) => Some(Foreseen::NoTarget),
                _ => None,
            };
            return Ahead::planned(plan, what);
        }
        _ => return Ahead::planned(confined(shared, plan).await, None),
    };
    Ahead::planned(Ok(plan), what)
}

impl Ahead {
    fn planned(plan: Result<Plan, Stop>, what: Option<Foreseen>) -> Ahead {
        let learnt = what.map(|what| Learnt {
            what,
            at: std::time::Instant::now(),
        });
        Ahead { plan, learnt }
    }

    fn stopped(stop: Stop) -> Ahead {
        Ahead::planned(Err(stop), None)
    }
}

/// Where a file goes, or why it cannot: an external library's file, a path
/// that cannot be mapped, or one that leads out of the media location.
pub(super) async fn plan_for(
    shared: &Shared,
    direction: Direction,
    item: &Candidate,
) -> Result<Plan, Stop> {
    confined(shared, lexical_plan(shared, direction, item)?).await
}

/// Where a file goes, from its path alone (no file is looked at).
fn lexical_plan(shared: &Shared, direction: Direction, item: &Candidate) -> Result<Plan, Stop> {
    if item.external {
        return Err(Stop::new(
            Reason::ExternalLibrary,
            format!(
                "a file of an external library, sent to S3 as {} by the gallery's own migration; it belongs in the library's own folder outside the media location (likely /{}), which noodle-migrate does not write: copy it back by hand",
                item.path,
                item.path.trim_start_matches("s3://")
            ),
        ));
    }
    shared
        .layout
        .plan(direction, &item.path)
        .map_err(|refusal| Stop::new(refusal.code(), refusal.to_string()))
}

/// `plan`, once its disk side is checked to lead nowhere outside the media
/// location through a symbolic link (the path is lexically safe already).
async fn confined(shared: &Shared, plan: Plan) -> Result<Plan, Stop> {
    let local = match (&plan.source, &plan.target) {
        (Location::Disk(p), _) | (_, Location::Disk(p)) => p,
        _ => return Err(Stop::new(Reason::Internal, "no disk side in the plan")),
    };
    if !shared
        .disk
        .stays_under(&shared.media_root_real, local)
        .await?
    {
        return Err(StoreError::Outside(local.display().to_string()).into());
    }
    Ok(plan)
}

/// The rest of a file's way: make a download durable under its final
/// name, record the new path, then (only then) delete the source.
async fn finish(
    run: &RunContext,
    ledger: &Addr<Ledger>,
    kind: FileKind,
    item: &Candidate,
    lease: uuid::Uuid,
    ready: Ready,
) -> Outcome {
    let Ready { plan, mut copied } = ready;
    if let Some(temp) = copied.temp.take() {
        // A stale copy, checked to be no row's, is replaced; otherwise
        // nothing may be at the target (the gallery may write there now).
        let placed = if copied.replaced {
            temp.commit().await
        } else {
            temp.commit_new().await
        };
        if let Err(e) = placed {
            return settle_unmoved(ledger, kind, item, lease, e.into()).await;
        }
    }
    crash_point("after-copy");

    let change = PathChange {
        log_id: uuid::Uuid::now_v7(),
        kind,
        row_id: item.row_id,
        entity_id: item.entity_id,
        old_path: item.path.clone(),
        new_path: plan.new_path.clone(),
        bytes: copied.digest.size as i64,
        adopted: !copied.created,
        replaced: copied.replaced,
        lease,
    };
    match ledger.send(Record::Change(change)).await {
        Ok(Ok(Committed::Done)) => {}
        Ok(Ok(Committed::Fenced)) => {
            // Another process took the chunk over and handles the file: our
            // copy stays (it may adopt it, or point at it already), and so
            // does the source.
            tracing::info!(path = %item.path, "Left to another process: the chunk's lease was taken over");
            return Outcome::HandedOver;
        }
        Ok(Ok(Committed::RowChanged)) => {
            // The gallery changed the row meanwhile: our copy serves nobody,
            // unless the gallery wrote its own file there and points at it.
            if copied.created {
                remove_unless_referenced(run, &plan).await;
            }
            tracing::info!(path = %item.path, "Skipped: the row changed during the migration");
            return Outcome::Skipped {
                reason: Reason::RowChanged,
            };
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, path = %item.path, "Path update failed; the copy stays for the next run");
            return Outcome::Failed {
                reason: Reason::DatabaseError,
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "The ledger is gone");
            return Outcome::Failed {
                reason: Reason::DatabaseError,
            };
        }
    }

    crash_point("after-commit");
    if run.delete_source {
        // Deletions come in bursts after each commit: keep them to the
        // run's concurrency.
        let _permit = run.side_work.acquire().await;
        if let Err(e) = delete(run, &plan.source).await {
            tracing::warn!(error = %e, path = %item.path, "Migrated, but the source could not be deleted");
        }
    }
    if copied.replaced {
        tracing::info!(from = %item.path, to = %plan.new_path, "Migrated, replacing a stale copy that no row pointed at");
    } else {
        tracing::debug!(from = %item.path, to = %plan.new_path, adopted = !copied.created, "Migrated");
    }
    Outcome::Completed {
        adopted: !copied.created,
        replaced: copied.replaced,
        bytes: copied.digest.size,
    }
}

async fn settle_unmoved(
    ledger: &Addr<Ledger>,
    kind: FileKind,
    item: &Candidate,
    lease: uuid::Uuid,
    stop: Stop,
) -> Outcome {
    if stop.reason.is_failure() {
        tracing::warn!(path = %item.path, reason = %stop.reason, detail = %stop.message, "File failed");
    } else {
        tracing::info!(path = %item.path, reason = %stop.reason, detail = %stop.message, "File skipped");
    }
    let record = Record::Unmoved(Unmoved {
        attempt: uuid::Uuid::now_v7(),
        kind,
        row_id: item.row_id,
        entity_id: item.entity_id,
        path: item.path.clone(),
        reason: stop.reason,
        message: stop.message,
        lease,
    });
    match ledger
        .send(record)
        .await
        .map_err(|e| super::EngineError::Internal(e.to_string()))
    {
        Ok(Ok(Committed::Fenced)) => return Outcome::HandedOver,
        Ok(Ok(_)) => {}
        Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "Cannot record the failure"),
    }
    if stop.reason.is_failure() {
        Outcome::Failed {
            reason: stop.reason,
        }
    } else {
        Outcome::Skipped {
            reason: stop.reason,
        }
    }
}

/// Removes the copy of a file whose row changed, when no row points at its
/// path: the gallery may have written its own file at the same place.
async fn remove_unless_referenced(run: &RunContext, plan: &Plan) {
    let mut names = vec![plan.new_path.clone()];
    if let Location::Object(key) = &plan.target {
        names.push(key.clone());
    }
    match referenced(&run.shared, &names).await {
        Ok(false) => {
            if let Err(e) = delete(run, &plan.target).await {
                tracing::warn!(error = %e, "Cannot remove the copy of a row that changed");
            }
        }
        Ok(true) => {
            tracing::info!(path = %plan.new_path, "A row of the gallery points at the target: it stays")
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %plan.new_path, "Cannot tell whether a row points at the copy of a row that changed: it stays")
        }
    }
}

/// Whether a row of the gallery points at any of `names`.
async fn referenced(shared: &Shared, names: &[String]) -> Result<bool, crate::db::DbError> {
    let mut conn = crate::db::conn(&shared.pool).await?;
    crate::db::orphans::is_referenced(&mut conn, names).await
}

async fn delete(run: &RunContext, location: &Location) -> Result<(), StoreError> {
    match location {
        Location::Disk(path) => run.shared.disk.delete(path).await,
        Location::Object(key) => run.shared.s3.delete(key).await,
    }
}

/// Steps 1–4 for one file; `foreseen`, its first check made ahead.
async fn copy(
    run: &RunContext,
    kind: FileKind,
    item: &Candidate,
    plan: &Plan,
    foreseen: Option<Foreseen>,
) -> Result<Copied, Stop> {
    let copied = match (&plan.source, &plan.target, run.direction) {
        (Location::Disk(src), Location::Object(key), Direction::ToS3) => {
            let loaded = match foreseen {
                Some(Foreseen::Source(loaded)) => Some(loaded),
                _ => None,
            };
            to_s3(run, src, key, &plan.new_path, loaded).await?
        }
        (Location::Object(key), Location::Disk(dst), Direction::ToDisk) => {
            let no_target = matches!(foreseen, Some(Foreseen::NoTarget));
            to_disk(run, key, dst, &plan.new_path, no_target).await?
        }
        _ => {
            return Err(Stop::new(
                Reason::Internal,
                "path plan does not match the direction",
            ))
        }
    };
    if run.verify && kind == FileKind::Originals {
        if let Some(expected) = &item.checksum {
            if expected.as_slice() != copied.digest.sha1 {
                match copied.temp {
                    Some(temp) => temp.discard().await,
                    None if copied.created => {
                        let _ = delete(run, &plan.target).await;
                    }
                    None => {}
                }
                return Err(Stop::new(
                    Reason::ChecksumMismatch,
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

async fn to_s3(
    run: &RunContext,
    src: &Path,
    key: &str,
    new_path: &str,
    loaded: Option<Loaded>,
) -> Result<Copied, Stop> {
    match upload(run, src, key, new_path, true, loaded).await {
        // The object appeared since the bucket was listed. Another process
        // of the batch (one whose lease ran out) may have put this very
        // file there: look at it as at any target found by a HEAD.
        Err(Taken::SinceListing) => upload(run, src, key, new_path, false, None)
            .await
            .map_err(Taken::into_stop),
        other => other.map_err(Taken::into_stop),
    }
}

/// Why an upload stopped.
enum Taken {
    /// The conditional upload found an object the bucket's listing did
    /// not hold.
    SinceListing,
    Stop(Stop),
}

impl Taken {
    fn into_stop(self) -> Stop {
        match self {
            Taken::SinceListing => Stop::new(
                Reason::TargetInUse,
                "the object was written by someone else during the migration; it is left as it is",
            ),
            Taken::Stop(stop) => stop,
        }
    }
}

impl<E: Into<Stop>> From<E> for Taken {
    fn from(e: E) -> Taken {
        Taken::Stop(e.into())
    }
}

async fn upload(
    run: &RunContext,
    src: &Path,
    key: &str,
    new_path: &str,
    trust_listing: bool,
    loaded: Option<Loaded>,
) -> Result<Copied, Taken> {
    let (disk, s3) = (&run.shared.disk, &run.shared.s3);
    let skip_head = trust_listing && run.targets.known_absent(key);
    let (write_if, source) = if skip_head {
        // Nothing to compare with: one read gives the size, the bytes and
        // their digest (unless it was done ahead).
        let loaded = match loaded {
            Some(loaded) => Some(loaded),
            None => disk.load(src, MULTIPART_THRESHOLD).await?,
        };
        match loaded {
            None => return Err(source_missing(src).into()),
            Some(loaded) => (WriteIf::Absent, loaded),
        }
    } else {
        match check_object_target(&run.shared, src, key, new_path, false).await? {
            (_, Target::Identical(digest)) => {
                return Ok(Copied {
                    digest,
                    created: false,
                    replaced: false,
                    temp: None,
                })
            }
            (size, Target::Absent) => (WriteIf::Absent, Loaded::Large(size)),
            // Replaced only if it is still the stale copy just looked at.
            (size, Target::Stale(etag)) => (
                etag.map_or(WriteIf::Any, WriteIf::Matches),
                Loaded::Large(size),
            ),
        }
    };
    let replaced = write_if != WriteIf::Absent;
    let sent = match source {
        Loaded::Whole { data, digest } => s3
            .put_whole(key, data, &digest, &write_if)
            .await
            .map(|()| digest),
        Loaded::Large(size) => s3.put_file(disk, src, key, size, &write_if).await,
    };
    let digest = match sent {
        Err(StoreError::TargetTaken(_)) if skip_head => return Err(Taken::SinceListing),
        other => other?,
    };
    Ok(Copied {
        digest,
        created: true,
        replaced,
        temp: None,
    })
}

/// What a file's target holds, as the source compares with it.
pub(super) enum Target {
    /// Nothing: the file is copied.
    Absent,
    /// The same bytes: adopted, with the source's digest.
    Identical(Digest),
    /// Other bytes no row points at: replaced (toward S3, only if the
    /// object still has this ETag).
    Stale(Option<String>),
}

/// The source and target checks of a file going to S3: the source's size,
/// and what its key holds (`known_absent`: the bucket's listing says
/// nothing, so no HEAD). A target some row points at is refused.
pub(super) async fn check_object_target(
    shared: &Shared,
    src: &Path,
    key: &str,
    new_path: &str,
    known_absent: bool,
) -> Result<(u64, Target), Stop> {
    let (disk, s3) = (&shared.disk, &shared.s3);
    // The source check and the target check are independent: do both at
    // once. A key the run's snapshot of the bucket does not hold needs no
    // HEAD: the upload is conditional, so an object the gallery put there
    // since (it writes at the same keys once switched to S3) is never
    // overwritten.
    let target_check = async {
        if known_absent {
            Ok(None)
        } else {
            s3.head(key).await
        }
    };
    let (size, existing) = tokio::join!(disk.stat(src), target_check);
    let size = size?.ok_or_else(|| source_missing(src))?;
    let Some(existing) = existing? else {
        return Ok((size, Target::Absent));
    };
    if existing.size == size {
        let local = digest_to_compare(shared, src, &existing).await?;
        if same_content(shared, key, &existing, &local).await? {
            return Ok((size, Target::Identical(local)));
        }
    }
    // Both forms a row could name this object by.
    let names = [new_path.to_string(), key.to_string()];
    refuse_if_referenced(shared, &names, &format!("object {key}")).await?;
    Ok((size, Target::Stale(existing.etag)))
}

/// The target check of a file coming to disk: what `dst` holds, compared
/// with the object's HEAD when something is there. With nothing there, the
/// download's GET is the source check.
pub(super) async fn check_disk_target(
    shared: &Shared,
    key: &str,
    dst: &Path,
    new_path: &str,
) -> Result<Target, Stop> {
    let (disk, s3) = (&shared.disk, &shared.s3);
    let Some(size) = disk.stat(dst).await? else {
        return Ok(Target::Absent);
    };
    let source = s3.head(key).await?.ok_or_else(|| object_missing(key))?;
    if size == source.size {
        let local = digest_to_compare(shared, dst, &source).await?;
        if same_content(shared, key, &source, &local).await? {
            return Ok(Target::Identical(local));
        }
    }
    let names = [new_path.to_string()];
    refuse_if_referenced(shared, &names, &dst.display().to_string()).await?;
    Ok(Target::Stale(None))
}

fn source_missing(src: &Path) -> Stop {
    Stop::new(
        Reason::SourceMissing,
        format!("{} does not exist", src.display()),
    )
}

pub(super) fn object_missing(key: &str) -> Stop {
    Stop::new(
        Reason::SourceMissing,
        format!("object {key} does not exist"),
    )
}

/// A differing target is only replaced when no row points at it.
async fn refuse_if_referenced(shared: &Shared, names: &[String], what: &str) -> Result<(), Stop> {
    let in_use = referenced(shared, names)
        .await
        .map_err(|e| Stop::new(Reason::DatabaseError, e.to_string()))?;
    if in_use {
        return Err(Stop::new(
            Reason::TargetInUse,
            format!("{what} already exists with other content, and a row of the gallery points at it: it is never overwritten"),
        ));
    }
    Ok(())
}

async fn to_disk(
    run: &RunContext,
    key: &str,
    dst: &Path,
    new_path: &str,
    no_target: bool,
) -> Result<Copied, Stop> {
    let (disk, s3) = (&run.shared.disk, &run.shared.s3);
    let target = if no_target {
        Target::Absent
    } else {
        check_disk_target(&run.shared, key, dst, new_path).await?
    };
    let replaced = match target {
        Target::Identical(digest) => {
            return Ok(Copied {
                digest,
                created: false,
                replaced: false,
                temp: None,
            })
        }
        Target::Absent => false,
        Target::Stale(_) => true,
    };

    // No target yet (or a stale one): the GET is the source check (a HEAD
    // first would only cost a round trip). The download goes to a
    // temporary file, renamed over the stale copy only once whole.
    let mut download = match s3.get(key).await {
        Ok(d) => d,
        Err(StoreError::S3 {
            status: Some(404), ..
        }) => return Err(object_missing(key)),
        Err(e) => return Err(e.into()),
    };
    let mut temp = disk.create_temp(dst).await?;
    temp.expect(download.meta.size);
    // The SHA-1 we stored with the object decides alone; MD5 is only
    // needed where a plain ETag is all there is to check against.
    let mut hasher = StreamHasher::new(if download.meta.sha1.is_some() {
        Hasher::without_md5()
    } else {
        Hasher::new()
    });
    let streamed: Result<Digest, StoreError> = async {
        while let Some(chunk) = download.next_chunk().await? {
            temp.write(&chunk).await?;
            hasher.update(chunk).await?;
            crash_point("mid-download");
        }
        // On disk before the mover takes its next file: what waits for the
        // commit holds no memory.
        temp.write_out().await?;
        hasher.finish().await
    }
    .await;
    let digest = match streamed {
        Ok(digest) => digest,
        Err(e) => {
            temp.discard().await;
            return Err(e.into());
        }
    };
    let meta = &download.meta;
    let problem = if digest.size != meta.size {
        Some(format!(
            "received {} bytes, expected {}",
            digest.size, meta.size
        ))
    } else if meta.sha1.is_some_and(|s| s != digest.sha1) {
        Some("SHA-1 of the data received does not match the object's metadata".to_string())
    } else if meta.sha1.is_none() && meta.md5.is_some_and(|m| Some(m) != digest.md5) {
        Some("MD5 of the data received does not match the ETag".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        temp.discard().await;
        return Err(Stop::new(
            Reason::VerificationFailed,
            format!("object {key}: {problem}"),
        ));
    }
    Ok(Copied {
        digest,
        created: true,
        replaced,
        temp: Some(temp),
    })
}

/// The digest of a local file that `same_content` compares with `object`:
/// the MD5 (the costlier hash) only when the object offers no SHA-1 of ours
/// but a plain ETag.
async fn digest_to_compare(
    shared: &Shared,
    path: &Path,
    object: &ObjectMeta,
) -> Result<Digest, StoreError> {
    if object.sha1.is_none() && object.md5.is_some() {
        shared.disk.hash_file(path).await
    } else {
        shared.disk.sha1_file(path).await
    }
}

/// Whether an object holds the same bytes as a local file of the same size:
/// by the SHA-1 we stored, else the MD5 of a plain ETag, else by reading it.
async fn same_content(
    shared: &Shared,
    key: &str,
    object: &ObjectMeta,
    local: &Digest,
) -> Result<bool, Stop> {
    Ok(match (object.sha1, object.md5) {
        (Some(sha1), _) => sha1 == local.sha1,
        (None, Some(md5)) => Some(md5) == local.md5,
        (None, None) => shared.s3.hash_object(key).await?.sha1 == local.sha1,
    })
}
