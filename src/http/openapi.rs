//! The OpenAPI document of the API, served at `/openapi.json`. Built from
//! the handlers' own annotations and the types they send, so it cannot
//! drift far; the integration tests check real responses against it.

use super::bodies::{
    BatchPage, Cancelling, DumpDeleted, DumpList, ErrorBody, EstimateBody, FailurePage, Health,
    StartRequest, Started,
};
use super::{dumps, routes};
use crate::db::batches::{BatchRow, FailureRow};
use crate::db::rollback::RollbackReport;
use crate::dumps::{DumpInfo, DumpReport};
use crate::engine::orphans::{Orphan, OrphanReport};
use crate::engine::stats::StatusView;
use crate::model::{Backend, Direction};
use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "noodle-migrate",
        description = "Moves a Noodle Gallery library between disk and S3-compatible storage and rewrites its paths. With NOODLE_MIGRATE_API_TOKEN set, every endpoint but /healthz needs a bearer token."
    ),
    paths(
        routes::healthz,
        routes::estimate,
        routes::start,
        routes::status,
        routes::rollback,
        routes::cancel,
        routes::batches,
        routes::failures,
        routes::retry,
        routes::orphans,
        routes::metrics,
        dumps::create,
        dumps::list,
        dumps::delete,
        openapi_json,
    ),
    components(schemas(
        ErrorBody, Health, EstimateBody, StartRequest, Started, StatusView, RollbackReport,
        Cancelling, BatchPage, BatchRow, FailurePage, FailureRow, DumpReport, DumpInfo, DumpList,
        DumpDeleted, Direction, Backend, OrphanReport, Orphan
    )),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "engine",
    responses((status = 200, content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
