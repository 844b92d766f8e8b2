//! The life of a sandbox, from the prospect's upload to the deletion of every copy of their
//! data. `Lifecycle` is the one place that changes a sandbox's state: it starts provisioning,
//! extends, puts to sleep, wakes and ends sandboxes, and runs the background work that keeps
//! the Engine in line with the database — the schedulers (deadlines, idle moments), the
//! reconciler, the Engine health watch and the activity flusher.
//!
//! Ending is always the same two steps: first the database records the end (one conditional
//! update, so only one caller wins), then `teardown` removes the Engine objects and the spool
//! and records `data_deleted_at`. Teardown is idempotent; if it cannot finish (the Engine is
//! down), the reconciler finishes it later from the database.

mod activity;
mod clock;
mod disk;
mod health;
mod pool;
mod probe;
mod provision;
mod receipt;
mod reconcile;
mod report;
mod scheduler;
mod sleep;
mod usage;
mod webhooks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use activity::Activity;
pub use clock::{Clock, SystemClock, TokioClock};
pub use receipt::{FileReceipt, PublicReceiptKey, Receipt, ReceiptKey, SignedReceipt};
pub use report::TrialReport;
pub use scheduler::{Scheduler, Timetable, TrialDeadlines};
pub use usage::ResourceUse;
pub use webhooks::WebhookSettings;

use crate::domain::token::IssuedToken;
use crate::domain::{
    DemoId, EndReason, Prospect, SandboxId, SandboxStatus, Timestamp, TrialWindow, VendorId,
    WebhookUrl,
};
use crate::engine::{Engine, EngineError, container_name};
use crate::spool::Spool;
use crate::store::{Capacity, Demo, NewSandbox, Sandbox, Store, StoreError, WarmState};
use provision::Origin;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such sandbox")]
    NotFound,
    #[error("the sandbox has ended")]
    Ended,
    #[error("the sandbox has not ended yet, or its data is still being deleted")]
    NotEnded,
    #[error("a trial of this demo can last at most {max_seconds} seconds from its start")]
    TooLong { max_seconds: u32 },
    #[error("no place for a sandbox: {0}")]
    Capacity(String),
    #[error("the sandbox did not wake: {0}")]
    WakeFailed(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the spool cannot be cleared: {0}")]
    Spool(#[from] std::io::Error),
    #[error("cannot measure a sandbox's disk use: {0}")]
    Disk(std::io::Error),
}

impl From<StoreError> for LifecycleError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Capacity(why) => LifecycleError::Capacity(why),
            other => LifecycleError::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, LifecycleError>;

/// Why a webhook URL was not set.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefused {
    #[error("{0}")]
    Destination(String),
    #[error(transparent)]
    Store(StoreError),
}

#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Sandboxes running (provisioning or ready) at once, all demos together.
    pub max_running: u32,
    /// Sleeping sandboxes at once, besides the running ones.
    pub max_sleeping: u32,
    pub spool_root: PathBuf,
    /// How often the reconciler compares the database with the Engine.
    pub reconcile_every: Duration,
    /// How often proxy activity is written to the database.
    pub flush_every: Duration,
    /// How often sandboxes' volumes are measured against their disk limit (`None`: never).
    pub disk_check_every: Option<Duration>,
    pub webhooks: WebhookSettings,
}

/// Where a provisioning stands, as seen by whoever waits for it (`?wait=`, a teardown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Provisioning,
    Ready,
    Failed,
    /// Stopped because the sandbox was ended while provisioning.
    Stopped,
}

struct InFlight {
    cancel: CancellationToken,
    phase: watch::Receiver<Phase>,
}

/// A sandbox's turn (see `Lifecycle::turn`).
struct Turn {
    lifecycle: Lifecycle,
    id: SandboxId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.lifecycle.inner.turns.lock().expect("turns lock");
        if let Some(guard) = self.guard.take() {
            // Only the table and this guard hold the lock: nobody waits, forget it.
            let idle = Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&guard)) == 2;
            drop(guard);
            if idle {
                turns.remove(&self.id);
            }
        }
    }
}

/// A new sandbox as handed back to the prospect: the token exists only here.
pub struct Created {
    pub sandbox: Sandbox,
    pub token: IssuedToken,
    pub progress: watch::Receiver<Phase>,
}

