//! Pulling demos' registry images, with the vendor's credentials for that registry. A demo
//! of a registry image is `pulling` from its registration (or a vendor's `pull`) until the
//! Engine has the image — `ready`, pinned to the digest the registry resolved, which every
//! sandbox of it then runs — or the registry said no — `failed`, with why in words. One pull
//! of a demo at a time (the store's `start_pull` is the claim); its progress is kept here for
//! the vendor's console. An image that vanished from the Engine is pulled again: by the
//! reconciler's check, or at once by the trial that meets the gap.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use super::{Lifecycle, LifecycleError, Result};
use crate::domain::{Demo, DemoId, ImageRef, ServiceEvent, Timestamp};
use crate::engine::{EngineError, PullFailure, PullProgress};
use crate::store::SandboxFilter;

/// Pulls under way, and how far each is.
#[derive(Default)]
pub(super) struct Pulls {
    progress: Mutex<HashMap<DemoId, PullProgress>>,
}

impl Pulls {
    fn set(&self, demo: DemoId, progress: PullProgress) {
        self.progress
            .lock()
            .expect("pulls lock")
            .insert(demo, progress);
    }

    fn done(&self, demo: DemoId) {
        self.progress.lock().expect("pulls lock").remove(&demo);
    }
}

/// Why a pull failed, in the words a vendor reads in `image_error`.
fn in_words(image: &ImageRef, had_credentials: bool, err: EngineError) -> String {
    let server = image.server().map_or_else(String::new, ToString::to_string);
    match err {
        EngineError::Pull {
            failure: PullFailure::Credentials,
            message,
        } if had_credentials => {
            format!("the registry refused the credentials for {server}: {message}")
        }
        EngineError::Pull {
            failure: PullFailure::Credentials,
            message,
        } => format!(
            "the registry refused the credentials for {server}: none are stored for it \
             (PUT /v1/vendors/{{id}}/registries/{server}); it said: {message}"
        ),
        EngineError::Pull {
            failure: PullFailure::NotFound,
            message,
        } => format!("the registry has no {image}: {message}"),
        EngineError::Pull {
            failure: PullFailure::Unreachable,
            message,
        } => format!("cannot reach the registry {server}: {message}"),
        EngineError::Pull { message, .. } => format!("pulling {image} failed: {message}"),
        EngineError::Unavailable(_) => {
            "the Docker Engine does not answer; pull again once it does".to_string()
        }
        other => format!("pulling {image} failed: {other}"),
    }
}

impl Lifecycle {
    /// Pulls the demo's image again (a vendor's `POST /v1/demos/{id}/pull`): in the
    /// background, unless a pull of it runs already. An Engine-only image is only looked
    /// for. The demo as it stands now.
    pub async fn pull(&self, demo: Demo) -> Result<Demo> {
        if !demo.pulls() {
            return Ok(self.recheck_image(demo).await);
        }
        if self.store().start_pull(demo.id).await? {
            self.pull_in_background(demo.clone());
        }
        self.store()
            .demo(demo.id)
            .await?
            .ok_or(LifecycleError::NotFound)
    }

    /// Pulls a demo registered (or changed) with a registry image, which the store already
    /// has as `pulling`.
    pub fn pull_in_background(&self, demo: Demo) {
        let lifecycle = self.clone();
        tokio::spawn(async move {
            if let Err(err) = lifecycle.pull_now(&demo, false).await {
                tracing::warn!(demo_id = %demo.id, %err, "could not record a pull");
            }
        });
    }

    /// How far the demo's pull is, if one is under way here.
    pub fn pull_progress(&self, demo: DemoId) -> Option<PullProgress> {
        let progress = self.inner.pulls.progress.lock().expect("pulls lock");
        progress.get(&demo).copied()
    }

