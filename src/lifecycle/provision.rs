//! Provisioning one sandbox: create the hardened container with its volumes, stream the
//! prospect's files into the data volume, start it, run the load command, probe readiness.
//! A sandbox claimed from a warm pool has its container running already: its files go into
//! the running container's (empty) data volume, then the load command and the probe.
//! The spool is deleted as soon as the files are in the volume, so the data exists in one
//! place only. Ending the sandbox meanwhile cancels the work between Engine calls (never in
//! the middle of a create, whose object could then escape the teardown).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::probe::{self, NotReady};
use super::{Lifecycle, Phase};
use crate::domain::{DemoId, DemoSpec, SandboxId};
use crate::engine::container_name;
use crate::spool::Spool;

enum Stop {
    Cancelled,
    Failed(String),
}

fn failed(step: &str) -> impl Fn(crate::engine::EngineError) -> Stop + '_ {
    move |err| Stop::Failed(format!("{step}: {err}"))
}

/// Runs `work` unless the sandbox is ended first.
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        result = work => result,
    }
}

fn checkpoint(cancel: &CancellationToken) -> Result<(), Stop> {
    if cancel.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    Ok(())
}

/// Where a sandbox's container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Made for this sandbox.
    Cold,
    /// Claimed from the demo's warm pool: created and started already, with no data.
    Warm,
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    lifecycle: &Lifecycle,
    id: SandboxId,
    demo: DemoId,
    spec: &DemoSpec,
    slot: Option<u32>,
    origin: Origin,
    spool: Spool,
    cancel: &CancellationToken,
) -> Result<SocketAddr, Stop> {
    let engine = lifecycle.engine();
    let ip = slot
        .and_then(|s| engine.address(s))
        .ok_or_else(|| Stop::Failed("the sandbox network has no free address left".to_string()))?;
    checkpoint(cancel)?;
    let container = match origin {
        Origin::Cold => engine
            .create_sandbox(id, demo, spec, ip)
            .await
            .map_err(failed("creating the container"))?,
        Origin::Warm => container_name(id),
    };
    checkpoint(cancel)?;

    let files = spool.files().to_vec();
    let count = files.len();
    unless_cancelled(cancel, async {
        engine
            .place_files(&container, &spec.data_path, files)
            .await
            .map_err(failed("placing the files"))
    })
    .await?;
    if let Err(err) = spool.discard().await {
        tracing::warn!(%err, "could not delete the spooled upload; teardown will");
    }
    lifecycle
        .event(
            id,
            "data_placed",
            Some(&format!("{count} file(s) in {}", spec.data_path)),
        )
        .await;
    checkpoint(cancel)?;

    if origin == Origin::Cold {
        engine
            .start(&container)
            .await
            .map_err(failed("starting the container"))?;
        let state = engine
            .state(&container)
            .await
            .map_err(failed("inspecting the container"))?;
        if !state.running {
            return Err(Stop::Failed(NotReady::exited(state).to_string()));
        }
        lifecycle.event(id, "started", None).await;
    } else {
        lifecycle
            .event(
                id,
                "started",
                Some("already running: taken from the warm pool"),
            )
            .await;
    }
    let addr = SocketAddr::new(ip.into(), spec.port);

    if let Some(command) = &spec.load_command {
        let limit = Duration::from_secs(u64::from(spec.ready.timeout_seconds));
        let outcome = unless_cancelled(cancel, async {
            tokio::time::timeout(limit, engine.exec(&container, command))
                .await
                .map_err(|_| Stop::Failed(format!("the load command ran longer than {limit:?}")))?
                .map_err(failed("running the load command"))
        })
        .await?;
        if outcome.exit_code != 0 {
            return Err(Stop::Failed(format!(
                "the load command exited with code {}: {}",
                outcome.exit_code, outcome.output_tail
            )));
        }
        lifecycle.event(id, "loaded", None).await;
    }

    unless_cancelled(cancel, async {
        probe::wait_ready(
            engine,
            &container,
            addr,
            &spec.ready.http_path,
            spec.ready.timeout_seconds,
        )
        .await
        .map_err(|e| Stop::Failed(e.to_string()))
    })
    .await?;
    Ok(addr)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    lifecycle: Lifecycle,
    id: SandboxId,
    demo: DemoId,
    spec: DemoSpec,
    slot: Option<u32>,
    origin: Origin,
    spool: Spool,
    cancel: CancellationToken,
    phase: watch::Sender<Phase>,
    started: Instant,
) {
    let outcome = steps(&lifecycle, id, demo, &spec, slot, origin, spool, &cancel).await;
    let outcome = match outcome {
        Ok(addr) => lifecycle
            .store()
            .mark_ready(id, lifecycle.now(), &addr.to_string())
            .await
            .map(|marked| (marked, addr))
            .map_err(|err| Stop::Failed(format!("recording readiness: {err}"))),
        Err(stop) => Err(stop),
    };
    // Out of the in-flight table before anything else: a teardown started from here must
    // not wait for this task.
    remove_inflight(&lifecycle, id);
    match outcome {
        Ok((true, addr)) => {
            let elapsed = started.elapsed();
            lifecycle
                .event(id, "ready", Some(&format!("in {} ms", elapsed.as_millis())))
                .await;
            metrics::histogram!("testdrive_provision_seconds").record(elapsed.as_secs_f64());
            tracing::info!(ms = elapsed.as_millis() as u64, %addr, "sandbox ready");
            phase.send_replace(Phase::Ready);
            lifecycle.inner.idle_moments.notify_one();
        }
        // Ended while provisioning: whoever ended it tears it down.
        Ok((false, _)) | Err(Stop::Cancelled) => {
            phase.send_replace(Phase::Stopped);
        }
        Err(Stop::Failed(detail)) => {
            let owes_teardown = lifecycle.record_failure(id, &detail).await;
            phase.send_replace(Phase::Failed);
            if owes_teardown {
                lifecycle.teardown_or_leave_to_reconciler(id).await;
            }
        }
    }
}

fn remove_inflight(lifecycle: &Lifecycle, id: SandboxId) {
    lifecycle
        .inner
        .inflight
        .lock()
        .expect("inflight lock")
        .remove(&id);
}
