//! What the bench makes on the Engine, and removing all of it.
//!
//! The bench runs its service on a sandbox network of its own (`testdrive-bench-<run>`, a
//! /22 of 10.215.0.0/16, a /21 when part `thousand` runs), so it never competes for addresses with another deployment on
//! this host (someone's `scripts/demo`, say). Everything the bench makes carries a label it
//! can be found by:
//!
//! - the service's containers and volumes: `testdrive.instance=<this run's service>`;
//! - raw containers and their volumes: `testdrive.sandbox=bench-raw-<run>-<n>`,
//!   `testdrive.bench.run=<run>`, `testdrive.bench.pid=<pid>`;
//! - the network: `testdrive.bench.pid=<pid>`; the service installs a host firewall rule
//!   for its bridge and takes a lock file named after it in the temporary directory, both
//!   removed with it.
//!
//! `Cleanup` removes this run's objects when dropped (success, error, panic, Ctrl-C), and
//! at the start `sweep_stale` removes what runs killed outright left (their pid is gone).

use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::common::{Result, pid_alive, shell, shell_lines};

pub use crate::support::{PID_KEY, RUN_KEY, pid, run_tag};

/// The bench's sandbox network.
#[derive(Clone, Debug)]
pub struct BenchNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    base: u32,
    prefix: u32,
}

impl BenchNetwork {
    /// Addresses for sandboxes: the network's, the gateway and broadcast excluded.
    pub fn slots(&self) -> u32 {
        (1 << (32 - self.prefix)) - 3
    }

    /// The address of a slot, numbered as testdrive numbers them (slot 0 is `.2`).
    pub fn address(&self, slot: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 2 + slot % self.slots())
    }
}

#[derive(Default)]
struct Watched {
    instance: Option<String>,
    network: Option<BenchNetwork>,
}

/// Removes everything of this run when dropped.
#[derive(Default)]
pub struct Cleanup {
    watched: Mutex<Watched>,
}

impl Cleanup {
    pub fn watch_instance(&self, instance: &str) {
        if let Ok(mut w) = self.watched.lock() {
            w.instance = Some(instance.to_string());
        }
    }

    /// Creates the bench's network (internal, no inter-container traffic, like the one
    /// testdrive makes) on the first free /`prefix` (16 to 24) of 10.215.0.0/16, watched
    /// from then on.
    pub fn create_network(&self, prefix: u32) -> Result<BenchNetwork> {
        let tag = run_tag();
        let name = format!("testdrive-bench-{tag}");
        let bridge = format!("tdb{tag}");
        let step = 1 << (24 - prefix.clamp(16, 24));
        let count = 256 / step;
        let start = u32::from_str_radix(tag, 16).unwrap_or(0) % count;
        for attempt in 0..count {
            let third = ((start + attempt) % count) * step;
            let subnet = format!("10.215.{third}.0/{prefix}");
            let out = std::process::Command::new("docker")
                .args(["network", "create", "--internal", "--driver", "bridge"])
                .arg("--label")
                .arg(format!("{PID_KEY}={}", pid()))
                .args(["-o", "com.docker.network.bridge.enable_icc=false"])
                .args(["-o", "com.docker.network.bridge.enable_ip_masquerade=false"])
                .arg("-o")
                .arg(format!("com.docker.network.bridge.name={bridge}"))
                .arg(format!("--subnet={subnet}"))
                .arg(format!("--gateway=10.215.{third}.1"))
                .arg(&name)
                .output()?;
            if out.status.success() {
                let network = BenchNetwork {
                    name,
                    bridge,
                    subnet,
                    base: u32::from(Ipv4Addr::new(10, 215, third as u8, 0)),
                    prefix,
                };
                if let Ok(mut w) = self.watched.lock() {
                    w.network = Some(network.clone());
                }
                return Ok(network);
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("overlap") {
                return Err(format!("cannot create the network {name}: {}", err.trim()).into());
            }
        }
        Err(format!("no free /{prefix} in 10.215.0.0/16 for the bench's network").into())
    }

    /// Removes this run's containers, volumes, network and firewall rule. Idempotent.
    pub fn sweep(&self) {
        let (instance, network) = match self.watched.lock() {
            Ok(w) => (w.instance.clone(), w.network.clone()),
            Err(_) => (None, None),
        };
        let mut labels = vec![format!("{RUN_KEY}={}", run_tag())];
        if let Some(instance) = instance {
            labels.push(format!("testdrive.instance={instance}"));
        }
        for label in &labels {
            remove_labelled(label);
        }
        if let Some(net) = network {
            remove_network(&net.name, &net.bridge);
        }
    }

    /// What of this run is still on the Engine (empty when all is gone).
    pub fn leftovers(&self) -> Vec<String> {
        let (instance, network) = match self.watched.lock() {
            Ok(w) => (w.instance.clone(), w.network.clone()),
            Err(_) => (None, None),
        };
        let mut labels = vec![format!("{RUN_KEY}={}", run_tag())];
        if let Some(instance) = instance {
            labels.push(format!("testdrive.instance={instance}"));
        }
        let mut left = Vec::new();
        for label in &labels {
            let filter = format!("label={label}");
            for id in shell_lines("docker", &["ps", "-aq", "--filter", &filter]) {
                left.push(format!("container {id} ({label})"));
            }
            for id in shell_lines("docker", &["volume", "ls", "-q", "--filter", &filter]) {
                left.push(format!("volume {id} ({label})"));
            }
        }
        if let Some(net) = network
            && shell(
                "docker",
                &["network", "inspect", "-f", "{{.Name}}", &net.name],
            ) != "?"
        {
            left.push(format!("network {}", net.name));
        }
        left
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}

fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    let containers = shell_lines("docker", &["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-fv"])
            .args(&containers)
            .output();
    }
    let volumes = shell_lines("docker", &["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&volumes)
            .output();
    }
}

fn remove_network(name: &str, bridge: &str) {
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", name])
        .output();
    // The lock file the service takes while it checks the network (`engine/network.rs`).
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("testdrive-net-{name}.lock")));
    let _ = std::process::Command::new("iptables")
        .args(["-w", "-D"])
        .args(testdrive::engine::firewall_rule(bridge))
        .output();
}

