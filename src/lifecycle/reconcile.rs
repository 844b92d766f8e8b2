//! The reconciler: at start and then periodically, make the Engine and the sandboxes'
//! directories agree with
//! the database. Provisionings cut short by a restart are failed (before the service takes
//! requests); ended sandboxes whose teardown did not finish are torn down; sandboxes whose
//! container vanished end, those whose container stopped sleep (an Engine restart stops them
//! all: one `containers_stopped` event of the deployment per pass); Engine objects labelled for
//! this deployment whose sandbox is unknown or ended are removed; warm pool members whose
//! container stopped are replaced. Each pass first makes the sandbox network and its
//! firewall rules whole again if someone removed them.
//!
//! A pass compares an Engine listing with database reads made after it, so what it saw may
//! be stale by the time it acts: every repair re-reads the database on the sandbox's turn
//! and asks the Engine again before it changes anything.

use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::{Ending, ImageStatus, SandboxEvent, SandboxId, SandboxStatus, ServiceEvent};
use crate::engine::{EngineError, Found};

/// Before the service takes requests: every upload still arriving was cut short by the
/// restart (its sandbox is forgotten, as a refused upload is), as is every pull still marked
/// under way, and every `provisioning` sandbox was cut short by it (nothing is provisioning
/// yet, so none can be mistaken for one this run started).
pub(super) async fn recover(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    // Their containers go now (an Engine down leaves them to the reconciler, as orphans).
    let forgotten = lifecycle.store().forget_unreceived(None).await?;
    if !forgotten.is_empty() {
        tracing::info!(
            sandboxes = forgotten.len(),
            "uploads cut short by the restart: their sandboxes are forgotten"
        );
    }
    each(
        forgotten,
        "removing a cut-short upload's objects",
        |id| async move {
            lifecycle.engine().remove_sandbox(id).await?;
            Ok(())
        },
    )
    .await;
    lifecycle.sweep_dirs().await?;
    // Their ends are claimed now; the reconciler's first pass tears them down, many at
    // once, right after the service starts.
    let cut_short = lifecycle
        .store()
        .ids_with_status(SandboxStatus::Provisioning)
        .await?;
    for id in cut_short {
        let ending = Ending::failed("the service restarted while provisioning");
        lifecycle.claim_end(id, ending).await?;
    }
    lifecycle.announce_unannounced_ends().await?;
    // Deadlines that passed while this node was down (and no other node could reach its
    // Engine) are kept before it takes a request: ended now, torn down by the first pass.
    lifecycle.claim_passed_deadlines().await?;
    // A wake cut short left its sandbox asleep; its place is free again.
    lifecycle.store().release_all_wakes().await?;
    // Warm pool members being made or drained are removed; the keeper makes new ones.
    lifecycle.recover_pools().await?;
    // Which demos' images this node's Engine has, so that trials are placed here from the
    // first request (an Engine that does not answer yet is asked again by the reconciler).
    if let Err(err) = lifecycle.check_images().await {
        tracing::warn!(%err, "cannot check the demos' images yet; the reconciler will");
    }
    // Pulls cut short by the restart start again.
    for demo in lifecycle.store().demos(None).await? {
        if demo.image_status == ImageStatus::Pulling {
            lifecycle.pull_in_background(demo);
        }
    }
    Ok(())
}

/// Sandboxes handled at once in a pass: the Engine removes several containers in parallel
/// faster than one after another, and a restart may inherit many overdue ones.
const AT_ONCE: usize = 16;

/// Does `work` for each sandbox, several at once; a failure is logged (the next pass
/// retries it) and never holds up the others.
async fn each<F, Fut>(ids: Vec<SandboxId>, what: &str, work: F)
where
    F: Fn(SandboxId) -> Fut,
    Fut: Future<Output = Result<(), LifecycleError>>,
{
    stream::iter(ids)
        .for_each_concurrent(AT_ONCE, |id| {
            let job = work(id);
            async move {
                if let Err(err) = job.await {
                    tracing::warn!(sandbox_id = %id, %err, "reconciler: {what} failed; will retry");
                }
            }
        })
        .await;
}

impl Lifecycle {
    /// Removes the directories of sandboxes the database does not know (an upload cut
    /// short, a removal that failed). Listed first, then each asked about; a sandbox's own
    /// teardown removes its directory, so only unknown ones go here.
    async fn sweep_dirs(&self) -> Result<(), LifecycleError> {
        let dirs = &self.inner.settings.dirs;
        let store = self.store();
        for id in dirs.listed().await? {
            // Most are live sandboxes: one query. A claim turns a warm member into a
            // sandbox in one transaction, so one being claimed now is found as the one or,
            // asked after it, as the other.
            if store.sandbox(id).await?.is_some()
                || store.warm_member(id).await?.is_some()
                || store.sandbox(id).await?.is_some()
            {
                continue;
            }
            dirs.remove(id).await?;
        }
        Ok(())
    }

