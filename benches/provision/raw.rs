//! The raw side: what a shell user would script with the docker CLI, and the Engine's own
//! create + start through bollard. Same image, same hardening and limits as testdrive's
//! sandboxes (`src/engine/docker.rs`), on the same network.
//!
//! Raw containers get their address explicitly (`--ip`), from the top 400 slots of the
//! bench's network, while testdrive hands out the lowest free slots: so a raw container can
//! never take an address testdrive is about to use (e.g. while a warm pool refills).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    Mount, MountType, MountVolumeOptions, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
};

use crate::cleanup::{BenchNetwork, PID_KEY, RUN_KEY, pid, run_tag};
use crate::common::{Result, docker, ms};
use crate::service::IMAGE;
use crate::support::hardened_container_args;

/// Raw containers use this many slots at the top of the subnet.
pub const RAW_SLOTS: u32 = 400;

pub struct Raw {
    pub network: BenchNetwork,
    pub engine: Docker,
    poller: reqwest::Client,
    /// The 1 MB CSV on disk, for `docker cp`.
    csv_path: String,
    next: AtomicU32,
}

/// One raw CLI iteration, step by step (ms).
pub struct RawRun {
    pub create: f64,
    pub cp: f64,
    pub start: f64,
    pub poll: f64,
    pub poll_attempts: f64,
    pub rm: f64,
}

impl RawRun {
    pub fn without_poll(&self) -> f64 {
        self.create + self.cp + self.start
    }

    /// create + cp + start + HTTP poll until the port answers: the raw "ready".
    pub fn ready(&self) -> f64 {
        self.without_poll() + self.poll
    }
}

impl Raw {
    pub async fn new(network: BenchNetwork, csv_path: String) -> Result<Raw> {
        let engine = Docker::connect_with_defaults()?.negotiate_version().await?;
        let poller = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        Ok(Raw {
            network,
            engine,
            poller,
            csv_path,
            next: AtomicU32::new(0),
        })
    }

    /// A name and address for the next raw container.
    fn next(&self) -> (String, Ipv4Addr) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.network.slots() - RAW_SLOTS + n % RAW_SLOTS;
        (
            format!("bench-raw-{}-{n}", run_tag()),
            self.network.address(slot),
        )
    }

    fn labels(name: &str) -> HashMap<String, String> {
        HashMap::from([
            ("testdrive.sandbox".to_string(), name.to_string()),
            (RUN_KEY.to_string(), run_tag().to_string()),
            (PID_KEY.to_string(), pid()),
        ])
    }

    /// The CLI flags for the same hardening and limits as testdrive's: read-only root, /tmp
    /// tmpfs of 64 MB, no capabilities, no-new-privileges, 256 MB without swap, half a CPU,
    /// 128 processes, bounded json-file logs, a (labelled) volume at /data, the network.
    fn create_args(&self, name: &str, ip: Ipv4Addr) -> Vec<String> {
        let mut args: Vec<String> = vec!["create".into(), "--name".into(), name.into()];
        let labels: Vec<String> = Self::labels(name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        args.extend(hardened_container_args(
            &labels,
            &self.network.name,
            ip,
            IMAGE,
        ));
        args
    }

    /// The shell user's path: `docker create`, `docker cp` of the 1 MB CSV, `docker start`,
    /// then GET the port every 10 ms until it answers; then, timed apart, `docker rm -fv`.
    pub async fn cli_iteration(&self) -> Result<RawRun> {
        let (name, ip) = self.next();
        let args = self.create_args(&name, ip);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let id = docker(&args).await?;
        let t_create = Instant::now();
        docker(&["cp", &self.csv_path, &format!("{id}:/data/sales.csv")]).await?;
        let t_cp = Instant::now();
        docker(&["start", &id]).await?;
        let t_start = Instant::now();
        let url = format!("http://{ip}:8080/");
        let deadline = t_start + Duration::from_secs(20);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.poller.get(&url).send().await {
                Ok(res) if res.status().as_u16() < 500 => break,
                _ if Instant::now() >= deadline => {
                    return Err(format!("the raw container at {url} never answered").into());
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let t_ready = Instant::now();
        docker(&["rm", "-fv", &id]).await?;
        let rm = t_ready.elapsed();
        Ok(RawRun {
            create: ms(t_create - t0),
            cp: ms(t_cp - t_create),
            start: ms(t_start - t_cp),
            poll: ms(t_ready - t_start),
            poll_attempts: f64::from(attempts),
            rm: ms(rm),
        })
    }

    /// The Engine's own create + start through its API (bollard), same body as testdrive's
    /// `create_sandbox`: no file, no readiness check. The container's id, and the ms that
    /// create and start took.
    pub async fn engine_create_start(&self) -> Result<(String, f64, f64)> {
        let (name, ip) = self.next();
        let labels = Self::labels(&name);
        let memory = 256 * 1024 * 1024;
        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=64m".to_string(),
            )])),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(500_000_000),
            pids_limit: Some(128),
            mounts: Some(vec![Mount {
                target: Some("/data".to_string()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            network_mode: Some(self.network.name.clone()),
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
            image: Some(IMAGE.to_string()),
            labels: Some(labels),
            hostname: Some("sandbox".to_string()),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.name.clone(),
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
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let t0 = Instant::now();
        let created = self.engine.create_container(Some(options), body).await?;
        let t1 = Instant::now();
        self.engine
            .start_container(&created.id, None::<StartContainerOptions>)
            .await?;
        Ok((created.id, ms(t1 - t0), ms(t1.elapsed())))
    }

    /// Removes a raw container with its volume (what `docker rm -fv` does).
    pub async fn engine_remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.engine.remove_container(id, Some(options)).await?;
        Ok(())
    }

    /// Removes many, `parallel` at a time (untimed clean-up between measurements).
    pub async fn engine_remove_all(&self, ids: &[String], parallel: usize) -> Result<()> {
        for chunk in ids.chunks(parallel.max(1)) {
            for r in
                futures_util::future::join_all(chunk.iter().map(|id| self.engine_remove(id))).await
            {
                r?;
            }
        }
        Ok(())
    }
}
