//! The paths the gallery's rows point at, and the paths logged moves came
//! from, for the orphan scan: as sorted streams read through cursors, so
//! that the scan can merge them with a sorted walk of the disk and the
//! bucket's (sorted) listing in constant memory, whatever the size of the
//! library.
//!
//! Disk paths come in component order (`a/x` before `a-b`: the order of a
//! walk that visits each folder's entries by name); object keys in plain
//! byte order, as S3 lists them. [`component_order`] and `str::cmp` are the
//! same orders on this side.

use super::log::LogTable;
use super::tables::{every_path, PathTable};
use super::{timed, DbConn, DbError};
use diesel::sql_types::{Bool, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use std::cmp::Ordering;
use std::collections::VecDeque;
use uuid::Uuid;

/// Rows fetched from a cursor at a time.
const FETCH: usize = 1000;

/// The order of a walk that visits each folder's entries sorted by name:
/// path components compared one by one, byte for byte.
pub fn component_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// One path of a stream, and for logged sources whether any of their moves
/// asked for the source to be deleted.
#[derive(Debug, Clone, QueryableByName)]
pub struct Entry {
    #[diesel(sql_type = Text)]
    pub path: String,
    #[diesel(sql_type = Bool)]
    pub delete_source: bool,
}

/// A sorted stream of paths, read through a cursor a page at a time.
pub struct Sorted {
    cursor: String,
    page: VecDeque<Entry>,
    done: bool,
    order: fn(&str, &str) -> Ordering,
}

impl Sorted {
    /// Declares the cursor over `select` (its text parameters `$1`…
    /// bound from `params`). WITH HOLD: it outlives the statement's own
    /// transaction; the database sorts once, spilling to disk if it must.
    async fn open(
        conn: &mut DbConn,
        select: &str,
        params: &[&str],
        order: fn(&str, &str) -> Ordering,
    ) -> Result<Sorted, DbError> {
        let cursor = format!("noodle_orphans_{}", Uuid::new_v4().simple());
        let mut query = diesel::sql_query(format!(
            "DECLARE {cursor} NO SCROLL CURSOR WITH HOLD FOR {select}"
        ))
        .into_boxed::<diesel::pg::Pg>();
        for param in params {
            query = query.bind::<Text, _>(param.to_string());
        }
        timed(query.execute(conn)).await?;
        Ok(Sorted {
            cursor,
            page: VecDeque::new(),
            done: false,
            order,
        })
    }

    async fn peek(&mut self, conn: &mut DbConn) -> Result<Option<&Entry>, DbError> {
        if self.page.is_empty() && !self.done {
            let rows: Vec<Entry> =
                timed(diesel::sql_query(format!("FETCH {FETCH} FROM {}", self.cursor)).load(conn))
                    .await?;
            self.done = rows.len() < FETCH;
            self.page.extend(rows);
        }
        Ok(self.page.front())
    }

    /// The entry equal to `path`, if the stream holds one; every entry
    /// before it is passed over. Calls must come in the stream's order.
    pub async fn find(&mut self, conn: &mut DbConn, path: &str) -> Result<Option<Entry>, DbError> {
        let order = self.order;
        while let Some(head) = self.peek(conn).await? {
            match order(&head.path, path) {
                Ordering::Less => {
                    self.page.pop_front();
                }
                Ordering::Equal => return Ok(self.page.pop_front()),
                Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Closes the cursor (the connection goes back to the pool).
    pub async fn close(self, conn: &mut DbConn) {
        let _ = timed(diesel::sql_query(format!("CLOSE {}", self.cursor)).execute(conn)).await;
    }
}

/// The paths of rows on disk under `root` (the media location with its
/// slash), in component order.
pub async fn referenced_disk(conn: &mut DbConn, root: &str) -> Result<Sorted, DbError> {
    Sorted::open(
        conn,
        &format!(
            r#"SELECT path, false AS delete_source FROM ({}) r
               WHERE starts_with(path, $1)
               ORDER BY string_to_array(path, '/') COLLATE "C""#,
            every_path()
        ),
        &[root],
        component_order,
    )
    .await
}

/// The object keys rows point at: relative paths are keys as they are,
/// `s3://<bucket>/…` URLs name the key after the bucket. Key order.
pub async fn referenced_keys(conn: &mut DbConn, bucket: &str) -> Result<Sorted, DbError> {
    let url = format!("s3://{bucket}/");
    Sorted::open(
        conn,
        &format!(
            r#"SELECT key AS path, false AS delete_source FROM (
                 SELECT CASE WHEN starts_with(path, 's3://') THEN substr(path, length($1) + 1)
                             ELSE path END AS key
                 FROM ({}) r
                 WHERE NOT starts_with(path, '/') AND (NOT starts_with(path, 's3://') OR starts_with(path, $1))
               ) k
               ORDER BY key COLLATE "C""#,
            every_path()
        ),
        &[&url],
        str::cmp,
    )
    .await
}

fn logged(logs: &[LogTable]) -> String {
    logs.iter()
        .map(|t| format!(r#"SELECT "oldPath", "batchId" FROM {}"#, t.name()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Every disk path under `root` that a logged move (in any of `logs`) came
/// from, and whether any of those moves asked for its source to be
/// deleted. Component order.
pub async fn moved_from_disk(
    conn: &mut DbConn,
    logs: &[LogTable],
    root: &str,
) -> Result<Sorted, DbError> {
    Sorted::open(
        conn,
        &format!(
            r#"SELECT l."oldPath" AS path,
                      bool_or(COALESCE((b.options->>'deleteSource')::boolean, false)) AS delete_source
               FROM ({}) l LEFT JOIN noodle_migrate_batch b ON b.id = l."batchId"
               WHERE starts_with(l."oldPath", $1)
               GROUP BY l."oldPath"
               ORDER BY string_to_array(l."oldPath", '/') COLLATE "C""#,
            logged(logs)
        ),
        &[root],
        component_order,
    )
    .await
}

/// The same for objects: the keys that logged moves came from. Key order.
pub async fn moved_from_keys(
    conn: &mut DbConn,
    logs: &[LogTable],
    bucket: &str,
) -> Result<Sorted, DbError> {
    let url = format!("s3://{bucket}/");
    Sorted::open(
        conn,
        &format!(
            r#"SELECT key AS path, bool_or(delete_source) AS delete_source FROM (
                 SELECT CASE WHEN starts_with(l."oldPath", 's3://') THEN substr(l."oldPath", length($1) + 1)
                             ELSE l."oldPath" END AS key,
                        COALESCE((b.options->>'deleteSource')::boolean, false) AS delete_source
                 FROM ({}) l LEFT JOIN noodle_migrate_batch b ON b.id = l."batchId"
                 WHERE NOT starts_with(l."oldPath", '/')
                   AND (NOT starts_with(l."oldPath", 's3://') OR starts_with(l."oldPath", $1))
               ) k
               GROUP BY key
               ORDER BY key COLLATE "C""#,
            logged(logs)
        ),
        &[&url],
        str::cmp,
    )
    .await
}

#[derive(QueryableByName)]
struct Referenced {
    #[diesel(sql_type = Bool)]
    referenced: bool,
}

/// Whether any row of the four tables that hold files stores one of
/// `paths` (the forms a file's path can take).
pub async fn is_referenced(conn: &mut DbConn, paths: &[String]) -> Result<bool, DbError> {
    let exists: Vec<String> = PathTable::ALL
        .iter()
        .map(|t| {
            format!(
                "EXISTS (SELECT 1 FROM {} WHERE {} = ANY($1))",
                t.name(),
                t.path()
            )
        })
        .collect();
    let row: Referenced = timed(
        diesel::sql_query(format!("SELECT {} AS referenced", exists.join(" OR ")))
            .bind::<diesel::sql_types::Array<Text>, _>(paths)
            .get_result(conn),
    )
    .await?;
    Ok(row.referenced)
}

#[cfg(test)]
mod tests {
    use super::component_order;
    use std::cmp::Ordering;

    #[test]
    fn component_order_is_the_order_of_a_sorted_walk() {
        let mut paths = vec!["/d/ab", "/d/a.jpg", "/d/a/x", "/d/a-b", "/d/a/b/c"];
        paths.sort_by(|a, b| component_order(a, b));
        assert_eq!(paths, ["/d/a/b/c", "/d/a/x", "/d/a-b", "/d/a.jpg", "/d/ab"]);
        assert_eq!(component_order("/d/a", "/d/a"), Ordering::Equal);
    }
}
