//! The Docker Engine, through bollard: hardened containers, the sandbox network, tar
//! streams of the prospect's files. Idempotent calls are retried while the Engine is
//! unreachable; the API version is negotiated on first use, so the service starts while
//! the Engine is down and recovers when it comes back.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointIpamConfig, EndpointSettings,
    ExecConfig, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions,
    NetworkingConfig, Volume,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StartContainerOptions, StatsOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::RwLock;

use super::{
    ContainerState, DEMO_LABEL, Engine, EngineError, EngineSettings, ExecOutcome, INSTANCE_LABEL,
    Labelled, NewContainer, Result, SANDBOX_LABEL, StatsReading, archive, network, probe,
};
use crate::domain::{DemoId, SandboxId, StagedFile};

/// Retries of an idempotent call while the Engine is unreachable.
const RETRIES: u32 = 4;

impl EngineError {
    pub(super) fn from_bollard(err: bollard::errors::Error, what: &str) -> Self {
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => EngineError::NotFound(what.to_string()),
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Rejected {
                status: status_code,
                message,
            },
            other => EngineError::Unavailable(other.to_string()),
        }
    }
}

/// A list filter for objects carrying `label` (`key=value`).
fn label_filter(label: String) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![label])])
}

/// The volumes carrying `label` (`key=value`).
async fn volumes(docker: &Docker, label: String) -> Result<Vec<Volume>> {
    let filter = label_filter(label);
    let options = ListVolumesOptionsBuilder::default()
        .filters(&filter)
        .build();
    let listed = docker.list_volumes(Some(options)).await;
    let listed = listed.map_err(|e| EngineError::from_bollard(e, "volume"))?;
    Ok(listed.volumes.unwrap_or_default())
}

/// The name of a sandbox's container (names are unique on an Engine, ids are not reused).
pub fn container_name(id: SandboxId) -> String {
    format!("testdrive-{id}")
}

/// A handle on the Docker Engine. Cheap to clone.
#[derive(Clone)]
pub struct DockerEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced once the API version is negotiated and the sandbox network exists; until
    /// then every call tries again, so the service starts while the Engine is down and
    /// recovers when it comes back.
    docker: RwLock<(Docker, bool)>,
    settings: EngineSettings,
    instance: String,
    /// What the last ping said; creation is refused at once while it says down.
    healthy: AtomicBool,
}

