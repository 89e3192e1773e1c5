//! The API handlers: parse and validate input (400 with a clear message for
//! anything odd), call the engine, return the gallery's JSON shapes.

use super::bodies::{
    BatchPage, Cancelling, ErrorBody, EstimateBody, FailurePage, Health, PlanBody, PlanFormat,
    Started,
};
use super::error::ApiError;
use crate::db::rollback::RollbackReport;
use crate::engine::messages::StartReply;
use crate::engine::options::RunChange;
use crate::engine::orphans::OrphanReport;
use crate::engine::stats::StatusView;
use crate::engine::{Engine, StartOptions};
use crate::model::{Direction, FileKind};
use actix_web::{get, patch, post, web, HttpResponse};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// The admin page: static HTML, CSS and JS built into the binary. It holds
/// no data, so it is served without the token; its API calls carry it.
#[get("/")]
pub async fn admin_page(engine: web::Data<Engine>) -> HttpResponse {
    // The one setting the page needs, written into it (escaped).
    let grafana = engine
        .config()
        .grafana_url
        .as_deref()
        .unwrap_or("")
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ))
        .body(include_str!("admin.html").replace("{{GRAFANA_URL}}", &grafana))
}

/// Liveness, without authentication.
#[utoipa::path(get, path = "/healthz", tag = "engine", security(()),
    responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

fn parse_direction(value: Option<&Value>) -> Result<Direction, ApiError> {
    match value {
        None | Some(Value::Null) => Err(ApiError::bad(
            "invalid_direction",
            "direction is required: toS3 or toDisk",
        )),
        Some(Value::String(s)) => Direction::parse(s).ok_or_else(|| {
            ApiError::bad(
                "invalid_direction",
                format!("unknown direction {s:?}: expected toS3 or toDisk"),
            )
        }),
        Some(other) => Err(ApiError::bad(
            "invalid_direction",
            format!("direction must be the string toS3 or toDisk, got {other}"),
        )),
    }
}

/// Files and bytes a migration in this direction would move, per kind.
#[utoipa::path(get, path = "/storage-migration/estimate", tag = "migration",
    params(("direction" = Direction, Query, description = "toS3 or toDisk")),
    responses(
        (status = 200, body = EstimateBody),
        (status = 400, body = ErrorBody, description = "missing or unknown direction"),
        (status = 409, body = ErrorBody, description = "IMMICH_MEDIA_LOCATION and the gallery's recorded media location disagree"),
        (status = 503, body = ErrorBody, description = "the database is unreachable"),
    ))]
#[get("/storage-migration/estimate")]
pub async fn estimate(
    engine: web::Data<Engine>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(estimate_for(&engine, &query).await?))
}

/// `?direction=`, required.
fn query_direction(query: &HashMap<String, String>) -> Result<Direction, ApiError> {
    parse_direction(
        query
            .get("direction")
            .map(|d| Value::String(d.clone()))
            .as_ref(),
    )
}

/// The estimate for the query's direction (for both APIs).
pub(super) async fn estimate_for(
    engine: &Engine,
    query: &HashMap<String, String>,
) -> Result<EstimateBody, ApiError> {
    let direction = query_direction(query)?;
    Ok(EstimateBody::from(&engine.estimate(direction).await?))
}

/// The dry run: every file a start in this direction would handle, and the
/// action it would take, streamed. Nothing changes.
#[utoipa::path(get, path = "/storage-migration/plan", tag = "migration",
    params(
        ("direction" = Direction, Query, description = "toS3 or toDisk"),
        ("format" = Option<PlanFormat>, Query, description = "json (default) or csv"),
    ),
    responses(
        (status = 200, description = "JSON: one file per line in `files`, then `totals` (and `error` if the plan stopped short). CSV: a header, then one file per line.",
            content((PlanBody = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody, description = "missing or unknown direction or format"),
        (status = 409, body = ErrorBody, description = "IMMICH_MEDIA_LOCATION and the gallery's recorded media location disagree"),
        (status = 503, body = ErrorBody, description = "the bucket or the database is unreachable"),
    ))]
#[get("/storage-migration/plan")]
pub async fn plan(
    engine: web::Data<Engine>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let direction = query_direction(&query)?;
    let format = match query.get("format") {
        None => PlanFormat::Json,
        Some(given) => serde_json::from_value(Value::String(given.clone())).map_err(|_| {
            ApiError::bad(
                "invalid_format",
                format!("format must be json or csv, got {given:?}"),
            )
        })?,
    };
    let csv = format == PlanFormat::Csv;
    let rows = engine.plan(direction).await?;
    let body = super::plan_body::stream(rows, direction, csv);
    Ok(HttpResponse::Ok()
        .content_type(if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/json"
        })
        .streaming(body))
}

