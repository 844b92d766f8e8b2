//! testdrive's benchmarks against the real Docker Engine, side by side with what the Engine
//! does without testdrive, in one process run (issues 6 and 16).
//! `cargo bench --bench provision`.
//!
//! Parts, in the order they run (each module's header says exactly what it measures):
//!
//! | part         | issue | module            | what                                          |
//! |--------------|-------|-------------------|-----------------------------------------------|
//! | `cold`       | 1     | `provisioning.rs` | creation with a 1 MB CSV vs `docker create/cp/start` + poll |
//! | `warm`       | 2     | `provisioning.rs` | the same from a warm pool (skipped while `warm_pool` is refused) |
//! | `expiry`     | 3     | `expiry.rs`       | deadline → last object gone, 50 expiries      |
//! | `throughput` | 4     | `throughput.rs`   | sandboxes ready per second at concurrency 1, 4, 16 vs Engine create+start |
//! | `upload`     | 5, 16 | `upload.rs`       | a 1 GiB upload vs `curl -o` of the same bytes, and RSS growth |
//! | `status`     | 6     | `http.rs`         | `GET /v1/sandboxes/{id}` requests per second  |
//! | `proxy`      | 6     | `http.rs`         | `/s/{id}/<file>` vs the container directly    |
//! | `memory`     | 7     | `memory.rs`       | RSS per live sandbox at 200 live              |
//! | `thousand`   | 16    | `thousand.rs`     | 1000 live sandboxes: creation rate, every one through the proxy, memory, teardown |
//!
//! Choose parts by name (`cargo bench --bench provision -- throughput upload`) or with
//! `BENCH_PARTS=throughput,upload`; none named runs all. Aliases: `teardown` for `expiry`,
//! `rss` for `upload`, `live` for `memory`, `1000` for `thousand`. A run of all parts writes
//! its report into `docs/benchmarks.md` (between markers, so the text around them stays); a
//! partial run only prints it, except part `thousand`, whose section has markers of its own
//! and is written whenever the part ran.
//!
//! Environment (defaults in brackets): `BENCH_ITERS` [15] and `BENCH_WARMUP` [1] (cold and
//! warm iterations per side), `BENCH_EXPIRY` [50], `BENCH_CONCURRENCY` [1,4,16],
//! `BENCH_TP_ROUNDS` [3], `BENCH_CLIENTS` [32] and `BENCH_LOAD_SECONDS` [5] (status),
//! `BENCH_PROXY_CLIENTS` [16], `BENCH_PROXY_SECONDS` [3], `BENCH_PROXY_ROUNDS` [3],
//! `BENCH_UPLOAD_MIB` [1024], `BENCH_UPLOAD_ROUNDS` [3] (per side), `BENCH_LIVE` [200],
//! `BENCH_THOUSAND` [1000] (sandboxes of part `thousand`; `max_sandboxes` follows it),
//! `BENCH_THOUSAND_ROUNDS` [3], `BENCH_THOUSAND_CLIENTS` [4], `BENCH_NOTE` (free text for
//! the report, e.g. what else ran on the machine).
//!
//! Layout: `main.rs` starts the service and runs the parts; `service.rs` is the API client,
//! `raw.rs` the raw CLI and Engine paths, `load.rs` an HTTP load generator, `common.rs`
//! statistics and `/proc` readings, `report.rs` the markdown, `cleanup.rs` the bench's
//! network and the removal of everything the bench made (on success, error, panic and
//! Ctrl-C; `docker ps -a --filter label=testdrive.sandbox` shows none of it afterwards).

#[path = "../../tests/support/sample.rs"]
mod sample;
#[path = "../support/mod.rs"]
mod support;

mod cleanup;
mod common;
mod expiry;
mod http;
mod load;
mod memory;
mod provisioning;
mod raw;
mod report;
mod service;
mod thousand;
mod throughput;
mod upload;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use testdrive::config::Config;

