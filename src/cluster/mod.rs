//! This node among the deployment's nodes: several `testdrive serve` processes sharing one
//! Postgres database, each driving its own Docker Engine (`docs/scale-out.md`).
//!
//! - `beat`: the node registers itself (name, URL, Engine endpoint, capacity) as it starts
//!   and says it is alive every `HEARTBEAT_EVERY`; a node silent for `DOWN_AFTER` is `down`.
//! - Placement: a new trial goes to the up node with the most free places among those whose
//!   Engine has the demo's image (`place`, one query).
//! - Ownership: a sandbox lives on one node for good (its container on that node's Engine,
//!   its files on that node's disk), so `owner` is cached once read. HTTP forwards whatever
//!   acts on a sandbox to its owner (`http::forward`), with the node key (`SecretBox::node_key`)
//!   that only nodes sharing the deployment's secret key know.
//! - `care`: a live node keeps the deadlines of a node that is down when it reaches that
//!   node's Engine; else the node keeps them itself as it starts again.
//!
//! With SQLite there is one node: everything here still runs (the node is listed, its
//! sandboxes carry its name), but nothing is placed elsewhere or forwarded.

mod beat;
mod care;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::node::DOWN_AFTER;
use crate::domain::{DemoId, Node, NodeLoad, NodeName, SandboxId, Timestamp};
use crate::lifecycle::Lifecycle;
use crate::store::{Result, Store};

pub use care::Caretaking;

/// How long a node's record read from the database is used before it is read again.
const NODES_FRESH_FOR: Duration = Duration::from_secs(1);
/// Owners remembered at most (each a few dozen bytes); past this the memory starts again.
const OWNERS_REMEMBERED: usize = 100_000;

/// A handle on this node's place in the deployment. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: Node,
    shared: bool,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: String,
    owners: Mutex<HashMap<SandboxId, NodeName>>,
    nodes: Mutex<Option<(Instant, Arc<Vec<Node>>)>>,
}

impl Cluster {
    /// `me` as it registers; `shared`: whether other nodes may share the database; `key`:
    /// the node key (`SecretBox::node_key`).
    pub fn new(
        me: Node,
        shared: bool,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: [u8; 32],
    ) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                me,
                shared,
                store,
                clock,
                key: hex::encode(key),
                owners: Mutex::new(HashMap::new()),
                nodes: Mutex::new(None),
            }),
        }
    }

    pub fn me(&self) -> &NodeName {
        &self.inner.me.name
    }

    /// Whether other nodes may share the database (and so own sandboxes).
    pub fn shared(&self) -> bool {
        self.inner.shared
    }

    /// What this node shows another when it forwards a request.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Whether `presented` is the node key: the request comes from another node.
    pub fn is_node_key(&self, presented: &[u8]) -> bool {
        bool::from(presented.ct_eq(self.inner.key.as_bytes()))
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Registers this node (as it starts, before it takes requests).
    pub async fn register(&self) -> Result<()> {
        let mut me = self.inner.me.clone();
        me.started_at = self.now();
        me.last_seen = me.started_at;
        self.inner.store.register_node(&me).await
    }

    /// The node that runs the sandbox; `None` when there is no such sandbox.
    pub async fn owner(&self, id: SandboxId) -> Result<Option<NodeName>> {
        if let Some(node) = self.lock_owners().get(&id) {
            return Ok(Some(node.clone()));
        }
        let Some(sandbox) = self.inner.store.sandbox(id).await? else {
            return Ok(None);
        };
        let mut owners = self.lock_owners();
        if owners.len() >= OWNERS_REMEMBERED {
            owners.clear();
        }
        owners.insert(id, sandbox.node.clone());
        Ok(Some(sandbox.node))
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, NodeName>> {
        self.inner.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Another node as last read (at most `NODES_FRESH_FOR` ago), and whether it is up.
    pub async fn peer(&self, name: &NodeName) -> Result<Option<(Node, bool)>> {
        let fresh = {
            let cached = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
            cached
                .as_ref()
                .filter(|(at, _)| at.elapsed() < NODES_FRESH_FOR)
                .map(|(_, nodes)| nodes.clone())
        };
        let nodes = match fresh {
            Some(nodes) => nodes,
            None => {
                let read: Vec<Node> = self
                    .inner
                    .store
                    .nodes()
                    .await?
                    .into_iter()
                    .map(|load| load.node)
                    .collect();
                let read = Arc::new(read);
                *self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), read.clone()));
                read
            }
        };
        let now = self.now();
        Ok(nodes.iter().find(|node| &node.name == name).map(|node| {
            (
                node.clone(),
                node.status(now) == crate::domain::NodeStatus::Up,
            )
        }))
    }

    /// Where a new trial of `demo` goes: this node when it is alone; else the up node with
    /// the most free places that has the demo's image (`None`: no node has a place).
    pub async fn place(&self, demo: DemoId) -> Result<Option<NodeName>> {
        if !self.inner.shared {
            return Ok(Some(self.me().clone()));
        }
        let up_since = Timestamp::from_millis(self.now().millis() - DOWN_AFTER.as_millis() as i64);
        self.inner.store.place(demo, up_since).await
    }

    /// Every node, with its live sandboxes.
    pub async fn nodes(&self) -> Result<Vec<NodeLoad>> {
        self.inner.store.nodes().await
    }

    /// Beats until `shutdown`, and keeps lost nodes' deadlines (`care`) when other nodes
    /// share the database.
    pub async fn run(self, lifecycle: Lifecycle, care: Caretaking, shutdown: CancellationToken) {
        if self.inner.shared {
            tokio::join!(
                beat::run(self.clone(), lifecycle, shutdown.clone()),
                care.run(self.clone(), shutdown)
            );
        } else {
            beat::run(self, lifecycle, shutdown).await;
        }
    }
}
