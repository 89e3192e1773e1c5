//! Prints how PostgreSQL runs the ledger's statement on a real database:
//! `EXPLAIN (ANALYZE, BUFFERS)` of one group of originals still on disk,
//! committed to S3 under the newest toS3 batch, in a transaction that is
//! rolled back (nothing changes). `make bench` runs it on its large library;
//! point it at any gallery to see the plan there.
//!
//! Usage: explain_ledger <database-url> <media-location> [files, default 200]

use noodle_migrate::db::candidates::{self, Candidate};
use noodle_migrate::db::ledger::{explain, LedgerBatch, PathChange};
use noodle_migrate::db::{self, batches, log};
use noodle_migrate::model::{Direction, FileKind};
use noodle_migrate::paths::{Layout, PathStyle};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, media, files) = match args.as_slice() {
        [url, media] => (url, media, 200),
        [url, media, files] => (url, media, files.parse()?),
        _ => return Err("usage: explain_ledger <database-url> <media-location> [files]".into()),
    };
    let pool = db::pool(url, 1)?;
    let mut conn = db::conn(&pool).await?;
    let table = *log::tables(&mut conn)
        .await?
        .first()
        .ok_or("no log table")?;
    let batch = batches::list(&mut conn, 50, None)
        .await?
        .into_iter()
        .find(|b| b.direction == Direction::ToS3.as_str())
        .map(|b| b.id)
        .unwrap_or_else(Uuid::new_v4);
    let page = candidates::page(
        &mut conn,
        FileKind::Originals,
        Direction::ToS3,
        Uuid::nil(),
        Uuid::max(),
        files,
        None,
    )
    .await?;
    let lease = Uuid::new_v4();
    let layout = Layout::new(media, None, "bucket", "", PathStyle::Key);
    let changes: Vec<PathChange> = page
        .rows
        .iter()
        .filter_map(|c: &Candidate| {
            let plan = layout.plan(Direction::ToS3, &c.path).ok()?;
            Some(PathChange {
                log_id: Uuid::now_v7(),
                kind: FileKind::Originals,
                row_id: c.row_id,
                entity_id: c.entity_id,
                old_path: c.path.clone(),
                new_path: plan.new_path,
                bytes: c.size_hint.unwrap_or(0),
                adopted: false,
                replaced: false,
                lease,
            })
        })
        .collect();
    if changes.is_empty() {
        return Err("no original on disk under that media location to commit".into());
    }
    let logged = db::rollback::log_count(&mut conn, table, batch).await?;
    println!(
        "-- {} originals committed to batch {batch}, which has {logged} rows in {}",
        changes.len(),
        table.name()
    );
    let target = LedgerBatch {
        id: batch,
        direction: Direction::ToS3,
        log: table,
    };
    for line in explain(&mut conn, target, &changes, &[]).await? {
        println!("{line}");
    }
    Ok(())
}
