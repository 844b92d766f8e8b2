//! `/`: the demos a prospect can try, and `/demos/{id}`: one demo with its trial form (or,
//! while its image is missing, a word that it is not available right now), with the
//! vendor's questions. `/invitations/{id}`: the same page for an invited prospect, greeting
//! their company with the vendor's note, the information sheet filled in; an expired or
//! used invitation says so politely. Each view counts in the demo's funnel.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::auth::demo_id;
use super::{
    ApiError, AppState, PageError, render, shown_time, spoken_bytes, spoken_duration, vendor_name,
};
use crate::domain::{Demo, DemoId, InvitationId, InvitationState, Question, Timestamp};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(catalog))
        .route("/demos/{id}", get(demo_page))
        .route("/invitations/{id}", get(invitation_page))
}

/// A demo as the pages show it.
struct DemoCard {
    id: String,
    title: String,
    vendor: String,
    description: String,
    /// "15 minutes (extendable to 1 hour)".
    trial: String,
    /// "CSV or TSV · up to 3 files · 50 MiB in all".
    files: String,
    /// For the file picker: ".csv,.tsv" (empty: any type).
    accept: String,
    extensions: String,
    max_bytes: u64,
    max_files: u32,
    /// Trial lengths the prospect may choose: (seconds, label), the default first.
    windows: Vec<(u32, String)>,
}

impl DemoCard {
    fn new(demo: Demo, vendor: String) -> DemoCard {
        let spec = demo.spec;
        let trial = &spec.trial;
        let trial_text = if trial.max_seconds > trial.seconds {
            format!(
                "{} (extendable to {})",
                spoken_duration(trial.seconds.into()),
                spoken_duration(trial.max_seconds.into())
            )
        } else {
            spoken_duration(trial.seconds.into())
        };
        let upload = &spec.upload;
        let kinds = if upload.extensions.is_empty() {
            "Any type of file".to_string()
        } else {
            let upper: Vec<String> = upload
                .extensions
                .iter()
                .map(|e| e.to_ascii_uppercase())
                .collect();
            match upper.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => upper.join(""),
            }
        };
        let count = if upload.max_files == 1 {
            "one file".to_string()
        } else {
            format!("up to {} files", upload.max_files)
        };
        let files = format!(
            "{kinds} · {count} · {} in all",
            spoken_bytes(upload.max_bytes)
        );
        let mut windows = vec![(trial.seconds, spoken_duration(trial.seconds.into()))];
        for longer in [
            trial.seconds.saturating_mul(2),
            trial.seconds.saturating_mul(4),
        ] {
            if longer <= trial.max_seconds {
                windows.push((longer, spoken_duration(longer.into())));
            }
        }
        DemoCard {
            id: demo.id.to_string(),
            title: spec.title,
            vendor,
            description: spec.description,
            trial: trial_text,
            files,
            accept: upload
                .extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(","),
            extensions: upload.extensions.join(","),
            max_bytes: upload.max_bytes,
            max_files: upload.max_files,
            windows,
        }
    }
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    demos: Vec<DemoCard>,
}

async fn catalog(State(state): State<AppState>) -> Result<Response, PageError> {
    let demos = state
        .store
        .catalog()
        .await?
        .into_iter()
        .map(|(demo, vendor)| DemoCard::new(demo, vendor))
        .collect();
    Ok(render(&CatalogPage { demos }))
}

#[derive(Template)]
#[template(path = "demo.html")]
struct DemoPage {
    demo: DemoCard,
    /// Why no trial can start now (the demo's image is missing), instead of the form.
    unavailable: Option<&'static str>,
    questions: Vec<Question>,
    /// The invitation the page was opened with.
    invited: Option<Invited>,
}

/// What an invitation's page greets the prospect with and fills in.
struct Invited {
    id: String,
    company: String,
    email: String,
    note: Option<String>,
}

/// Counts a view of the demo's page; the funnel is worth less than the page, so a failure
/// is only logged.
async fn count_view(state: &AppState, demo: DemoId) {
    if let Err(err) = state.store.page_viewed(demo, Timestamp::now()).await {
        tracing::warn!(%err, demo_id = %demo, "could not count a page view");
    }
}

async fn demo_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let demo = state
        .store
        .demo(demo_id(&id)?)
        .await?
        .filter(|d| d.enabled)
        .ok_or(ApiError::NotFound("no such demo"))?;
    count_view(&state, demo.id).await;
    let vendor = vendor_name(&state, demo.vendor_id).await?;
    let unavailable = demo.image_status.unavailable_because();
    Ok(render(&DemoPage {
        questions: demo.spec.questions.clone(),
        demo: DemoCard::new(demo, vendor),
        unavailable,
        invited: None,
    }))
}

#[derive(Template)]
#[template(path = "invitation_closed.html")]
struct InvitationClosed {
    title: String,
    vendor: String,
    company: String,
    demo_id: String,
    expired: bool,
    /// When it expired, or when its trial started.
    when: String,
    when_rfc3339: String,
}

async fn invitation_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let not_found = || ApiError::NotFound("no such invitation: check the link you were sent");
    let id = InvitationId::parse(&id).map_err(|_| not_found())?;
    let invitation = state.store.invitation(id).await?.ok_or_else(not_found)?;
    let demo = state
        .store
        .demo(invitation.demo_id)
        .await?
        .filter(|d| d.enabled)
        .ok_or(ApiError::NotFound(
            "the demo this invitation is for is not offered any more",
        ))?;
    let now = Timestamp::now();
    if let Err(err) = state.store.invitation_opened(id, now).await {
        tracing::warn!(%err, "could not note that an invitation was opened");
    }
    count_view(&state, demo.id).await;
    let vendor = vendor_name(&state, demo.vendor_id).await?;
    let state_now = invitation.state(now);
    if state_now != InvitationState::Open {
        let expired = state_now == InvitationState::Expired;
        let at = if expired {
            invitation.expires_at
        } else {
            invitation.used_at.unwrap_or(invitation.created_at)
        };
        let mut page = render(&InvitationClosed {
            title: demo.spec.title.clone(),
            vendor,
            company: invitation.company.clone(),
            demo_id: demo.id.to_string(),
            expired,
            when: shown_time(at),
            when_rfc3339: at.to_rfc3339(),
        });
        *page.status_mut() = StatusCode::GONE;
        return Ok(page);
    }
    let unavailable = demo.image_status.unavailable_because();
    Ok(render(&DemoPage {
        questions: demo.spec.questions.clone(),
        demo: DemoCard::new(demo, vendor),
        unavailable,
        invited: Some(Invited {
            id: invitation.id.to_string(),
            company: invitation.company,
            email: invitation.email.unwrap_or_default(),
            note: invitation.note,
        }),
    }))
}
