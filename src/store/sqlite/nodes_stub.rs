//! TEMPORARY: replaced by the SQL store's nodes (branch store-pg).
use async_trait::async_trait;

use super::SqliteStore;
use crate::domain::{DemoId, Node, NodeLoad, NodeName, Timestamp};
use crate::store::{NodeStore, Result};

#[async_trait]
impl NodeStore for SqliteStore {
    async fn register_node(&self, _node: &Node) -> Result<()> {
        Ok(())
    }
    async fn heartbeat(&self, _at: Timestamp) -> Result<()> {
        Ok(())
    }
    async fn nodes(&self) -> Result<Vec<NodeLoad>> {
        Ok(vec![])
    }
    async fn node_record(&self, _name: &NodeName) -> Result<Option<Node>> {
        Ok(None)
    }
    async fn place(&self, _demo: DemoId, _up_since: Timestamp) -> Result<Option<NodeName>> {
        Ok(None)
    }
    async fn image_here(&self, _demo: DemoId, _ready: bool) -> Result<()> {
        Ok(())
    }
    async fn take_care(&self, _d: &NodeName, _n: Timestamp, _u: Timestamp) -> Result<bool> {
        Ok(false)
    }
}
