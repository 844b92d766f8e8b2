//! The life of a sandbox, from the prospect's upload to the deletion of every copy of their
//! data. `Lifecycle` is the one place that changes a sandbox's state; it drives the runtime
//! through the `Engine` trait and keeps the database (`Store`) the truth.
//!
//! Where each part lives:
//! - `create` records a new sandbox (a place checked in the same statement, or a warm pool
//!   member claimed) and `provision` runs it up: files in, start, load command, probe.
//! - `end` is the one way a sandbox ends, whatever the reason — a deadline, a person, a
//!   failure: the database records the end (one conditional update, so one caller wins),
//!   the history announces it, and the teardown removes the Engine objects and the spool
//!   and records `data_deleted_at`. Teardown is idempotent; one that cannot finish (the
//!   Engine is down) is finished later by the reconciler, from the database.
//! - `sleep` stops idle sandboxes and wakes them on the next request; `pool` keeps warm
//!   pool members; `reconcile` makes the Engine agree with the database; `scheduler` runs
//!   the deadlines and idle moments; `health`, `activity`, `disk` and `usage` watch the
//!   Engine, the proxy's traffic, the volumes and the containers' resources.
//! - `images` keeps each demo's `image_status` true to the Engine: a demo whose image
//!   vanished leaves the catalog until it is back.
//! - `history` writes a sandbox's events (and the webhook deliveries announcing them);
//!   `turns` gives each sandbox one Engine operation at a time.

mod activity;
mod conversation;
mod create;
mod disk;
mod end;
mod health;
mod history;
mod images;
mod network;
mod pool;
mod probe;
mod provision;
mod pulls;
mod reconcile;
mod scheduler;
mod sleep;
mod turns;
mod usage;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use activity::Activity;
pub use conversation::MAX_PER_TRIAL;
pub use create::{Begun, Created, Introduction};
pub use provision::Phase;
pub use scheduler::{Scheduler, Timetable, TrialDeadlines};
pub use usage::ResourceUse;

use crate::clock::Clock;
use crate::domain::{Sandbox, SandboxId, ServiceEvent, Timestamp};
use crate::engine::{Credentials, Engine, EngineError};
use crate::sandbox_dirs::SandboxDirs;
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such sandbox")]
    NotFound,
    #[error("the sandbox has ended")]
    Ended,
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
    #[error("a sandbox's directory cannot be made or removed: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Place(#[from] crate::sandbox_dirs::PlaceError),
    #[error("cannot measure a sandbox's disk use: {0}")]
    Disk(std::io::Error),
    /// The prospect has said this as often as a trial may.
    #[error("{0}")]
    Enough(String),
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

#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Sandboxes running (provisioning or ready) at once, all demos together.
    pub max_running: u32,
    /// Sleeping sandboxes at once, besides the running ones.
    pub max_sleeping: u32,
    /// Each sandbox's directory: its upload and its data.
    pub dirs: SandboxDirs,
    /// How often the reconciler compares the database with the Engine.
    pub reconcile_every: Duration,
    /// How often proxy activity is written to the database.
    pub flush_every: Duration,
    /// How often sandboxes' volumes are measured against their disk limit (`None`: never).
    pub disk_check_every: Option<Duration>,
    /// Whether images pulls brought that nothing uses any more are removed from the Engine.
    pub remove_unused_images: bool,
    /// Whether other nodes share the database (each with its own Engine).
    pub shared: bool,
}

/// What wakes the background loops before their time.
#[derive(Default)]
struct Wakeups {
    /// A deadline was added or moved.
    deadlines: Arc<Notify>,
    /// A sandbox became ready or woke: a new idle moment.
    idle: Arc<Notify>,
    /// The Engine came back.
    reconcile: Notify,
    /// A demo changed, or a warm pool member was claimed.
    pools: Notify,
}

/// A handle on the lifecycle. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Core>,
}

struct Core {
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
    settings: LifecycleSettings,
    history: history::History,
    turns: turns::Turns,
    provisions: provision::Provisions,
    wakeups: Wakeups,
    activity: Activity,
    readings: usage::Gauges,
    pools: pool::PoolHealth,
    pulls: pulls::Pulls,
    credentials: Arc<dyn Credentials>,
    /// Demos whose image this node has asked its Engine about since it started.
    images_seen: std::sync::Mutex<std::collections::HashSet<crate::domain::DemoId>>,
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<dyn Engine>,
        clock: Arc<dyn Clock>,
        webhooks: Webhooks,
        credentials: Arc<dyn Credentials>,
        settings: LifecycleSettings,
    ) -> Self {
        Lifecycle {
            inner: Arc::new(Core {
                history: history::History::new(store.clone(), webhooks),
                store,
                engine,
                clock,
                settings,
                turns: turns::Turns::default(),
                provisions: provision::Provisions::default(),
                wakeups: Wakeups::default(),
                activity: Activity::default(),
                readings: usage::Gauges::default(),
                pools: pool::PoolHealth::default(),
                pulls: pulls::Pulls::default(),
                credentials,
                images_seen: Default::default(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    pub fn activity(&self) -> &Activity {
        &self.inner.activity
    }

    pub fn settings(&self) -> &LifecycleSettings {
        &self.inner.settings
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn history(&self) -> &history::History {
        &self.inner.history
    }

    /// Records what happened to the deployment (an outage, a healing) for the consoles.
    pub async fn note(&self, event: ServiceEvent) {
        self.history().service(self.now(), event).await;
    }

    async fn record(&self, id: SandboxId) -> Result<Sandbox> {
        self.inner
            .store
            .sandbox(id)
            .await?
            .ok_or(LifecycleError::NotFound)
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
    /// activity, Engine health, disk use, warm pools.
    pub async fn run(self, shutdown: CancellationToken) {
        let deadlines = Scheduler::new(
            TrialDeadlines(self.inner.store.clone()),
            self.inner.clock.clone(),
            self.inner.wakeups.deadlines.clone(),
        );
        let idle = Scheduler::new(
            sleep::IdleSandboxes(self.clone()),
            self.inner.clock.clone(),
            self.inner.wakeups.idle.clone(),
        );
        tokio::join!(
            deadlines.run(end::on_deadline(&self), shutdown.clone()),
            idle.run(sleep::on_idle(&self), shutdown.clone()),
            reconcile::run(self.clone(), shutdown.clone()),
            activity::run(self.clone(), shutdown.clone()),
            health::run(self.clone(), shutdown.clone()),
            disk::run(self.clone(), shutdown.clone()),
            pool::run(self.clone(), shutdown.clone()),
        );
    }
}
