//! `/v1/sandboxes`: a prospect creates one with their files (no account); the prospect, the
//! demo's vendor and operators read, extend and end it.

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::{self, SeenSandbox};
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Items, NoQuery, Page, Problem};
use crate::domain::page::{self, Limit};
use crate::domain::{
    Answers, ContactMessage, DemoId, EndReason, FileRecord, InvitationId, Prospect, Sandbox,
    SandboxId, SandboxStatus, Timestamp,
};
use crate::http::intake;
use crate::store::SandboxFilter;

pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let body_limit = DefaultBodyLimit::max(intake::body_limit(max_upload_bytes));
    OpenApiRouter::new()
        .routes(routes!(create_sandbox).layer(body_limit))
        .routes(routes!(list_sandboxes))
        .routes(routes!(get_sandbox, delete_sandbox))
        .routes(routes!(extend_sandbox))
        .routes(routes!(sandbox_events))
        .routes(routes!(sandbox_feedback))
        .routes(routes!(sandbox_contact))
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    requests: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_active_at: Option<Timestamp>,
}

#[derive(Serialize, ToSchema)]
pub struct SandboxView {
    #[schema(value_type = String, format = Uuid)]
    id: SandboxId,
    #[schema(value_type = String, format = Uuid)]
    demo_id: DemoId,
    status: SandboxStatus,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    ready_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    ended_at: Option<Timestamp>,
    end_reason: Option<EndReason>,
    remaining_seconds: u64,
    /// Where the prospect opens the demo (with the sandbox token).
    url: String,
    files: Vec<FileRecord>,
    /// When the container, its volumes and the spooled upload were confirmed gone.
    #[schema(value_type = Option<String>, format = DateTime)]
    data_deleted_at: Option<Timestamp>,
    usage: Usage,
    /// The information sheet; vendor and operators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    prospect: Option<Prospect>,
    /// The invitation the trial was started with.
    #[schema(value_type = Option<String>, format = Uuid)]
    invitation_id: Option<InvitationId>,
    /// Answers to the demo's `questions`, by question id; vendor and operators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    answers: Option<Answers>,
    /// Why a `failed` sandbox failed, in words that carry no data: to everyone who sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    /// The demo's message when its load command failed (its last line on stderr), perhaps
    /// about the prospect's data: to the sandbox token's holder only.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_message: Option<String>,
    /// The end of what the demo's load command printed when it failed (perhaps the
    /// prospect's data): to the sandbox token's holder only.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_output: Option<String>,
    /// The node that runs it; operators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedSandbox {
    #[serde(flatten)]
    sandbox: SandboxView,
    /// The sandbox token: opens, reads, extends and ends this sandbox. Shown once.
    token: String,
}

impl SandboxView {
    /// The sandbox as a vendor or an operator sees it (`caller_sees_prospect`), or as the
    /// prospect, holding its token, does.
    fn new(state: &AppState, sandbox: Sandbox, caller_sees_prospect: bool) -> SandboxView {
        let failure = sandbox.failure.as_ref().map(|f| f.as_str().to_string());
        let (load_message, load_output) = if caller_sees_prospect {
            (None, None)
        } else {
            sandbox.load_message_and_output()
        };
        let sandbox = state.lifecycle.with_pending_activity(sandbox);
        let remaining_seconds = if sandbox.status.is_live() {
            Timestamp::now().until(sandbox.expires_at).as_secs()
        } else {
            0
        };
        SandboxView {
            id: sandbox.id,
            demo_id: sandbox.demo_id,
            status: sandbox.status,
            created_at: sandbox.created_at,
            ready_at: sandbox.ready_at,
            expires_at: sandbox.expires_at,
            ended_at: sandbox.ended_at,
            end_reason: sandbox.end_reason,
            remaining_seconds,
            url: state.origins.url(sandbox.id),
            files: sandbox.files,
            data_deleted_at: sandbox.data_deleted_at,
            usage: Usage {
                requests: sandbox.requests,
                last_active_at: sandbox.last_active_at,
            },
            prospect: caller_sees_prospect.then_some(sandbox.prospect),
            invitation_id: sandbox.invitation_id,
            answers: caller_sees_prospect.then_some(sandbox.answers),
            failure,
            load_message,
            load_output,
            node: None,
        }
    }

    /// With what only operators see: the node that runs it.
    fn seen_by(mut self, caller: Caller, node: &crate::domain::NodeName) -> SandboxView {
        if matches!(caller, Caller::Admin) {
            self.node = Some(node.to_string());
        }
        self
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Hold the answer up to this many seconds, until the sandbox is `ready` or `failed`.
    wait: Option<u32>,
}

/// The form a prospect sends (documentation of the multipart body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SandboxForm {
    /// The demo's id. Must come before the files.
    demo: String,
    /// The trial window in seconds, up to the demo's `max_seconds`.
    seconds: Option<u32>,
    email: Option<String>,
    company: Option<String>,
    /// "What do you want to find out?"
    needs: Option<String>,
    /// The invitation the prospect came with (its id).
    invitation: Option<String>,
    /// Answers to the demo's `questions`: one field `q.<question id>` each.
    #[schema(rename = "q.<question id>")]
    answer: Option<String>,
    /// One or more files.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// Start a trial: upload files (multipart) and get a sandbox of the demo loaded with them.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", params(CreateParams),
    request_body(content = SandboxForm, content_type = "multipart/form-data"),
    responses((status = 201, body = CreatedSandbox), (status = 403, description = "sent from another site's page", body = Problem), (status = 404, description = "unknown demo", body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem), (status = 507, description = "the spool's disk has no room for the upload now (Retry-After)", body = Problem)))]
