//! An Engine in memory, for unit tests of the lifecycle's logic — never as proof that
//! provisioning works (the integration tests drive the real Engine for that). Containers
//! are records; a running container answers its probe. A test can make any call fail, make
//! the whole Engine unreachable, stop or remove containers behind the lifecycle's back, and
//! hold any call at a gate — after it took effect, before it returns — to interleave races
//! exactly: a listing that is already stale, a start that has not returned yet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    ContainerState, Engine, EngineError, ExecOutcome, Found, Labelled, NetworkRepair, NewContainer,
    PullCredentials, PullProgress, Removed, Result, StatsReading, Subnet,
};
use crate::domain::{DemoId, DemoSpec, SandboxId};
use crate::sandbox_dirs::Owner;

/// The calls, to hold, fail or count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Owner,
    Start,
    Stop,
    State,
    Exec,
    RemoveContainer,
    RemoveVolumes,
    RemoveFound,
    EnsureNetwork,
    Pull,
    Reattach,
    List,
    Stats,
    Probe,
    ImageExists,
}

/// A container as the fake keeps it.
#[derive(Clone, Debug)]
pub struct FakeContainer {
    pub demo: DemoId,
    pub ip: Ipv4Addr,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Its data directory on the host.
    pub data_dir: PathBuf,
    /// Whether the demo answers its probe while it runs.
    pub answers: bool,
}

#[derive(Default)]
struct State {
    containers: HashMap<SandboxId, FakeContainer>,
    /// Volumes per sandbox.
    volumes: HashMap<SandboxId, usize>,
    calls: Vec<(Op, Option<SandboxId>)>,
    failures: HashMap<Op, VecDeque<EngineError>>,
    unreachable: bool,
    /// The sandbox network is gone: starts fail with `NetworkMissing` until it is ensured.
    network_missing: bool,
    /// Whether new containers' demos answer their probe.
    silent_demos: bool,
    /// Images removed from the Engine (every other image is there).
    removed_images: HashSet<String>,
    exec: Option<ExecOutcome>,
    /// Where a sandbox's volumes are on the host, as the listing reports them (none unless
    /// a test says: the disk watch's tests point them at temporary directories).
    volume_paths: HashMap<SandboxId, Vec<PathBuf>>,
}

/// A call held until the test lets it go.
#[derive(Clone)]
pub struct Gate {
    arrived: watch::Sender<usize>,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            arrived: watch::Sender::new(0),
            open: watch::Sender::new(false),
        }
    }

    /// Waits until a call has reached the gate.
    pub async fn arrived(&self) {
        let mut arrived = self.arrived.subscribe();
        let _ = arrived.wait_for(|n| *n > 0).await;
    }

    /// Lets every held call (and every later one) through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.arrived.send_modify(|n| *n += 1);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }
}

pub struct FakeEngine {
    state: Mutex<State>,
    gates: Mutex<HashMap<Op, Gate>>,
    healthy: AtomicBool,
    subnet: Subnet,
}

impl Default for FakeEngine {
    fn default() -> Self {
        FakeEngine {
            state: Mutex::default(),
            gates: Mutex::default(),
            healthy: AtomicBool::new(true),
            subnet: Subnet::parse("10.99.0.0/16").expect("a subnet"),
        }
    }
}

