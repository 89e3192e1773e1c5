//! The OpenAPI document of the API, served at `/openapi.json`. Built from
//! the handlers' own annotations and the types they send, so it cannot
//! drift far; the integration tests check real responses against it.

use super::bodies::{
    BatchPage, Cancelling, DumpDeleted, DumpList, ErrorBody, EstimateBody, FailurePage,
    GalleryErrorBody, Health, Started,
};
use super::{dumps, gallery, routes};
use crate::db::batches::{BatchRow, FailureRow};
use crate::db::rollback::RollbackReport;
use crate::dumps::{DumpInfo, DumpReport};
use crate::engine::options::{FileTypes, StartOptions};
use crate::engine::orphans::{Orphan, OrphanReport};
use crate::engine::stats::StatusView;
use crate::model::{Backend, Direction};
use actix_web::{get, HttpResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "noodle-migrate",
        description = "Moves a Noodle Gallery library between disk and S3-compatible storage and rewrites its paths. With NOODLE_MIGRATE_API_TOKEN set, every endpoint but /healthz needs credentials: that token as a bearer token, or the gallery's own (an admin's API key in x-api-key with job.read or job.create, or an admin's session). The /api routes serve the gallery's own contract and always need credentials."
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
        gallery::estimate,
        gallery::start,
        gallery::status,
        gallery::rollback,
        openapi_json,
    ),
    components(schemas(
        ErrorBody, GalleryErrorBody, Health, EstimateBody, StartOptions, FileTypes, Started, StatusView, RollbackReport,
        Cancelling, BatchPage, BatchRow, FailurePage, FailureRow, DumpReport, DumpInfo, DumpList,
        DumpDeleted, Direction, Backend, OrphanReport, Orphan
    )),
    modifiers(&SecuritySchemes, &AuthResponses),
    security(("bearer" = []), ("apiKey" = []), ("cookie" = []))
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("immich_access_token"))),
        );
    }
}

/// Every route behind authentication may answer 401 and 403 (see
/// [`super::auth`]): said once here rather than on each route. The
/// gallery's contract answers in the gallery's error shape.
struct AuthResponses;

impl Modify for AuthResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path == "/healthz" {
                continue;
            }
            let schema = if path.starts_with(super::auth::GALLERY_PREFIX) {
                "GalleryErrorBody"
            } else {
                "ErrorBody"
            };
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in [
                    ("401", "no credentials, or invalid ones"),
                    (
                        "403",
                        "a gallery credential of a non-admin, or without the permission",
                    ),
                ] {
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(schema)))
                                .build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert(response.into());
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "engine",
    responses((status = 200, content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
