//! The ledger's statement sent again, as after a lost answer: nothing is
//! written or counted twice; and fenced by its chunk's lease: a process
//! whose lease was taken over writes nothing.

use crate::helpers::{EnvOptions, TestEnv};
use noodle_migrate::db::ledger::{commit, Committed, LedgerBatch, PathChange, Unmoved};
use noodle_migrate::db::log::LogTable;
use noodle_migrate::db::{self};
use noodle_migrate::model::{Direction, FileKind, Reason};
use uuid::Uuid;

#[actix_rt::test]
async fn a_commit_sent_again_counts_each_file_once() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let batch = env.our_batch(3).await;
    let lease = env.lease(batch).await;
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
        lease,
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
            lease,
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
        assert_eq!(done.changes, vec![Committed::Done]);
        assert_eq!(done.unmoved, vec![Committed::Done, Committed::Done]);
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

#[actix_rt::test]
async fn a_commit_for_a_chunk_taken_over_writes_nothing() {
    let env = TestEnv::new(EnvOptions::default()).await;
    let batch = env.our_batch(2).await;
    let (ours, kept) = (env.lease(batch).await, env.lease(batch).await);
    let files: Vec<_> = env
        .seeded
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Originals)
        .take(2)
        .cloned()
        .collect();
    let change = |f: &crate::seed::SeededFile, lease: Uuid| PathChange {
        log_id: Uuid::now_v7(),
        kind: FileKind::Originals,
        row_id: f.row_id,
        entity_id: f.entity_id,
        old_path: f.path.clone(),
        new_path: f.relative(env.media_path()),
        bytes: f.content.len() as i64,
        adopted: false,
        replaced: false,
        lease,
    };
    let changes = vec![change(&files[0], ours), change(&files[1], kept)];
    let failure = Unmoved {
        attempt: Uuid::now_v7(),
        kind: FileKind::Originals,
        row_id: files[0].row_id,
        entity_id: files[0].entity_id,
        path: files[0].path.clone(),
        reason: Reason::DiskError,
        message: "test".into(),
        lease: ours,
    };
    // Another process takes the first chunk over: a new token.
    env.db
        .execute(
            "UPDATE noodle_migrate_chunk SET lease = gen_random_uuid(), leases = leases + 1 WHERE lease = $1",
            &[&ours],
        )
        .await
        .expect("takeover");
    let pool = db::pool(&env.db_url, 1).expect("pool");
    let mut conn = db::conn(&pool).await.expect("connection");
    let target = LedgerBatch {
        id: batch,
        direction: Direction::ToS3,
        log: LogTable::Gallery,
    };
    let done = commit(&mut conn, target, &changes, std::slice::from_ref(&failure))
        .await
        .expect("commit");
    assert_eq!(done.changes, vec![Committed::Fenced, Committed::Done]);
    assert_eq!(done.unmoved, vec![Committed::Fenced]);
    assert_eq!(
        env.current_path(FileKind::Originals, files[0].row_id).await,
        files[0].path,
        "the fenced row keeps its path"
    );
    assert_eq!(
        env.log_rows(batch).await,
        1,
        "only the held chunk's file is logged"
    );
    assert_eq!(
        env.count("SELECT completed * 100 + failed * 10 + skipped FROM noodle_migrate_batch")
            .await,
        100
    );
    assert_eq!(
        env.count("SELECT count(*) FROM noodle_migrate_failure")
            .await,
        0,
        "the fenced failure is not recorded"
    );
}
