//! Part `thousand` (issue 16, items 3 and 4): N (default 1000) live sandboxes of the
//! static-files demo at once, each holding its own one-line file, and every one of them
//! reached through the proxy.
//!
//! Measured: the creation rate (overall and per 100 in order of completion) and failures;
//! with all N live, `GET /s/{id}/id.csv` to every sandbox in rounds from a few keep-alive
//! clients, each answer checked against that sandbox's own file (reachability and
//! isolation), latency over all requests; the same on a sample side by side with GET at the
//! container's own address (the raw baseline); the service's RSS per sandbox, the Engine's
//! processes and the host's memory; then the teardown of all of them, timed, and what is
//! left on the Engine.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use testdrive::config::MAX_SANDBOXES;

use crate::Ctx;
use crate::common::{Result, docker, env_count, mib, ms, shell, stats};
use crate::memory::{host_side, settled_rss};
use crate::report::{Section, num};
use crate::service::{Sandbox, Service};

/// The target for the proxy's p99 over all sandboxes, ms.
const P99_TARGET_MS: f64 = 50.0;
/// Creations in flight.
const PARALLEL: usize = 4;
/// How many sandboxes the raw baseline samples.
const SAMPLE: usize = 100;
/// Raw containers made for the Engine's own creation rate: few, since a Linux bridge takes
/// at most 1023 ports and N sandboxes hold N of them.
const RAW_BATCH: usize = 16;

/// The Engine's own create + start (bollard, no file, no readiness check), `RAW_BATCH`
/// containers `PARALLEL` at a time: containers per second. They are removed after.
async fn engine_rate(ctx: &Ctx) -> Result<f64> {
    let started = Instant::now();
    let made: Vec<Result<(String, f64, f64)>> = futures_util::stream::iter(0..RAW_BATCH)
        .map(|_| ctx.raw.engine_create_start())
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let took = started.elapsed();
    let ids: Vec<String> = made
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(id, _, _)| id.clone()))
        .collect();
    ctx.raw.engine_remove_all(&ids, PARALLEL).await?;
    if let Some(Err(e)) = made.into_iter().find(Result::is_err) {
        return Err(e);
    }
    Ok(RAW_BATCH as f64 / took.as_secs_f64())
}

/// The file sandbox `index` holds: distinct per sandbox, so a wrong answer shows.
fn own_file(index: usize) -> String {
    format!("sandbox\n{index}\n")
}

/// `MemTotal - MemAvailable` of `/proc/meminfo`, MiB (what `free -m` calls used, roughly).
fn host_used_mib() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("MemTotal:") - field("MemAvailable:")) / 1024.0
}

/// The host's `net.ipv4.neigh.default.gc_thresh1/2/3`, as `a/b/c`.
pub fn neighbour_limits() -> String {
    (1..=3)
        .map(|i| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/default/gc_thresh{i}"))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| "?".to_string())
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One GET to check: where, and the body that must come back.
#[derive(Clone)]
struct Probe {
    url: String,
    bearer: Option<String>,
    want: String,
    sandbox: usize,
}

/// What a pass of probes found.
#[derive(Default)]
struct Pass {
    latencies_ms: Vec<f64>,
    /// Requests that failed or answered other than 200.
    errors: u64,
    /// Answers of 200 whose body was not the sandbox's own file.
    wrong: u64,
    /// Sandboxes (by index) with at least one failed or wrong answer.
    unreachable: BTreeSet<usize>,
    first_error: Option<String>,
    took: Duration,
}

impl Pass {
    fn merge(&mut self, other: Pass) {
        self.latencies_ms.extend(other.latencies_ms);
        self.errors += other.errors;
        self.wrong += other.wrong;
        self.unreachable.extend(other.unreachable);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.took += other.took;
    }
}

/// Sends every probe once, `clients` keep-alive clients taking every `clients`-th, on the
/// load generator's runtime.
async fn pass(ctx: &Ctx, probes: &Arc<Vec<Probe>>, clients: &[reqwest::Client]) -> Result<Pass> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let probes = probes.clone();
        let client = client.clone();
        let step = clients.len();
        tasks.push(ctx.load.spawn(async move {
            let mut found = Pass::default();
            for probe in probes.iter().skip(c).step_by(step) {
                let mut req = client.get(&probe.url);
                if let Some(token) = &probe.bearer {
                    req = req.bearer_auth(token);
                }
                let sent = Instant::now();
                let answer = match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        res.text().await.map_err(|e| e.to_string())
                    }
                    Ok(res) => Err(format!("HTTP {}", res.status())),
                    Err(e) => Err(e.to_string()),
                };
                let took = ms(sent.elapsed());
                match answer {
                    Ok(body) if body == probe.want => found.latencies_ms.push(took),
                    Ok(body) => {
                        found.latencies_ms.push(took);
                        found.wrong += 1;
                        found.unreachable.insert(probe.sandbox);
                        found.first_error.get_or_insert(format!(
                            "{}: another sandbox's answer {body:?}",
                            probe.url
                        ));
                    }
                    Err(e) => {
                        found.errors += 1;
                        found.unreachable.insert(probe.sandbox);
                        found
                            .first_error
                            .get_or_insert(format!("{}: {e}", probe.url));
                    }
                }
            }
            found
        }));
    }
    let mut all = Pass::default();
    for task in tasks {
        all.merge(task.await?);
    }
    all.took = started.elapsed();
    Ok(all)
}