impl DockerEngine {
    /// Connects to the Engine and negotiates the API version. A down Engine is not fatal:
    /// negotiation is retried on the next call.
    pub async fn connect(settings: EngineSettings, instance: String) -> Result<DockerEngine> {
        let docker = match &settings.host {
            Some(host) => Docker::connect_with_host(host),
            // DOCKER_HOST, else the local socket.
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let engine = DockerEngine {
            inner: Arc::new(Inner {
                docker: RwLock::new((docker, false)),
                settings,
                instance,
                healthy: AtomicBool::new(false),
            }),
        };
        if let Err(err) = engine.ping().await {
            tracing::warn!(%err, "the Docker Engine does not answer yet; will retry");
        }
        Ok(engine)
    }

    /// The negotiated client, negotiating (and making sure the sandbox network exists) first
    /// if that has not happened yet.
    async fn client(&self) -> Result<Docker> {
        {
            let guard = self.inner.docker.read().await;
            if guard.1 {
                return Ok(guard.0.clone());
            }
        }
        let mut guard = self.inner.docker.write().await;
        if !guard.1 {
            let negotiated = guard
                .0
                .clone()
                .negotiate_version()
                .await
                .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            tracing::info!(
                api_version = %negotiated.client_version(),
                "negotiated the Docker Engine API version"
            );
            network::ensure(&negotiated, &self.inner.settings.network).await?;
            *guard = (negotiated, true);
        }
        Ok(guard.0.clone())
    }

    /// Runs an idempotent Engine call, retrying with backoff while the Engine is unreachable
    /// (a restarting daemon, a socket that blips): about 1.5 s in all before giving up.
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match call().await {
                Err(EngineError::Unavailable(why)) if attempt < RETRIES => {
                    tracing::debug!(what, attempt, %why, "the Engine call failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn labels(&self, sandbox: SandboxId, demo: DemoId) -> HashMap<String, String> {
        HashMap::from([
            (SANDBOX_LABEL.to_string(), sandbox.to_string()),
            (INSTANCE_LABEL.to_string(), self.inner.instance.clone()),
            (DEMO_LABEL.to_string(), demo.to_string()),
        ])
    }

    async fn remove_container_once(&self, sandbox: SandboxId) -> Result<bool> {
        let docker = self.client().await?;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let mut attempts = 0;
        loop {
            match docker
                .remove_container(&container_name(sandbox), Some(options.clone()))
                .await
                .map_err(|e| EngineError::from_bollard(e, "container"))
            {
                Ok(()) => return Ok(true),
                Err(EngineError::NotFound(_)) => return Ok(false),
                // "removal already in progress": someone else (another instance) is at it;
                // wait for it to finish rather than report the container gone too early.
                Err(EngineError::Rejected { status: 409, .. }) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn remove_volumes_once(&self, sandbox: SandboxId) -> Result<usize> {
        let docker = self.client().await?;
        let mut removed = 0;
        let label = format!("{SANDBOX_LABEL}={sandbox}");
        for volume in volumes(&docker, label).await? {
            match docker
                .remove_volume(
                    &volume.name,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await
                .map_err(|e| EngineError::from_bollard(e, "volume"))
            {
                Ok(()) | Err(EngineError::NotFound(_)) => removed += 1,
                Err(other) => return Err(other),
            }
        }
        Ok(removed)
    }

    async fn labelled_once(&self) -> Result<Labelled> {
        let docker = self.client().await?;
        let filter = label_filter(format!("{INSTANCE_LABEL}={}", self.inner.instance));
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| EngineError::from_bollard(e, "container"))?;
        let instance = format!("{INSTANCE_LABEL}={}", self.inner.instance);
        let volumes = volumes(&docker, instance).await?;
        let sandbox_of = |labels: &HashMap<String, String>| {
            labels
                .get(SANDBOX_LABEL)
                .and_then(|id| SandboxId::parse(id).ok())
        };
        Ok(Labelled {
            containers: containers
                .iter()
                .filter_map(|c| {
                    let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                    Some((sandbox_of(c.labels.as_ref()?)?, running))
                })
                .collect(),
            volumes: volumes.iter().fold(HashMap::new(), |mut by_sandbox, v| {
                if let Some(id) = sandbox_of(&v.labels) {
                    by_sandbox
                        .entry(id)
                        .or_insert_with(Vec::new)
                        .push(PathBuf::from(&v.mountpoint));
                }
                by_sandbox
            }),
        })
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> Result<()> {
        let result = match self.client().await {
            Ok(docker) => docker
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| EngineError::from_bollard(e, "ping")),
            Err(err) => Err(err),
        };
        self.inner.healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn mark_unhealthy(&self) {
        self.inner.healthy.store(false, Ordering::Relaxed);
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        self.retrying("inspect image", || async {
            match self.client().await?.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) => match EngineError::from_bollard(e, "image") {
                    EngineError::NotFound(_) => Ok(false),
                    other => Err(other),
                },
            }
        })
        .await
    }

    fn address(&self, slot: u32) -> Option<Ipv4Addr> {
        self.inner.settings.network.subnet.address(slot)
    }

    async fn create(&self, container: &NewContainer<'_>) -> Result<()> {
        let NewContainer {
            sandbox,
            demo,
            spec,
            ip,
        } = *container;
        let labels = self.labels(sandbox, demo);
        let volume = |target: &str| Mount {
            target: Some(target.to_string()),
            typ: Some(MountType::VOLUME),
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mounts = std::iter::once(spec.data_path.as_str())
            .chain(spec.writable_paths.iter().map(String::as_str))
            .map(volume)
            .collect();
        let memory = i64::from(spec.limits.memory_mb) * 1024 * 1024;
        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}m", self.inner.settings.tmpfs_mb),
            )])),
            memory: Some(memory),
            // Equal to memory: no swap, so the limit is a real one.
            memory_swap: Some(memory),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(spec.limits.pids)),
            mounts: Some(mounts),
            network_mode: Some(self.inner.settings.network.name.clone()),
            // Bounded logs: a chatty demo must not fill the host's disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "1m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            user: spec.user.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            hostname: Some("sandbox".to_string()),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.inner.settings.network.name.clone(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(ip.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let name = container_name(sandbox);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        // Retried while the Engine is unreachable; an attempt that reached it before the
        // connection broke leaves the container made, which the next attempt finds by name.
        self.retrying("create", || async {
            match self
                .client()
                .await?
                .create_container(Some(options.clone()), body.clone())
                .await
                .map_err(|e| EngineError::from_bollard(e, "image"))
            {
                Ok(_) => Ok(()),
                Err(EngineError::Rejected { status: 409, .. }) => self
                    .client()
                    .await?
                    .inspect_container(&name, None::<InspectContainerOptions>)
                    .await
                    .map(|_| ())
                    .map_err(|e| EngineError::from_bollard(e, "container")),
                Err(other) => Err(other),
            }
        })
        .await
    }

