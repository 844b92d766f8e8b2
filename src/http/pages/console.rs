//! The consoles: `/ops` for operators (admin token) and `/vendor` for a vendor (its key).
//! Both show live sandboxes over server-sent events, one snapshot a second, with memory
//! and CPU read from the Engine, recent lifecycle events, and an end button; the vendor's
//! is scoped to its own demos and trials, like the API, and holds the sales conversation
//! (`sales`): invitations, answers and contact requests, and each demo's funnel.

mod sales;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use super::auth::{self, resolve};
use super::session::{self, CONSOLE_COOKIE_SECONDS};
use super::{ApiError, AppState, Caller, PageError, render, shown_time};
use crate::domain::{
    DemoId, EndReason, ImageStatus, NodeStatus, SandboxId, SandboxStatus, Timestamp, VendorId,
};
use crate::engine::PullProgress;
use crate::store::SandboxFilter;

/// How long an ended sandbox stays on the console.
const ENDED_SHOWN_FOR: Duration = Duration::from_secs(600);
const EVENTS_SHOWN: u32 = 30;
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Console {
    Ops,
    Vendor,
}

impl Console {
    fn base(self) -> &'static str {
        match self {
            Console::Ops => "/ops",
            Console::Vendor => "/vendor",
        }
    }

    fn cookie(self) -> &'static str {
        match self {
            Console::Ops => "testdrive_admin",
            Console::Vendor => "testdrive_vendor",
        }
    }

    fn admits(self, caller: Caller) -> bool {
        matches!(
            (self, caller),
            (Console::Ops, Caller::Admin) | (Console::Vendor, Caller::Vendor(_))
        )
    }

    /// The signed-in caller and its credential, if the browser's cookie still holds a
    /// valid one.
    async fn signed_in(
        self,
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<(Caller, String)>, ApiError> {
        for token in session::cookies(headers, self.cookie()) {
            if let Some(caller) = resolve(state, token).await?
                && self.admits(caller)
            {
                return Ok(Some((caller, token.to_string())));
            }
        }
        Ok(None)
    }

    /// The signed-in caller, for the page's script: it must also show the page key.
    async fn caller(
        self,
        state: &AppState,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let (caller, token) = self
            .signed_in(state, headers)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if !session::has_page_key(headers, query, &token) {
            return Err(ApiError::Forbidden);
        }
        Ok(caller)
    }
}

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for console in [Console::Ops, Console::Vendor] {
        let base = console.base();
        router = router
            .route(
                base,
                get(move |s: State<AppState>, h: HeaderMap, u: Uri| page(console, s, h, u)),
            )
            .route(
                &format!("{base}/login"),
                post(
                    move |s: State<AppState>, h: HeaderMap, f: axum::Form<Login>| {
                        login(console, s, h, f)
                    },
                ),
            )
            .route(
                &format!("{base}/logout"),
                post(move |s: State<AppState>, h: HeaderMap| logout(console, s, h)),
            )
            .route(
                &format!("{base}/stream"),
                get(move |s: State<AppState>, h: HeaderMap, u: Uri| stream(console, s, h, u)),
            )
            .route(
                &format!("{base}/sandboxes/{{id}}/end"),
                post(move |s: State<AppState>, h: HeaderMap, p: Path<String>| {
                    end(console, s, h, p)
                }),
            );
    }
    router.route(
        "/vendor/invitations",
        post(
            |s: State<AppState>, h: HeaderMap, u: Uri, f: axum::Form<sales::InviteForm>| async move {
                sales::invite_from_console(s.0, h, u, f.0).await
            },
        ),
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    base: &'static str,
    ops: bool,
    failed: bool,
}

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    base: &'static str,
    page_key: String,
    ops: bool,
    heading: String,
    /// The vendor's side of the sales conversation.
    sales: Option<sales::SalesView>,
}

async fn page(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, PageError> {
    let base = console.base();
    let ops = console == Console::Ops;
    session::navigation_only(&headers)?;
    let Some((caller, token)) = console.signed_in(&state, &headers).await? else {
        return Ok(render(&LoginPage {
            base,
            ops,
            failed: false,
        }));
    };
    let heading = match caller {
        Caller::Vendor(id) => state
            .store
            .vendor(id)
            .await?
            .map(|v| v.name.as_str().to_string())
            .unwrap_or_default(),
        _ => "Operations".to_string(),
    };
    let sales = match caller {
        Caller::Vendor(id) => Some(sales::view(&state, id, uri.query()).await?),
        _ => None,
    };
    Ok(render(&ConsolePage {
        base,
        ops,
        heading,
        page_key: session::page_key(&token),
        sales,
    }))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Login>,
) -> Result<Response, PageError> {
    session::same_origin(&headers)?;
    let token = form.token.trim();
    let admitted = resolve(&state, token)
        .await?
        .is_some_and(|caller| console.admits(caller));
    // Tokens are printable ASCII; anything else cannot be one and must not reach a header.
    let cookie_safe = token.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if !admitted || !cookie_safe {
        let mut response = render(&LoginPage {
            base: console.base(),
            ops: console == Console::Ops,
            failed: true,
        });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let cookie = session::set_cookie(
        &state,
        console.cookie(),
        token,
        console.base(),
        "Strict",
        Some(CONSOLE_COOKIE_SECONDS),
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, console.base().to_string())],
        [(header::SET_COOKIE, cookie)],
    )
        .into_response())
}

