//! Vendors and their demos: registering and changing them, with the rules that need more
//! than parsing — an Engine-only image must be on the Engine and, when a vendor names it,
//! given to that vendor; a slug is unique per vendor. Also what a vendor may use: the
//! images operators give it, and its registry credentials (the password sealed by the
//! deployment's `SecretBox`, opened only for a pull).

use std::sync::Arc;

use serde_json::Value;

use crate::domain::token::IssuedToken;
use crate::domain::{
    Demo, DemoId, DemoManifest, DemoSpec, ImageGrant, ImageRef, ImageStatus, Invalid, Policy,
    RegistryLogin, RegistryServer, StoredLogin, Timestamp, Vendor, VendorId, VendorName,
    given_image,
};
use crate::engine::{Credentials, Engine, EngineError, PullCredentials};
use crate::secrets::{SecretBox, SecretError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the Docker Engine has no image {0} (nothing is pulled: build or load it first)")]
    ImageMissing(String),
    /// A vendor named an Engine-only image not given to it: worded the same whether or not
    /// the image exists, so that no vendor learns what others run.
    #[error(
        "{0} is not an image you may use: name an image in your registry, or ask the \
         operators to give you this one"
    )]
    NotYourImage(String),
    #[error("no such vendor")]
    NoSuchVendor,
    /// Stored credentials that this deployment's key cannot open (another key, or altered).
    #[error("the stored credentials for {server} cannot be opened: {source}")]
    Sealed { server: String, source: SecretError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Who registers or changes a demo: operators may name any image (it must be there); a
/// vendor only an image of a registry or one given to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acting {
    Operator,
    Vendor,
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    engine: Arc<dyn Engine>,
    policy: Policy,
    secrets: SecretBox,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        engine: Arc<dyn Engine>,
        policy: Policy,
        secrets: SecretBox,
    ) -> Self {
        Registry {
            store,
            engine,
            policy,
            secrets,
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

    /// Whether `vendor` may name `image` in a demo, acting as `by`. A registry image is
    /// pulled with the vendor's own credentials: its registry decides. An Engine-only image
    /// must be given to a vendor (checked first, so a vendor cannot tell another's image
    /// from none), and be on the Engine.
    async fn require_image(&self, vendor: VendorId, image: &str, by: Acting) -> Result<()> {
        let parsed = ImageRef::parse(image)?;
        if parsed.server().is_some() {
            return Ok(());
        }
        if by == Acting::Vendor
            && !self
                .store
                .is_given(vendor, &parsed.pull_reference())
                .await?
        {
            return Err(RegistryError::NotYourImage(image.to_string()));
        }
        if !self.engine.image_exists(image).await? {
            return Err(RegistryError::ImageMissing(image.to_string()));
        }
        Ok(())
    }

    /// A new demo. A registry image is `pulling` (the caller starts the pull); an
    /// Engine-only one must be on the Engine and, for a vendor, given to it.
    pub async fn register_demo(
        &self,
        vendor: VendorId,
        manifest: DemoManifest,
        by: Acting,
    ) -> Result<Demo> {
        let spec = DemoSpec::parse(manifest, &self.policy)?;
        self.require_image(vendor, &spec.image, by).await?;
        let pulls = ImageRef::parse(&spec.image)?.server().is_some();
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
    pub async fn update_demo(&self, mut demo: Demo, patch: Value, by: Acting) -> Result<Demo> {
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
        if spec.image != demo.spec.image {
            self.require_image(demo.vendor_id, &spec.image, by).await?;
        }
        demo.spec = spec;
        demo.updated_at = Timestamp::now();
        self.store.update_demo(&demo).await?;
        Ok(demo)
    }

    pub async fn delete_demo(&self, id: DemoId) -> Result<bool> {
        Ok(self.store.delete_demo(id, Timestamp::now()).await?)
    }

    /// Gives an Engine-only image to a vendor (operators' act): the grant, and whether it is
    /// new. The image need not be on the Engine yet.
    pub async fn give_image(&self, vendor: VendorId, image: &str) -> Result<(ImageGrant, bool)> {
        let image = given_image(image)?;
        if self.store.vendor(vendor).await?.is_none() {
            return Err(RegistryError::NoSuchVendor);
        }
        let (grant, new) = self
            .store
            .give_image(&ImageGrant {
                image,
                vendor_id: vendor,
                given_at: Timestamp::now(),
            })
            .await?;
        if new {
            tracing::info!(vendor_id = %vendor, image = grant.image.as_str(), "image given");
        }
        Ok((grant, new))
    }

    /// Keeps the vendor's login to `server`, the password sealed, replacing any earlier one.
    pub async fn put_login(
        &self,
        vendor: VendorId,
        server: RegistryServer,
        login: RegistryLogin,
    ) -> Result<()> {
        let stored = StoredLogin {
            sealed_password: self.secrets.seal(&login.password),
            server,
            username: login.username,
            updated_at: Timestamp::now(),
        };
        self.store.put_login(vendor, &stored).await?;
        tracing::info!(vendor_id = %vendor, server = %stored.server, "registry credentials stored");
        Ok(())
    }

    /// The vendor's credentials for `server`, opened for one pull; `None` if it stored none.
    pub async fn pull_credentials(
        &self,
        vendor: VendorId,
        server: &RegistryServer,
    ) -> Result<Option<PullCredentials>> {
        let Some(stored) = self.store.login(vendor, server).await? else {
            return Ok(None);
        };
        let password = self
            .secrets
            .open(&stored.sealed_password)
            .map_err(|source| RegistryError::Sealed {
                server: server.to_string(),
                source,
            })?;
        Ok(Some(PullCredentials {
            server: stored.server.to_string(),
            username: stored.username,
            password,
        }))
    }
}

/// The vendor's credentials for a registry, for the lifecycle's pulls.
#[async_trait::async_trait]
impl Credentials for Registry {
    async fn pull_credentials(
        &self,
        vendor: VendorId,
        server: &RegistryServer,
    ) -> std::result::Result<Option<PullCredentials>, String> {
        Registry::pull_credentials(self, vendor, server)
            .await
            .map_err(|e| e.to_string())
    }
}
