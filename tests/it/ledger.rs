//! The ledger's statement sent again, as after a lost answer: nothing is
//! written or counted twice.

use crate::helpers::{EnvOptions, TestEnv};
use noodle_migrate::db::ledger::{commit, LedgerBatch, PathChange, Unmoved};
use noodle_migrate::db::log::LogTable;
use noodle_migrate::db::{self};
use noodle_migrate::model::{Direction, FileKind, Reason};
use uuid::Uuid;

#[actix_rt::test]
async fn a_commit_sent_again_counts_each_file_once() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let batch = env.our_batch(3).await;
    let originals: Vec<_> = env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Originals)
        .take(3)
        .cloned()
        .collect();
    let moved = &originals[0];
    let change = PathChange {
        log_id: Uuid::now_v7(),
        kind: FileKind::Originals,
        row_id: moved.row_id,
        entity_id: moved.entity_id,
        old_path: moved.path.clone(),
        new_path: moved.relative(env.media_path()),
        bytes: moved.content.len() as i64,
        adopted: false,
        replaced: false,
    };
    let unmoved: Vec<Unmoved> = originals[1..]
        .iter()
        .zip([Reason::DiskError, Reason::UnsafePath])
        .map(|(f, reason)| Unmoved {
            attempt: Uuid::now_v7(),
            kind: FileKind::Originals,
            row_id: f.row_id,
            entity_id: f.entity_id,
            path: f.path.clone(),
            reason,
            message: "test".into(),
        })
        .collect();
    let target = LedgerBatch {
        id: batch,
        direction: Direction::ToS3,
        log: LogTable::Gallery,
    };
    let pool = db::pool(&env.db_url, 1).expect("pool");
    let mut conn = db::conn(&pool).await.expect("connection");
    let counters = "SELECT completed * 100 + failed * 10 + skipped FROM noodle_migrate_batch";
    for _ in 0..3 {
        let done = commit(&mut conn, target, std::slice::from_ref(&change), &unmoved)
            .await
            .expect("commit");
        assert_eq!(done, vec![true]);
        assert_eq!(
            env.count(counters).await,
            111,
            "one moved, one failed, one skipped"
        );
        assert_eq!(
            env.count("SELECT count(*) FROM noodle_migrate_failure")
                .await,
            2
        );
        assert_eq!(env.log_rows(batch).await, 1);
    }
    // A later attempt at a file (a retry) is counted again.
    let mut again = unmoved[..1].to_vec();
    again[0].attempt = Uuid::now_v7();
    commit(&mut conn, target, &[], &again)
        .await
        .expect("commit");
    assert_eq!(env.count(counters).await, 121);
}
