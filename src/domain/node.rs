//! Nodes: the `testdrive serve` processes of one deployment that share a Postgres database,
//! each driving its own Docker Engine. A node is known by its name; the others reach it at
//! its URL; it is `up` while its heartbeats arrive and `down` once none has for
//! `DOWN_AFTER`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{Invalid, Timestamp};

/// A node not heard from for this long is `down`: no new trials go there.
pub const DOWN_AFTER: Duration = Duration::from_secs(15);

/// How often a node says it is alive (well within `DOWN_AFTER`, so one lost beat does not
/// take it down).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// A node's name: 1 to 63 characters of lowercase letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit (a host name fits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(raw: &str) -> Result<NodeName, Invalid> {
        let name = raw.trim().to_ascii_lowercase();
        let bad = |reason: &str| Err(Invalid::new("node_name", reason));
        if name.is_empty() || name.len() > 63 {
            return bad("must be 1 to 63 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return bad("must start with a letter or a digit");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad("may hold only letters, digits, '-', '_' and '.'");
        }
        Ok(NodeName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    /// Where the other nodes reach its HTTP port (`TESTDRIVE_NODE_URL`).
    pub url: String,
    /// Its Docker Engine's endpoint (`unix:///…`, `tcp://…`), for a node that keeps a lost
    /// node's deadlines.
    pub engine: String,
    /// Live sandboxes it takes at most.
    pub max_sandboxes: u32,
    pub started_at: Timestamp,
    pub last_seen: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Up,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Down => "down",
        }
    }
}

impl Node {
    /// `up` if heard from within `DOWN_AFTER` of `now`.
    pub fn status(&self, now: Timestamp) -> NodeStatus {
        if now.millis() - self.last_seen.millis() <= DOWN_AFTER.as_millis() as i64 {
            NodeStatus::Up
        } else {
            NodeStatus::Down
        }
    }
}

/// A node with what it holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLoad {
    pub node: Node,
    /// Its live sandboxes (provisioning, ready or asleep) and those still receiving files.
    pub live: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_host_like() {
        assert_eq!(NodeName::parse("Node-1.eu").unwrap().as_str(), "node-1.eu");
        for bad in ["", "-a", ".a", "a b", "a/b", &"a".repeat(64)] {
            assert!(NodeName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn down_after_fifteen_seconds() {
        let node = Node {
            name: NodeName::parse("a").unwrap(),
            url: "http://127.0.0.1:1".into(),
            engine: "unix:///var/run/docker.sock".into(),
            max_sandboxes: 5,
            started_at: Timestamp::from_millis(0),
            last_seen: Timestamp::from_millis(1_000),
        };
        assert_eq!(node.status(Timestamp::from_millis(16_000)), NodeStatus::Up);
        assert_eq!(
            node.status(Timestamp::from_millis(16_001)),
            NodeStatus::Down
        );
    }
}