async fn logout(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session::same_origin(&headers)?;
    let expired = session::set_cookie(
        &state,
        console.cookie(),
        "",
        console.base(),
        "Strict",
        Some(0),
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, console.base().to_string())],
        [(header::SET_COOKIE, expired)],
    )
        .into_response())
}

/// One line of the console's table.
#[derive(Serialize)]
struct Row {
    id: SandboxId,
    demo_id: DemoId,
    demo: String,
    vendor: String,
    email: Option<String>,
    company: Option<String>,
    status: SandboxStatus,
    created_at: Timestamp,
    expires_at: Timestamp,
    ended_at: Option<Timestamp>,
    end_reason: Option<EndReason>,
    requests: u64,
    memory_bytes: Option<u64>,
    memory_limit_bytes: Option<u64>,
    cpu_percent: Option<f64>,
    /// The node that runs it (operators only).
    node: Option<String>,
}

/// A node of the deployment, for operators.
#[derive(Serialize)]
struct NodeRow {
    name: String,
    status: NodeStatus,
    live: u64,
    max_sandboxes: u32,
    last_seen: Timestamp,
}

/// One line of the event list: a sandbox's event, or the deployment's (no sandbox).
#[derive(Serialize)]
struct EventRow {
    at: Timestamp,
    sandbox_id: Option<SandboxId>,
    kind: &'static str,
    detail: Option<String>,
}

#[derive(Serialize)]
struct DemoRow {
    id: String,
    title: String,
    slug: String,
    enabled: bool,
    image_status: ImageStatus,
    /// Why the last pull failed.
    image_error: Option<String>,
    /// How far the pull under way is.
    pull: Option<PullProgress>,
    live: usize,
}

/// A demo whose image is not on the Engine (for operators: it takes no trial until the
/// image is back).
#[derive(Serialize)]
struct MissingImage {
    id: DemoId,
    title: String,
    vendor: String,
    image: String,
}

#[derive(Serialize)]
struct CapacityView {
    running: u64,
    max_running: u32,
    /// Warm pool members ready to claim (they hold running places no prospect needs).
    warm: usize,
    sleeping: u64,
    max_sleeping: u32,
}

/// Everything the console shows, as of `now`.
#[derive(Serialize)]
struct Snapshot {
    now: Timestamp,
    capacity: Option<CapacityView>,
    demos: Option<Vec<DemoRow>>,
    /// Operators only.
    images_missing: Option<Vec<MissingImage>>,
    /// Operators only.
    nodes: Option<Vec<NodeRow>>,
    sandboxes: Vec<Row>,
    events: Vec<EventRow>,
}

