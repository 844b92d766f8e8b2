//! Watching the Engine: a ping every two seconds keeps `Engine::is_healthy` current (so
//! creation answers 503 at once during an outage instead of failing sandboxes), and when the
//! Engine comes back the reconciler runs at once, so teardowns that fell due meanwhile happen
//! — and containers an Engine restart stopped are found — without waiting for its next round
//! or a restart. Both moments are events of the deployment (`engine_unreachable`,
//! `engine_back` with how long the pings went unanswered) for the ops console.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Lifecycle;
use crate::domain::ServiceEvent;

const EVERY: Duration = Duration::from_secs(2);

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let engine = lifecycle.engine();
    let mut was_up = engine.is_healthy();
    // Since when the pings go unanswered (the start, if the Engine was down then).
    let mut down_since = None;
    if !was_up {
        down_since = Some(Instant::now());
        lifecycle.note(ServiceEvent::EngineUnreachable).await;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let up = matches!(tokio::time::timeout(EVERY, engine.ping()).await, Ok(Ok(())));
        if !up {
            engine.mark_unhealthy();
        }
        metrics::gauge!("testdrive_engine_up").set(if up { 1.0 } else { 0.0 });
        match (was_up, up) {
            (false, true) => {
                tracing::info!("the Docker Engine answers again; reconciling now");
                lifecycle.inner.wakeups.reconcile.notify_one();
                let after_ms = down_since.take().map_or(0, |t| t.elapsed().as_millis());
                let after_ms = u64::try_from(after_ms).unwrap_or(u64::MAX);
                lifecycle.note(ServiceEvent::EngineBack { after_ms }).await;
            }
            (true, false) => {
                down_since = Some(Instant::now());
                lifecycle.note(ServiceEvent::EngineUnreachable).await;
            }
            _ => {}
        }
        was_up = up;
    }
}