    /// Repairs a sandbox the reconciler saw broken, if it still is once it is the sandbox's
    /// turn (the listing may be older than a sleep, a wake or a provisioning that happened
    /// meanwhile). A container that vanished ends the sandbox (`failed`); one that stopped
    /// while it should run (a crash, the memory limit, a host restart) puts it to sleep, so
    /// the next request restarts it — and fails it if the demo does not come up again.
    /// Whether it put a sandbox to sleep so.
    async fn repair(&self, id: SandboxId, seen: SandboxStatus) -> Result<bool, LifecycleError> {
        let turn = self.inner.turns.take(id).await;
        if self.record(id).await?.status != seen {
            return Ok(false);
        }
        match self.engine().state(id).await {
            Ok(state) if state.running || seen == SandboxStatus::Sleeping => {}
            Ok(state) => {
                if self.store().mark_asleep(id).await? {
                    let stopped = SandboxEvent::Stopped {
                        exit_code: state.exit_code.unwrap_or(-1),
                        oom_killed: state.oom_killed,
                    };
                    self.history().record(id, self.now(), stopped).await;
                    return Ok(true);
                }
            }
            Err(EngineError::NotFound(_)) => {
                let vanished = Ending::failed("the sandbox's container vanished");
                self.end_within(&turn, vanished).await?;
            }
            Err(err) => return Err(err.into()),
        }
        Ok(false)
    }

    /// Removes the objects of a sandbox the database does not know, or knows as ended.
    /// Asked in this order because a warm member becomes a sandbox in one transaction: a
    /// member read as gone is then found as the sandbox it became.
    async fn clean_up(&self, id: SandboxId, found: &Found) -> Result<(), LifecycleError> {
        let store = self.store();
        if store.warm_member(id).await?.is_some() {
            return Ok(()); // the keeper looks after it
        }
        match store.sandbox(id).await? {
            Some(sandbox) if sandbox.status.is_live() => Ok(()),
            // Another node's, on an Engine nodes share: its files are on that node's disk,
            // and only that node may say they are gone.
            Some(sandbox) if &sandbox.node != store.node() => Ok(()),
            Some(_) => {
                self.teardown(id).await?;
                // The teardown removes what a sandbox is made with; a network labelled for
                // it (made by hand, or by an older testdrive) goes too.
                if !found.networks.is_empty() {
                    let networks = Found {
                        networks: found.networks.clone(),
                        ..Found::default()
                    };
                    self.engine().remove_found(&networks).await?;
                }
                Ok(())
            }
            // Exactly what was found, by the Engine's ids: whatever the objects are named,
            // containers go first so that their volumes and networks are free to go.
            None => {
                let removed = self.engine().remove_found(found).await?;
                self.note(ServiceEvent::OrphansRemoved {
                    sandbox: id,
                    containers: removed.containers,
                    volumes: removed.volumes,
                    networks: removed.networks,
                })
                .await;
                Ok(())
            }
        }
    }
}

/// One pass. Only failing to read the database or list the Engine ends it early.
pub(super) async fn once(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    let store = lifecycle.store();
    // The sandbox network and its firewall rules, made again if someone removed them, before
    // anything needs them. Not a reason to skip the rest: teardowns and deadlines come first.
    if let Err(err) = lifecycle.heal_network("by the reconciler").await {
        tracing::warn!(%err, "cannot make the sandbox network whole; will retry");
    }
    // A failed load command's output may hold the prospect's data: it lasts no longer
    // than the trial window the prospect asked for.
    store.forget_load_outputs(lifecycle.now()).await?;
    each(store.pending_teardowns().await?, "teardown", |id| {
        lifecycle.teardown(id)
    })
    .await;
    if let Err(err) = lifecycle.sweep_dirs().await {
        tracing::warn!(%err, "cannot remove the directories of unknown sandboxes; will retry");
    }
    let on_engine = lifecycle.engine().labelled().await?;

    // Database → Engine: a sandbox whose container vanished is over; one whose container
    // stopped while it should run goes to sleep (see `repair`); one asleep whose container
    // still runs (the stop failed, the Engine was down) is stopped again.
    let ready: Vec<SandboxId> = store
        .ids_with_status(SandboxStatus::Ready)
        .await?
        .into_iter()
        .filter(|id| !on_engine.runs(*id))
        .collect();
    let stopped = AtomicU32::new(0);
    let counted = &stopped;
    each(ready, "repair", |id| async move {
        if lifecycle.repair(id, SandboxStatus::Ready).await? {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
    .await;
    // One event for them all: an Engine restart stops every container at once.
    let sandboxes = stopped.into_inner();
    if sandboxes > 0 {
        lifecycle
            .note(ServiceEvent::ContainersStopped { sandboxes })
            .await;
    }
    let asleep = store.ids_with_status(SandboxStatus::Sleeping).await?;
    each(asleep, "repair", |id| {
        let container = on_engine.container(id);
        async move {
            match container {
                None => lifecycle
                    .repair(id, SandboxStatus::Sleeping)
                    .await
                    .map(drop),
                Some(true) => {
                    lifecycle.put_to_sleep(id).await;
                    Ok(())
                }
                Some(false) => Ok(()),
            }
        }
    })
    .await;

    // Warm pool members whose container stopped or vanished are replaced.
    lifecycle.repair_pools(|id| on_engine.runs(id)).await?;

    // Engine → database: objects of unknown or ended sandboxes go.
    let listed = on_engine.sandboxes().into_iter().collect();
    each(listed, "cleanup", |id| {
        let found = on_engine.by_sandbox.get(&id).cloned().unwrap_or_default();
        async move { lifecycle.clean_up(id, &found).await }
    })
    .await;

    // Demos whose image vanished from the Engine leave the catalog; back when it is.
    lifecycle.check_images().await?;
    if lifecycle.settings().remove_unused_images {
        lifecycle.remove_unused_images().await?;
    }
    Ok(())
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    loop {
        if let Err(err) = once(&lifecycle).await {
            tracing::warn!(%err, "reconciliation incomplete; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(lifecycle.settings().reconcile_every) => {}
            _ = lifecycle.inner.wakeups.reconcile.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
