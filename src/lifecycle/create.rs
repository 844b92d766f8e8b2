//! Starting a trial and moving its deadline. A trial begins as soon as its form names the
//! demo (`begin`): it takes a place in the same statement that records it (or claims a warm
//! pool member of the demo's current spec, in one transaction), and provisioning starts in
//! the background, so a cold sandbox's container is made and started while the files still
//! stream in. Until they are all in (`Begun::finish`) the sandbox is `receiving`: it holds
//! its place but shows in no list, and a refused or abandoned upload deletes it with
//! everything made for it. `?wait=` watches the provisioning's phase.

use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::provision::{Origin, Phase, Provision};
use super::{Lifecycle, LifecycleError, Result};
use crate::domain::pool::WarmState;
use crate::domain::token::IssuedToken;
use crate::domain::{
    Answers, Demo, Invitation, NewSandbox, Prospect, ProspectNote, Received, Sandbox, SandboxEvent,
    SandboxId, TrialWindow,
};
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

/// What the prospect told the vendor with their files: the information sheet, their
/// answers to the demo's questions, and the invitation they came with.
#[derive(Clone, Debug, Default)]
pub struct Introduction {
    pub prospect: Prospect,
    pub answers: Answers,
    pub invitation: Option<Invitation>,
}

/// A trial whose files are still arriving. Dropped without `finish`, it is abandoned: the
/// sandbox and everything made for it go, as if it never was.
pub struct Begun {
    lifecycle: Lifecycle,
    id: SandboxId,
    token: IssuedToken,
    origin: Origin,
    /// Hands the spooled files, and what the demo is told of the prospect, to the
    /// provisioning; dropped, it abandons.
    files: Option<oneshot::Sender<(Spool, Vec<u8>)>>,
    progress: watch::Receiver<Phase>,
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

    /// Begins a trial of `demo` before its files arrive: records the sandbox (if capacity
    /// allows) or claims a warm member, and starts provisioning it in the background. Its
    /// files go into `Spool::create(dirs.root(), begun.id(), …)`.
    pub async fn begin(&self, demo: &Demo) -> Result<Begun> {
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
                // Until the files are in: the longest window, so no deadline falls meanwhile.
                expires_at: now.plus_seconds(demo.spec.trial.max_seconds),
                files: Vec::new(),
                profiles: Vec::new(),
                prospect: Prospect::default(),
                receiving: true,
            };
            (new, token)
        };
        let (id, token, origin) = match self.claim_member(demo, &new_sandbox).await? {
            Some((new, token)) => {
                self.pools_changed();
                (new.id, token, Origin::Warm)
            }
            None => {
                let (new, token) = new_sandbox(SandboxId::new());
                self.inner
                    .store
                    .insert_sandbox(&new, self.capacity(demo))
                    .await?;
                if let Err(err) = self.inner.settings.dirs.prepare(new.id).await {
                    self.inner.store.forget_unreceived(Some(new.id)).await?;
                    return Err(err.into());
                }
                let lifecycle = self.clone();
                tokio::spawn(async move { lifecycle.shed_pool_excess().await });
                (new.id, token, Origin::Cold)
            }
        };
        let sandbox = self.record(id).await?;
        let (cancel, phase, progress) = self.inner.provisions.register(id);
        let (files, arrived) = oneshot::channel();
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
        job.spawn(self.clone(), arrived);
        Ok(Begun {
            lifecycle: self.clone(),
            id,
            token,
            origin,
            files: Some(files),
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

impl Begun {
    /// The sandbox's id (a claimed warm member's): its files stream into its directory.
    pub fn id(&self) -> SandboxId {
        self.id
    }

    /// Every file is in `spool`: the sandbox gets its files, its prospect and its trial
    /// window (from now), takes its invitation (refused if that is used up or expired
    /// meanwhile), shows in lists, and its provisioning places the files and
    /// `prospect.json`.
    pub async fn finish(
        mut self,
        window: TrialWindow,
        introduction: Introduction,
        spool: Spool,
    ) -> Result<Created> {
        let lifecycle = self.lifecycle.clone();
        let (id, now) = (self.id, lifecycle.now());
        let Introduction {
            prospect,
            answers,
            invitation,
        } = introduction;
        let note = ProspectNote::new(
            &prospect,
            &answers,
            invitation.as_ref().and_then(|i| i.note.as_deref()),
        );
        let received = Received {
            created_at: now,
            expires_at: now.plus_seconds(window.seconds()),
            files: spool.records().to_vec(),
            profiles: spool.profiles().to_vec(),
            prospect,
            answers,
            invitation: invitation.map(|i| i.id),
        };
        if !lifecycle.inner.store.receive(id, &received).await? {
            return Err(LifecycleError::Ended);
        }
        let created = SandboxEvent::Created {
            files: received.files.len() as u32,
            bytes: received.files.iter().map(|f| f.bytes).sum(),
            window_seconds: window.seconds(),
            from_warm_pool: self.origin == Origin::Warm,
        };
        lifecycle.history().record(id, now, created).await;
        metrics::counter!("testdrive_sandboxes_created_total").increment(1);
        lifecycle.inner.wakeups.deadlines.notify_one();
        // A provisioning stopped meanwhile drops the spool, which deletes it.
        if let Some(files) = self.files.take() {
            let _ = files.send((spool, note.to_json()));
        }
        Ok(Created {
            sandbox: lifecycle.record(id).await?,
            token: self.token.clone(),
            progress: self.progress.clone(),
        })
    }

    /// The upload was refused: the sandbox and everything made for it go; returns once they
    /// have.
    pub async fn abandon(mut self) {
        self.files.take();
        let _ = self
            .progress
            .wait_for(|phase| *phase != Phase::Provisioning)
            .await;
    }
}
