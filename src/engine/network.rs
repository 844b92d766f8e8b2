//! The sandbox network. All sandboxes of a deployment share one internal bridge with
//! inter-container traffic disabled (`enable_icc=false`): no route out, and no sandbox
//! reaches another, while the host (testdrive) reaches every sandbox's address directly. One
//! network instead of one per sandbox because Docker's default address pools run out after
//! about 30 networks, and because creating and removing a network costs ~140 ms per sandbox.
//!
//! Addresses are testdrive's to hand out, not the Engine's: the Engine gives a freed address
//! to the next container at once, so a sandbox whose container died would have its address —
//! and its prospect's proxied requests — taken over by the next sandbox. testdrive reserves a
//! slot per sandbox in the database until the sandbox's objects are gone, and creates each
//! container at its slot's address. Hence the network has a subnet of its own, from the
//! configuration — or, left open, one testdrive picks (`plan`) that nothing else on the
//! Engine or the host uses, so that two deployments sharing an Engine never share a network.
//! A network of that name that is another deployment's is refused, never joined.
//!
//! The network can go missing under a running service (`docker network prune` on a quiet
//! host removes it while no sandbox runs; stopped containers do not hold it): `ensure` makes
//! it again by name, and the Engine attaches a stopped container to the new one by name
//! when it starts.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use crate::domain::NodeName;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};

use super::{EngineError, INSTANCE_LABEL, Result};

const ICC: &str = "com.docker.network.bridge.enable_icc";
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

#[derive(Clone, Debug)]
pub struct NetworkSettings {
    pub name: String,
    /// The host-side interface name (at most 15 bytes); firewall rules can name it.
    pub bridge: String,
    pub subnet: Subnet,
}

/// Where the parts of the sandbox network a start left open ("auto") are kept in the
/// database's settings: one for the deployment's only node, one per node when several share
/// the database (each has its own Engine, bridge and subnet, and a node keeping a lost
/// node's deadlines reaches that node's sandboxes through it).
pub fn setting_key(node: Option<&NodeName>) -> String {
    match node {
        None => "sandbox_network".to_string(),
        Some(node) => format!("sandbox_network/{node}"),
    }
}

/// A sandbox network as a start fixed it in the database.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FixedNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
}

impl NetworkSettings {
    /// The network a start fixed (`FixedNetwork` as JSON).
    pub fn from_stored(raw: &str) -> std::result::Result<NetworkSettings, String> {
        let fixed: FixedNetwork = serde_json::from_str(raw)
            .map_err(|e| format!("the stored sandbox network {raw:?}: {e}"))?;
        Ok(NetworkSettings {
            name: fixed.name,
            bridge: fixed.bridge,
            subnet: Subnet::parse(&fixed.subnet)?,
        })
    }
}

/// An IPv4 subnet: its first address is the network's, the second the gateway (the host),
/// the last the broadcast address; the ones between are sandbox slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    /// `a.b.c.d/p` with `p` from 8 to 28 and no host bits set.
    pub fn parse(raw: &str) -> std::result::Result<Subnet, String> {
        let fail = || format!("{raw:?} is not an IPv4 subnet like 10.213.0.0/16 (prefix 8 to 28)");
        let (addr, prefix) = raw.split_once('/').ok_or_else(fail)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| fail())?;
        let prefix: u8 = prefix.parse().map_err(|_| fail())?;
        if !(8..=28).contains(&prefix) {
            return Err(fail());
        }
        let base = u32::from(addr);
        if base & (u32::MAX >> prefix) != 0 {
            return Err(format!("{raw:?} has host bits set"));
        }
        Ok(Subnet { base, prefix })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// How many sandboxes fit.
    pub fn slots(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 3
    }

    /// The address of a slot, if the subnet has it.
    pub fn address(&self, slot: u32) -> Option<Ipv4Addr> {
        (slot < self.slots()).then(|| Ipv4Addr::from(self.base + 2 + slot))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Which sandbox network a deployment asked for: each part given, or left to testdrive
/// (`None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantedNetwork {
    pub name: Option<String>,
    pub bridge: Option<String>,
    pub subnet: Option<Subnet>,
}

