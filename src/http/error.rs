//! Errors at the HTTP edge: every failure becomes JSON with the right
//! status, here and nowhere else. The native API answers
//! `{"error": <stable code>, "message": …}`; the gallery's contract under
//! `/api` answers as the gallery does (`{"message", "error": <status
//! text>, "statusCode"}`, plus our `code`), with its status codes. The full
//! cause goes to the log; secrets never appear in either (they live in
//! `config::Secret`).

use super::bodies::{ErrorBody, GalleryErrorBody};
use crate::dumps::DumpError;
use crate::engine::EngineError;
use crate::store::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or invalid credentials: send NOODLE_MIGRATE_API_TOKEN as Authorization: Bearer <token>, or one of the gallery's own (an API key in x-api-key, or an admin's session)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("{method} is not a method of this endpoint; it answers {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status and the stable code, decided together in one place.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::BadRequest { code, .. } => (S::BAD_REQUEST, code),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (S::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Engine(e) => match e {
                EngineError::AlreadyRunning | EngineError::LockedElsewhere => {
                    (S::CONFLICT, "migration_running")
                }
                EngineError::BackendMismatch { .. } | EngineError::BackendUnset { .. } => {
                    (S::CONFLICT, "backend_mismatch")
                }
                EngineError::MediaLocation(_) => (S::CONFLICT, "media_location_mismatch"),
                EngineError::NothingToMigrate { .. } => (S::CONFLICT, "nothing_to_migrate"),
                EngineError::GalleryMovingFiles(_) => (S::CONFLICT, "gallery_moving_files"),
                EngineError::NotRunning => (S::CONFLICT, "not_running"),
                EngineError::CancelledBeforeStart => (S::CONFLICT, "cancelled"),
                EngineError::BatchNotFound(_) => (S::NOT_FOUND, "batch_not_found"),
                EngineError::WrongBatch { .. } => (S::CONFLICT, "wrong_batch"),
                EngineError::Store(e) => store(e),
                EngineError::Db(e) => database(e),
                EngineError::Config(_) => (S::INTERNAL_SERVER_ERROR, "configuration_error"),
                EngineError::Dump(e) => match e {
                    DumpError::Busy => (S::CONFLICT, "dump_running"),
                    DumpError::InvalidName(_) => (S::BAD_REQUEST, "invalid_dump_name"),
                    DumpError::NotFound(_) => (S::NOT_FOUND, "dump_not_found"),
                    DumpError::PgDump(_) | DumpError::Setup(_) | DumpError::Cancelled => {
                        (S::BAD_GATEWAY, "dump_failed")
                    }
                    DumpError::Store(e) => store(e),
                    DumpError::Db(e) => database(e),
                },
                EngineError::Ledger(_) | EngineError::Internal(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal_error")
                }
            },
        }
    }

    fn log(&self, status: StatusCode, code: &str) {
        if status.is_server_error() {
            tracing::error!(error = %self, code, "Request failed");
        } else {
            tracing::info!(error = %self, code, "Request refused");
        }
    }
}

fn store(e: &StoreError) -> (StatusCode, &'static str) {
    match e {
        StoreError::Bucket { .. } => (StatusCode::SERVICE_UNAVAILABLE, "bucket_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "storage_error"),
    }
}

fn database(e: &crate::db::DbError) -> (StatusCode, &'static str) {
    if e.is_unavailable() {
        (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "database_error")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.classify().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.classify();
        self.log(status, code);
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header(("Allow", allow.as_str()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: code.to_string(),
            message: self.to_string(),
        })
    }
}

/// An error on the gallery's contract (`/api/storage-migration/*`): the
/// gallery's body shape and status codes. The gallery refuses a start it
/// cannot run with 400, whatever the reason.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct GalleryError(#[from] pub ApiError);

impl From<EngineError> for GalleryError {
    fn from(e: EngineError) -> GalleryError {
        GalleryError(ApiError::Engine(e))
    }
}

impl ResponseError for GalleryError {
    fn status_code(&self) -> StatusCode {
        let (status, _) = self.0.classify();
        match (status, &self.0) {
            (StatusCode::CONFLICT, _) => StatusCode::BAD_REQUEST,
            (_, ApiError::Engine(EngineError::Store(StoreError::Bucket { .. }))) => {
                StatusCode::BAD_REQUEST
            }
            (status, _) => status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (_, code) = self.0.classify();
        self.0.log(status, code);
        let mut response = HttpResponse::build(status);
        if let ApiError::MethodNotAllowed { allow, .. } = &self.0 {
            response.insert_header(("Allow", allow.as_str()));
        }
        response.json(GalleryErrorBody {
            message: self.0.to_string(),
            error: status.canonical_reason().unwrap_or("Error").to_string(),
            status_code: status.as_u16(),
            code: code.to_string(),
        })
    }
}
