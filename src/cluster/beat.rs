//! The heartbeat: this node's `last_seen`, every `HEARTBEAT_EVERY`. A beat the database
//! does not take is tried again at the next; after `DOWN_AFTER` of silence the other nodes
//! count this one `down` and place no trial here.

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::domain::node::HEARTBEAT_EVERY;

pub(super) async fn run(cluster: Cluster, shutdown: CancellationToken) {
    let mut silent = false;
    loop {
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
