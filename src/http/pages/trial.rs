//! The prospect's trial: `POST /trials` starts one from the demo page's form (the same
//! path as `POST /v1/sandboxes`) and hands the sandbox token to the browser only as
//! `HttpOnly` cookies, one for this page's paths and one for `/s/{id}/`; `/trials/{id}`
//! shows its progress, countdown, extend and end, a person to talk to, and after the end
//! its deletion receipt beside the demo's exit questions.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::session::{self, SANDBOX_COOKIE, TRIAL_COOKIE, TRIAL_COOKIE_SECONDS};
use super::{
    ApiError, AppState, PageError, auth, exact_bytes, intake, render, shown_time, spoken_bytes,
    spoken_duration, vendor_name,
};
use crate::domain::receipt::Receipt;
use crate::domain::{
    Answers, ContactMessage, EndReason, Ending, EventRecord, Question, Sandbox, SandboxEvent,
    SandboxStatus, Timestamp,
};
use crate::http::ApiJson;
use crate::lifecycle::MAX_PER_TRIAL;

pub fn router(max_upload_bytes: u64) -> Router<AppState> {
    let body_limit = DefaultBodyLimit::max(intake::body_limit(max_upload_bytes));
    Router::new()
        .route("/trials", post(start).layer(body_limit))
        .route("/trials/{id}", get(trial_page))
        .route("/trials/{id}/state", get(trial_state))
        .route("/trials/{id}/extend", post(extend))
        .route("/trials/{id}/end", post(end))
        .route("/trials/{id}/receipt.json", get(signed_receipt))
        .route("/trials/{id}/feedback", post(feedback))
        .route("/trials/{id}/contact", post(contact))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

#[derive(Serialize)]
struct Started {
    id: String,
    location: String,
}

/// The demo's form a browser sent the trial from (`/demos/{id}` or `/invitations/{id}`,
/// from its `Referer`), for a refusal page to go back to. Only that path is taken, never another site's address.
fn demo_form_of(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let path = referer.parse::<Uri>().ok()?.path().to_string();
    let id = path
        .strip_prefix("/demos/")
        .or_else(|| path.strip_prefix("/invitations/"))?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(path)
}

/// The demo page's form. A script posting it gets JSON (and shows upload progress); a
/// browser without scripts is sent on to the trial page, or shown the refusal.
async fn start(State(state): State<AppState>, request: Request) -> Response {
    let json = wants_json(request.headers());
    let form = demo_form_of(request.headers());
    let (sandbox, token) = match intake::start_trial(&state, request, None).await {
        Ok(started) => started,
        Err(err) if json => return err.into_response(),
        Err(err) => return PageError::from(err).back_to(form).into_response(),
    };
    let id = sandbox.id;
    let location = format!("/trials/{id}");
    let cookies = [
        session::set_cookie(
            &state,
            TRIAL_COOKIE,
            token.expose(),
            &location,
            "Lax",
            Some(TRIAL_COOKIE_SECONDS),
        ),
        session::set_cookie(
            &state,
            SANDBOX_COOKIE,
            token.expose(),
            &format!("/s/{id}/"),
            "Lax",
            Some(TRIAL_COOKIE_SECONDS),
        ),
    ];
    let mut response = if json {
        (
            StatusCode::CREATED,
            axum::Json(Started {
                id: id.to_string(),
                location: location.clone(),
            }),
        )
            .into_response()
    } else {
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location.clone())],
        )
            .into_response()
    };
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The sandbox this browser holds the cookie of, and that cookie's token; anything else is
/// "not found", so that trial ids do not tell whether they exist.
async fn own_trial(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Sandbox, String), ApiError> {
    let not_found = || ApiError::NotFound("no such trial in this browser");
    let id = auth::sandbox_id(id).map_err(|_| not_found())?;
    let cookies = session::cookies(headers, TRIAL_COOKIE);
    let (sandbox, token) = auth::sandbox_opened_by(state, id, cookies)
        .await?
        .ok_or_else(not_found)?;
    let sandbox = state.lifecycle.with_pending_activity(sandbox);
    Ok((sandbox, token.to_string()))
}

