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
use crate::domain::{Ending, Sandbox, SandboxEvent, SandboxId, SandboxStatus, Timestamp};
use crate::engine::EngineError;
use crate::store::Wake;

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

/// Why a wake did not bring the demo back.
enum WakeError {
    /// The Engine did not answer: nothing is wrong with the sandbox.
    Unreachable(EngineError),
    /// The demo did not come back: the sandbox fails.
    Failed(String),
}

impl Lifecycle {
    /// Stops the container of a sandbox the scheduler (or the reconciler) marked asleep.
    pub(super) async fn put_to_sleep(&self, id: SandboxId) {
        let turn = self.inner.turns.take(id).await;
        match self.record(id).await {
            Ok(sandbox) if sandbox.status == SandboxStatus::Sleeping => {}
            // Woken or ended meanwhile.
            _ => return,
        }
        match self.engine().stop(id).await {
            Ok(()) => {
                self.history()
                    .record(id, self.now(), SandboxEvent::Slept)
                    .await;
                metrics::counter!("testdrive_sandboxes_slept_total").increment(1);
                tracing::info!(sandbox_id = %id, "sandbox asleep");
            }
            Err(EngineError::NotFound(_)) => {
                let vanished = Ending::failed("the sandbox's container vanished");
                if let Err(err) = self.end_within(&turn, vanished).await {
                    tracing::warn!(sandbox_id = %id, %err, "teardown failed; the reconciler will retry");
                }
            }
            // The container may still run; a request will find it ready when it wakes it.
            Err(err) => tracing::warn!(sandbox_id = %id, %err, "could not stop an idle sandbox"),
        }
    }

    /// Wakes a sleeping sandbox and waits until its demo is ready again. A ready sandbox is
    /// returned as it is; an ended one (before or during the wake) is `Ended`. The wake
    /// takes a running place before the container starts (`Capacity` when none is free);
    /// if the Engine cannot be reached the place is given back and the sandbox stays
    /// asleep, its data safe, for a later request.
    #[tracing::instrument(name = "sandbox.wake", skip(self), fields(sandbox_id = %id))]
    pub async fn wake(&self, id: SandboxId) -> Result<Sandbox> {
        let started = Instant::now();
        let turn = self.inner.turns.take(id).await;
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
                if !self.store().mark_awake(id, self.now()).await? {
                    // Ended while it started; the end's teardown waits for this turn.
                    return Err(LifecycleError::Ended);
                }
                self.inner.wakeups.idle.notify_one();
                let after_ms = started.elapsed().as_millis() as u64;
                let woke = SandboxEvent::Woke { after_ms };
                self.history().record(id, self.now(), woke).await;
                metrics::histogram!("testdrive_wake_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(ms = after_ms, "sandbox awake");
                self.record(id).await
            }
            Err(WakeError::Unreachable(err)) => {
                self.store().release_wake(id).await?;
                Err(err.into())
            }
            Err(WakeError::Failed(why)) => {
                self.end_within(&turn, Ending::failed(why.clone())).await?;
                Err(LifecycleError::WakeFailed(why))
            }
        }
    }

    async fn start_again(&self, sandbox: &Sandbox) -> std::result::Result<(), WakeError> {
        let addr: SocketAddr = sandbox
            .container_addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| WakeError::Failed("the sleeping sandbox has no address".into()))?;
        match self
            .start_container(sandbox.id, "while waking a sandbox")
            .await
        {
            Ok(()) => {}
            Err(err @ EngineError::Unavailable(_)) => return Err(WakeError::Unreachable(err)),
            Err(err) => {
                return Err(WakeError::Failed(format!(
                    "starting the container again: {err}"
                )));
            }
        }
        probe::wait_ready(
            self.engine().as_ref(),
            sandbox.id,
            addr,
            &sandbox.spec.ready,
        )
        .await
        .map_err(|e: NotReady| WakeError::Failed(format!("after waking, {e}")))
    }
}

/// The idle scheduler's action for a sandbox that fell idle.
pub(super) fn on_idle(lifecycle: &Lifecycle) -> impl Fn(SandboxId) + use<> {
    let lifecycle = lifecycle.clone();
    move |id| {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move { lifecycle.put_to_sleep(id).await });
    }
}