/// Where testdrive looks for a subnet of its own: /20s of 10.208/12 (more addresses than a
/// bridge has ports: a Linux bridge takes at most 1023, so `max_sandboxes` stops there).
const AUTO_POOL: Subnet = Subnet {
    base: u32::from_be_bytes([10, 208, 0, 0]),
    prefix: 12,
};
const AUTO_PREFIX: u8 = 20;

impl Subnet {
    fn last(&self) -> u32 {
        self.base | (u32::MAX >> self.prefix)
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

/// The network for a deployment: what it asked for, and for each part it left open, its own
/// — named after its instance id, on a subnet that no network of the Engine and no route of
/// the host uses. Two deployments on one Engine with default settings so get networks,
/// bridges and subnets of their own. Asks the Engine only when the subnet is left open.
pub async fn plan(
    host: Option<&str>,
    wanted: &WantedNetwork,
    instance: &str,
) -> Result<NetworkSettings> {
    let tag: String = instance
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let subnet = match wanted.subnet {
        Some(subnet) => subnet,
        None => {
            let docker = match host {
                Some(host) => Docker::connect_with_host(host),
                None => Docker::connect_with_defaults(),
            }
            .map_err(|e| EngineError::Unavailable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            let mut taken = engine_subnets(&docker).await?;
            taken.extend(host_routes());
            free_subnet(&taken, instance).ok_or_else(|| {
                EngineError::NetworkClash(format!(
                    "no free /{AUTO_PREFIX} for the sandbox network in {AUTO_POOL}: every one \
                     overlaps a network of the Engine or a route of the host; set \
                     sandbox.subnet (TESTDRIVE_SANDBOX__SUBNET) to a free one"
                ))
            })?
        }
    };
    Ok(NetworkSettings {
        name: wanted
            .name
            .clone()
            .unwrap_or_else(|| format!("testdrive-{tag}")),
        // "td-" and 12 characters: the 15 an interface name may have.
        bridge: wanted.bridge.clone().unwrap_or_else(|| format!("td-{tag}")),
        subnet,
    })
}

/// The first /20 of the pool that overlaps nothing taken, starting at one the instance id
/// picks (so deployments starting at the same moment are unlikely to pick the same one).
fn free_subnet(taken: &[Subnet], instance: &str) -> Option<Subnet> {
    let count = 1u32 << (AUTO_PREFIX - AUTO_POOL.prefix);
    let start = instance
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % count;
    (0..count)
        .map(|i| Subnet {
            base: AUTO_POOL.base + (((start + i) % count) << (32 - AUTO_PREFIX)),
            prefix: AUTO_PREFIX,
        })
        .find(|candidate| taken.iter().all(|t| !t.overlaps(candidate)))
}

/// The IPv4 subnets of every network on the Engine, whoever made it.
async fn engine_subnets(docker: &Docker) -> Result<Vec<Subnet>> {
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| EngineError::from_bollard(e, "network"))?;
    Ok(networks
        .into_iter()
        .filter_map(|n| n.ipam?.config)
        .flatten()
        .filter_map(|c| c.subnet)
        .filter_map(|raw| covering(&raw))
        .collect())
}

/// The host's IPv4 routes (`/proc/net/route`), as subnets; the default route aside.
fn host_routes() -> Vec<Subnet> {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Little-endian hex, as the kernel prints them.
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?.swap_bytes();
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then_some(Subnet {
                base: dest & mask,
                prefix,
            })
        })
        .collect()
}

/// Any subnet written `a.b.c.d/p` (host bits allowed, any prefix), for overlap checks.
fn covering(raw: &str) -> Option<Subnet> {
    let (addr, prefix) = raw.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then(|| Subnet {
        base: u32::from(addr) & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)),
        prefix,
    })
}

