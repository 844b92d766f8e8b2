//! Vendor webhooks: each lifecycle change of a vendor's sandboxes (`sandbox.created`,
//! `.ready`, `.extended`, `.ended`, `.failed`) is POSTed to the vendor's URL, signed with
//! `Testdrive-Signature: sha256=<hex HMAC-SHA256 of the exact body>`.
//!
//! At least once, in order per sandbox, nothing lost: the lifecycle writes a delivery to
//! the outbox in the same transaction as the event it announces (`payload` builds it) and
//! rings the bell; the sender (`sender`, a worker of its own) leases the oldest undelivered
//! delivery of each sandbox, so a later change of a sandbox waits for the earlier one; a
//! failed attempt is retried with exponential backoff and jitter until it is older than
//! `give_up_after` (more than a day); a sender that dies lets its lease run out and the
//! delivery goes again. A slow or failing endpoint costs the sender only: provisioning just
//! writes a row. Where deliveries may go is `destination`'s to say, when a URL is set and
//! on every connection. The signing secrets are stored sealed (`secrets::SecretBox`), never
//! as plain text.

mod destination;
mod payload;
mod sender;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use payload::{announced_as, delivery, signature};

use crate::clock::Clock;
use crate::domain::{VendorId, WebhookUrl};
use crate::secrets::SecretBox;
use crate::store::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Deliver to loopback, private and link-local addresses too (tests, one-box setups).
    pub allow_private: bool,
    /// The wait before the second attempt; each later wait doubles, up to an hour.
    pub first_retry: Duration,
    /// A delivery older than this is given up (at least a day).
    pub give_up_after: Duration,
    /// Seals the vendors' signing secrets for the database.
    pub secrets: SecretBox,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private: false,
            first_retry: Duration::from_secs(2),
            give_up_after: Duration::from_secs(26 * 3600),
            // A key for this process only: a deployment passes the one it keeps.
            secrets: SecretBox::generate(),
        }
    }
}

/// Why a webhook URL was not set.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefused {
    #[error("{0}")]
    Destination(String),
    #[error(transparent)]
    Store(StoreError),
}

/// The webhook service: vendors' URLs and the sender. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    settings: WebhookSettings,
    /// Wakes the sender: a delivery was written.
    bell: Notify,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Webhooks {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: WebhookSettings) -> Self {
        let bell = Notify::new();
        let inner = Inner {
            settings,
            bell,
            store,
            clock,
        };
        Webhooks {
            inner: Arc::new(inner),
        }
    }

    /// Tells the sender a delivery was written.
    pub fn ring(&self) {
        self.inner.bell.notify_one();
    }

    /// Sets (or with `None` removes) a vendor's webhook URL, after checking its host
    /// resolves to addresses deliveries may reach. The secret, when new, is returned: it is
    /// shown once, and stored only sealed.
    pub async fn set_url(
        &self,
        vendor: VendorId,
        url: Option<&WebhookUrl>,
    ) -> Result<Option<String>, WebhookRefused> {
        if let Some(url) = url {
            destination::check_destination(url.as_str(), self.inner.settings.allow_private)
                .await
                .map_err(|refused| {
                    tracing::debug!(%vendor, why = refused.why(), "webhook URL refused");
                    WebhookRefused::Destination(refused.to_string())
                })?;
        }
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
        let sealed = self.inner.settings.secrets.seal(&secret);
        let fresh = self
            .inner
            .store
            .set_vendor_webhook(vendor, url.map(WebhookUrl::as_str), &sealed)
            .await
            .map_err(WebhookRefused::Store)?;
        Ok(fresh.then_some(secret))
    }

    /// At start: secrets an earlier version stored as plain text are sealed, and
    /// deliveries the previous run was sending go again (at least once).
    pub async fn recover(&self) -> crate::store::Result<()> {
        let store = &self.inner.store;
        for (vendor, stored) in store.webhook_secrets().await? {
            if !SecretBox::is_sealed(&stored) {
                let sealed = self.inner.settings.secrets.seal(&stored);
                store
                    .replace_webhook_secret(vendor, &stored, &sealed)
                    .await?;
            }
        }
        store.release_delivery_leases().await
    }

    /// Sends deliveries until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        sender::run(self, shutdown).await
    }
}