#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    engine: Engine,
    clock: Arc<dyn Clock>,
    settings: LifecycleSettings,
    inflight: Mutex<HashMap<SandboxId, InFlight>>,
    /// One Engine operation at a time per sandbox (teardown, sleep, wake): the scheduler, a
    /// `DELETE`, the reconciler and the proxy may all reach for the same sandbox.
    turns: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the reconciler early (the Engine came back).
    reconcile_now: Notify,
    deadlines: Arc<Notify>,
    /// Wakes the idle scheduler when a sandbox becomes ready or wakes (a new idle moment).
    idle_moments: Arc<Notify>,
    activity: Activity,
    /// The latest memory and CPU readings, for the dashboard.
    readings: tokio::sync::Mutex<usage::Readings>,
    /// Wakes the warm pools' keeper (a demo changed, a member was claimed).
    pool_changed: Notify,
    /// Wakes the webhook sender (a delivery was written).
    deliveries: Notify,
    /// When each demo's last warm pool member failed to come up.
    warm_failures: Mutex<HashMap<DemoId, Instant>>,
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Engine,
        clock: Arc<dyn Clock>,
        settings: LifecycleSettings,
    ) -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                store,
                engine,
                clock,
                settings,
                inflight: Mutex::new(HashMap::new()),
                turns: Mutex::new(HashMap::new()),
                reconcile_now: Notify::new(),
                deadlines: Arc::new(Notify::new()),
                idle_moments: Arc::new(Notify::new()),
                activity: Activity::default(),
                readings: tokio::sync::Mutex::default(),
                pool_changed: Notify::new(),
                deliveries: Notify::new(),
                warm_failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn activity(&self) -> &Activity {
        &self.inner.activity
    }

    pub fn settings(&self) -> &LifecycleSettings {
        &self.inner.settings
    }

    /// The places a new sandbox of `demo` may take.
    pub fn capacity(&self, demo: &Demo) -> Capacity {
        let settings = &self.inner.settings;
        Capacity {
            running: settings.max_running,
            live: settings.max_running.saturating_add(settings.max_sleeping),
            per_demo: demo.spec.max_sandboxes,
        }
    }

    /// Refuses early (before an upload is read) when there is no place for a sandbox of
    /// `demo` (any demo: `None`). The insert checks again, atomically.
    pub async fn check_room(&self, demo: Option<&Demo>) -> Result<()> {
        let settings = &self.inner.settings;
        let all = self.inner.store.count_live_by_state(None).await?;
        if all.running >= u64::from(settings.max_running) {
            return Err(LifecycleError::Capacity(format!(
                "all {} running places are taken",
                settings.max_running
            )));
        }
        if all.total() >= u64::from(settings.max_running) + u64::from(settings.max_sleeping) {
            return Err(LifecycleError::Capacity(
                "the most sandboxes there may be are live (running or asleep)".to_string(),
            ));
        }
        if let Some(demo) = demo
            && let Some(cap) = demo.spec.max_sandboxes
            && self
                .inner
                .store
                .count_live_by_state(Some(demo.id))
                .await?
                .total()
                >= u64::from(cap)
        {
            return Err(LifecycleError::Capacity(format!(
                "this demo allows {cap} sandboxes at once"
            )));
        }
        Ok(())
    }

    async fn record(&self, id: SandboxId) -> Result<Sandbox> {
        self.inner
            .store
            .sandbox(id)
            .await?
            .ok_or(LifecycleError::NotFound)
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Records a lifecycle event; one a vendor's webhook announces is written together
    /// with its delivery (see `webhooks`).
    async fn event(&self, id: SandboxId, kind: &str, detail: Option<&str>) {
        self.event_at(id, self.now(), kind, detail).await
    }

    async fn event_at(&self, id: SandboxId, at: Timestamp, kind: &str, detail: Option<&str>) {
        let store = &self.inner.store;
        let recorded = match webhooks::webhook_type(kind) {
            None => store.add_event(id, at, kind, detail).await,
            Some(_) => match store.sandbox(id).await {
                Ok(Some(sandbox)) => {
                    let delivery =
                        webhooks::delivery(kind, at, &sandbox).expect("a kind with a webhook type");
                    let recorded = store
                        .add_event_with_delivery(id, at, kind, detail, &delivery)
                        .await;
                    self.inner.deliveries.notify_one();
                    recorded
                }
                Ok(None) => store.add_event(id, at, kind, detail).await,
                Err(err) => Err(err),
            },
        };
        if let Err(err) = recorded {
            tracing::warn!(sandbox_id = %id, kind, %err, "could not record an event");
        }
    }

    /// Sets (or with `None` removes) a vendor's webhook URL, after checking its host
    /// resolves to addresses deliveries may reach. The secret, when new, is returned: it is
    /// shown once.
    pub async fn set_webhook(
        &self,
        vendor: VendorId,
        url: Option<&WebhookUrl>,
    ) -> std::result::Result<Option<String>, WebhookRefused> {
        if let Some(url) = url {
            webhooks::check_destination(url.as_str(), self.inner.settings.webhooks.allow_private)
                .await
                .map_err(WebhookRefused::Destination)?;
        }
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
        let fresh = self
            .inner
            .store
            .set_vendor_webhook(vendor, url.map(WebhookUrl::as_str), &secret)
            .await
            .map_err(WebhookRefused::Store)?;
        Ok(fresh.then_some(secret))
    }

    /// Records the sandbox (if capacity allows) and starts provisioning it in the background.
    /// The spool must already hold every file.
    pub async fn create(
        &self,
        id: SandboxId,
        demo: &Demo,
        window: TrialWindow,
        prospect: Prospect,
        spool: Spool,
    ) -> Result<Created> {
        let now = self.now();
        let new_sandbox = |id: SandboxId| {
            let token = IssuedToken::for_sandbox(id);
            let new = NewSandbox {
                id,
                demo_id: demo.id,
                vendor_id: demo.vendor_id,
                token_hash: token.hash(),
                spec: demo.spec.clone(),
                created_at: now,
                expires_at: now.plus_seconds(window.seconds()),
                files: spool.records().to_vec(),
                profiles: spool.profiles().to_vec(),
                prospect: prospect.clone(),
            };
            (new, token)
        };
        let mut claimed = None;
        if demo.spec.warm_pool > 0 {
            // A few tries: another prospect may take the member we picked.
            let ready = self.inner.store.warm_members(Some(demo.id)).await?;
            for member in ready
                .iter()
                .filter(|m| m.state == WarmState::Warm && m.spec == demo.spec)
                .take(3)
            {
                let (new, token) = new_sandbox(member.id);
                if self
                    .inner
                    .store
                    .claim_warm(&new, self.capacity(demo))
                    .await?
                {
                    claimed = Some((new, token));
                    break;
                }
            }
        }
        let origin = if claimed.is_some() {
            Origin::Warm
        } else {
            Origin::Cold
        };
        let (new, token) = match claimed {
            Some(claimed) => {
                self.pools_changed();
                claimed
            }
            None => {
                let (new, token) = new_sandbox(id);
                self.inner
                    .store
                    .insert_sandbox(&new, self.capacity(demo))
                    .await?;
                let lifecycle = self.clone();
                tokio::spawn(async move { lifecycle.shed_pool_excess().await });
                (new, token)
            }
        };
        let id = new.id;
        let files = new.files.len();
        let bytes: u64 = new.files.iter().map(|f| f.bytes).sum();
        self.event(
            id,
            "created",
            Some(&format!(
                "{files} file(s), {bytes} bytes; trial window {} s{}",
                window.seconds(),
                if origin == Origin::Warm {
                    "; from the warm pool"
                } else {
                    ""
                }
            )),
        )
        .await;
        metrics::counter!("testdrive_sandboxes_created_total").increment(1);
        self.inner.deadlines.notify_one();

        let sandbox = self.record(id).await?;
        let (phase_tx, phase_rx) = watch::channel(Phase::Provisioning);
        let cancel = CancellationToken::new();
        self.inner.inflight.lock().expect("inflight lock").insert(
            id,
            InFlight {
                cancel: cancel.clone(),
                phase: phase_rx.clone(),
            },
        );
        let span = tracing::info_span!("sandbox.provision", sandbox_id = %id, demo_id = %demo.id);
        tokio::spawn(
            provision::run(
                self.clone(),
                id,
                demo.id,
                demo.spec.clone(),
                sandbox.addr_slot,
                origin,
                spool,
                cancel,
                phase_tx,
                Instant::now(),
            )
            .instrument(span),
        );
        Ok(Created {
            sandbox,
            token,
            progress: phase_rx,
        })
    }

    /// Waits until provisioning is over or `limit` has passed.
    pub async fn wait_settled(progress: &mut watch::Receiver<Phase>, limit: Duration) {
        let _ = tokio::time::timeout(limit, progress.wait_for(|p| *p != Phase::Provisioning)).await;
    }

    /// Moves the deadline `seconds` later, within the demo's `max_seconds` from the start.
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn extend(&self, id: SandboxId, seconds: u32) -> Result<Sandbox> {
        let sandbox = self.record(id).await?;
        if !sandbox.status.is_live() {
            return Err(LifecycleError::Ended);
        }
        let max_seconds = sandbox.spec.trial.max_seconds;
        let latest = sandbox.created_at.plus_seconds(max_seconds);
        let new_deadline = sandbox.expires_at.plus_seconds(seconds);
        if new_deadline > latest {
            return Err(LifecycleError::TooLong { max_seconds });
        }
        if !self.inner.store.set_deadline(id, new_deadline).await? {
            return Err(LifecycleError::Ended);
        }
        self.event(
            id,
            "extended",
            Some(&format!(
                "by {seconds} s, until {}",
                new_deadline.to_rfc3339()
            )),
        )
        .await;
        self.inner.deadlines.notify_one();
        self.record(id).await
    }

    /// Ends the sandbox now and waits until every object and copy of its data is gone.
    /// Ending an ended sandbox finishes any teardown still pending and returns the record.
    #[tracing::instrument(skip(self), fields(sandbox_id = %id))]
    pub async fn end(&self, id: SandboxId, reason: EndReason) -> Result<Sandbox> {
        if self.inner.store.end(id, self.now(), reason).await? {
            self.event(id, reason.as_str(), None).await;
            metrics::counter!("testdrive_sandboxes_ended_total", "reason" => reason.as_str())
                .increment(1);
        }
        let sandbox = self.record(id).await?;
        if sandbox.data_deleted_at.is_none() {
            self.teardown(id).await?;
            return self.record(id).await;
        }
        Ok(sandbox)
    }

    /// Records a failure; true if this call ended the sandbox (and so owes its teardown).
    async fn record_failure(&self, id: SandboxId, detail: &str) -> bool {
        tracing::warn!(sandbox_id = %id, detail, "sandbox failed");
        match self
            .inner
            .store
            .end(id, self.now(), EndReason::Failed)
            .await
        {
            Ok(true) => {
                self.event(id, "failed", Some(detail)).await;
                metrics::counter!("testdrive_sandboxes_ended_total", "reason" => "failed")
                    .increment(1);
                true
            }
            // Someone else ended it; they tear it down.
            Ok(false) => false,
            Err(err) => {
                tracing::warn!(sandbox_id = %id, %err, "could not record the failure");
                // The sandbox is still live in the database: remove its objects anyway, the
                // reconciler will record the end.
                true
            }
        }
    }

    async fn teardown_or_leave_to_reconciler(&self, id: SandboxId) {
        if let Err(err) = self.teardown(id).await {
            tracing::warn!(sandbox_id = %id, %err, "teardown failed; the reconciler will retry");
        }
    }

    /// Stops a provisioning in progress and waits until it makes no more Engine calls.
    async fn stop_provisioning(&self, id: SandboxId) {
        let running = {
            let inflight = self.inner.inflight.lock().expect("inflight lock");
            inflight
                .get(&id)
                .map(|p| (p.cancel.clone(), p.phase.clone()))
        };
        if let Some((cancel, mut phase)) = running {
            cancel.cancel();
            let _ = phase.wait_for(|p| *p != Phase::Provisioning).await;
        }
    }

    /// Repairs a sandbox the reconciler saw broken, if it still is once it is the sandbox's
    /// turn (the listing may be older than a sleep or a wake that happened meanwhile). A
    /// container that vanished ends the sandbox (`failed`); one that stopped while it should
    /// run (a crash, the memory limit, a host restart) puts it to sleep, so the next request
    /// restarts it — and fails it if the demo does not come up again.
    async fn repair(&self, id: SandboxId, seen: SandboxStatus) -> Result<()> {
        let _turn = self.turn(id).await;
        if self.record(id).await?.status != seen {
            return Ok(());
        }
        match self.inner.engine.state(&container_name(id)).await {
            Ok(state) if state.running || seen == SandboxStatus::Sleeping => {}
            Ok(state) => {
                if self.inner.store.mark_asleep(id).await? {
                    let why = probe::NotReady::exited(state);
                    self.event(
                        id,
                        "stopped",
                        Some(&format!("{why}; asleep until the next request restarts it")),
                    )
                    .await;
                }
            }
            Err(EngineError::NotFound(_)) => {
                if self
                    .record_failure(id, "the sandbox's container vanished")
                    .await
                {
                    self.teardown_now(id).await?;
                }
            }
            Err(err) => return Err(err.into()),
        }
        Ok(())
    }

    /// Removes the sandbox's Engine objects and spool, then records `data_deleted_at`. Safe to
    /// call any number of times, from any task.
    #[tracing::instrument(name = "sandbox.teardown", skip(self), fields(sandbox_id = %id))]
    pub async fn teardown(&self, id: SandboxId) -> Result<()> {
        let _turn = self.turn(id).await;
        self.teardown_now(id).await
    }

    /// Waits for this sandbox's turn; held until the returned guard drops.
    async fn turn(&self, id: SandboxId) -> Turn {
        let lock = self
            .inner
            .turns
            .lock()
            .expect("turns lock")
            .entry(id)
            .or_default()
            .clone();
        Turn {
            lifecycle: self.clone(),
            id,
            guard: Some(lock.lock_owned().await),
        }
    }

    async fn teardown_now(&self, id: SandboxId) -> Result<()> {
        let started = Instant::now();
        self.stop_provisioning(id).await;
        // Each removal is recorded as it happens: the deletion receipt says when the
        // container and the data volume went, not only when the whole teardown finished.
        let container = self.inner.engine.remove_container(id).await?;
        if container {
            self.event(id, "container_removed", None).await;
        }
        // The container's removal takes its volumes along (`-v`), or leaves them for the
        // removal by label; either way they are gone once this returns.
        let by_label = self.inner.engine.remove_volumes(id).await?;
        if container || by_label > 0 {
            self.event(id, "volumes_removed", None).await;
        }
        crate::spool::remove_dir(&self.inner.settings.spool_root.join(id.to_string())).await?;
        let now = self.now();
        if self.inner.store.mark_data_deleted(id, now).await? {
            self.event(
                id,
                "data_deleted",
                Some("no container, volume or spooled upload of this sandbox remains"),
            )
            .await;
            metrics::histogram!("testdrive_teardown_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Some(s) = self.inner.store.sandbox(id).await?
                && s.end_reason == Some(EndReason::Expired)
            {
                let lag = (now.millis() - s.expires_at.millis()).max(0) as f64 / 1000.0;
                metrics::histogram!("testdrive_expiry_lag_seconds").record(lag);
            }
            tracing::info!("sandbox torn down");
        }
        Ok(())
    }

    /// A sandbox record with activity not yet written to the database added in.
    pub fn with_pending_activity(&self, mut sandbox: Sandbox) -> Sandbox {
        if let Some(pending) = self.inner.activity.pending(sandbox.id) {
            sandbox.requests += pending.requests;
            sandbox.last_active_at = sandbox.last_active_at.max(Some(pending.last_active_at));
            sandbox.first_opened_at = sandbox.first_opened_at.or(Some(pending.first_active_at));
        }
        sandbox
    }

    /// What a restart must settle before the service takes requests: the spool left by the
    /// previous run, and the provisionings it cut short (failed; the reconciler removes
    /// their objects).
    pub async fn recover(&self) -> Result<()> {
        reconcile::recover(self).await
    }

    /// Runs the background work until `shutdown`: deadlines, sleep, reconciliation,
    /// activity, Engine health.
    pub async fn run(self, shutdown: CancellationToken) {
        let deadlines = Scheduler::new(
            TrialDeadlines(self.inner.store.clone()),
            self.inner.clock.clone(),
            self.inner.deadlines.clone(),
        );
        let on_deadline = {
            let lifecycle = self.clone();
            move |id: SandboxId| {
                let lifecycle = lifecycle.clone();
                tokio::spawn(async move {
                    tracing::info!(sandbox_id = %id, "trial window over");
                    lifecycle.event(id, "expired", None).await;
                    metrics::counter!("testdrive_sandboxes_ended_total", "reason" => "expired")
                        .increment(1);
                    lifecycle.teardown_or_leave_to_reconciler(id).await;
                });
            }
        };
        let idle = Scheduler::new(
            sleep::IdleSandboxes(self.clone()),
            self.inner.clock.clone(),
            self.inner.idle_moments.clone(),
        );
        tokio::join!(
            deadlines.run(on_deadline, shutdown.clone()),
            idle.run(sleep::on_idle(&self), shutdown.clone()),
            reconcile::run(self.clone(), shutdown.clone()),
            activity::run(self.clone(), shutdown.clone()),
            health::run(self.clone(), shutdown.clone()),
            disk::run(self.clone(), shutdown.clone()),
            pool::run(self.clone(), shutdown.clone()),
            webhooks::run(self.clone(), shutdown.clone()),
        );
    }
}
