//! Part `upload` (issue item 5): a 1 GiB upload, and how much the process's resident memory
//! grows while the service spools it and streams it into the sandbox.
//!
//! The body is generated as it is sent (the same 256 KiB block of CSV rows, over and over,
//! as reference-counted `Bytes`: nothing of the size of the upload is ever in memory on the
//! client side). `VmRSS` is sampled every 10 ms in a background thread from just before the
//! request until the sandbox is ready; growth = peak − baseline, where the baseline is taken
//! after giving free heap memory back to the system (`malloc_trim`) and a 1 s pause. `VmHWM`
//! (reset just before) confirms the peak between samples.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::json;

use crate::Ctx;
use crate::common::{
    Result, RssSampler, env_count, hwm_kib, mib, ms, reset_hwm, rss_kib, trim_heap, unix_ms,
};
use crate::report::{Section, num};
use crate::service::{Service, sandbox_of};

const TARGET_MIB: f64 = 32.0;
const BLOCK: usize = 256 * 1024;

/// `total` bytes of CSV rows, as a stream of shared 256 KiB blocks (the last one cut short).
fn generated_body(total: u64) -> reqwest::Body {
    let block = Bytes::from(crate::sample::csv_of_size(BLOCK)[..BLOCK].to_vec());
    let chunks = total.div_ceil(BLOCK as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let left = total - i * BLOCK as u64;
        let chunk = if left >= BLOCK as u64 {
            block.clone()
        } else {
            block.slice(..left as usize)
        };
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let size_mib = env_count("BENCH_UPLOAD_MIB", 1024)?.max(1) as u64;
    let size = size_mib << 20;
    if size > ctx.max_upload_bytes {
        return Err(format!(
            "policy.max_upload_bytes ({}) is below the upload ({size})",
            ctx.max_upload_bytes
        )
        .into());
    }
    let demo = ctx
        .svc
        .demo(
            "files-big",
            json!({"upload": {"extensions": ["csv"], "max_bytes": size + (1 << 20)}}),
        )
        .await?;
    // A client of its own: the whole request may take minutes.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1800))
        .build()?;

    trim_heap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib();
    let hwm_reset = reset_hwm();
    let sampler = RssSampler::start(Duration::from_millis(10))?;
    let sent_wall = unix_ms(SystemTime::now());
    let sent = Instant::now();
    let form = Form::new().text("demo", demo.clone()).part(
        "file",
        Part::stream_with_length(generated_body(size), size)
            .file_name("big.csv")
            .mime_str("text/csv")?,
    );
    let outcome = async {
        let res = http
            .post(ctx.svc.url("/v1/sandboxes?wait=120"))
            .multipart(form)
            .send()
            .await?;
        let body = Service::json(res, StatusCode::CREATED, "creating the big sandbox").await?;
        let sandbox = sandbox_of(&body)?;
        // `wait` is capped by the service (max_wait_seconds): poll if it was not enough.
        let mut status = body["status"].as_str().unwrap_or_default().to_string();
        while status == "provisioning" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = ctx
                .svc
                .get(&format!("/v1/sandboxes/{}", sandbox.id), &sandbox.token)
                .await?;
            status = now["status"].as_str().unwrap_or_default().to_string();
        }
        if status != "ready" {
            return Err(format!("the big sandbox ended up {status}").into());
        }
        Ok::<_, crate::common::BoxError>(sandbox)
    }
    .await;
    let took = sent.elapsed();
    let samples = sampler.finish();
    let hwm = hwm_kib();
    let sandbox = outcome?;

    let events = ctx.svc.events(&sandbox).await?;
    let at = |kind: &str| events.iter().find(|e| e.0 == kind).map(|e| e.1);
    let started = Instant::now();
    ctx.svc.delete(&sandbox).await?;
    let delete = started.elapsed();

    let peak_in = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(baseline)
    };
    let end_wall = sent_wall + ms(took);
    let peak = peak_in(f64::MIN, f64::MAX);
    let growth = mib(peak.saturating_sub(baseline));
    eprintln!(
        "  upload: {size_mib} MiB in {:.1} s; RSS baseline {:.1} MiB, peak {:.1} MiB (+{growth:.1} \
         MiB), VmHWM {:.1} MiB",
        took.as_secs_f64(),
        mib(baseline),
        mib(peak),
        mib(hwm)
    );

    let label = if size_mib == 1024 {
        "1 GiB".to_string()
    } else {
        format!("{size_mib} MiB")
    };
    let mut s = Section::new(&format!("5. A {label} upload: memory"));
    s.line(format!(
        "Method: one `POST /v1/sandboxes?wait=120` of a {size_mib} MiB CSV (multipart; reqwest \
         `Body::wrap_stream` over a generator that repeats one shared 256 KiB block, so the \
         client holds no copy of the upload) to a demo with `upload.max_bytes` of {size_mib} \
         MiB + 1 MiB (the service's `policy.max_upload_bytes` is {} MiB), until the sandbox is \
         `ready` (the file spooled to disk, then streamed as a tar archive into the sandbox's \
         volume). The service and the client are this process: `VmRSS` from \
         `/proc/self/status` sampled every 10 ms by a background thread ({} samples); the \
         baseline is taken after `malloc_trim(0)` and 1 s of quiet, and `VmHWM` was reset \
         just before ({}). Stretches come from the sandbox's event log.\n",
        ctx.max_upload_bytes >> 20,
        samples.len(),
        if hwm_reset {
            "`echo 5 > /proc/self/clear_refs`"
        } else {
            "the reset failed, so VmHWM is the peak since the start"
        }
    ));
    s.line("| Stretch | seconds | MiB/s | peak RSS MiB | growth over baseline MiB |");
    s.line("|---|---:|---:|---:|---:|");
    let stretches = [
        (
            "request sent → created (upload, spooled to disk, hashed)",
            Some(sent_wall),
            at("created"),
        ),
        (
            "created → data_placed (create + tar stream into the volume)",
            at("created"),
            at("data_placed"),
        ),
        (
            "data_placed → ready (start, probe)",
            at("data_placed"),
            at("ready"),
        ),
        (
            "whole request, until ready",
            Some(sent_wall),
            Some(end_wall),
        ),
    ];
    for (what, from, to) in stretches {
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        let secs = (to - from) / 1000.0;
        let moves_data = !what.starts_with("data_placed");
        let p = peak_in(from, to);
        s.line(format!(
            "| {what} | {} | {} | {} | {} |",
            num(secs),
            if moves_data {
                num(size_mib as f64 / secs)
            } else {
                "—".to_string()
            },
            num(mib(p)),
            num(mib(p.saturating_sub(baseline)))
        ));
    }
    s.line(format!(
        "\nBaseline RSS {} MiB; peak of the samples {} MiB; `VmHWM` after the request {} MiB \
         (+{} MiB). `DELETE` of the sandbox afterwards: {} ms.",
        num(mib(baseline)),
        num(mib(peak)),
        num(mib(hwm)),
        num(mib(hwm.saturating_sub(baseline))),
        num(ms(delete))
    ));
    let worst = growth.max(mib(hwm.saturating_sub(baseline)));
    s.verdict(
        &format!("5. RSS growth during a {label} upload"),
        format!(
            "+{} MiB (sampled peak; VmHWM +{} MiB)",
            num(growth),
            num(mib(hwm.saturating_sub(baseline)))
        ),
        &format!("< {TARGET_MIB:.0} MiB"),
        Some(worst < TARGET_MIB),
    );
    Ok(s)
}
