//! Who is calling. A bearer token resolves to one of three callers; the route decides what
//! each may do. Missing or unknown token: 401. A valid token that may not make this kind of
//! call: 403. Someone else's resource: 404, so existence does not leak.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};
use crate::domain::token::{Claim, TokenHash};
use crate::domain::{DemoId, EndReason, SandboxId, VendorId};
use crate::store::{Demo, Sandbox};

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
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
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
            .filter(|s| s.token_hash.matches(token))
            .map(|_| Caller::Sandbox(id)),
        Claim::Other => state.admin.0.matches(token).then_some(Caller::Admin),
    })
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

    /// The sandbox, if this caller may see it: operators, the demo's vendor, or the holder
    /// of this sandbox's own token.
    pub fn may_see_sandbox(self, sandbox: Option<Sandbox>) -> Result<Sandbox, ApiError> {
        sandbox
            .filter(|s| match self {
                Caller::Admin => true,
                Caller::Vendor(v) => s.vendor_id == v,
                Caller::Sandbox(id) => s.id == id,
            })
            .ok_or(ApiError::NotFound("no such sandbox"))
    }

    /// Whether the caller sees the prospect's information sheet.
    pub fn sees_prospect(self) -> bool {
        !matches!(self, Caller::Sandbox(_))
    }

    pub fn end_reason(self) -> EndReason {
        match self {
            Caller::Admin => EndReason::EndedByAdmin,
            Caller::Vendor(_) => EndReason::EndedByVendor,
            Caller::Sandbox(_) => EndReason::EndedByProspect,
        }
    }
}

/// Ids in paths: one that does not parse names nothing, so it is a 404 like an unknown one.
pub fn sandbox_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::parse(raw).map_err(|_| ApiError::NotFound("no such sandbox"))
}

pub fn demo_id(raw: &str) -> Result<DemoId, ApiError> {
    DemoId::parse(raw).map_err(|_| ApiError::NotFound("no such demo"))
}
