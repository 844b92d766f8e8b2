//! Keeping sandboxes off the host. An internal Docker network has no route out, but its
//! containers still reach the bridge's gateway address — the host — so any host service
//! listening on all addresses (testdrive's own API too, if configured so) would be open to
//! every sandbox. One rule closes that: drop connections that sandboxes *open* towards the
//! host (`INPUT -i <bridge> --ctstate NEW`), while the host's own connections to sandboxes
//! (the proxy, the probes) and their replies pass.
//!
//! The Engine's isolation of sandboxes from each other (`enable_icc=false`) and that rule
//! are IPv4 rules; a sandbox with an IPv6 address — newer Engines give every container a
//! link-local one — would pass both: reach a host service listening on `[::]` through the
//! bridge's link-local address, and other sandboxes through theirs. Sandboxes run with IPv6
//! off (see `docker`), and, should an Engine not honour that, two IPv6 rules drop all of
//! it: nothing from the bridge to the host, nothing from the bridge to anywhere. testdrive
//! speaks IPv4 to sandboxes, so neither costs anything. On a host without IPv6 there is
//! nothing to cover and no IPv6 rule is installed.

use std::path::Path;
use std::process::Output;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewall {
    /// testdrive installs the rules with `iptables` and `ip6tables` (needs root or
    /// CAP_NET_ADMIN).
    Iptables,
    /// Someone else does (see `scripts/host-firewall`); testdrive does nothing.
    None,
}

/// One firewall rule: the program that installs it and its arguments after the action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallRule {
    /// `iptables` or `ip6tables`.
    pub program: &'static str,
    pub args: Vec<String>,
}

impl FirewallRule {
    fn new(program: &'static str, args: &[&str]) -> FirewallRule {
        FirewallRule {
            program,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ipv6(&self) -> bool {
        self.program == "ip6tables"
    }

    /// As a command line, with `action` (`-I`, `-C`, `-D`).
    pub fn command_line(&self, action: &str) -> String {
        format!("{} {action} {}", self.program, self.args.join(" "))
    }

    async fn run(&self, action: &str) -> std::io::Result<Output> {
        tokio::process::Command::new(self.program)
            .arg("-w")
            .arg(action)
            .args(&self.args)
            .output()
            .await
    }
}

/// The IPv4 rule, as `iptables` arguments after the action.
pub fn rule(bridge: &str) -> Vec<String> {
    rules(bridge).swap_remove(0).args
}

/// Every rule for `bridge`: the IPv4 one, then the IPv6 ones.
pub fn rules(bridge: &str) -> Vec<FirewallRule> {
    let new_from_bridge = [
        "INPUT",
        "-i",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ];
    vec![
        FirewallRule::new("iptables", &new_from_bridge),
        // The host speaks IPv4 to sandboxes: all IPv6 from them is dropped, towards the
        // host and (with bridge netfilter) towards each other.
        FirewallRule::new("ip6tables", &["INPUT", "-i", bridge, "-j", "DROP"]),
        FirewallRule::new("ip6tables", &["FORWARD", "-i", bridge, "-j", "DROP"]),
    ]
}

/// Whether this host has IPv6 at all (a kernel booted with `ipv6.disable=1` has not).
fn host_has_ipv6() -> bool {
    Path::new("/proc/net/if_inet6").exists()
}

/// Installs the rules for `bridge`, each unless it is there already; the command lines of
/// those it installed (none when all were in place). The interface need not exist yet:
/// rules match interface names. Cheap to repeat (a check per rule), so the reconciler puts
/// back a rule someone flushed.
pub async fn isolate_host(bridge: &str) -> Result<Vec<String>, String> {
    let with_ipv6 = host_has_ipv6();
    let mut installed = Vec::new();
    for rule in rules(bridge) {
        if rule.ipv6() && !with_ipv6 {
            continue;
        }
        if install(&rule).await? {
            installed.push(rule.command_line("-I"));
        }
    }
    if !installed.is_empty() {
        tracing::info!(
            bridge,
            ipv6 = with_ipv6,
            rules = ?installed,
            "host firewall rules installed: sandboxes may not open connections to the host"
        );
    }
    Ok(installed)
}

/// Installs `rule` unless it is in place; true if it installed it.
async fn install(rule: &FirewallRule) -> Result<bool, String> {
    let cannot = |why: String| {
        format!(
            "cannot install the host firewall rule `{}`: {why}. Run testdrive as root (or \
             with CAP_NET_ADMIN) with iptables and ip6tables installed, or install the rules \
             yourself (scripts/host-firewall) and set sandbox.host_firewall = \"none\"",
            rule.command_line("-I")
        )
    };
    let present = rule.run("-C").await.map_err(|e| cannot(e.to_string()))?;
    if present.status.success() {
        return Ok(false);
    }
    let added = rule.run("-I").await.map_err(|e| cannot(e.to_string()))?;
    if !added.status.success() {
        return Err(cannot(
            String::from_utf8_lossy(&added.stderr).trim().to_string(),
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_rules_drop_everything_from_the_bridge_and_the_ipv4_one_new_connections() {
        let rules = rules("td-x");
        let lines: Vec<_> = rules.iter().map(|r| r.command_line("-I")).collect();
        assert_eq!(
            lines,
            [
                "iptables -I INPUT -i td-x -m conntrack --ctstate NEW -j DROP",
                "ip6tables -I INPUT -i td-x -j DROP",
                "ip6tables -I FORWARD -i td-x -j DROP",
            ]
        );
        assert_eq!(rule("td-x"), rules[0].args);
    }
}
