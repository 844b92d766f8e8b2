//! Persistence, one small trait per aggregate: vendors, demos, sandboxes, their history,
//! warm pools, the webhook outbox, and what vendors may use (registry credentials, given
//! images) (`Timetable` in `lifecycle::scheduler` is the model).
//! Everything above speaks in domain records (`crate::domain`); the SQL lives in `sql`, one
//! implementation for SQLite (the embedded default) and Postgres (several nodes sharing one
//! database). Every state change of a sandbox is one conditional statement, so two callers
//! (or two nodes) racing to end the same sandbox cannot both win. A store acts for one node
//! (`Store::node`): the rules of what it reads and records as that node's are in `sql`.
//!
//! `Store` is all of them together: the service holds one `Arc<dyn Store>` and hands out
//! the narrower trait where a part needs only one aggregate.

mod sql;

use async_trait::async_trait;

pub use sql::{Dialect, SqlStore};

use crate::domain::pool::{NewWarmMember, WarmMember, WarmState};
use crate::domain::token::TokenHash;
use crate::domain::webhook::{Attempt, Delivery, DeliveryRecord, NewDelivery};
use crate::domain::{
    Demo, DemoId, Ending, EventRecord, Funnel, ImageGrant, ImageStatus, Invitation, InvitationId,
    NewSandbox, Received, RegistryServer, Sandbox, SandboxEvent, SandboxId, SandboxStatus,
    ServiceEventRecord, StoredLogin, Timestamp, Usage, Vendor, VendorId,
};
use crate::domain::{Node, NodeLoad, NodeName};

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

/// Which sandboxes `sandboxes` lists, newest first. The default: all of them.
#[derive(Clone, Debug)]
pub struct SandboxFilter {
    pub vendor: Option<VendorId>,
    pub demo: Option<DemoId>,
    pub status: Option<SandboxStatus>,
    /// Live sandboxes, and ended ones only if they ended at or after this moment.
    pub ended_since: Option<Timestamp>,
    /// Newest first: only those older than this one (the last of the page before).
    pub before: Option<SandboxId>,
    /// At most this many.
    pub limit: u32,
}