impl FakeEngine {
    pub fn new() -> Arc<FakeEngine> {
        Arc::new(FakeEngine::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake engine lock")
    }

    /// Holds every later call of `op` after it took effect, until the gate is released.
    pub fn hold(&self, op: Op) -> Gate {
        let gate = Gate::new();
        self.gates
            .lock()
            .expect("gates lock")
            .insert(op, gate.clone());
        gate
    }

    /// The next call of `op` fails with `err`.
    pub fn fail_next(&self, op: Op, err: EngineError) {
        self.state().failures.entry(op).or_default().push_back(err);
    }

    /// Every call fails as if the Engine did not answer (and the health watch says so).
    pub fn set_reachable(&self, reachable: bool) {
        self.state().unreachable = !reachable;
        self.healthy.store(reachable, Ordering::Relaxed);
    }

    /// Whether demos of containers made from now on answer their probe.
    pub fn demos_answer(&self, answer: bool) {
        self.state().silent_demos = !answer;
    }

    /// What the load command exits with (0 and no output unless set); its last line is
    /// its message, as if all it printed went to stderr.
    pub fn exec_outcome(&self, exit_code: i64, output: &str) {
        self.state().exec = Some(ExecOutcome {
            exit_code,
            output_tail: output.to_string(),
            message: super::last_line(output.as_bytes()),
        });
    }

    pub fn container(&self, sandbox: SandboxId) -> Option<FakeContainer> {
        self.state().containers.get(&sandbox).cloned()
    }

    /// Sandboxes with any object left.
    pub fn sandboxes(&self) -> Vec<SandboxId> {
        let state = self.state();
        let mut all: Vec<SandboxId> = state
            .containers
            .keys()
            .chain(state.volumes.keys())
            .copied()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The container stops by itself (a crash; `oom` the memory limit).
    pub fn crash(&self, sandbox: SandboxId, exit_code: i64, oom: bool) {
        if let Some(c) = self.state().containers.get_mut(&sandbox) {
            c.running = false;
            c.exit_code = Some(exit_code);
            c.oom_killed = oom;
        }
    }

    /// The image vanishes (someone ran `docker image prune -a`): creates of it fail with
    /// `NotFound("image")` until it is put back.
    pub fn remove_image(&self, image: &str) {
        self.state().removed_images.insert(image.to_string());
    }

    /// Whether the image is on the fake Engine (not removed).
    pub fn image_there(&self, image: &str) -> bool {
        !self.state().removed_images.contains(image)
    }

    pub fn put_image_back(&self, image: &str) {
        self.state().removed_images.remove(image);
    }

    /// The sandbox network vanishes (someone ran `docker network prune`).
    pub fn remove_network(&self) {
        self.state().network_missing = true;
    }

    /// The container and its volumes vanish (someone ran `docker rm -fv`).
    pub fn vanish(&self, sandbox: SandboxId) {
        let mut state = self.state();
        state.containers.remove(&sandbox);
        state.volumes.remove(&sandbox);
    }

    /// Where the listing says the sandbox's volumes are on the host.
    pub fn place_volumes(&self, sandbox: SandboxId, paths: Vec<PathBuf>) {
        self.state().volume_paths.insert(sandbox, paths);
    }

    /// A labelled container of this deployment that no sandbox made (a leftover).
    pub fn leftover(&self, sandbox: SandboxId) {
        let mut state = self.state();
        state.containers.insert(
            sandbox,
            FakeContainer {
                demo: DemoId::new(),
                ip: Ipv4Addr::UNSPECIFIED,
                running: true,
                exit_code: None,
                oom_killed: false,
                data_dir: PathBuf::new(),
                answers: true,
            },
        );
        state.volumes.insert(sandbox, 1);
    }

    /// How many calls of `op` were made (for `sandbox`, if given).
    pub fn calls(&self, op: Op, sandbox: Option<SandboxId>) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|(o, id)| *o == op && (sandbox.is_none() || *id == sandbox))
            .count()
    }

    /// Records the call; fails it if the Engine is unreachable or a failure is due.
    fn enter(&self, op: Op, sandbox: Option<SandboxId>) -> Result<()> {
        let mut state = self.state();
        state.calls.push((op, sandbox));
        if state.unreachable {
            return Err(EngineError::Unavailable(
                "the fake Engine is cut off".into(),
            ));
        }
        match state.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits at `op`'s gate, if one is set, then hands back the call's result.
    async fn leave<T>(&self, op: Op, result: Result<T>) -> Result<T> {
        let gate = self.gates.lock().expect("gates lock").get(&op).cloned();
        if let Some(gate) = gate {
            gate.pass().await;
        }
        result
    }

    fn with_container<T>(
        &self,
        sandbox: SandboxId,
        work: impl FnOnce(&mut FakeContainer) -> Result<T>,
    ) -> Result<T> {
        match self.state().containers.get_mut(&sandbox) {
            Some(container) => work(container),
            None => Err(EngineError::NotFound("container".into())),
        }
    }
}

#[async_trait]
impl Engine for FakeEngine {
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    async fn ping(&self) -> Result<()> {
        let up = !self.state().unreachable;
        self.healthy.store(up, Ordering::Relaxed);
        if up {
            Ok(())
        } else {
            Err(EngineError::Unavailable(
                "the fake Engine is cut off".into(),
            ))
        }
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        let result = self
            .enter(Op::ImageExists, None)
            .map(|()| !self.state().removed_images.contains(image));
        self.leave(Op::ImageExists, result).await
    }

