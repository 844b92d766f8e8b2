//! Parts `status` and `proxy` (issue item 6): the service's HTTP paths under load, with the
//! load generator of `load.rs` (keep-alive clients on their own threads).
//!
//! - status: `GET /v1/sandboxes/{id}` with the sandbox's token, requests per second; for
//!   reference, the same route with the operators' token (no token lookup in the database)
//!   and `GET /healthz` (the HTTP stack alone: axum, the middleware, this client);
//! - proxy: `GET /s/{id}/<file>` of a static-files sandbox against GET of the same file at
//!   the container's address on the sandbox network, for a 1 KiB and a 1 MiB file,
//!   alternating proxy and direct in rounds.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::json;

use crate::Ctx;
use crate::common::{
    GROUP_LOAD, GROUP_OTHER, GROUP_SERVICE, GROUP_SQLITE, Result, env_count, stats,
};
use crate::load::{self, LoadResult, Target};
use crate::report::{Section, num};
use crate::service::{Sandbox, Service, TINY_CSV, sandbox_of};

const STATUS_TARGET: f64 = 10_000.0;
const PROXY_TARGET: f64 = 0.8;

/// `| … | req/s | latency median / p90 / p99 | errors | CPU µs per request … |`
fn load_row(what: &str, r: &LoadResult) -> String {
    let lat = r.latency();
    format!(
        "| {what} | {} | {} / {} / {} | {} | {} | {} | {} | {} |",
        num(r.per_second()),
        lat.map(|l| num(l.median)).unwrap_or_default(),
        lat.map(|l| num(l.p90)).unwrap_or_default(),
        lat.map(|l| num(l.p99)).unwrap_or_default(),
        r.errors,
        num(r.cpu_us_per_request(GROUP_SERVICE)),
        num(r.cpu_us_per_request(GROUP_SQLITE)),
        num(r.cpu_us_per_request(GROUP_LOAD)),
        num(r.cpu_us_per_request(GROUP_OTHER)),
    )
}

const LOAD_HEADER: &str = "| Route | req/s | latency ms (median / p90 / p99) | errors | \
    service CPU µs/req | SQLite CPU µs/req | client CPU µs/req | other µs/req |\n\
    |---|---:|---:|---:|---:|---:|---:|---:|";

pub async fn status(ctx: &Ctx) -> Result<Section> {
    let clients = env_count("BENCH_CLIENTS", 32)?.max(1);
    let seconds = env_count("BENCH_LOAD_SECONDS", 5)?.max(1);
    let duration = Duration::from_secs(seconds as u64);
    let demo = ctx.svc.demo("files-status", json!({})).await?;
    let sandbox = ctx.svc.sandbox(&demo, "tiny.csv", TINY_CSV).await?;
    let path = format!("/v1/sandboxes/{}", sandbox.id);
    let as_prospect = Target {
        addr: ctx.svc.addr,
        path: path.clone(),
        bearer: Some(sandbox.token.clone()),
    };
    let as_operator = Target {
        bearer: Some(ctx.svc.admin.clone()),
        ..as_prospect.clone()
    };
    let healthz = Target {
        addr: ctx.svc.addr,
        path: "/healthz".to_string(),
        bearer: None,
    };
    // Warm-up: connections, the database's page cache.
    load::run(&ctx.load, &as_prospect, clients, Duration::from_secs(1)).await?;
    let mut results = Vec::new();
    for (what, target) in [
        ("`GET /v1/sandboxes/{id}`, sandbox token", &as_prospect),
        ("`GET /v1/sandboxes/{id}`, operators' token", &as_operator),
        ("`GET /healthz` (reference: no database)", &healthz),
    ] {
        let r = load::run(&ctx.load, target, clients, duration).await?;
        eprintln!(
            "  status: {what}: {:.0} req/s, {} errors",
            r.per_second(),
            r.errors
        );
        results.push((what, r));
    }
    ctx.svc.delete(&sandbox).await?;

    let mut s = Section::new("6a. The status route under load");
    s.line(format!(
        "Method: {clients} concurrent clients, each one keep-alive HTTP/1.1 connection (hyper, \
         no pool) sending GET after GET for {seconds} s per row, after 1 s of warm-up; the \
         clients run in the same process on a runtime of their own (2 threads), so they share \
         the 2 CPUs with the service. CPU per request is from `/proc/self/task/*/stat` over the \
         same {seconds} s, by thread: the service's tokio workers (the HTTP server, handlers, \
         JSON), sqlx's SQLite worker threads (one per pooled connection: the queries), the \
         load generator, and the rest of the bench (idle here).\n"
    ));
    s.line(LOAD_HEADER);
    for (what, r) in &results {
        s.line(load_row(what, r));
    }
    let main = &results[0].1;
    s.verdict(
        "6. status route, requests per second",
        format!("{} req/s", num(main.per_second())),
        &format!("≥ {STATUS_TARGET:.0} req/s"),
        Some(main.per_second() >= STATUS_TARGET),
    );
    Ok(s)
}

