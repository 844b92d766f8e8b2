//! The runtime that runs sandboxes, behind one trait. The lifecycle asks for sandboxes in
//! domain terms — create one for this demo at this address, place these files, start it,
//! run this command in it, is it running, remove everything of it, what of ours is there —
//! and never sees a container name or a bollard type. `DockerEngine` (in `docker`) is the
//! implementation over the Docker Engine API; `FakeEngine` (in `fake`, tests only) keeps
//! sandboxes in memory so provisioning, sleep, pools and the reconciler can be tested with
//! paused time, races included.
//!
//! Every object an implementation makes carries the `testdrive.sandbox=<id>` label and this
//! deployment's `testdrive.instance` label.

mod docker;
#[cfg(test)]
pub mod fake;
mod firewall;
pub mod neighbours;
mod network;
mod owner;
mod probe;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use async_trait::async_trait;

use crate::domain::{DemoId, DemoSpec, RegistryServer, SandboxId, VendorId};
use crate::sandbox_dirs::Owner;

pub use docker::DockerEngine;
pub use firewall::{
    FirewallRule, HostFirewall, isolate_host, rule as firewall_rule, rules as firewall_rules,
};
pub use network::{
    FixedNetwork, NetworkSettings, Subnet, WantedNetwork, plan as plan_network,
    setting_key as network_setting_key,
};

pub const SANDBOX_LABEL: &str = "testdrive.sandbox";
pub const INSTANCE_LABEL: &str = "testdrive.instance";
pub const DEMO_LABEL: &str = "testdrive.demo";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker Engine has no such {0}")]
    NotFound(String),
    /// The sandbox network is gone (`docker network rm`/`prune` while no sandbox ran):
    /// `Engine::ensure_network` makes it again.
    #[error("the sandbox network is missing on the Docker Engine")]
    NetworkMissing,
    /// The configured sandbox network is another deployment's, or clashes with it.
    #[error("{0}")]
    NetworkClash(String),
    #[error("the Docker Engine refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the Docker Engine is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Firewall(String),
    #[error("a local file of the Engine's client: {0}")]
    Io(#[from] std::io::Error),
    /// The demo's user is not in its image (the container could not start either).
    #[error("the demo's image has no user {0:?}")]
    NoSuchUser(String),
    /// A pull the registry (or the way to it) refused; `message` is the Engine's.
    #[error("pulling the image failed: {message}")]
    Pull {
        failure: PullFailure,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// How to reach the Engine and where sandboxes live on it.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// `unix:///var/run/docker.sock`, `tcp://host:2375`; `None` for the local default.
    pub host: Option<String>,
    pub network: NetworkSettings,
    /// Who installs the host firewall rules of the sandbox bridge.
    pub host_firewall: HostFirewall,
    /// Size of the `/tmp` tmpfs in every sandbox.
    pub tmpfs_mb: u32,
}

/// The outcome of a command run inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// The end of what the command wrote, stdout and stderr as they came (at most
    /// `OUTPUT_TAIL_BYTES`, from the start of a line): perhaps the prospect's data.
    pub output_tail: String,
    /// The last non-empty line it wrote to stderr (at most `MESSAGE_CHARS`): by the
    /// load-command convention, the demo's message for the prospect.
    pub message: Option<String>,
}

/// How much of a command's output is kept.
pub const OUTPUT_TAIL_BYTES: usize = 4096;
/// How long a demo's message may be.
pub const MESSAGE_CHARS: usize = 500;

/// The end of `bytes` as text: whole lines only when the start was cut off (`cut`), so that
/// nothing begins mid-word or mid-character.
pub fn output_tail(bytes: &[u8], cut: bool) -> String {
    let mut start = bytes.len().saturating_sub(OUTPUT_TAIL_BYTES);
    if cut || start > 0 {
        // From the first line that begins inside the kept part; one long line is kept cut.
        if let Some(newline) = bytes[start..].iter().position(|&b| b == b'\n')
            && start + newline + 1 < bytes.len()
        {
            start += newline + 1;
        }
    }
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// The last line of `stderr` with something on it, at most `MESSAGE_CHARS` long.
pub fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let line: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MESSAGE_CHARS)
        .collect();
    Some(line)
}

/// A container's resource counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsReading {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// CPU time the container used, ever.
    pub cpu_total_ns: u64,
    /// CPU time the whole host used, ever (all cores).
    pub system_ns: u64,
    pub online_cpus: u32,
}

impl StatsReading {
    /// CPU use between two readings, in percent of one core (as `docker stats` shows it).
    pub fn cpu_percent_since(&self, earlier: &StatsReading) -> Option<f64> {
        let used = self.cpu_total_ns.checked_sub(earlier.cpu_total_ns)? as f64;
        let host = self.system_ns.checked_sub(earlier.system_ns)? as f64;
        (host > 0.0).then(|| used / host * f64::from(self.online_cpus) * 100.0)
    }
}

