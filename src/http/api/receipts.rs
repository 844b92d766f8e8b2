//! What stays of a trial: the vendor's report (`GET /v1/sandboxes/{id}/report`, what the
//! prospect did, never the data) and the prospect's deletion receipt
//! (`GET /v1/sandboxes/{id}/receipt` once the data is gone, signed by the service), with
//! `GET /v1/receipt-key`, the public key that checks the signature.

use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, SeenSandbox};
use super::{ApiError, AppState, Caller, Problem};
use crate::domain::report::TrialReport;
use crate::signing::{PublicReceiptKey, SignedReceipt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(receipt))
        .routes(routes!(receipt_key))
}

/// What the prospect did: the information sheet, use of the demo, extensions, how the trial
/// ended, the shape of each file (CSV columns and types, JSON keys) — never a value — and
/// what they told the vendor: the invitation, answers, feedback and contact requests.
/// Vendor and operators; kept after the data is deleted.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/report", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = TrialReport), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TrialReport>, ApiError> {
    // A sandbox token may not ask, whichever sandbox it names.
    caller.vendor_scope()?;
    let sandbox = auth::sandbox(&state, caller, &id).await?;
    let sandbox = state.lifecycle.with_pending_activity(sandbox);
    let events = state.store.history(sandbox.id).await?;
    let invitation = match sandbox.invitation_id {
        Some(id) => state.store.invitation(id).await?,
        None => None,
    };
    Ok(axum::Json(TrialReport::of(
        &sandbox,
        &events,
        invitation.as_ref(),
    )))
}

/// The deletion receipt: each file's name, bytes and sha256, and when its copies, the
/// container and the volumes were destroyed, signed with the service's Ed25519 key (verify
/// the base64-decoded `signed` bytes against `signature` with `GET /v1/receipt-key`).
/// `409` until the sandbox has ended and its data is deleted.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/receipt", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = SignedReceipt), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
async fn receipt(
    State(state): State<AppState>,
    SeenSandbox { sandbox, .. }: SeenSandbox,
) -> Result<axum::Json<SignedReceipt>, ApiError> {
    Ok(axum::Json(state.signed_receipt(&sandbox).await?))
}

/// The public key deletion receipts are signed with.
#[utoipa::path(get, path = "/v1/receipt-key", tag = "sandboxes",
    responses((status = 200, body = PublicReceiptKey)))]
async fn receipt_key(State(state): State<AppState>) -> axum::Json<PublicReceiptKey> {
    axum::Json(state.receipt_key.public())
}
