//! Keeping a lost node's deadlines. Every `CARE_EVERY`, a live node looks for nodes that
//! are `down`; for each it takes the care lease (`NodeStore::take_care`: one caretaker at a
//! time, whichever nodes are up), reaches that node's Engine at the endpoint it registered,
//! and ends every sandbox of it whose deadline passed (`Lifecycle::keep_lost_deadlines`):
//! announced, container and volumes removed. An Engine it cannot reach is left alone: the
//! node keeps those deadlines itself as it starts again, before it takes requests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::clock::Clock;
use crate::domain::{Node, NodeName, NodeStatus, Timestamp};
use crate::engine::{
    DockerEngine, Engine, EngineSettings, HostFirewall, NetworkSettings, network_setting_key,
};
use crate::lifecycle::{Lifecycle, LifecycleSettings};
use crate::store::Store;
use crate::webhooks::Webhooks;

/// How often down nodes are looked for.
const CARE_EVERY: Duration = Duration::from_secs(2);
/// How long one pass's lease on a down node lasts: a caretaker that dies hands over soon.
const LEASE: Duration = Duration::from_secs(10);
/// How long a down node's Engine is given to answer (a host that is gone never does).
const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a node needs to act for a lost one.
pub struct Caretaking {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub webhooks: Webhooks,
    pub credentials: Arc<dyn crate::engine::Credentials>,
    pub settings: LifecycleSettings,
    /// The deployment's id, which labels and names every Engine object.
    pub instance: String,
}

impl Caretaking {
    pub(super) async fn run(self, cluster: Cluster, shutdown: CancellationToken) {
        let mut acting: HashMap<NodeName, Lifecycle> = HashMap::new();
        // Said once per node, not at every pass.
        let mut unreachable: HashSet<NodeName> = HashSet::new();
        loop {
            if let Err(err) = self.pass(&cluster, &mut acting, &mut unreachable).await {
                tracing::debug!(%err, "cannot look after down nodes now");
            }
            tokio::select! {
                _ = tokio::time::sleep(CARE_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn pass(
        &self,
        cluster: &Cluster,
        acting: &mut HashMap<NodeName, Lifecycle>,
        unreachable: &mut HashSet<NodeName>,
    ) -> crate::store::Result<()> {
        let now = self.clock.now();
        for load in cluster.nodes().await? {
            let node = load.node;
            if &node.name == cluster.me() || node.status(now) == NodeStatus::Up {
                acting.remove(&node.name);
                continue;
            }
            let until = Timestamp::from_millis(now.millis() + LEASE.as_millis() as i64);
            if !self.store.take_care(&node.name, now, until).await? {
                continue;
            }
            let lifecycle = match acting.get(&node.name) {
                Some(lifecycle) => lifecycle.clone(),
                None => match self.act_for(&node).await {
                    Some(lifecycle) => acting.entry(node.name.clone()).or_insert(lifecycle).clone(),
                    None => continue,
                },
            };
            let answers = tokio::time::timeout(ENGINE_TIMEOUT, lifecycle.engine().ping()).await;
            if !matches!(answers, Ok(Ok(()))) {
                if unreachable.insert(node.name.clone()) {
                    tracing::warn!(node = %node.name, engine = %node.engine, "a down node's Engine does not answer: its deadlines are kept by the node itself when it is back");
                }
                continue;
            }
            unreachable.remove(&node.name);
            match lifecycle.keep_lost_deadlines().await {
                Ok(ended) if !ended.is_empty() => tracing::info!(
                    node = %node.name,
                    ended = ended.len(),
                    "kept the deadlines of a node that is down"
                ),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(node = %node.name, %err, "cannot keep a down node's deadlines")
                }
            }
        }
        Ok(())
    }

    /// A lifecycle acting for `node`: its view of the database and its Engine.
    async fn act_for(&self, node: &Node) -> Option<Lifecycle> {
        let key = network_setting_key(Some(&node.name));
        let stored = self.store.setting(&key).await.ok().flatten();
        let Some(network) = stored.and_then(|raw| NetworkSettings::from_stored(&raw).ok()) else {
            tracing::warn!(node = %node.name, "a down node's sandbox network is not recorded; cannot reach its sandboxes");
            return None;
        };
        let settings = EngineSettings {
            host: Some(node.engine.clone()),
            network,
            // That host's firewall is that node's; nothing is created from here.
            host_firewall: HostFirewall::None,
            tmpfs_mb: 0,
        };
        let connect = DockerEngine::connect(settings, self.instance.clone());
        let engine = match tokio::time::timeout(ENGINE_TIMEOUT, connect).await {
            Err(_) => return None,
            Ok(Ok(engine)) => Arc::new(engine) as Arc<dyn Engine>,
            Ok(Err(err)) => {
                tracing::debug!(node = %node.name, %err, "cannot connect to a down node's Engine");
                return None;
            }
        };
        Some(Lifecycle::new(
            self.store.for_node(&node.name),
            engine,
            self.clock.clone(),
            self.webhooks.clone(),
            self.credentials.clone(),
            self.settings.clone(),
        ))
    }
}
