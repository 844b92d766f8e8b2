//! The Docker Engine, through bollard: hardened containers with their host directory bound
//! at the data path, the sandbox network. Idempotent calls are retried while the Engine is
//! unreachable; the API version is negotiated on first use, so the service starts while
//! the Engine is down and recovers when it comes back.
//!
//! What a sandbox can learn of the others through the network it shares with them: the
//! Engine's embedded DNS server (127.0.0.11) answers every container on the network with
//! the names of the others — reverse lookups of their addresses included — and a
//! container's names are its name, its hostname and its short id. So a container's name
//! is a keyed hash of its sandbox's id (`container_name`), its hostname is that same name
//! (a shared hostname would answer for every sandbox at once), and it finds the sandbox
//! by its `testdrive.sandbox` label, never by name. The embedded server forwards other
//! names to `127.0.0.1` inside the sandbox, where nothing answers: an Engine that would
//! otherwise forward them from the host (older Engines with a loopback resolver on the
//! host, CVE-2024-29018) gives a sandbox no way out by DNS. IPv6 is switched off inside
//! every sandbox: the host firewall rule and the bridge's isolation of sandboxes from each
//! other are IPv4 rules, and newer Engines give containers a link-local IPv6 address.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointIpamConfig, EndpointSettings,
    ExecConfig, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions,
    NetworkConnectRequest, NetworkDisconnectRequest, NetworkingConfig, Volume,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptions,
    RemoveVolumeOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::RwLock;

use super::{
    ContainerState, DEMO_LABEL, Engine, EngineError, EngineSettings, ExecOutcome, Found,
    HostFirewall, INSTANCE_LABEL, Labelled, NetworkRepair, NewContainer, OUTPUT_TAIL_BYTES,
    PullCredentials, PullFailure, PullProgress, Removed, Result, SANDBOX_LABEL, StatsReading,
    isolate_host, last_line, network, output_tail, owner, probe,
};
use crate::domain::{DemoId, DemoSpec, ImageRef, SandboxId};
use crate::sandbox_dirs::Owner;

/// How long a demo's owner, once looked up, is taken as known.
const OWNER_FRESH: Duration = Duration::from_secs(60);

/// Retries of an idempotent call while the Engine is unreachable.
const RETRIES: u32 = 4;

/// How often `ensure_network` checks the host firewall rules when nothing else prompts it.
const RULES_EVERY: Duration = Duration::from_secs(60);

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

    /// As `from_bollard`, but a 404 that names a network — starting (or, on newer Engines,
    /// creating) a container whose network is gone — is `NetworkMissing`, not the
    /// container's absence.
    fn naming_network(err: bollard::errors::Error, what: &str) -> Self {
        match err {
            // "network <name or id> not found"; not "No such image: …network…".
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ref message,
            } if message.starts_with("network ") && message.ends_with("not found") => {
                EngineError::NetworkMissing
            }
            other => EngineError::from_bollard(other, what),
        }
    }
}

/// A list filter for objects carrying every one of `labels` (`key=value`).
fn label_filter(labels: Vec<String>) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), labels)])
}

/// The volumes carrying every one of `labels` (`key=value`).
async fn volumes(docker: &Docker, labels: Vec<String>) -> Result<Vec<Volume>> {
    let filter = label_filter(labels);
    let options = ListVolumesOptionsBuilder::default()
        .filters(&filter)
        .build();
    let listed = docker.list_volumes(Some(options)).await;
    let listed = listed.map_err(|e| EngineError::from_bollard(e, "volume"))?;
    Ok(listed.volumes.unwrap_or_default())
}

/// The name of a sandbox's container: unique on the Engine (ids are not reused) and
/// saying nothing of the id, since every sandbox on the network can learn the others'
/// names from the Engine's DNS. A keyed hash (the key is this deployment's instance id,
/// which instances sharing a database share): the same name on every call, so no lookup.
pub fn container_name(instance: &str, id: SandboxId) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(instance.as_bytes()).expect("any key length");
    mac.update(b"testdrive container name\0");
    mac.update(id.simple().as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("td-{}", hex::encode(&digest[..16]))
}

