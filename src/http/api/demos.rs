//! `/v1/demos`: vendors register their product as a demo; operators see all of them.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::demo_id;
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Page, Problem, page_of};
use crate::domain::page::{self, Limit};
use crate::domain::{Demo, Funnel, ImageStatus};
use crate::domain::{DemoId, DemoManifest, DemoSpec, Timestamp, VendorId};
use crate::engine::PullProgress;
use crate::registry::Acting;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_demo, list_demos))
        .routes(routes!(get_demo, patch_demo, delete_demo))
        .routes(routes!(pull_demo))
        .routes(routes!(demo_funnel))
}

#[derive(Serialize, ToSchema)]
pub struct DemoView {
    #[schema(value_type = String, format = Uuid)]
    id: DemoId,
    #[schema(value_type = String, format = Uuid)]
    vendor_id: VendorId,
    enabled: bool,
    /// `pulling` (a registry image being fetched), `ready`, `failed` (the pull failed:
    /// `image_error` says why), or `missing` (an Engine-only image vanished). Only a `ready`
    /// demo is in the catalog and takes trials.
    image_status: ImageStatus,
    /// Why the last pull failed, in words.
    image_error: Option<String>,
    /// The digest the last pull resolved (`sha256:…`): every sandbox runs exactly it.
    image_digest: Option<String>,
    /// How far the pull under way is, if one is.
    #[schema(value_type = Option<Object>)]
    pull_progress: Option<PullProgress>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    /// Members of the warm pool started and ready to claim now (of `warm_pool`).
    warm_ready: usize,
    #[serde(flatten)]
    spec: DemoSpec,
}

impl DemoView {
    fn new(d: Demo, pools: &HashMap<DemoId, usize>) -> Self {
        DemoView {
            id: d.id,
            vendor_id: d.vendor_id,
            enabled: d.enabled,
            image_status: d.image_status,
            image_error: d.image_error,
            image_digest: d.image_digest,
            pull_progress: None,
            created_at: d.created_at,
            updated_at: d.updated_at,
            warm_ready: pools.get(&d.id).copied().unwrap_or(0),
            spec: d.spec,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Operators only: the vendor the demo belongs to.
    vendor_id: Option<String>,
}

/// Register a demo. Only `slug`, `title`, `image`, `port` and `data_path` are required. A
/// registry image is pulled with the vendor's credentials (`image_status: "pulling"`, then
/// `ready` or `failed`); an Engine-only image must be on the Engine and given to the vendor.
#[utoipa::path(post, path = "/v1/demos", tag = "demos", params(CreateParams),
    request_body = DemoManifest,
    responses((status = 201, body = DemoView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_demo(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<CreateParams>,
    ApiJson(manifest): ApiJson<DemoManifest>,
) -> Result<impl IntoResponse, ApiError> {
    let (vendor, by) = match (caller.vendor_scope()?, params.vendor_id) {
        (Some(own), None) => (own, Acting::Vendor),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "vendor_id",
                "a vendor registers demos for itself only",
            ));
        }
        (None, Some(raw)) => {
            let id = VendorId::parse(&raw)
                .map_err(|_| ApiError::invalid("vendor_id", "is not a valid vendor id"))?;
            let vendor = state
                .store
                .vendor(id)
                .await?
                .ok_or_else(|| ApiError::invalid("vendor_id", "no such vendor"))?;
            (vendor.id, Acting::Operator)
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "vendor_id",
                "an operator must name the vendor: ?vendor_id=",
            ));
        }
    };
    let demo = state.registry.register_demo(vendor, manifest, by).await?;
    if demo.image_status == ImageStatus::Pulling {
        state.lifecycle.pull_in_background(demo.clone());
    }
    state.lifecycle.pools_changed();
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/demos/{}", demo.id))],
        axum::Json(DemoView::new(demo, &HashMap::new())),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// At most this many (default 100, at most 1000).
    limit: Option<String>,
    /// Where the page starts: taken from the previous page's `next`.
    after: Option<String>,
}

/// The caller's demos (all of them for operators), oldest first.
#[utoipa::path(get, path = "/v1/demos", tag = "demos", params(ListParams),
    responses((status = 200, body = Page<DemoView>)), security(("bearer" = [])))]
