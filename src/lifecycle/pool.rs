//! Warm pools. A demo's `warm_pool: N` keeps N containers of it created, started and
//! answering, with an empty data directory and no owner, so a new trial skips the container
//! start (the slow part). A trial claims one, as soon as its form names the demo, in a
//! transaction that moves it into `sandboxes` under the same id and address (see
//! `Store::claim_warm`); its files then stream into the member's directory and are renamed
//! into its mounted (empty) data directory, and its load command and probe run as usual.
//!
//! The keeper tends the pools: at start, every `reconcile_every`, and whenever a demo
//! changes or a member is claimed. It drains members nobody may claim (their demo changed,
//! was disabled or removed, its image went missing, or its pool shrank) and fills the
//! rest. Members take running places: the keeper fills only into places no prospect uses,
//! and a prospect's sandbox that needs a place a member holds gets it — the oldest member
//! is drained.
//!
//! A member never serves two prospects: claiming removes it from the pool for good, and
//! once claimed it is an ordinary sandbox, torn down with its data like any other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError, Result, probe};
use crate::domain::pool::{NewWarmMember, WarmState};
use crate::domain::{Demo, DemoId, SandboxId};
use crate::engine::{EngineError, NewContainer};

/// After a member of a demo fails to come up, that demo's pool waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Members made or drained at once.
const AT_ONCE: usize = 4;

/// When each demo's last member failed to come up, so a broken demo is not retried in a
/// tight loop.
#[derive(Default)]
pub(super) struct PoolHealth {
    failures: Mutex<HashMap<DemoId, Instant>>,
}

impl PoolHealth {
    fn failed(&self, demo: DemoId) {
        self.failures
            .lock()
            .expect("pool health lock")
            .insert(demo, Instant::now());
    }

    /// Forgets the demo's last failure: its cause is gone (the demo's image is back).
    pub(super) fn forgive(&self, demo: DemoId) {
        self.failures
            .lock()
            .expect("pool health lock")
            .remove(&demo);
    }

    fn failed_recently(&self, demo: DemoId) -> bool {
        self.failures
            .lock()
            .expect("pool health lock")
            .get(&demo)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }
}

impl Lifecycle {
    /// Tells the keeper a demo changed (or a member was claimed): tend the pools now.
    pub fn pools_changed(&self) {
        self.inner.wakeups.pools.notify_one();
    }

    /// The members in any of `states`, oldest first.
    async fn members_in(&self, states: &[WarmState]) -> Result<Vec<SandboxId>> {
        let members = self.inner.store.warm_members(None).await?;
        let chosen = members.iter().filter(|m| states.contains(&m.state));
        Ok(chosen.map(|m| m.id).collect())
    }

    /// How many members are ready to claim for each demo (for operators and tests).
    pub async fn pool_levels(&self) -> Result<HashMap<DemoId, usize>> {
        let mut levels = HashMap::new();
        for member in self.inner.store.warm_members(None).await? {
            if member.state == WarmState::Warm {
                *levels.entry(member.demo_id).or_default() += 1;
            }
        }
        Ok(levels)
    }

    /// One pass of the keeper: drain what nobody may claim, then fill within free places.
    pub(super) async fn tend_pools(&self) -> Result<()> {
        let store = &self.inner.store;
        let demos: HashMap<DemoId, Demo> = store
            .demos(None)
            .await?
            .into_iter()
            .filter(|d| d.on_offer())
            .map(|d| (d.id, d))
            .collect();
        let mut kept: HashMap<DemoId, usize> = HashMap::new();
        let mut surplus = Vec::new();
        for member in store.warm_members(None).await? {
            if member.state == WarmState::Draining {
                continue;
            }
            let target = demos
                .get(&member.demo_id)
                .filter(|d| d.run_spec() == member.spec)
                .map_or(0, |d| d.spec.warm_pool as usize);
            let count = kept.entry(member.demo_id).or_default();
            if *count < target {
                *count += 1;
            } else {
                surplus.push(member.id);
            }
        }
        self.drain_all(surplus).await;

        let running = store.count_live_by_state(None).await?.running;
        let members: u64 = kept.values().map(|n| *n as u64).sum();
        let mut room = u64::from(self.inner.settings.max_running).saturating_sub(running + members);
        let mut wanted = Vec::new();
        for demo in demos.values() {
            if self.inner.pools.failed_recently(demo.id) {
                continue;
            }
            let missing = (demo.spec.warm_pool as usize)
                .saturating_sub(kept.get(&demo.id).copied().unwrap_or(0));
            for _ in 0..missing {
                if room == 0 {
                    break;
                }
                room -= 1;
                wanted.push(demo.clone());
            }
        }
        stream::iter(wanted)
            .for_each_concurrent(AT_ONCE, |demo| async move {
                if let Err(err) = self.warm_up(&demo).await {
                    tracing::warn!(demo_id = %demo.id, %err, "a warm pool member did not come up");
                    self.inner.pools.failed(demo.id);
                }
            })
            .await;
        Ok(())
    }