/// What the Engine says about a sandbox's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

/// A sandbox's container to make: whose, of which demo, run how, at which address, with
/// which host directory at its data path.
#[derive(Debug, Clone)]
pub struct NewContainer<'a> {
    pub sandbox: SandboxId,
    pub demo: DemoId,
    pub spec: &'a DemoSpec,
    pub ip: Ipv4Addr,
    /// The sandbox's `data/` as the Engine's host sees it (`SandboxDirs::host_data`).
    pub data_dir: PathBuf,
}

/// One sandbox's objects as the Engine listed them, by the Engine's own ids and names: what
/// the reaper removes is exactly what it found, whatever the objects are called.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Container ids, and whether each runs.
    pub containers: Vec<(String, bool)>,
    /// Volume names, and where each one's data is on the host.
    pub volumes: Vec<(String, PathBuf)>,
    /// Network ids.
    pub networks: Vec<String>,
}

/// What `Engine::remove_found` removed (an object gone already counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub containers: u32,
    pub volumes: u32,
    pub networks: u32,
}

/// This deployment's objects on the Engine, by sandbox.
#[derive(Debug, Default, Clone)]
pub struct Labelled {
    pub by_sandbox: HashMap<SandboxId, Found>,
}

impl Labelled {
    /// Every sandbox with any object.
    pub fn sandboxes(&self) -> HashSet<SandboxId> {
        self.by_sandbox.keys().copied().collect()
    }

    /// Whether the sandbox has a container (`None`: none), and whether it runs.
    pub fn container(&self, sandbox: SandboxId) -> Option<bool> {
        let found = self.by_sandbox.get(&sandbox)?;
        (!found.containers.is_empty()).then(|| found.containers.iter().any(|(_, runs)| *runs))
    }

    /// Whether the sandbox has a running container.
    pub fn runs(&self, sandbox: SandboxId) -> bool {
        self.container(sandbox) == Some(true)
    }

    /// Where each sandbox's volumes keep their data on the host.
    pub fn volume_paths(&self) -> impl Iterator<Item = (SandboxId, Vec<PathBuf>)> + '_ {
        self.by_sandbox
            .iter()
            .filter(|(_, found)| !found.volumes.is_empty())
            .map(|(id, found)| (*id, found.volumes.iter().map(|(_, p)| p.clone()).collect()))
    }
}

/// A vendor's credentials for one registry, in clear for the length of one pull (they are
/// kept sealed in the database).
#[derive(Clone)]
pub struct PullCredentials {
    /// `host[:port]`, as the Engine names the registry.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where a vendor's registry credentials come from (the registry of vendors, which keeps
/// them sealed), for the lifecycle's pulls.
#[async_trait]
pub trait Credentials: Send + Sync {
    async fn pull_credentials(
        &self,
        vendor: VendorId,
        server: &RegistryServer,
    ) -> std::result::Result<Option<PullCredentials>, String>;
}

/// Why a pull failed, as far as the Engine's message tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFailure {
    /// The registry refused the credentials (or wanted some).
    Credentials,
    /// The registry has no such repository or tag.
    NotFound,
    /// The registry could not be reached.
    Unreachable,
    Other,
}

impl PullFailure {
    /// Reads the Engine's message of a failed pull.
    pub fn of(message: &str) -> PullFailure {
        let m = message.to_ascii_lowercase();
        if m.contains("unauthorized")
            || m.contains("authentication required")
            || m.contains("no basic auth credentials")
            || m.contains("denied")
        {
            PullFailure::Credentials
        } else if m.contains("manifest unknown")
            || m.contains("not found")
            || m.contains("name unknown")
        {
            PullFailure::NotFound
        } else if m.contains("connection refused")
            || m.contains("dial tcp")
            || m.contains("no such host")
            || m.contains("i/o timeout")
            || m.contains("no route to host")
            || m.contains("timeout")
        {
            PullFailure::Unreachable
        } else {
            PullFailure::Other
        }
    }
}

/// How far a pull is: layers and bytes, as the Engine reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    pub layers: u32,
    pub layers_done: u32,
    pub bytes: u64,
    pub bytes_done: u64,
}

/// What `Engine::ensure_network` had to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetworkRepair {
    /// The network was missing and is made again.
    pub recreated: bool,
    /// Host firewall rules that were missing and are installed again, as command lines.
    pub rules_restored: Vec<String>,
}

