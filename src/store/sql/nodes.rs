//! The deployment's nodes: each registers itself and beats; new trials are placed on the up
//! node with the most free places that has the demo's image; a down node's deadlines are
//! kept by one caretaker at a time, under a lease on the down node's row.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, corrupt, live};
use crate::domain::{DemoId, Node, NodeLoad, NodeName, Timestamp};
use crate::store::{NodeStore, Result, StoreError};

fn node_from(row: &AnyRow) -> Result<Node> {
    Ok(Node {
        name: NodeName::parse(row.try_get("name")?).map_err(corrupt)?,
        url: row.try_get("url")?,
        engine: row.try_get("engine")?,
        max_sandboxes: row
            .try_get::<i64, _>("max_sandboxes")?
            .clamp(0, u32::MAX.into()) as u32,
        started_at: Timestamp::from_millis(row.try_get("started_at")?),
        last_seen: Timestamp::from_millis(row.try_get("last_seen")?),
    })
}

/// A node's live sandboxes (those still receiving files are `provisioning`), as the SQL
/// expression of the row `n`.
macro_rules! live_on_node {
    () => {
        concat!(
            "(SELECT COUNT(*) FROM sandboxes s WHERE s.node = n.name AND s.status IN ",
            live!(),
            ")"
        )
    };
}

#[async_trait]
impl NodeStore for SqlStore {
    async fn register_node(&self, node: &Node) -> Result<()> {
        if node.name != self.node {
            return Err(StoreError::Conflict(format!(
                "this store acts for node {}, not {}",
                self.node, node.name
            )));
        }
        // A node that starts again keeps its own deadlines: a caretaker's lease ends.
        let query = sqlx::query(
            "INSERT INTO nodes (name, url, engine, max_sandboxes, started_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET
                 url = excluded.url, engine = excluded.engine,
                 max_sandboxes = excluded.max_sandboxes, started_at = excluded.started_at,
                 last_seen = excluded.last_seen, caretaker = NULL, care_until = NULL",
        )
        .bind(node.name.as_str())
        .bind(&node.url)
        .bind(&node.engine)
        .bind(i64::from(node.max_sandboxes))
        .bind(node.started_at.millis())
        .bind(node.last_seen.millis());
        self.run(query).await
    }

    async fn heartbeat(&self, at: Timestamp) -> Result<()> {
        // Never backwards (a late beat after a newer one).
        let query = sqlx::query(
            "UPDATE nodes SET last_seen = CASE WHEN last_seen > $1 THEN last_seen ELSE $1 END
             WHERE name = $2",
        )
        .bind(at.millis())
        .bind(self.node.as_str());
        self.run(query).await
    }

    async fn nodes(&self) -> Result<Vec<NodeLoad>> {
        let query = sqlx::query(concat!(
            "SELECT n.*, ",
            live_on_node!(),
            " AS live FROM nodes n ORDER BY n.name"
        ));
        self.all(query, |row| {
            Ok(NodeLoad {
                node: node_from(row)?,
                live: row.try_get::<i64, _>("live")?.max(0) as u64,
            })
        })
        .await
    }

    async fn node_record(&self, name: &NodeName) -> Result<Option<Node>> {
        let query = sqlx::query("SELECT * FROM nodes WHERE name = $1").bind(name.as_str());
        self.one(query, node_from).await
    }

    async fn place(&self, demo: DemoId, up_since: Timestamp) -> Result<Option<NodeName>> {
        // A hint, read without locks: the node that takes the trial checks its places again
        // in the insert, under its own lock.
        let query = sqlx::query(concat!(
            "SELECT name FROM (
                 SELECT n.name, n.max_sandboxes - ",
            live_on_node!(),
            " AS free
                 FROM nodes n
                 JOIN node_images i ON i.node = n.name AND i.demo_id = $1 AND i.ready = 1
                 WHERE n.last_seen >= $2
             ) AS candidates
             WHERE free > 0
             ORDER BY free DESC, name
             LIMIT 1"
        ))
        .bind(demo.to_string())
        .bind(up_since.millis());
        self.one(query, |row| {
            NodeName::parse(row.try_get("name")?).map_err(corrupt)
        })
        .await
    }

    async fn image_here(&self, demo: DemoId, ready: bool) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO node_images (node, demo_id, ready) VALUES ($1, $2, $3)
             ON CONFLICT (node, demo_id) DO UPDATE SET ready = excluded.ready",
        )
        .bind(self.node.as_str())
        .bind(demo.to_string())
        .bind(i64::from(ready));
        self.run(query).await
    }

    async fn take_care(&self, down: &NodeName, now: Timestamp, until: Timestamp) -> Result<bool> {
        // One conditional update of the down node's row: of two nodes asking at once, the
        // second waits on the row and re-checks it against the first's lease.
        let query = sqlx::query(
            "UPDATE nodes SET caretaker = $1, care_until = $2
             WHERE name = $3
               AND (caretaker IS NULL OR caretaker = $1 OR care_until IS NULL
                    OR care_until <= $4)",
        )
        .bind(self.node.as_str())
        .bind(until.millis())
        .bind(down.as_str())
        .bind(now.millis());
        self.changed(query).await
    }
}
