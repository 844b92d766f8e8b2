//! What both benches (`provision` and `nodes`) use, in one copy: the error type, the labels
//! and tag of a run, the docker CLI and other commands, `/proc` readings, the statistics'
//! order statistics, the figures' format, the hardened `docker run/create` flags and the
//! description of the source measured. Each bench includes it with
//! `#[path = "…/support/mod.rs"] mod support;`.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

// ---------------------------------------------------------------------------------------
// This run, on the objects it makes

/// Labels on what a bench makes itself (raw containers, their volumes, networks).
pub const RUN_KEY: &str = "testdrive.bench.run";
pub const PID_KEY: &str = "testdrive.bench.pid";

/// This run's tag: in object names and the `testdrive.bench.run` label.
pub fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
}

pub fn pid() -> String {
    std::process::id().to_string()
}

/// Whether a process with this id runs.
pub fn pid_alive(pid: &str) -> bool {
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------
// Commands

/// Trimmed stdout of a command, for descriptions and cleanup; "?" when it cannot run or
/// fails.
pub fn shell(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".to_string())
}

/// The flags of `docker run` / `docker create` after the name: the labels (also on the
/// volume), and the same hardening and limits as testdrive's sandboxes — read-only root,
/// /tmp tmpfs of 64 MB, no capabilities, no-new-privileges, 256 MB without swap, half a
/// CPU, 128 processes, bounded json-file logs — on `network` at `ip`, a volume at /data,
/// and the image.
pub fn hardened_container_args(
    labels: &[String],
    network: &str,
    ip: Ipv4Addr,
    image: &str,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for label in labels {
        args.extend(["--label".to_string(), label.clone()]);
    }
    args.extend(
        [
            "--hostname",
            "sandbox",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "256m",
            "--memory-swap",
            "256m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "128",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=1",
            "--network",
        ]
        .map(String::from),
    );
    args.push(network.to_string());
    args.extend(["--ip".to_string(), ip.to_string(), "--mount".to_string()]);
    let volume_labels: Vec<String> = labels.iter().map(|l| format!("volume-label={l}")).collect();
    args.push(format!("type=volume,dst=/data,{}", volume_labels.join(",")));
    args.push(image.to_string());
    args
}

// ---------------------------------------------------------------------------------------
// Time and figures

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted values, for the order statistics of a bench's `Stats`.
pub struct Sorted(Vec<f64>);

impl Sorted {
    /// `None` when there are no values.
    pub fn new(values: &[f64]) -> Option<Sorted> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Sorted(v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The median (of an even count: the mean of the middle two).
    pub fn median(&self) -> f64 {
        let (v, n) = (&self.0, self.0.len());
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// The nearest-rank percentile `p` (0 to 1).
    pub fn rank(&self, p: f64) -> f64 {
        let n = self.0.len();
        self.0[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]
    }

    pub fn min(&self) -> f64 {
        self.0[0]
    }

    pub fn max(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
}

/// A figure with sensible precision: 3 significant digits below 100, whole numbers above.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".to_string()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------------------------------------------------------------------------------------
// The host

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| shell("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0))
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Samples the 1-minute load average every 5 s until stopped.
pub struct LoadSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl LoadSampler {
    pub fn start() -> Result<LoadSampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-loadavg".to_string())
            .spawn(move || {
                let mut samples = vec![load_average()];
                let mut ticks = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    ticks += 1;
                    if ticks % 50 == 0 {
                        samples.push(load_average());
                    }
                }
                samples.push(load_average());
                samples
            })?;
        Ok(LoadSampler { stop, thread })
    }

    pub fn finish(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The machine's memory ("15.6 GiB") and CPU model, from `/proc` ("?" where unknown).
pub fn memory_and_cpu_model() -> (String, String) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "?".to_string());
    (memory, cpu_model)
}

/// The commit measured, and whether the working tree differed from it.
pub fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let head = shell("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = shell(
        "git",
        &[
            "-C",
            dir,
            "status",
            "--porcelain",
            "--",
            "src",
            "migrations",
            "config",
        ],
    );
    if dirty == "?" {
        format!("commit {head} (working tree state unknown)")
    } else if dirty.is_empty() {
        format!("commit {head}")
    } else {
        format!(
            "commit {head} plus uncommitted changes to {} file(s) under src/, migrations/, config/",
            dirty.lines().count()
        )
    }
}
