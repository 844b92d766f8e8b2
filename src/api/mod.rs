//! HTTP. One module per resource, each exposing its routes; handlers parse and authorize,
//! then call the registry or the lifecycle. Errors become problem documents in `error`,
//! callers are resolved in `auth`. The OpenAPI document is built from the same route
//! declarations, so it cannot drift from the code.

pub mod auth;
mod catalog;
mod demos;
mod error;
mod extract;
mod ops;
pub mod proxy;
mod rate_limit;
mod receipts;
mod sandboxes;
mod vendors;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

pub use auth::{AdminToken, Caller};
pub use error::{ApiError, Problem};
pub use extract::{ApiJson, ApiQuery};
pub use rate_limit::RateLimiter;
pub use sandboxes::start_trial;

use crate::lifecycle::Lifecycle;
use crate::registry::Registry;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub lifecycle: Lifecycle,
    pub admin: AdminToken,
    pub upstream: proxy::Upstream,
    pub metrics: PrometheusHandle,
    /// Base URL for sandbox links, without a trailing slash.
    pub public_url: Arc<str>,
    pub max_wait_seconds: u32,
    /// Sandbox creations per client address.
    pub creations: Arc<RateLimiter>,
    /// Take the client address from `X-Forwarded-For` (behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Signs deletion receipts.
    pub receipt_key: Arc<crate::lifecycle::ReceiptKey>,
}

/// `{"items": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

impl<T> Items<T> {
    fn of<R: Into<T>>(records: Vec<R>) -> Self {
        Items {
            items: records.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "testdrive",
        description = "Try-before-you-buy sandboxes: a prospect's own data in an isolated, \
                       expiring copy of a vendor's product. Sandboxes are opened at \
                       `/s/{id}/` (any method, forwarded to the demo), which is not \
                       described here."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document and the routes it describes.
fn documented_routes(max_upload_bytes: u64) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(vendors::router())
        .merge(demos::router())
        .merge(catalog::router())
        .merge(sandboxes::router(max_upload_bytes))
        .merge(ops::router())
        .merge(receipts::router())
        .split_for_parts()
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes(0).1
}

pub fn router(state: AppState, max_upload_bytes: u64) -> Router {
    let (routes, openapi) = documented_routes(max_upload_bytes);
    let openapi = Arc::new(openapi);
    routes
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(openapi.as_ref().clone()) }),
        )
        .merge(proxy::router())
        // The browser's pages, over the same state and domain calls.
        .merge(crate::web::router(max_upload_bytes))
        .fallback(|| async { ApiError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            // The path only: a query may carry a sandbox token, which must never be logged.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}