async fn create_sandbox(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CreateParams>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let (sandbox, token) = intake::start_trial(&state, request, params.wait).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/sandboxes/{}", sandbox.id))],
        axum::Json(CreatedSandbox {
            sandbox: SandboxView::new(&state, sandbox, false),
            token: token.expose().to_string(),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    /// A demo id.
    demo: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<String>,
    /// Where the page starts: taken from the previous page's `next`.
    after: Option<String>,
}

/// Sandboxes of the caller's demos (all of them for operators), newest first.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", params(ListParams),
    responses((status = 200, body = Page<SandboxView>)), security(("bearer" = [])))]
async fn list_sandboxes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Page<SandboxView>>, ApiError> {
    let limit = Limit::parse(params.limit.as_deref())?;
    let filter = SandboxFilter {
        vendor: caller.vendor_scope()?,
        status: params
            .status
            .as_deref()
            .map(SandboxStatus::parse)
            .transpose()?,
        demo: params.demo.as_deref().map(DemoId::parse).transpose()?,
        ended_since: None,
        before: page::parse_after(params.after.as_deref(), SandboxId::parse)?,
        limit: limit.get() + 1,
    };
    let items = state
        .store
        .sandboxes(&filter)
        .await?
        .into_iter()
        .map(|s| {
            let node = s.node.clone();
            SandboxView::new(&state, s, true).seen_by(caller, &node)
        })
        .collect();
    let filters = [
        ("status", params.status.as_deref()),
        ("demo", params.demo.as_deref()),
    ];
    Ok(axum::Json(Page::of(
        items,
        limit,
        "/v1/sandboxes",
        &filters,
        |s| s.id.to_string(),
    )))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = SandboxView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_sandbox(
    State(state): State<AppState>,
    SeenSandbox { caller, sandbox }: SeenSandbox,
) -> axum::Json<SandboxView> {
    let node = sandbox.node.clone();
    axum::Json(SandboxView::new(&state, sandbox, caller.sees_prospect()).seen_by(caller, &node))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Seconds to add to the deadline.
    seconds: i64,
}

/// Move the deadline later, up to the demo's `max_seconds` from the sandbox's creation.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/extend", tag = "sandboxes",
    params(("id" = String, Path)), request_body = Extension,
    responses((status = 200, body = SandboxView), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn extend_sandbox(
    State(state): State<AppState>,
    SeenSandbox { caller, sandbox }: SeenSandbox,
    ApiJson(body): ApiJson<Extension>,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let max = sandbox.spec.trial.max_seconds;
    if body.seconds < 1 || body.seconds > i64::from(max) {
        return Err(ApiError::invalid(
            "seconds",
            format!("must be between 1 and {max}"),
        ));
    }
    let sandbox = state
        .lifecycle
        .extend(sandbox.id, body.seconds as u32)
        .await?;
    Ok(axum::Json(SandboxView::new(
        &state,
        sandbox,
        caller.sees_prospect(),
    )))
}

/// End the sandbox now. Answers once the container, its volumes and the spooled upload are
/// gone, with `data_deleted_at` set.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = SandboxView), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = [])))]
async fn delete_sandbox(
    State(state): State<AppState>,
    SeenSandbox { caller, sandbox }: SeenSandbox,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let sandbox = state.lifecycle.end(sandbox.id, caller.ending()).await?;
    Ok(axum::Json(SandboxView::new(
        &state,
        sandbox,
        caller.sees_prospect(),
    )))
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    kind: String,
    detail: Option<String>,
}

/// The sandbox's lifecycle history, oldest first.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = Items<EventView>), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn sandbox_events(
    State(state): State<AppState>,
    SeenSandbox { sandbox, .. }: SeenSandbox,
    _: NoQuery,
) -> Result<axum::Json<Items<EventView>>, ApiError> {
    let items = state
        .store
        .history(sandbox.id)
        .await?
        .into_iter()
        .map(|e| EventView {
            at: e.at,
            kind: e.event.kind().to_string(),
            detail: e.event.detail(),
        })
        .collect();
    Ok(axum::Json(Items { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// Answers to the demo's `exit_questions`, by question id.
    #[schema(value_type = Object)]
    answers: std::collections::BTreeMap<String, String>,
}

/// Answer the demo's exit questions (the sandbox token; also after the trial ended). The
/// vendor hears of it as the `sandbox.feedback` webhook and in the report. A trial sends
/// feedback at most 5 times.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/feedback", tag = "sandboxes",
    params(("id" = String, Path)), request_body = FeedbackBody,
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn sandbox_feedback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> Result<StatusCode, ApiError> {
    // Refused before the lookup, so that the answer is the same for any id.
    caller.require_prospect()?;
    let sandbox = auth::sandbox(&state, caller, &id).await?;
    let answers = Answers::parse_feedback(&body.answers, &sandbox.spec.exit_questions)?;
    state.lifecycle.feedback(&sandbox, answers).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    /// What the prospect would like to talk about (1 to 2000 characters).
    message: String,
}

/// Ask to talk to a person (the sandbox token): `202`; the vendor hears of it as the
/// `prospect.contact_requested` webhook, in the report and in its console. At most 5 per
/// trial.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/contact", tag = "sandboxes",
    params(("id" = String, Path)), request_body = ContactBody,
    responses((status = 202), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn sandbox_contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ContactBody>,
) -> Result<StatusCode, ApiError> {
    caller.require_prospect()?;
    let sandbox = auth::sandbox(&state, caller, &id).await?;
    let message = ContactMessage::parse(&body.message)?;
    state.lifecycle.contact(&sandbox, message).await?;
    Ok(StatusCode::ACCEPTED)
}
