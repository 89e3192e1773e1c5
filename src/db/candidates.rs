//! Which rows a migration has to move: keyset-paged reads per file kind,
//! and the counts behind the estimate. One SQL shape per kind, shared by
//! both, so the estimate can never drift from what a run selects.
//!
//! Toward S3 a row is a candidate while its path is absolute (`/…`);
//! toward disk while it is not (a relative key or an `s3://` URL), and
//! `''` is never a file. External-library originals and their sidecars
//! never move: the library scanner finds them by their disk path. Toward
//! S3 they are not candidates at all; toward disk, those that the gallery's
//! own migration sent to S3 are read so that a run reports them (skipped,
//! `external_library`) and the estimate counts them as unmovable.

use super::{tables, timed, DbConn, DbError};
use crate::model::{Direction, FileKind, PerKind};
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

pub const PAGE_SIZE: i64 = 1000;

/// One file to move, as read from its row.
#[derive(Debug, Clone, QueryableByName)]
pub struct Candidate {
    /// The id of the row whose path column changes (keyset key).
    #[diesel(sql_type = SqlUuid)]
    pub row_id: Uuid,
    /// The id written to the log's `entityId` (the asset, for encoded videos).
    #[diesel(sql_type = SqlUuid)]
    pub entity_id: Uuid,
    #[diesel(sql_type = Text)]
    pub path: String,
    /// `asset.checksum`, for originals.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub checksum: Option<Vec<u8>>,
    /// `asset_exif."fileSizeInByte"`, for originals.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub size_hint: Option<i64>,
    /// The file belongs to an external library (read toward disk only).
    #[diesel(sql_type = Bool)]
    pub external: bool,
}

/// The pieces of SQL that select one kind's rows.
struct Source {
    columns: String,
    /// The tables and the kind's own condition (`… WHERE …`).
    from: String,
    id: String,
    path: String,
    /// True for an external library's files.
    external: &'static str,
}

/// An asset of an external library: flagged, or attached to a library.
const EXTERNAL_ASSET: &str = r#"(a."isExternal" OR a."libraryId" IS NOT NULL)"#;

fn source(kind: FileKind) -> Source {
    let table = tables::table(kind);
    let t = table.alias();
    let path = format!("{t}.{}", table.path());
    // The log's entityId: an encoded video is logged by its asset.
    let entity = if kind == FileKind::EncodedVideos {
        format!(r#"{t}."assetId""#)
    } else {
        format!("{t}.id")
    };
    let (checksum, size) = if kind == FileKind::Originals {
        ("a.checksum", r#"e."fileSizeInByte""#)
    } else {
        ("NULL::bytea", "NULL::bigint")
    };
    // Originals bring their recorded size; sidecars need their asset (an
    // external library's sidecars stay with it); the foreign key vouches
    // for the rest.
    let from = match (kind, kind.asset_file_type()) {
        (FileKind::Originals, _) => {
            format!(
                r#"{} {t} LEFT JOIN asset_exif e ON e."assetId" = {t}.id WHERE true"#,
                table.name()
            )
        }
        (FileKind::Sidecars, Some(file_type)) => format!(
            r#"{} {t} JOIN asset a ON a.id = {t}."assetId" WHERE {t}."type" = '{file_type}'"#,
            table.name()
        ),
        (_, Some(file_type)) => format!(r#"{} {t} WHERE {t}."type" = '{file_type}'"#, table.name()),
        (_, None) => format!("{} {t} WHERE true", table.name()),
    };
    Source {
        columns: format!(
            "{t}.id AS row_id, {entity} AS entity_id, {path} AS path, {checksum} AS checksum, {size} AS size_hint"
        ),
        from,
        id: format!("{t}.id"),
        path,
        external: if matches!(kind, FileKind::Originals | FileKind::Sidecars) {
            EXTERNAL_ASSET
        } else {
            "false"
        },
    }
}

/// The rows of a kind a migration in `direction` reads.
fn direction_filter(direction: Direction, s: &Source) -> String {
    let path = &s.path;
    match direction {
        Direction::ToS3 if s.external == "false" => format!("{path} LIKE '/%'"),
        Direction::ToS3 => format!("{path} LIKE '/%' AND NOT {}", s.external),
        Direction::ToDisk => format!("{path} NOT LIKE '/%' AND {path} <> ''"),
    }
}

/// Of the rows read, those that can move (`$1` is the media root): toward
/// S3 the ones under the media location, toward disk all but an external
/// library's.
fn movable_filter(direction: Direction, s: &Source) -> String {
    match direction {
        Direction::ToS3 => format!("starts_with({}, $1)", s.path),
        Direction::ToDisk => format!("$1 IS NOT NULL AND NOT {}", s.external),
    }
}

/// One page of candidates, and where the next one starts (`None`: this
/// was the last).
pub struct Page {
    pub rows: Vec<Candidate>,
    pub next: Option<Uuid>,
}

/// The next page of candidates of one kind, after `after` and up to
/// `until` (inclusive) in id order. With `failed_in`, only the rows that
/// failed in that batch.
///
/// Each page costs the same wherever it is in the run: it starts at the
/// key where the last one ended, on the primary key's order, and never
/// reads the rows behind it.
pub async fn page(
    conn: &mut DbConn,
    kind: FileKind,
    direction: Direction,
    after: Uuid,
    until: Uuid,
    limit: i64,
    failed_in: Option<Uuid>,
) -> Result<Page, DbError> {
    let s = source(kind);
    let select = format!(
        "SELECT {cols}, {external} AS external FROM {from} AND {dir}",
        cols = s.columns,
        external = s.external,
        from = s.from,
        dir = direction_filter(direction, &s),
    );
    let Some(batch_id) = failed_in else {
        let rows: Vec<Candidate> = timed(
            diesel::sql_query(format!(
                "{select} AND {id} > $1 AND {id} <= $3 ORDER BY {id} LIMIT $2",
                id = s.id
            ))
            .bind::<SqlUuid, _>(after)
            .bind::<BigInt, _>(limit)
            .bind::<SqlUuid, _>(until)
            .load(conn),
        )
        .await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.row_id))
            .flatten();
        return Ok(Page { rows, next });
    };
    // A retry walks the batch's failure records in row order (their own
    // index), then reads just those rows: the cost of a page never depends
    // on how many files failed.
    #[derive(QueryableByName)]
    struct Failed {
        #[diesel(sql_type = SqlUuid)]
        row_id: Uuid,
    }
    let failed: Vec<Failed> = timed(
        diesel::sql_query(
            "SELECT row_id FROM noodle_migrate_failure
             WHERE batch_id = $1 AND kind = $2 AND outcome = 'failed' AND row_id > $3 AND row_id <= $5
             ORDER BY row_id LIMIT $4",
        )
        .bind::<SqlUuid, _>(batch_id)
        .bind::<Text, _>(kind.api_key())
        .bind::<SqlUuid, _>(after)
        .bind::<BigInt, _>(limit)
        .bind::<SqlUuid, _>(until)
        .load(conn),
    )
    .await?;
    let next = (failed.len() as i64 == limit)
        .then(|| failed.last().map(|f| f.row_id))
        .flatten();
    let ids: Vec<Uuid> = failed.into_iter().map(|f| f.row_id).collect();
    let rows = if ids.is_empty() {
        Vec::new()
    } else {
        timed(
            diesel::sql_query(format!(
                "{select} AND {id} = ANY($1) ORDER BY {id}",
                id = s.id
            ))
            .bind::<Array<SqlUuid>, _>(ids)
            .load(conn),
        )
        .await?
    };
    Ok(Page { rows, next })
}

/// Counts for one kind: rows that will move, rows that will be refused
/// (outside the media location, an external library's), and for originals
/// the known sizes.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct KindCount {
    #[diesel(sql_type = BigInt)]
    pub movable: i64,
    #[diesel(sql_type = BigInt)]
    pub unmovable: i64,
    #[diesel(sql_type = BigInt)]
    pub known_bytes: i64,
    #[diesel(sql_type = BigInt)]
    pub unknown_size: i64,
}