fn clients(n: usize) -> Result<Vec<reqwest::Client>> {
    (0..n)
        .map(|_| {
            Ok(reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()?)
        })
        .collect()
}

fn latency_row(what: &str, p: &Pass) -> String {
    let l = stats(&p.latencies_ms);
    let f = |g: fn(&crate::common::Stats) -> f64| l.as_ref().map(g).map(num).unwrap_or_default();
    format!(
        "| {what} | {} | {} | {} | {} | {} | {} | {} | {} |",
        p.latencies_ms.len() as u64 + p.errors,
        f(|s| s.median),
        f(|s| s.p90),
        f(|s| s.p99),
        f(|s| s.max),
        p.errors,
        p.wrong,
        p.unreachable.len()
    )
}

/// Ends every sandbox, `PARALLEL` at a time; the failures' count and first message.
async fn end_all(svc: &Service, live: &[(usize, Sandbox)]) -> (usize, Option<String>) {
    let results: Vec<Result<serde_json::Value>> = futures_util::stream::iter(live)
        .map(|(_, s)| svc.delete(s))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    (failed.len(), failed.into_iter().next())
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let n = env_count("BENCH_THOUSAND", 1000)?.max(1);
    let rounds = env_count("BENCH_THOUSAND_ROUNDS", 3)?.max(1);
    let nclients = env_count("BENCH_THOUSAND_CLIENTS", 4)?.max(1);
    if n + 10 > ctx.max_sandboxes as usize {
        return Err(format!(
            "BENCH_THOUSAND={n} needs max_sandboxes above {}, the bench configures {}",
            n + 10,
            ctx.max_sandboxes
        )
        .into());
    }
    if n + RAW_BATCH > MAX_SANDBOXES as usize {
        return Err(format!(
            "BENCH_THOUSAND={n}: with the {RAW_BATCH} raw containers that is more than the \
             {MAX_SANDBOXES} ports a Linux bridge takes"
        )
        .into());
    }
    let demo = ctx.svc.demo("files-thousand", json!({})).await?;
    // One sandbox first, so that what the first one initialises is in the baseline.
    let first = ctx
        .svc
        .sandbox(&demo, "id.csv", b"sandbox\nfirst\n")
        .await?;
    ctx.svc.delete(&first).await?;

    let host_before = host_side();
    let used_before = host_used_mib();
    let rss_before = settled_rss().await;
    let engine_idle = engine_rate(ctx).await?;

    // Creation: PARALLEL in flight; each result with its index, its own time, and when it
    // completed.
    let started = Instant::now();
    let demo = demo.as_str();
    let results: Vec<(usize, f64, Duration, Result<Sandbox>)> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let sent = Instant::now();
            let file = own_file(i);
            let r = ctx.svc.sandbox(demo, "id.csv", file.as_bytes()).await;
            if (i + 1) % 100 == 0 {
                eprintln!(
                    "  thousand: {} sent, {:.0} s",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
            (i, ms(sent.elapsed()), started.elapsed(), r)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let creating = started.elapsed();
    let mut live = Vec::new();
    let mut create_ms = Vec::new();
    let mut done_at = Vec::new();
    let mut failures = Vec::new();
    for (i, took, at, r) in results {
        match r {
            Ok(s) => {
                live.push((i, s));
                create_ms.push(took);
                done_at.push(at);
            }
            Err(e) => failures.push(format!("sandbox {i}: {e}")),
        }
    }
    live.sort_by_key(|(i, _)| *i);
    done_at.sort();
    eprintln!(
        "  thousand: {} live, {} failed, in {:.1} s",
        live.len(),
        failures.len(),
        creating.as_secs_f64()
    );

    // From here on the sandboxes are ended whatever the measurements do.
    let measured = measure(ctx, &live, rounds, nclients).await;
    let rss_live = measured.as_ref().map(|m| m.rss_live).unwrap_or(0);
    let ended = Instant::now();
    let (end_failures, end_error) = end_all(&ctx.svc, &live).await;
    let ending = ended.elapsed();
    let left = shell(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=testdrive.instance={}", ctx.instance),
        ],
    );
    let left = left.lines().filter(|l| !l.trim().is_empty()).count();
    let used_after = host_used_mib();
    let m = measured?;

    let live_n = live.len();
    let rate = live_n as f64 / creating.as_secs_f64();
    // Per 100 in order of completion: 100 / the time from the previous hundred's last.
    let mut hundreds = Vec::new();
    let mut from = Duration::ZERO;
    for chunk in done_at.chunks(100) {
        let to = *chunk.last().unwrap_or(&from);
        hundreds.push(chunk.len() as f64 / (to - from).as_secs_f64().max(1e-9));
        from = to;
    }
    let per = |a: u64, b: u64| (a as f64 - b as f64) / live_n.max(1) as f64;

    let mut s = Section::new(&format!("8. {n} live sandboxes"));
    s.line(format!(
        "Method: a static-files demo (busybox httpd, 256 MB, 0.5 CPU, 128 pids); one sandbox \
         made and ended first; then {n} sandboxes, {PARALLEL} creations in flight, each \
         `POST /v1/sandboxes?wait=60` with its own file `id.csv` (`sandbox\\n<index>\\n`), \
         answered `ready`. The bench configures `max_sandboxes = {}` and sets no per-client \
         limit (every creation comes from 127.0.0.1). At start the service checks the host's \
         neighbour-table limits for that many sandboxes and, running as root, raises \
         `net.ipv4.neigh.default.gc_thresh1/2/3` on this host when they are too small (before \
         the service started: {}; with it running: {}) — intended: with the kernel's defaults (128/512/1024) addresses past about 500 \
         on one bridge stop answering. With all of them live: {rounds} rounds of \
         `GET /s/{{id}}/id.csv` (sandbox token as bearer) to every sandbox, from {nclients} \
         keep-alive clients (reqwest, one connection each to the service) taking every \
         {nclients}th sandbox; an answer counts only when its body is that sandbox's own file. \
         Then the raw baseline on a sample of {} sandboxes (one in every {}): GET `/id.csv` at the \
         container's address on the sandbox network (busybox httpd closes each connection: a \
         new TCP connection per request) and, back to back, the same sandboxes through the \
         proxy, {rounds} rounds alternating which side goes first. The Engine's own creation \
         rate, for the raw side of the creation rate: {RAW_BATCH} containers of the same image, \
         hardening and limits created and started through its API ({PARALLEL} in flight, no \
         file, no readiness check), once before the sandboxes and once with all live, removed \
         each time (a Linux bridge takes at most 1023 ports, so one network cannot hold many \
         more than 1000 sandboxes). Memory: the service's \
         `VmRSS` after 2 s of quiet and `malloc_trim(0)` before and with all live; the Engine's \
         processes from `/proc/*/smaps_rollup` (`Pss`); the host's `MemTotal − MemAvailable`. \
         Then all are ended, {PARALLEL} `DELETE`s in flight, timed, and the Engine asked for \
         containers of this service.\n",
        ctx.max_sandboxes,
        ctx.neighbours_before,
        neighbour_limits(),
        m.sample_n,
        m.sample_step,
    ));
    s.line("| Creation | figure |\n|---|---:|");
    s.line(format!("| sandboxes asked for | {n} |"));
    s.line(format!("| ready | {live_n} |"));
    s.line(format!("| failed | {} |", failures.len()));
    s.line(format!(
        "| all created in, s | {} |",
        num(creating.as_secs_f64())
    ));
    s.line(format!(
        "| sandboxes ready per second, overall | **{}** |",
        num(rate)
    ));
    if let Some(h) = stats(&hundreds) {
        s.line(format!(
            "| per second in each 100 (first … last) | {} |",
            hundreds
                .iter()
                .map(|r| num(*r))
                .collect::<Vec<_>>()
                .join(" · ")
        ));
        s.line(format!(
            "| per second in each 100: min / median / max | {} / {} / {} |",
            num(h.min),
            num(h.median),
            num(h.max)
        ));
    }
    s.line(format!(
        "| the Engine's own create + start, per second ({RAW_BATCH} containers, {PARALLEL} in \
         flight): with none live / with {live_n} live | {} / {} |",
        num(engine_idle),
        num(m.engine_live)
    ));
    if let (Some(first), Some(last)) = (hundreds.first(), hundreds.last()) {
        s.line(format!(
            "| testdrive / the Engine: first 100 / with none live, last 100 / with all live | \
             {:.2}× / {:.2}× |",
            first / engine_idle,
            last / m.engine_live
        ));
    }
    if let Some(c) = stats(&create_ms) {
        s.line(format!(
            "| one creation, ms: median / p90 / p99 / max | {} / {} / {} / {} |",
            num(c.median),
            num(c.p90),
            num(c.p99),
            num(c.max)
        ));
    }
    if let Some(f) = failures.first() {
        s.line(format!("\nFirst failure: `{f}`\n"));
    }
    s.line(
        "\n| Requests with all live | requests | median ms | p90 | p99 | max | failed | wrong \
         body | sandboxes not reached |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    s.line(latency_row(
        &format!("proxy, every sandbox × {rounds} ({nclients} clients)"),
        &m.all,
    ));
    s.line(latency_row(
        &format!("proxy, the sample of {} × {rounds}", m.sample_n),
        &m.sample_proxy,
    ));
    s.line(latency_row(
        &format!("direct to the container, the same sample × {rounds}"),
        &m.sample_direct,
    ));
    if let Some(e) = m
        .all
        .first_error
        .as_ref()
        .or(m.sample_direct.first_error.as_ref())
    {
        s.line(format!("\nFirst failed request: `{e}`\n"));
    }
    let (p, d) = (
        stats(&m.sample_proxy.latencies_ms),
        stats(&m.sample_direct.latencies_ms),
    );
    if let (Some(p), Some(d)) = (p, d) {
        s.line(format!(
            "\nProxy / direct on the sample: median {} / {} = **{:.2}×**, p99 {} / {} = {:.2}×. \
             Requests per second over all sandboxes: {}.\n",
            num(p.median),
            num(d.median),
            p.median / d.median,
            num(p.p99),
            num(d.p99),
            p.p99 / d.p99,
            num(m.all.latencies_ms.len() as f64 / m.all.took.as_secs_f64())
        ));
    }
    s.line("| Memory | before | with all live | per sandbox KiB |\n|---|---:|---:|---:|");
    s.line(format!(
        "| the service's RSS, MiB (after `malloc_trim(0)`) | {} | {} | **{}** |",
        num(mib(rss_before)),
        num(mib(rss_live)),
        num(per(rss_live, rss_before))
    ));
    for ((what, kib0, n0), (_, kib1, n1)) in host_before.iter().zip(&m.host_live) {
        s.line(format!(
            "| {what}, MiB (count) | {} ({n0}) | {} ({n1}) | {} |",
            num(mib(*kib0)),
            num(mib(*kib1)),
            num(per(*kib1, *kib0))
        ));
    }
    s.line(format!(
        "| host: `MemTotal − MemAvailable`, MiB | {} | {} | {} |",
        num(used_before),
        num(m.used_live),
        num((m.used_live - used_before) * 1024.0 / live_n.max(1) as f64)
    ));
    s.line(format!(
        "\nTeardown: {live_n} `DELETE`s, {PARALLEL} in flight, in {} s ({} per second), {} \
         failed{}; then containers of this service left on the Engine: {left}; host memory \
         used {} MiB.\n",
        num(ending.as_secs_f64()),
        num(live_n as f64 / ending.as_secs_f64()),
        end_failures,
        end_error
            .map(|e| format!(" (first: `{e}`)"))
            .unwrap_or_default(),
        num(used_after)
    ));

    let p99 = stats(&m.all.latencies_ms).map_or(f64::NAN, |l| l.p99);
    let reached = live_n - m.all.unreachable.len();
    s.verdict(
        "3. live sandboxes held and reachable through the proxy (own file each)",
        format!(
            "{reached} of {n} ({} failed to create, {} not reached), proxy p99 {} ms over {} \
             requests; {} created per s",
            failures.len(),
            m.all.unreachable.len(),
            num(p99),
            m.all.latencies_ms.len() as u64 + m.all.errors,
            num(rate)
        ),
        &format!("{n}, proxy p99 < {P99_TARGET_MS:.0} ms"),
        Some(reached == n && p99 < P99_TARGET_MS && end_failures == 0 && left == 0),
    );
    Ok(s)
}

