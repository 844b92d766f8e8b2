//! Demos' images. An image on the Engine can vanish behind testdrive's back
//! (`docker image prune -a` on a host with no sandbox of that demo running, `docker rmi`):
//! then no container of the demo can be made, and every trial of it would fail with the
//! Engine's "no such image". Instead the demo is marked `missing`: it leaves the catalog,
//! trials of it are refused in words, its warm pool is drained and not refilled, and the
//! operators and its vendor read an `image_missing` event. When the image is back, the demo
//! is `ready` again (`image_back`).
//!
//! The reconciler checks every demo's image on each pass (each distinct image asked once);
//! a container create that meets the gap first marks the demo at once. A status moves by a
//! compare-and-set in the store, so whoever sees a change first records it, once.
//!
//! Each node also records whether its own Engine has each demo's image (`image_here`):
//! with several nodes, trials are placed only where the image is, and one node lacking it
//! does not take the demo off the catalog.

use std::collections::HashMap;

use super::{Lifecycle, Result};
use crate::domain::{Demo, DemoId, ImageStatus, ServiceEvent};

/// What a create that met "no such image" found when it asked again.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Vanished {
    /// The image is there: the create failed for another reason.
    No,
    /// A registry image, pulled again just now: create again.
    PulledAgain,
    /// Gone; what the prospect is told.
    Gone(String),
}

impl Lifecycle {
    /// Asks the Engine about every demo's image and moves each demo `ready → missing` or
    /// back. Deleted demos are not asked about; disabled ones are (their vendor sees it).
    pub(super) async fn check_images(&self) -> Result<()> {
        let demos = self.store().demos(None).await?;
        let mut on_engine: HashMap<String, bool> = HashMap::new();
        for demo in demos {
            // A pull under way or failed is the vendor's to retry, not this check's.
            if matches!(
                demo.image_status,
                ImageStatus::Pulling | ImageStatus::Failed
            ) {
                continue;
            }
            let image = demo.run_image();
            let there = match on_engine.get(&image) {
                Some(there) => *there,
                None => {
                    let there = self.engine().image_exists(&image).await?;
                    on_engine.insert(image, there);
                    there
                }
            };
            // A registry image is fetched again, in the background; only an Engine-only
            // one goes missing.
            if !there && demo.pulls() {
                self.store().image_here(demo.id, false).await?;
                let lifecycle = self.clone();
                tokio::spawn(async move {
                    if let Err(err) = lifecycle.pull_again(&demo).await {
                        tracing::warn!(demo_id = %demo.id, %err, "could not pull an image again");
                    }
                });
                continue;
            }
            self.image_seen(&demo, there).await?;
        }
        Ok(())
    }

    /// Asks the Engine about the images of demos this node has not looked at since it
    /// started (a demo registered on another node): trials are placed on a node only once
    /// it has said its Engine has the image, so a node says so within a heartbeat rather
    /// than at its next reconciler pass. One query when there is nothing new.
    pub async fn check_new_images(&self) -> Result<()> {
        for demo in self.store().demos(None).await? {
            let seen = self
                .inner
                .images_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&demo.id);
            if seen
                || matches!(
                    demo.image_status,
                    ImageStatus::Pulling | ImageStatus::Failed
                )
            {
                continue;
            }
            let there = self.engine().image_exists(&demo.run_image()).await?;
            if there || !demo.pulls() {
                self.image_seen(&demo, there).await?;
            }
            // A registry image this Engine lacks is pulled by the reconciler's pass.
        }
        Ok(())
    }

    /// The demo (as just changed by its vendor) with its image asked about now. The change
    /// is saved already: if the Engine does not answer, the reconciler asks later.
    pub async fn recheck_image(&self, mut demo: Demo) -> Demo {
        let seen = async {
            let there = self.engine().image_exists(&demo.run_image()).await?;
            self.image_seen(&demo, there).await
        };
        match seen.await {
            Ok(Some(now)) => demo.image_status = now,
            Ok(None) => {}
            Err(err) => tracing::warn!(demo_id = %demo.id, %err, "could not check a demo's image"),
        }
        demo
    }

    /// A container of `demo` could not be made: the Engine has no such image. Asked once
    /// more (the create's "not found" could be about something else, or the image just
    /// came back); if it is indeed gone, the demo is marked missing at once rather than at
    /// the reconciler's next check — unless the demo runs another image by now (the
    /// sandbox was made with an older spec). Whether the image is gone.
    pub(super) async fn image_vanished(&self, demo: DemoId, image: &str) -> Vanished {
        match self.engine().image_exists(image).await {
            Ok(true) => return Vanished::No,
            Ok(false) => {}
            // The create just said so; the Engine's silence now does not unsay it.
            Err(err) => tracing::warn!(%err, "could not ask the Engine about an image again"),
        }
        let marked = match self.store().demo(demo).await {
            // A registry image is pulled again, now, while the trial waits.
            Ok(Some(demo)) if demo.pulls() && demo.run_image() == image => {
                return match self.pull_again(&demo).await {
                    Ok(true) => Vanished::PulledAgain,
                    _ => Vanished::Gone(ImageStatus::Failed.not_available().unwrap_or_default()),
                };
            }
            Ok(Some(demo)) if demo.run_image() == image => self.image_seen(&demo, false).await,
            Ok(_) => Ok(None),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = marked {
            tracing::warn!(demo_id = %demo, %err, "could not mark a demo's image missing");
        }
        Vanished::Gone(ImageStatus::Missing.not_available().unwrap_or_default())
    }

    /// Moves `demo`'s image status as `there` (whether the Engine has its image) says, if
    /// it is not so already; the new status if this call moved it. Statuses this check
    /// does not own (the images issue's `pulling`, `failed`) would be left alone.
    async fn image_seen(&self, demo: &Demo, there: bool) -> Result<Option<ImageStatus>> {
        // Trials are placed only on nodes that have the image.
        self.store().image_here(demo.id, there).await?;
        self.inner
            .images_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(demo.id);
        tracing::debug!(demo_id = %demo.id, there, "this node's Engine and the demo's image");
        let (from, to) = match (demo.image_status, there) {
            // With several nodes, one node's Engine lacking the image says nothing of the
            // others': that node just gets none of the demo's trials.
            (ImageStatus::Ready, false) if self.inner.settings.shared => return Ok(None),
            (ImageStatus::Ready, false) => (ImageStatus::Ready, ImageStatus::Missing),
            (ImageStatus::Missing, true) => (ImageStatus::Missing, ImageStatus::Ready),
            _ => return Ok(None),
        };
        if !self.store().set_image_status(demo.id, from, to).await? {
            return Ok(None); // someone else saw it first, and recorded it
        }
        let (demo_id, title, image) = (demo.id, demo.spec.title.clone(), demo.spec.image.clone());
        let event = if to == ImageStatus::Missing {
            ServiceEvent::ImageMissing {
                demo: demo_id,
                title,
                image,
            }
        } else {
            ServiceEvent::ImageBack {
                demo: demo_id,
                title,
                image,
            }
        };
        metrics::counter!("testdrive_image_status_changes_total", "to" => to.as_str()).increment(1);
        self.note(event).await;
        // Its warm pool is drained while it is missing, and filled again as soon as it is
        // back (a member that failed for want of the image does not hold the refill back).
        if to == ImageStatus::Ready {
            self.inner.pools.forgive(demo_id);
        }
        self.pools_changed();
        Ok(Some(to))
    }
}