    /// The pull itself, which the caller has claimed (`start_pull`): of the demo's reference
    /// as the vendor gave it (a tag moved since is followed), or, `pinned`, of the digest
    /// its sandboxes run (the same image again). Whether the image is ready now.
    pub(super) async fn pull_now(&self, demo: &Demo, pinned: bool) -> Result<bool> {
        let image = ImageRef::parse(&demo.spec.image)
            .map_err(|e| LifecycleError::Engine(EngineError::NotFound(e.to_string())))?;
        let Some(server) = image.server() else {
            return Ok(false);
        };
        self.inner.pulls.set(demo.id, PullProgress::default());
        let started = Instant::now();
        let outcome = match self
            .inner
            .credentials
            .pull_credentials(demo.vendor_id, server)
            .await
        {
            Err(why) => Err(format!(
                "the stored credentials for {server} cannot be read: {why}"
            )),
            Ok(credentials) => {
                let progress = |p: PullProgress| self.inner.pulls.set(demo.id, p);
                let reference = match (&demo.image_digest, pinned) {
                    (Some(digest), true) => image.pinned(digest),
                    _ => image.pull_reference(),
                };
                self.engine()
                    .pull(&reference, credentials.as_ref(), &progress)
                    .await
                    .map_err(|e| in_words(&image, credentials.is_some(), e))
            }
        };
        self.inner.pulls.done(demo.id);
        let seconds = started.elapsed().as_secs_f64();
        let recorded = self
            .store()
            .finish_pull(
                demo.id,
                outcome.as_ref().map(String::as_str).map_err(String::as_str),
            )
            .await?;
        if let (true, Ok(digest)) = (recorded, &outcome) {
            let pinned = image.pinned(digest);
            self.store()
                .record_pulled_image(&pinned, self.now())
                .await?;
        }
        let (title, reference) = (demo.spec.title.clone(), image.to_string());
        let event = match &outcome {
            Ok(digest) => {
                metrics::histogram!("testdrive_image_pull_seconds").record(seconds);
                tracing::info!(demo_id = %demo.id, image = %reference, %digest, seconds, "pulled");
                ServiceEvent::ImagePulled {
                    demo: demo.id,
                    title,
                    image: reference,
                    digest: digest.clone(),
                }
            }
            Err(why) => ServiceEvent::ImagePullFailed {
                demo: demo.id,
                title,
                image: reference,
                why: why.clone(),
            },
        };
        if recorded {
            self.note(event).await;
            if outcome.is_ok() {
                self.inner.pools.forgive(demo.id);
            }
            self.pools_changed();
        }
        Ok(recorded && outcome.is_ok())
    }

    /// Removes the images pulls brought that no demo runs and no live sandbox or warm pool
    /// member uses (`images.remove_unused`). One a container still holds (a sandbox ended
    /// but not yet torn down) stays for a later pass.
    pub(super) async fn remove_unused_images(&self) -> Result<()> {
        let store = self.store();
        let mut used: HashSet<String> = store
            .demos(None)
            .await?
            .iter()
            .map(Demo::run_image)
            .collect();
        let live = SandboxFilter {
            ended_since: Some(Timestamp::from_millis(i64::MAX)),
            ..SandboxFilter::default()
        };
        used.extend(
            store
                .sandboxes(&live)
                .await?
                .into_iter()
                .map(|s| s.spec.image),
        );
        used.extend(
            store
                .warm_members(None)
                .await?
                .into_iter()
                .map(|m| m.spec.image),
        );
        for reference in store.pulled_images().await? {
            if used.contains(&reference) {
                continue;
            }
            match self.engine().remove_image(&reference).await {
                Ok(_) => {
                    tracing::info!(image = %reference, "removed an image nothing uses any more");
                    store.forget_pulled_image(&reference).await?;
                }
                Err(EngineError::Rejected { .. }) => {} // a container still holds it
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// A registry image of a `ready` demo is not on the Engine any more: pull it again now,
    /// if nobody is at it. Whether it is back.
    pub(super) async fn pull_again(&self, demo: &Demo) -> Result<bool> {
        if !self.store().start_pull(demo.id).await? {
            return Ok(false);
        }
        self.pull_now(demo, true).await
    }
}
