//! The reconciler: at start and then periodically, make the Engine and the spool agree with
//! the database. Provisionings cut short by a restart are failed; ended sandboxes whose
//! teardown did not finish are torn down; Engine objects labelled for this deployment whose
//! sandbox is unknown or ended are removed.

use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::SandboxStatus;

/// At start nothing is being provisioned, so every spool directory is left over from a
/// previous run: the sandboxes they belonged to are failed by the first reconciliation.
pub(super) async fn clear_spool(lifecycle: &Lifecycle) -> std::io::Result<()> {
    let root = &lifecycle.settings().spool_root;
    tokio::fs::create_dir_all(root).await?;
    let mut entries = tokio::fs::read_dir(root).await?;
    while let Some(entry) = entries.next_entry().await? {
        crate::spool::remove_dir(&entry.path()).await?;
    }
    Ok(())
}

async fn once(lifecycle: &Lifecycle, at_start: bool) -> Result<(), LifecycleError> {
    let store = lifecycle.store();
    if at_start {
        for id in store.ids_with_status(SandboxStatus::Provisioning).await? {
            if !lifecycle.is_provisioning_here(id) {
                lifecycle
                    .record_failure(id, "the service restarted while provisioning")
                    .await;
            }
        }
    }
    for id in store.pending_teardowns().await? {
        lifecycle.teardown(id).await?;
    }
    for id in lifecycle.engine().labelled_sandboxes().await? {
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
    let mut at_start = true;
    loop {
        match once(&lifecycle, at_start).await {
            Ok(()) => at_start = false,
            Err(err) => tracing::warn!(%err, "reconciliation incomplete; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(lifecycle.settings().reconcile_every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
