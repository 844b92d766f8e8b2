//! What happened to the deployment rather than to one sandbox: the Engine's outages, the
//! sandbox network or the host firewall rule made again, objects nobody knows reaped, a
//! demo's image gone or back, an upload the disk could not hold. Operators read them in the
//! ops console beside the sandboxes' events, so each healing is named; a vendor's console
//! shows those about its own demos.
//!
//! Like `SandboxEvent`, an event is kept as JSON beside its `kind`, and becomes a sentence
//! (`detail`) only when shown.

use serde::{Deserialize, Serialize};

use super::{DemoId, SandboxId, Timestamp, VendorId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceEvent {
    /// The Engine stopped answering.
    EngineUnreachable,
    /// The Engine answers again, after `after_ms` without.
    EngineBack { after_ms: u64 },
    /// Containers of ready sandboxes were found stopped though nobody stopped them (an
    /// Engine restart stops every container): they sleep until their next request.
    ContainersStopped { sandboxes: u32 },
    /// The sandbox network was missing (`docker network rm`, `docker network prune`) and
    /// was made again, with its firewall rule; `noticed_by` says where.
    NetworkRecreated { network: String, noticed_by: String },
    /// A host firewall rule of the sandbox bridge was missing and was installed again.
    FirewallRestored { rule: String },
    /// Objects labelled for this deployment whose sandbox it does not know, removed.
    OrphansRemoved {
        sandbox: SandboxId,
        containers: u32,
        volumes: u32,
        networks: u32,
    },
    /// A demo's image is not on the Engine any more: the demo left the catalog.
    ImageMissing {
        demo: DemoId,
        title: String,
        image: String,
    },
    /// A demo's image is on the Engine again: the demo is back in the catalog.
    ImageBack {
        demo: DemoId,
        title: String,
        image: String,
    },
    /// A demo's registry image was pulled: its sandboxes run `digest` from now on.
    ImagePulled {
        demo: DemoId,
        title: String,
        image: String,
        digest: String,
    },
    /// A pull of a demo's registry image failed; `why` is what its vendor reads.
    ImagePullFailed {
        demo: DemoId,
        title: String,
        image: String,
        why: String,
    },
    /// An upload was refused because the spool's disk could not hold it.
    DiskFull { free_bytes: u64 },
}

impl ServiceEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceEvent::EngineUnreachable => "engine_unreachable",
            ServiceEvent::EngineBack { .. } => "engine_back",
            ServiceEvent::ContainersStopped { .. } => "containers_stopped",
            ServiceEvent::NetworkRecreated { .. } => "network_recreated",
            ServiceEvent::FirewallRestored { .. } => "firewall_restored",
            ServiceEvent::OrphansRemoved { .. } => "orphans_removed",
            ServiceEvent::ImageMissing { .. } => "image_missing",
            ServiceEvent::ImageBack { .. } => "image_back",
            ServiceEvent::ImagePulled { .. } => "image_pulled",
            ServiceEvent::ImagePullFailed { .. } => "image_pull_failed",
            ServiceEvent::DiskFull { .. } => "disk_full",
        }
    }

    /// The sentence the consoles show.
    pub fn detail(&self) -> String {
        match self {
            ServiceEvent::EngineUnreachable => {
                "the Docker Engine does not answer; new trials wait".to_string()
            }
            ServiceEvent::EngineBack { after_ms } => format!(
                "the Docker Engine answers again after {}",
                seconds(*after_ms)
            ),
            ServiceEvent::ContainersStopped { sandboxes } => format!(
                "{sandboxes} sandbox{} found with {} container stopped (an Engine restart?): \
                 asleep, started again with their data on their next request",
                if *sandboxes == 1 { "" } else { "es" },
                if *sandboxes == 1 { "its" } else { "their" },
            ),
            ServiceEvent::NetworkRecreated {
                network,
                noticed_by,
            } => format!("sandbox network {network} re-created (missing, noticed {noticed_by})"),
            ServiceEvent::FirewallRestored { rule } => {
                format!("host firewall rule re-installed: {rule}")
            }
            ServiceEvent::OrphansRemoved {
                sandbox,
                containers,
                volumes,
                networks,
            } => format!(
                "removed {containers} container(s), {volumes} volume(s) and {networks} \
                 network(s) of sandbox {sandbox}, which this deployment does not know"
            ),
            ServiceEvent::ImageMissing { title, image, .. } => format!(
                "image {image} of demo \"{title}\" is not on the Docker Engine any more: the \
                 demo is out of the catalog until it is back"
            ),
            ServiceEvent::ImageBack { title, image, .. } => format!(
                "image {image} of demo \"{title}\" is on the Docker Engine again: the demo is \
                 back in the catalog"
            ),
            ServiceEvent::ImagePulled {
                title,
                image,
                digest,
                ..
            } => format!("pulled {image} of demo \"{title}\": its trials run {digest}"),
            ServiceEvent::ImagePullFailed {
                title, image, why, ..
            } => format!("pulling {image} of demo \"{title}\" failed: {why}"),
            ServiceEvent::DiskFull { free_bytes } => format!(
                "an upload was refused: the spool's disk has {:.1} MB free",
                *free_bytes as f64 / 1e6
            ),
        }
    }

    /// The demo the event is about, if any (its vendor sees the event too).
    pub fn demo(&self) -> Option<DemoId> {
        match self {
            ServiceEvent::ImageMissing { demo, .. }
            | ServiceEvent::ImageBack { demo, .. }
            | ServiceEvent::ImagePulled { demo, .. }
            | ServiceEvent::ImagePullFailed { demo, .. } => Some(*demo),
            _ => None,
        }
    }
}

fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// A service event as kept: when, and for which vendor's eyes besides the operators'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEventRecord {
    pub at: Timestamp,
    pub vendor: Option<VendorId>,
    pub event: ServiceEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_read_as_sentences() {
        let events = [
            ServiceEvent::EngineBack { after_ms: 4200 },
            ServiceEvent::NetworkRecreated {
                network: "testdrive-x".into(),
                noticed_by: "while starting a sandbox".into(),
            },
            ServiceEvent::ContainersStopped { sandboxes: 2 },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert!(json.contains(event.kind()), "{json}");
            assert_eq!(serde_json::from_str::<ServiceEvent>(&json).unwrap(), event);
        }
        assert_eq!(
            ServiceEvent::EngineBack { after_ms: 4200 }.detail(),
            "the Docker Engine answers again after 4.2 s"
        );
        assert!(
            ServiceEvent::ContainersStopped { sandboxes: 1 }
                .detail()
                .starts_with("1 sandbox found with its container stopped")
        );
    }
}
