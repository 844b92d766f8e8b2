//! The reconciler: at start and then periodically, make the Engine and the spool agree with
//! the database. Provisionings cut short by a restart are failed (before the service takes
//! requests); ended sandboxes whose teardown did not finish are torn down; sandboxes whose
//! container vanished end, those whose container stopped sleep; Engine objects labelled for
//! this deployment whose sandbox is unknown or ended are removed; warm pool members whose
//! container stopped are replaced.

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::{SandboxId, SandboxStatus};

/// Before the service takes requests: every spool directory is left over from the previous
/// run, and every `provisioning` sandbox was cut short by it (nothing is provisioning yet,
/// so none can be mistaken for one this run started).
pub(super) async fn recover(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    let root = &lifecycle.settings().spool_root;
    tokio::fs::create_dir_all(root).await?;
    let mut entries = tokio::fs::read_dir(root).await?;
    while let Some(entry) = entries.next_entry().await? {
        crate::spool::remove_dir(&entry.path()).await?;
    }
    for id in lifecycle
        .store()
        .ids_with_status(SandboxStatus::Provisioning)
        .await?
    {
        lifecycle
            .record_failure(id, "the service restarted while provisioning")
            .await;
    }
    // An end recorded just before the previous run stopped may lack its event (and so its
    // webhook): write it now, dated when the sandbox ended.
    for id in lifecycle.store().ends_without_event().await? {
        if let Some(sandbox) = lifecycle.store().sandbox(id).await?
            && let (Some(reason), Some(at)) = (sandbox.end_reason, sandbox.ended_at)
        {
            lifecycle
                .event_at(id, at, reason.as_str(), Some("recorded at restart"))
                .await;
        }
    }
    // A wake cut short left its sandbox asleep; its place is free again.
    lifecycle.store().release_all_wakes().await?;
    // Warm pool members being made or drained are removed; the keeper makes new ones.
    lifecycle.recover_pools().await?;
    // Webhook deliveries the previous run was sending go again (at least once).
    lifecycle.store().release_delivery_leases().await?;
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

/// One pass. Only failing to read the database or list the Engine ends it early.
async fn once(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    let store = lifecycle.store();
    each(store.pending_teardowns().await?, "teardown", |id| {
        lifecycle.teardown(id)
    })
    .await;
    let on_engine = lifecycle.engine().labelled().await?;

    // Database → Engine: a sandbox whose container vanished is over; one whose container
    // stopped while it should run goes to sleep (see `Lifecycle::repair`); one asleep whose
    // container still runs (the stop failed, the Engine was down) is stopped again.
    let ready: Vec<SandboxId> = store
        .ids_with_status(SandboxStatus::Ready)
        .await?
        .into_iter()
        .filter(|id| on_engine.containers.get(id) != Some(&true))
        .collect();
    each(ready, "repair", |id| {
        lifecycle.repair(id, SandboxStatus::Ready)
    })
    .await;
    let asleep = store.ids_with_status(SandboxStatus::Sleeping).await?;
    each(asleep, "repair", |id| {
        let container = on_engine.containers.get(&id).copied();
        async move {
            match container {
                None => lifecycle.repair(id, SandboxStatus::Sleeping).await,
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
    lifecycle
        .repair_pools(|id| on_engine.containers.get(&id) == Some(&true))
        .await?;

    // Engine → database: objects of unknown or ended sandboxes go (a warm pool member is
    // known: the keeper looks after it).
    each(on_engine.sandboxes().into_iter().collect(), "cleanup", |id| async move {
        match lifecycle.store().sandbox(id).await? {
            Some(sandbox) if sandbox.status.is_live() => {}
            Some(_) => lifecycle.teardown(id).await?,
            None if lifecycle.store().warm_member(id).await?.is_some() => {}
            None => {
                let removed = lifecycle.engine().remove_sandbox(id).await?;
                tracing::warn!(sandbox_id = %id, removed, "removed objects of an unknown sandbox");
            }
        }
        Ok(())
    })
    .await;
    Ok(())
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    loop {
        if let Err(err) = once(&lifecycle).await {
            tracing::warn!(%err, "reconciliation incomplete; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(lifecycle.settings().reconcile_every) => {}
            _ = lifecycle.inner.reconcile_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
