//! The scheduler: one loop per kind of due moment, over a `Timetable` in the database. For
//! trial windows, the moments are deadlines (`Store::end_due`); for sleep, the moments a
//! ready sandbox falls idle (`Store::sleep_due`). The loop sleeps until the earliest moment
//! (one indexed query), claims everything due in one conditional update, and is woken early
//! whenever a moment is added or moved. No row is polled on a timer, and two schedulers
//! sharing a database cannot claim the same sandbox twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{SandboxId, Timestamp};
use crate::store::Store;

/// Even with nothing due, look again this often: another instance sharing the database may
/// have added a deadline this one was not told about.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);
/// After a database error, wait this long before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// The two questions the scheduler asks of the database.
#[async_trait]
pub trait Timetable: Send + Sync + 'static {
    /// Claims every sandbox due at `now` (ends it, or puts it to sleep), returning their ids.
    async fn claim_due(&self, now: Timestamp) -> crate::store::Result<Vec<SandboxId>>;
    /// The earliest moment still to come.
    async fn next_due(&self) -> crate::store::Result<Option<Timestamp>>;
}

/// Trial windows: the deadlines.
pub struct TrialDeadlines(pub Arc<dyn Store>);

#[async_trait]
impl Timetable for TrialDeadlines {
    async fn claim_due(&self, now: Timestamp) -> crate::store::Result<Vec<SandboxId>> {
        self.0.end_due(now).await
    }

    async fn next_due(&self) -> crate::store::Result<Option<Timestamp>> {
        self.0.next_deadline().await
    }
}

pub struct Scheduler<B> {
    book: B,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl<B: Timetable> Scheduler<B> {
    pub fn new(book: B, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Self {
        Scheduler { book, clock, wake }
    }

    /// Calls `on_due` once for every sandbox whose moment comes, until `shutdown`.
    pub async fn run(self, on_due: impl Fn(SandboxId), shutdown: CancellationToken) {
        loop {
            let pause = match self.tick(&on_due).await {
                Ok(pause) => pause,
                Err(err) => {
                    tracing::warn!(%err, "the scheduler cannot read the database");
                    RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Claims what is due and says how long to sleep until the next moment.
    async fn tick(&self, on_due: &impl Fn(SandboxId)) -> crate::store::Result<Duration> {
        let now = self.clock.now();
        for id in self.book.claim_due(now).await? {
            on_due(id);
        }
        Ok(match self.book.next_due().await? {
            // One millisecond late rather than early: moments have millisecond precision.
            Some(next) => {
                (self.clock.now().until(next) + Duration::from_millis(1)).min(LONGEST_SLEEP)
            }
            None => LONGEST_SLEEP,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    /// Deadlines in memory, counting how often the scheduler asks.
    #[derive(Default)]
    struct Book {
        due: Mutex<BTreeMap<SandboxId, Timestamp>>,
        asked: AtomicUsize,
    }

    #[async_trait]
    impl Timetable for Arc<Book> {
        async fn claim_due(&self, now: Timestamp) -> crate::store::Result<Vec<SandboxId>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let mut due = self.due.lock().unwrap();
            let ended: Vec<SandboxId> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in &ended {
                due.remove(id);
            }
            Ok(ended)
        }

        async fn next_due(&self) -> crate::store::Result<Option<Timestamp>> {
            Ok(self.due.lock().unwrap().values().min().copied())
        }
    }

    struct Fixture {
        book: Arc<Book>,
        clock: Arc<TokioClock>,
        wake: Arc<Notify>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                book: Arc::default(),
                clock: Arc::new(TokioClock::new()),
                wake: Arc::new(Notify::new()),
            }
        }

        fn due_in(&self, seconds: u32) -> (SandboxId, Timestamp) {
            let id = SandboxId::new();
            let at = self.clock.now().plus_seconds(seconds);
            self.book.due.lock().unwrap().insert(id, at);
            self.wake.notify_one();
            (id, at)
        }

        fn start(&self) -> (mpsc::UnboundedReceiver<SandboxId>, CancellationToken) {
            let (tx, rx) = mpsc::unbounded_channel();
            let shutdown = CancellationToken::new();
            let scheduler =
                Scheduler::new(self.book.clone(), self.clock.clone(), self.wake.clone());
            tokio::spawn(scheduler.run(move |id| tx.send(id).unwrap(), shutdown.clone()));
            (rx, shutdown)
        }

        /// Asserts the clock is at `at` or less than a second past it.
        fn assert_on_time(&self, at: Timestamp) {
            let now = self.clock.now();
            assert!(now >= at, "ended early: {now:?} < {at:?}");
            assert!(
                now.millis() - at.millis() < 1000,
                "ended late: {now:?} vs {at:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sandboxes_end_at_their_deadline_in_order_and_not_before() {
        let fx = Fixture::new();
        let (late, late_at) = fx.due_in(600);
        let (early, early_at) = fx.due_in(300);
        let (mut ended, shutdown) = fx.start();

        assert_eq!(ended.recv().await.unwrap(), early);
        fx.assert_on_time(early_at);

        // A deadline added while the scheduler sleeps towards a later one still ends on time.
        let (added, added_at) = fx.due_in(60);
        assert_eq!(ended.recv().await.unwrap(), added);
        fx.assert_on_time(added_at);

        assert_eq!(ended.recv().await.unwrap(), late);
        fx.assert_on_time(late_at);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_scheduler_sleeps_instead_of_polling() {
        let fx = Fixture::new();
        let (_, at) = fx.due_in(3 * 3600);
        let (mut ended, shutdown) = fx.start();
        ended.recv().await.unwrap();
        fx.assert_on_time(at);
        // Three hours with one deadline: a wake-up per 30 s safety look, not one per second.
        let asked = fx.book.asked.load(Ordering::SeqCst);
        assert!(asked <= 3 * 3600 / 30 + 3, "asked {asked} times");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn overdue_sandboxes_end_at_once() {
        let fx = Fixture::new();
        let (overdue, _) = fx.due_in(1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let started = fx.clock.now();
        let (mut ended, shutdown) = fx.start();
        assert_eq!(ended.recv().await.unwrap(), overdue);
        assert_eq!(fx.clock.now(), started);
        shutdown.cancel();
    }
}
