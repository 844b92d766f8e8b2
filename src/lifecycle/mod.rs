//! The life of a sandbox, from the prospect's upload to the deletion of every copy of their
//! data. `Lifecycle` is the one place that changes a sandbox's state: it starts provisioning,
//! extends and ends sandboxes, and runs the background work that keeps the Engine in line
//! with the database — the deadline scheduler, the reconciler and the activity flusher.
//!
//! Ending is always the same two steps: first the database records the end (one conditional
//! update, so only one caller wins), then `teardown` removes the Engine objects and the spool
//! and records `data_deleted_at`. Teardown is idempotent; if it cannot finish (the Engine is
//! down), the reconciler finishes it later from the database.

mod activity;
mod clock;
mod probe;
mod provision;
mod reconcile;
mod scheduler;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use activity::Activity;
pub use clock::{Clock, SystemClock, TokioClock};
pub use scheduler::Deadlines;

use crate::domain::token::IssuedToken;
use crate::domain::{EndReason, Prospect, SandboxId, Timestamp, TrialWindow};
use crate::engine::{Engine, EngineError};
use crate::spool::Spool;
use crate::store::{Demo, NewSandbox, Sandbox, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such sandbox")]
    NotFound,
    #[error("the sandbox has ended")]
    Ended,
    #[error("a trial of this demo can last at most {max_seconds} seconds from its start")]
    TooLong { max_seconds: u32 },
    #[error("all {limit} sandbox places are taken")]
    Capacity { limit: u32 },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the spool cannot be cleared: {0}")]
    Spool(#[from] std::io::Error),
}

impl From<StoreError> for LifecycleError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Capacity { limit, .. } => LifecycleError::Capacity { limit },
            other => LifecycleError::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, LifecycleError>;

#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Live sandboxes at once, all demos together.
    pub max_live: u32,
    pub spool_root: PathBuf,
    /// How often the reconciler compares the database with the Engine.
    pub reconcile_every: Duration,
    /// How often proxy activity is written to the database.
    pub flush_every: Duration,
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
    /// One teardown at a time per sandbox: the scheduler, a `DELETE` and the reconciler may
    /// all reach for the same one, and the Engine refuses a second concurrent removal.
    teardowns: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    deadlines: Arc<Notify>,
    activity: Activity,
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
                teardowns: Mutex::new(HashMap::new()),
                deadlines: Arc::new(Notify::new()),
                activity: Activity::default(),
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

    async fn event(&self, id: SandboxId, kind: &str, detail: Option<&str>) {
        if let Err(err) = self
            .inner
            .store
            .add_event(id, self.now(), kind, detail)
            .await
        {
            tracing::warn!(sandbox_id = %id, kind, %err, "could not record an event");
        }
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
        let token = IssuedToken::for_sandbox(id);
        let now = self.now();
        let new = NewSandbox {
            id,
            demo_id: demo.id,
            vendor_id: demo.vendor_id,
            token_hash: token.hash(),
            spec: demo.spec.clone(),
            created_at: now,
            expires_at: now.plus_seconds(window.seconds()),
            files: spool.records().to_vec(),
            prospect,
        };
        self.inner
            .store
            .insert_sandbox(&new, self.inner.settings.max_live)
            .await?;
        let files = new.files.len();
        let bytes: u64 = new.files.iter().map(|f| f.bytes).sum();
        self.event(
            id,
            "created",
            Some(&format!(
                "{files} file(s), {bytes} bytes; trial window {} s",
                window.seconds()
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

    fn is_provisioning_here(&self, id: SandboxId) -> bool {
        self.inner
            .inflight
            .lock()
            .expect("inflight lock")
            .contains_key(&id)
    }

    /// Removes the sandbox's Engine objects and spool, then records `data_deleted_at`. Safe to
    /// call any number of times, from any task.
    #[tracing::instrument(name = "sandbox.teardown", skip(self), fields(sandbox_id = %id))]
    pub async fn teardown(&self, id: SandboxId) -> Result<()> {
        let lock = self
            .inner
            .teardowns
            .lock()
            .expect("teardown lock")
            .entry(id)
            .or_default()
            .clone();
        let result = {
            let _turn = lock.lock().await;
            self.teardown_now(id).await
        };
        let mut teardowns = self.inner.teardowns.lock().expect("teardown lock");
        // Only the map and this call hold it: nobody is waiting.
        if Arc::strong_count(&lock) == 2 {
            teardowns.remove(&id);
        }
        result
    }

    async fn teardown_now(&self, id: SandboxId) -> Result<()> {
        let started = Instant::now();
        self.stop_provisioning(id).await;
        let removed = self.inner.engine.remove_sandbox(id).await?;
        crate::spool::remove_dir(&self.inner.settings.spool_root.join(id.to_string())).await?;
        let now = self.now();
        if self.inner.store.mark_data_deleted(id, now).await? {
            self.event(
                id,
                "data_deleted",
                Some(&format!(
                    "container, volumes and spooled upload removed ({removed} Engine objects)"
                )),
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
            tracing::info!(removed, "sandbox torn down");
        }
        Ok(())
    }

    /// A sandbox record with activity not yet written to the database added in.
    pub fn with_pending_activity(&self, mut sandbox: Sandbox) -> Sandbox {
        if let Some(pending) = self.inner.activity.pending(sandbox.id) {
            sandbox.requests += pending.requests;
            sandbox.last_active_at = sandbox.last_active_at.max(Some(pending.last_active_at));
        }
        sandbox
    }

    /// Runs the background work until `shutdown`: deadlines, reconciliation, activity.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(err) = reconcile::clear_spool(&self).await {
            tracing::warn!(%err, "could not clear the spool at start");
        }
        let deadlines = Deadlines::new(
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.deadlines.clone(),
        );
        let on_due = {
            let lifecycle = self.clone();
            move |id: SandboxId| {
                let lifecycle = lifecycle.clone();
                tokio::spawn(async move {
                    lifecycle.event(id, "expired", None).await;
                    metrics::counter!("testdrive_sandboxes_ended_total", "reason" => "expired")
                        .increment(1);
                    lifecycle.teardown_or_leave_to_reconciler(id).await;
                });
            }
        };
        tokio::join!(
            deadlines.run(on_due, shutdown.clone()),
            reconcile::run(self.clone(), shutdown.clone()),
            activity::run(self.clone(), shutdown.clone()),
        );
    }
}
