//! A second Docker Engine for tests, beside the machine's own (as root): its own
//! `daemon.json`, socket, data root, exec root, pid file and default bridge, no iptables
//! rules of its own. It must not disturb the first Engine: it never runs with
//! `--bridge=none` (which deletes the host's `docker0`), its bridge is made here with a
//! unique name on a free /24 under 172.30.0.0/16, and its cleanup touches only what is
//! under its own directory.
//!
//! ```no_run
//! let engine = testkit::engine::Engine::start().unwrap();
//! engine.load_images(&["testdrive/csv-explorer:1"]).unwrap();
//! let id = engine.docker(&["run", "-d", "testdrive/csv-explorer:1"]).unwrap();
//! // DOCKER_HOST for a service under test: engine.host()
//! ```

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{is_root, process, random_hex, signal_group, spawn_tied_to_process};

const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(15);
const DIR_PREFIX: &str = "testkit-engine.";
/// Where leases of /24 subnets under 172.30.0.0/16 are kept, one file each, for test runs
/// on one machine not to pick the same.
const LEASES: &str = "testkit-subnets";

/// A running `dockerd` of the tests' own.
pub struct Engine {
    dir: PathBuf,
    bridge: String,
    subnet: SubnetLease,
    child: Mutex<Option<Child>>,
}

