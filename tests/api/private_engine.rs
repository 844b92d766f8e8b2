//! A Docker Engine of a test's own, beside the machine's: for what must not be done to the
//! shared one (stopping or restarting its daemon) and for several Engines at once
//! (multi-node tests). Needs root, like the machine's.
//!
//! Everything of it is its own, so it changes nothing of the machine's Engine or of other
//! private Engines running at the same time: a configuration file (the machine's sets
//! `data-root`, and dockerd refuses a setting given twice), socket, data root, exec root (with
//! its own containerd), pid file, and default bridge, all named with a tag unique to the
//! instance. It touches no firewall (`--iptables=false --ip-masq=false`). Its default bridge is
//! made before the daemon starts and handed to it with `--bridge`: `--bridge=none` would
//! delete the host's `docker0` (STACK-NOTES). The storage driver is the first of overlay2,
//! fuse-overlayfs and vfs that runs here, found once per test binary.
//!
//! ```ignore
//! let mut engine = PrivateEngine::start().await;
//! engine.load_image(STATIC_FILES).await;            // copied from the machine's Engine
//! let app = TestApp::spawn_on(&engine, |_| {}).await; // its docker_host is engine.host()
//! engine.restart().await;                             // containers survive, stopped
//! ```
//!
//! No firewall means none of the Engine's own isolation either: `enable_icc=false` and
//! `internal` are iptables rules, so containers on one of its networks reach each other
//! (traffic between bridges meets only the host's FORWARD policy, DROP here). Two daemons
//! cannot share the host's DOCKER chains. The service's own host rule (`host_firewall =
//! "iptables"`) is installed as usual. Tests of isolation belong on the machine's Engine.
//!
//! `stop`, `start_again` and `restart` keep the data root, so what was made on it survives a
//! restart as on a real host. Dropping it removes everything: the objects on it (with the
//! bridges of its networks, which a stopped daemon leaves behind), the daemon, its own bridge
//! and its directories, unmounting whatever is still mounted under them.

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Storage drivers to try, best first: the machine's Engine uses fuse-overlayfs because its
/// data root is on an overlay; a private one under /tmp (ext4 here) can use overlay2.
const DRIVERS: [&str; 3] = ["overlay2", "fuse-overlayfs", "vfs"];

/// The driver found to work, once found.
static DRIVER: tokio::sync::Mutex<Option<&'static str>> = tokio::sync::Mutex::const_new(None);

/// How long a daemon may take to answer after it is spawned, or to exit after SIGTERM (it
/// stops its containers first, each within its stop timeout).
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(60);

pub struct PrivateEngine {
    /// Unique to this instance; part of every name it uses.
    tag: String,
    /// `/tmp/tdpe-<tag>`: short, as a socket path has at most 107 bytes.
    dir: PathBuf,
    /// Its default bridge (`docker0`'s counterpart).
    bridge: String,
    driver: &'static str,
    daemon: Option<Child>,
    /// From spawning the daemon to its first answer, at its last start.
    started_in: Duration,
}