/// A call from the trial page's script: this browser's trial, whose page key the call
/// shows; one that changes something (not a `GET`) must also come from this site.
struct FromPage(Sandbox);

impl FromRequestParts<AppState> for FromPage {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        if parts.method != Method::GET {
            session::same_origin(headers)?;
        }
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such trial in this browser"))?;
        let (sandbox, token) = own_trial(state, &parts.headers, &id).await?;
        if !session::has_page_key(&parts.headers, None, &token) {
            return Err(ApiError::Forbidden);
        }
        Ok(FromPage(sandbox))
    }
}

/// How far provisioning got, as steps the page ticks off (the page's script knows them by
/// these names).
const STEPS: [(&str, &str); 4] = [
    ("data_placed", "Your files are in your sandbox"),
    ("started", "The product is starting"),
    ("loaded", "Your data is loaded"),
    ("ready", "Ready"),
];

/// The step an event marks, if any.
fn step(event: &SandboxEvent) -> Option<&'static str> {
    Some(match event {
        SandboxEvent::DataPlaced { .. } => "data_placed",
        SandboxEvent::Started { .. } => "started",
        SandboxEvent::Loaded => "loaded",
        SandboxEvent::Ready { .. } => "ready",
        _ => return None,
    })
}

/// What the trial page shows and its script polls.
#[derive(Serialize)]
struct TrialState {
    id: String,
    status: SandboxStatus,
    status_text: String,
    now: Timestamp,
    created_at: Timestamp,
    expires_at: Timestamp,
    remaining_seconds: u64,
    /// Seconds the extend button adds; 0 when the trial cannot be extended further.
    extend_seconds: u32,
    /// Provisioning steps done so far (`STEPS` kinds).
    steps_done: Vec<&'static str>,
    failure: Option<String>,
    /// The demo's own message when its load command failed (its last line on stderr), and
    /// the end of all it printed: this page's alone.
    load_message: Option<String>,
    load_output: Option<String>,
    /// Everything is destroyed: the page shows the receipt.
    deleted: bool,
}

impl TrialState {
    fn new(sandbox: &Sandbox, events: &[EventRecord]) -> TrialState {
        let now = Timestamp::now();
        let live = sandbox.status.is_live();
        let latest = sandbox
            .created_at
            .plus_seconds(sandbox.spec.trial.max_seconds);
        let room = sandbox.expires_at.until(latest).as_secs();
        let extend_seconds = if live {
            u64::from(sandbox.spec.trial.seconds).min(room) as u32
        } else {
            0
        };
        let failure = sandbox.failure.as_ref().map(|f| f.as_str().to_string());
        let (load_message, load_output) = sandbox.load_message_and_output();
        let status_text = match (sandbox.status, sandbox.end_reason) {
            (SandboxStatus::Provisioning, _) => "Preparing your sandbox…".to_string(),
            (SandboxStatus::Ready, _) => "Ready".to_string(),
            (SandboxStatus::Sleeping, _) => {
                "Paused while idle: opening the demo wakes it".to_string()
            }
            (SandboxStatus::Failed, _) => "The demo could not start with your data".to_string(),
            (SandboxStatus::Ended, Some(EndReason::Expired)) => {
                "The trial window ended".to_string()
            }
            (SandboxStatus::Ended, Some(EndReason::EndedByProspect)) => {
                "You ended the trial".to_string()
            }
            (SandboxStatus::Ended, _) => {
                "The trial was ended by the vendor or an operator".to_string()
            }
        };
        TrialState {
            id: sandbox.id.to_string(),
            status: sandbox.status,
            status_text,
            now,
            created_at: sandbox.created_at,
            expires_at: sandbox.expires_at,
            remaining_seconds: if live {
                now.until(sandbox.expires_at).as_secs()
            } else {
                0
            },
            extend_seconds,
            steps_done: STEPS
                .iter()
                .map(|(kind, _)| *kind)
                .filter(|kind| events.iter().any(|e| step(&e.event) == Some(kind)))
                .collect(),
            failure,
            load_message,
            load_output,
            deleted: sandbox.data_deleted_at.is_some(),
        }
    }
}

