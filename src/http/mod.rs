//! HTTP: the API (`api`, one module per resource, described by the OpenAPI document), the
//! browser's pages (`pages`) and the way into sandboxes (`proxy`), siblings that never
//! import each other. What they share lives beside them: who is calling (`auth`), errors as
//! problem documents (`error`), JSON and query extractors (`extract`), browser credentials
//! and cross-site checks (`session`), invitations (`invitations`), and trial intake
//! (`intake`), the one way a trial starts from a form, with its bounded form reader
//! (`multipart`) and who the client is behind proxies (`client`). Handlers parse and authorize, then call the domain's services
//! (registry, lifecycle, webhooks); the router is assembled once, here, and served by
//! `server`, which bounds connections.

pub mod api;
pub mod auth;
mod client;
mod error;
mod extract;
mod forward;
mod intake;
mod invitations;
mod multipart;
pub mod origins;
mod pages;
pub mod proxy;
mod rate_limit;
pub mod server;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use auth::{AdminToken, Caller};
pub use client::{ClientAddress, ClientError, ClientKey, TrustedProxies};
pub use error::{ApiError, Problem};
pub use extract::{ApiJson, ApiQuery, NoQuery};
pub use intake::{Intake, IntakeSettings};
pub use rate_limit::RateLimiter;

use crate::domain::Sandbox;
use crate::domain::receipt::Receipt;
use crate::lifecycle::Lifecycle;
use crate::registry::Registry;
use crate::signing::{ReceiptKey, SignedReceipt};
use crate::store::Store;
use crate::webhooks::Webhooks;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub lifecycle: Lifecycle,
    pub webhooks: Webhooks,
    pub admin: AdminToken,
    pub upstream: proxy::Upstream,
    pub metrics: PrometheusHandle,
    /// Base URL of testdrive's own pages and API, without a trailing slash.
    pub public_url: Arc<str>,
    /// Where sandboxes are served: their own origins, or `/s/{id}/` of the public URL.
    pub origins: Arc<origins::SandboxOrigins>,
    pub max_wait_seconds: u32,
    /// Sandbox creations per client address.
    pub creations: Arc<RateLimiter>,
    /// The reverse proxies whose `X-Forwarded-For` is believed (see `ClientAddress`).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Intake's limits: uploads at once, the spool's budget, each client's share.
    pub intake: Arc<Intake>,
    /// Signs deletion receipts.
    pub receipt_key: Arc<ReceiptKey>,
    /// This node among the deployment's nodes: where trials go, which node owns a sandbox.
    pub cluster: crate::cluster::Cluster,
}

impl AppState {
    /// Whether browsers reach the service over https (cookies are then `Secure`).
    pub fn https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The sandbox's deletion receipt, signed (for the API and the trial page's download);
    /// `409` while any of its data may still exist.
    pub async fn signed_receipt(&self, sandbox: &Sandbox) -> Result<SignedReceipt, ApiError> {
        let events = self.store.history(sandbox.id).await?;
        let receipt = Receipt::of(sandbox, &events).ok_or_else(|| {
            ApiError::Conflict(
                "the sandbox has not ended yet, or its data is still being deleted".to_string(),
            )
        })?;
        Ok(self.receipt_key.sign(receipt))
    }
}

/// The OpenAPI document of the API's routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes(0).1
}

/// Every route of the service.
pub fn router(state: AppState, max_upload_bytes: u64) -> Router {
    let (routes, openapi) = api::routes(max_upload_bytes);
    let openapi = Arc::new(openapi);
    let service = routes
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(openapi.as_ref().clone()) }),
        )
        .merge(proxy::router())
        .merge(pages::router(max_upload_bytes))
        .fallback(|| async { ApiError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state.clone());
    // A sandbox's host is the sandbox's alone: it is sent there before any route of
    // testdrive's matches.
    Router::new()
        .fallback_service(service)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            proxy::sandbox_hosts,
        ))
        // Outermost: a request for a sandbox on another node goes there first.
        .layer(middleware::from_fn_with_state(state, forward::to_owner))
        .layer(
            // The path only: a query may carry a sandbox token, which must never be logged.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
}
