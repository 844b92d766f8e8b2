//! Persistence behind one small trait. Handlers and the lifecycle speak in domain records;
//! the SQL lives in the implementations (SQLite now, Postgres can follow with the same
//! migrations and the same trait). Every state change of a sandbox is one conditional
//! statement, so two callers racing to end the same sandbox cannot both win.

mod sqlite;

use async_trait::async_trait;

pub use sqlite::SqliteStore;

use crate::domain::profile::ProfiledFile;
use crate::domain::token::TokenHash;
use crate::domain::{
    DemoId, DemoSpec, EndReason, FileRecord, Prospect, SandboxId, SandboxStatus, Timestamp,
    VendorId, VendorName,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("no place for a new sandbox: {0}")]
    Capacity(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("the database holds a record it cannot read: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug, PartialEq)]
pub struct Vendor {
    pub id: VendorId,
    pub name: VendorName,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub id: DemoId,
    pub vendor_id: VendorId,
    pub spec: DemoSpec,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a sandbox is at creation, before anything ran.
#[derive(Clone, Debug)]
pub struct NewSandbox {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub vendor_id: VendorId,
    pub token_hash: TokenHash,
    pub spec: DemoSpec,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub files: Vec<FileRecord>,
    pub profiles: Vec<ProfiledFile>,
    pub prospect: Prospect,
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub vendor_id: VendorId,
    pub token_hash: TokenHash,
    pub status: SandboxStatus,
    pub spec: DemoSpec,
    pub created_at: Timestamp,
    pub ready_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<EndReason>,
    pub data_deleted_at: Option<Timestamp>,
    /// Which address of the sandbox network is this sandbox's: reserved at creation and
    /// held until `data_deleted_at`, so no other sandbox can get it meanwhile.
    pub addr_slot: Option<u32>,
    /// `ip:port` of the demo inside the sandbox network, once ready.
    pub container_addr: Option<String>,
    pub files: Vec<FileRecord>,
    pub prospect: Prospect,
    pub requests: u64,
    pub last_active_at: Option<Timestamp>,
    /// What each file looks like (for the vendor's report; never values).
    pub profiles: Vec<ProfiledFile>,
    /// Time spent using the demo: spans between requests less than 5 minutes apart.
    pub active_ms: u64,
    /// The first request through the proxy.
    pub first_opened_at: Option<Timestamp>,
}

/// A warm pool member about to be made.
#[derive(Clone, Debug)]
pub struct NewWarmMember {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub spec: DemoSpec,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmState {
    /// Its container is being made and started.
    Warming,
    /// Started and answering: may be claimed.
    Warm,
    /// Being removed.
    Draining,
}

impl WarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmState::Warming => "warming",
            WarmState::Warm => "warm",
            WarmState::Draining => "draining",
        }
    }

    pub fn parse(raw: &str) -> Option<WarmState> {
        Some(match raw {
            "warming" => WarmState::Warming,
            "warm" => WarmState::Warm,
            "draining" => WarmState::Draining,
            _ => return None,
        })
    }
}

/// A container of a demo started with no data and no owner, waiting for a prospect.
#[derive(Clone, Debug)]
pub struct WarmMember {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub spec: DemoSpec,
    pub state: WarmState,
    pub addr_slot: u32,
    pub created_at: Timestamp,
}

/// A webhook delivery to write with the event it announces.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// Also the body's `id`: receivers deduplicate on it.
    pub id: String,
    pub vendor_id: VendorId,
    pub kind: String,
    /// The exact JSON sent (and signed) on every attempt.
    pub body: String,
}

/// A delivery a sender has claimed, with where it goes now.
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
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
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

