//! The gallery's own storage-migration contract, under `/api`, so that a
//! reverse proxy can send the gallery's admin page and scripts here: the
//! gallery's paths, status codes (201 for start and rollback, 400 for a
//! start it refuses), bodies and error shape. The bodies are the native
//! API's, which hold every field the gallery sends, plus ours.
//!
//! Credentials are always required here, as on the gallery (see
//! [`super::auth`]).

use super::bodies::{EstimateBody, GalleryErrorBody, Started};
use super::error::{ApiError, GalleryError};
use super::routes::{estimate_for, parse_batch_id, start_from};
use crate::db::rollback::RollbackReport;
use crate::engine::stats::StatusView;
use crate::engine::StartOptions;
use crate::engine::{Engine, EngineError};
use actix_web::{get, post, web, HttpResponse};
use std::collections::HashMap;

/// Files and bytes a migration in this direction would move, per kind.
#[utoipa::path(get, path = "/api/storage-migration/estimate", tag = "gallery",
    params(("direction" = crate::model::Direction, Query, description = "toS3 or toDisk")),
    responses(
        (status = 200, body = EstimateBody),
        (status = 400, body = GalleryErrorBody, description = "a missing or unknown direction, or media locations that disagree"),
        (status = 503, body = GalleryErrorBody),
    ))]
#[get("/api/storage-migration/estimate")]
pub async fn estimate(
    engine: web::Data<Engine>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, GalleryError> {
    Ok(HttpResponse::Ok().json(estimate_for(&engine, &query).await?))
}

/// Starts a migration; anything that stops it from starting is a 400.
#[utoipa::path(post, path = "/api/storage-migration/start", tag = "gallery",
    request_body = StartOptions,
    responses(
        (status = 201, body = Started),
        (status = 400, body = GalleryErrorBody, description = "a bad body, or a start the engine refuses"),
        (status = 401, body = GalleryErrorBody),
        (status = 403, body = GalleryErrorBody),
        (status = 413, description = "the body is too large"),
        (status = 502, body = GalleryErrorBody),
        (status = 503, body = GalleryErrorBody),
    ))]
#[post("/api/storage-migration/start")]
pub async fn start(
    engine: web::Data<Engine>,
    body: web::Bytes,
) -> Result<HttpResponse, GalleryError> {
    Ok(start_from(&engine, &body).await?)
}

/// The gallery's queue view (`isActive`, `active`, `completed`, `failed`,
/// `delayed`, `waiting`, `paused`), with ours beside it.
#[utoipa::path(get, path = "/api/storage-migration/status", tag = "gallery",
    responses(
        (status = 200, body = StatusView),
        (status = 401, body = GalleryErrorBody),
        (status = 403, body = GalleryErrorBody),
    ))]
#[get("/api/storage-migration/status")]
pub async fn status(engine: web::Data<Engine>) -> Result<HttpResponse, GalleryError> {
    Ok(HttpResponse::Ok().json(engine.status().await?))
}

/// Reverts a batch's paths. As on the gallery, the id must be a version 4
/// UUID, and a batch with no log rows reverts nothing (201, all zero).
#[utoipa::path(post, path = "/api/storage-migration/rollback/{batchId}", tag = "gallery",
    params(("batchId" = uuid::Uuid, Path, description = "a version 4 UUID, with its hyphens")),
    responses(
        (status = 201, body = RollbackReport),
        (status = 400, body = GalleryErrorBody, description = "not a version 4 UUID, or a migration is running"),
        (status = 401, body = GalleryErrorBody),
        (status = 403, body = GalleryErrorBody),
    ))]
#[post("/api/storage-migration/rollback/{batchId}")]
pub async fn rollback(
    engine: web::Data<Engine>,
    path: web::Path<String>,
) -> Result<HttpResponse, GalleryError> {
    let raw = path.into_inner();
    let batch_id = parse_batch_id(&raw)?;
    // The gallery's own check: the hyphenated form of a version 4 UUID.
    if batch_id.get_version_num() != 4 || raw.len() != 36 {
        return Err(ApiError::bad(
            "invalid_batch_id",
            format!("batchId must be a UUID version 4, got {raw:?}"),
        )
        .into());
    }
    let report = match engine.rollback(batch_id).await {
        Err(EngineError::BatchNotFound(_)) => RollbackReport::default(),
        other => other?,
    };
    Ok(HttpResponse::Created().json(report))
}
