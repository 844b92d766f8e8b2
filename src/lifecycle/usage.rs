//! What running sandboxes use right now: memory and CPU, read from the Engine for the
//! operators' dashboard. Readings are shared by every viewer and refreshed at most every
//! couple of seconds, so ten open dashboards cost the Engine what one does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::Lifecycle;
use crate::domain::SandboxId;
use crate::engine::StatsReading;

/// How stale a reading may be before the next viewer refreshes it.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Engine calls at once while refreshing.
const CONCURRENCY: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ResourceUse {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Percent of one core since the previous reading; `None` after the first one.
    pub cpu_percent: Option<f64>,
}

/// The latest readings, shared by every viewer.
#[derive(Default)]
pub(super) struct Gauges(tokio::sync::Mutex<Readings>);

#[derive(Default)]
struct Readings {
    taken: Option<Instant>,
    last: HashMap<SandboxId, StatsReading>,
    usage: HashMap<SandboxId, ResourceUse>,
}

impl Readings {
    /// Takes in a fresh round of readings; sandboxes not read this round are forgotten.
    fn update(&mut self, now: Instant, fresh: HashMap<SandboxId, StatsReading>) {
        self.usage = fresh
            .iter()
            .map(|(id, reading)| {
                let cpu_percent = self
                    .last
                    .get(id)
                    .and_then(|earlier| reading.cpu_percent_since(earlier));
                let usage = ResourceUse {
                    memory_bytes: reading.memory_bytes,
                    memory_limit_bytes: reading.memory_limit_bytes,
                    cpu_percent,
                };
                (*id, usage)
            })
            .collect();
        self.last = fresh;
        self.taken = Some(now);
    }
}

impl Lifecycle {
    /// Memory and CPU of the given running sandboxes. A sandbox the Engine cannot read
    /// (it just stopped, say) is left out rather than failing the whole answer.
    pub async fn resource_use(&self, running: &[SandboxId]) -> HashMap<SandboxId, ResourceUse> {
        let mut readings = self.inner.readings.0.lock().await;
        let stale = readings.taken.is_none_or(|t| t.elapsed() >= FRESH_FOR);
        let known = running.iter().all(|id| readings.usage.contains_key(id));
        if stale || !known {
            let engine = self.engine();
            let fresh: HashMap<SandboxId, StatsReading> =
                futures_util::stream::iter(running.iter().copied())
                    .map(|id| async move {
                        let reading = engine.stats(id).await;
                        reading.ok().map(|r| (id, r))
                    })
                    .buffer_unordered(CONCURRENCY)
                    .filter_map(std::future::ready)
                    .collect()
                    .await;
            readings.update(Instant::now(), fresh);
        }
        running
            .iter()
            .filter_map(|id| Some((*id, *readings.usage.get(id)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu: u64, system: u64) -> StatsReading {
        StatsReading {
            memory_bytes: 10 << 20,
            memory_limit_bytes: 256 << 20,
            cpu_total_ns: cpu,
            system_ns: system,
            online_cpus: 2,
        }
    }

    #[test]
    fn cpu_is_the_share_between_two_readings() {
        let (a, b) = (SandboxId::new(), SandboxId::new());
        let mut readings = Readings::default();
        let now = Instant::now();
        readings.update(now, HashMap::from([(a, reading(0, 0))]));
        assert_eq!(
            readings.usage[&a].cpu_percent, None,
            "one reading says nothing"
        );

        // a used a quarter of the host's CPU time on a 2-core host: half a core.
        readings.update(
            now,
            HashMap::from([(a, reading(250, 1000)), (b, reading(7, 7))]),
        );
        assert_eq!(readings.usage[&a].cpu_percent, Some(50.0));
        assert_eq!(readings.usage[&b].cpu_percent, None);
        assert_eq!(readings.usage[&a].memory_bytes, 10 << 20);

        // A sandbox not read this round is forgotten (it ended or slept).
        readings.update(now, HashMap::from([(b, reading(8, 9))]));
        assert!(!readings.usage.contains_key(&a));
    }

    #[test]
    fn counters_that_went_back_give_no_cpu_figure() {
        // A restarted container starts counting from zero again.
        assert_eq!(reading(5, 10).cpu_percent_since(&reading(9, 5)), None);
    }
}