/// What to change when the network clashes with another deployment's.
const CHANGE: &str = "give this deployment a sandbox network of its own: leave sandbox.network, \
     sandbox.bridge and sandbox.subnet unset (testdrive then picks its own), or set them \
     (TESTDRIVE_SANDBOX__NETWORK, TESTDRIVE_SANDBOX__BRIDGE, TESTDRIVE_SANDBOX__SUBNET) to a \
     name, an interface name and a subnet no other deployment uses";

/// Makes sure the sandbox network exists as `settings` say, made by and for `instance`;
/// true if it had to be made. Refuses (`NetworkClash`) a network of that name that is
/// another deployment's, or that containers not of this deployment are on.
pub async fn ensure(docker: &Docker, settings: &NetworkSettings, instance: &str) -> Result<bool> {
    // Engines before 23.0 accept two networks of the same name; serialise first starts on
    // this host (several test processes, a restart overlapping a start) with a file lock.
    let lock_path = std::env::temp_dir().join(format!("testdrive-net-{}.lock", settings.name));
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::create(lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| EngineError::Unavailable(e.to_string()))??;

    let result = ensure_locked(docker, settings, instance).await;
    drop(lock);
    result
}

async fn ensure_locked(
    docker: &Docker,
    settings: &NetworkSettings,
    instance: &str,
) -> Result<bool> {
    let filter = HashMap::from([("name".to_string(), vec![settings.name.clone()])]);
    let options = ListNetworksOptionsBuilder::default()
        .filters(&filter)
        .build();
    let existing = docker.list_networks(Some(options)).await;
    let existing = existing.map_err(|e| EngineError::from_bollard(e, "network"))?;
    // The name filter matches substrings.
    if let Some(net) = existing
        .into_iter()
        .find(|n| n.name.as_deref() == Some(settings.name.as_str()))
    {
        let id = net.id.clone().unwrap_or_default();
        let owner = net.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL));
        if owner.is_some_and(|owner| owner != instance) {
            return Err(EngineError::NetworkClash(format!(
                "the sandbox network {} belongs to another testdrive deployment; {CHANGE}",
                settings.name
            )));
        }
        let attached = attached_containers(docker, &id).await?;
        let strangers = attached
            .iter()
            .filter(|labels| labels.get(INSTANCE_LABEL).map(String::as_str) != Some(instance))
            .count();
        if strangers > 0 {
            return Err(EngineError::NetworkClash(format!(
                "{strangers} container(s) of another deployment (or not of testdrive) are on the \
                 sandbox network {}; {CHANGE}",
                settings.name
            )));
        }
        let options = net.options.unwrap_or_default();
        let isolated =
            net.internal == Some(true) && options.get(ICC).map(String::as_str) == Some("false");
        let subnet = net
            .ipam
            .and_then(|ipam| ipam.config)
            .and_then(|configs| configs.into_iter().find_map(|c| c.subnet));
        let wanted = settings.subnet.to_string();
        if isolated && subnet.as_deref() == Some(wanted.as_str()) {
            return Ok(false);
        }
        // Made differently (an older testdrive, or by hand): replace it if nothing uses it.
        if !attached.is_empty() {
            return Err(EngineError::Rejected {
                status: 409,
                message: format!(
                    "network {} exists with subnet {:?}, internal and inter-container \
                     traffic disabled: {isolated}; the configuration wants {wanted}, isolated. \
                     Containers still use it: remove them and the network, or configure \
                     another sandbox network",
                    settings.name, subnet
                ),
            });
        }
        docker
            .remove_network(&id)
            .await
            .map_err(|e| EngineError::from_bollard(e, "network"))?;
        tracing::warn!(network = %settings.name, "replaced a sandbox network made differently");
    }

    let request = NetworkCreateRequest {
        name: settings.name.clone(),
        driver: Some("bridge".to_string()),
        internal: Some(true),
        options: Some(HashMap::from([
            (ICC.to_string(), "false".to_string()),
            (BRIDGE_NAME.to_string(), settings.bridge.clone()),
            (MASQUERADE.to_string(), "false".to_string()),
        ])),
        labels: Some(HashMap::from([
            ("testdrive.role".to_string(), "sandbox-network".to_string()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ])),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(settings.subnet.to_string()),
                gateway: Some(settings.subnet.gateway().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {}
        // The subnet or the bridge's name is another network's.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400 | 403 | 409 | 500,
            message,
        }) if message.contains("overlap")
            || message.contains("exists")
            || message.contains("in use") =>
        {
            return Err(EngineError::NetworkClash(format!(
                "cannot make the sandbox network {} (bridge {}, subnet {}): {message}; {CHANGE}",
                settings.name, settings.bridge, settings.subnet
            )));
        }
        Err(e) => return Err(EngineError::from_bollard(e, "network")),
    }
    tracing::info!(network = %settings.name, bridge = %settings.bridge, subnet = %settings.subnet, "created the sandbox network");
    Ok(true)
}

