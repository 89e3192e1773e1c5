//! Errors at the HTTP edge: every failure becomes JSON
//! `{"error": <stable code>, "message": …}` with the right status, here and
//! nowhere else. The full cause goes to the log; secrets never appear in
//! either (they live in `config::Secret`).

use super::bodies::ErrorBody;
use crate::dumps::DumpError;
use crate::engine::EngineError;
use crate::store::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("no such endpoint")]
    NotFound,
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

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::Engine(e) => match e {
                EngineError::AlreadyRunning | EngineError::LockedElsewhere => "migration_running",
                EngineError::BackendMismatch { .. } => "backend_mismatch",
                EngineError::NothingToMigrate { .. } => "nothing_to_migrate",
                EngineError::GalleryMovingFiles(_) => "gallery_moving_files",
                EngineError::BatchNotFound(_) => "batch_not_found",
                EngineError::NotRunning => "not_running",
                EngineError::Store(StoreError::Bucket { .. }) => "bucket_unavailable",
                EngineError::Store(_) => "storage_error",
                EngineError::Db(e) if e.is_unavailable() => "database_unavailable",
                EngineError::Db(_) => "database_error",
                EngineError::Config(_) => "configuration_error",
                EngineError::Dump(e) => match e {
                    DumpError::Busy => "dump_running",
                    DumpError::InvalidName(_) => "invalid_dump_name",
                    DumpError::NotFound(_) => "dump_not_found",
                    DumpError::Store(StoreError::Bucket { .. }) => "bucket_unavailable",
                    DumpError::Store(_) => "storage_error",
                    DumpError::Db(e) if e.is_unavailable() => "database_unavailable",
                    DumpError::Db(_) => "database_error",
                    DumpError::PgDump(_) | DumpError::Setup(_) | DumpError::Cancelled => {
                        "dump_failed"
                    }
                },
                EngineError::Ledger(_) | EngineError::Internal(_) => "internal_error",
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Engine(e) => match e {
                EngineError::AlreadyRunning
                | EngineError::LockedElsewhere
                | EngineError::BackendMismatch { .. }
                | EngineError::NothingToMigrate { .. }
                | EngineError::GalleryMovingFiles(_)
                | EngineError::NotRunning => StatusCode::CONFLICT,
                EngineError::BatchNotFound(_) => StatusCode::NOT_FOUND,
                EngineError::Dump(DumpError::Busy) => StatusCode::CONFLICT,
                EngineError::Dump(DumpError::InvalidName(_)) => StatusCode::BAD_REQUEST,
                EngineError::Dump(DumpError::NotFound(_)) => StatusCode::NOT_FOUND,
                EngineError::Dump(DumpError::Store(StoreError::Bucket { .. })) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                EngineError::Dump(DumpError::Db(e)) if e.is_unavailable() => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                EngineError::Dump(
                    DumpError::Store(_) | DumpError::PgDump(_) | DumpError::Cancelled,
                ) => StatusCode::BAD_GATEWAY,
                EngineError::Store(StoreError::Bucket { .. }) => StatusCode::SERVICE_UNAVAILABLE,
                EngineError::Store(_) => StatusCode::BAD_GATEWAY,
                EngineError::Db(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "Request failed");
        } else {
            tracing::info!(error = %self, code = self.code(), "Request refused");
        }
        let mut response = HttpResponse::build(status);
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        })
    }
}