use crate::cleanup::{BenchNetwork, Cleanup};
use crate::common::{Result, docker, env_count, nice};
use crate::raw::Raw;
use crate::report::{Load, Run, Section};
use crate::service::{IMAGE, Service};
use crate::support::LoadSampler;

/// What every part gets.
pub struct Ctx {
    pub svc: Service,
    pub raw: Raw,
    /// The service's deployment id (`testdrive.instance` on its objects).
    pub instance: String,
    /// The 1 MB CSV of the cold and warm parts.
    pub csv: Vec<u8>,
    /// The service's data directory (`<data_dir>/sandboxes/<id>/` holds each sandbox's
    /// upload and data): part `upload` writes its `curl -o` file beside it.
    pub data_dir: std::path::PathBuf,
    /// The load generator's runtime.
    pub load: tokio::runtime::Handle,
    pub max_sandboxes: u32,
    pub max_upload_bytes: u64,
    /// The host's `gc_thresh1/2/3` before the service started (which may raise them).
    pub neighbours_before: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Cold,
    Warm,
    Expiry,
    Throughput,
    Status,
    Proxy,
    Upload,
    Memory,
    Thousand,
}

impl Part {
    const ALL: [Part; 9] = [
        Part::Cold,
        Part::Warm,
        Part::Expiry,
        Part::Throughput,
        Part::Upload,
        Part::Status,
        Part::Proxy,
        Part::Memory,
        Part::Thousand,
    ];

    fn name(self) -> &'static str {
        match self {
            Part::Cold => "cold",
            Part::Warm => "warm",
            Part::Expiry => "expiry",
            Part::Throughput => "throughput",
            Part::Status => "status",
            Part::Proxy => "proxy",
            Part::Upload => "upload",
            Part::Memory => "memory",
            Part::Thousand => "thousand",
        }
    }

    fn parse(word: &str) -> Option<Part> {
        let word = word.to_ascii_lowercase();
        let alias = match word.as_str() {
            "teardown" | "lag" => "expiry",
            "rss" => "upload",
            "live" => "memory",
            "1000" => "thousand",
            other => other,
        };
        Part::ALL.into_iter().find(|p| p.name() == alias)
    }

    async fn run(self, ctx: &Ctx) -> Result<Section> {
        match self {
            Part::Cold => provisioning::cold(ctx).await,
            Part::Warm => provisioning::warm(ctx).await,
            Part::Expiry => expiry::run(ctx).await,
            Part::Throughput => throughput::run(ctx).await,
            Part::Status => http::status(ctx).await,
            Part::Proxy => http::proxy(ctx).await,
            Part::Upload => upload::run(ctx).await,
            Part::Memory => memory::run(ctx).await,
            Part::Thousand => thousand::run(ctx).await,
        }
    }
}

/// The parts named on the command line (cargo adds `--bench`, ignored) or in `BENCH_PARTS`;
/// all when none is named.
fn selected_parts() -> Result<Vec<Part>> {
    let mut words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Ok(env) = std::env::var("BENCH_PARTS") {
        words.extend(
            env.split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(str::to_string),
        );
    }
    if words.iter().any(|w| w == "all") {
        return Ok(Part::ALL.to_vec());
    }
    let mut chosen = Vec::new();
    for word in &words {
        let part = Part::parse(word).ok_or_else(|| {
            format!(
                "unknown part {word:?}; the parts are {} (or all)",
                Part::ALL.map(Part::name).join(", ")
            )
        })?;
        chosen.push(part);
    }
    if chosen.is_empty() {
        return Ok(Part::ALL.to_vec());
    }
    Ok(Part::ALL
        .into_iter()
        .filter(|p| chosen.contains(p))
        .collect())
}

/// Places for the parts chosen: 250 (part `memory` holds 200), or part `thousand`'s
/// sandboxes and 10 more; no more than the bench's network has addresses for beside the
/// raw containers'.
fn max_sandboxes(parts: &[Part], network: &BenchNetwork) -> Result<u32> {
    let mut places = 250;
    if parts.contains(&Part::Thousand) {
        places = places.max(env_count("BENCH_THOUSAND", 1000)? as u32 + 10);
    }
    if places + raw::RAW_SLOTS > network.slots() {
        return Err(format!(
            "{places} sandboxes and {} raw containers need more addresses than the bench's \
             network {} has ({})",
            raw::RAW_SLOTS,
            network.subnet,
            network.slots()
        )
        .into());
    }
    Ok(places)
}