/// Starts (or resumes) a migration; the run goes on in the background.
#[utoipa::path(post, path = "/storage-migration/start", tag = "migration",
    request_body = StartOptions,
    responses(
        (status = 201, body = Started),
        (status = 400, body = ErrorBody, description = "a malformed or invalid body"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already running, backend mismatch or unset, media locations that disagree, rows in move_history, or nothing to migrate"),
        (status = 413, description = "the body is too large"),
        (status = 502, body = ErrorBody, description = "with dumpDatabase: the dump failed"),
        (status = 503, body = ErrorBody, description = "the bucket or the database is unreachable"),
    ))]
#[post("/storage-migration/start")]
pub async fn start(engine: web::Data<Engine>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    start_from(&engine, &body).await
}

/// Parses a start body and starts (for both APIs).
pub(super) async fn start_from(engine: &Engine, body: &[u8]) -> Result<HttpResponse, ApiError> {
    let options = StartOptions::from_json(body).map_err(|e| ApiError::bad(e.code, e.message))?;
    Ok(started(&engine.start_migration(options).await?))
}

/// The answer to a start or a retry.
fn started(reply: &StartReply) -> HttpResponse {
    HttpResponse::Created().json(Started {
        batch_id: reply.batch_id,
        resumed: reply.resumed,
        dump_name: reply.dump_name.clone(),
    })
}

/// The run in progress, or the last one.
#[utoipa::path(get, path = "/storage-migration/status", tag = "migration",
    responses((status = 200, body = StatusView), (status = 401, body = ErrorBody)))]
#[get("/storage-migration/status")]
pub async fn status(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.status().await?))
}

/// Reverts the database paths a batch changed; moves no file.
#[utoipa::path(post, path = "/storage-migration/rollback/{batch_id}", tag = "migration",
    params(("batch_id" = Uuid, Path)),
    responses(
        (status = 200, body = RollbackReport),
        (status = 400, body = ErrorBody, description = "not a UUID"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such batch"),
        (status = 409, body = ErrorBody, description = "a migration is running"),
    ))]
#[post("/storage-migration/rollback/{batch_id}")]
pub async fn rollback(
    engine: web::Data<Engine>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch_id = parse_batch_id(&path.into_inner())?;
    let report = engine.rollback(batch_id).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Stops handing out files; the files in flight finish first.
#[utoipa::path(post, path = "/storage-migration/cancel", tag = "migration",
    responses(
        (status = 202, body = Cancelling),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no migration is running"),
    ))]
#[post("/storage-migration/cancel")]
pub async fn cancel(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let batch_id = engine.cancel().await?;
    Ok(HttpResponse::Accepted().json(Cancelling {
        batch_id,
        cancelling: true,
    }))
}

/// Changes the run in progress: its concurrency and/or bandwidth limit,
/// within a second in every process of the batch.
#[utoipa::path(patch, path = "/storage-migration/run", tag = "migration",
    request_body = RunChange,
    responses(
        (status = 200, body = StatusView, description = "the status, with the values now in force"),
        (status = 400, body = ErrorBody, description = "a malformed body, a value out of range, or no field to change"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no migration is running or paused"),
        (status = 413, description = "the body is too large"),
    ))]
#[patch("/storage-migration/run")]
pub async fn change_run(
    engine: web::Data<Engine>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let change = RunChange::from_json(&body).map_err(|e| ApiError::bad(e.code, e.message))?;
    Ok(HttpResponse::Ok().json(engine.change(change).await?))
}

/// Hands out no more files, in every process of the batch; the files in
/// flight finish and the batch stays open (`state: "paused"`).
#[utoipa::path(post, path = "/storage-migration/pause", tag = "migration",
    responses(
        (status = 200, body = StatusView),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no migration is running or paused"),
    ))]
#[post("/storage-migration/pause")]
pub async fn pause(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.pause().await?))
}

/// Goes on with a paused migration; one whose processes stopped meanwhile
/// is started again by this one.
#[utoipa::path(post, path = "/storage-migration/resume", tag = "migration",
    responses(
        (status = 200, body = StatusView),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no migration is running or paused"),
    ))]
#[post("/storage-migration/resume")]
pub async fn resume(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.resume().await?))
}

pub(super) fn parse_batch_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad(
            "invalid_batch_id",
            format!("batch id {raw:?} is not a UUID"),
        )
    })
}

fn parse_limit(query: &HashMap<String, String>, default: i64, max: i64) -> Result<i64, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {max}"),
                )
            }),
    }
}