/// What the lifecycle asks of the runtime. Calls that change something are idempotent
/// where it matters: removing what is gone is success, starting what runs is success.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Whether the Engine answered the last ping; creation is refused at once while not.
    fn is_healthy(&self) -> bool;
    /// For a ping that did not come back at all.
    fn mark_unhealthy(&self);
    /// Asks the Engine whether it answers, and remembers the answer (`is_healthy`).
    async fn ping(&self) -> Result<()>;
    async fn image_exists(&self, image: &str) -> Result<bool>;
    /// Removes an image (a reference to it: the image goes with its last one); false if it
    /// was gone, `Rejected` if a container still uses it.
    async fn remove_image(&self, image: &str) -> Result<bool>;
    /// Pulls `reference` (`[server/]name:tag` or `…@sha256:…`) with `credentials`, telling
    /// `progress` as layers come; the digest (`sha256:…`) the registry resolved it to.
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&PullCredentials>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<String>;

    /// The sandbox network's name, as operators know it.
    fn network_name(&self) -> String;
    /// The address of a sandbox slot on the sandbox network, if the network has it.
    fn address(&self, slot: u32) -> Option<Ipv4Addr>;

    /// Creates the sandbox's container, hardened as the contract says, at its address on
    /// the sandbox network, with its host directory bound at the data path and a labelled
    /// volume at each writable path. Not started.
    async fn create(&self, container: &NewContainer<'_>) -> Result<()>;
    /// The user and group the container's processes run as (the demo's `user`, else the
    /// image's), as numbers: who must own its data. `spec` is what it was made from.
    async fn owner(&self, sandbox: SandboxId, spec: &DemoSpec) -> Result<Owner>;
    /// Starts the container; one already running is fine.
    async fn start(&self, sandbox: SandboxId) -> Result<()>;
    /// Stops the container, keeping it and its volumes; one already stopped is fine.
    async fn stop(&self, sandbox: SandboxId) -> Result<()>;
    /// Whether the container runs, and how it ended if it does not.
    async fn state(&self, sandbox: SandboxId) -> Result<ContainerState>;
    /// Runs `cmd` in the container and waits for it to exit.
    async fn exec(&self, sandbox: SandboxId, cmd: &[String]) -> Result<ExecOutcome>;
    /// Removes the container with its anonymous volumes; false if it was gone already.
    async fn remove_container(&self, sandbox: SandboxId) -> Result<bool>;
    /// Removes the sandbox's labelled volumes; how many there were.
    async fn remove_volumes(&self, sandbox: SandboxId) -> Result<usize>;
    /// What this deployment has on the Engine, by label.
    async fn labelled(&self) -> Result<Labelled>;
    /// Removes exactly the objects listed, by their ids: containers (with their anonymous
    /// volumes), then volumes, then networks.
    async fn remove_found(&self, found: &Found) -> Result<Removed>;
    /// Makes sure the sandbox network exists as configured, with its host firewall rules:
    /// made again if it went missing. Cheap when all is in place.
    async fn ensure_network(&self) -> Result<NetworkRepair>;
    /// Puts the sandbox's container on the sandbox network again, at its address: after the
    /// network was made again, a container made before does not start until then.
    async fn reattach(&self, sandbox: SandboxId) -> Result<()>;
    /// One reading of a running container's memory and CPU counters.
    async fn stats(&self, sandbox: SandboxId) -> Result<StatsReading>;
    /// One readiness attempt: the status of `GET path` at the demo's address, or why
    /// there was none.
    async fn probe(&self, addr: SocketAddr, path: &str) -> std::result::Result<u16, String>;

    /// Removes every object of the sandbox: its container (with its volumes), then any
    /// volume still labelled for it. Safe to repeat. How many objects it removed.
    async fn remove_sandbox(&self, sandbox: SandboxId) -> Result<usize> {
        let container = self.remove_container(sandbox).await?;
        let volumes = self.remove_volumes(sandbox).await?;
        Ok(usize::from(container) + volumes)
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn the_tail_starts_at_a_line_and_the_message_is_the_last_line() {
        assert_eq!(
            output_tail(b"ok a.csv\nbad b.csv\n", false),
            "ok a.csv\nbad b.csv"
        );
        let mut long = "x".repeat(OUTPUT_TAIL_BYTES).into_bytes();
        long.extend_from_slice(b"yy\nweather.csv: line 15\n");
        assert_eq!(output_tail(&long, false), "weather.csv: line 15");
        assert_eq!(output_tail(b"\xA9 cut\nwhole\n", true), "whole");
        assert_eq!(
            last_line(b"a.csv: line 3\nplease save as UTF-8\n\n  \n").as_deref(),
            Some("please save as UTF-8")
        );
        assert_eq!(last_line(b"\n \n"), None);
        assert_eq!(
            last_line(b"\x1b[31mred\x1b[0m").as_deref(),
            Some("[31mred[0m")
        );
        assert_eq!(
            last_line("é".repeat(900).as_bytes()).map(|l| l.chars().count()),
            Some(MESSAGE_CHARS)
        );
    }
}