impl Default for SandboxFilter {
    fn default() -> Self {
        SandboxFilter {
            vendor: None,
            demo: None,
            status: None,
            ended_since: None,
            before: None,
            limit: u32::MAX,
        }
    }
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

#[async_trait]
pub trait VendorStore: Send + Sync {
    /// `Conflict` when the name is taken.
    async fn insert_vendor(&self, vendor: &Vendor, key: TokenHash) -> Result<()>;
    async fn vendors(&self) -> Result<Vec<Vendor>>;
    async fn vendor(&self, id: VendorId) -> Result<Option<Vendor>>;
    async fn vendor_by_name(&self, name: &str) -> Result<Option<Vendor>>;
    async fn vendor_key(&self, id: VendorId) -> Result<Option<TokenHash>>;
    /// The vendor's webhook URL and secret (as stored: sealed), if it set one.
    async fn vendor_webhook(&self, vendor: VendorId) -> Result<Option<(String, String)>>;
    /// Sets the vendor's webhook URL (`None`: no webhook). A vendor without a secret gets
    /// `new_secret` (sealed by the caller); true if it did (the secret is then shown, once).
    async fn set_vendor_webhook(
        &self,
        vendor: VendorId,
        url: Option<&str>,
        new_secret: &str,
    ) -> Result<bool>;
    /// Every stored webhook secret, as stored.
    async fn webhook_secrets(&self) -> Result<Vec<(VendorId, String)>>;
    /// Replaces the vendor's stored secret `old` with `new` (the same secret, sealed), so
    /// that nothing of `old` is left in the database file; false if it was not `old` any
    /// more.
    async fn replace_webhook_secret(&self, vendor: VendorId, old: &str, new: &str) -> Result<bool>;
}

#[async_trait]
pub trait DemoStore: Send + Sync {
    /// `Conflict` when the vendor already has a demo with this slug.
    async fn insert_demo(&self, demo: &Demo) -> Result<()>;
    /// A demo that was not deleted.
    async fn demo(&self, id: DemoId) -> Result<Option<Demo>>;
    async fn demos(&self, vendor: Option<VendorId>) -> Result<Vec<Demo>>;
    /// Changes what the demo has: its spec and `enabled`, never its `image_status` (only
    /// `set_image_status` moves that, so an edit cannot undo what a check found).
    async fn update_demo(&self, demo: &Demo) -> Result<bool>;
    /// Moves the demo's image status from `from` to `to`; false if it was not `from` (or
    /// the demo is deleted), so of two callers seeing the same change only one records it.
    async fn set_image_status(
        &self,
        id: DemoId,
        from: ImageStatus,
        to: ImageStatus,
    ) -> Result<bool>;
    /// Marks the demo's image `pulling`; false if a pull of it is under way already (one at
    /// a time, whichever process asks).
    async fn start_pull(&self, id: DemoId) -> Result<bool>;
    /// Ends the pull under way: `ready` with the digest it resolved, or `failed` with why.
    /// False if the demo was not pulling (deleted meanwhile).
    async fn finish_pull(
        &self,
        id: DemoId,
        outcome: std::result::Result<&str, &str>,
    ) -> Result<bool>;
    async fn delete_demo(&self, id: DemoId, at: Timestamp) -> Result<bool>;
    /// Remembers an image a pull brought onto the Engine (pinned: `name@sha256:…`).
    async fn record_pulled_image(&self, reference: &str, at: Timestamp) -> Result<()>;
    /// Every image pulls brought, as recorded.
    async fn pulled_images(&self) -> Result<Vec<String>>;
    async fn forget_pulled_image(&self, reference: &str) -> Result<()>;
    /// Demos on offer (enabled, their image ready) with their vendor's name.
    async fn catalog(&self) -> Result<Vec<(Demo, String)>>;
}

#[async_trait]
pub trait SandboxStore: Send + Sync {
    /// Inserts the sandbox if `capacity` allows (else `Capacity`, saying which limit), with
    /// the lowest address slot no other sandbox or warm member holds.
    async fn insert_sandbox(&self, sandbox: &NewSandbox, capacity: Capacity) -> Result<()>;
    /// A sandbox recorded while its files arrive gets them (and its window): it shows in
    /// lists from now on. False if it is not receiving (it ended meanwhile).
    async fn receive(&self, id: SandboxId, received: &Received) -> Result<bool>;
    /// Deletes sandboxes whose files never all arrived (`id`, or every one): as if they
    /// never were. The ids deleted.
    async fn forget_unreceived(&self, id: Option<SandboxId>) -> Result<Vec<SandboxId>>;
    async fn sandbox(&self, id: SandboxId) -> Result<Option<Sandbox>>;
    /// Sandboxes whose files are all in (never one still receiving them).
    async fn sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<Sandbox>>;
    async fn ids_with_status(&self, status: SandboxStatus) -> Result<Vec<SandboxId>>;
    /// Live sandboxes: how many run (provisioning or ready) and how many sleep, overall and
    /// for one demo.
    async fn count_live_by_state(&self, demo: Option<DemoId>) -> Result<LiveCounts>;
    /// `provisioning` → `ready`; false if the sandbox was not provisioning any more.
    async fn mark_ready(&self, id: SandboxId, at: Timestamp, addr: &str) -> Result<bool>;
    /// Moves the deadline of a live sandbox; false if it is not live.
    async fn set_deadline(&self, id: SandboxId, expires_at: Timestamp) -> Result<bool>;
    /// Ends a live sandbox; false if it had ended already.
    async fn end(&self, id: SandboxId, at: Timestamp, ending: &Ending) -> Result<bool>;
    /// Ends every live sandbox whose deadline is at or before `now`, returning their ids.
    async fn end_due(&self, now: Timestamp) -> Result<Vec<SandboxId>>;
    async fn next_deadline(&self) -> Result<Option<Timestamp>>;
    /// Records that every object and copy of the data is gone; false if already recorded.
    async fn mark_data_deleted(&self, id: SandboxId, at: Timestamp) -> Result<bool>;
    /// Keeps what the demo's load command printed when it failed, for the prospect alone.
    async fn set_load_output(&self, id: SandboxId, output: &str) -> Result<()>;
    /// Erases what load commands printed for sandboxes whose trial window ended by `now`:
    /// the prospect's to read until then, nobody's after. The number erased.
    async fn forget_load_outputs(&self, now: Timestamp) -> Result<u64>;
    /// Ended sandboxes whose objects are not yet confirmed gone.
    async fn pending_teardowns(&self) -> Result<Vec<SandboxId>>;
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
    async fn add_usage(&self, batch: &[Usage]) -> Result<()>;
    /// Records the client a sandbox was made for (`http::client::ClientKey`, as text).
    async fn set_client_key(&self, id: SandboxId, client: &str) -> Result<()>;
    /// Live sandboxes (in any state) made for this client.
    async fn count_live_for_client(&self, client: &str) -> Result<u64>;
}

/// An event to append to a sandbox's history.
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    pub sandbox: SandboxId,
    pub at: Timestamp,
    pub event: &'a SandboxEvent,
    /// The webhook delivery announcing it, if vendors hear of it.
    pub announce: Option<&'a NewDelivery>,
}