    async fn remove_image(&self, image: &str) -> Result<bool> {
        Ok(self.state().removed_images.insert(image.to_string()))
    }

    /// Pulls succeed unless a failure is due: a pinned reference resolves to its own digest,
    /// any other to `sha256:` and the reference's length in hex. The image is then there.
    async fn pull(
        &self,
        reference: &str,
        _credentials: Option<&PullCredentials>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<String> {
        let result = self.enter(Op::Pull, None).map(|()| {
            progress(PullProgress {
                layers: 1,
                layers_done: 1,
                bytes: 1,
                bytes_done: 1,
            });
            self.state().removed_images.remove(reference);
            match reference.split_once('@') {
                Some((_, digest)) => digest.to_string(),
                None => format!("sha256:{:064x}", reference.len()),
            }
        });
        self.leave(Op::Pull, result).await
    }

    fn network_name(&self) -> String {
        "testdrive-fake".to_string()
    }

    fn address(&self, slot: u32) -> Option<Ipv4Addr> {
        self.subnet.address(slot)
    }

    async fn create(&self, new: &NewContainer<'_>) -> Result<()> {
        let (sandbox, demo, spec, ip) = (new.sandbox, new.demo, new.spec, new.ip);
        let data_dir = new.data_dir.clone();
        let result = self.enter(Op::Create, Some(sandbox)).and_then(|()| {
            let mut state = self.state();
            if state.removed_images.contains(&spec.image) {
                return Err(EngineError::NotFound("image".into()));
            }
            let answers = !state.silent_demos;
            // Made already (a retried create): the Engine's name conflict, recovered.
            state
                .containers
                .entry(sandbox)
                .or_insert_with(|| FakeContainer {
                    demo,
                    ip,
                    running: false,
                    exit_code: None,
                    oom_killed: false,
                    data_dir,
                    answers,
                });
            state.volumes.insert(sandbox, 1 + spec.writable_paths.len());
            Ok(())
        });
        self.leave(Op::Create, result).await
    }

    async fn owner(&self, sandbox: SandboxId, _spec: &DemoSpec) -> Result<Owner> {
        let result = self
            .enter(Op::Owner, Some(sandbox))
            .and_then(|()| self.with_container(sandbox, |_| Ok(())));
        self.leave(Op::Owner, result).await?;
        Ok(Owner::ROOT)
    }

    async fn start(&self, sandbox: SandboxId) -> Result<()> {
        let result = self.enter(Op::Start, Some(sandbox)).and_then(|()| {
            if self.state().network_missing {
                return Err(EngineError::NetworkMissing);
            }
            self.with_container(sandbox, |c| {
                c.running = true;
                c.exit_code = None;
                c.oom_killed = false;
                Ok(())
            })
        });
        self.leave(Op::Start, result).await
    }

    async fn stop(&self, sandbox: SandboxId) -> Result<()> {
        let result = self.enter(Op::Stop, Some(sandbox)).and_then(|()| {
            self.with_container(sandbox, |c| {
                if c.running {
                    c.running = false;
                    c.exit_code = Some(0);
                }
                Ok(())
            })
        });
        self.leave(Op::Stop, result).await
    }

    async fn state(&self, sandbox: SandboxId) -> Result<ContainerState> {
        let result = self.enter(Op::State, Some(sandbox)).and_then(|()| {
            self.with_container(sandbox, |c| {
                Ok(ContainerState {
                    running: c.running,
                    exit_code: c.exit_code,
                    oom_killed: c.oom_killed,
                })
            })
        });
        self.leave(Op::State, result).await
    }

    async fn exec(&self, sandbox: SandboxId, _cmd: &[String]) -> Result<ExecOutcome> {
        let outcome = self.state().exec.clone().unwrap_or(ExecOutcome {
            exit_code: 0,
            output_tail: String::new(),
            message: None,
        });
        let result = self.enter(Op::Exec, Some(sandbox)).and_then(|()| {
            self.with_container(sandbox, |c| match c.running {
                true => Ok(outcome),
                false => Err(EngineError::Rejected {
                    status: 409,
                    message: "the container is not running".into(),
                }),
            })
        });
        self.leave(Op::Exec, result).await
    }

    async fn remove_container(&self, sandbox: SandboxId) -> Result<bool> {
        let result = self.enter(Op::RemoveContainer, Some(sandbox)).map(|()| {
            let mut state = self.state();
            let removed = state.containers.remove(&sandbox).is_some();
            if removed {
                // `rm -v`: its volumes go with it.
                state.volumes.remove(&sandbox);
            }
            removed
        });
        self.leave(Op::RemoveContainer, result).await
    }

    async fn remove_volumes(&self, sandbox: SandboxId) -> Result<usize> {
        let result = self
            .enter(Op::RemoveVolumes, Some(sandbox))
            .map(|()| self.state().volumes.remove(&sandbox).unwrap_or(0));
        self.leave(Op::RemoveVolumes, result).await
    }

    /// Containers are listed under their sandbox's id, volumes as `<sandbox id>/<n>`.
    async fn labelled(&self) -> Result<Labelled> {
        let result = self.enter(Op::List, None).map(|()| {
            let state = self.state();
            let mut labelled = Labelled::default();
            for (id, c) in &state.containers {
                let found = labelled.by_sandbox.entry(*id).or_default();
                found.containers.push((id.to_string(), c.running));
            }
            for (id, count) in &state.volumes {
                let paths = state.volume_paths.get(id).cloned().unwrap_or_default();
                let found = labelled.by_sandbox.entry(*id).or_default();
                found.volumes = (0..(*count).max(paths.len()))
                    .map(|n| {
                        (
                            format!("{id}/{n}"),
                            paths.get(n).cloned().unwrap_or_default(),
                        )
                    })
                    .collect();
            }
            labelled
        });
        self.leave(Op::List, result).await
    }

    async fn remove_found(&self, found: &Found) -> Result<Removed> {
        let result = self.enter(Op::RemoveFound, None).map(|()| {
            let mut state = self.state();
            let sandbox_of = |raw: &str| SandboxId::parse(raw.split('/').next()?).ok();
            let mut removed = Removed::default();
            for (id, _) in &found.containers {
                if let Some(sandbox) = sandbox_of(id) {
                    state.containers.remove(&sandbox);
                    state.volumes.remove(&sandbox);
                }
                removed.containers += 1;
            }
            for (name, _) in &found.volumes {
                if let Some(sandbox) = sandbox_of(name) {
                    state.volumes.remove(&sandbox);
                }
                removed.volumes += 1;
            }
            removed.networks = found.networks.len() as u32;
            removed
        });
        self.leave(Op::RemoveFound, result).await
    }

    async fn reattach(&self, sandbox: SandboxId) -> Result<()> {
        let result = self
            .enter(Op::Reattach, Some(sandbox))
            .and_then(|()| self.with_container(sandbox, |_| Ok(())));
        self.leave(Op::Reattach, result).await
    }

    async fn ensure_network(&self) -> Result<NetworkRepair> {
        let result = self.enter(Op::EnsureNetwork, None).map(|()| {
            let mut state = self.state();
            let recreated = std::mem::take(&mut state.network_missing);
            NetworkRepair {
                recreated,
                rules_restored: Vec::new(),
            }
        });
        self.leave(Op::EnsureNetwork, result).await
    }

    async fn stats(&self, sandbox: SandboxId) -> Result<StatsReading> {
        let result = self.enter(Op::Stats, Some(sandbox)).and_then(|()| {
            self.with_container(sandbox, |_| {
                Ok(StatsReading {
                    memory_bytes: 8 << 20,
                    memory_limit_bytes: 256 << 20,
                    cpu_total_ns: 0,
                    system_ns: 0,
                    online_cpus: 2,
                })
            })
        });
        self.leave(Op::Stats, result).await
    }

    async fn probe(&self, addr: SocketAddr, _path: &str) -> std::result::Result<u16, String> {
        let found = {
            let mut state = self.state();
            state.calls.push((Op::Probe, None));
            state
                .containers
                .values()
                .any(|c| c.ip == addr.ip() && c.running && c.answers)
        };
        let result = if found {
            Ok(200)
        } else {
            Err(EngineError::Unavailable("connection refused".into()))
        };
        self.leave(Op::Probe, result)
            .await
            .map_err(|_| "connect: connection refused".to_string())
    }
}
