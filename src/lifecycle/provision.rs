//! Provisioning one sandbox. It begins as soon as the prospect's form names the demo, while
//! the files still stream into the sandbox's upload directory: a cold sandbox's container is
//! created with its data directory bound at `data_path`, handed to the demo's user and
//! started meanwhile; a sandbox claimed from a warm pool runs already. Once the files are in,
//! they are renamed into the data directory (no copy, no archive, no Engine call), then the
//! load command and the readiness probe run. An upload refused or abandoned before its end
//! removes the sandbox and everything made for it (`Lifecycle::abandon`).
//!
//! The data exists in one place only: the upload directory is empty once the files are
//! placed. What the load command prints stays with the prospect (`Sandbox::load_output`),
//! never in a failure, an event or the log. Ending the sandbox meanwhile cancels the work
//! between Engine calls (never in the middle of a create, whose object could then escape the
//! teardown); a failure ends it through the one end path — once the files are in, so that
//! its `created` event comes first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Lifecycle;
use super::images::Vanished;
use super::probe;
use crate::domain::sandbox::LoadOutput;
use crate::domain::{DemoId, DemoSpec, Ending, SandboxEvent, SandboxId};
use crate::engine::{EngineError, NewContainer};
use crate::sandbox_dirs::Owner;
use crate::spool::Spool;

/// Where a provisioning stands, as seen by whoever waits for it (`?wait=`, a teardown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Provisioning,
    Ready,
    Failed,
    /// Stopped because the sandbox was ended while provisioning.
    Stopped,
}

/// Where a sandbox's container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Made for this sandbox.
    Cold,
    /// Claimed from the demo's warm pool: created and started already, with no data.
    Warm,
}

struct InFlight {
    cancel: CancellationToken,
    phase: watch::Receiver<Phase>,
}

/// Provisionings under way, so that an end can stop one and wait for it.
#[derive(Default)]
pub(super) struct Provisions {
    running: Mutex<HashMap<SandboxId, InFlight>>,
}

impl Provisions {
    /// A new provisioning of `id`: its cancel switch, its phase to report, and a
    /// receiver of that phase for whoever waits.
    pub(super) fn register(
        &self,
        id: SandboxId,
    ) -> (
        CancellationToken,
        watch::Sender<Phase>,
        watch::Receiver<Phase>,
    ) {
        let (tx, rx) = watch::channel(Phase::Provisioning);
        let cancel = CancellationToken::new();
        let flight = InFlight {
            cancel: cancel.clone(),
            phase: rx.clone(),
        };
        self.running
            .lock()
            .expect("provisions lock")
            .insert(id, flight);
        (cancel, tx, rx)
    }

    fn finish(&self, id: SandboxId) {
        self.running.lock().expect("provisions lock").remove(&id);
    }

    /// Whether a provisioning of `id` is under way.
    #[cfg(test)]
    pub(super) fn running(&self, id: SandboxId) -> bool {
        self.running
            .lock()
            .expect("provisions lock")
            .contains_key(&id)
    }

    /// Tells the provisioning of `id`, if one runs, to stop at its next step.
    pub(super) fn cancel(&self, id: SandboxId) {
        if let Some(flight) = self.running.lock().expect("provisions lock").get(&id) {
            flight.cancel.cancel();
        }
    }

    /// Stops the provisioning of `id`, if one runs, and waits until it makes no more
    /// Engine calls.
    pub(super) async fn stop(&self, id: SandboxId) {
        let running = {
            let running = self.running.lock().expect("provisions lock");
            running
                .get(&id)
                .map(|p| (p.cancel.clone(), p.phase.clone()))
        };
        if let Some((cancel, mut phase)) = running {
            cancel.cancel();
            let _ = phase.wait_for(|p| *p != Phase::Provisioning).await;
        }
    }
}

enum Stop {
    Cancelled,
    Failed(String),
}

/// How the wait for the files ended.
enum Arrival {
    /// The spooled files, and `prospect.json`'s bytes.
    Files(Box<Spool>, Vec<u8>),
    /// The upload was refused or abandoned: nothing of the sandbox may remain.
    Abandoned,
    Cancelled,
}

fn failed(step: &str) -> impl Fn(EngineError) -> Stop + '_ {
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