#[cfg(test)]
impl Sandbox {
    /// A live sandbox of a minimal demo, for unit tests of logic over records.
    pub fn example() -> Sandbox {
        let manifest: crate::domain::DemoManifest = serde_json::from_value(serde_json::json!({
            "slug": "example", "title": "Example", "image": "img:1", "port": 80,
            "data_path": "/data"
        }))
        .expect("a valid manifest");
        let created_at = Timestamp::from_millis(1_000);
        Sandbox {
            id: SandboxId::new(),
            demo_id: DemoId::new(),
            vendor_id: VendorId::new(),
            token_hash: TokenHash::of("tds_example"),
            status: SandboxStatus::Ready,
            spec: DemoSpec::parse(manifest, &crate::domain::manifest::Policy::default())
                .expect("a valid spec"),
            created_at,
            ready_at: Some(created_at),
            expires_at: created_at.plus_seconds(900),
            ended_at: None,
            end_reason: None,
            data_deleted_at: None,
            addr_slot: Some(1),
            container_addr: None,
            files: Vec::new(),
            prospect: Prospect::default(),
            requests: 0,
            last_active_at: None,
            profiles: Vec::new(),
            active_ms: 0,
            first_opened_at: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub at: Timestamp,
    pub kind: String,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SandboxFilter {
    pub vendor: Option<VendorId>,
    pub demo: Option<DemoId>,
    pub status: Option<SandboxStatus>,
    /// Live sandboxes, and ended ones only if they ended at or after this moment.
    pub ended_since: Option<Timestamp>,
}

/// What `reserve_wake` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Reserved,
    /// Not asleep (or already being woken).
    NotSleeping,
    /// Every running place is taken.
    NoRoom,
}

/// Live sandboxes by what they cost: running (provisioning, ready, or being woken) or asleep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    pub running: u64,
    pub sleeping: u64,
}

impl LiveCounts {
    pub fn total(&self) -> u64 {
        self.running + self.sleeping
    }
}

/// The places a new sandbox needs: checked in the same statement that records it.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Sandboxes provisioning or ready, all demos together.
    pub running: u32,
    /// Sandboxes live in any state (running or sleeping), all demos together.
    pub live: u32,
    /// Live sandboxes of this sandbox's demo, when the demo sets a cap.
    pub per_demo: Option<u32>,
}

