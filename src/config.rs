//! Settings, layered: `config/default.toml` (built into the binary, so it runs from any
//! directory), then the `--config` file, then `TESTDRIVE_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::domain::{NodeName, Policy};
use crate::engine::{HostFirewall, Subnet, WantedNetwork};
use crate::sandbox_dirs::SandboxDirs;

pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// A sandbox network setting testdrive picks itself.
const AUTO: &str = "auto";

/// The most running sandboxes: each is a port of the sandbox network's Linux bridge, and the
/// kernel numbers a bridge's ports 1 to 1023 (`BR_MAX_PORTS`); the 1024th is refused.
pub const MAX_SANDBOXES: u32 = 1023;

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    /// `<id>.<this domain>` is each sandbox's origin; `off`: `/s/{id}/` of the public URL.
    pub sandbox_domain: Option<String>,
    pub admin_token: Option<String>,
    /// The key that seals secrets in the database (base64, 32 bytes); else the one in the
    /// data directory (`secret-key`, made at first start).
    pub secret_key: Option<String>,
    pub data_dir: PathBuf,
    /// `data_dir` as the Docker Engine's host sees it, when testdrive runs in a container
    /// with the data directory mounted from elsewhere: sandboxes' data directories are bound
    /// from under it.
    pub host_data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub docker_host: Option<String>,
    /// This node's name among the deployment's nodes (several on one Postgres); else the
    /// host name.
    pub node_name: Option<String>,
    /// Where the other nodes reach this node's HTTP port; else `http://` + the bound address.
    pub node_url: Option<String>,
    pub max_sandboxes: u32,
    pub max_sleeping: u32,
    pub webhook_allow_private: bool,
    pub webhook_first_retry_ms: u64,
    pub webhook_give_up_hours: u64,
    pub log_format: LogFormat,
    pub max_wait_seconds: u32,
    pub reconcile_seconds: u64,
    pub disk_check_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub sandbox: SandboxConfig,
    pub policy: Policy,
    pub rate_limit: RateLimitConfig,
    /// Comma-separated addresses and CIDR blocks of the reverse proxies in front (parsed
    /// as `http::TrustedProxies` at start).
    pub trusted_proxies: String,
    pub server: ServerConfig,
    pub intake: IntakeConfig,
    pub images: ImagesConfig,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ImagesConfig {
    /// Remove from the Engine the images pulls brought that no demo, sandbox or warm pool
    /// member uses any more.
    pub remove_unused: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RateLimitConfig {
    pub burst: u32,
    pub per_minute: u32,
    pub max_share_percent: u32,
    /// Replaced by `trusted_proxies`: refused when set, so a deployment that relied on it
    /// does not silently count every client as its proxy.
    #[serde(default)]
    pub trust_forwarded_for: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServerConfig {
    pub max_connections: u32,
    pub max_connections_per_client: u32,
    pub header_read_seconds: u64,
    pub body_idle_seconds: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct IntakeConfig {
    pub max_uploads: u32,
    pub max_uploads_per_client: u32,
    pub idle_seconds: u64,
    pub spool_budget_bytes: u64,
    /// Free space kept on the spool's filesystem for everything else on it.
    pub min_free_bytes: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SandboxConfig {
    pub network: String,
    pub bridge: String,
    pub subnet: String,
    pub tmpfs_mb: u32,
    pub host_firewall: HostFirewall,
    /// Raise the kernel's neighbour-table limits at start when they are too small for
    /// `max_sandboxes` (see `engine::neighbours`); off: only say what to set.
    pub raise_neighbour_limits: bool,
    /// Where those limits are read and written: the kernel's, unless a test says otherwise.
    pub neighbour_limits_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("TESTDRIVE_").split("__"));
        Self::extract(figment)
    }

    /// The built-in defaults alone (tests start from these).
    pub fn defaults() -> Config {
        Self::extract(Figment::from(Toml::string(DEFAULTS))).expect("the built-in defaults parse")
    }

    fn extract(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if config.sandbox.bridge.is_empty() || config.sandbox.bridge.len() > 15 {
            return Err(ConfigError::Invalid(
                "sandbox.bridge must be 1 to 15 characters, or \"auto\"".into(),
            ));
        }
        if config.sandbox.network.is_empty() {
            return Err(ConfigError::Invalid(
                "sandbox.network must be a name, or \"auto\"".into(),
            ));
        }
        if config.sandbox.subnet != AUTO {
            Subnet::parse(&config.sandbox.subnet)
                .map_err(|e| ConfigError::Invalid(format!("sandbox.subnet: {e}")))?;
        }
        if config.rate_limit.trust_forwarded_for.is_some() {
            return Err(ConfigError::Invalid(
                "rate_limit.trust_forwarded_for is gone: list the reverse proxies in front in \
                 trusted_proxies (TESTDRIVE_TRUSTED_PROXIES) instead"
                    .into(),
            ));
        }
        if config.max_sandboxes > MAX_SANDBOXES {
            return Err(ConfigError::Invalid(format!(
                "max_sandboxes must be at most {MAX_SANDBOXES}: every running sandbox is a port \
                 of the sandbox network's Linux bridge, which takes no more (the Engine fails \
                 the next start with \"exchange full\")"
            )));
        }
        if !(1..=100).contains(&config.rate_limit.max_share_percent) {
            return Err(ConfigError::Invalid(
                "rate_limit.max_share_percent must be 1 to 100".into(),
            ));
        }
        if config.server.max_connections == 0
            || config.server.header_read_seconds == 0
            || config.intake.max_uploads == 0
            || config.intake.idle_seconds == 0
        {
            return Err(ConfigError::Invalid(
                "server.max_connections, server.header_read_seconds, intake.max_uploads and \
                 intake.idle_seconds must be at least 1"
                    .into(),
            ));
        }
        if let Some(url) = &config.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(
                "public_url must start with http:// or https://".into(),
            ));
        }
        Ok(config)
    }

    /// Base URL for sandbox links, without a trailing slash; by default the address the
    /// server is bound to (which differs from `listen` when that asks for port 0).
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("testdrive.db").display()))
    }

    /// Whether the database is one several nodes may share (Postgres): then nodes place
    /// trials among themselves and forward each sandbox's requests to its own node.
    pub fn shared_database(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// This node's name: as configured, else the host name.
    pub fn node_name(&self) -> Result<NodeName, String> {
        let raw = match &self.node_name {
            Some(name) => name.clone(),
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        NodeName::parse(&raw).map_err(|e| format!("the node name {raw:?}: {}", e.reason))
    }

    /// Where the other nodes reach this one.
    pub fn node_url(&self, bound: SocketAddr) -> String {
        self.node_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_string()
    }

    /// The Docker Engine's endpoint as another node would reach it.
    pub fn engine_endpoint(&self) -> String {
        self.docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
    }

    /// The SQLite file the database URL names, if it names one.
    pub fn database_file(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
    }

    /// The sandbox network as configured: each part given, or left to testdrive ("auto").
    pub fn wanted_network(&self) -> WantedNetwork {
        let given = |value: &str| (value != AUTO).then(|| value.to_string());
        WantedNetwork {
            name: given(&self.sandbox.network),
            bridge: given(&self.sandbox.bridge),
            subnet: given(&self.sandbox.subnet)
                .map(|s| Subnet::parse(&s).expect("checked when the configuration was read")),
        }
    }

    /// Each sandbox's directory (its upload and its data), as testdrive sees them and as the
    /// Engine does. Absolute, as the Engine wants a bind mount's source.
    pub fn sandbox_dirs(&self) -> SandboxDirs {
        let under = |dir: &Path| {
            let dir = dir.join("sandboxes");
            std::path::absolute(&dir).unwrap_or(dir)
        };
        SandboxDirs::new(
            under(&self.data_dir),
            self.host_data_dir.as_deref().map(under),
        )
    }

    pub fn policy(&self) -> Policy {
        self.policy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::defaults();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url(config.listen), "http://127.0.0.1:8080");
        assert_eq!(config.max_sandboxes, 50);
        assert_eq!(config.data_dir, PathBuf::from("./var"));
        assert_eq!(config.database_url(), "sqlite://./var/testdrive.db");
        assert_eq!(
            config.database_file(),
            Some(PathBuf::from("./var/testdrive.db"))
        );
        assert!(config.secret_key.is_none());
        assert!(!config.webhook_allow_private);
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(config.sandbox.raise_neighbour_limits);
        assert_eq!(
            config.sandbox.neighbour_limits_dir,
            PathBuf::from(crate::engine::neighbours::KERNEL_SETTINGS)
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail decides the closure's type
    fn the_file_then_the_environment_win() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("site.toml", "max_sandboxes = 7\n[sandbox]\ntmpfs_mb = 8\n")?;
            let config = Config::load(Some(Path::new("site.toml"))).unwrap();
            assert_eq!(config.max_sandboxes, 7);
            assert_eq!(config.sandbox.tmpfs_mb, 8);
            assert_eq!(config.sandbox.network, "auto");
            assert_eq!(config.wanted_network(), WantedNetwork::default());

            jail.set_env("TESTDRIVE_MAX_SANDBOXES", "9");
            jail.set_env("TESTDRIVE_PUBLIC_URL", "https://try.example.com/");
            jail.set_env("TESTDRIVE_POLICY__MAX_PIDS", "64");
            let config = Config::load(Some(Path::new("site.toml"))).unwrap();
            assert_eq!(config.max_sandboxes, 9);
            assert_eq!(config.public_url(config.listen), "https://try.example.com");
            assert_eq!(config.policy.max_pids, 64);

            assert!(matches!(
                Config::load(Some(Path::new("nope.toml"))),
                Err(ConfigError::Missing(_))
            ));
            jail.set_env("TESTDRIVE_MAX_SANDBOXES", "many");
            assert!(Config::load(None).is_err());
            // A Linux bridge takes 1023 ports: one per running sandbox.
            jail.set_env("TESTDRIVE_MAX_SANDBOXES", "1023");
            assert_eq!(Config::load(None).unwrap().max_sandboxes, 1023);
            jail.set_env("TESTDRIVE_MAX_SANDBOXES", "1024");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("max_sandboxes must be at most 1023"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail decides the closure's type
    fn trusted_proxies_and_intake_limits_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Config::load(None).unwrap().trusted_proxies, "");
            jail.set_env(
                "TESTDRIVE_TRUSTED_PROXIES",
                "10.0.0.1,10.1.0.0/16, fd00::/8",
            );
            jail.set_env("TESTDRIVE_INTAKE__IDLE_SECONDS", "3");
            let config = Config::load(None).unwrap();
            assert_eq!(config.trusted_proxies, "10.0.0.1,10.1.0.0/16, fd00::/8");
            assert_eq!(config.intake.idle_seconds, 3);
            assert_eq!(config.intake.min_free_bytes, 1 << 30);
            jail.set_env("TESTDRIVE_INTAKE__MIN_FREE_BYTES", "0");
            assert_eq!(Config::load(None).unwrap().intake.min_free_bytes, 0);
            jail.set_env("TESTDRIVE_TRUSTED_PROXIES", "::1");
            assert_eq!(Config::load(None).unwrap().trusted_proxies, "::1");
            // The old switch is refused, not ignored.
            jail.set_env("TESTDRIVE_RATE_LIMIT__TRUST_FORWARDED_FOR", "true");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("trusted_proxies"), "{err}");
            Ok(())
        });
    }
}
