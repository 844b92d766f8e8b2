//! Watching the Engine: a ping every two seconds keeps `Engine::is_healthy` current (so
//! creation answers 503 at once during an outage instead of failing sandboxes), and when the
//! Engine comes back the reconciler runs at once, so teardowns that fell due meanwhile happen
//! without waiting for its next round or a restart.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Lifecycle;

const EVERY: Duration = Duration::from_secs(2);

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let engine = lifecycle.engine();
    let mut was_up = engine.is_healthy();
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
            }
            (true, false) => tracing::warn!("the Docker Engine does not answer"),
            _ => {}
        }
        was_up = up;
    }
}
