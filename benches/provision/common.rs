//! Small pieces every part uses: the error type, statistics, the docker CLI, and readings
//! from `/proc` (memory and CPU time of this process, the host's load).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use crate::support::{BoxError, Result, ms, pid_alive, shell};
use crate::support::{Sorted, clock_ticks};

// ---------------------------------------------------------------------------------------
// Settings from the environment

/// A count from the environment, or `default`.
pub fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a count, not {v:?}"))?),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list of counts from the environment, or `default`.
pub fn env_counts(name: &str, default: &[usize]) -> Result<Vec<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} must be counts like 1,4,16, not {v:?}").into())
            })
            .collect(),
        Err(_) => Ok(default.to_vec()),
    }
}

// ---------------------------------------------------------------------------------------
// The docker CLI

/// Runs the docker CLI (async: the service shares this runtime) and returns its stdout.
pub async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "docker {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Non-empty lines of a command's output (nothing when it fails).
pub fn shell_lines(program: &str, args: &[&str]) -> Vec<String> {
    let out = shell(program, args);
    if out == "?" {
        return Vec::new();
    }
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Time

pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

pub fn now_ms() -> f64 {
    unix_ms(SystemTime::now())
}

/// An RFC 3339 instant from the API as Unix milliseconds.
pub fn rfc3339_ms(value: &Value) -> Result<f64> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("not a timestamp: {value}"))?;
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
    Ok(t.unix_timestamp_nanos() as f64 / 1e6)
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Median (of an even count: the mean of the middle two), nearest-rank p90 and p99.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let v = Sorted::new(values)?;
    Some(Stats {
        n: v.len(),
        median: v.median(),
        p90: v.rank(0.9),
        p99: v.rank(0.99),
        min: v.min(),
        max: v.max(),
    })
}

// ---------------------------------------------------------------------------------------
// Memory of this process (the service runs in it)

fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size now (`VmRSS`), KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:").unwrap_or(0)
}

/// Peak resident set size since the start or the last `reset_hwm` (`VmHWM`), KiB.
pub fn hwm_kib() -> u64 {
    status_kib("VmHWM:").unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
pub fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

unsafe extern "C" {
    /// glibc: gives free heap memory back to the system.
    fn malloc_trim(pad: usize) -> i32;
}

/// Returns free heap memory to the system, so that a baseline RSS holds no freed memory a
/// later allocation could reuse unseen (glibc keeps freed memory in its arenas).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        malloc_trim(0);
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples `VmRSS` in a background thread every `every` until finished: (Unix ms, KiB).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    pub fn start(every: Duration) -> Result<RssSampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-rss".to_string())
            .spawn(move || {
                let mut samples = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    samples.push((now_ms(), rss_kib()));
                    std::thread::sleep(every);
                }
                samples.push((now_ms(), rss_kib()));
                samples
            })?;
        Ok(RssSampler { stop, thread })
    }

    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// CPU time of this process, by thread kind

/// CPU seconds (user + system) used so far by this process's threads, grouped by what the
/// threads run (from their names): the service, SQLite, the load generator, the rest.
pub fn thread_cpu() -> BTreeMap<&'static str, f64> {
    let tick = clock_ticks();
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return groups;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 3, utime 14, stime 15.
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let ticks = utime.parse::<f64>().unwrap_or(0.0) + stime.parse::<f64>().unwrap_or(0.0);
        *groups.entry(thread_group(name)).or_insert(0.0) += ticks / tick;
    }
    groups
}

/// The name of the main runtime's threads, which run the service (and the bench's own
/// orchestration, idle while a load runs).
pub const SERVICE_THREADS: &str = "td-service";
pub const GROUP_SERVICE: &str = "service (tokio workers, blocking pool)";
pub const GROUP_SQLITE: &str = "SQLite (sqlx worker threads)";
pub const GROUP_LOAD: &str = "load generator (bench-load threads)";
pub const GROUP_OTHER: &str = "other threads of the bench";

fn thread_group(name: &str) -> &'static str {
    if name.starts_with("bench-load") {
        GROUP_LOAD
    } else if name.starts_with(SERVICE_THREADS) {
        GROUP_SERVICE
    } else if name.starts_with("sqlx-sqlite") {
        GROUP_SQLITE
    } else {
        GROUP_OTHER
    }
}

/// CPU seconds per group between two readings of `thread_cpu`.
pub fn cpu_between(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The host

/// This process's nice value (`nice -n 5 cargo bench …` gives 5).
pub fn nice() -> i64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let close = s.rfind(')')?;
            // Field 19 is the nice value; after the name, field 3 is index 0.
            s[close + 1..].split_whitespace().nth(16)?.parse().ok()
        })
        .unwrap_or(0)
}
