//! Proxy activity (requests, last use) counted in memory and written to the database in
//! batches, so opening a sandbox costs no database write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::Lifecycle;
use crate::domain::Usage;
use crate::domain::{SandboxId, Timestamp};

#[derive(Default)]
pub struct Activity {
    pending: Mutex<HashMap<SandboxId, Usage>>,
}

impl Activity {
    pub fn record(&self, sandbox: SandboxId, at: Timestamp) {
        let mut pending = self.pending.lock().expect("activity lock");
        let usage = pending.entry(sandbox).or_insert(Usage {
            sandbox,
            requests: 0,
            first_active_at: at,
            last_active_at: at,
        });
        usage.requests += 1;
        usage.first_active_at = usage.first_active_at.min(at);
        usage.last_active_at = usage.last_active_at.max(at);
    }

    pub fn pending(&self, sandbox: SandboxId) -> Option<Usage> {
        self.pending
            .lock()
            .expect("activity lock")
            .get(&sandbox)
            .copied()
    }

    fn drain(&self) -> Vec<Usage> {
        self.pending
            .lock()
            .expect("activity lock")
            .drain()
            .map(|(_, u)| u)
            .collect()
    }

    fn restore(&self, batch: Vec<Usage>) {
        let mut pending = self.pending.lock().expect("activity lock");
        for usage in batch {
            let entry = pending.entry(usage.sandbox).or_insert(Usage {
                requests: 0,
                ..usage
            });
            entry.requests += usage.requests;
            entry.last_active_at = entry.last_active_at.max(usage.last_active_at);
        }
    }
}

pub(super) async fn flush(lifecycle: &Lifecycle) {
    let batch = lifecycle.activity().drain();
    if batch.is_empty() {
        return;
    }
    if let Err(err) = lifecycle.store().add_usage(&batch).await {
        tracing::warn!(%err, "could not write proxy activity; keeping it for the next flush");
        lifecycle.activity().restore(batch);
    }
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(lifecycle.settings().flush_every);
    loop {
        tokio::select! {
            _ = every.tick() => flush(&lifecycle).await,
            _ = shutdown.cancelled() => break,
        }
    }
    flush(&lifecycle).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_accumulates_until_drained() {
        let activity = Activity::default();
        let id = SandboxId::new();
        activity.record(id, Timestamp::from_millis(5));
        activity.record(id, Timestamp::from_millis(3));
        let usage = activity.pending(id).unwrap();
        assert_eq!(usage.requests, 2);
        assert_eq!(usage.last_active_at, Timestamp::from_millis(5));
        let batch = activity.drain();
        assert!(activity.pending(id).is_none());
        activity.record(id, Timestamp::from_millis(9));
        activity.restore(batch);
        assert_eq!(activity.pending(id).unwrap().requests, 3);
        assert_eq!(
            activity.pending(id).unwrap().last_active_at,
            Timestamp::from_millis(9)
        );
    }
}
