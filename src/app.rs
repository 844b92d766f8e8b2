//! Putting the service together: open the store, reach the Engine, build the services
//! (registry, webhooks, lifecycle), start the background work and the HTTP server, and stop
//! them in order. The one place that knows every layer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::cluster::{Caretaking, Cluster};
use crate::config::Config;
use crate::domain::token::{IssuedToken, TokenHash};
use crate::domain::{Node, NodeName};
use crate::engine::{
    DockerEngine, Engine, EngineError, EngineSettings, FixedNetwork, HostFirewall, NetworkSettings,
    Subnet, WantedNetwork, isolate_host, neighbours, network_setting_key, plan_network,
};
use crate::http::origins::SandboxOrigins;
use crate::http::server::ServerSettings;
use crate::http::{self, AdminToken, AppState, Intake, IntakeSettings, TrustedProxies};
use crate::lifecycle::{Lifecycle, LifecycleSettings};
use crate::registry::Registry;
use crate::secrets::{SecretBox, make_private, private_file, write_secret};
use crate::signing::ReceiptKey;
use crate::store::{SqlStore, Store, StoreError};
use crate::webhooks::{WebhookSettings, Webhooks};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("the secret key: {0}")]
    SecretKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Firewall(String),
    #[error("cannot recover from the previous run: {0}")]
    Recover(crate::lifecycle::LifecycleError),
    #[error("cannot recover the webhook outbox: {0}")]
    Outbox(StoreError),
    #[error("{0}")]
    Config(String),
    #[error("invalid configuration: trusted_proxies: {0}")]
    TrustedProxies(crate::http::ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub state: AppState,
    /// Set when this start generated the admin token: the one time it can be shown.
    pub new_admin_token: Option<IssuedToken>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    background: JoinHandle<()>,
    grace: Duration,
}

