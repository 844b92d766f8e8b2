//! First-start seeding: a demo vendor and its demos from manifest files, so a fresh
//! installation has something to try at once. The demos' Engine-only images are given to the
//! demo vendor, so its key can change them as any vendor's can. Idempotent: an existing
//! vendor or slug is left as it is.

use std::path::{Path, PathBuf};

use crate::domain::token::IssuedToken;
use crate::domain::{DemoManifest, ImageRef, VendorName};
use crate::registry::{Acting, Registry, RegistryError};
use crate::store::Store;

pub const VENDOR_NAME: &str = "Testdrive Demo Co";

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a demo manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Register {
        path: PathBuf,
        source: RegistryError,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub struct Seeded {
    /// The demo vendor's key, when this run created the vendor.
    pub new_vendor_key: Option<IssuedToken>,
    pub registered: Vec<String>,
}

pub async fn apply(
    registry: &Registry,
    store: &dyn Store,
    manifests: &[PathBuf],
    key_file: &Path,
) -> Result<Seeded, SeedError> {
    let (vendor, new_vendor_key) = match store.vendor_by_name(VENDOR_NAME).await? {
        Some(vendor) => (vendor, None),
        None => {
            let (vendor, key) = registry
                .create_vendor(VendorName::parse(VENDOR_NAME).expect("a valid name"))
                .await?;
            if let Err(err) = crate::secrets::write_secret(key_file, key.expose()) {
                tracing::warn!(%err, path = %key_file.display(), "could not store the demo vendor's key");
            }
            (vendor, Some(key))
        }
    };
    let existing: Vec<String> = store
        .demos(Some(vendor.id))
        .await?
        .into_iter()
        .map(|d| d.spec.slug.as_str().to_string())
        .collect();
    let mut registered = Vec::new();
    for path in manifests {
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: DemoManifest =
            serde_json::from_str(&text).map_err(|source| SeedError::Parse {
                path: path.clone(),
                source,
            })?;
        if let Some(image) = &manifest.image
            && ImageRef::parse(image).is_ok_and(|image| image.server().is_none())
        {
            registry
                .give_image(vendor.id, image)
                .await
                .map_err(|source| SeedError::Register {
                    path: path.clone(),
                    source,
                })?;
        }
        if manifest
            .slug
            .as_ref()
            .is_some_and(|slug| existing.contains(slug))
        {
            continue;
        }
        let demo = registry
            .register_demo(vendor.id, manifest, Acting::Operator)
            .await
            .map_err(|source| SeedError::Register {
                path: path.clone(),
                source,
            })?;
        registered.push(demo.spec.slug.as_str().to_string());
    }
    Ok(Seeded {
        new_vendor_key,
        registered,
    })
}