impl Engine {
    /// Makes the bridge, starts `dockerd` and returns once it answers `docker info`.
    /// Needs root, `dockerd`, `docker` and `ip` (iproute2).
    pub fn start() -> io::Result<Engine> {
        if !is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a second Docker Engine needs root (dockerd, a bridge of its own)",
            ));
        }
        // Cleans up after Engines whose test process died before dropping them.
        process::remove_stale_dirs(DIR_PREFIX, clean_up_dir);
        let subnet = SubnetLease::acquire()?;
        let tag = random_hex(8);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}.{tag}", std::process::id()));
        fs::create_dir(&dir)?;
        // "tdk" + 8 hex digits + "-0": 13 characters, within IFNAMSIZ.
        let bridge = format!("tdk{tag}-0");
        // Before anything that needs undoing: for the sweep of a process that died.
        fs::write(dir.join("bridge"), &bridge)?;
        let engine = Engine {
            dir,
            bridge,
            subnet,
            child: Mutex::new(None),
        };
        fs::write(engine.dir.join("daemon.json"), "{}\n")?;

        ip(&["link", "add", &engine.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", engine.subnet.gateway()),
            "dev",
            &engine.bridge,
        ])?;
        ip(&["link", "set", &engine.bridge, "up"])?;

        let log = fs::File::create(engine.log_path())?;
        let mut command = Command::new("dockerd");
        command
            .arg("--config-file")
            .arg(engine.dir.join("daemon.json"))
            .arg("--host")
            .arg(engine.host())
            .arg("--data-root")
            .arg(engine.dir.join("data"))
            .arg("--exec-root")
            .arg(engine.dir.join("exec"))
            .arg("--pidfile")
            .arg(engine.dir.join("docker.pid"))
            .args(["--iptables=false", "--ip-masq=false"])
            .arg(format!("--bridge={}", engine.bridge))
            .current_dir(&engine.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied_to_process(command).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run dockerd (is the Docker Engine installed?): {e}"),
            )
        })?;
        *engine.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);

        let started = Instant::now();
        loop {
            if let Some(status) = engine.exited() {
                return Err(io::Error::other(format!(
                    "dockerd exited ({status}) before answering; its log:\n{}",
                    engine.log_tail()
                )));
            }
            if engine.docker(&["info", "--format", "{{.ID}}"]).is_ok() {
                return Ok(engine);
            }
            if started.elapsed() > READY_WITHIN {
                return Err(io::Error::other(format!(
                    "dockerd did not answer within {READY_WITHIN:?}; its log:\n{}",
                    engine.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its endpoint, `unix:///…/docker.sock` (for `DOCKER_HOST` or `docker -H`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The name of its default bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Its default bridge's subnet (`172.30.X.0/24`).
    pub fn subnet(&self) -> String {
        self.subnet.cidr()
    }

    /// Runs the `docker` client against this Engine; its trimmed stdout, or an error with
    /// its stderr.
    pub fn docker(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run docker: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "docker {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Copies images from the machine's own Engine (`docker save TAG | docker -H … load`).
    pub fn load_images(&self, tags: &[&str]) -> io::Result<()> {
        for tag in tags {
            let mut save = Command::new("docker")
                .args(["save", tag])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let tar = save.stdout.take().expect("piped");
            let load = Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .args(["load", "-q"])
                .stdin(tar)
                .output()?;
            let mut save_err = String::new();
            if let Some(mut err) = save.stderr.take() {
                let _ = err.read_to_string(&mut save_err);
            }
            let saved = save.wait()?;
            if !saved.success() {
                return Err(io::Error::other(format!(
                    "docker save {tag} failed ({saved}): {} (is the image built? sandbox-images/build)",
                    save_err.trim()
                )));
            }
            if !load.status.success() {
                return Err(io::Error::other(format!(
                    "docker load of {tag} into the second Engine failed ({}): {}",
                    load.status,
                    String::from_utf8_lossy(&load.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    /// The daemon's log, for a failing test to print.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether `dockerd` still runs.
    pub fn is_running(&self) -> bool {
        self.exited().is_none() && self.child.lock().map(|c| c.is_some()).unwrap_or(false)
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status),
            _ => None,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops `dockerd`: SIGTERM, then SIGKILL to its process group if it has not ended
    /// within `STOP_WITHIN`.
    fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_WITHIN {
            if let Ok(Some(_)) = child.try_wait() {
                signal_group(&child, libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal_group(&child, libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.is_running() {
            // Everything in this Engine is the tests': remove it all while it answers.
            if let Ok(ids) = self.docker(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f", "-v"];
                    args.extend(ids);
                    let _ = self.docker(&args);
                }
            }
            if let Ok(ids) = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]) {
                for id in ids.split_whitespace() {
                    let _ = self.docker(&["network", "rm", id]);
                }
            }
        }
        self.stop();
        clean_up_dir(&self.dir);
    }
}

/// Undoes what an Engine left under `dir`, running or not: kills processes started from
/// it (containerd and its shims, the containers' processes), unmounts, deletes its bridge
/// and removes the directory.
fn clean_up_dir(dir: &Path) {
    kill_processes_of(dir);
    unmount_under(dir);
    if let Ok(bridge) = fs::read_to_string(dir.join("bridge")) {
        let bridge = bridge.trim();
        if bridge.starts_with("tdk") && Path::new("/sys/class/net").join(bridge).exists() {
            let _ = ip(&["link", "del", bridge]);
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// SIGKILLs every process whose command line names `dir` (a dead Engine's containerd and
/// shims) and every process of its containers (their cgroups are named by the container
/// ids under `dir/data/containers`).
fn kill_processes_of(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut pids: Vec<libc::pid_t> = Vec::new();
    if let Ok(containers) = fs::read_dir(dir.join("data/containers")) {
        for container in containers.flatten() {
            let id = container.file_name();
            let Some(id) = id.to_str() else { continue };
            for controller in ["pids", "memory", "cpu", "unified", "systemd"] {
                let procs = Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join("docker")
                    .join(id)
                    .join("cgroup.procs");
                if let Ok(text) = fs::read_to_string(procs) {
                    pids.extend(
                        text.lines()
                            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok()),
                    );
                }
            }
        }
    }
    if let Ok(procs) = fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            if pid as u32 == std::process::id() {
                continue;
            }
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
                && cmdline.windows(needle.len()).any(|w| w == needle)
            {
                pids.push(pid);
            }
        }
    }
    for pid in pids {
        // SAFETY: kill(2); a pid that has gone meanwhile gives ESRCH.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Lazily unmounts every mount point at or under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_point)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        if let Ok(c_point) = std::ffi::CString::new(point) {
            // SAFETY: a valid NUL-terminated path.
            unsafe {
                libc::umount2(c_point.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mount_point(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = process::ip_output(args)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A /24 under 172.30.0.0/16 that no interface or route on this machine uses and no other
/// test process holds, kept until dropped. For an Engine's bridge, or a sandbox network's
/// subnet of a service under test.
pub struct SubnetLease {
    octet: u8,
    file: PathBuf,
}

impl SubnetLease {
    pub fn acquire() -> io::Result<SubnetLease> {
        let leases = std::env::temp_dir().join(LEASES);
        fs::create_dir_all(&leases)?;
        remove_stale_leases(&leases);
        let in_use = subnets_in_use()?;
        // Start somewhere random so concurrent runs rarely race for the same file.
        let start = u8::from_str_radix(&random_hex(2), 16).unwrap_or(0);
        for step in 0..=255u16 {
            let octet = start.wrapping_add(step as u8);
            if octet == 0 || octet == 255 || in_use.contains(&octet) {
                continue;
            }
            let file = leases.join(format!("172.30.{octet}.0"));
            for _ in 0..2 {
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&file)
                {
                    Ok(mut f) => {
                        use std::io::Write;
                        writeln!(f, "{}", std::process::id())?;
                        return Ok(SubnetLease { octet, file });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Held by a process that has died: take it over.
                        let holder = fs::read_to_string(&file).unwrap_or_default();
                        let alive = holder
                            .trim()
                            .parse::<u32>()
                            .map(process::alive)
                            .unwrap_or(true);
                        if alive {
                            break;
                        }
                        let _ = fs::remove_file(&file);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::other(
            "no free /24 left under 172.30.0.0/16 for a test network",
        ))
    }

    /// `172.30.X.0/24`.
    pub fn cidr(&self) -> String {
        format!("172.30.{}.0/24", self.octet)
    }

    /// `172.30.X.1`.
    pub fn gateway(&self) -> String {
        format!("172.30.{}.1", self.octet)
    }
}

impl Drop for SubnetLease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// Leases of processes that died (without dropping them) are given back.
fn remove_stale_leases(leases: &Path) {
    for entry in fs::read_dir(leases).into_iter().flatten().flatten() {
        let holder = fs::read_to_string(entry.path()).unwrap_or_default();
        if let Ok(pid) = holder.trim().parse::<u32>()
            && !process::alive(pid)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Third octets of the 172.30.X.0/24 networks any address or route here overlaps
/// (a route wider than /24 that covers 172.30.0.0/16 takes them all).
fn subnets_in_use() -> io::Result<Vec<u8>> {
    let mut used = Vec::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let out = process::ip_output(args)?;
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
            let Ok(addr) = addr.parse::<std::net::Ipv4Addr>() else {
                continue;
            };
            let len: u32 = len.parse().unwrap_or(32);
            let o = addr.octets();
            if len <= 16 {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if u32::from(addr) & mask
                    == u32::from(std::net::Ipv4Addr::new(172, 30, 0, 0)) & mask
                {
                    return Ok((0..=255).collect());
                }
            } else if o[0] == 172 && o[1] == 30 {
                used.push(o[2]);
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_point("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_point("/tmp/plain"), "/tmp/plain");
    }

    #[test]
    fn leases_differ_and_are_given_back() {
        let a = SubnetLease::acquire().unwrap();
        let b = SubnetLease::acquire().unwrap();
        assert_ne!(a.cidr(), b.cidr());
        assert!(a.cidr().starts_with("172.30.") && a.cidr().ends_with(".0/24"));
        let file = a.file.clone();
        assert!(file.exists());
        drop(a);
        assert!(!file.exists());
    }

    /// Starts a second Engine, copies an image the machine's Engine has into it, runs a
    /// container that the host reaches over HTTP on the Engine's own bridge, and checks that
    /// everything is gone afterwards and the first Engine's `docker0` is untouched.
    #[test]
    fn a_second_engine_runs_a_container_and_leaves_nothing() {
        let image = "testdrive/csv-explorer:1";
        let host_bridges_before = docker0_state();
        let engine = Engine::start().unwrap_or_else(|e| {
            panic!("a second Docker Engine must start for the multi-node tests: {e}")
        });
        assert_eq!(
            engine
                .docker(&["info", "--format", "{{.DockerRootDir}}"])
                .unwrap(),
            engine.dir.join("data").display().to_string()
        );
        engine.load_images(&[image]).unwrap_or_else(|e| {
            panic!("{e}\n(run sandbox-images/build first: the README's test command does)")
        });
        let id = engine.docker(&["run", "-d", image]).unwrap();
        let ip_addr = engine
            .docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id])
            .unwrap();
        let prefix = engine.subnet().trim_end_matches("0/24").to_owned();
        assert!(
            ip_addr.starts_with(&prefix),
            "{ip_addr} in {}",
            engine.subnet()
        );
        // The machine's own Engine does not see it.
        let host_ps = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&host_ps.stdout).contains(&id));

        let page = http_get(&format!("{ip_addr}:8080"), Duration::from_secs(20));
        assert!(page.contains("CSV Explorer"), "{page}");

        let dir = engine.dir.clone();
        let bridge = engine.bridge().to_owned();
        let pid = engine.child.lock().unwrap().as_ref().unwrap().id();
        drop(engine);
        assert!(!dir.exists(), "its directory is removed");
        assert!(
            !Path::new("/sys/class/net").join(&bridge).exists(),
            "its bridge is deleted"
        );
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || zombie_or_gone(pid));
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&dir.display().to_string()),
            "nothing stays mounted"
        );
        assert_eq!(docker0_state(), host_bridges_before, "docker0 is untouched");
    }

    fn docker0_state() -> bool {
        Path::new("/sys/class/net/docker0").exists()
    }

    fn zombie_or_gone(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    }

    fn http_get(addr: &str, within: Duration) -> String {
        use std::io::Write;
        let started = Instant::now();
        loop {
            let attempt = (|| -> io::Result<String> {
                let mut stream = std::net::TcpStream::connect_timeout(
                    &addr.parse().map_err(io::Error::other)?,
                    Duration::from_secs(2),
                )?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(stream, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
                let mut body = String::new();
                stream.read_to_string(&mut body)?;
                Ok(body)
            })();
            match attempt {
                Ok(body) => return body,
                Err(e) if started.elapsed() > within => panic!("GET http://{addr}/: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}