/// Batch history, newest first; `before` (RFC 3339) pages back in time.
#[utoipa::path(get, path = "/storage-migration/batches", tag = "batches",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1–500, default 50"),
        ("before" = Option<String>, Query, format = DateTime, description = "RFC 3339 time: batches started before it"),
    ),
    responses(
        (status = 200, body = BatchPage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
#[get("/storage-migration/batches")]
pub async fn batches(
    engine: web::Data<Engine>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let limit = parse_limit(&query, 50, 500)?;
    let before = match query.get("before") {
        None => None,
        Some(v) => Some(
            chrono::DateTime::parse_from_rfc3339(v)
                .map_err(|_| {
                    ApiError::bad("invalid_before", "before must be an RFC 3339 timestamp")
                })?
                .with_timezone(&chrono::Utc),
        ),
    };
    let rows = engine.batches(limit, before).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|b| b.started_at.to_rfc3339()))
        .flatten();
    Ok(HttpResponse::Ok().json(BatchPage {
        batches: rows,
        next_before: next,
    }))
}

/// A batch's failed and skipped files, paged by an opaque `after` cursor.
#[utoipa::path(get, path = "/storage-migration/batches/{batch_id}/failures", tag = "batches",
    params(
        ("batch_id" = Uuid, Path),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1–1000, default 100"),
        ("after" = Option<String>, Query, description = "the nextAfter of the previous page"),
    ),
    responses(
        (status = 200, body = FailurePage),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such batch"),
    ))]
#[get("/storage-migration/batches/{batch_id}/failures")]
pub async fn failures(
    engine: web::Data<Engine>,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let batch_id = parse_batch_id(&path.into_inner())?;
    let limit = parse_limit(&query, 100, 1000)?;
    let after = match query.get("after") {
        None => None,
        Some(cursor) => {
            let bad = || {
                ApiError::bad(
                    "invalid_cursor",
                    "after must be a cursor returned as nextAfter",
                )
            };
            let (kind, id) = cursor.split_once(':').ok_or_else(bad)?;
            FileKind::from_api_key(kind).ok_or_else(bad)?;
            // The form nextAfter is written in: a hyphenated UUID.
            if id.len() != 36 {
                return Err(bad());
            }
            Some((kind.to_string(), Uuid::parse_str(id).map_err(|_| bad())?))
        }
    };
    let items = engine.failures(batch_id, after, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|f| format!("{}:{}", f.kind, f.entity_id)))
        .flatten();
    Ok(HttpResponse::Ok().json(FailurePage {
        batch_id,
        items,
        next_after: next,
    }))
}

/// Runs only the failed files of a batch again, under the same batch id.
#[utoipa::path(post, path = "/storage-migration/batches/{batch_id}/retry", tag = "batches",
    params(("batch_id" = Uuid, Path)),
    responses(
        (status = 201, body = Started),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such batch"),
        (status = 409, body = ErrorBody, description = "running, or no failed file left"),
    ))]
#[post("/storage-migration/batches/{batch_id}/retry")]
pub async fn retry(
    engine: web::Data<Engine>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let batch_id = parse_batch_id(&path.into_inner())?;
    let reply = engine.retry(batch_id).await?;
    Ok(started(&reply))
}

/// Files and objects in the gallery's folders that no row points at: what
/// a crash can leave (temporary files, sources of the last committed moves
/// with deleteSource, multipart uploads cut short). Nothing is deleted.
#[utoipa::path(get, path = "/storage-migration/orphans", tag = "batches",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100000, description = "orphans listed, 1–100000, default 1000")),
    responses(
        (status = 200, body = OrphanReport),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a migration is running"),
        (status = 503, body = ErrorBody),
    ))]
#[get("/storage-migration/orphans")]
pub async fn orphans(
    engine: web::Data<Engine>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let limit = parse_limit(&query, 1000, 100_000)?;
    Ok(HttpResponse::Ok().json(engine.orphans(limit as usize).await?))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "engine",
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody),
    ))]
#[get("/metrics")]
pub async fn metrics(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let text = engine.metrics().render().map_err(|e| {
        ApiError::Engine(crate::engine::EngineError::Internal(format!(
            "metrics: {e}"
        )))
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// Anything no route took: `405` with the methods it has when the path is
/// an endpoint's, else `404`; in the gallery's shape under `/api`.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    let error = match super::openapi::methods_of(req.path()) {
        Some(allow) => ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        },
        None => ApiError::NotFound,
    };
    Err(if req.path().starts_with(super::auth::GALLERY_PREFIX) {
        super::error::GalleryError(error).into()
    } else {
        error.into()
    })
}