    /// Makes one member: recorded first (so its objects are never unknown), then created,
    /// started and probed like a sandbox, with an empty data directory.
    async fn warm_up(&self, demo: &Demo) -> Result<()> {
        let store = &self.inner.store;
        let id = SandboxId::new();
        store
            .insert_warm(&NewWarmMember {
                id,
                demo_id: demo.id,
                spec: demo.run_spec(),
                created_at: self.now(),
            })
            .await?;
        // Held while the member is made: a drain waits for it instead of racing the create.
        let _turn = self.inner.turns.take(id).await;
        let started = Instant::now();
        let outcome = self.start_member(id, demo).await;
        match outcome {
            Ok(()) => {
                if store
                    .set_warm_state(id, &[WarmState::Warming], WarmState::Warm)
                    .await?
                {
                    tracing::info!(
                        sandbox_id = %id, demo_id = %demo.id,
                        ms = started.elapsed().as_millis() as u64, "warm pool member ready"
                    );
                }
                // Otherwise it was drained meanwhile; the drain removes it after this turn.
                Ok(())
            }
            Err(err) => {
                self.remove_member_now(id).await?;
                Err(err)
            }
        }
    }

    async fn start_member(&self, id: SandboxId, demo: &Demo) -> Result<()> {
        let engine = self.engine();
        let spec = &demo.run_spec();
        let slot = self
            .inner
            .store
            .warm_member(id)
            .await?
            .ok_or(LifecycleError::NotFound)?
            .addr_slot;
        let ip = engine.address(slot).ok_or_else(|| {
            LifecycleError::Capacity("the sandbox network has no free address left".into())
        })?;
        let dirs = &self.inner.settings.dirs;
        dirs.prepare(id).await?;
        let container = NewContainer {
            sandbox: id,
            demo: demo.id,
            spec,
            ip,
            data_dir: dirs.host_data(id),
        };
        if let Err(err) = engine.create(&container).await {
            // The image vanished: the demo is marked missing, and its pool waits for it.
            if matches!(&err, EngineError::NotFound(what) if what == "image") {
                let _ = self.image_vanished(demo.id, &spec.image).await;
            }
            return Err(err.into());
        }
        let owner = engine.owner(id, spec).await?;
        dirs.hand_over(id, owner).await?;
        self.start_container(id, "while starting a warm pool member")
            .await?;
        let addr = SocketAddr::new(ip.into(), spec.port);
        probe::wait_ready(engine.as_ref(), id, addr, &spec.ready)
            .await
            .map_err(|e| LifecycleError::WakeFailed(e.to_string()))
    }

    /// Drains members, several at once; a failure is logged and retried by a later pass.
    async fn drain_all(&self, ids: Vec<SandboxId>) {
        stream::iter(ids)
            .for_each_concurrent(AT_ONCE, |id| async move {
                if let Err(err) = self.drain_member(id).await {
                    tracing::warn!(sandbox_id = %id, %err, "could not drain a warm pool member");
                }
            })
            .await;
    }

    /// Takes a member out of the pool (unless claimed meanwhile) and removes it.
    pub(super) async fn drain_member(&self, id: SandboxId) -> Result<()> {
        let store = &self.inner.store;
        let Some(member) = store.warm_member(id).await? else {
            return Ok(());
        };
        if member.state != WarmState::Draining
            && !store
                .set_warm_state(
                    id,
                    &[WarmState::Warming, WarmState::Warm],
                    WarmState::Draining,
                )
                .await?
        {
            return Ok(()); // claimed meanwhile: a sandbox now, not ours to remove
        }
        let _turn = self.inner.turns.take(id).await;
        self.remove_member_now(id).await
    }

    async fn remove_member_now(&self, id: SandboxId) -> Result<()> {
        self.engine().remove_sandbox(id).await?;
        self.inner.settings.dirs.remove(id).await?;
        self.inner.store.forget_warm(id).await?;
        Ok(())
    }

    /// After a prospect's sandbox took a place (created or woken): if members now hold
    /// places beyond the running limit, the oldest give theirs up.
    pub(super) async fn shed_pool_excess(&self) {
        let excess = async {
            let store = &self.inner.store;
            let running = store.count_live_by_state(None).await?.running;
            let members = self
                .members_in(&[WarmState::Warming, WarmState::Warm])
                .await?;
            let over = (running + members.len() as u64)
                .saturating_sub(u64::from(self.inner.settings.max_running));
            Ok::<_, LifecycleError>(members.into_iter().take(over as usize).collect::<Vec<_>>())
        }
        .await;
        match excess {
            Ok(ids) if !ids.is_empty() => self.drain_all(ids).await,
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not check the warm pools' places"),
        }
    }

    /// Members whose container stopped or vanished are drained (the keeper makes new ones);
    /// members cut short by a restart too. `running` is an Engine listing, which may be
    /// older than the members read after it: a member the listing does not show running is
    /// asked about again before it goes.
    pub(super) async fn repair_pools(&self, running: impl Fn(SandboxId) -> bool) -> Result<()> {
        let members = self.inner.store.warm_members(None).await?;
        let mut broken = Vec::new();
        for member in members {
            let gone = match member.state {
                WarmState::Warm if running(member.id) => false,
                WarmState::Warm => !self
                    .engine()
                    .state(member.id)
                    .await
                    .is_ok_and(|state| state.running),
                WarmState::Warming => false,
                WarmState::Draining => true,
            };
            if gone {
                broken.push(member.id);
            }
        }
        self.drain_all(broken).await;
        Ok(())
    }

    /// At start: members being made or drained when the service stopped are removed.
    pub(super) async fn recover_pools(&self) -> Result<()> {
        let cut_short = self
            .members_in(&[WarmState::Warming, WarmState::Draining])
            .await?;
        self.drain_all(cut_short).await;
        Ok(())
    }
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    loop {
        if lifecycle.engine().is_healthy()
            && let Err(err) = lifecycle.tend_pools().await
        {
            tracing::warn!(%err, "tending the warm pools failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(lifecycle.settings().reconcile_every) => {}
            _ = lifecycle.inner.wakeups.pools.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
