//! `/v1/sandboxes`: a prospect creates one with their files (no account); the prospect, the
//! demo's vendor and operators read, extend and end it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::sandbox_id;
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Items};
use crate::domain::token::IssuedToken;
use crate::domain::{
    DemoId, EndReason, FileRecord, Prospect, SandboxId, SandboxStatus, Timestamp, TrialWindow,
    UploadName,
};
use crate::lifecycle::Lifecycle;
use crate::spool::{Spool, SpoolError};
use crate::store::{Demo, Sandbox, SandboxFilter};

pub fn router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    // The whole request may be as large as the largest upload any demo allows, plus the
    // form's other fields; each demo's own limit is enforced while the files stream in.
    let body_limit = usize::try_from(max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    OpenApiRouter::new()
        .routes(routes!(create_sandbox).layer(DefaultBodyLimit::max(body_limit)))
        .routes(routes!(list_sandboxes))
        .routes(routes!(get_sandbox, delete_sandbox))
        .routes(routes!(extend_sandbox))
        .routes(routes!(sandbox_events))
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
}

#[derive(Serialize, ToSchema)]
pub struct CreatedSandbox {
    #[serde(flatten)]
    sandbox: SandboxView,
    /// The sandbox token: opens, reads, extends and ends this sandbox. Shown once.
    token: String,
}

impl SandboxView {
    fn new(state: &AppState, sandbox: Sandbox, caller_sees_prospect: bool) -> SandboxView {
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
            url: format!("{}/s/{}/", state.public_url, sandbox.id),
            files: sandbox.files,
            data_deleted_at: sandbox.data_deleted_at,
            usage: Usage {
                requests: sandbox.requests,
                last_active_at: sandbox.last_active_at,
            },
            prospect: caller_sees_prospect.then_some(sandbox.prospect),
        }
    }
}

#[derive(Deserialize, IntoParams)]
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
    /// One or more files.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
}

/// Everything the form carried, checked, with the files already in the spool.
struct Form {
    demo: Demo,
    window: TrialWindow,
    prospect: Prospect,
    spool: Spool,
}

const MAX_FIELDS: usize = 1000;

/// A short text field, read whole (it is bounded), as UTF-8.
async fn text_field(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_string();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::invalid(
                &name,
                format!("must be at most {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::invalid(&name, "must be UTF-8 text"))
}

fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge(err.body_text());
    }
    ApiError::BadRequest(format!(
        "the multipart body is malformed: {}",
        err.body_text()
    ))
}

fn spool_error(err: axum::extract::multipart::MultipartError) -> SpoolError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        SpoolError::RequestTooLarge(err.body_text())
    } else {
        SpoolError::Body(err.body_text())
    }
}

/// Reads the form in order, streaming each file to the spool under the demo's rules.
async fn read_form(state: &AppState, id: SandboxId, mut form: Multipart) -> Result<Form, ApiError> {
    let mut chosen: Option<(Demo, Spool)> = None;
    let mut seconds = None;
    let mut prospect = Prospect::default();
    let mut fields = 0;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(ApiError::TooLarge(format!(
                "the form has more than {MAX_FIELDS} fields"
            )));
        }
        match field.name().unwrap_or_default() {
            "demo" => {
                if chosen.is_some() {
                    return Err(ApiError::invalid("demo", "is given twice"));
                }
                let demo_id = DemoId::parse(&text_field(field, 64).await?)?;
                let demo = state
                    .store
                    .demo(demo_id)
                    .await?
                    .filter(|d| d.enabled)
                    .ok_or(ApiError::NotFound("no such demo"))?;
                state.lifecycle.check_room(Some(&demo)).await?;
                let spool = Spool::create(
                    &state.lifecycle.settings().spool_root,
                    id,
                    demo.spec.upload.clone(),
                )
                .await
                .map_err(|e| ApiError::Unavailable {
                    detail: format!("the upload spool cannot be written: {e}"),
                    retry_after: 30,
                })?;
                chosen = Some((demo, spool));
            }
            "seconds" => seconds = Some(text_field(field, 32).await?),
            "email" => prospect.email = Prospect::parse_email(&text_field(field, 1024).await?)?,
            "company" => {
                prospect.company = Prospect::parse_company(&text_field(field, 1024).await?)?
            }
            "needs" => prospect.needs = Prospect::parse_needs(&text_field(field, 16384).await?)?,
            "file" => {
                let Some((_, spool)) = chosen.as_mut() else {
                    return Err(ApiError::invalid(
                        "demo",
                        "the demo field must come before the files",
                    ));
                };
                let name = UploadName::parse(field.file_name().unwrap_or_default())?;
                spool.admit(&name)?;
                spool.write(name, field.map_err(spool_error)).await?;
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a field of this form (demo, seconds, email, company, needs, file)",
                ));
            }
        }
    }
    let (demo, spool) = chosen.ok_or_else(|| ApiError::invalid("demo", "is required"))?;
    if spool.files().is_empty() {
        return Err(ApiError::invalid("file", "at least one file is required"));
    }
    let window = TrialWindow::parse(seconds.as_deref(), &demo.spec.trial)?;
    Ok(Form {
        demo,
        window,
        prospect,
        spool,
    })
}

/// The client's address: the connection's, or the first `X-Forwarded-For` entry when the
/// service runs behind a proxy it trusts.
fn client_address(request: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| request.headers().get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|v| v.split(',').next()?.trim().parse().ok());
    forwarded.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

