//! Keeping sandboxes off the host. An internal Docker network has no route out, but its
//! containers still reach the bridge's gateway address — the host — so any host service
//! listening on all addresses (testdrive's own API too, if configured so) would be open to
//! every sandbox. One rule closes that: drop connections that sandboxes *open* towards the
//! host (`INPUT -i <bridge> --ctstate NEW`), while the host's own connections to sandboxes
//! (the proxy, the probes) and their replies pass.

use std::process::Output;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewall {
    /// testdrive installs the rule with the `iptables` command (needs root or CAP_NET_ADMIN).
    Iptables,
    /// Someone else does (see `scripts/host-firewall`); testdrive does nothing.
    None,
}

/// The rule, as `iptables` arguments after the action.
pub fn rule(bridge: &str) -> Vec<String> {
    [
        "INPUT",
        "-i",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn iptables(action: &str, bridge: &str) -> std::io::Result<Output> {
    tokio::process::Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule(bridge))
        .output()
        .await
}

/// Installs the rule for `bridge` unless it is there already. The interface need not exist
/// yet: rules match interface names.
pub async fn isolate_host(bridge: &str) -> Result<(), String> {
    let cannot = |why: String| {
        format!(
            "cannot install the host firewall rule `iptables -I {}`: {why}. Run testdrive as \
             root (or with CAP_NET_ADMIN) with iptables installed, or install the rule yourself \
             (scripts/host-firewall) and set sandbox.host_firewall = \"none\"",
            rule(bridge).join(" ")
        )
    };
    let present = iptables("-C", bridge)
        .await
        .map_err(|e| cannot(e.to_string()))?;
    if present.status.success() {
        return Ok(());
    }
    let added = iptables("-I", bridge)
        .await
        .map_err(|e| cannot(e.to_string()))?;
    if !added.status.success() {
        return Err(cannot(
            String::from_utf8_lossy(&added.stderr).trim().to_string(),
        ));
    }
    tracing::info!(bridge, "sandboxes may not open connections to the host");
    Ok(())
}