/// A sandbox's history. Events are kept as their structured JSON beside their kind, and
/// read back as `SandboxEvent`s.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Appends an event and, when given and the vendor has a webhook, the delivery that
    /// announces it, in one transaction.
    async fn append_event(&self, new: NewEvent<'_>) -> Result<()>;
    /// Like `append_event`, unless the sandbox has `most` events of this kind already
    /// (checked in the same statement, so callers racing cannot pass it together); whether
    /// it was appended.
    async fn append_event_within(&self, new: NewEvent<'_>, most: u32) -> Result<bool>;
    /// The sandbox's events, oldest first.
    async fn history(&self, id: SandboxId) -> Result<Vec<EventRecord>>;
    /// The newest events of all sandboxes (of one vendor's demos), newest first.
    async fn recent_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(SandboxId, EventRecord)>>;
    /// Ended sandboxes whose history lacks the event of their end (the process stopped
    /// between recording the end and its event).
    async fn ends_without_event(&self) -> Result<Vec<SandboxId>>;
    /// Appends an event of the deployment (not of one sandbox).
    async fn append_service_event(&self, record: &ServiceEventRecord) -> Result<()>;
    /// The newest events of the deployment, newest first: all of them, or those one vendor
    /// sees (about its demos).
    async fn recent_service_events(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<ServiceEventRecord>>;
}

#[async_trait]
pub trait PoolStore: Send + Sync {
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
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
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
}

/// What a vendor may use: its registry credentials (passwords as sealed by the caller) and
/// the Engine-only images operators gave it.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Keeps the vendor's login to `login.server`, replacing any earlier one.
    async fn put_login(&self, vendor: VendorId, login: &StoredLogin) -> Result<()>;
    /// The vendor's logins, by server.
    async fn logins(&self, vendor: VendorId) -> Result<Vec<StoredLogin>>;
    async fn login(&self, vendor: VendorId, server: &RegistryServer)
    -> Result<Option<StoredLogin>>;
    /// Forgets the vendor's login to `server`; false if it had none.
    async fn delete_login(&self, vendor: VendorId, server: &RegistryServer) -> Result<bool>;
    /// Gives the image to the vendor unless it has it: the grant as kept (the first one's
    /// time), and whether it is new.
    async fn give_image(&self, grant: &ImageGrant) -> Result<(ImageGrant, bool)>;
    /// The images given to the vendor, by name.
    async fn images_given(&self, vendor: VendorId) -> Result<Vec<ImageGrant>>;
    async fn is_given(&self, vendor: VendorId, image: &str) -> Result<bool>;
}

/// The sales conversation's own records: invitations, and what the funnel counts.
/// (Answers live on the sandbox; feedback and contact requests in its history.)
#[async_trait]
pub trait ConversationStore: Send + Sync {
    async fn insert_invitation(&self, invitation: &Invitation) -> Result<()>;
    async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>>;
    /// Invitations (from one vendor), newest first.
    async fn invitations(&self, vendor: Option<VendorId>, limit: u32) -> Result<Vec<Invitation>>;
    /// Notes the first time the invitation's link was opened.
    async fn invitation_opened(&self, id: InvitationId, at: Timestamp) -> Result<()>;
    /// Counts one view of the demo's page.
    async fn page_viewed(&self, demo: DemoId, at: Timestamp) -> Result<()>;
    /// The demo's funnel: page views since `since`, and how far the trials started since
    /// then got.
    async fn funnel(&self, demo: DemoId, since: Timestamp) -> Result<Funnel>;
    /// The newest feedback and contact requests on the vendor's (every) trials, newest
    /// first: the sandbox, its demo and information sheet, and the event.
    async fn conversations(
        &self,
        vendor: Option<VendorId>,
        limit: u32,
    ) -> Result<Vec<(Sandbox, EventRecord)>>;
}

/// The nodes of the deployment, and who keeps a lost node's deadlines.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Records this node (`node.name` is the store's own node) as it starts, replacing what
    /// an earlier start of it recorded.
    async fn register_node(&self, node: &Node) -> Result<()>;
    /// This node is alive at `at`.
    async fn heartbeat(&self, at: Timestamp) -> Result<()>;
    /// Every node ever registered, by name, with its live sandboxes.
    async fn nodes(&self) -> Result<Vec<NodeLoad>>;
    async fn node_record(&self, name: &NodeName) -> Result<Option<Node>>;
    /// Where a trial of `demo` goes: of the nodes heard from since `up_since` that have the
    /// demo's image (`image_here`), the one with the most free places (its `max_sandboxes`
    /// less its live sandboxes), ties by name. `None` when none has a free place.
    async fn place(&self, demo: DemoId, up_since: Timestamp) -> Result<Option<NodeName>>;
    /// This node's Engine has (`true`) or lacks the demo's image.
    async fn image_here(&self, demo: DemoId, ready: bool) -> Result<()>;
    /// Takes (or renews) the care of a down node's deadlines for this node until `until`;
    /// false if another node holds it past `now`. One caretaker at a time.
    async fn take_care(&self, down: &NodeName, now: Timestamp, until: Timestamp) -> Result<bool>;
}

/// The whole database.
#[async_trait]
pub trait Store:
    VendorStore
    + DemoStore
    + ConversationStore
    + SandboxStore
    + HistoryStore
    + PoolStore
    + OutboxStore
    + AccessStore
    + NodeStore
    + 'static
{
    /// The node this view of the database acts for: what it records is this node's, and what
    /// a node does alone (its deadlines, idle sandboxes, teardowns, warm pool, addresses,
    /// wakes, capacity) it reads of this node only.
    fn node(&self) -> &NodeName;
    /// The same database, acting for another node (to keep a lost node's deadlines).
    fn for_node(&self, node: &NodeName) -> std::sync::Arc<dyn Store>;
    async fn ping(&self) -> Result<()>;
    /// This deployment's id, made once: it labels every Engine object so that several
    /// deployments (or test runs) can share one Engine without touching each other's objects.
    async fn instance_id(&self) -> Result<String>;
    /// A setting this deployment fixed once (`key`): the stored value, storing `value` first
    /// if there was none. Several processes on one database agree on the first one stored.
    async fn fix_setting(&self, key: &str, value: &str) -> Result<String>;
    /// A setting fixed before, if any.
    async fn setting(&self, key: &str) -> Result<Option<String>>;
}
