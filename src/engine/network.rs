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
//! configuration.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptionsBuilder};

use super::{EngineError, Result};

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

pub async fn ensure(docker: &Docker, settings: &NetworkSettings) -> Result<()> {
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

    let result = ensure_locked(docker, settings).await;
    drop(lock);
    result
}

async fn ensure_locked(docker: &Docker, settings: &NetworkSettings) -> Result<()> {
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
        let options = net.options.unwrap_or_default();
        let isolated =
            net.internal == Some(true) && options.get(ICC).map(String::as_str) == Some("false");
        let subnet = net
            .ipam
            .and_then(|ipam| ipam.config)
            .and_then(|configs| configs.into_iter().find_map(|c| c.subnet));
        let wanted = settings.subnet.to_string();
        if isolated && subnet.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        // Made differently (an older testdrive, or by hand): replace it if nothing uses it.
        let id = net.id.unwrap_or_default();
        let attached = docker
            .inspect_network(&id, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| EngineError::from_bollard(e, "network"))?
            .containers
            .unwrap_or_default();
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
        labels: Some(HashMap::from([(
            "testdrive.role".to_string(),
            "sandbox-network".to_string(),
        )])),
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
    docker
        .create_network(request)
        .await
        .map_err(|e| EngineError::from_bollard(e, "network"))?;
    tracing::info!(network = %settings.name, bridge = %settings.bridge, subnet = %settings.subnet, "created the sandbox network");
    Ok(())
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
}
