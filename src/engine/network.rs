//! The sandbox network. All sandboxes share one internal bridge with inter-container traffic
//! disabled (`enable_icc=false`): no route out, and no sandbox reaches another, while the
//! host (testdrive) reaches every sandbox's address directly. One network instead of one per
//! sandbox because Docker's default address pools run out after about 30 networks, and
//! because creating and removing a network costs ~140 ms per sandbox.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;

use super::{EngineError, Result};

const ICC: &str = "com.docker.network.bridge.enable_icc";
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

#[derive(Clone, Debug)]
pub struct NetworkSettings {
    pub name: String,
    /// The host-side interface name (at most 15 bytes); firewall rules can name it.
    pub bridge: String,
    /// An explicit subnet, when Docker's address pools would collide with the site's.
    pub subnet: Option<String>,
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
    let existing = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| EngineError::from_bollard(e, "network"))?;
    // The name filter matches substrings.
    if let Some(net) = existing
        .into_iter()
        .find(|n| n.name.as_deref() == Some(settings.name.as_str()))
    {
        let options = net.options.unwrap_or_default();
        let isolated =
            net.internal == Some(true) && options.get(ICC).map(String::as_str) == Some("false");
        if !isolated {
            return Err(EngineError::Rejected {
                status: 409,
                message: format!(
                    "network {} exists but is not internal with inter-container traffic \
                     disabled; remove it or configure another sandbox network name",
                    settings.name
                ),
            });
        }
        return Ok(());
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
        ipam: settings.subnet.as_ref().map(|subnet| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.clone()),
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
    tracing::info!(network = %settings.name, bridge = %settings.bridge, "created the sandbox network");
    Ok(())
}
