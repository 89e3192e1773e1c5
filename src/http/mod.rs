//! The HTTP edge: the gallery's four storage-migration endpoints plus
//! `/healthz`, authentication, and the server itself.
//!
//! - [`routes`]: migration endpoints, batches, metrics, the admin page.
//! - [`gallery`]: the gallery's own contract under `/api`.
//! - [`auth`]: our token and the gallery's credentials.
//! - [`dumps`]: database dumps.
//! - [`bodies`]: the JSON bodies the handlers send.
//! - [`plan_body`]: the dry run's body, streamed as JSON or CSV.
//! - [`openapi`]: the OpenAPI document at `/openapi.json`.
//! - [`error`]: every failure mapped to a status and a stable code.

pub mod auth;
pub mod bodies;
pub mod dumps;
pub mod error;
pub mod gallery;
pub mod openapi;
pub mod plan_body;
pub mod routes;

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use error::GalleryError;
use std::net::TcpListener;

/// Request bodies are tiny JSON documents; anything larger is refused.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    engine: Engine,
}

impl Application {
    /// Starts the engine and binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let listen = config.listen;
        let listener = TcpListener::bind(listen).map_err(|source| StartupError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(listen.port());
        if !listen.ip().is_loopback() && config.api_token.is_none() {
            tracing::warn!(
                listen = %listen,
                "Listening beyond loopback WITHOUT an API token: anyone who can reach this port can move or roll back the library. Set NOODLE_MIGRATE_API_TOKEN."
            );
        }
        let engine = Engine::start(config).await?;
        let data = web::Data::new(engine.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .wrap(from_fn(authenticate))
                .service(routes::admin_page)
                .service(routes::healthz)
                .service(routes::estimate)
                .service(routes::start)
                .service(routes::status)
                .service(routes::rollback)
                .service(routes::metrics)
                .service(routes::cancel)
                .service(routes::plan)
                .service(routes::change_run)
                .service(routes::pause)
                .service(routes::resume)
                .service(routes::batches)
                .service(routes::failures)
                .service(routes::retry)
                .service(routes::orphans)
                .service(dumps::create)
                .service(dumps::list)
                .service(dumps::delete)
                .service(openapi::openapi_json)
                .service(gallery::estimate)
                .service(gallery::start)
                .service(gallery::status)
                .service(gallery::rollback)
                .default_service(web::to(routes::not_found))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: listen.to_string(),
            source,
        })?
        .run();
        tracing::info!(address = %format!("{}:{}", listen.ip(), port), "Listening");
        Ok(Application {
            port,
            server,
            engine,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(engine) = req.app_data::<web::Data<Engine>>() {
        if let Err(e) = auth::authorize(engine, &req).await {
            return Err(if req.path().starts_with(auth::GALLERY_PREFIX) {
                GalleryError(e).into()
            } else {
                e.into()
            });
        }
    }
    next.call(req).await
}
