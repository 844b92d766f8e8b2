//! The heartbeat: this node's `last_seen`, every `HEARTBEAT_EVERY`. A beat the database
//! does not take is tried again at the next; after `DOWN_AFTER` of silence the other nodes
//! count this one `down` and place no trial here. Each beat also looks at the images of
//! demos new to this node (`Lifecycle::check_new_images`).

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::domain::node::HEARTBEAT_EVERY;
use crate::lifecycle::Lifecycle;

pub(super) async fn run(cluster: Cluster, lifecycle: Lifecycle, shutdown: CancellationToken) {
    let mut silent = false;
    loop {
        // A demo registered on another node is placed here once this Engine is seen to
        // have its image.
        if cluster.shared()
            && let Err(err) = lifecycle.check_new_images().await
        {
            tracing::debug!(%err, "cannot look at new demos' images now");
        }
        match cluster.inner.store.heartbeat(cluster.now()).await {
            Ok(()) if silent => {
                tracing::info!(node = %cluster.me(), "heartbeats reach the database again");
                silent = false;
            }
            Ok(()) => {}
            Err(err) if !silent => {
                tracing::warn!(node = %cluster.me(), %err, "cannot record a heartbeat");
                silent = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