/// Start a trial: upload files (multipart) and get a sandbox of the demo loaded with them.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    params(CreateParams),
    request_body(content = SandboxForm, content_type = "multipart/form-data"),
    responses((status = 201, body = CreatedSandbox),
              (status = 404, description = "unknown demo", body = super::Problem),
              (status = 413, body = super::Problem), (status = 415, body = super::Problem),
              (status = 422, body = super::Problem), (status = 429, body = super::Problem),
              (status = 503, body = super::Problem)))]
async fn create_sandbox(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CreateParams>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let (sandbox, token) = start_trial(&state, request, params.wait).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/sandboxes/{}", sandbox.id))],
        axum::Json(CreatedSandbox {
            sandbox: SandboxView::new(&state, sandbox, false),
            token: token.expose().to_string(),
        }),
    ))
}

/// A prospect's trial form (multipart) → a new sandbox and its token; with `wait`, once
/// it is ready or failed (or that many seconds passed). The API and the browser's trial
/// page both start trials through here.
pub async fn start_trial(
    state: &AppState,
    request: Request,
    wait: Option<u32>,
) -> Result<(Sandbox, IssuedToken), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ApiError::UnsupportedType(
            "the body must be multipart/form-data".to_string(),
        ));
    }
    let client = client_address(&request, state.trust_forwarded_for);
    if let Some(client) = client
        && let Err(wait) = state.creations.take(client)
    {
        return Err(ApiError::TooMany {
            detail: "too many sandboxes asked for from this address; try again shortly".to_string(),
            retry_after: wait.as_secs().max(1) as u32,
        });
    }
    // Refuse before reading a byte of the upload when the Engine is down or every place is
    // taken.
    if !state.lifecycle.engine().is_healthy() {
        return Err(ApiError::Unavailable {
            detail: "the Docker Engine is unavailable, so no sandbox can be made now; \
                     nothing was uploaded"
                .to_string(),
            retry_after: 5,
        });
    }
    state.lifecycle.check_room(None).await?;
    let multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;

    let id = SandboxId::new();
    let form = read_form(state, id, multipart).await?;
    let created = state
        .lifecycle
        .create(id, &form.demo, form.window, form.prospect, form.spool)
        .await?;
    // A sandbox taken from a warm pool has the pool member's id, not `id`.
    let mut sandbox = created.sandbox;
    if let Some(wait) = wait {
        let mut progress = created.progress;
        let wait = Duration::from_secs(u64::from(wait.min(state.max_wait_seconds)));
        Lifecycle::wait_settled(&mut progress, wait).await;
        sandbox = state
            .store
            .sandbox(sandbox.id)
            .await?
            .ok_or(ApiError::NotFound("no such sandbox"))?;
    }
    Ok((sandbox, created.token))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    /// A demo id.
    demo: Option<String>,
}

/// Sandboxes of the caller's demos (all of them for operators), newest first.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(ListParams),
    responses((status = 200, body = Items<SandboxView>)),
    security(("bearer" = [])))]
async fn list_sandboxes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Items<SandboxView>>, ApiError> {
    let filter = SandboxFilter {
        vendor: caller.vendor_scope()?,
        status: params
            .status
            .as_deref()
            .map(SandboxStatus::parse)
            .transpose()?,
        demo: params.demo.as_deref().map(DemoId::parse).transpose()?,
        ended_since: None,
    };
    let items = state
        .store
        .sandboxes(&filter)
        .await?
        .into_iter()
        .map(|s| SandboxView::new(&state, s, true))
        .collect();
    Ok(axum::Json(Items { items }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    responses((status = 200, body = SandboxView), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
async fn get_sandbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let sandbox = caller.may_see_sandbox(state.store.sandbox(sandbox_id(&id)?).await?)?;
    Ok(axum::Json(SandboxView::new(
        &state,
        sandbox,
        caller.sees_prospect(),
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Seconds to add to the deadline.
    seconds: i64,
}

/// Move the deadline later, up to the demo's `max_seconds` from the sandbox's creation.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/extend", tag = "sandboxes",
    request_body = Extension,
    responses((status = 200, body = SandboxView), (status = 409, body = super::Problem),
              (status = 422, body = super::Problem)),
    security(("bearer" = [])))]
async fn extend_sandbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Extension>,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let sandbox = caller.may_see_sandbox(state.store.sandbox(sandbox_id(&id)?).await?)?;
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
    responses((status = 200, body = SandboxView), (status = 404, body = super::Problem),
              (status = 503, body = super::Problem)),
    security(("bearer" = [])))]
async fn delete_sandbox(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<SandboxView>, ApiError> {
    let sandbox = caller.may_see_sandbox(state.store.sandbox(sandbox_id(&id)?).await?)?;
    let sandbox = state.lifecycle.end(sandbox.id, caller.end_reason()).await?;
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
    responses((status = 200, body = Items<EventView>), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
async fn sandbox_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Items<EventView>>, ApiError> {
    let sandbox = caller.may_see_sandbox(state.store.sandbox(sandbox_id(&id)?).await?)?;
    let items = state
        .store
        .events(sandbox.id)
        .await?
        .into_iter()
        .map(|e| EventView {
            at: e.at,
            kind: e.kind,
            detail: e.detail,
        })
        .collect();
    Ok(axum::Json(Items { items }))
}
