//! Operations: liveness, readiness (database and Engine), Prometheus metrics, and what
//! happened to the deployment (`/v1/service-events`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState, Caller, Items, NoQuery};
use crate::domain::{ServiceEventRecord, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(service_events))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// `200` while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, or why not.
    database: String,
    engine: String,
}

async fn check<E: std::fmt::Display>(
    work: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// `200` when the database and the Docker Engine answer, else `503`.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (database, engine) = tokio::join!(
        check(state.store.ping()),
        check(state.lifecycle.engine().ping())
    );
    metrics::gauge!("testdrive_engine_up").set(if engine.is_ok() { 1.0 } else { 0.0 });
    let status = if database.is_ok() && engine.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: Result<(), String>| r.map(|_| "ok".to_string()).unwrap_or_else(|e| e);
    (
        status,
        axum::Json(Readiness {
            database: show(database),
            engine: show(engine),
        }),
    )
}

/// Prometheus text format, names prefixed `testdrive_` (operators only).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)),
    security(("bearer" = [])))]
async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let live = state.store.count_live_by_state(None).await?;
    metrics::gauge!("testdrive_sandboxes_running").set(live.running as f64);
    metrics::gauge!("testdrive_sandboxes_sleeping").set(live.sleeping as f64);
    let settings = state.lifecycle.settings();
    metrics::gauge!("testdrive_sandboxes_running_capacity").set(f64::from(settings.max_running));
    metrics::gauge!("testdrive_sandboxes_sleeping_capacity").set(f64::from(settings.max_sleeping));
    if let Ok(free) = state.intake.spool_disk().free() {
        metrics::gauge!("testdrive_spool_free_bytes").set(free as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// One event of the deployment.
#[derive(Serialize, ToSchema)]
pub struct ServiceEventView {
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// `network_recreated`, `engine_back`, `image_missing`, …
    kind: &'static str,
    detail: String,
}

impl From<ServiceEventRecord> for ServiceEventView {
    fn from(record: ServiceEventRecord) -> Self {
        ServiceEventView {
            at: record.at,
            kind: record.event.kind(),
            detail: record.event.detail(),
        }
    }
}

/// What happened to the deployment rather than to one sandbox, newest first (the last
/// 100): the Engine's outages, the sandbox network or firewall rule made again, objects
/// nobody knows removed, demos' images gone or back. Operators see all; a vendor those
/// about its demos.
#[utoipa::path(get, path = "/v1/service-events", tag = "operations",
    responses((status = 200, body = Items<ServiceEventView>)),
    security(("bearer" = [])))]
async fn service_events(
    State(state): State<AppState>,
    caller: Caller,
    _: NoQuery,
) -> Result<axum::Json<Items<ServiceEventView>>, ApiError> {
    let scope = caller.vendor_scope()?;
    let events = state.store.recent_service_events(scope, 100).await?;
    Ok(axum::Json(Items::of(events)))
}
