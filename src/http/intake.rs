//! Trial intake: the one way a trial starts from a form, for the API (`POST /v1/sandboxes`)
//! and the browser's demo page (`POST /trials`) alike. Refuse early (rate limit, the Engine
//! down, no place) before a byte of the upload is read; read the form in order, streaming
//! each file into the spool under the demo's rules; then hand the spool to the lifecycle.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use futures_util::TryStreamExt;

use super::{ApiError, AppState};
use crate::domain::token::IssuedToken;
use crate::domain::{Demo, DemoId, Prospect, Sandbox, SandboxId, TrialWindow, UploadName};
use crate::lifecycle::Lifecycle;
use crate::spool::{Spool, SpoolError};

/// The body limit of a route that takes a trial's form: the largest upload any demo may
/// allow, plus the form's other fields (each demo's own limit is enforced while the files
/// stream in).
pub fn body_limit(max_upload_bytes: u64) -> usize {
    usize::try_from(max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20)
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

/// A prospect's trial form (multipart) → a new sandbox and its token; with `wait`, once
/// it is ready or failed (or that many seconds passed).
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