/// `media_root` is the media location with a trailing slash; toward S3 only
/// the rows under it can move.
pub async fn count(
    conn: &mut DbConn,
    kind: FileKind,
    direction: Direction,
    media_root: &str,
) -> Result<KindCount, DbError> {
    let s = source(kind);
    let movable = movable_filter(direction, &s);
    let (known, unknown) = if kind == FileKind::Originals {
        (
            format!(r#"sum(e."fileSizeInByte") FILTER (WHERE {movable})"#),
            format!(r#"count(*) FILTER (WHERE {movable} AND e."fileSizeInByte" IS NULL)"#),
        )
    } else {
        ("0".into(), "0".into())
    };
    let sql = format!(
        "SELECT count(*) FILTER (WHERE {movable}) AS movable,
                count(*) FILTER (WHERE NOT ({movable})) AS unmovable,
                COALESCE({known}, 0)::bigint AS known_bytes,
                ({unknown})::bigint AS unknown_size
         FROM {from} AND {dir}",
        from = s.from,
        dir = direction_filter(direction, &s),
    );
    timed(
        diesel::sql_query(sql)
            .bind::<Text, _>(media_root)
            .get_result::<KindCount>(conn),
    )
    .await
}

/// A few movable rows of a kind, for size sampling. Toward S3 with
/// originals, only those whose size the database does not know.
pub async fn sample(
    conn: &mut DbConn,
    kind: FileKind,
    direction: Direction,
    media_root: &str,
    limit: i64,
) -> Result<Vec<Candidate>, DbError> {
    let s = source(kind);
    let mut filter = movable_filter(direction, &s);
    if kind == FileKind::Originals {
        filter.push_str(r#" AND e."fileSizeInByte" IS NULL"#);
    }
    let sql = format!(
        "SELECT {cols}, {external} AS external FROM {from} AND {dir} AND {filter}
         ORDER BY {id} LIMIT $2",
        cols = s.columns,
        external = s.external,
        from = s.from,
        dir = direction_filter(direction, &s),
        id = s.id,
    );
    timed(
        diesel::sql_query(sql)
            .bind::<Text, _>(media_root)
            .bind::<BigInt, _>(limit)
            .load::<Candidate>(conn),
    )
    .await
}

/// Movable and unmovable totals for the selected kinds.
pub async fn totals(
    conn: &mut DbConn,
    kinds: &[FileKind],
    direction: Direction,
    media_root: &str,
) -> Result<(PerKind<i64>, PerKind<i64>), DbError> {
    let mut movable = PerKind::default();
    let mut unmovable = PerKind::default();
    for &kind in kinds {
        let c = count(conn, kind, direction, media_root).await?;
        movable.set(kind, c.movable);
        unmovable.set(kind, c.unmovable);
    }
    Ok((movable, unmovable))
}
