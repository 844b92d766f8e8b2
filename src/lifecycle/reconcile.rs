//! The reconciler: at start and then periodically, make the Engine and the spool agree with
//! the database. Provisionings cut short by a restart are failed (before the service takes
//! requests); ended sandboxes whose teardown did not finish are torn down; sandboxes whose
//! container vanished end, those whose container stopped sleep; Engine objects labelled for
//! this deployment whose sandbox is unknown or ended are removed.

use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::SandboxStatus;

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
    // A wake cut short left its sandbox asleep; its place is free again.
    lifecycle.store().release_all_wakes().await?;
    Ok(())
}

async fn once(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    let store = lifecycle.store();
    for id in store.pending_teardowns().await? {
        lifecycle.teardown(id).await?;
    }
    let on_engine = lifecycle.engine().labelled().await?;

    // Database → Engine: a sandbox whose container vanished is over; one whose container
    // stopped while it should run goes to sleep (see `Lifecycle::repair`); one asleep whose
    // container still runs (the stop failed, the Engine was down) is stopped again.
    for id in store.ids_with_status(SandboxStatus::Ready).await? {
        if on_engine.containers.get(&id) != Some(&true) {
            lifecycle.repair(id, SandboxStatus::Ready).await?;
        }
    }
    for id in store.ids_with_status(SandboxStatus::Sleeping).await? {
        match on_engine.containers.get(&id) {
            None => lifecycle.repair(id, SandboxStatus::Sleeping).await?,
            Some(true) => lifecycle.put_to_sleep(id).await,
            Some(false) => {}
        }
    }

    // Engine → database: objects of unknown or ended sandboxes go.
    for id in on_engine.sandboxes() {
        match store.sandbox(id).await? {
            Some(sandbox) if sandbox.status.is_live() => {}
            Some(_) => lifecycle.teardown(id).await?,
            None => {
                let removed = lifecycle.engine().remove_sandbox(id).await?;
                tracing::warn!(sandbox_id = %id, removed, "removed objects of an unknown sandbox");
            }
        }
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
            _ = lifecycle.inner.reconcile_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