/// What is read with all sandboxes live.
struct Live {
    all: Pass,
    sample_proxy: Pass,
    sample_direct: Pass,
    sample_n: usize,
    sample_step: usize,
    rss_live: u64,
    host_live: Vec<(&'static str, u64, usize)>,
    used_live: f64,
    /// The Engine's own create + start per second with all sandboxes live.
    engine_live: f64,
}

async fn measure(
    ctx: &Ctx,
    live: &[(usize, Sandbox)],
    rounds: usize,
    nclients: usize,
) -> Result<Live> {
    let rss_live = settled_rss().await;
    let host_live = host_side();
    let used_live = host_used_mib();
    let engine_live = engine_rate(ctx).await?;
    let proxied = |(i, s): &(usize, Sandbox)| Probe {
        url: ctx.svc.url(&format!("/s/{}/id.csv", s.id)),
        bearer: Some(s.token.clone()),
        want: own_file(*i),
        sandbox: *i,
    };
    let probes = Arc::new(live.iter().map(proxied).collect::<Vec<_>>());
    let proxy_clients = clients(nclients)?;
    let mut all = Pass::default();
    for round in 0..rounds {
        let p = pass(ctx, &probes, &proxy_clients).await?;
        eprintln!(
            "  thousand: proxy round {}: {} requests in {:.1} s, {} failed, {} wrong",
            round + 1,
            p.latencies_ms.len() as u64 + p.errors,
            p.took.as_secs_f64(),
            p.errors,
            p.wrong
        );
        all.merge(p);
    }

    let step = (live.len() / SAMPLE).max(1);
    let sample: Vec<&(usize, Sandbox)> = live.iter().step_by(step).take(SAMPLE).collect();
    let mut direct = Vec::new();
    for (i, s) in &sample {
        let ip = ctx.svc.container_ip(s, &ctx.raw.network.name).await?;
        direct.push(Probe {
            url: format!("http://{ip}:8080/id.csv"),
            bearer: None,
            want: own_file(*i),
            sandbox: *i,
        });
    }
    let direct = Arc::new(direct);
    let via = Arc::new(sample.iter().map(|p| proxied(p)).collect::<Vec<_>>());
    let (mut sample_proxy, mut sample_direct) = (Pass::default(), Pass::default());
    for round in 0..rounds {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                sample_proxy.merge(pass(ctx, &via, &proxy_clients).await?);
            } else {
                sample_direct.merge(pass(ctx, &direct, &clients(nclients)?).await?);
            }
        }
    }
    // The Engine's own view, for the record: is the container list as long as it should be.
    let running = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=testdrive.instance={}", ctx.instance),
    ])
    .await
    .map(|out| out.lines().count())
    .unwrap_or(0);
    eprintln!(
        "  thousand: {running} containers of this service running; proxy p99 {:.1} ms",
        stats(&all.latencies_ms).map_or(f64::NAN, |l| l.p99)
    );
    Ok(Live {
        all,
        sample_proxy,
        sample_direct,
        sample_n: sample.len(),
        sample_step: step,
        rss_live,
        host_live,
        used_live,
        engine_live,
    })
}
