//! Part `throughput` (issue item 4): sandboxes ready per second at concurrency 1, 4 and 16,
//! against the Engine's own create + start at the same concurrency.
//!
//! At each concurrency `c`, a round makes `max(8, 2c)` sandboxes with `c` requests in flight
//! at any moment: testdrive's `POST /v1/sandboxes?wait=60` (a tiny CSV) until `ready` (its
//! container made and started while the upload streams in, then the file renamed into the
//! bind-mounted data directory), and the Engine's create + start through its API (bollard:
//! the same hardened container body, with a volume, on the same network; no file, no
//! readiness check). Rate = count / wall time from the first request to the last answer.
//! The sides alternate which goes first from round to round; everything a round made is
//! removed (untimed) before the next. After each testdrive round the sandboxes' event logs
//! say where the time went.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use crate::Ctx;
use crate::common::{Result, env_count, env_counts, ms, now_ms, stats};
use crate::report::{Section, num};
use crate::service::{Sandbox, TINY_CSV, event_stretches};

/// Issue 6's target for every concurrency: testdrive's rate / the Engine's.
const TARGET: f64 = 0.8;
/// Issue 16's, tighter, at concurrency 16.
const TARGET_AT_16: f64 = 0.95;

/// The target at concurrency `c`, and the issue it comes from.
fn target(c: usize) -> (f64, &'static str) {
    if c == 16 {
        (TARGET_AT_16, " (issue 16)")
    } else {
        (TARGET, "")
    }
}

/// One round of one side.
#[derive(Default)]
struct Round {
    /// Sandboxes (or containers) per second.
    rate: f64,
    /// Each creation's time, ms.
    latencies: Vec<f64>,
    /// (stretch, ms) of every creation: event-log stretches, or create and start.
    stretches: Vec<(String, f64)>,
}

