//! A demo: a vendor's image plus how to run it for one prospect (`DemoSpec`), as registered,
//! and whether that image is there to run (`ImageStatus`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DemoId, DemoSpec, ImageRef, Timestamp, VendorId};

#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub id: DemoId,
    pub vendor_id: VendorId,
    pub spec: DemoSpec,
    /// A disabled demo is out of the catalog and takes no new trials.
    pub enabled: bool,
    /// Whether the demo's image is on the Engine: only a `Ready` demo is in the catalog
    /// and takes trials.
    pub image_status: ImageStatus,
    /// Why the last pull failed, in words (`Failed` only).
    pub image_error: Option<String>,
    /// The digest (`sha256:…`) the last pull of a registry image resolved: every sandbox of
    /// the demo runs exactly that, until the next pull.
    pub image_digest: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Demo {
    /// Whether prospects may find it and start trials of it.
    pub fn on_offer(&self) -> bool {
        self.enabled && self.image_status.takes_trials()
    }

    /// Whether its image comes from a registry (pulled with the vendor's credentials) rather
    /// than being only on the Engine.
    pub fn pulls(&self) -> bool {
        ImageRef::parse(&self.spec.image).is_ok_and(|image| image.server().is_some())
    }

    /// The image its sandboxes run: a registry image pinned to the digest its last pull
    /// resolved (a tag moved in the registry since changes nothing), an Engine-only image as
    /// named.
    pub fn run_image(&self) -> String {
        match (ImageRef::parse(&self.spec.image), &self.image_digest) {
            (Ok(image), Some(digest)) if image.server().is_some() => image.pinned(digest),
            _ => self.spec.image.clone(),
        }
    }

    /// How its sandboxes (and warm pool members) run it: its spec, with `run_image`.
    pub fn run_spec(&self) -> DemoSpec {
        DemoSpec {
            image: self.run_image(),
            ..self.spec.clone()
        }
    }
}

/// Where a demo's image stands. Kept as its snake_case name (the API's `image_status`).
/// A registry image is `Pulling`, then `Ready` or `Failed` (with the registry's reason);
/// whatever is not `Ready` keeps the demo out of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Being pulled from its registry.
    Pulling,
    /// On the Engine: trials run it.
    Ready,
    /// The last pull failed (`Demo::image_error` says why); the vendor pulls again.
    Failed,
    /// It was on the Engine and is not any more (`docker image prune -a`, `docker rmi`):
    /// no trial can start until it is back.
    Missing,
}

impl ImageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pulling => "pulling",
            ImageStatus::Ready => "ready",
            ImageStatus::Failed => "failed",
            ImageStatus::Missing => "missing",
        }
    }

    pub fn parse(raw: &str) -> Option<ImageStatus> {
        match raw {
            "pulling" => Some(ImageStatus::Pulling),
            "ready" => Some(ImageStatus::Ready),
            "failed" => Some(ImageStatus::Failed),
            "missing" => Some(ImageStatus::Missing),
            _ => None,
        }
    }

    pub fn takes_trials(self) -> bool {
        self == ImageStatus::Ready
    }

    /// Why a demo in this state takes no trial, in words a prospect reads (the trial
    /// form's answer, the demo page, a trial that met the gap); `None` when it takes them.
    /// Never the Engine's own message.
    pub fn unavailable_because(self) -> Option<&'static str> {
        match self {
            ImageStatus::Ready => None,
            ImageStatus::Pulling => {
                Some("its product image is still being fetched; try again in a minute")
            }
            ImageStatus::Failed => {
                Some("its product image could not be fetched; the vendor has been told")
            }
            ImageStatus::Missing => {
                Some("its product image is missing on the server; the vendor has been told")
            }
        }
    }

    /// The sentence a prospect gets for a demo in this state, if it takes no trial.
    pub fn not_available(self) -> Option<String> {
        self.unavailable_because()
            .map(|why| format!("this demo is not available right now: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_and_only_ready_takes_trials() {
        for status in [
            ImageStatus::Pulling,
            ImageStatus::Ready,
            ImageStatus::Failed,
            ImageStatus::Missing,
        ] {
            assert_eq!(ImageStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
            assert_eq!(status.takes_trials(), status.not_available().is_none());
        }
        assert_eq!(ImageStatus::parse("gone"), None);
        let words = ImageStatus::Missing.not_available().unwrap();
        assert!(words.starts_with("this demo is not available right now"));
        assert!(!words.contains("Docker"), "{words}");
    }
}