    /// One tar archive streamed from the spool: nothing is held in memory beyond a few
    /// buffers, whatever the size.
    async fn place_files(
        &self,
        sandbox: SandboxId,
        data_path: &str,
        files: Vec<StagedFile>,
    ) -> Result<()> {
        let container = container_name(sandbox);
        let total: u64 = files.iter().map(|f| f.bytes).sum();
        // The client's timeout covers the whole request; a large upload needs room.
        let timeout = Duration::from_secs(120 + total / (8 << 20));
        let options = UploadToContainerOptionsBuilder::default()
            .path(data_path)
            .build();
        // Each attempt streams the archive afresh from the spool.
        self.retrying("place files", || async {
            self.client()
                .await?
                .with_timeout(timeout)
                .upload_to_container(
                    &container,
                    Some(options.clone()),
                    bollard::body_try_stream(archive::stream(files.clone())),
                )
                .await
                .map_err(|e| EngineError::from_bollard(e, "container"))
        })
        .await
    }

    async fn start(&self, sandbox: SandboxId) -> Result<()> {
        let container = container_name(sandbox);
        self.retrying("start", || async {
            match self
                .client()
                .await?
                .start_container(&container, None::<StartContainerOptions>)
                .await
                .map_err(|e| EngineError::from_bollard(e, "container"))
            {
                Err(EngineError::Rejected { status: 304, .. }) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// The image's stop signal, then SIGKILL after a few seconds.
    async fn stop(&self, sandbox: SandboxId) -> Result<()> {
        let container = container_name(sandbox);
        let options = StopContainerOptionsBuilder::default().t(5).build();
        self.retrying("stop", || async {
            match self
                .client()
                .await?
                .stop_container(&container, Some(options.clone()))
                .await
                .map_err(|e| EngineError::from_bollard(e, "container"))
            {
                // Already stopped.
                Err(EngineError::Rejected { status: 304, .. }) => Ok(()),
                other => other,
            }
        })
        .await
    }

    async fn state(&self, sandbox: SandboxId) -> Result<ContainerState> {
        let container = container_name(sandbox);
        let info = self
            .retrying("inspect", || async {
                self.client()
                    .await?
                    .inspect_container(&container, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| EngineError::from_bollard(e, "container"))
            })
            .await?;
        let state = info.state.unwrap_or_default();
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    async fn exec(&self, sandbox: SandboxId, cmd: &[String]) -> Result<ExecOutcome> {
        let docker = self.client().await?;
        let exec = docker
            .create_exec(
                &container_name(sandbox),
                ExecConfig {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| EngineError::from_bollard(e, "container"))?;
        let mut tail = Vec::new();
        match docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| EngineError::from_bollard(e, "exec"))?
        {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.map_err(|e| EngineError::from_bollard(e, "exec"))?;
                    tail.extend_from_slice(&chunk.into_bytes());
                    if tail.len() > 4096 {
                        tail.drain(..tail.len() - 512);
                    }
                }
            }
            StartExecResults::Detached => {}
        }
        let inspected = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| EngineError::from_bollard(e, "exec"))?;
        let start = tail.len().saturating_sub(512);
        Ok(ExecOutcome {
            exit_code: inspected.exit_code.unwrap_or(-1),
            output_tail: String::from_utf8_lossy(&tail[start..]).trim().to_string(),
        })
    }

    async fn remove_container(&self, sandbox: SandboxId) -> Result<bool> {
        self.retrying("remove container", || self.remove_container_once(sandbox))
            .await
    }

    async fn remove_volumes(&self, sandbox: SandboxId) -> Result<usize> {
        self.retrying("remove volumes", || self.remove_volumes_once(sandbox))
            .await
    }

    /// No waiting for the Engine's second sample: the caller keeps the previous reading to
    /// work out CPU use.
    async fn stats(&self, sandbox: SandboxId) -> Result<StatsReading> {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let docker = self.client().await?;
        let reading = docker
            .stats(&container_name(sandbox), Some(options))
            .next()
            .await
            .ok_or_else(|| EngineError::Unavailable("the Engine sent no statistics".into()))?
            .map_err(|e| EngineError::from_bollard(e, "container"))?;
        let cpu = reading.cpu_stats.unwrap_or_default();
        let memory = reading.memory_stats.unwrap_or_default();
        // What `docker stats` shows: usage less the page cache the kernel can drop.
        let cache = memory
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("inactive_file")
                    .or_else(|| s.get("total_inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        Ok(StatsReading {
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
            memory_limit_bytes: memory.limit.unwrap_or(0),
            cpu_total_ns: cpu.cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
            system_ns: cpu.system_cpu_usage.unwrap_or(0),
            online_cpus: cpu.online_cpus.unwrap_or(1).max(1),
        })
    }

    async fn labelled(&self) -> Result<Labelled> {
        self.retrying("list", || self.labelled_once()).await
    }

    async fn probe(&self, addr: SocketAddr, path: &str) -> std::result::Result<u16, String> {
        probe::get(addr, path).await
    }
}
