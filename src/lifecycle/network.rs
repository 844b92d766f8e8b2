//! Keeping the sandbox network there. Hosts get cleaned: `docker network prune` on a quiet
//! host removes the network while no sandbox runs (stopped containers do not hold it), and
//! someone may flush the host firewall. Every start that meets a missing network makes it
//! again and starts once more, so the trial (or the wake) that met the gap still succeeds;
//! the reconciler checks both on every pass, so the next trial does not even meet it.

use super::Lifecycle;
use crate::domain::{SandboxId, ServiceEvent};
use crate::engine::{EngineError, Result};

impl Lifecycle {
    /// Makes the sandbox network and its firewall rules whole again if they are not, and
    /// says so in the deployment's events; `noticed_by` says where the gap was met.
    pub(super) async fn heal_network(&self, noticed_by: &str) -> Result<()> {
        let repair = self.engine().ensure_network().await?;
        if repair.recreated {
            metrics::counter!("testdrive_network_recreated_total").increment(1);
            let network = self.engine().network_name();
            let noticed_by = noticed_by.to_string();
            self.note(ServiceEvent::NetworkRecreated {
                network,
                noticed_by,
            })
            .await;
        }
        for rule in repair.rules_restored {
            self.note(ServiceEvent::FirewallRestored { rule }).await;
        }
        Ok(())
    }

    /// Starts the sandbox's container; if its network went missing, makes the network
    /// again (unless the reconciler did already), puts the container on it at its address,
    /// and starts once more.
    pub(super) async fn start_container(&self, id: SandboxId, noticed_by: &str) -> Result<()> {
        match self.engine().start(id).await {
            Err(EngineError::NetworkMissing) => {
                self.heal_network(noticed_by).await?;
                self.engine().reattach(id).await?;
                self.engine().start(id).await
            }
            other => other,
        }
    }
}