async fn start_service(
    network: &BenchNetwork,
    data_dir: std::path::PathBuf,
    parts: &[Part],
) -> Result<(testdrive::app::Running, Config)> {
    let mut config = Config::defaults();
    config.data_dir = data_dir;
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_token = Some(format!("bench-admin-{}", uuid::Uuid::new_v4().simple()));
    // Every creation comes from this one address: lift the per-client limit.
    config.rate_limit.burst = 1_000_000;
    // Part `memory` keeps 200 sandboxes live (the default allows 50), part `thousand` 1000.
    config.max_sandboxes = max_sandboxes(parts, network)?;
    // ... and from one address, at 16 in flight (throughput): no share of places per client.
    config.rate_limit.max_share_percent = 100;
    config.intake.max_uploads_per_client = 1_000;
    config.server.max_connections_per_client = 100_000;
    config.sandbox.network = network.name.clone();
    config.sandbox.bridge = network.bridge.clone();
    config.sandbox.subnet = network.subnet.clone();
    let running = testdrive::app::start(config.clone()).await?;
    Ok((running, config))
}

async fn run(
    cleanup: &Cleanup,
    parts: &[Part],
    load: tokio::runtime::Handle,
    began: Instant,
) -> Result<bool> {
    docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .await
        .map_err(|_| format!("the image {IMAGE} is missing: run sandbox-images/build first"))?;
    let machine = report::machine();
    let date = time::OffsetDateTime::now_utc().format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
    ))?;
    let load_sampler = LoadSampler::start()?;

    let dir = tempfile::tempdir()?;
    let csv = sample::csv_of_size(1 << 20);
    let csv_path = dir.path().join("sales.csv");
    std::fs::write(&csv_path, &csv)?;
    let csv_path = csv_path
        .to_str()
        .ok_or("a non-UTF-8 temporary path")?
        .to_string();

    let neighbours_before = thousand::neighbour_limits();
    // A /21 (2045 addresses) when part `thousand` runs: its sandboxes and the raw
    // containers (the top 400 addresses) must not meet.
    let prefix = if parts.contains(&Part::Thousand) {
        21
    } else {
        22
    };
    let network = tokio::task::block_in_place(|| cleanup.create_network(prefix))?;
    let data_dir = dir.path().join("data");
    let (running, config) = start_service(&network, data_dir.clone(), parts).await?;
    let instance = running.state.store.instance_id().await?;
    cleanup.watch_instance(&instance);
    let addr: SocketAddr = running.addr;
    let admin = config.admin_token.clone().unwrap_or_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?;
    let vendor_key = Service::new_vendor(&http, addr, &admin).await?;
    let ctx = Ctx {
        svc: Service {
            http,
            addr,
            admin,
            vendor_key,
        },
        raw: Raw::new(network.clone(), csv_path).await?,
        instance: instance.clone(),
        csv,
        data_dir,
        load,
        max_sandboxes: config.max_sandboxes,
        max_upload_bytes: config.policy.max_upload_bytes,
        neighbours_before,
    };
    eprintln!(
        "provision bench: service on {addr}, network {} ({}), parts: {}",
        network.name,
        network.subnet,
        parts
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut sections = Vec::new();
    let mut all_ok = true;
    for part in parts {
        let started = Instant::now();
        eprintln!("== {} ==", part.name());
        match part.run(&ctx).await {
            Ok(section) => sections.push((*part, section)),
            Err(err) => {
                all_ok = false;
                eprintln!("   {} FAILED: {err}", part.name());
                let mut s = Section::new(&format!("{} (failed)", part.name()));
                s.line(format!("This part failed: {err}"));
                s.verdict(part.name(), format!("failed: {err}"), "", None);
                sections.push((*part, s));
            }
        }
        eprintln!(
            "   {} took {:.0} s",
            part.name(),
            started.elapsed().as_secs_f64()
        );
    }

    running.stop().await;
    // Remove everything now, and say in the report whether anything is left.
    let leftovers = tokio::task::block_in_place(|| {
        cleanup.sweep();
        cleanup.leftovers()
    });
    let others_end = common::shell_lines("docker", &["ps", "-q"]).len();
    let load = Load {
        nice: nice(),
        samples: load_sampler.finish(),
        others_running_end: others_end,
        note: std::env::var("BENCH_NOTE")
            .ok()
            .filter(|n| !n.trim().is_empty()),
    };
    let full = parts.len() == Part::ALL.len();
    // Part `thousand` has a block of its own in docs/benchmarks.md.
    let (thousand, sections): (Vec<_>, Vec<_>) = sections
        .into_iter()
        .partition(|(p, _)| *p == Part::Thousand);
    let names = |parts: &[Part]| {
        parts
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let took_s = began.elapsed().as_secs_f64();
    let mut texts = Vec::new();
    if !sections.is_empty() {
        let main_parts: Vec<Part> = parts
            .iter()
            .copied()
            .filter(|p| *p != Part::Thousand)
            .collect();
        let text = report::render(&Run {
            date: date.clone(),
            title: "Provisioning, teardown, throughput, memory and HTTP",
            targets: "Targets (issues 6 and 16)",
            parts: if full {
                "all".to_string()
            } else {
                names(&main_parts)
            },
            took_s,
            max_sandboxes: config.max_sandboxes,
            network: &network.subnet,
            machine: &machine,
            load: &load,
            sections: &sections.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        });
        texts.push((report::MAIN, text, full));
    }
    if !thousand.is_empty() {
        let text = report::render(&Run {
            date,
            title: "1000 live sandboxes",
            targets: "Target (issue 16, items 3 and 4)",
            parts: names(parts),
            took_s,
            max_sandboxes: config.max_sandboxes,
            network: &network.subnet,
            machine: &machine,
            load: &load,
            sections: &thousand.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        });
        texts.push((report::THOUSAND, text, true));
    }
    let end = if leftovers.is_empty() {
        "After the run, nothing the bench made was left on the Engine (checked: containers and \
         volumes by label, the network).\n"
            .to_string()
    } else {
        all_ok = false;
        format!(
            "**Left on the Engine after the run:** {}.\n",
            leftovers.join(", ")
        )
    };
    for (markers, mut text, write) in texts {
        text.push_str(&end);
        println!("{text}");
        if write {
            let path = report::write_doc(markers, &text)?;
            eprintln!("provision bench: wrote {} ({})", path.display(), markers.0);
        } else {
            eprintln!(
                "provision bench: a partial run; its block of docs/benchmarks.md is unchanged"
            );
        }
    }
    eprintln!(
        "provision bench: {:.0} s in all",
        began.elapsed().as_secs_f64()
    );
    Ok(all_ok)
}

fn main() -> ExitCode {
    let began = Instant::now();
    let parts = match selected_parts() {
        Ok(parts) => parts,
        Err(err) => {
            eprintln!("provision bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Declared first so it drops last: after both runtimes, whatever happened.
    let cleanup = Cleanup::default();
    cleanup::sweep_stale();
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .thread_name(common::SERVICE_THREADS)
        .enable_all()
        .build()
        .and_then(|main| {
            let load = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-load")
                .enable_all()
                .build()?;
            Ok((main, load))
        });
    let (runtime, load_runtime) = match runtimes {
        Ok(rts) => rts,
        Err(err) => {
            eprintln!("provision bench: no runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let load = load_runtime.handle().clone();
    // Ctrl-C ends the run through the same cleanup as an error.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&cleanup, &parts, load, began) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    drop(load_runtime);
    drop(runtime);
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("provision bench: a part failed or something was left (see above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("provision bench failed: {err}");
            ExitCode::FAILURE
        }
    }
}