/// What runs inside a sandbox that touches the network beyond its own address: DNS for
/// outside names goes to the sandbox's own loopback (nothing), IPv6 is off.
fn network_hardening(host_config: &mut HostConfig) {
    host_config.dns = Some(vec!["127.0.0.1".to_string()]);
    // No search domains of the host's.
    host_config.dns_search = Some(vec![".".to_string()]);
    host_config.sysctls = Some(HashMap::from([
        (
            "net.ipv6.conf.all.disable_ipv6".to_string(),
            "1".to_string(),
        ),
        (
            "net.ipv6.conf.default.disable_ipv6".to_string(),
            "1".to_string(),
        ),
    ]));
}

/// A container's place on the sandbox network: at its sandbox's own address (testdrive's to
/// hand out, see `network`).
fn endpoint_at(ipv4_address: Option<String>) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container to create for a sandbox: hardened as the contract says, named `name`
/// (also its hostname, see the module's comment), at its address on the sandbox network.
fn container_body(
    settings: &EngineSettings,
    name: &str,
    labels: HashMap<String, String>,
    container: &NewContainer<'_>,
) -> ContainerCreateBody {
    let NewContainer {
        spec, ip, data_dir, ..
    } = container;
    // The prospect's files are renamed into this directory on the host: no copy, no archive.
    let data = Mount {
        target: Some(spec.data_path.clone()),
        source: Some(data_dir.display().to_string()),
        typ: Some(MountType::BIND),
        ..Default::default()
    };
    let volume = |target: &str| Mount {
        target: Some(target.to_string()),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mounts = std::iter::once(data)
        .chain(spec.writable_paths.iter().map(|p| volume(p)))
        .collect();
    let memory = i64::from(spec.limits.memory_mb) * 1024 * 1024;
    let mut host_config = HostConfig {
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={}m", settings.tmpfs_mb),
        )])),
        memory: Some(memory),
        // Equal to memory: no swap, so the limit is a real one.
        memory_swap: Some(memory),
        nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
        pids_limit: Some(i64::from(spec.limits.pids)),
        mounts: Some(mounts),
        network_mode: Some(settings.network.name.clone()),
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
    network_hardening(&mut host_config);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        user: spec.user.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        hostname: Some(name.to_string()),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                settings.network.name.clone(),
                endpoint_at(Some(ip.to_string())),
            )])),
        }),
        ..Default::default()
    }
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
    /// When the host firewall rules were last checked (`ensure_network`).
    rules_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Owners by image reference and `user`, and when each was looked up: looking one up
    /// takes an Engine call or three, for every trial otherwise.
    owners: std::sync::Mutex<HashMap<(String, String), (Owner, std::time::Instant)>>,
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
                // The service installed them as it started.
                rules_checked: std::sync::Mutex::new(Some(std::time::Instant::now())),
                owners: std::sync::Mutex::new(HashMap::new()),
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
            network::ensure(
                &negotiated,
                &self.inner.settings.network,
                &self.inner.instance,
            )
            .await?;
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

    /// A small text file of a container's image (`None` when there is none): one entry of
    /// the Engine's tar archive, at most 1 MiB.
    async fn read_small_file(&self, container: &str, path: &str) -> Result<Option<String>> {
        const MAX: usize = 1 << 20;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let docker = self.client().await?;
        let mut archive = Vec::new();
        let mut stream = docker.download_from_container(container, Some(options));
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) if archive.len() + bytes.len() <= MAX + 4096 => {
                    archive.extend_from_slice(&bytes)
                }
                Ok(_) => break,
                Err(e) => match EngineError::from_bollard(e, "file") {
                    EngineError::NotFound(_) => return Ok(None),
                    other => return Err(other),
                },
            }
        }
        let mut entries = tar::Archive::new(archive.as_slice());
        let Some(Ok(mut entry)) = entries.entries().ok().and_then(|mut e| e.next()) else {
            return Ok(None);
        };
        let mut text = String::new();
        use std::io::Read;
        Ok((&mut entry)
            .take(MAX as u64)
            .read_to_string(&mut text)
            .ok()
            .map(|_| text))
    }

    fn container_name(&self, sandbox: SandboxId) -> String {
        container_name(&self.inner.instance, sandbox)
    }

    /// The labels that mark the sandbox's objects as this deployment's.
    fn sandbox_labels(&self, sandbox: SandboxId) -> Vec<String> {
        vec![
            format!("{SANDBOX_LABEL}={sandbox}"),
            format!("{INSTANCE_LABEL}={}", self.inner.instance),
        ]
    }

    /// The Engine's id of the container labelled for the sandbox, if there is one.
    async fn labelled_container(&self, sandbox: SandboxId) -> Result<Option<String>> {
        let filter = label_filter(self.sandbox_labels(sandbox));
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filter)
            .build();
        let found = self.client().await?.list_containers(Some(options)).await;
        let found = found.map_err(|e| EngineError::from_bollard(e, "container"))?;
        Ok(found.into_iter().find_map(|c| c.id))
    }

    /// Runs `call` on the sandbox's container, named as `container_name` says; a container
    /// made under another name (`testdrive-<id>`, before names were keyed) is found by its
    /// labels, so sandboxes that outlive an upgrade are still reached and torn down.
    async fn on_container<T, F, Fut>(&self, sandbox: SandboxId, call: F) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match call(self.container_name(sandbox)).await {
            Err(EngineError::NotFound(what)) => match self.labelled_container(sandbox).await? {
                Some(id) => call(id).await,
                None => Err(EngineError::NotFound(what)),
            },
            other => other,
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
            match self
                .on_container(sandbox, |name| {
                    let options = options.clone();
                    let docker = &docker;
                    async move {
                        docker
                            .remove_container(&name, Some(options))
                            .await
                            .map_err(|e| EngineError::from_bollard(e, "container"))
                    }
                })
                .await
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
        for volume in volumes(&docker, self.sandbox_labels(sandbox)).await? {
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
        let mine = || label_filter(vec![format!("{INSTANCE_LABEL}={}", self.inner.instance)]);
        let filter = mine();
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| EngineError::from_bollard(e, "container"))?;
        let volumes = volumes(
            &docker,
            vec![format!("{INSTANCE_LABEL}={}", self.inner.instance)],
        )
        .await?;
        let filter = mine();
        let networks = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| EngineError::from_bollard(e, "network"))?;
        let sandbox_of = |labels: &HashMap<String, String>| {
            labels
                .get(SANDBOX_LABEL)
                .and_then(|id| SandboxId::parse(id).ok())
        };
        let mut by_sandbox: HashMap<SandboxId, Found> = HashMap::new();
        for c in containers {
            if let (Some(sandbox), Some(id)) = (c.labels.as_ref().and_then(sandbox_of), c.id) {
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                let found = by_sandbox.entry(sandbox).or_default();
                found.containers.push((id, running));
            }
        }
        for v in volumes {
            if let Some(sandbox) = sandbox_of(&v.labels) {
                let found = by_sandbox.entry(sandbox).or_default();
                found.volumes.push((v.name, PathBuf::from(v.mountpoint)));
            }
        }
        for n in networks {
            if let (Some(sandbox), Some(id)) = (n.labels.as_ref().and_then(sandbox_of), n.id) {
                by_sandbox.entry(sandbox).or_default().networks.push(id);
            }
        }
        Ok(Labelled { by_sandbox })
    }

    async fn remove_found_once(&self, found: &Found) -> Result<Removed> {
        let docker = self.client().await?;
        let mut removed = Removed::default();
        let gone = |result: std::result::Result<(), bollard::errors::Error>, what| match result
            .map_err(|e| EngineError::from_bollard(e, what))
        {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(1),
            Err(other) => Err(other),
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        for (id, _) in &found.containers {
            let result = docker.remove_container(id, Some(options.clone())).await;
            removed.containers += gone(result, "container")?;
        }
        for (name, _) in &found.volumes {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            let result = docker.remove_volume(name, Some(options)).await;
            removed.volumes += gone(result, "volume")?;
        }
        for id in &found.networks {
            let result = docker.remove_network(id).await;
            removed.networks += gone(result, "network")?;
        }
        Ok(removed)
    }

    async fn ensure_network_once(&self) -> Result<NetworkRepair> {
        let docker = self.client().await?;
        let settings = &self.inner.settings;
        let recreated = network::ensure(&docker, &settings.network, &self.inner.instance).await?;
        // A rule check runs three programs: once a minute is enough, unless the network
        // was just made again (whoever removed it may have cleaned the firewall too).
        let due = {
            let mut last = self.inner.rules_checked.lock().expect("never poisoned");
            let due = recreated || last.is_none_or(|at| at.elapsed() >= RULES_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let rules_restored = match settings.host_firewall {
            HostFirewall::Iptables if due => isolate_host(&settings.network.bridge)
                .await
                .map_err(EngineError::Firewall)?,
            _ => Vec::new(),
        };
        Ok(NetworkRepair {
            recreated,
            rules_restored,
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

    fn network_name(&self) -> String {
        self.inner.settings.network.name.clone()
    }

    async fn remove_image(&self, image: &str) -> Result<bool> {
        let docker = self.client().await?;
        match docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await
            .map_err(|e| EngineError::from_bollard(e, "image"))
        {
            Ok(_) => Ok(true),
            Err(EngineError::NotFound(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&PullCredentials>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<String> {
        let failed = |message: String| EngineError::Pull {
            failure: PullFailure::of(&message),
            message,
        };
        // A pull of a large image outlasts the client's default timeout.
        let docker = self.client().await?.with_timeout(Duration::from_secs(3600));
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let mut stream = docker.create_image(Some(options), None, credentials);
        // Layer id → (bytes done, bytes in all, done).
        let mut layers: HashMap<String, (u64, u64, bool)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(failed(error));
                }
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(failed(message));
                }
                Err(other) => return Err(EngineError::Unavailable(other.to_string())),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(failed(detail));
            }
            let (Some(id), Some(status)) = (info.id, info.status) else {
                continue;
            };
            let layer = layers.entry(id).or_default();
            if let Some(detail) = info.progress_detail
                && status == "Downloading"
            {
                layer.0 = detail.current.unwrap_or(0).max(0) as u64;
                layer.1 = detail.total.unwrap_or(0).max(0) as u64;
            }
            if matches!(status.as_str(), "Pull complete" | "Already exists") {
                layer.2 = true;
                layer.0 = layer.1;
            }
            progress(PullProgress {
                layers: layers.len() as u32,
                layers_done: layers.values().filter(|l| l.2).count() as u32,
                bytes: layers.values().map(|l| l.1).sum(),
                bytes_done: layers.values().map(|l| l.0).sum(),
            });
        }
        // The digest the registry resolved: the repository's entry among the image's.
        let info = docker
            .inspect_image(reference)
            .await
            .map_err(|e| EngineError::from_bollard(e, "image"))?;
        let name = ImageRef::parse(reference)
            .map(|r| r.name())
            .unwrap_or_else(|_| reference.to_string());
        info.repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|entry| Some(entry.strip_prefix(&name)?.strip_prefix('@')?.to_string()))
            .ok_or_else(|| failed(format!("the registry gave {reference} no digest")))
    }

    fn address(&self, slot: u32) -> Option<Ipv4Addr> {
        self.inner.settings.network.subnet.address(slot)
    }

    async fn create(&self, container: &NewContainer<'_>) -> Result<()> {
        let name = self.container_name(container.sandbox);
        let labels = self.labels(container.sandbox, container.demo);
        let body = container_body(&self.inner.settings, &name, labels, container);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        // Retried while the Engine is unreachable; an attempt that reached it before the
        // connection broke leaves the container made, which the next attempt finds by name.
        self.retrying("create", || async {
            match self
                .client()
                .await?
                .create_container(Some(options.clone()), body.clone())
                .await
                .map_err(|e| EngineError::naming_network(e, "image"))
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

    async fn owner(&self, sandbox: SandboxId, spec: &DemoSpec) -> Result<Owner> {
        let given = spec.user.clone().unwrap_or_default();
        if let Some(owner) = spec.user.as_deref().and_then(owner::numeric) {
            return Ok(owner);
        }
        // By the image reference as the demo names it (a digest for a pulled image): a tag
        // moved to an image with another user is noticed within `OWNER_FRESH`.
        let key = (spec.image.clone(), given);
        if let Some((owner, at)) = self.inner.owners.lock().expect("owners lock").get(&key)
            && at.elapsed() < OWNER_FRESH
        {
            return Ok(*owner);
        }
        let name = self.container_name(sandbox);
        let docker = self.client().await?;
        let info = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| EngineError::from_bollard(e, "container"))?;
        let user = info.config.and_then(|c| c.user).unwrap_or_default();
        let owner = match owner::numeric(&user) {
            Some(owner) => owner,
            None => {
                let passwd = self.read_small_file(&name, "/etc/passwd").await?;
                let group = if owner::needs_group(&user) {
                    self.read_small_file(&name, "/etc/group").await?
                } else {
                    None
                };
                owner::resolve(&user, passwd.as_deref(), group.as_deref())
                    .map_err(EngineError::NoSuchUser)?
            }
        };
        self.inner
            .owners
            .lock()
            .expect("owners lock")
            .insert(key, (owner, std::time::Instant::now()));
        Ok(owner)
    }

    async fn start(&self, sandbox: SandboxId) -> Result<()> {
        self.retrying("start", || {
            self.on_container(sandbox, |container| async move {
                match self
                    .client()
                    .await?
                    .start_container(&container, None::<StartContainerOptions>)
                    .await
                    .map_err(|e| EngineError::naming_network(e, "container"))
                {
                    Err(EngineError::Rejected { status: 304, .. }) => Ok(()),
                    other => other,
                }
            })
        })
        .await
    }

    /// The image's stop signal, then SIGKILL after a few seconds.
    async fn stop(&self, sandbox: SandboxId) -> Result<()> {
        let options = StopContainerOptionsBuilder::default().t(5).build();
        self.retrying("stop", || {
            self.on_container(sandbox, |container| {
                let options = options.clone();
                async move {
                    match self
                        .client()
                        .await?
                        .stop_container(&container, Some(options))
                        .await
                        .map_err(|e| EngineError::from_bollard(e, "container"))
                    {
                        // Already stopped.
                        Err(EngineError::Rejected { status: 304, .. }) => Ok(()),
                        other => other,
                    }
                }
            })
        })
        .await
    }

    async fn state(&self, sandbox: SandboxId) -> Result<ContainerState> {
        let info = self
            .retrying("inspect", || {
                self.on_container(sandbox, |container| async move {
                    self.client()
                        .await?
                        .inspect_container(&container, None::<InspectContainerOptions>)
                        .await
                        .map_err(|e| EngineError::from_bollard(e, "container"))
                })
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
        let config = ExecConfig {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .on_container(sandbox, |container| {
                let (docker, config) = (&docker, config.clone());
                async move {
                    docker
                        .create_exec(&container, config)
                        .await
                        .map_err(|e| EngineError::from_bollard(e, "container"))
                }
            })
            .await?;
        // Both streams as they came, and stderr alone for the demo's message; each bounded.
        let (mut tail, mut stderr) = (Vec::new(), Vec::new());
        let mut cut = false;
        let keep = |buf: &mut Vec<u8>, bytes: &[u8]| {
            buf.extend_from_slice(bytes);
            if buf.len() > 2 * OUTPUT_TAIL_BYTES {
                buf.drain(..buf.len() - OUTPUT_TAIL_BYTES);
                return true;
            }
            false
        };
        match docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| EngineError::from_bollard(e, "exec"))?
        {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.map_err(|e| EngineError::from_bollard(e, "exec"))?;
                    if let LogOutput::StdErr { message } = &chunk {
                        keep(&mut stderr, message);
                    }
                    cut |= keep(&mut tail, &chunk.into_bytes());
                }
            }
            StartExecResults::Detached => {}
        }
        let inspected = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| EngineError::from_bollard(e, "exec"))?;
        Ok(ExecOutcome {
            exit_code: inspected.exit_code.unwrap_or(-1),
            output_tail: output_tail(&tail, cut),
            message: last_line(&stderr),
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
        let reading = self
            .on_container(sandbox, |container| {
                let (docker, options) = (&docker, options.clone());
                async move {
                    docker
                        .stats(&container, Some(options))
                        .next()
                        .await
                        .ok_or_else(|| {
                            EngineError::Unavailable("the Engine sent no statistics".into())
                        })?
                        .map_err(|e| EngineError::from_bollard(e, "container"))
                }
            })
            .await?;
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

    async fn remove_found(&self, found: &Found) -> Result<Removed> {
        self.retrying("remove found objects", || self.remove_found_once(found))
            .await
    }

    async fn ensure_network(&self) -> Result<NetworkRepair> {
        self.retrying("ensure network", || self.ensure_network_once())
            .await
    }

    /// A container remembers its network by id, so once the network is made again it will
    /// not start ("network <old id> not found"): take its endpoint off (by the network's
    /// name, forced) and put it on again at the address it had.
    async fn reattach(&self, sandbox: SandboxId) -> Result<()> {
        let docker = self.client().await?;
        let network = self.inner.settings.network.name.clone();
        self.on_container(sandbox, |container| {
            let (docker, network) = (&docker, &network);
            async move {
                let info = docker
                    .inspect_container(&container, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| EngineError::from_bollard(e, "container"))?;
                let ip = info
                    .network_settings
                    .and_then(|n| n.networks?.remove(network.as_str()))
                    .and_then(|endpoint| endpoint.ipam_config?.ipv4_address);
                let leave = NetworkDisconnectRequest {
                    container: container.clone(),
                    force: Some(true),
                };
                // Not attached (a container made while the network was missing) is fine.
                let _ = docker.disconnect_network(network, leave).await;
                let join = NetworkConnectRequest {
                    container: container.clone(),
                    endpoint_config: Some(endpoint_at(ip)),
                };
                docker
                    .connect_network(network, join)
                    .await
                    .map_err(|e| EngineError::from_bollard(e, "network"))
            }
        })
        .await
    }

    async fn probe(&self, addr: SocketAddr, path: &str) -> std::result::Result<u16, String> {
        probe::get(addr, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DemoManifest, DemoSpec, Policy};
    use crate::engine::{NetworkSettings, Subnet};

    #[test]
    fn a_container_name_says_nothing_of_the_sandbox_id() {
        let id = SandboxId::new();
        let name = container_name("instance-a", id);
        assert_eq!(
            name,
            container_name("instance-a", id),
            "the same on every call"
        );
        assert_ne!(
            name,
            container_name("instance-b", id),
            "keyed by the instance"
        );
        assert_ne!(name, container_name("instance-a", SandboxId::new()));
        assert!(name.starts_with("td-") && name.len() == 3 + 32, "{name}");
        assert!(!name.contains(&id.simple()) && !name.contains(&id.to_string()));
        // No 8 hex digits of the id in a row (its time prefix included).
        let simple = id.simple();
        for start in 0..simple.len() - 8 {
            assert!(!name.contains(&simple[start..start + 8]), "{name} {simple}");
        }
    }

    #[test]
    fn a_container_has_its_own_hostname_no_dns_beyond_itself_and_no_ipv6() {
        let manifest: DemoManifest = serde_json::from_value(serde_json::json!({
            "slug": "x", "title": "X", "image": "x:1", "port": 8080, "data_path": "/data"
        }))
        .unwrap();
        let spec = DemoSpec::parse(manifest, &Policy::default()).unwrap();
        let settings = EngineSettings {
            host: None,
            network: NetworkSettings {
                name: "net".into(),
                bridge: "br".into(),
                subnet: Subnet::parse("10.9.0.0/24").unwrap(),
            },
            host_firewall: HostFirewall::None,
            tmpfs_mb: 16,
        };
        let sandbox = SandboxId::new();
        let name = container_name("i", sandbox);
        let body = container_body(
            &settings,
            &name,
            HashMap::new(),
            &NewContainer {
                sandbox,
                demo: DemoId::new(),
                spec: &spec,
                ip: Ipv4Addr::new(10, 9, 0, 2),
                data_dir: PathBuf::from("/srv/td/sandboxes/x/data"),
            },
        );
        // A hostname shared by sandboxes would be a DNS name answering with all of them.
        assert_eq!(body.hostname.as_deref(), Some(name.as_str()));
        let host = body.host_config.unwrap();
        assert_eq!(host.dns, Some(vec!["127.0.0.1".to_string()]));
        assert_eq!(host.dns_search, Some(vec![".".to_string()]));
        let sysctls = host.sysctls.unwrap();
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            assert_eq!(sysctls.get(key).map(String::as_str), Some("1"), "{key}");
        }
    }
}