/// Runs `count` jobs with `concurrency` in flight: (wall ms, [(sent at Unix ms, latency ms,
/// outcome)]).
async fn in_flight<T, F, Fut>(
    concurrency: usize,
    count: usize,
    job: F,
) -> (f64, Vec<(f64, f64, Result<T>)>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let results = futures_util::stream::iter(0..count)
        .map(|_| {
            let work = job();
            async move {
                let sent = now_ms();
                let t = Instant::now();
                let out = work.await;
                (sent, ms(t.elapsed()), out)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    (ms(started.elapsed()), results)
}

async fn testdrive_round(ctx: &Ctx, demo: &str, concurrency: usize, count: usize) -> Result<Round> {
    let (wall, results) = in_flight(concurrency, count, || {
        ctx.svc.sandbox(demo, "tiny.csv", TINY_CSV)
    })
    .await;
    let mut round = Round {
        rate: count as f64 / (wall / 1000.0),
        ..Round::default()
    };
    let mut made: Vec<Sandbox> = Vec::new();
    let mut failure = None;
    for (sent, latency, outcome) in results {
        match outcome {
            Ok(sandbox) => {
                // Untimed: where this creation's time went.
                match event_stretches(&ctx.svc, &sandbox, sent, sent + latency).await {
                    Ok(log) => round.stretches.extend(log.stretches),
                    Err(e) => failure = Some(e),
                }
                made.push(sandbox);
                round.latencies.push(latency);
            }
            Err(e) => failure = Some(e),
        }
    }
    ctx.svc.delete_all(&made, 4).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(round),
    }
}

async fn engine_round(ctx: &Ctx, concurrency: usize, count: usize) -> Result<Round> {
    let (wall, results) = in_flight(concurrency, count, || ctx.raw.engine_create_start()).await;
    let mut round = Round {
        rate: count as f64 / (wall / 1000.0),
        ..Round::default()
    };
    let mut made = Vec::new();
    let mut failure = None;
    for (_, latency, outcome) in results {
        match outcome {
            Ok((id, create, start)) => {
                made.push(id);
                round.latencies.push(latency);
                round.stretches.push(("create".to_string(), create));
                round.stretches.push(("start".to_string(), start));
            }
            Err(e) => failure = Some(e),
        }
    }
    ctx.raw.engine_remove_all(&made, 4).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(round),
    }
}

/// Median ms of one stretch over all creations of all rounds.
fn stretch_median(rounds: &[Round], label: &str) -> String {
    let values: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.stretches.iter().filter(|(l, _)| l == label).map(|x| x.1))
        .collect();
    stats(&values).map_or("—".to_string(), |s| num(s.median))
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let levels = env_counts("BENCH_CONCURRENCY", &[1, 4, 16])?;
    let rounds = env_count("BENCH_TP_ROUNDS", 3)?.max(1);
    let demo = ctx.svc.demo("files-throughput", json!({})).await?;
    let mut s = Section::new("4. Throughput: sandboxes ready per second");
    s.line(format!(
        "Method: at each concurrency c, {rounds} rounds per side of max(8, 2c) sandboxes with c \
         requests in flight. testdrive: `POST /v1/sandboxes?wait=60` with a tiny CSV until \
         `ready` (so: the record, `create_container`, the data directory handed to the demo's \
         user (looked up once a minute per image), `start_container`, all while the upload streams \
         into the sandbox's upload directory; then the rename into the bind-mounted data \
         directory, the readiness probe, records). Engine: \
         `create_container` + `start_container` through bollard with the same hardened body \
         (volume at /data, limits, network, address), no file and no readiness check, which is \
         the Engine's plain create + start. Rate = count / wall time of the round; the sides \
         alternate which goes first; each round's objects are removed, untimed, before the \
         next. Latency is one creation's time, pooled over the rounds.\n"
    ));
    s.line(
        "| c | n per round | testdrive /s (median; min–max) | Engine create+start /s (median; \
         min–max) | ratio of medians | testdrive latency ms (median / p90) | Engine latency ms \
         (median / p90) |\n|---:|---:|---:|---:|---:|---:|---:|",
    );
    let mut breakdown = Vec::new();
    for &c in &levels {
        let count = (2 * c).max(8);
        let (mut ours, mut engine) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let r = testdrive_round(ctx, &demo, c, count).await?;
                    eprintln!(
                        "  throughput c={c:>2} round {}: testdrive {:.2}/s",
                        round + 1,
                        r.rate
                    );
                    ours.push(r);
                } else {
                    let r = engine_round(ctx, c, count).await?;
                    eprintln!(
                        "  throughput c={c:>2} round {}: Engine    {:.2}/s",
                        round + 1,
                        r.rate
                    );
                    engine.push(r);
                }
            }
        }
        let rate = |rs: &[Round]| stats(&rs.iter().map(|r| r.rate).collect::<Vec<_>>());
        let lat = |rs: &[Round]| {
            stats(
                &rs.iter()
                    .flat_map(|r| r.latencies.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let (Some(a), Some(b), Some(la), Some(lb)) =
            (rate(&ours), rate(&engine), lat(&ours), lat(&engine))
        else {
            continue;
        };
        let r = a.median / b.median;
        s.line(format!(
            "| {c} | {count} | {} ({}–{}) | {} ({}–{}) | **{r:.2}×** | {} / {} | {} / {} |",
            num(a.median),
            num(a.min),
            num(a.max),
            num(b.median),
            num(b.min),
            num(b.max),
            num(la.median),
            num(la.p90),
            num(lb.median),
            num(lb.p90)
        ));
        let (goal, issue) = target(c);
        s.verdict(
            &format!("4. throughput at concurrency {c} / Engine's create+start (median){issue}"),
            format!("{} / {} per s = {r:.2}×", num(a.median), num(b.median)),
            &format!("≥ {goal:.2}×"),
            Some(r >= goal),
        );
        breakdown.push(format!(
            "| {c} | {} | {} | {} | {} | {} | {} | {} |",
            stretch_median(&ours, "request sent → created"),
            stretch_median(&ours, "created → data_placed"),
            stretch_median(&ours, "data_placed → started"),
            stretch_median(&ours, "started → ready"),
            stretch_median(&ours, "ready → response received"),
            stretch_median(&engine, "create"),
            stretch_median(&engine, "start"),
        ));
    }
    s.line(
        "\nWhere one creation's time goes at each concurrency (median ms over all creations; \
         testdrive's from its event log):\n",
    );
    s.line(
        "| c | testdrive: request → created (upload into the upload directory, hashed and \
         profiled, while the container is made) | created → data_placed (the rest of \
         `create_container` + `start_container`, renaming the file into place) | data_placed → \
         started (an event) | started → ready (probe, record) | ready → answer | Engine: create \
         | Engine: start |\n|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for line in breakdown {
        s.line(line);
    }
    Ok(s)
}
