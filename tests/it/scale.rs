//! Cost that must not grow with the work done: the statements a run
//! repeats are measured by the database's own counters (buffers read by
//! the statement's transaction), not by time, at two sizes in one test.

use crate::helpers::{EnvOptions, TestEnv};
use crate::seed::SeedSpec;
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use noodle_migrate::db::ledger::{commit, Committed, LedgerBatch, PathChange};
use noodle_migrate::db::log::LogTable;
use noodle_migrate::db::{self, candidates, DbConn};
use noodle_migrate::model::{Direction, FileKind};
use uuid::Uuid;

#[derive(QueryableByName)]
struct Blocks {
    #[diesel(sql_type = BigInt)]
    blocks: i64,
}

/// Buffers (hit or read) that `work` makes this transaction fetch from the
/// gallery's tables and indexes and ours; the transaction is rolled back.
async fn blocks_fetched<F>(conn: &mut DbConn, work: F) -> i64
where
    F: for<'c> FnOnce(
        &'c mut DbConn,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'c>>,
{
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query("BEGIN")
        .execute(conn)
        .await
        .expect("begin");
    work(conn).await;
    let row: Blocks = diesel::sql_query(
        "SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid))::bigint AS blocks
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace",
    )
    .get_result(conn)
    .await
    .expect("counters");
    diesel::sql_query("ROLLBACK")
        .execute(conn)
        .await
        .expect("rollback");
    row.blocks
}