async fn snapshot(state: &AppState, scope: Option<VendorId>) -> Result<Snapshot, ApiError> {
    let now = Timestamp::now();
    let since = Timestamp::from_millis(now.millis() - ENDED_SHOWN_FOR.as_millis() as i64);
    let sandboxes = state
        .store
        .sandboxes(&SandboxFilter {
            vendor: scope,
            ended_since: Some(since),
            // A page, not an export: the API pages through the rest.
            limit: 1000,
            ..SandboxFilter::default()
        })
        .await?;
    let vendors: HashMap<VendorId, String> = state
        .store
        .vendors()
        .await?
        .into_iter()
        .map(|v| (v.id, v.name.as_str().to_string()))
        .collect();
    let running: Vec<SandboxId> = sandboxes
        .iter()
        .filter(|s| s.status == SandboxStatus::Ready)
        .map(|s| s.id)
        .collect();
    let usage = state.lifecycle.resource_use(&running).await;
    let rows: Vec<Row> = sandboxes
        .into_iter()
        .map(|s| {
            let s = state.lifecycle.with_pending_activity(s);
            let used = usage.get(&s.id);
            Row {
                id: s.id,
                demo_id: s.demo_id,
                demo: s.spec.title.clone(),
                vendor: vendors.get(&s.vendor_id).cloned().unwrap_or_default(),
                email: s.prospect.email.clone(),
                company: s.prospect.company.clone(),
                status: s.status,
                created_at: s.created_at,
                expires_at: s.expires_at,
                ended_at: s.ended_at,
                end_reason: s.end_reason,
                requests: s.requests,
                memory_bytes: used.map(|u| u.memory_bytes),
                memory_limit_bytes: used.map(|u| u.memory_limit_bytes),
                cpu_percent: used.and_then(|u| u.cpu_percent),
                node: scope.is_none().then(|| s.node.to_string()),
            }
        })
        .collect();
    let mut events: Vec<EventRow> = state
        .store
        .recent_events(scope, EVENTS_SHOWN)
        .await?
        .into_iter()
        .map(|(sandbox_id, e)| EventRow {
            at: e.at,
            sandbox_id: Some(sandbox_id),
            kind: e.event.kind(),
            detail: e.event.detail(),
        })
        .chain(
            state
                .store
                .recent_service_events(scope, EVENTS_SHOWN)
                .await?
                .into_iter()
                .map(|e| EventRow {
                    at: e.at,
                    sandbox_id: None,
                    kind: e.event.kind(),
                    detail: Some(e.event.detail()),
                }),
        )
        .collect();
    // Newest first; a stable sort keeps each list's own order for events of one moment.
    events.sort_by_key(|e| std::cmp::Reverse(e.at));
    events.truncate(EVENTS_SHOWN as usize);
    let (capacity, demos, images_missing) = match scope {
        None => {
            let counts = state.store.count_live_by_state(None).await?;
            let settings = state.lifecycle.settings();
            let capacity = CapacityView {
                running: counts.running,
                max_running: settings.max_running,
                warm: state.lifecycle.pool_levels().await?.values().sum(),
                sleeping: counts.sleeping,
                max_sleeping: settings.max_sleeping,
            };
            let missing = state
                .store
                .demos(None)
                .await?
                .into_iter()
                .filter(|d| matches!(d.image_status, ImageStatus::Missing | ImageStatus::Failed))
                .map(|d| MissingImage {
                    id: d.id,
                    vendor: vendors.get(&d.vendor_id).cloned().unwrap_or_default(),
                    title: d.spec.title,
                    image: d.spec.image,
                })
                .collect();
            (Some(capacity), None, Some(missing))
        }
        Some(vendor) => {
            let demos = state
                .store
                .demos(Some(vendor))
                .await?
                .into_iter()
                .map(|d| DemoRow {
                    live: rows
                        .iter()
                        .filter(|r| r.status.is_live() && r.demo_id == d.id)
                        .count(),
                    id: d.id.to_string(),
                    title: d.spec.title,
                    slug: d.spec.slug.as_str().to_string(),
                    enabled: d.enabled,
                    image_status: d.image_status,
                    pull: state.lifecycle.pull_progress(d.id),
                    image_error: d.image_error,
                })
                .collect();
            (None, Some(demos), None)
        }
    };
    let nodes = match scope {
        None => Some(
            state
                .cluster
                .nodes()
                .await?
                .into_iter()
                .map(|load| NodeRow {
                    status: load.node.status(now),
                    name: load.node.name.to_string(),
                    live: load.live,
                    max_sandboxes: load.node.max_sandboxes,
                    last_seen: load.node.last_seen,
                })
                .collect(),
        ),
        Some(_) => None,
    };
    Ok(Snapshot {
        now,
        capacity,
        demos,
        images_missing,
        nodes,
        sandboxes: rows,
        events,
    })
}

fn scope(caller: Caller) -> Option<VendorId> {
    match caller {
        Caller::Vendor(id) => Some(id),
        _ => None,
    }
}

/// Server-sent events: a `snapshot` every second; `signed-out` (and the end of the
/// stream) once the credential stops being valid.
async fn stream(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    console.caller(&state, &headers, uri.query()).await?;
    let mut ticks = tokio::time::interval(SNAPSHOT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events =
        futures_util::stream::unfold(Some((state, headers, ticks)), move |open| async move {
            let (state, headers, mut ticks) = open?;
            ticks.tick().await;
            // Checked every time: a revoked key or rotated token ends the stream at once.
            let event = match console.signed_in(&state, &headers).await {
                Ok(Some((caller, _))) => match snapshot(&state, scope(caller)).await {
                    Ok(snapshot) => SseEvent::default()
                        .event("snapshot")
                        .json_data(snapshot)
                        .unwrap_or_default(),
                    Err(err) => SseEvent::default().event("trouble").data(err.to_string()),
                },
                Ok(None) => {
                    let bye = SseEvent::default().event("signed-out").data("");
                    return Some((Ok(bye), None));
                }
                Err(err) => SseEvent::default().event("trouble").data(err.to_string()),
            };
            Some((Ok(event), Some((state, headers, ticks))))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Serialize)]
struct Ended {
    status: SandboxStatus,
    end_reason: Option<EndReason>,
}

async fn end(
    console: Console,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<Ended>, ApiError> {
    session::same_origin(&headers)?;
    let caller = console.caller(&state, &headers, None).await?;
    let sandbox = auth::sandbox(&state, caller, &id).await?;
    let sandbox = state.lifecycle.end(sandbox.id, caller.ending()).await?;
    Ok(axum::Json(Ended {
        status: sandbox.status,
        end_reason: sandbox.end_reason,
    }))
}
