//! `/v1/invitations`: a vendor invites a named prospect to one of its demos. The link opens
//! the demo's page greeting the company with the vendor's note, with the information sheet
//! filled in; the trial started there carries the invitation.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Items, Problem};
use crate::domain::conversation::InvitationRequest;
use crate::domain::page::Limit;
use crate::domain::{DemoId, Invitation, InvitationId, SandboxId, Timestamp, VendorId};
use crate::http::invitations::{invitation_url, invite};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invitation, list_invitations))
        .routes(routes!(get_invitation))
}

#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    #[schema(value_type = String, format = Uuid)]
    id: InvitationId,
    /// The link to send the prospect.
    url: String,
    #[schema(value_type = String, format = Uuid)]
    demo_id: DemoId,
    #[schema(value_type = String, format = Uuid)]
    vendor_id: VendorId,
    company: String,
    email: Option<String>,
    note: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
    /// When the link was first opened.
    #[schema(value_type = Option<String>, format = DateTime)]
    opened_at: Option<Timestamp>,
    /// The latest trial started with it.
    #[schema(value_type = Option<String>, format = Uuid)]
    sandbox_id: Option<SandboxId>,
    /// When that trial started.
    #[schema(value_type = Option<String>, format = DateTime)]
    used_at: Option<Timestamp>,
    max_trials: u32,
    trials: u32,
    /// `open`, `expired` or `used`.
    status: &'static str,
}

impl InvitationView {
    pub fn new(state: &AppState, i: Invitation) -> InvitationView {
        let status = i.state(Timestamp::now()).as_str();
        InvitationView {
            url: invitation_url(state, i.id),
            id: i.id,
            demo_id: i.demo_id,
            vendor_id: i.vendor_id,
            company: i.company,
            email: i.email,
            note: i.note,
            created_at: i.created_at,
            expires_at: i.expires_at,
            opened_at: i.opened_at,
            sandbox_id: i.sandbox_id,
            used_at: i.used_at,
            max_trials: i.max_trials,
            trials: i.trials,
            status,
        }
    }
}

/// Invite a named prospect to a demo: `url` is the link to send them. It opens the demo's
/// page greeting the company with `note`, the information sheet filled in, until
/// `expires_at` or until it has started `max_trials` trials (default 1).
#[utoipa::path(post, path = "/v1/invitations", tag = "invitations",
    request_body = InvitationRequest,
    responses((status = 201, body = InvitationView), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_invitation(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<InvitationRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let invitation = invite(&state, caller, &request).await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/v1/invitations/{}", invitation.id),
        )],
        axum::Json(InvitationView::new(&state, invitation)),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<String>,
}

/// The caller's invitations (every vendor's for operators), newest first, with when each
/// was opened and the trial it started.
#[utoipa::path(get, path = "/v1/invitations", tag = "invitations", params(ListParams),
    responses((status = 200, body = Items<InvitationView>)), security(("bearer" = [])))]
async fn list_invitations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<Items<InvitationView>>, ApiError> {
    let limit = Limit::parse(params.limit.as_deref())?;
    let items = state
        .store
        .invitations(caller.vendor_scope()?, limit.get())
        .await?
        .into_iter()
        .map(|i| InvitationView::new(&state, i))
        .collect();
    Ok(axum::Json(Items { items }))
}

#[utoipa::path(get, path = "/v1/invitations/{id}", tag = "invitations",
    params(("id" = String, Path)),
    responses((status = 200, body = InvitationView), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<InvitationView>, ApiError> {
    let scope = caller.vendor_scope()?;
    let not_found = || ApiError::NotFound("no such invitation");
    let id = InvitationId::parse(&id).map_err(|_| not_found())?;
    let invitation = state
        .store
        .invitation(id)
        .await?
        .filter(|i| scope.is_none_or(|v| v == i.vendor_id))
        .ok_or_else(not_found)?;
    Ok(axum::Json(InvitationView::new(&state, invitation)))
}
