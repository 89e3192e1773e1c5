//! The pre-migration estimate: exact counts from SQL (the same predicates a
//! run uses), and sizes: originals from `asset_exif."fileSizeInByte"`
//! (statting the files whose size the database does not know), the other
//! kinds from a sample of their files, scaled up.

use super::{EngineError, Shared};
use crate::db::{self, candidates};
use crate::model::{Direction, FileKind, PerKind};
use crate::paths::Location;
use futures_util::stream::{self, StreamExt};

/// Files statted per kind to estimate sizes the database does not hold.
const SAMPLE: i64 = 50;

#[derive(Debug, Clone)]
pub struct Estimate {
    pub direction: Direction,
    pub counts: PerKind<i64>,
    pub sizes: PerKind<i64>,
    /// Per kind: `exact` (from the database), `sampled`, or `mixed`.
    pub size_sources: Vec<(FileKind, &'static str)>,
    /// Candidate rows that a run will refuse (outside the media location).
    pub unmovable: i64,
}

/// One kind's part of the estimate.
struct KindEstimate {
    kind: FileKind,
    movable: i64,
    unmovable: i64,
    bytes: i64,
    source: &'static str,
}

/// Connections an estimate takes from the pool at most: the rest stay for
/// a run that may be reading its pages meanwhile.
const CONNECTIONS: usize = 3;

/// A few kinds are counted at the same time, each on a connection of its
/// own: the database scans them in parallel, and the size samples of one
/// kind overlap the counts of the others.
pub async fn estimate(shared: &Shared, direction: Direction) -> Result<Estimate, EngineError> {
    use futures_util::{StreamExt, TryStreamExt};
    let parts: Vec<KindEstimate> = futures_util::stream::iter(FileKind::ALL)
        .map(|kind| estimate_kind(shared, direction, kind))
        .buffered(CONNECTIONS)
        .try_collect()
        .await?;
    let mut estimate = Estimate {
        direction,
        counts: PerKind::default(),
        sizes: PerKind::default(),
        size_sources: Vec::new(),
        unmovable: 0,
    };
    for part in parts {
        estimate.counts.set(part.kind, part.movable);
        estimate.sizes.set(part.kind, part.bytes);
        estimate.size_sources.push((part.kind, part.source));
        estimate.unmovable += part.unmovable;
    }
    Ok(estimate)
}

async fn estimate_kind(
    shared: &Shared,
    direction: Direction,
    kind: FileKind,
) -> Result<KindEstimate, EngineError> {
    let mut conn = db::conn(&shared.pool).await?;
    let root = shared.layout.media_root();
    let count = candidates::count(&mut conn, kind, direction, &root).await?;
    let (unknown, known_bytes) = if kind == FileKind::Originals {
        (count.unknown_size, count.known_bytes)
    } else {
        (count.movable, 0)
    };
    let mut bytes = known_bytes;
    if unknown > 0 {
        let sample = candidates::sample(&mut conn, kind, direction, &root, SAMPLE).await?;
        drop(conn);
        let sizes_seen = sample_sizes(shared, direction, &sample).await;
        if !sizes_seen.is_empty() {
            let average = sizes_seen.iter().sum::<u64>() as f64 / sizes_seen.len() as f64;
            bytes += (average * unknown as f64).round() as i64;
        }
    }
    let source = match (unknown, count.movable) {
        (_, 0) | (0, _) => "exact",
        (u, m) if u == m => "sampled",
        _ => "mixed",
    };
    Ok(KindEstimate {
        kind,
        movable: count.movable,
        unmovable: count.unmovable,
        bytes,
        source,
    })
}

/// Sizes of the sampled files that exist (missing ones are left out).
async fn sample_sizes(
    shared: &Shared,
    direction: Direction,
    sample: &[candidates::Candidate],
) -> Vec<u64> {
    stream::iter(sample.iter())
        .map(|c| async move {
            let plan = shared.layout.plan(direction, &c.path).ok()?;
            match plan.source {
                Location::Disk(path) => shared.disk.stat(&path).await.ok().flatten(),
                Location::Object(key) => shared.s3.head(&key).await.ok().flatten().map(|m| m.size),
            }
        })
        .buffer_unordered(8)
        .filter_map(|size| async move { size })
        .collect()
        .await
}
