//! Starting a trial and moving its deadline. A new sandbox takes a place in the same
//! statement that records it (or claims a warm pool member of the demo's current spec, in
//! one transaction), then provisioning runs in the background; `?wait=` watches its phase.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::provision::{Origin, Phase, Provision};
use super::{Lifecycle, LifecycleError, Result};
use crate::domain::pool::WarmState;
use crate::domain::token::IssuedToken;
use crate::domain::{Demo, NewSandbox, Prospect, Sandbox, SandboxEvent, SandboxId, TrialWindow};
use crate::spool::Spool;
use crate::store::Capacity;

/// Warm pool members tried before making a container: another prospect may take the one
/// picked.
const CLAIM_TRIES: usize = 3;

/// A new sandbox as handed back to the prospect: the token exists only here.
pub struct Created {
    pub sandbox: Sandbox,
    pub token: IssuedToken,
    pub progress: watch::Receiver<Phase>,
}

impl Lifecycle {
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
        let store = &self.inner.store;
        let all = store.count_live_by_state(None).await?;
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
            && store.count_live_by_state(Some(demo.id)).await?.total() >= u64::from(cap)
        {
            return Err(LifecycleError::Capacity(format!(
                "this demo allows {cap} sandboxes at once"
            )));
        }
        Ok(())
    }

    /// Records the sandbox (if capacity allows) and starts provisioning it in the
    /// background. The spool must already hold every file. A sandbox taken from a warm
    /// pool has the member's id, not `id`.
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
                spec: demo.run_spec(),
                created_at: now,
                expires_at: now.plus_seconds(window.seconds()),
                files: spool.records().to_vec(),
                profiles: spool.profiles().to_vec(),
                prospect: prospect.clone(),
            };
            (new, token)
        };
        let (new, token, origin) = match self.claim_member(demo, &new_sandbox).await? {
            Some((new, token)) => {
                self.pools_changed();
                (new, token, Origin::Warm)
            }
            None => {
                let (new, token) = new_sandbox(id);
                self.inner
                    .store
                    .insert_sandbox(&new, self.capacity(demo))
                    .await?;
                let lifecycle = self.clone();
                tokio::spawn(async move { lifecycle.shed_pool_excess().await });
                (new, token, Origin::Cold)
            }
        };
        let id = new.id;
        let created = SandboxEvent::Created {
            files: new.files.len() as u32,
            bytes: new.files.iter().map(|f| f.bytes).sum(),
            window_seconds: window.seconds(),
            from_warm_pool: origin == Origin::Warm,
        };
        self.history().record(id, now, created).await;
        metrics::counter!("testdrive_sandboxes_created_total").increment(1);
        self.inner.wakeups.deadlines.notify_one();

        let sandbox = self.record(id).await?;
        let (cancel, phase, progress) = self.inner.provisions.register(id);
        let job = Provision {
            id,
            demo: demo.id,
            spec: demo.run_spec(),
            slot: sandbox.addr_slot,
            origin,
            cancel,
            phase,
            started: Instant::now(),
        };
        job.spawn(self.clone(), spool);
        Ok(Created {
            sandbox,
            token,
            progress,
        })
    }

    /// Claims a warm member of the demo's current spec for a new sandbox, if one is there.
    async fn claim_member(
        &self,
        demo: &Demo,
        new_sandbox: &impl Fn(SandboxId) -> (NewSandbox, IssuedToken),
    ) -> Result<Option<(NewSandbox, IssuedToken)>> {
        if demo.spec.warm_pool == 0 {
            return Ok(None);
        }
        let store = &self.inner.store;
        let members = store.warm_members(Some(demo.id)).await?;
        let ready = members
            .iter()
            .filter(|m| m.state == WarmState::Warm && m.spec == demo.run_spec());
        for member in ready.take(CLAIM_TRIES) {
            let (new, token) = new_sandbox(member.id);
            if store.claim_warm(&new, self.capacity(demo)).await? {
                return Ok(Some((new, token)));
            }
        }
        Ok(None)
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
        let until = sandbox.expires_at.plus_seconds(seconds);
        if until > latest {
            return Err(LifecycleError::TooLong { max_seconds });
        }
        if !self.inner.store.set_deadline(id, until).await? {
            return Err(LifecycleError::Ended);
        }
        let extended = SandboxEvent::Extended {
            by_seconds: seconds,
            until,
        };
        self.history().record(id, self.now(), extended).await;
        self.inner.wakeups.deadlines.notify_one();
        self.record(id).await
    }
}
