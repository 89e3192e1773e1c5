//! The OpenAPI document of the API, served at `/openapi.json`. Built from
//! the handlers' own annotations and the types they send, so it cannot
//! drift far; the integration tests check real responses against it.

use super::bodies::{
    BatchPage, Cancelling, DumpDeleted, DumpList, EmptyBody, ErrorBody, EstimateBody, FailurePage,
    GalleryErrorBody, Health, PlanBody, PlanFormat, Started,
};
use super::{dumps, gallery, routes};
use crate::db::batches::{BatchRow, FailureRow};
use crate::db::rollback::RollbackReport;
use crate::dumps::{DumpInfo, DumpReport};
use crate::engine::options::{FileTypes, RunChange, StartOptions};
use crate::engine::orphans::{Orphan, OrphanReport};
use crate::engine::plan::{Action, PlanRow, PlanTotals};
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
        routes::plan,
        routes::change_run,
        routes::pause,
        routes::resume,
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
        ErrorBody, GalleryErrorBody, Health, EstimateBody, StartOptions, RunChange, FileTypes, PlanBody, PlanFormat,
        PlanRow, PlanTotals, Action, Started, StatusView, RollbackReport,
        Cancelling, BatchPage, BatchRow, FailurePage, FailureRow, DumpReport, DumpInfo, DumpList,
        DumpDeleted, EmptyBody, Direction, Backend, OrphanReport, Orphan
    )),
    modifiers(&SecuritySchemes, &AuthResponses, &Patterns, &BandwidthLimits),
    security(("bearer" = []), ("apiKey" = []), ("cookie" = []))
)]
pub struct ApiDoc;

/// Every operation of a path.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

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
            for operation in operations(item) {
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

/// A hyphenated UUID, with `{v}` for its version digit.
const UUID_PATTERN: &str =
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-{v}[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

/// The patterns of parameters whose shape the handlers check, from the
/// same constants the checks use.
struct Patterns;

impl Modify for Patterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let uuid = |version: &str| UUID_PATTERN.replace("{v}", version);
        let cursor = format!(
            "^({}):{}$",
            crate::model::FileKind::API_KEYS.join("|"),
            uuid("[0-9a-fA-F]")
        );
        let patterns = [
            (
                "/database-dumps/{name}",
                "name",
                crate::dumps::name::NAME_PATTERN.to_string(),
            ),
            (
                "/storage-migration/batches/{batch_id}/failures",
                "after",
                cursor,
            ),
            (
                "/api/storage-migration/rollback/{batchId}",
                "batchId",
                format!("^{}$", uuid("4")),
            ),
        ];
        for (path, name, pattern) in patterns {
            let parameters = openapi
                .paths
                .paths
                .get_mut(path)
                .into_iter()
                .flat_map(operations)
                .flat_map(|operation| operation.parameters.iter_mut().flatten());
            for parameter in parameters.filter(|p| p.name == name) {
                if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
                    object,
                ))) = parameter.schema.as_mut()
                {
                    object.pattern = Some(pattern.clone());
                }
            }
        }
    }
}

/// `bandwidthLimit`, in the start body and in a change to a run: a string
/// of the grammar the engine reads (published as a pattern), or a whole
/// number of bytes per second. A change names at least one field.
struct BandwidthLimits;

impl Modify for BandwidthLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, nullable) in [("StartOptions", true), ("RunChange", false)] {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
                continue;
            };
            let description = match object.properties.get("bandwidthLimit") {
                Some(RefOr::T(Schema::Object(o))) => o.description.clone(),
                _ => None,
            };
            let mut limit = OneOfBuilder::new()
                .description(description)
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(crate::bandwidth::pattern())),
                )
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1usize))
                        .maximum(Some(crate::bandwidth::MAX_BYTES as usize)),
                );
            if nullable {
                limit = limit.item(ObjectBuilder::new().schema_type(Type::Null));
            } else {
                object.min_properties = Some(1);
            }
            object.properties.insert(
                "bandwidthLimit".into(),
                RefOr::T(Schema::OneOf(limit.build())),
            );
        }
    }
}

/// The methods the endpoint at `path` answers (`GET, POST`), from this
/// document's path templates; `None` when no endpoint has that path.
pub fn methods_of(path: &str) -> Option<String> {
    static ROUTES: std::sync::OnceLock<Vec<(Vec<String>, String)>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        ApiDoc::openapi()
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, has)| has.then_some(m))
                .collect();
                let segments = template.split('/').map(str::to_string).collect();
                (segments, methods.join(", "))
            })
            .collect()
    });
    let asked: Vec<&str> = path.split('/').collect();
    routes
        .iter()
        .find(|(template, _)| {
            template.len() == asked.len()
                && template.iter().zip(&asked).all(|(t, a)| {
                    (t.starts_with('{') && t.ends_with('}') && !a.is_empty()) || t == a
                })
        })
        .map(|(_, methods)| methods.clone())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "engine",
    responses((status = 200, content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json(engine: actix_web::web::Data<crate::engine::Engine>) -> HttpResponse {
    HttpResponse::Ok().json(document(engine.config().api_token.is_some()))
}

/// The document as this engine is configured: without an API token, our
/// own routes are open (the gallery's `/api` routes never are), and say
/// so.
pub fn document(token_set: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if token_set {
        return doc;
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with(super::auth::GALLERY_PREFIX) {
            continue;
        }
        for operation in operations(item) {
            operation.security = Some(vec![
                utoipa::openapi::security::SecurityRequirement::default(),
            ]);
            operation.responses.responses.remove("401");
            operation.responses.responses.remove("403");
        }
    }
    doc
}
