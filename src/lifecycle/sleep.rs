//! Sleep and wake: the second clock. A sandbox of a demo with `trial.idle_seconds` that
//! nobody opened for that long goes to `sleeping` — its container stops (no CPU, no memory)
//! and its volumes, address and deadline stay. The next request to `/s/{id}/` wakes it:
//! the container starts again and the request is answered once the demo is ready. The trial
//! window still ends it, asleep or not.
//!
//! A sleep and a wake of one sandbox never overlap (the sandbox's turn), and each re-reads
//! the database first: a request may wake a sandbox between the moment the scheduler marks
//! it asleep and the moment its container would stop.

use std::net::SocketAddr;
use std::time::Instant;

use async_trait::async_trait;

use super::probe::{self, NotReady};
use super::scheduler::Timetable;
use super::{Lifecycle, LifecycleError, Result, activity};
use crate::domain::{SandboxId, SandboxStatus, Timestamp};
use crate::engine::{EngineError, container_name};
use crate::store::{Sandbox, Wake};

/// Ready sandboxes falling idle. Activity still in memory is written first, so a sandbox in
/// use is never put to sleep on a stale `last_active_at`.
pub(super) struct IdleSandboxes(pub Lifecycle);

#[async_trait]
impl Timetable for IdleSandboxes {
    async fn claim_due(&self, now: Timestamp) -> crate::store::Result<Vec<SandboxId>> {
        activity::flush(&self.0).await;
        self.0.store().sleep_due(now).await
    }

    async fn next_due(&self) -> crate::store::Result<Option<Timestamp>> {
        // Activity in memory only moves moments later: waking early to find nothing due is
        // harmless.
        self.0.store().next_idle().await
    }
}

impl Lifecycle {
    /// Stops the container of a sandbox the scheduler marked asleep.
    pub(super) async fn put_to_sleep(&self, id: SandboxId) {
        let _turn = self.turn(id).await;
        match self.record(id).await {
            Ok(sandbox) if sandbox.status == SandboxStatus::Sleeping => {}
            // Woken or ended meanwhile.
            _ => return,
        }
        match self.engine().stop(&container_name(id)).await {
            Ok(()) => {
                self.event(id, "slept", None).await;
                metrics::counter!("testdrive_sandboxes_slept_total").increment(1);
                tracing::info!(sandbox_id = %id, "sandbox asleep");
            }
            Err(EngineError::NotFound(_)) => {
                if self
                    .record_failure(id, "the sandbox's container vanished")
                    .await
                    && let Err(err) = self.teardown_now(id).await
                {
                    tracing::warn!(sandbox_id = %id, %err, "teardown failed; the reconciler will retry");
                }
            }
            // The container may still run; a request will find it ready when it wakes it.
            Err(err) => tracing::warn!(sandbox_id = %id, %err, "could not stop an idle sandbox"),
        }
    }

    /// Wakes a sleeping sandbox and waits until its demo is ready again. A ready sandbox is
    /// returned as it is; an ended one is `Ended`. The wake takes a running place before the
    /// container starts (`Capacity` when none is free); if the Engine cannot be reached the
    /// place is given back and the sandbox stays asleep, its data safe, for a later request.
    #[tracing::instrument(name = "sandbox.wake", skip(self), fields(sandbox_id = %id))]
    pub async fn wake(&self, id: SandboxId) -> Result<Sandbox> {
        let started = Instant::now();
        let _turn = self.turn(id).await;
        let sandbox = self.record(id).await?;
        match sandbox.status {
            SandboxStatus::Sleeping => {}
            SandboxStatus::Ready | SandboxStatus::Provisioning => return Ok(sandbox),
            SandboxStatus::Ended | SandboxStatus::Failed => return Err(LifecycleError::Ended),
        }
        let max_running = self.settings().max_running;
        match self
            .store()
            .reserve_wake(id, self.now(), max_running)
            .await?
        {
            Wake::Reserved => {
                // The place may be one a warm pool member held.
                let lifecycle = self.clone();
                tokio::spawn(async move { lifecycle.shed_pool_excess().await });
            }
            Wake::NotSleeping => return self.record(id).await,
            Wake::NoRoom => {
                return Err(LifecycleError::Capacity(format!(
                    "all {max_running} running places are taken; the sandbox stays asleep"
                )));
            }
        }
        match self.start_again(&sandbox).await {
            Ok(()) => {
                self.store().mark_awake(id, self.now()).await?;
                self.inner.idle_moments.notify_one();
                let elapsed = started.elapsed();
                self.event(id, "woke", Some(&format!("in {} ms", elapsed.as_millis())))
                    .await;
                metrics::histogram!("testdrive_wake_seconds").record(elapsed.as_secs_f64());
                tracing::info!(ms = elapsed.as_millis() as u64, "sandbox awake");
                self.record(id).await
            }
            Err(WakeError::Unreachable(err)) => {
                self.store().release_wake(id).await?;
                Err(err.into())
            }
            Err(WakeError::Failed(detail)) => {
                if self.record_failure(id, &detail).await {
                    self.teardown_now(id).await?;
                }
                Err(LifecycleError::WakeFailed(detail))
            }
        }
    }

    async fn start_again(&self, sandbox: &Sandbox) -> std::result::Result<(), WakeError> {
        let container = container_name(sandbox.id);
        let addr: SocketAddr = sandbox
            .container_addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| WakeError::Failed("the sleeping sandbox has no address".into()))?;
        match self.engine().start(&container).await {
            Ok(()) => {}
            Err(err @ EngineError::Unavailable(_)) => return Err(WakeError::Unreachable(err)),
            Err(err) => {
                return Err(WakeError::Failed(format!(
                    "starting the container again: {err}"
                )));
            }
        }
        let spec = &sandbox.spec;
        probe::wait_ready(
            self.engine(),
            &container,
            addr,
            &spec.ready.http_path,
            spec.ready.timeout_seconds,
        )
        .await
        .map_err(|e: NotReady| WakeError::Failed(format!("after waking, {e}")))
    }
}

enum WakeError {
    /// The Engine did not answer: nothing is wrong with the sandbox.
    Unreachable(EngineError),
    /// The demo did not come back: the sandbox fails.
    Failed(String),
}

/// The scheduler's action for a sandbox that fell idle.
pub(super) fn on_idle(lifecycle: &Lifecycle) -> impl Fn(SandboxId) + use<> {
    let lifecycle = lifecycle.clone();
    move |id| {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move { lifecycle.put_to_sleep(id).await });
    }
}