/// Adds `n` originals on disk (rows only) and returns their ids.
async fn add_originals(env: &TestEnv, n: i64) -> Vec<Uuid> {
    let rows = env
        .db
        .query(
            r#"INSERT INTO asset ("deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                 "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName")
               SELECT g::text, $1, 'scale', 'IMAGE', $2 || '/upload/scale/' || gen_random_uuid() || '.jpg',
                      now(), now(), now(), sha256(gen_random_uuid()::text::bytea), 'x.jpg'
               FROM generate_series(1, $3::bigint) g
               RETURNING id"#,
            &[
                &env.seeded.users[0],
                &env.media_path().display().to_string(),
                &n,
            ],
        )
        .await
        .expect("originals");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Log rows of `batch` for files that are not there, as a long run leaves.
/// No ANALYZE: during a run the statistics lag behind a table that grows
/// this fast.
async fn add_log_rows(env: &TestEnv, batch: Uuid, n: i64) {
    env.db
        .execute(
            r#"INSERT INTO storage_migration_log ("entityType", "entityId", "fileType", "oldPath", "newPath", "direction", "batchId")
               SELECT 'asset', gen_random_uuid(), 'original', '/old/' || g, 'new/' || g, 'toS3', $1
               FROM generate_series(1, $2::bigint) g"#,
            &[&batch, &n],
        )
        .await
        .expect("log rows");
}

async fn group_of(env: &TestEnv, batch: Uuid, ids: &[Uuid]) -> Vec<PathChange> {
    let lease = env.lease(batch).await;
    let mut changes = Vec::new();
    for id in ids {
        let old = env.current_path(FileKind::Originals, *id).await;
        let new = old
            .strip_prefix(&format!("{}/", env.media_path().display()))
            .expect("under the media location")
            .to_string();
        changes.push(PathChange {
            log_id: Uuid::now_v7(),
            kind: FileKind::Originals,
            row_id: *id,
            entity_id: *id,
            old_path: old,
            new_path: new,
            bytes: 1024,
            adopted: false,
            replaced: false,
            lease,
        });
    }
    changes
}

/// One user and no files: the tests add their rows themselves.
fn no_assets() -> EnvOptions {
    EnvOptions {
        spec: SeedSpec {
            users: 1,
            assets_per_user: 0,
            max_size: 1000,
        },
        ..Default::default()
    }
}

#[actix_rt::test]
async fn the_ledger_statement_costs_the_same_at_two_hundred_thousand_log_rows() {
    let env = TestEnv::new(no_assets()).await;
    let batch = env.our_batch(0).await;
    let ids = add_originals(&env, 400).await;
    // Earlier batches, which the statistics know about: to the planner, a
    // new batch then looks small, however many rows it already has.
    for _ in 0..20 {
        add_log_rows(&env, Uuid::new_v4(), 100).await;
    }
    env.db.batch_execute("ANALYZE").await.expect("analyze");
    let pool = db::pool(&env.db_url, 1).expect("pool");
    let mut conn = db::conn(&pool).await.expect("connection");
    let target = LedgerBatch {
        id: batch,
        direction: Direction::ToS3,
        log: LogTable::Gallery,
    };

    let mut cost = Vec::new();
    for (size, group) in [(2_000, &ids[..200]), (200_000, &ids[200..])] {
        let logged = env
            .count(&format!(
                r#"SELECT count(*) FROM storage_migration_log WHERE "batchId" = '{batch}'"#
            ))
            .await;
        add_log_rows(&env, batch, size - logged).await;
        let changes = group_of(&env, batch, group).await;
        let blocks = blocks_fetched(&mut conn, |conn| {
            Box::pin(async move {
                let done = commit(conn, target, &changes, &[]).await.expect("commit");
                assert!(
                    done.changes.iter().all(|d| *d == Committed::Done),
                    "every row moved"
                );
            })
        })
        .await;
        cost.push(blocks);
    }
    // The same work: at most one more level of each B-tree it touches.
    eprintln!("buffers per group at 2,000 and 200,000 log rows: {cost:?}");
    assert!(
        cost[1] * 2 <= cost[0] * 3,
        "buffers per group at 2,000 and 200,000 log rows: {cost:?}"
    );
}

#[actix_rt::test]
async fn a_retry_page_costs_the_same_however_many_files_failed() {
    let env = TestEnv::new(no_assets()).await;
    let batch = env.our_batch(0).await;
    let pool = db::pool(&env.db_url, 1).expect("pool");
    let mut conn = db::conn(&pool).await.expect("connection");
    let mut cost = Vec::new();
    // Both sizes large enough that a page's rows lie on pages of their own,
    // as they do in a real library.
    for failed in [20_000i64, 200_000] {
        let have = env
            .count("SELECT count(*) FROM noodle_migrate_failure")
            .await;
        let ids = add_originals(&env, failed - have).await;
        env.db
            .execute(
                "INSERT INTO noodle_migrate_failure (batch_id, kind, row_id, entity_id, path, outcome, reason, message)
                 SELECT $1, 'originals', id, id, 'p', 'failed', 's3_error', 'x' FROM unnest($2::uuid[]) id",
                &[&batch, &ids],
            )
            .await
            .expect("failures");
        env.db.batch_execute("ANALYZE").await.expect("analyze");
        // A page from the first half of the failures.
        let middle: Uuid = env
            .db
            .query_one(
                "SELECT row_id FROM noodle_migrate_failure ORDER BY row_id OFFSET $1 LIMIT 1",
                &[&(failed / 4)],
            )
            .await
            .expect("middle")
            .get(0);
        let blocks = blocks_fetched(&mut conn, |conn| {
            Box::pin(async move {
                let page = candidates::page(
                    conn,
                    FileKind::Originals,
                    Direction::ToS3,
                    middle,
                    Uuid::max(),
                    candidates::PAGE_SIZE,
                    Some(batch),
                )
                .await
                .expect("page");
                assert_eq!(page.rows.len() as i64, candidates::PAGE_SIZE);
            })
        })
        .await;
        cost.push(blocks);
    }
    eprintln!("buffers per retry page at 20,000 and 200,000 failures: {cost:?}");
    assert!(
        cost[1] * 2 <= cost[0] * 3,
        "buffers per retry page at 20,000 and 200,000 failures: {cost:?}"
    );
}