struct FileRow {
    name: String,
    size: String,
    /// The size to the byte, for a hover and the receipt.
    exact: String,
    sha256: String,
}

impl FileRow {
    fn new(name: &str, bytes: u64, sha256: &str) -> FileRow {
        FileRow {
            name: name.to_string(),
            size: spoken_bytes(bytes),
            exact: exact_bytes(bytes),
            sha256: sha256.to_string(),
        }
    }
}

struct ReceiptView {
    receipt: Receipt,
    ended: String,
    container: String,
    volumes: String,
    deleted: String,
    /// Each file, when its last copy was destroyed, and that moment in RFC 3339.
    files: Vec<(FileRow, String, String)>,
}

#[derive(Template)]
#[template(path = "trial.html")]
struct TrialPage {
    page_key: String,
    title: String,
    vendor: String,
    state: TrialState,
    state_json: String,
    expires: String,
    /// The time left as the countdown first shows it.
    countdown: String,
    extend_label: String,
    steps: Vec<(&'static str, bool)>,
    files: Vec<FileRow>,
    receipt: Option<ReceiptView>,
    /// Where "Try again" goes: the demo's form (which its script fills in again), or the
    /// invitation's page for an invited trial.
    try_again: String,
    /// The demo's exit questions, asked once the trial is over (unless answered).
    exit_questions: Vec<Question>,
    feedback_sent: bool,
    /// Contact requests sent so far, and whether another may be.
    contacts_sent: usize,
    may_contact: bool,
}

#[derive(Template)]
#[template(path = "locked.html")]
struct LockedPage;

fn locked() -> Response {
    let mut response = render(&LockedPage);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn trial_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    session::navigation_only(&headers)?;
    let (sandbox, token) = match own_trial(&state, &headers, &id).await {
        Ok(found) => found,
        Err(ApiError::NotFound(_)) => return Ok(locked()),
        Err(other) => return Err(other.into()),
    };
    let events = state.store.history(sandbox.id).await?;
    let view = TrialState::new(&sandbox, &events);
    let vendor = vendor_name(&state, sandbox.vendor_id).await?;
    let files = sandbox
        .files
        .iter()
        .map(|f| FileRow::new(&f.name, f.bytes, &f.sha256))
        .collect();
    let receipt = Receipt::of(&sandbox, &events).map(|receipt| ReceiptView {
        ended: shown_time(receipt.ended_at),
        container: shown_time(receipt.container_removed_at),
        volumes: shown_time(receipt.volumes_removed_at),
        deleted: shown_time(receipt.data_deleted_at),
        files: receipt
            .files
            .iter()
            .map(|f| {
                let last = f.sandbox_copy_deleted_at.unwrap_or(f.spool_copy_deleted_at);
                (
                    FileRow::new(&f.name, f.bytes, &f.sha256),
                    shown_time(last),
                    last.to_rfc3339(),
                )
            })
            .collect(),
        receipt,
    });
    let steps = STEPS
        .iter()
        .filter(|(kind, _)| *kind != "loaded" || sandbox.spec.load_command.is_some())
        .map(|(kind, label)| (*label, view.steps_done.contains(kind)))
        .collect();
    let said = |kind: &str| events.iter().filter(|e| e.event.kind() == kind).count();
    let contacts_sent = said("contact_requested");
    let page = TrialPage {
        page_key: session::page_key(&token),
        try_again: match sandbox.invitation_id {
            Some(invitation) => format!("/invitations/{invitation}"),
            None => format!("/demos/{}", sandbox.demo_id),
        },
        exit_questions: sandbox.spec.exit_questions.clone(),
        feedback_sent: said("feedback") > 0,
        contacts_sent,
        may_contact: contacts_sent < MAX_PER_TRIAL,
        title: sandbox.spec.title.clone(),
        vendor,
        state_json: serde_json::to_string(&view).unwrap_or_default(),
        expires: shown_time(sandbox.expires_at),
        countdown: clock_face(view.remaining_seconds),
        extend_label: spoken_duration(view.extend_seconds.into()),
        steps,
        files,
        receipt,
        state: view,
    };
    Ok(render(&page))
}

/// "14:59", "1:02:03".
fn clock_face(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The trial as the page's script sees it.
async fn state_of(state: &AppState, sandbox: &Sandbox) -> Result<TrialState, ApiError> {
    let events = state.store.history(sandbox.id).await?;
    Ok(TrialState::new(sandbox, &events))
}

async fn trial_state(
    State(state): State<AppState>,
    FromPage(sandbox): FromPage,
) -> Result<axum::Json<TrialState>, ApiError> {
    Ok(axum::Json(state_of(&state, &sandbox).await?))
}

/// The signed deletion receipt, as a file to keep (the same as
/// `GET /v1/sandboxes/{id}/receipt`). Like the page's script calls it needs the page key:
/// the page's download link carries it as `?key=`.
async fn signed_receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (sandbox, token) = own_trial(&state, &headers, &id).await?;
    if !session::has_page_key(&headers, uri.query(), &token) {
        return Err(ApiError::Forbidden);
    }
    let receipt = state.signed_receipt(&sandbox).await?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"testdrive-receipt-{}.json\"",
                sandbox.id
            ),
        )],
        axum::Json(receipt),
    )
        .into_response())
}

