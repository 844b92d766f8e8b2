//! The one way a sandbox ends, whatever the reason: a person (`DELETE`, a console), its
//! deadline, or a failure (provisioning, a wake, a vanished container, a full disk).
//!
//! 1. The end is claimed in the database: one conditional update (`Store::end`), or the
//!    scheduler's batch claim of every sandbox due (`Store::end_due`). Only one caller wins.
//! 2. The winner announces it: the `Ended` event (with its webhook delivery) and the metric.
//! 3. The teardown removes the container, its volumes and the sandbox's directory (its data
//!    and any upload), recording each removal as it happens (the deletion receipt dates
//!    them), then `data_deleted_at`. It
//!    is idempotent and runs on the sandbox's turn; every caller runs it, so `DELETE`
//!    answers only once the data is gone, whoever won the claim.

use std::time::Instant;

use super::turns::Turn;
use super::{Lifecycle, LifecycleError, Result};
use crate::domain::{EndReason, Ending, Failure, Sandbox, SandboxEvent, SandboxId};

impl Lifecycle {
    /// Ends the sandbox and waits until every object and copy of its data is gone. Ending
    /// an ended sandbox finishes any teardown still pending and returns the record.
    #[tracing::instrument(skip(self), fields(sandbox_id = %id, reason = ending.reason().as_str()))]
    pub async fn end(&self, id: SandboxId, ending: Ending) -> Result<Sandbox> {
        let sandbox = self.record(id).await?;
        if sandbox.data_deleted_at.is_some() {
            return Ok(sandbox); // nothing is left to remove: no Engine call
        }
        self.claim_end(id, ending).await?;
        let turn = self.inner.turns.take(id).await;
        self.teardown_within(&turn).await?;
        self.record(id).await
    }

    /// `end`, for a task already holding the sandbox's turn.
    pub(super) async fn end_within(&self, turn: &Turn, ending: Ending) -> Result<()> {
        self.claim_end(turn.id, ending).await?;
        self.teardown_within(turn).await
    }

    /// Steps 1 and 2. A failure that cannot be recorded (the database is down) still goes
    /// on to the teardown: the reconciler records the end when it finds the container gone.
    /// (At a restart the teardowns are left to the reconciler's first pass, which does many
    /// at once.)
    pub(super) async fn claim_end(&self, id: SandboxId, ending: Ending) -> Result<()> {
        let now = self.now();
        match self.inner.store.end(id, now, &ending).await {
            Ok(true) => {
                // A provisioning stops at its next step, even while the teardown waits
                // for the sandbox's turn.
                self.inner.provisions.cancel(id);
                self.announce_end(id, ending).await;
            }
            Ok(false) => {}
            Err(err) if ending.reason() == EndReason::Failed => {
                tracing::warn!(sandbox_id = %id, %err, "could not record a failure");
            }
            Err(err) => return Err(err.into()),
        }
        Ok(())
    }

    /// Step 2, for the claimant.
    async fn announce_end(&self, id: SandboxId, ending: Ending) {
        let reason = ending.reason();
        match ending.failure() {
            Some(failure) => {
                tracing::warn!(sandbox_id = %id, why = failure.as_str(), "sandbox failed")
            }
            None => tracing::info!(sandbox_id = %id, reason = reason.as_str(), "sandbox ended"),
        }
        let ended = SandboxEvent::ended(ending);
        self.history().record(id, self.now(), ended).await;
        metrics::counter!("testdrive_sandboxes_ended_total", "reason" => reason.as_str())
            .increment(1);
    }

    /// Removes the sandbox's Engine objects and spool, then records `data_deleted_at`. Safe
    /// to call any number of times, from any task.
    #[tracing::instrument(name = "sandbox.teardown", skip(self), fields(sandbox_id = %id))]
    pub async fn teardown(&self, id: SandboxId) -> Result<()> {
        let turn = self.inner.turns.take(id).await;
        self.teardown_within(&turn).await
    }