/// A sandbox of `demo` holding `small.csv` (1 KiB) and `big.csv` (1 MiB).
async fn two_file_sandbox(svc: &Service, demo: &str, csv: &[u8]) -> Result<Sandbox> {
    let mut small = csv[..1024].to_vec();
    small.truncate(
        small
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(1024, |i| i + 1),
    );
    let form = Form::new()
        .text("demo", demo.to_string())
        .part(
            "file",
            Part::bytes(small)
                .file_name("small.csv")
                .mime_str("text/csv")?,
        )
        .part(
            "file",
            Part::bytes(csv.to_vec())
                .file_name("big.csv")
                .mime_str("text/csv")?,
        );
    sandbox_of(&svc.create_ready(form).await?)
}

pub async fn proxy(ctx: &Ctx) -> Result<Section> {
    let clients = env_count("BENCH_PROXY_CLIENTS", 16)?.max(1);
    let seconds = env_count("BENCH_PROXY_SECONDS", 3)?.max(1);
    let rounds = env_count("BENCH_PROXY_ROUNDS", 3)?.max(1);
    let duration = Duration::from_secs(seconds as u64);
    let demo = ctx.svc.demo("files-proxy", json!({})).await?;
    let sandbox = two_file_sandbox(&ctx.svc, &demo, &ctx.csv).await?;
    let ip = ctx
        .svc
        .container_ip(&sandbox, &ctx.raw.network.name)
        .await?;
    let direct_addr = format!("{ip}:8080").parse()?;

    let mut s = Section::new("6b. The proxy against the container directly");
    s.line(format!(
        "Method: one static-files sandbox holding `small.csv` (1 KiB) and `big.csv` (1 MiB). \
         Proxy: `GET /s/{{id}}/<file>` on the service with the sandbox token as a bearer token. \
         Direct: `GET /<file>` at the container's address on the sandbox network (from `docker \
         inspect`), which the host reaches like the proxy does. {clients} concurrent clients \
         (the load generator of 6a), {rounds} rounds of {seconds} s per side and file, \
         alternating which side goes first. busybox httpd answers every request with \
         `Connection: close`: direct clients connect anew for each request (counted in its \
         latency); proxy clients keep their connection to testdrive, which connects to the \
         container for each request. req/s and MiB/s are the median over rounds; latencies \
         are pooled; CPU per request is over all rounds. Then, for each file, one client \
         alone for {seconds} s per side: its latency is each request's own, which many clients \
         in flight hide.\n"
    ));
    s.line(
        "| File | clients | path | req/s | MiB/s | latency ms (median / p90 / p99) | \
         connections opened by the clients | errors | service CPU µs/req | SQLite CPU µs/req | \
         client CPU µs/req |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    let mut single = Vec::new();
    for file in ["small.csv", "big.csv"] {
        let proxied = Target {
            addr: ctx.svc.addr,
            path: format!("/s/{}/{file}", sandbox.id),
            bearer: Some(sandbox.token.clone()),
        };
        let direct = Target {
            addr: direct_addr,
            path: format!("/{file}"),
            bearer: None,
        };
        load::run(&ctx.load, &proxied, clients, Duration::from_secs(1)).await?;
        let (mut via, mut straight) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let (target, into) = if side == 0 {
                    (&proxied, &mut via)
                } else {
                    (&direct, &mut straight)
                };
                let r = load::run(&ctx.load, target, clients, duration).await?;
                eprintln!(
                    "  proxy {file} round {}: {} {:.0} req/s ({:.1} MiB/s, {} errors)",
                    round + 1,
                    if side == 0 { "proxy " } else { "direct" },
                    r.per_second(),
                    r.mib_per_second(),
                    r.errors
                );
                into.push(r);
            }
        }
        let (p, d) = (summarise(&via), summarise(&straight));
        for (what, sum) in [("proxy", &p), ("direct", &d)] {
            s.line(summary_row(file, clients, what, sum));
        }
        let r = p.rate / d.rate;
        s.verdict(
            &format!("6. proxy throughput / direct, {file} ({clients} clients)"),
            format!("{} / {} req/s = {r:.2}×", num(p.rate), num(d.rate)),
            &format!("≥ {PROXY_TARGET}×"),
            Some(r >= PROXY_TARGET),
        );
        // One client alone shows each request's own latency, which many clients hide.
        let mut alone = Vec::new();
        for target in [&proxied, &direct] {
            let r = load::run(&ctx.load, target, 1, duration).await?;
            alone.push(summarise(std::slice::from_ref(&r)));
        }
        eprintln!(
            "  proxy {file}, 1 client: proxy {:.0} req/s (p90 {:.1} ms) | direct {:.0} req/s \
             (p90 {:.1} ms)",
            alone[0].rate, alone[0].latency.1, alone[1].rate, alone[1].latency.1
        );
        single.push(summary_row(file, 1, "proxy", &alone[0]));
        single.push(summary_row(file, 1, "direct", &alone[1]));
    }
    for row in single {
        s.line(row);
    }
    ctx.svc.delete(&sandbox).await?;
    Ok(s)
}

