//! The one HTTP error type. Every layer's error converts into it here, once, and every error
//! leaves as `application/problem+json` (RFC 9457): `{"type","title","status","detail"}`,
//! plus `field` when a specific input broke a rule.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Invalid;
use crate::engine::EngineError;
use crate::lifecycle::LifecycleError;
use crate::registry::RegistryError;
use crate::spool::SpoolError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this token may not do that")]
    Forbidden,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedType(String),
    #[error("{0}")]
    Invalid(Invalid),
    #[error("{detail}")]
    TooMany { detail: String, retry_after: u32 },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: u32 },
    /// An upload this deployment can never hold (it would not fit even an empty spool).
    #[error("{0}")]
    InsufficientStorage(String),
    /// The spool's disk has no room for this upload now. How much it has is for the
    /// operators (`ServiceEvent::DiskFull`), not for the client.
    #[error(
        "the server has no room for this upload right now; try again later or with smaller files"
    )]
    NoRoom { free_bytes: u64 },
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Internal(String),
}

/// The problem document.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ApiError::Invalid(Invalid::new(field, reason))
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "malformed-request"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Gone(_) => (StatusCode::GONE, "gone"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            UnsupportedType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-type"),
            Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            TooMany { .. } => (StatusCode::TOO_MANY_REQUESTS, "capacity"),
            Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            InsufficientStorage(_) | NoRoom { .. } => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage")
            }
            BadGateway(_) => (StatusCode::BAD_GATEWAY, "demo-not-answering"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.parts();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        }
        let (detail, field) = match &self {
            ApiError::Invalid(invalid) => (invalid.to_string(), Some(invalid.field.clone())),
            other => (other.to_string(), None),
        };
        let problem = Problem {
            kind: format!("urn:testdrive:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooMany { retry_after, .. } | ApiError::Unavailable { retry_after, .. } =
            &self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let ApiError::NoRoom { .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(NO_ROOM_RETRY_AFTER));
        }
        // RFC 9110 §15.5.2: a 401 carries the challenge the server accepts.
        if let ApiError::Unauthorized = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Seconds a client refused for want of disk is told to wait: uploads in progress leave
/// the spool within moments of their sandbox starting, but a disk others filled waits for
/// an operator.
const NO_ROOM_RETRY_AFTER: u32 = 60;

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Capacity(why) => capacity(why),
            StoreError::Unavailable(_) => ApiError::Unavailable {
                detail: err.to_string(),
                retry_after: 5,
            },
            StoreError::Corrupt(_) => ApiError::Internal(err.to_string()),
        }
    }
}

fn capacity(why: String) -> ApiError {
    ApiError::TooMany {
        detail: format!("no place for a new sandbox ({why}); try again shortly"),
        retry_after: 30,
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        ApiError::Unavailable {
            detail: err.to_string(),
            retry_after: 10,
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::NotFound => ApiError::NotFound("no such sandbox"),
            LifecycleError::Ended | LifecycleError::Enough(_) => {
                ApiError::Conflict(err.to_string())
            }
            LifecycleError::TooLong { .. } => ApiError::invalid("seconds", err.to_string()),
            LifecycleError::Capacity(why) => capacity(why),
            LifecycleError::WakeFailed(_) => ApiError::BadGateway(err.to_string()),
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Engine(e) => e.into(),
            LifecycleError::Spool(_) | LifecycleError::Disk(_) | LifecycleError::Place(_) => {
                ApiError::Internal(err.to_string())
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid(invalid) => invalid.into(),
            RegistryError::ImageMissing(_) | RegistryError::NotYourImage(_) => {
                ApiError::invalid("image", err.to_string())
            }
            RegistryError::NoSuchVendor => ApiError::NotFound("no such vendor"),
            RegistryError::Sealed { .. } => ApiError::Internal(err.to_string()),
            RegistryError::Store(e) => e.into(),
            RegistryError::Engine(e) => e.into(),
        }
    }
}

impl From<SpoolError> for ApiError {
    fn from(err: SpoolError) -> Self {
        match err {
            SpoolError::TooLarge { .. }
            | SpoolError::TooManyFiles { .. }
            | SpoolError::RequestTooLarge(_) => ApiError::TooLarge(err.to_string()),
            SpoolError::Unsupported { .. } => ApiError::UnsupportedType(err.to_string()),
            SpoolError::Duplicate(_) | SpoolError::Empty(_) => {
                ApiError::invalid("file", err.to_string())
            }
            SpoolError::Body(_) => ApiError::BadRequest(err.to_string()),
            // Waiting would not help: the demo's limit is over the whole budget.
            SpoolError::Full { wanted, budget, .. } if wanted > budget => {
                ApiError::InsufficientStorage(err.to_string())
            }
            SpoolError::DiskFull { free } => ApiError::NoRoom { free_bytes: free },
            // The spool's budget cannot hold the upload now.
            SpoolError::Full { .. } => ApiError::Unavailable {
                detail: err.to_string(),
                retry_after: 30,
            },
            // The OS's words are for the operators' log, not the client.
            SpoolError::Io(e) => {
                tracing::error!(error = %e, "the upload spool cannot be written");
                ApiError::Unavailable {
                    detail: "the server cannot store uploads right now; try again later"
                        .to_string(),
                    retry_after: 30,
                }
            }
        }
    }
}
