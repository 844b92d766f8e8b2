//! One Engine operation at a time per sandbox. The scheduler, a `DELETE`, the reconciler,
//! the proxy's wake and the pool keeper may all reach for the same sandbox; whoever holds
//! its `Turn` works on it alone, and re-reads the database first (what it saw before
//! waiting may be stale).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::domain::SandboxId;

type Locks = Arc<Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>>;

#[derive(Default)]
pub(super) struct Turns {
    locks: Locks,
}

/// A sandbox's turn, held until dropped.
pub(super) struct Turn {
    pub(super) id: SandboxId,
    locks: Locks,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for the sandbox's turn.
    pub(super) async fn take(&self, id: SandboxId) -> Turn {
        let lock = self
            .locks
            .lock()
            .expect("turns lock")
            .entry(id)
            .or_default()
            .clone();
        Turn {
            id,
            locks: self.locks.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().expect("turns lock");
        if let Some(guard) = self.guard.take() {
            // Only the table and this guard hold the lock: nobody waits, forget it.
            let idle = Arc::strong_count(OwnedMutexGuard::mutex(&guard)) == 2;
            drop(guard);
            if idle {
                locks.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_one_at_a_time_and_forgotten_when_free() {
        let turns = Turns::default();
        let id = SandboxId::new();
        let first = turns.take(id).await;
        let other = turns.take(SandboxId::new()).await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), turns.take(id));
        assert!(waiting.await.is_err(), "a second turn waits");
        drop((first, other));
        assert!(turns.locks.lock().unwrap().is_empty());
        let _again = turns.take(id).await;
    }
}
