//! The readiness probe: a sandbox is ready when its port accepts a connection and
//! `GET ready.http_path` answers below 500. Attempts start fast (most demos are up within
//! tens of milliseconds) and back off; a container that exits stops the wait at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::SandboxId;
use crate::domain::event::exit_sentence;
use crate::domain::manifest::ReadyProbe;
use crate::engine::{ContainerState, Engine};

/// Pauses between attempts: short, since a demo is ready at most a pause before it is seen
/// to be (under load, starts take seconds, and a 250 ms pause cost a tenth of the
/// throughput at 16 at once), and an attempt is one connection on the host's own bridge.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);
/// How often to ask the Engine whether the container still runs.
const STATE_EVERY: Duration = Duration::from_millis(500);

/// Why a sandbox never became ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the demo did not answer GET {path} on port {port} within {seconds} s{last}")]
    Timeout {
        path: String,
        port: u16,
        seconds: u32,
        last: String,
    },
    #[error("{0}")]
    Exited(String),
}

impl NotReady {
    pub fn exited(state: ContainerState) -> NotReady {
        NotReady::Exited(exit_sentence(
            state.exit_code.unwrap_or(-1),
            state.oom_killed,
        ))
    }
}

/// Waits until the demo of sandbox `id` at `addr` answers `ready`'s probe, for at most its
/// `timeout_seconds`.
pub async fn wait_ready(
    engine: &dyn Engine,
    id: SandboxId,
    addr: SocketAddr,
    ready: &ReadyProbe,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(ready.timeout_seconds));
    let mut pause = FIRST_PAUSE;
    // The first attempt that fails asks whether the demo still runs (one that exited at
    // start fails at once, in words), then every `STATE_EVERY`.
    let mut last_state_check: Option<Instant> = None;
    loop {
        let last = match engine.probe(addr, &ready.http_path).await {
            Ok(status) if status < 500 => return Ok(()),
            Ok(status) => format!("HTTP {status}"),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(NotReady::Timeout {
                path: ready.http_path.clone(),
                port: addr.port(),
                seconds: ready.timeout_seconds,
                last: format!(" (last: {last})"),
            });
        }
        if last_state_check.is_none_or(|at| at.elapsed() >= STATE_EVERY) {
            last_state_check = Some(Instant::now());
            if let Ok(state) = engine.state(id).await
                && !state.running
            {
                return Err(NotReady::exited(state));
            }
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
