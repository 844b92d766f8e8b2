//! Webhook deliveries: the outbox's records. A delivery is written with the event it
//! announces and sent, signed, until the vendor's endpoint takes it or a day has passed.

use serde::Serialize;

use super::{SandboxId, Timestamp, VendorId};

/// A delivery to write with the event it announces.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// Also the body's `id`: receivers deduplicate on it.
    pub id: String,
    pub vendor_id: VendorId,
    /// `sandbox.created`, `sandbox.ended`, …
    pub kind: String,
    /// The exact JSON sent (and signed) on every attempt.
    pub body: String,
}

/// A delivery a sender has claimed.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: i64,
    pub id: String,
    pub vendor_id: VendorId,
    pub sandbox_id: SandboxId,
    pub kind: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: Timestamp,
}

/// What became of one attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: AttemptOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(Timestamp),
    Abandoned,
}

/// A delivery as the vendor sees it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = String, format = Uuid)]
    pub sandbox_id: SandboxId,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub attempts: u32,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub abandoned_at: Option<Timestamp>,
}
