//! The JSON API, one module per resource, each exposing its routes. The OpenAPI document is
//! built from the same route declarations, so it cannot drift from the code.

mod access;
mod catalog;
mod demos;
mod invitations;
mod nodes;
mod ops;
mod receipts;
mod sandboxes;
mod vendors;

use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, NoQuery, Problem, auth};
use crate::domain::page::Limit;

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

/// `{"items": [...], "next": …}`: one page of a list (`?limit=`, default 100, at most 1000).
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The link to the next page (the same filters, `after` the last item here); `null` on
    /// the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// `items` fetched one over `limit`: the extra one only says that another page follows.
    /// `next` is `path?query`, with `after` set to `position` of the last item kept.
    fn of(
        mut items: Vec<T>,
        limit: Limit,
        path: &str,
        filters: &[(&str, Option<&str>)],
        position: impl Fn(&T) -> String,
    ) -> Self {
        let more = items.len() > limit.get() as usize;
        items.truncate(limit.get() as usize);
        let next = more
            .then(|| items.last().map(&position))
            .flatten()
            .map(|after| {
                let mut query = form_urlencoded::Serializer::new(String::new());
                for (name, value) in filters {
                    if let Some(value) = value {
                        query.append_pair(name, value);
                    }
                }
                query.append_pair("limit", &limit.get().to_string());
                query.append_pair("after", &after);
                format!("{path}?{}", query.finish())
            });
        Page { items, next }
    }
}

/// A page of a list held whole in memory (vendors, demos: made by hand, so few), in id order.
fn page_of<T, Id: Ord + Copy>(
    items: Vec<T>,
    id: impl Fn(&T) -> Id,
    after: Option<Id>,
    limit: Limit,
) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| after.is_none_or(|after| id(item) > after))
        .take(limit.get() as usize + 1)
        .collect()
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
        .merge(invitations::router())
        .merge(catalog::router())
        .merge(sandboxes::router(max_upload_bytes))
        .merge(ops::router())
        .merge(nodes::router())
        .merge(receipts::router())
        .split_for_parts()
}