/// One provisioning, from the spooled files to a ready sandbox.
pub(super) struct Provision {
    pub(super) id: SandboxId,
    pub(super) demo: DemoId,
    pub(super) spec: DemoSpec,
    /// The sandbox's address slot on the sandbox network.
    pub(super) slot: Option<u32>,
    pub(super) origin: Origin,
    pub(super) cancel: CancellationToken,
    pub(super) phase: watch::Sender<Phase>,
    pub(super) started: Instant,
}

impl Provision {
    /// Runs in the background; the files come through `files` once they are all in.
    pub(super) fn spawn(self, lifecycle: Lifecycle, files: oneshot::Receiver<(Spool, Vec<u8>)>) {
        let span =
            tracing::info_span!("sandbox.provision", sandbox_id = %self.id, demo_id = %self.demo);
        tokio::spawn(self.run(lifecycle, files).instrument(span));
    }

    async fn run(self, lifecycle: Lifecycle, files: oneshot::Receiver<(Spool, Vec<u8>)>) {
        let id = self.id;
        let prepared = self.prepare(&lifecycle).await;
        // A failure while the files arrive is reported once they are in (after `created`);
        // an abandoned upload leaves nothing to report.
        let arrival = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Arrival::Cancelled,
            files = files => files.map_or(Arrival::Abandoned, |(spool, note)| Arrival::Files(Box::new(spool), note)),
        };
        let outcome = match (prepared, arrival) {
            (_, Arrival::Abandoned) => {
                lifecycle.inner.provisions.finish(id);
                lifecycle.abandon(id).await;
                self.phase.send_replace(Phase::Stopped);
                return;
            }
            (_, Arrival::Cancelled) => Err(Stop::Cancelled),
            (Err(stop), Arrival::Files(..)) => Err(stop),
            (Ok(owner), Arrival::Files(spool, note)) => {
                self.complete(&lifecycle, owner, *spool, note).await
            }
        };
        let outcome = match outcome {
            Ok(addr) => lifecycle
                .store()
                .mark_ready(id, lifecycle.now(), &addr.to_string())
                .await
                .map(|marked| (marked, addr))
                .map_err(|err| Stop::Failed(format!("recording readiness: {err}"))),
            Err(stop) => Err(stop),
        };
        // Out of the table before anything else: a teardown started from here must not
        // wait for this task.
        lifecycle.inner.provisions.finish(id);
        match outcome {
            Ok((true, addr)) => {
                let elapsed = self.started.elapsed();
                let after_ms = elapsed.as_millis() as u64;
                let ready = SandboxEvent::Ready { after_ms };
                lifecycle.history().record(id, lifecycle.now(), ready).await;
                metrics::histogram!("testdrive_provision_seconds").record(elapsed.as_secs_f64());
                tracing::info!(ms = after_ms, %addr, "sandbox ready");
                self.phase.send_replace(Phase::Ready);
                lifecycle.inner.wakeups.idle.notify_one();
            }
            // Ended while provisioning: whoever ended it tears it down.
            Ok((false, _)) | Err(Stop::Cancelled) => {
                self.phase.send_replace(Phase::Stopped);
            }
            // The end path's two steps, with the phase between: whoever waits (`?wait=`)
            // reads the failure as soon as it is recorded, not after the teardown.
            Err(Stop::Failed(why)) => {
                if let Err(err) = lifecycle.claim_end(id, Ending::failed(why)).await {
                    tracing::warn!(%err, "could not record the failure");
                }
                self.phase.send_replace(Phase::Failed);
                if let Err(err) = lifecycle.teardown(id).await {
                    tracing::warn!(%err, "teardown failed; the reconciler will retry");
                }
            }
        }
    }

    /// What can be done before the files are in: a cold sandbox's container is created,
    /// its data directory handed to the demo's user, and started. Who that user is.
    async fn prepare(&self, lifecycle: &Lifecycle) -> Result<Owner, Stop> {
        let (id, spec, cancel) = (self.id, &self.spec, &self.cancel);
        let engine = lifecycle.engine();
        if self.origin == Origin::Warm {
            return engine
                .owner(id, spec)
                .await
                .map_err(failed("finding the demo's user"));
        }
        let ip = self
            .slot
            .and_then(|s| engine.address(s))
            .ok_or_else(|| Stop::Failed("the sandbox network has no free address left".into()))?;
        checkpoint(cancel)?;
        let container = NewContainer {
            sandbox: id,
            demo: self.demo,
            spec,
            ip,
            data_dir: lifecycle.settings().dirs.host_data(id),
        };
        let mut made = engine.create(&container).await;
        if let Err(EngineError::NotFound(what)) = &made
            && what == "image"
        {
            // The image vanished before the reconciler noticed: a registry image is
            // pulled again while the trial waits; an Engine-only one marks the demo,
            // and the prospect is told so in words, not in the Engine's.
            match lifecycle.image_vanished(self.demo, &spec.image).await {
                Vanished::No => {}
                Vanished::PulledAgain => made = engine.create(&container).await,
                Vanished::Gone(why) => return Err(Stop::Failed(why)),
            }
        }
        made.map_err(failed("creating the container"))?;
        checkpoint(cancel)?;
        let owner = engine
            .owner(id, spec)
            .await
            .map_err(failed("finding the demo's user"))?;
        lifecycle
            .settings()
            .dirs
            .hand_over(id, owner)
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        checkpoint(cancel)?;
        // Whether it keeps running is the load command's and the probe's to find out (both
        // say so in words): one Engine call fewer for every trial.
        lifecycle
            .start_container(id, "while starting a new sandbox")
            .await
            .map_err(failed("starting the container"))?;
        Ok(owner)
    }

    /// Once the files are in: places them and `prospect.json`, runs the load command,
    /// waits for the probe.
    async fn complete(
        &self,
        lifecycle: &Lifecycle,
        owner: Owner,
        spool: Spool,
        note: Vec<u8>,
    ) -> Result<SocketAddr, Stop> {
        let (id, spec, cancel) = (self.id, &self.spec, &self.cancel);
        let engine = lifecycle.engine();
        let history = lifecycle.history();
        checkpoint(cancel)?;
        let ip = self
            .slot
            .and_then(|s| engine.address(s))
            .ok_or_else(|| Stop::Failed("the sandbox network has no free address left".into()))?;
        let files = spool.files().to_vec();
        let count = files.len() as u32;
        lifecycle
            .settings()
            .dirs
            .place(id, files, owner)
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        lifecycle
            .settings()
            .dirs
            .place_note(id, &note, owner)
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        if let Err(err) = spool.discard().await {
            tracing::warn!(%err, "could not delete the empty upload directory; teardown will");
        }
        let placed = SandboxEvent::DataPlaced {
            files: count,
            path: spec.data_path.clone(),
        };
        history.record(id, lifecycle.now(), placed).await;
        let started = SandboxEvent::Started {
            from_warm_pool: self.origin == Origin::Warm,
        };
        history.record(id, lifecycle.now(), started).await;
        checkpoint(cancel)?;
        let addr = SocketAddr::new(ip.into(), spec.port);
        if let Some(command) = &spec.load_command {
            let limit = Duration::from_secs(u64::from(spec.ready.timeout_seconds));
            let outcome = unless_cancelled(cancel, async {
                let ran = tokio::time::timeout(limit, engine.exec(id, command))
                    .await
                    .map_err(|_| {
                        Stop::Failed(format!(
                            "the demo could not load your files in time (its load command \
                             ran longer than {} seconds)",
                            limit.as_secs()
                        ))
                    })?;
                match ran {
                    Ok(outcome) => Ok(outcome),
                    // A demo that exited since its start: said as the probe says it.
                    Err(err) => match engine.state(id).await {
                        Ok(state) if !state.running => {
                            Err(Stop::Failed(probe::NotReady::exited(state).to_string()))
                        }
                        _ => Err(failed("running the load command")(err)),
                    },
                }
            })
            .await?;
            if outcome.exit_code != 0 {
                // What it printed may be the prospect's own data: it is kept beside the
                // sandbox for the prospect's eyes only. The failure (in the events, the
                // vendor's view, webhooks and the log) says only how it ended.
                let printed = LoadOutput {
                    message: outcome.message,
                    output: outcome.output_tail,
                };
                if (printed.message.is_some() || !printed.output.is_empty())
                    && let Err(err) = lifecycle
                        .store()
                        .set_load_output(id, &printed.to_stored())
                        .await
                {
                    tracing::warn!(%err, "could not keep what the load command printed");
                }
                return Err(Stop::Failed(format!(
                    "the demo could not load your files (its load command exited with code {})",
                    outcome.exit_code
                )));
            }
            history
                .record(id, lifecycle.now(), SandboxEvent::Loaded)
                .await;
        }

        unless_cancelled(cancel, async {
            probe::wait_ready(engine.as_ref(), id, addr, &spec.ready)
                .await
                .map_err(|e| Stop::Failed(e.to_string()))
        })
        .await?;
        Ok(addr)
    }
}