/// One Prometheus recorder per process (the `metrics` macros talk to a global one).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets(&seconds)
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// The operators' token: from the configuration, else the one stored in the data directory,
/// else a new one (stored, and returned so it can be printed once).
fn admin_token(
    config: &Config,
    data_dir: &Path,
) -> std::io::Result<(TokenHash, Option<IssuedToken>)> {
    if let Some(token) = &config.admin_token {
        return Ok((TokenHash::of(token), None));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(stored) => Ok((TokenHash::of(stored.trim()), None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = IssuedToken::for_admin();
            write_secret(&path, token.expose())?;
            Ok((token.hash(), Some(token)))
        }
        Err(e) => Err(e),
    }
}

/// The operators' token when several nodes share the database: the configured one (every
/// node must be given the same: a node given another refuses to start), else the one the
/// first node made, kept as a hash in the database (and returned to be printed once by the
/// node that made it).
async fn shared_admin_token(
    config: &Config,
    store: &dyn Store,
) -> Result<(TokenHash, Option<IssuedToken>), StartError> {
    if let Some(token) = &config.admin_token {
        // Nodes that took different tokens would each let in their own operators.
        let hash = TokenHash::of(token).to_hex();
        let kept = store.fix_setting("admin_token_hash", &hash).await?;
        if kept != hash {
            return Err(StartError::Config(
                "this node's admin_token is not the deployment's (the one the first node \
                 started with): give every node the same"
                    .into(),
            ));
        }
        return Ok((TokenHash::of(token), None));
    }
    let token = IssuedToken::for_admin();
    let kept = store
        .fix_setting("admin_token_hash", &token.hash().to_hex())
        .await?;
    let hash = TokenHash::from_hex(&kept)
        .ok_or_else(|| StartError::Config("the stored admin token is not a hash".into()))?;
    let made_here = kept == token.hash().to_hex();
    Ok((hash, made_here.then_some(token)))
}

/// The deployment's receipt key when several nodes share the database: the first node to
/// start makes one and keeps it there sealed (every node shares the secret key); the others
/// take it, so a receipt verifies whichever node signed it.
async fn shared_receipt_key(
    store: &dyn Store,
    secrets: &SecretBox,
) -> Result<ReceiptKey, StartError> {
    let kept = store
        .fix_setting("receipt_key", &secrets.seal(&ReceiptKey::new_hex()))
        .await?;
    let opened = secrets.open(&kept).map_err(|e| {
        StartError::SecretKey(format!(
            "the deployment's receipt key: {e} (every node needs the same secret_key)"
        ))
    })?;
    ReceiptKey::from_hex(&opened).ok_or_else(|| {
        StartError::SecretKey("the deployment's receipt key is not an Ed25519 key".into())
    })
}

/// The network testdrive used before it picked its own: a deployment that still has
/// sandboxes on it keeps it.
const EARLIER_NETWORK: (&str, &str, &str) =
    ("testdrive-sandboxes", "td-sandboxes", "10.213.0.0/16");

/// The sandbox network: the parts the configuration gives, the others as the first start
/// fixed them (in the database, so sandboxes keep their addresses across restarts), or
/// picked now for this deployment alone (`engine::plan_network`).
async fn sandbox_network(
    config: &Config,
    store: &dyn Store,
    instance: &str,
    node: Option<&NodeName>,
) -> Result<NetworkSettings, StartError> {
    let given = config.wanted_network();
    let open = given.name.is_none() || given.bridge.is_none() || given.subnet.is_none();
    let key = network_setting_key(node);
    let stored = store.setting(&key).await?;
    let fixed =
        match &stored {
            Some(raw) => Some(serde_json::from_str::<FixedNetwork>(raw).map_err(|e| {
                StartError::Config(format!("the stored sandbox network {raw:?}: {e}"))
            })?),
            None if store.count_live_by_state(None).await?.total() > 0
                || !store.warm_members(None).await?.is_empty() =>
            {
                let (name, bridge, subnet) = EARLIER_NETWORK;
                let (name, bridge, subnet) = (name.into(), bridge.into(), subnet.into());
                Some(FixedNetwork {
                    name,
                    bridge,
                    subnet,
                })
            }
            None => None,
        };
    let wanted = match &fixed {
        Some(fixed) => WantedNetwork {
            name: given.name.or_else(|| Some(fixed.name.clone())),
            bridge: given.bridge.or_else(|| Some(fixed.bridge.clone())),
            subnet: match given.subnet {
                Some(subnet) => Some(subnet),
                None => Some(Subnet::parse(&fixed.subnet).map_err(StartError::Config)?),
            },
        },
        None => given,
    };
    let planned = plan_network(config.docker_host.as_deref(), &wanted, instance)
        .await
        .map_err(|e| match e {
            EngineError::Unavailable(why) => StartError::Config(format!(
                "cannot pick a sandbox network: the Docker Engine does not answer ({why}); \
                 start it first, or set sandbox.network, sandbox.bridge and sandbox.subnet"
            )),
            other => other.into(),
        })?;
    if stored.is_some() || (!open && node.is_none()) {
        return Ok(planned);
    }
    let planned = FixedNetwork {
        name: planned.name,
        bridge: planned.bridge,
        subnet: planned.subnet.to_string(),
    };
    let planned = serde_json::to_string(&planned).expect("plain strings serialise");
    // Several processes on one database agree on the first one fixed.
    // (With several nodes, each records its network even when configured, so that a node
    // keeping a lost node's deadlines can reach that node's sandboxes.)
    let kept = store.fix_setting(&key, &planned).await?;
    NetworkSettings::from_stored(&kept).map_err(StartError::Config)
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    let trusted_proxies =
        TrustedProxies::parse(&config.trusted_proxies).map_err(StartError::TrustedProxies)?;
    let data_dir = config.data_dir.clone();
    let data_dir_error = |source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    // The data directory and all in it are the service's alone (0700/0600), whatever the
    // umask; the database file is made 0600 before SQLite opens it, which gives its journal
    // and WAL files the same mode.
    make_private(&data_dir).map_err(data_dir_error)?;
    if let Some(db) = config.database_file() {
        private_file(&db).map_err(data_dir_error)?;
    }
    let node = config.node_name().map_err(StartError::Config)?;
    let shared = config.shared_database();
    if shared && config.secret_key.is_none() {
        return Err(StartError::SecretKey(
            "several nodes share a Postgres database: give every node the same secret_key \
             (TESTDRIVE_SECRET_KEY), which seals what they share"
                .into(),
        ));
    }
    let secrets =
        SecretBox::load_or_create(config.secret_key.as_deref(), &data_dir.join("secret-key"))
            .map_err(|e| StartError::SecretKey(e.to_string()))?;

    let store: Arc<dyn Store> =
        Arc::new(SqlStore::connect(&config.database_url(), node.clone()).await?);
    // One admin token and one receipt key for the whole deployment: with several nodes
    // they are kept in the database (the key sealed), not in one node's data directory.
    let (admin_hash, new_admin_token, receipt_key) = if shared {
        let (admin, new) = shared_admin_token(&config, store.as_ref()).await?;
        let key = shared_receipt_key(store.as_ref(), &secrets).await?;
        (admin, new, key)
    } else {
        let (admin, new) = admin_token(&config, &data_dir).map_err(data_dir_error)?;
        let key =
            ReceiptKey::load_or_create(&data_dir.join("receipt-key")).map_err(data_dir_error)?;
        (admin, new, key)
    };
    let instance = store.instance_id().await?;
    let network =
        sandbox_network(&config, store.as_ref(), &instance, shared.then_some(&node)).await?;
    tracing::info!(network = %network.name, bridge = %network.bridge, subnet = %network.subnet, "the sandbox network");
    // Said at every start, not only when a rule had to be added: an operator reading the
    // log should not have to wonder whether sandboxes can reach the host.
    match config.sandbox.host_firewall {
        HostFirewall::Iptables => {
            let added = isolate_host(&network.bridge)
                .await
                .map_err(StartError::Firewall)?;
            tracing::info!(
                bridge = %network.bridge,
                added = added.len(),
                "host firewall in place: sandboxes cannot open connections to the host"
            );
        }
        HostFirewall::None => tracing::warn!(
            bridge = %network.bridge,
            "host firewall left to the host (sandbox.host_firewall = \"none\"): install the \
             rules of scripts/host-firewall, or sandboxes can reach the host's services"
        ),
    }
    // Also said at every start: past the table's limits, sandboxes stop being reachable
    // with nothing else in the log to say why.
    neighbours::check(
        &config.sandbox.neighbour_limits_dir,
        config.max_sandboxes,
        config.sandbox.raise_neighbour_limits,
    )
    .log();
    let engine: Arc<dyn Engine> = Arc::new(
        DockerEngine::connect(
            EngineSettings {
                host: config.docker_host.clone(),
                network,
                host_firewall: config.sandbox.host_firewall,
                tmpfs_mb: config.sandbox.tmpfs_mb,
            },
            instance.clone(),
        )
        .await?,
    );
    // A network that is another deployment's is refused now, not at the first trial; an
    // Engine that does not answer yet is not (the service starts and waits for it).
    match engine.ensure_network().await {
        Err(clash @ EngineError::NetworkClash(_)) => return Err(clash.into()),
        Err(err) => tracing::warn!(%err, "cannot check the sandbox network yet; will retry"),
        Ok(_) => {}
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let webhooks = Webhooks::new(
        store.clone(),
        clock.clone(),
        WebhookSettings {
            allow_private: config.webhook_allow_private,
            first_retry: Duration::from_millis(config.webhook_first_retry_ms.max(1)),
            give_up_after: Duration::from_secs(config.webhook_give_up_hours.max(24) * 3600),
            secrets: secrets.clone(),
        },
    );
    let registry = Registry::new(
        store.clone(),
        engine.clone(),
        config.policy(),
        secrets.clone(),
    );
    let lifecycle = Lifecycle::new(
        store.clone(),
        engine.clone(),
        clock.clone(),
        webhooks.clone(),
        Arc::new(registry.clone()),
        LifecycleSettings {
            max_running: config.max_sandboxes,
            max_sleeping: config.max_sleeping,
            dirs: config.sandbox_dirs(),
            reconcile_every: Duration::from_secs(config.reconcile_seconds.max(1)),
            flush_every: Duration::from_secs(5),
            remove_unused_images: config.images.remove_unused,
            shared,
            disk_check_every: (config.disk_check_seconds > 0)
                .then(|| Duration::from_secs(config.disk_check_seconds)),
        },
    );

    lifecycle.recover().await.map_err(StartError::Recover)?;
    webhooks.recover().await.map_err(StartError::Outbox)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let public_url = config.public_url(addr);
    let cluster = Cluster::new(
        Node {
            name: node.clone(),
            url: config.node_url(addr),
            engine: config.engine_endpoint(),
            max_sandboxes: config.max_sandboxes,
            started_at: clock.now(),
            last_seen: clock.now(),
        },
        shared,
        store.clone(),
        clock.clone(),
        secrets.node_key(),
    );
    // Known to the other nodes (and listed) before it takes a request.
    cluster.register().await?;
    tracing::info!(%node, shared, "this node is registered");
    let caretaking = Caretaking {
        store: store.clone(),
        clock: clock.clone(),
        webhooks: webhooks.clone(),
        credentials: Arc::new(registry.clone()),
        settings: lifecycle.settings().clone(),
        instance: instance.clone(),
    };
    let origins = SandboxOrigins::resolve(config.sandbox_domain.as_deref(), &public_url)
        .map_err(StartError::Config)?;
    match &origins {
        SandboxOrigins::Own { domain, .. } => {
            tracing::info!(%domain, "every sandbox has its own origin: <id>.{domain}")
        }
        SandboxOrigins::Shared { .. } => tracing::warn!(
            "sandbox_domain is off: sandboxes share testdrive's origin under /s/{{id}}/ \
             (weaker isolation, see docs/security.md)"
        ),
    }

    let state = AppState {
        store: store.clone(),
        registry,
        lifecycle: lifecycle.clone(),
        webhooks: webhooks.clone(),
        admin: AdminToken(admin_hash),
        upstream: http::proxy::upstream(),
        metrics: metrics_handle(),
        public_url: public_url.into(),
        origins: Arc::new(origins),
        max_wait_seconds: config.max_wait_seconds,
        creations: Arc::new(http::RateLimiter::new(
            config.rate_limit.burst,
            config.rate_limit.per_minute,
        )),
        trusted_proxies: Arc::new(trusted_proxies),
        intake: Arc::new(Intake::new(IntakeSettings {
            max_uploads: config.intake.max_uploads as usize,
            max_uploads_per_client: u64::from(config.intake.max_uploads_per_client),
            idle: Duration::from_secs(config.intake.idle_seconds),
            spool_budget_bytes: config.intake.spool_budget_bytes,
            spool_root: config.sandbox_dirs().root().to_path_buf(),
            min_free_bytes: config.intake.min_free_bytes,
            max_upload_bytes: config.policy.max_upload_bytes,
            max_sandboxes: config.max_sandboxes,
            max_share_percent: config.rate_limit.max_share_percent,
        })),
        receipt_key: Arc::new(receipt_key),
        cluster: cluster.clone(),
    };

    let shutdown = CancellationToken::new();
    let lifecycle_for_cluster = lifecycle.clone();
    let background = tokio::spawn({
        let shutdown = shutdown.child_token();
        async move {
            tokio::join!(
                lifecycle.run(shutdown.clone()),
                webhooks.run(shutdown.clone()),
                cluster.run(lifecycle_for_cluster, caretaking, shutdown)
            );
        }
    });
    let app = http::router(state.clone(), config.policy.max_upload_bytes);
    let server = tokio::spawn(http::server::serve(
        listener,
        app,
        ServerSettings {
            max_connections: config.server.max_connections as usize,
            max_connections_per_client: config.server.max_connections_per_client as usize,
            trusted_proxies: state.trusted_proxies.clone(),
            header_read_timeout: Duration::from_secs(config.server.header_read_seconds),
            body_idle_timeout: Duration::from_secs(config.server.body_idle_seconds.max(1)),
        },
        shutdown.clone(),
    ));
    tracing::info!(%addr, "testdrive is listening");
    Ok(Running {
        addr,
        data_dir: config.data_dir.clone(),
        state,
        new_admin_token,
        shutdown,
        server,
        background,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (bounded by the grace period), stops
    /// the background work. Sandboxes keep running: their deadlines are in the database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(self.grace, self.server).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        let _ = self.background.await;
    }
}