    /// Step 3, on the sandbox's turn.
    pub(super) async fn teardown_within(&self, turn: &Turn) -> Result<()> {
        let id = turn.id;
        let started = Instant::now();
        self.inner.provisions.stop(id).await;
        self.remove_engine_objects(id).await?;
        let history = self.history();
        // The prospect's files: the data directory the demo saw, and any still in upload.
        let files = self
            .inner
            .settings
            .dirs
            .remove(id)
            .await
            .map_err(LifecycleError::Spool)?;
        if files {
            history
                .record(id, self.now(), SandboxEvent::FilesRemoved)
                .await;
        }
        let now = self.now();
        if self.inner.store.mark_data_deleted(id, now).await? {
            history.record(id, now, SandboxEvent::DataDeleted).await;
            metrics::histogram!("testdrive_teardown_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Some(s) = self.inner.store.sandbox(id).await?
                && s.end_reason == Some(EndReason::Expired)
            {
                let lag = (now.millis() - s.expires_at.millis()).max(0) as f64 / 1000.0;
                metrics::histogram!("testdrive_expiry_lag_seconds").record(lag);
            }
            tracing::info!("sandbox torn down");
        }
        Ok(())
    }

    /// A sandbox whose upload was refused or abandoned before its end: everything made for
    /// it goes, then its record, as if it never was. What cannot be removed now (the Engine
    /// is down) is an orphan the reconciler removes.
    pub(super) async fn abandon(&self, id: SandboxId) {
        let _turn = self.inner.turns.take(id).await;
        if let Err(err) = self.inner.engine.remove_sandbox(id).await {
            tracing::warn!(sandbox_id = %id, %err, "could not remove an abandoned sandbox's objects; the reconciler will");
        }
        if let Err(err) = self.inner.settings.dirs.remove(id).await {
            tracing::warn!(sandbox_id = %id, %err, "could not remove an abandoned sandbox's directory; the reconciler will");
        }
        if let Err(err) = self.inner.store.forget_unreceived(Some(id)).await {
            tracing::warn!(sandbox_id = %id, %err, "could not forget an abandoned sandbox");
        }
    }

    /// Steps 2 and 3 for a sandbox the scheduler's batch claim ended at its deadline.
    async fn expired(&self, id: SandboxId) {
        tracing::info!(sandbox_id = %id, "trial window over");
        self.announce_end(id, Ending::Expired).await;
        if let Err(err) = self.teardown(id).await {
            tracing::warn!(sandbox_id = %id, %err, "teardown failed; the reconciler will retry");
        }
    }

    /// At a restart: every deadline that passed meanwhile is kept now, before a request is
    /// taken: ended, announced and torn down (what the Engine cannot do now, the
    /// reconciler finishes).
    pub(super) async fn claim_passed_deadlines(&self) -> Result<()> {
        for id in self.inner.store.end_due(self.now()).await? {
            self.expired(id).await;
        }
        Ok(())
    }

    /// Keeps the deadlines of a node that is down, from another node that reaches its
    /// Engine: this lifecycle acts for that node (its store view and its Engine). Every
    /// sandbox due is ended and announced, and its container and volumes removed, so the
    /// trial stops on time. The files on that node's own disk are out of reach: they are
    /// removed, and `data_deleted_at` recorded, by the node itself when it is back (its
    /// start tears down every ended sandbox). The sandboxes ended.
    pub async fn keep_lost_deadlines(&self) -> Result<Vec<SandboxId>> {
        let due = self.inner.store.end_due(self.now()).await?;
        for &id in &due {
            tracing::info!(sandbox_id = %id, node = %self.inner.store.node(), "trial window over on a node that is down");
            self.announce_end(id, Ending::Expired).await;
            self.remove_engine_objects(id).await?;
        }
        Ok(due)
    }

    /// The container and its volumes, each removal recorded in the history.
    async fn remove_engine_objects(&self, id: SandboxId) -> Result<()> {
        let engine = &self.inner.engine;
        let container = engine.remove_container(id).await?;
        if container {
            self.history()
                .record(id, self.now(), SandboxEvent::ContainerRemoved)
                .await;
        }
        // The container's removal takes its volumes along (`-v`), or leaves them for the
        // removal by label; either way they are gone once this returns.
        let by_label = engine.remove_volumes(id).await?;
        if container || by_label > 0 {
            self.history()
                .record(id, self.now(), SandboxEvent::VolumesRemoved)
                .await;
        }
        Ok(())
    }

    /// At a restart: an end the previous run recorded without its event (it stopped in
    /// between) is announced now, dated when the sandbox ended.
    pub(super) async fn announce_unannounced_ends(&self) -> Result<()> {
        for id in self.inner.store.ends_without_event().await? {
            let sandbox = self.record(id).await?;
            let (Some(reason), Some(at)) = (sandbox.end_reason, sandbox.ended_at) else {
                continue;
            };
            let ending = match reason {
                EndReason::Expired => Ending::Expired,
                EndReason::EndedByProspect => Ending::EndedByProspect,
                EndReason::EndedByVendor => Ending::EndedByVendor,
                EndReason::EndedByAdmin => Ending::EndedByAdmin,
                EndReason::Failed => Ending::Failed(
                    sandbox
                        .failure
                        .unwrap_or_else(|| Failure::new("recorded at restart")),
                ),
            };
            let ended = SandboxEvent::Ended {
                ending,
                recovered: true,
            };
            self.history().record(id, at, ended).await;
        }
        Ok(())
    }
}

/// The deadline scheduler's action: the claim is made; announce and tear down.
pub(super) fn on_deadline(lifecycle: &Lifecycle) -> impl Fn(SandboxId) + use<> {
    let lifecycle = lifecycle.clone();
    move |id| {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move { lifecycle.expired(id).await });
    }
}