fn summary_row(file: &str, clients: usize, what: &str, sum: &Summary) -> String {
    format!(
        "| {file} | {clients} | {what} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} |",
        num(sum.rate),
        num(sum.mib),
        num(sum.latency.0),
        num(sum.latency.1),
        num(sum.latency.2),
        sum.connections,
        sum.errors,
        num(sum.cpu_us[0]),
        num(sum.cpu_us[1]),
        num(sum.cpu_us[2]),
    )
}

struct Summary {
    rate: f64,
    mib: f64,
    latency: (f64, f64, f64),
    connections: u64,
    errors: u64,
    /// Service, SQLite, client.
    cpu_us: [f64; 3],
}

fn summarise(runs: &[LoadResult]) -> Summary {
    let median = |f: fn(&LoadResult) -> f64| {
        stats(&runs.iter().map(f).collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
    };
    let latencies: Vec<f64> = runs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
    let lat = stats(&latencies);
    let requests: u64 = runs.iter().map(|r| r.requests).sum::<u64>().max(1);
    let cpu = |group: &str| {
        runs.iter()
            .map(|r| r.cpu.get(group).copied().unwrap_or(0.0))
            .sum::<f64>()
            * 1e6
            / requests as f64
    };
    Summary {
        rate: median(LoadResult::per_second),
        mib: median(LoadResult::mib_per_second),
        latency: lat.map_or((f64::NAN, f64::NAN, f64::NAN), |l| (l.median, l.p90, l.p99)),
        connections: runs.iter().map(|r| r.connections).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        cpu_us: [cpu(GROUP_SERVICE), cpu(GROUP_SQLITE), cpu(GROUP_LOAD)],
    }
}