/// Proxy activity gathered in memory and written in batches.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub sandbox: SandboxId,
    pub requests: u64,
    /// The first and last request of the batch.
    pub first_active_at: Timestamp,
    pub last_active_at: Timestamp,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;
    /// This deployment's id, made once: it labels every Engine object so that several
    /// deployments (or test runs) can share one Engine without touching each other's objects.
    async fn instance_id(&self) -> Result<String>;

    /// `Conflict` when the name is taken.
    async fn insert_vendor(&self, vendor: &Vendor, key: TokenHash) -> Result<()>;
    async fn vendors(&self) -> Result<Vec<Vendor>>;
    async fn vendor(&self, id: VendorId) -> Result<Option<Vendor>>;
    async fn vendor_by_name(&self, name: &str) -> Result<Option<Vendor>>;
    async fn vendor_key(&self, id: VendorId) -> Result<Option<TokenHash>>;

    /// `Conflict` when the vendor already has a demo with this slug.
    async fn insert_demo(&self, demo: &Demo) -> Result<()>;
    /// A demo that was not deleted.
    async fn demo(&self, id: DemoId) -> Result<Option<Demo>>;
    async fn demos(&self, vendor: Option<VendorId>) -> Result<Vec<Demo>>;
    async fn update_demo(&self, demo: &Demo) -> Result<bool>;
    async fn delete_demo(&self, id: DemoId, at: Timestamp) -> Result<bool>;
    /// Enabled demos with their vendor's name.
    async fn catalog(&self) -> Result<Vec<(Demo, String)>>;

    /// Inserts the sandbox if `capacity` allows (else `Capacity`, saying which limit), with
    /// the lowest address slot no other sandbox holds.
    async fn insert_sandbox(&self, sandbox: &NewSandbox, capacity: Capacity) -> Result<()>;
    async fn sandbox(&self, id: SandboxId) -> Result<Option<Sandbox>>;
    async fn sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>>;
    /// `provisioning` → `ready`; false if the sandbox was not provisioning any more.
    async fn mark_ready(&self, id: SandboxId, at: Timestamp, addr: &str) -> Result<bool>;
    /// Moves the deadline of a live sandbox; false if it is not live.
    async fn set_deadline(&self, id: SandboxId, expires_at: Timestamp) -> Result<bool>;
    /// Ends a live sandbox; false if it had ended already.
    async fn end(&self, id: SandboxId, at: Timestamp, reason: EndReason) -> Result<bool>;
    /// Ends every live sandbox whose deadline is at or before `now`, returning their ids.
    async fn end_due(&self, now: Timestamp) -> Result<Vec<SandboxId>>;
    async fn next_deadline(&self) -> Result<Option<Timestamp>>;
    /// `ready` → `sleeping` for every sandbox idle (no proxy activity since it was ready or
    /// last used) for its demo's `idle_seconds` at `now`, returning their ids.
    async fn sleep_due(&self, now: Timestamp) -> Result<Vec<SandboxId>>;
    /// When the next ready sandbox falls idle, as things stand.
    async fn next_idle(&self) -> Result<Option<Timestamp>>;
    /// `ready` → `sleeping` for one sandbox (its container stopped by itself); false if it
    /// was not ready.
    async fn mark_asleep(&self, id: SandboxId) -> Result<bool>;
    /// Takes a running place for waking a sleeping sandbox, if fewer than `max_running`
    /// sandboxes run (a sandbox being woken counts as running).
    async fn reserve_wake(&self, id: SandboxId, at: Timestamp, max_running: u32) -> Result<Wake>;
    /// Gives the place back: the sandbox stays asleep (the Engine could not be reached).
    async fn release_wake(&self, id: SandboxId) -> Result<()>;
    /// Forgets every wake in progress (none is, at start).
    async fn release_all_wakes(&self) -> Result<()>;
    /// `sleeping` → `ready`, counting the wake as activity; false if it was not sleeping.
    async fn mark_awake(&self, id: SandboxId, at: Timestamp) -> Result<bool>;
    /// Live sandboxes: how many run (provisioning or ready) and how many sleep, overall and
    /// for one demo.
    async fn count_live_by_state(&self, demo: Option<DemoId>) -> Result<LiveCounts>;
    /// Records that every object and copy of the data is gone; false if already recorded.
    async fn mark_data_deleted(&self, id: SandboxId, at: Timestamp) -> Result<bool>;
    /// Ended sandboxes whose objects are not yet confirmed gone.
    async fn pending_teardowns(&self) -> Result<Vec<SandboxId>>;
    async fn ids_with_status(&self, status: SandboxStatus) -> Result<Vec<SandboxId>>;
    /// Ended sandboxes whose history lacks the event of their end (the process stopped
    /// between recording the end and its event).
    async fn ends_without_event(&self) -> Result<Vec<SandboxId>>;

    async fn add_event(
        &self,
        id: SandboxId,
        at: Timestamp,
        kind: &str,
        detail: Option<&str>,
    ) -> Result<()>;
    async fn events(&self, id: SandboxId) -> Result<Vec<Event>>;
    /// The vendor's webhook URL and secret, if it set one.
    async fn vendor_webhook(&self, vendor: VendorId) -> Result<Option<(String, String)>>;
    /// Sets the vendor's webhook URL (`None`: no webhook). A vendor without a secret gets
    /// `new_secret`; true if it did (the secret is then shown, once).
    async fn set_vendor_webhook(
        &self,
        vendor: VendorId,
        url: Option<&str>,
        new_secret: &str,
    ) -> Result<bool>;
    /// Records an event and, when the sandbox's vendor has a webhook, the delivery that
    /// announces it, in one transaction.
    async fn add_event_with_delivery(
        &self,
        id: SandboxId,
        at: Timestamp,
        kind: &str,
        detail: Option<&str>,
        delivery: &NewDelivery,
    ) -> Result<()>;
    /// Leases up to `limit` due deliveries until `lease_until`: only the oldest undelivered
    /// one of each sandbox, so each sandbox's are delivered in order.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn record_attempt(&self, seq: i64, attempt: &Attempt) -> Result<()>;
    /// At start: deliveries leased by the previous run (which may have died mid-request)
    /// may go again at once.
    async fn release_delivery_leases(&self) -> Result<()>;
    /// When the next pending delivery is due (its retry time or the end of its lease).
    async fn next_delivery_at(&self) -> Result<Option<Timestamp>>;
    /// The vendor's newest deliveries, newest first.
    async fn deliveries(&self, vendor: VendorId, limit: u32) -> Result<Vec<DeliveryRecord>>;
    /// A new warm pool member (`warming`) with the lowest free address slot.
    async fn insert_warm(&self, member: &NewWarmMember) -> Result<()>;
    /// Warm pool members (of one demo), oldest first.
    async fn warm_members(&self, demo: Option<DemoId>) -> Result<Vec<WarmMember>>;
    async fn warm_member(&self, id: SandboxId) -> Result<Option<WarmMember>>;
    /// Moves a member to `to` if it is in one of `from`; true if it did.
    async fn set_warm_state(
        &self,
        id: SandboxId,
        from: &[WarmState],
        to: WarmState,
    ) -> Result<bool>;
    /// Forgets a member (once its objects are gone); its address slot is free again.
    async fn forget_warm(&self, id: SandboxId) -> Result<()>;
    /// Turns the warm member `sandbox.id` (of this demo and spec) into this new sandbox, at
    /// its address slot, in one transaction; false if it is no longer there to claim.
    /// `Capacity` if the prospects' limits (live, per demo) leave no place.
    async fn claim_warm(&self, sandbox: &NewSandbox, capacity: Capacity) -> Result<bool>;
    /// The newest events of all sandboxes (of one vendor's demos), newest first.
    async fn recent_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(SandboxId, Event)>>;
    async fn add_usage(&self, batch: &[Usage]) -> Result<()>;
}