impl PrivateEngine {
    /// Makes the bridge and directories and starts the daemon; panics if it does not start.
    pub async fn start() -> PrivateEngine {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let dir = PathBuf::from(format!("/tmp/tdpe-{tag}"));
        fs::create_dir(&dir).expect("the private Engine's directory");
        let bridge = format!("tdpe{tag}");
        let mut engine = PrivateEngine {
            tag,
            dir,
            bridge,
            driver: DRIVERS[0],
            daemon: None,
            started_in: Duration::ZERO,
        };
        // Dropped on a panic below: what was made so far goes.
        engine.make_bridge();
        let mut known = DRIVER.lock().await;
        let candidates: Vec<&'static str> = match *known {
            Some(driver) => vec![driver],
            None => DRIVERS.to_vec(),
        };
        let mut failures = Vec::new();
        for driver in candidates {
            engine.driver = driver;
            engine.write_config();
            match engine.launch().await {
                Ok(()) => {
                    *known = Some(driver);
                    eprintln!(
                        "private Docker Engine {} ({driver}) answered {} ms after it was spawned",
                        engine.tag,
                        engine.started_in.as_millis()
                    );
                    return engine;
                }
                Err(why) => {
                    failures.push(format!("{driver}: {why}"));
                    // A half-made data root of one driver confuses the next.
                    unmount_under(&engine.data_root());
                    let _ = fs::remove_dir_all(engine.data_root());
                }
            }
        }
        panic!("no private Docker Engine would start: {failures:#?}");
    }

    /// The Engine's address, for `docker_host` / `TESTDRIVE_DOCKER_HOST` / `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A tag unique to this Engine, for naming what a test makes on it.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The storage driver it runs with.
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// From spawning the daemon to its first answer, at its last start.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// `docker -H <this Engine> <args>`.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    /// Copies `image` from the machine's Engine (`docker save | docker load`).
    pub async fn load_image(&self, image: &str) {
        let (host, image) = (self.host(), image.to_string());
        tokio::task::spawn_blocking(move || {
            let mut save = Command::new("docker")
                .args(["save", &image])
                .stdout(Stdio::piped())
                .spawn()
                .expect("docker save runs");
            let loaded = Command::new("docker")
                .args(["-H", &host, "load", "--quiet"])
                .stdin(save.stdout.take().expect("a pipe"))
                .output()
                .expect("docker load runs");
            let saved = save.wait().expect("docker save ends");
            assert!(saved.success(), "docker save {image} failed");
            assert!(
                loaded.status.success(),
                "loading {image}: {}",
                String::from_utf8_lossy(&loaded.stderr)
            );
        })
        .await
        .expect("the image copy does not panic");
    }

    /// Stops the daemon as an operator does (SIGTERM: it stops every container, then exits)
    /// and waits until it has exited; SIGKILL after a minute.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        terminate(child.id());
        let until = Instant::now() + STOP_LIMIT;
        while child.try_wait().expect("waitpid").is_none() {
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the stopped daemon again on the same data root; panics if it does not start.
    pub async fn start_again(&mut self) {
        assert!(self.daemon.is_none(), "the private Engine runs already");
        if let Err(why) = self.launch().await {
            panic!("the private Engine did not start again: {why}");
        }
    }

    /// `stop`, then `start_again`: what `systemctl restart docker` does.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// The last `lines` lines of the daemon's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn make_bridge(&self) {
        let cidr = unused_subnet(231);
        // The first address is the bridge's own (the default network's gateway).
        let (base, prefix) = cidr.split_once('/').expect("a CIDR");
        let base: Ipv4Addr = base.parse().expect("an address");
        let gateway = format!("{}/{prefix}", Ipv4Addr::from(u32::from(base) + 1));
        for args in [
            vec!["link", "add", &self.bridge, "type", "bridge"],
            vec!["addr", "add", &gateway, "dev", &self.bridge],
            vec!["link", "set", &self.bridge, "up"],
        ] {
            run("ip", &args);
        }
    }

    fn write_config(&self) {
        let config = serde_json::json!({ "storage-driver": self.driver });
        fs::write(self.dir.join("daemon.json"), config.to_string()).expect("daemon.json");
    }

    /// Spawns the daemon and waits until it answers; why not if it exits first or stays
    /// silent.
    async fn launch(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let mut child = self.spawn();
        loop {
            if answers(&self.socket()) {
                self.started_in = started.elapsed();
                self.daemon = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait().expect("waitpid") {
                return Err(format!("dockerd exited ({status}):\n{}", self.log_tail(8)));
            }
            if started.elapsed() > START_LIMIT {
                terminate(child.id());
                let _ = child.wait();
                return Err(format!(
                    "no answer in {START_LIMIT:?}:\n{}",
                    self.log_tail(8)
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn spawn(&self) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("the daemon's log file");
        let dir = |name: &str| self.dir.join(name);
        let mut command = Command::new("dockerd");
        command
            .arg("--config-file")
            .arg(dir("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(dir("data"))
            .arg("--exec-root")
            .arg(dir("exec"))
            .arg("--pidfile")
            .arg(dir("docker.pid"))
            .args(["--iptables=false", "--ip-masq=false"])
            .arg(format!("--bridge={}", self.bridge))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        // Should the test binary die without dropping it, the daemon is told to stop (it is
        // tied to the spawning thread, which outlives the Engine in a test).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        command.spawn().expect("dockerd runs (as root)")
    }

    /// Removes every object on the Engine, noting the bridges of its networks in case
    /// removing a network fails.
    fn remove_everything(&self) -> Vec<String> {
        let ids = |args: &[&str]| -> Vec<String> {
            String::from_utf8_lossy(&self.docker(args).stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        let containers = ids(&["ps", "-aq"]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-fv"];
            args.extend(containers.iter().map(String::as_str));
            self.docker(&args);
        }
        let volumes = ids(&["volume", "ls", "-q"]);
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            self.docker(&args);
        }
        let mut bridges = Vec::new();
        for network in ids(&["network", "ls", "-q", "--filter", "type=custom"]) {
            let named = ids(&[
                "network",
                "inspect",
                "-f",
                r#"{{index .Options "com.docker.network.bridge.name"}}"#,
                &network,
            ]);
            // Unnamed bridges are `br-` and the first 12 characters of the id.
            bridges.push(match named.first() {
                Some(name) if !name.is_empty() && name != "<no value>" => name.clone(),
                _ => format!("br-{}", &network[..12.min(network.len())]),
            });
            self.docker(&["network", "rm", &network]);
        }
        bridges
    }

    /// Processes whose command line names this Engine's directory (its containerd and
    /// shims): left running only if the daemon had to be killed.
    fn leftover_processes(&self) -> Vec<i32> {
        let needle = self.dir.to_string_lossy().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // A stopped daemon leaves its networks' bridges on the host: it is started (again)
        // to remove its objects properly.
        if self.daemon.is_none() && self.dir.join("data").exists() {
            let mut child = self.spawn();
            let until = Instant::now() + START_LIMIT;
            while !answers(&self.socket()) && Instant::now() < until {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.daemon = Some(child);
        }
        let bridges = if answers(&self.socket()) {
            self.remove_everything()
        } else {
            Vec::new()
        };
        if let Some(mut child) = self.daemon.take() {
            terminate(child.id());
            let until = Instant::now() + STOP_LIMIT;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= until {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for pid in self.leftover_processes() {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for bridge in bridges.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
        unmount_under(&self.dir);
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {err}", self.dir.display());
        }
    }
}

/// Whether a Docker Engine answers `GET /_ping` on `socket`.
fn answers(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let Ok(n) = stream.read(&mut head) else {
        return false;
    };
    // "HTTP/1.x 200 …"
    head[..n].get(9..12) == Some(b"200")
}

fn terminate(pid: u32) {
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts everything mounted under `dir`, deepest first (container root filesystems,
/// network namespaces, shm of containers a killed daemon left).
fn unmount_under(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).output();
    }
}

/// Subnets handed out by this test binary and not yet seen in the routing table.
static CLAIMED: Mutex<Vec<(u8, u8)>> = Mutex::new(Vec::new());

/// A /24 of `10.<second>.0.0/16` that no route of the host overlaps and that this binary
/// has not handed out before, e.g. for a network a test's service makes on a private Engine
/// (the Engine knows nothing of the machine's networks, so it would not refuse a clash).
pub fn unused_subnet(second: u8) -> String {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .expect("ip runs");
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    let taken: Vec<(u32, u32)> = routes
        .lines()
        .filter_map(|line| {
            let first = line.split_whitespace().find(|w| w.contains('.'))?;
            let (addr, prefix) = first.split_once('/').unwrap_or((first, "32"));
            let addr: Ipv4Addr = addr.parse().ok()?;
            let prefix: u32 = prefix.parse().ok()?;
            Some((u32::from(addr), prefix))
        })
        .filter(|(_, prefix)| *prefix > 0)
        .collect();
    let overlaps = |base: u32| {
        taken.iter().any(|&(addr, prefix)| {
            let shorter = prefix.min(24);
            let mask = u32::MAX << (32 - shorter);
            addr & mask == base & mask
        })
    };
    let mut claimed = CLAIMED.lock().unwrap();
    let start = uuid::Uuid::new_v4().as_bytes()[0];
    for step in 0..=255u8 {
        let third = start.wrapping_add(step);
        let base = u32::from(Ipv4Addr::new(10, second, third, 0));
        if !overlaps(base) && !claimed.contains(&(second, third)) {
            claimed.push((second, third));
            return format!("10.{second}.{third}.0/24");
        }
    }
    panic!("no free /24 in 10.{second}.0.0/16");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::STATIC_FILES;

    fn links() -> String {
        let out = Command::new("ip").args(["-br", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// What the harness promises: a restart keeps what was made (containers stopped, their
    /// network and volumes), and dropping it leaves nothing on the host.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_engine_keeps_its_objects_across_a_restart_and_leaves_nothing_behind() {
        let mut engine = PrivateEngine::start().await;
        assert!(engine.is_running());
        engine.load_image(STATIC_FILES).await;
        let tag = engine.tag().to_string();
        let (network, bridge) = (format!("pe-net-{tag}"), format!("tdpn{tag}"));
        let subnet = unused_subnet(232);
        let ok = |out: Output| {
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        ok(engine.docker(&[
            "network",
            "create",
            "--internal",
            "-o",
            &format!("com.docker.network.bridge.name={bridge}"),
            "--subnet",
            &subnet,
            &network,
        ]));
        let container = ok(engine.docker(&[
            "run",
            "-d",
            "--network",
            &network,
            "--mount",
            "type=volume,target=/data",
            STATIC_FILES,
        ]));
        assert!(links().contains(&engine.bridge) && links().contains(&bridge));

        engine.restart().await;
        let state = ok(engine.docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &container,
        ]));
        // Stopped by the daemon's shutdown (the image's stop signal is SIGKILL), not
        // started again: it has no restart policy.
        assert_eq!(state, "false 137");
        ok(engine.docker(&["start", &container]));
        let volumes = ok(engine.docker(&["volume", "ls", "-q"]));
        assert_eq!(volumes.lines().count(), 1, "{volumes}");

        let dir = engine.dir.clone();
        drop(engine);
        assert!(!dir.exists(), "{} is left", dir.display());
        let links = links();
        assert!(
            !links.contains(&format!("tdpe{tag}")) && !links.contains(&bridge),
            "{links}"
        );
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&dir.display().to_string()), "{mounts}");
        let processes = Command::new("pgrep")
            .args(["-f", &dir.display().to_string()])
            .output()
            .unwrap();
        assert!(processes.stdout.is_empty(), "{processes:?}");
    }
}
