//! The JSON API, one module per resource, each exposing its routes. The OpenAPI document is
//! built from the same route declarations, so it cannot drift from the code.

mod access;
mod catalog;
mod demos;
mod ops;
mod receipts;
mod sandboxes;
mod vendors;

use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Problem, auth};

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
                       their `url`: an origin of their own, `<id>.<sandbox domain>`, \
                       or `/s/{id}/` (any method, forwarded to the demo), which is not \
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

/// The API's routes and the OpenAPI document that describes them, built from the same
/// declarations so they cannot drift apart.
pub(super) fn routes(max_upload_bytes: u64) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(vendors::router())
        .merge(access::router())
        .merge(demos::router())
        .merge(catalog::router())
        .merge(sandboxes::router(max_upload_bytes))
        .merge(ops::router())
        .merge(receipts::router())
        .split_for_parts()
}
