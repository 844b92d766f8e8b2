//! `GET /v1/nodes` (operators): the deployment's nodes, whether each is up, and what it
//! holds.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState, Caller, Items, NoQuery};
use crate::domain::{NodeLoad, NodeStatus, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(nodes))
}

/// One node of the deployment.
#[derive(Serialize, ToSchema)]
pub struct NodeView {
    name: String,
    /// Where the other nodes reach it.
    url: String,
    /// `up` while its heartbeats arrive; `down` after 15 s without one (no new trials go
    /// there; its sandboxes' deadlines are still kept).
    #[schema(value_type = String, example = "up")]
    status: NodeStatus,
    /// Its live sandboxes (provisioning, ready, asleep).
    live: u64,
    /// Live sandboxes it takes at most.
    max_sandboxes: u32,
    #[schema(value_type = String, format = DateTime)]
    last_seen: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    started_at: Timestamp,
}

impl NodeView {
    fn of(load: NodeLoad, now: Timestamp) -> Self {
        let node = load.node;
        NodeView {
            status: node.status(now),
            name: node.name.to_string(),
            url: node.url,
            live: load.live,
            max_sandboxes: node.max_sandboxes,
            last_seen: node.last_seen,
            started_at: node.started_at,
        }
    }
}

/// Every node that ever joined the deployment, by name.
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, body = Items<NodeView>)),
    security(("bearer" = [])))]
async fn nodes(
    State(state): State<AppState>,
    caller: Caller,
    _: NoQuery,
) -> Result<axum::Json<Items<NodeView>>, ApiError> {
    caller.require_admin()?;
    let now = Timestamp::now();
    let nodes = state.cluster.nodes().await?;
    Ok(axum::Json(Items {
        items: nodes.into_iter().map(|n| NodeView::of(n, now)).collect(),
    }))
}