async fn list_demos(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<DemoView>>, ApiError> {
    let limit = Limit::parse(params.limit.as_deref())?;
    let after = page::parse_after(params.after.as_deref(), DemoId::parse)?;
    let demos = state.store.demos(caller.vendor_scope()?).await?;
    let demos = page_of(demos, |d| d.id, after, limit);
    let pools = state.lifecycle.pool_levels().await?;
    let demos = demos
        .into_iter()
        .map(|d| DemoView::new(d, &pools))
        .collect();
    Ok(axum::Json(Page::of(demos, limit, "/v1/demos", &[], |d| {
        d.id.to_string()
    })))
}

#[utoipa::path(get, path = "/v1/demos/{id}", tag = "demos",
    responses((status = 200, body = DemoView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_demo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<DemoView>, ApiError> {
    let demo = caller.may_see_demo(state.store.demo(demo_id(&id)?).await?)?;
    let mut view = DemoView::new(demo, &state.lifecycle.pool_levels().await?);
    view.pull_progress = state.lifecycle.pull_progress(view.id);
    Ok(axum::Json(view))
}

/// Change a demo: a JSON merge patch of any field but `slug`, plus `enabled`
/// (`{"enabled": false}` hides it from the catalog). Running sandboxes are not affected.
#[utoipa::path(patch, path = "/v1/demos/{id}", tag = "demos", request_body = Object,
    responses((status = 200, body = DemoView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn patch_demo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<Value>,
) -> Result<axum::Json<DemoView>, ApiError> {
    let demo = caller.may_see_demo(state.store.demo(demo_id(&id)?).await?)?;
    let by = match caller {
        Caller::Admin => Acting::Operator,
        _ => Acting::Vendor,
    };
    let image_before = demo.spec.image.clone();
    let demo = state.registry.update_demo(demo, patch, by).await?;
    // A new registry image is pulled; a new Engine-only image, or the old one put back:
    // the demo answers with what the Engine has now.
    let demo = if demo.pulls() && demo.spec.image != image_before {
        state.lifecycle.pull(demo).await?
    } else {
        state.lifecycle.recheck_image(demo).await
    };
    // A changed demo's warm members are drained (they run the old spec) and made anew.
    state.lifecycle.pools_changed();
    Ok(axum::Json(DemoView::new(
        demo,
        &state.lifecycle.pool_levels().await?,
    )))
}

/// Pull the demo's image again (a new version pushed under the same tag): `202`, the demo
/// `pulling` until the pull ends (`ready` with the new `image_digest`, or `failed`). A pull
/// under way is not started twice. An Engine-only image is only looked for.
#[utoipa::path(post, path = "/v1/demos/{id}/pull", tag = "demos",
    responses((status = 202, body = DemoView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn pull_demo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let demo = caller.may_see_demo(state.store.demo(demo_id(&id)?).await?)?;
    let demo = state.lifecycle.pull(demo).await?;
    let mut view = DemoView::new(demo, &state.lifecycle.pool_levels().await?);
    view.pull_progress = state.lifecycle.pull_progress(view.id);
    Ok((StatusCode::ACCEPTED, axum::Json(view)))
}

/// Retire a demo: no new sandboxes; running ones keep their deadline.
#[utoipa::path(delete, path = "/v1/demos/{id}", tag = "demos",
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn delete_demo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let demo = caller.may_see_demo(state.store.demo(demo_id(&id)?).await?)?;
    if !state.registry.delete_demo(demo.id).await? {
        return Err(ApiError::NotFound("no such demo"));
    }
    state.lifecycle.pools_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FunnelParams {
    /// RFC 3339; 30 days ago when absent.
    since: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FunnelView {
    #[schema(value_type = String, format = Uuid)]
    demo_id: DemoId,
    #[schema(value_type = String, format = DateTime)]
    since: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    until: Timestamp,
    #[serde(flatten)]
    counts: Funnel,
}

/// When a funnel starts: `since` as given, or 30 days ago; never in the future.
pub fn funnel_since(raw: Option<&str>, now: Timestamp) -> Result<Timestamp, ApiError> {
    match raw {
        None => Ok(Timestamp::from_millis(now.millis() - 30 * 24 * 3600 * 1000)),
        Some(raw) => Timestamp::parse_rfc3339(raw)
            .filter(|since| *since <= now)
            .ok_or_else(|| {
                ApiError::invalid("since", "must be an RFC 3339 time, not in the future")
            }),
    }
}

/// How far the demo's visitors got since `since`: page views then, and of the trials
/// started since, how many were ready, opened, used 5 minutes, extended, answered the exit
/// questions and asked for a person.
#[utoipa::path(get, path = "/v1/demos/{id}/funnel", tag = "demos", params(FunnelParams),
    responses((status = 200, body = FunnelView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn demo_funnel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<FunnelParams>,
) -> Result<axum::Json<FunnelView>, ApiError> {
    let demo = caller.may_see_demo(state.store.demo(demo_id(&id)?).await?)?;
    let now = Timestamp::now();
    let since = funnel_since(params.since.as_deref(), now)?;
    let counts = state.store.funnel(demo.id, since).await?;
    Ok(axum::Json(FunnelView {
        demo_id: demo.id,
        since,
        until: now,
        counts,
    }))
}
