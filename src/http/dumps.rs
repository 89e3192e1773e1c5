//! Database dumps: take one, list them, delete one. All on the gallery's
//! active backend (`IMMICH_STORAGE_BACKEND`).

use super::bodies::{DumpDeleted, DumpList, EmptyBody, ErrorBody};
use super::error::ApiError;
use crate::dumps::DumpReport;
use crate::engine::Engine;
use actix_web::{delete, get, post, web, HttpResponse};
use serde_json::Value;

/// Takes a dump now. The body may be empty, `null` or `{}`: there are no
/// options, and anything else is refused rather than ignored.
#[utoipa::path(post, path = "/database-dumps", tag = "dumps",
    request_body(content = Option<EmptyBody>, description = "empty, null, or {}"),
    responses(
        (status = 201, body = DumpReport),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "another dump is running"),
        (status = 502, body = ErrorBody, description = "pg_dump or the write failed; nothing was kept"),
        (status = 503, body = ErrorBody, description = "the bucket or the database is unreachable"),
    ))]
#[post("/database-dumps")]
pub async fn create(engine: web::Data<Engine>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        match value.as_object() {
            _ if value.is_null() => {}
            Some(obj) if obj.is_empty() => {}
            Some(obj) => {
                let field = obj.keys().next().cloned().unwrap_or_default();
                return Err(ApiError::bad(
                    "unknown_field",
                    format!("unknown field {field:?}: a dump takes no options"),
                ));
            }
            None => {
                return Err(ApiError::bad(
                    "invalid_body",
                    "the request body must be empty or a JSON object",
                ))
            }
        }
    }
    let report = engine.create_dump().await?;
    Ok(HttpResponse::Created().json(report))
}

/// The dumps on the active backend, newest first.
#[utoipa::path(get, path = "/database-dumps", tag = "dumps",
    responses(
        (status = 200, body = DumpList),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
#[get("/database-dumps")]
pub async fn list(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    let (backend, dumps) = engine.list_dumps().await?;
    Ok(HttpResponse::Ok().json(DumpList { backend, dumps }))
}

/// Deletes one dump; only names of dumps are accepted.
#[utoipa::path(delete, path = "/database-dumps/{name}", tag = "dumps",
    params(("name" = String, Path, description = "immich-db-backup-….sql.gz")),
    responses(
        (status = 200, body = DumpDeleted),
        (status = 400, body = ErrorBody, description = "not a dump's name"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such dump"),
    ))]
#[delete("/database-dumps/{name}")]
pub async fn delete(
    engine: web::Data<Engine>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    engine.delete_dump(&name).await?;
    Ok(HttpResponse::Ok().json(DumpDeleted { deleted: name }))
}
