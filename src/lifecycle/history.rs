//! Writing a sandbox's history. An event a vendor's webhook announces is written with its
//! delivery in one transaction, so no announced change is lost to a crash; the webhook
//! sender is then told there is work. Events of the deployment itself (`ServiceEvent`) are
//! written here too, and logged.

use std::sync::Arc;

use crate::domain::{
    Sandbox, SandboxEvent, SandboxId, ServiceEvent, ServiceEventRecord, Timestamp,
};
use crate::store::{NewEvent, Store};
use crate::webhooks::{self, Webhooks};

pub(super) struct History {
    store: Arc<dyn Store>,
    webhooks: Webhooks,
}

impl History {
    pub(super) fn new(store: Arc<dyn Store>, webhooks: Webhooks) -> History {
        History { store, webhooks }
    }

    /// Records `event` of sandbox `id` as happened `at`. A history that cannot be written
    /// (the database is down) is logged, not fatal: the change itself is in the record.
    pub(super) async fn record(&self, id: SandboxId, at: Timestamp, event: SandboxEvent) {
        let new = |announce| NewEvent {
            sandbox: id,
            at,
            event: &event,
            announce,
        };
        let written = match webhooks::announced_as(&event) {
            None => self.store.append_event(new(None)).await,
            Some(_) => match self.store.sandbox(id).await {
                Ok(sandbox) => {
                    let delivery = sandbox.and_then(|s| webhooks::delivery(&event, at, &s));
                    let written = self.store.append_event(new(delivery.as_ref())).await;
                    if delivery.is_some() {
                        self.webhooks.ring();
                    }
                    written
                }
                Err(err) => Err(err),
            },
        };
        if let Err(err) = written {
            tracing::warn!(sandbox_id = %id, kind = event.kind(), %err, "could not record an event");
        }
    }

    /// Records `event`, which the prospect caused, with its announcement, unless the
    /// sandbox has `most` of its kind already; whether it was written (the prospect is told
    /// only once it is kept).
    pub(super) async fn record_within(
        &self,
        sandbox: &Sandbox,
        at: Timestamp,
        event: SandboxEvent,
        most: u32,
    ) -> crate::store::Result<bool> {
        let delivery = webhooks::delivery(&event, at, sandbox);
        let new = NewEvent {
            sandbox: sandbox.id,
            at,
            event: &event,
            announce: delivery.as_ref(),
        };
        let written = self.store.append_event_within(new, most).await?;
        if written && delivery.is_some() {
            self.webhooks.ring();
        }
        Ok(written)
    }

    /// Records an event of the deployment, for the operators (and, when it is about a
    /// demo, for its vendor), and logs it. Not fatal if the database is down: the log has it.
    pub(super) async fn service(&self, at: Timestamp, event: ServiceEvent) {
        tracing::warn!(kind = event.kind(), "{}", event.detail());
        let vendor = match event.demo() {
            Some(demo) => match self.store.demo(demo).await {
                Ok(found) => found.map(|d| d.vendor_id),
                Err(_) => None,
            },
            None => None,
        };
        let record = ServiceEventRecord { at, vendor, event };
        if let Err(err) = self.store.append_service_event(&record).await {
            tracing::warn!(kind = record.event.kind(), %err, "could not record a service event");
        }
    }
}
