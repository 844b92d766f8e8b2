//! Invitations, for the API and the vendor console alike: making one (`invite`), where
//! its link points, and whether it opens a trial now (`open_invitation`, used by intake).

use super::{ApiError, AppState, Caller};
use crate::domain::conversation::{InvitationRequest, InvitationTerms};
use crate::domain::{Demo, Invitation, InvitationId, InvitationState, Timestamp, VendorId};

/// Where an invitation's link points.
pub fn invitation_url(state: &AppState, id: InvitationId) -> String {
    format!(
        "{}/invitations/{id}",
        state.public_url.trim_end_matches('/')
    )
}

/// Invites a named prospect to a demo (the caller's own; operators may name any demo, and
/// `vendor_id` must then be its vendor's if given). A made invitation is the vendor's:
/// every vendor sees only its own.
pub async fn invite(
    state: &AppState,
    caller: Caller,
    request: &InvitationRequest,
) -> Result<Invitation, ApiError> {
    let scope = caller.vendor_scope()?;
    let terms = InvitationTerms::parse(request)?;
    let demo = caller.may_see_demo(state.store.demo(terms.demo_id).await?)?;
    if let Some(raw) = &request.vendor_id {
        let named = VendorId::parse(raw)
            .map_err(|_| ApiError::invalid("vendor_id", "is not a valid vendor id"))?;
        if scope.is_some() || named != demo.vendor_id {
            return Err(ApiError::invalid(
                "vendor_id",
                "must be the demo's vendor, and only operators name it",
            ));
        }
    }
    let invitation = Invitation::new(demo.vendor_id, terms, Timestamp::now());
    state.store.insert_invitation(&invitation).await?;
    metrics::counter!("testdrive_invitations_total").increment(1);
    Ok(invitation)
}

/// The invitation `id` if it opens a trial of `demo` now; refused in words otherwise (the
/// same "not an invitation" whether it does not exist or is for another demo).
pub async fn open_invitation(
    state: &AppState,
    id: InvitationId,
    demo: &Demo,
) -> Result<Invitation, ApiError> {
    let invitation = state
        .store
        .invitation(id)
        .await?
        .filter(|i| i.demo_id == demo.id)
        .ok_or_else(|| ApiError::invalid("invitation", "is not an invitation to this demo"))?;
    match invitation.state(Timestamp::now()) {
        InvitationState::Open => Ok(invitation),
        InvitationState::Expired => Err(ApiError::Conflict(format!(
            "this invitation expired at {}; ask for a new one",
            invitation.expires_at.to_rfc3339()
        ))),
        InvitationState::Used => Err(ApiError::Conflict(
            "this invitation has been used: its trial has started already".to_string(),
        )),
    }
}
