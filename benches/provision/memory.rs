//! Part `memory` (issue item 7): the service's own memory per live sandbox, at 200 live
//! sandboxes: the process's RSS before and after creating them, divided by their number.
//! For scale, the host's own cost of the same sandboxes is read too: the resident memory of
//! the Engine's processes (dockerd, containerd, one containerd-shim per container) and of the
//! demo processes themselves.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::Ctx;
use crate::common::{Result, env_count, mib, ms, rss_kib, trim_heap};
use crate::report::{Section, num};
use crate::service::{Sandbox, TINY_CSV};

/// Proportional resident memory (`Pss` of `/proc/<pid>/smaps_rollup`: shared pages divided
/// among the processes sharing them), KiB, and count of the host's processes whose name
/// starts with `prefix`.
fn processes(prefix: &str) -> (u64, usize) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in dir.flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if field("Name:").is_some_and(|n| n.starts_with(prefix)) {
            let kib = std::fs::read_to_string(entry.path().join("smaps_rollup"))
                .ok()
                .and_then(|rollup| {
                    rollup
                        .lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .unwrap_or(0);
            total.0 += kib;
            total.1 += 1;
        }
    }
    total
}

/// (what, KiB) of the host's processes that hold sandboxes.
pub fn host_side() -> Vec<(&'static str, u64, usize)> {
    [
        ("dockerd", "dockerd"),
        ("containerd", "containerd"),
        ("containerd-shim (one per container)", "containerd-shim"),
        ("busybox httpd (the demo itself)", "httpd"),
    ]
    .into_iter()
    .map(|(what, prefix)| {
        let (kib, n) = processes(prefix);
        // "containerd" also matches the shims: count them apart.
        if prefix == "containerd" {
            let (shim_kib, shims) = processes("containerd-shim");
            (what, kib - shim_kib, n - shims)
        } else {
            (what, kib, n)
        }
    })
    .collect()
}

/// The process's RSS after a quiet moment with free heap memory given back.
pub async fn settled_rss() -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    trim_heap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    rss_kib()
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let n = env_count("BENCH_LIVE", 200)?.max(1);
    let parallel = 4;
    if n + 10 > ctx.max_sandboxes as usize {
        return Err(format!(
            "BENCH_LIVE={n} needs max_sandboxes above {}, the bench configures {}",
            n + 10,
            ctx.max_sandboxes
        )
        .into());
    }
    let demo = ctx.svc.demo("files-memory", json!({})).await?;
    // One sandbox first, so that what the first one initialises is in the baseline.
    let first = ctx.svc.sandbox(&demo, "tiny.csv", TINY_CSV).await?;
    ctx.svc.delete(&first).await?;

    let host_before = host_side();
    let before = settled_rss().await;
    let started = Instant::now();
    let results: Vec<Result<Sandbox>> = futures_util::stream::iter(0..n)
        .map(|_| ctx.svc.sandbox(&demo, "tiny.csv", TINY_CSV))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let took = started.elapsed();
    let mut live = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(s) => live.push(s),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        ctx.svc.delete_all(&live, parallel).await?;
        return Err(e);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_untrimmed = rss_kib();
    let after = settled_rss().await;
    let host_after = host_side();
    eprintln!(
        "  memory: {n} live sandboxes in {:.1} s; RSS {:.1} → {:.1} MiB ({:.1} KiB per sandbox)",
        took.as_secs_f64(),
        mib(before),
        mib(after),
        (after as f64 - before as f64) / n as f64
    );
    let ended = Instant::now();
    ctx.svc.delete_all(&live, parallel).await?;
    let ending = ended.elapsed();
    let after_end = settled_rss().await;

    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    let mut s = Section::new("7. Memory per live sandbox");
    s.line(format!(
        "Method: one sandbox made and ended first (so that what the first one initialises is \
         in the baseline), then the process's `VmRSS` after 2 s of quiet and `malloc_trim(0)`; \
         then {n} sandboxes of the static-files demo (a tiny CSV each), {parallel} creations \
         at a time ({} s; `max_sandboxes` is {} in the bench), then `VmRSS` again, 2 s later \
         as it is and after `malloc_trim(0)`. The process holds the service and the bench's \
         client (which keeps {n} ids and tokens: a few tens of KiB). Then all are ended ({} s) \
         and `VmRSS` read a third time. The host's processes are read from `/proc/*/smaps_rollup` \
         (`Pss`: pages shared by several processes are divided among them), before and with \
         the sandboxes live.\n",
        num(took.as_secs_f64()),
        ctx.max_sandboxes,
        num(ms(ending) / 1000.0)
    ));
    s.line("| Reading | RSS MiB | per live sandbox KiB |\n|---|---:|---:|");
    s.line(format!("| before | {} | |", num(mib(before))));
    s.line(format!(
        "| {n} live, 2 s after the last was ready | {} | {} |",
        num(mib(after_untrimmed)),
        num(per(after_untrimmed, before))
    ));
    s.line(format!(
        "| {n} live, after `malloc_trim(0)` | {} | **{}** |",
        num(mib(after)),
        num(per(after, before))
    ));
    s.line(format!(
        "| all ended again, after `malloc_trim(0)` | {} | {} (kept after the end) |",
        num(mib(after_end)),
        num(per(after_end, before))
    ));
    s.line("\nThe host's side of the same sandboxes (proportional resident memory, MiB):\n");
    s.line(
        "| Processes | before (count) | with the sandboxes live (count) | per sandbox KiB |\n\
         |---|---:|---:|---:|",
    );
    for ((what, kib0, n0), (_, kib1, n1)) in host_before.iter().zip(&host_after) {
        s.line(format!(
            "| {what} | {} ({n0}) | {} ({n1}) | {} |",
            num(mib(*kib0)),
            num(mib(*kib1)),
            num(per(*kib1, *kib0))
        ));
    }
    s.verdict(
        &format!("7. service memory per live sandbox (at {n} live)"),
        format!(
            "{} KiB ({} KiB before trimming the heap)",
            num(per(after, before)),
            num(per(after_untrimmed, before))
        ),
        "(no target)",
        None,
    );
    Ok(s)
}