/// Removes what bench runs that were killed outright left: raw objects and bench networks
/// whose `testdrive.bench.pid` no longer runs, with the service containers and volumes on
/// those networks. Objects without that label (another tool's, an older bench's) are left.
pub fn sweep_stale() {
    for kind in [&["ps", "-a"][..], &["volume", "ls"][..]] {
        let mut args = kind.to_vec();
        let format = format!("{{{{.{}}}}} {{{{.Label \"{PID_KEY}\"}}}}", id_field(kind));
        let filter = format!("label={PID_KEY}");
        args.extend(["--filter", &filter, "--format", &format]);
        let stale: Vec<String> = shell_lines("docker", &args)
            .into_iter()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let id = parts.next()?.to_string();
                let pid = parts.next().unwrap_or("");
                (!pid.is_empty() && !pid_alive(pid)).then_some(id)
            })
            .collect();
        if !stale.is_empty() {
            let rm: &[&str] = if kind[0] == "ps" {
                &["rm", "-fv"]
            } else {
                &["volume", "rm", "-f"]
            };
            let _ = std::process::Command::new("docker")
                .args(rm)
                .args(&stale)
                .output();
        }
    }
    let format = format!("{{{{.Name}}}} {{{{.Label \"{PID_KEY}\"}}}}");
    for line in shell_lines(
        "docker",
        &[
            "network",
            "ls",
            "--filter",
            &format!("label={PID_KEY}"),
            "--format",
            &format,
        ],
    ) {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let pid = parts.next().unwrap_or("");
        if pid.is_empty() || pid_alive(pid) || !name.starts_with("testdrive-bench-") {
            continue;
        }
        // The dead run's service objects: the containers on its network, and the volumes
        // of the same deployment.
        let filter = format!("network={name}");
        let format = "{{.ID}} {{.Label \"testdrive.instance\"}}";
        let mut instances = Vec::new();
        for line in shell_lines(
            "docker",
            &["ps", "-a", "--filter", &filter, "--format", format],
        ) {
            let mut parts = line.split_whitespace();
            if let Some(id) = parts.next() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-fv", id])
                    .output();
            }
            if let Some(instance) = parts.next()
                && !instances.iter().any(|i| i == instance)
            {
                instances.push(instance.to_string());
            }
        }
        for instance in instances {
            remove_labelled(&format!("testdrive.instance={instance}"));
        }
        let bridge = shell(
            "docker",
            &[
                "network",
                "inspect",
                "-f",
                "{{index .Options \"com.docker.network.bridge.name\"}}",
                name,
            ],
        );
        remove_network(name, &bridge);
    }
}

fn id_field(kind: &[&str]) -> &'static str {
    if kind[0] == "ps" { "ID" } else { "Name" }
}
