//! Part `expiry` (issue item 3): the teardown lag of expiring sandboxes, from the record:
//! `data_deleted_at − expires_at`, i.e. from the deadline to the last object gone.
//!
//! Sandboxes (a tiny CSV) of a demo with `trial.seconds = 2`, one at a time; each is polled
//! every 50 ms until `data_deleted_at` is set.

use std::time::Duration;

use serde_json::json;

use crate::Ctx;
use crate::common::{Result, env_count, rfc3339_ms, stats};
use crate::report::{Section, num};
use crate::service::{TINY_CSV, wait_deleted};

const TARGET_P99_MS: f64 = 1000.0;

pub async fn run(ctx: &Ctx) -> Result<Section> {
    let n = env_count("BENCH_EXPIRY", 50)?.max(1);
    let demo = ctx
        .svc
        .demo(
            "expiring",
            json!({"trial": {"seconds": 2, "max_seconds": 10}}),
        )
        .await?;
    let (mut lag, mut noticed, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let sandbox = ctx.svc.sandbox(&demo, "tiny.csv", TINY_CSV).await?;
        let ended = wait_deleted(&ctx.svc, &sandbox, Duration::from_secs(30)).await?;
        if ended["end_reason"] != "expired" {
            return Err(format!("ended otherwise than by expiry: {ended}").into());
        }
        let expires = rfc3339_ms(&ended["expires_at"])?;
        let ended_at = rfc3339_ms(&ended["ended_at"])?;
        let deleted = rfc3339_ms(&ended["data_deleted_at"])?;
        lag.push(deleted - expires);
        noticed.push(ended_at - expires);
        teardown.push(deleted - ended_at);
        eprintln!(
            "  expiry {:>2}/{n}: lag {:>4.0} ms (scheduler {:.0}, teardown {:.0})",
            i + 1,
            deleted - expires,
            ended_at - expires,
            deleted - ended_at
        );
    }

    let mut s = Section::new("3. Expiry: teardown lag");
    s.line(format!(
        "Method: {n} sandboxes (a tiny CSV) of a demo with `trial.seconds = 2`, one at a time; \
         each is polled every 50 ms until `data_deleted_at` is set; the lag is \
         `data_deleted_at − expires_at` from the record (the deadline to the last object \
         gone), split at `ended_at`.\n"
    ));
    s.stats_header("Stretch (ms)");
    s.stats_row("`expires_at` → `ended_at` (scheduler)", &noticed);
    s.stats_row("`ended_at` → `data_deleted_at` (teardown)", &teardown);
    s.stats_row("`expires_at` → `data_deleted_at` (lag)", &lag);
    if let Some(st) = stats(&lag) {
        s.verdict(
            "3. teardown lag after the deadline (p99)",
            format!("{} ms (median {} ms)", num(st.p99), num(st.median)),
            &format!("p99 ≤ {TARGET_P99_MS:.0} ms"),
            Some(st.p99 <= TARGET_P99_MS),
        );
    }
    Ok(s)
}