/// Adds the demo's trial length again, up to its longest trial.
async fn extend(
    State(state): State<AppState>,
    FromPage(sandbox): FromPage,
) -> Result<axum::Json<TrialState>, ApiError> {
    let by = state_of(&state, &sandbox).await?.extend_seconds;
    if by == 0 {
        return Err(ApiError::Conflict(
            "this trial cannot be extended any further".to_string(),
        ));
    }
    let sandbox = state.lifecycle.extend(sandbox.id, by).await?;
    Ok(axum::Json(state_of(&state, &sandbox).await?))
}

/// Ends the trial; answers once every copy of the data is gone.
async fn end(
    State(state): State<AppState>,
    FromPage(sandbox): FromPage,
) -> Result<axum::Json<TrialState>, ApiError> {
    let sandbox = state
        .lifecycle
        .end(sandbox.id, Ending::EndedByProspect)
        .await?;
    Ok(axum::Json(state_of(&state, &sandbox).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackForm {
    answers: BTreeMap<String, String>,
}

/// The exit questions answered (the same rules as `POST /v1/sandboxes/{id}/feedback`).
async fn feedback(
    State(state): State<AppState>,
    FromPage(sandbox): FromPage,
    ApiJson(form): ApiJson<FeedbackForm>,
) -> Result<StatusCode, ApiError> {
    let answers = Answers::parse_feedback(&form.answers, &sandbox.spec.exit_questions)?;
    state.lifecycle.feedback(&sandbox, answers).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactForm {
    message: String,
}

/// A person to talk to (the same rules as `POST /v1/sandboxes/{id}/contact`).
async fn contact(
    State(state): State<AppState>,
    FromPage(sandbox): FromPage,
    ApiJson(form): ApiJson<ContactForm>,
) -> Result<StatusCode, ApiError> {
    let message = ContactMessage::parse(&form.message)?;
    state.lifecycle.contact(&sandbox, message).await?;
    Ok(StatusCode::ACCEPTED)
}