/// The labels of every container on the network, running or not.
async fn attached_containers(
    docker: &Docker,
    network: &str,
) -> Result<Vec<HashMap<String, String>>> {
    let filter = HashMap::from([("network".to_string(), vec![network.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filter)
        .build();
    let containers = docker.list_containers(Some(options)).await;
    let containers = containers.map_err(|e| EngineError::from_bollard(e, "container"))?;
    Ok(containers
        .into_iter()
        .map(|c| c.labels.unwrap_or_default())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_number_their_sandbox_slots() {
        let net = Subnet::parse("10.213.0.0/16").unwrap();
        assert_eq!(net.to_string(), "10.213.0.0/16");
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(net.address(0), Some(Ipv4Addr::new(10, 213, 0, 2)));
        assert_eq!(net.slots(), 65533);
        assert_eq!(net.address(65532), Some(Ipv4Addr::new(10, 213, 255, 254)));
        assert_eq!(net.address(65533), None);
        let small = Subnet::parse("192.168.7.0/28").unwrap();
        assert_eq!(small.slots(), 13);
        for bad in [
            "10.213.0.1/16",
            "10.213.0.0",
            "10.213.0.0/30",
            "x/16",
            "10.0.0.0/7",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_picked_subnet_overlaps_nothing_taken_and_stays_in_the_pool() {
        let taken: Vec<Subnet> = ["172.17.0.0/16", "10.208.0.0/13", "10.216.0.0/20"]
            .iter()
            .map(|raw| covering(raw).unwrap())
            .collect();
        for instance in ["a", "b", "0123456789abcdef"] {
            let picked = free_subnet(&taken, instance).unwrap();
            assert_eq!(picked.prefix, AUTO_PREFIX);
            assert!(AUTO_POOL.overlaps(&picked) && picked.base >= AUTO_POOL.base);
            assert!(picked.last() <= AUTO_POOL.last());
            assert!(taken.iter().all(|t| !t.overlaps(&picked)), "{picked}");
            assert_eq!(Subnet::parse(&picked.to_string()), Ok(picked));
        }
        // The instance id spreads the first choice; the same id always picks the same one.
        assert_eq!(free_subnet(&[], "a"), free_subnet(&[], "a"));
        assert_ne!(free_subnet(&[], "a"), free_subnet(&[], "b"));
        // Nothing left.
        assert_eq!(free_subnet(&[covering("10.0.0.0/8").unwrap()], "a"), None);
    }

    #[test]
    fn overlaps_are_judged_on_whole_ranges_and_host_bits_are_ignored() {
        let wide = covering("10.213.7.9/16").unwrap();
        assert_eq!(wide.to_string(), "10.213.0.0/16");
        assert!(wide.overlaps(&covering("10.213.255.0/24").unwrap()));
        assert!(!wide.overlaps(&covering("10.214.0.0/24").unwrap()));
        assert!(covering("0.0.0.0/0").unwrap().overlaps(&wide));
        assert_eq!(covering("10.0.0.0/33"), None);
        assert_eq!(covering("fd00::/8"), None);
    }
}
