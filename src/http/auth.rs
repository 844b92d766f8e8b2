//! Who is calling, and what they may see. A bearer token (or a browser's cookie holding
//! one) resolves to one of three callers; the route decides what each may do. Missing or
//! unknown token: 401. A valid token that may not make this kind of call: 403. Someone
//! else's resource: 404, so existence does not leak.
//!
//! One door to a sandbox, for the API, the pages, the consoles and the proxy alike:
//! `Caller::sees` is the rule, `sandbox` applies it to an id from a path.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

use super::{ApiError, AppState};
use crate::domain::token::{Claim, TokenHash};
use crate::domain::{Demo, DemoId, Ending, Sandbox, SandboxId, VendorId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Vendor(VendorId),
    Sandbox(SandboxId),
}

/// The operators' token, kept as a hash like every other.
#[derive(Clone, Copy)]
pub struct AdminToken(pub TokenHash);

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_of(headers.get(header::AUTHORIZATION)?)
}

/// The token of one `Authorization` value, if it is `Bearer <token>`.
pub fn bearer_of(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks a presented token against the stored hash of what it claims to be.
pub async fn resolve(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    Ok(match Claim::of(token) {
        Claim::Vendor(id) => state
            .store
            .vendor_key(id)
            .await?
            .filter(|hash| hash.matches(token))
            .map(|_| Caller::Vendor(id)),
        Claim::Sandbox(id) => state
            .store
            .sandbox(id)
            .await?
            .filter(|s| opens(s, token))
            .map(|_| Caller::Sandbox(id)),
        Claim::Other => state.admin.0.matches(token).then_some(Caller::Admin),
    })
}

/// Whether `token` is the sandbox's own token.
pub fn opens(sandbox: &Sandbox, token: &str) -> bool {
    sandbox.token_hash.matches(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        resolve(state, token).await?.ok_or(ApiError::Unauthorized)
    }
}

impl Caller {
    pub fn require_admin(self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// For routes over demos and their sandboxes: the vendor whose things the caller sees
    /// (`None`: all of them, for operators). Sandbox tokens may not make such calls.
    pub fn vendor_scope(self) -> Result<Option<VendorId>, ApiError> {
        match self {
            Caller::Admin => Ok(None),
            Caller::Vendor(id) => Ok(Some(id)),
            Caller::Sandbox(_) => Err(ApiError::Forbidden),
        }
    }

    /// The demo, if this caller may see it.
    pub fn may_see_demo(self, demo: Option<Demo>) -> Result<Demo, ApiError> {
        let scope = self.vendor_scope()?;
        demo.filter(|d| scope.is_none_or(|v| v == d.vendor_id))
            .ok_or(ApiError::NotFound("no such demo"))
    }

    /// Who may see a sandbox: operators, the demo's vendor, or the holder of this
    /// sandbox's own token.
    pub fn sees(self, sandbox: &Sandbox) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Vendor(v) => sandbox.vendor_id == v,
            Caller::Sandbox(id) => sandbox.id == id,
        }
    }

    /// Only the prospect (the sandbox token) speaks for the prospect.
    pub fn require_prospect(self) -> Result<(), ApiError> {
        match self {
            Caller::Sandbox(_) => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// Whether the caller sees the prospect's information sheet.
    pub fn sees_prospect(self) -> bool {
        !matches!(self, Caller::Sandbox(_))
    }

    /// Why a sandbox ends when this caller ends it.
    pub fn ending(self) -> Ending {
        match self {
            Caller::Admin => Ending::EndedByAdmin,
            Caller::Vendor(_) => Ending::EndedByVendor,
            Caller::Sandbox(_) => Ending::EndedByProspect,
        }
    }
}

/// The door: the sandbox `raw` names, if `caller` sees it; otherwise "no such sandbox",
/// the same answer as for an id that names nothing.
pub async fn sandbox(state: &AppState, caller: Caller, raw: &str) -> Result<Sandbox, ApiError> {
    state
        .store
        .sandbox(sandbox_id(raw)?)
        .await?
        .filter(|s| caller.sees(s))
        .ok_or(ApiError::NotFound("no such sandbox"))
}

/// The door for a browser, whose cookies may hold tokens: the sandbox `id` names and the
/// token that opens it (the sandbox's own token, nothing else), if one does. One read,
/// however many cookies came.
pub async fn sandbox_opened_by<'t>(
    state: &AppState,
    id: SandboxId,
    tokens: impl IntoIterator<Item = &'t str>,
) -> Result<Option<(Sandbox, &'t str)>, ApiError> {
    let Some(sandbox) = state.store.sandbox(id).await? else {
        return Ok(None);
    };
    let token = tokens.into_iter().find(|t| opens(&sandbox, t));
    Ok(token.map(|t| (sandbox, t)))
}

/// A sandbox route's caller (bearer token) and the sandbox its `{id}` names, through the
/// door.
pub struct SeenSandbox {
    pub caller: Caller,
    pub sandbox: Sandbox,
}

impl FromRequestParts<AppState> for SeenSandbox {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such sandbox"))?;
        let sandbox = sandbox(state, caller, &id).await?;
        Ok(SeenSandbox { caller, sandbox })
    }
}

/// Ids in paths: one that does not parse names nothing, so it is a 404 like an unknown one.
pub fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::parse(raw).map_err(|_| ApiError::NotFound("no such sandbox"))
}

pub fn demo_id(raw: &str) -> Result<DemoId, ApiError> {
    DemoId::parse(raw).map_err(|_| ApiError::NotFound("no such demo"))
}
