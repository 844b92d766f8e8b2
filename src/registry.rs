//! Vendors and their demos: registering and changing them, with the rules that need more
//! than parsing — the image must be on the Engine, a slug is unique per vendor.

use std::sync::Arc;

use serde_json::Value;

use crate::domain::token::IssuedToken;
use crate::domain::{
    Demo, DemoId, DemoManifest, DemoSpec, ImageRef, ImageStatus, Invalid, Policy, RegistryServer,
    Timestamp, Vendor, VendorId, VendorName,
};
use crate::engine::{Credentials, Engine, EngineError, PullCredentials};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the Docker Engine has no image {0} (nothing is pulled: build or load it first)")]
    ImageMissing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    policy: Policy,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, engine: Arc<dyn Engine>, policy: Policy) -> Self {
        Registry {
            store,
            engine,
            policy,
        }
    }

    /// A new vendor and its API key, which is shown this once.
    pub async fn create_vendor(&self, name: VendorName) -> Result<(Vendor, IssuedToken)> {
        let vendor = Vendor {
            id: VendorId::new(),
            name,
            created_at: Timestamp::now(),
        };
        let key = IssuedToken::for_vendor(vendor.id);
        self.store.insert_vendor(&vendor, key.hash()).await?;
        tracing::info!(vendor_id = %vendor.id, "vendor created");
        Ok((vendor, key))
    }

    async fn require_image(&self, image: &str) -> Result<()> {
        if !self.engine.image_exists(image).await? {
            return Err(RegistryError::ImageMissing(image.to_string()));
        }
        Ok(())
    }

    /// A new demo. A registry image is `pulling` (the caller starts the pull); an
    /// Engine-only one must be on the Engine.
    pub async fn register_demo(&self, vendor: VendorId, manifest: DemoManifest) -> Result<Demo> {
        let spec = DemoSpec::parse(manifest, &self.policy)?;
        let pulls = ImageRef::parse(&spec.image)?.server().is_some();
        if !pulls {
            self.require_image(&spec.image).await?;
        }
        let now = Timestamp::now();
        let demo = Demo {
            id: DemoId::new(),
            vendor_id: vendor,
            spec,
            enabled: true,
            // Just checked (an Engine-only image), or about to be pulled.
            image_status: if pulls {
                ImageStatus::Pulling
            } else {
                ImageStatus::Ready
            },
            image_error: None,
            image_digest: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_demo(&demo).await?;
        tracing::info!(demo_id = %demo.id, slug = demo.spec.slug.as_str(), "demo registered");
        Ok(demo)
    }

    /// Applies a merge patch: any manifest field but `slug`, plus `enabled`. Running sandboxes
    /// keep the spec they were made with.
    pub async fn update_demo(&self, mut demo: Demo, patch: Value) -> Result<Demo> {
        let mut patch = patch;
        if let Some(fields) = patch.as_object_mut()
            && let Some(enabled) = fields.remove("enabled")
        {
            demo.enabled = enabled
                .as_bool()
                .ok_or_else(|| Invalid::new("enabled", "must be true or false"))?;
        }
        let spec = demo.spec.patch(&patch, &self.policy)?;
        // A registry image is pulled by the caller once the change is saved.
        if spec.image != demo.spec.image && ImageRef::parse(&spec.image)?.server().is_none() {
            self.require_image(&spec.image).await?;
        }
        demo.spec = spec;
        demo.updated_at = Timestamp::now();
        self.store.update_demo(&demo).await?;
        Ok(demo)
    }

    pub async fn delete_demo(&self, id: DemoId) -> Result<bool> {
        Ok(self.store.delete_demo(id, Timestamp::now()).await?)
    }
}

/// The vendor's credentials for a registry, for the lifecycle's pulls.
#[async_trait::async_trait]
impl Credentials for Registry {
    async fn pull_credentials(
        &self,
        _vendor: VendorId,
        _server: &RegistryServer,
    ) -> std::result::Result<Option<PullCredentials>, String> {
        // Stored credentials arrive with the vendors' registries API.
        Ok(None)
    }
}
