//! The sender: leases the oldest undelivered delivery of each sandbox, POSTs it signed, and
//! records the attempt — delivered, retried later with backoff, or given up.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use super::destination::GuardedConnector;
use super::payload::signature;
use crate::domain::Timestamp;
use crate::domain::webhook::{Attempt, AttemptOutcome, Delivery};

/// How long a sender holds a delivery; past it, the delivery is free to go again.
const LEASE: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once (each to a different sandbox's queue).
const AT_ONCE: usize = 8;
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

type Sender = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// The HTTP client of deliveries: every connection it opens goes through
/// `GuardedConnector`, under the deployment's rule as it is now.
fn sender(allow_private: bool) -> Sender {
    let http = GuardedConnector {
        allow_private,
        connect_timeout: ATTEMPT_TIMEOUT,
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let https = match builder.with_native_roots() {
        Ok(roots) => roots,
        Err(err) => {
            tracing::warn!(%err, "no system CA certificates: https webhooks will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    }
    .https_or_http()
    .enable_http1()
    .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// The wait before attempt `attempt + 1`: doubling from `first`, at most an hour, with
/// ±25 % jitter so that many failed deliveries do not retry in step.
fn backoff(first: Duration, attempt: u32) -> Duration {
    let base = first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(LONGEST_WAIT);
    base.mul_f64(rand::random_range(0.75..1.25))
}

impl Webhooks {
    /// One delivery attempt, recorded.
    async fn deliver(&self, client: &Sender, delivery: Delivery) {
        let settings = &self.inner.settings;
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let webhook = match store.vendor_webhook(delivery.vendor_id).await {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(%err, "could not read a vendor's webhook; will retry");
                return; // the lease runs out and it goes again
            }
        };
        let (status, error) = match &webhook {
            None => (
                None,
                Some("the vendor has no webhook URL any more".to_string()),
            ),
            Some((url, sealed)) => match settings.secrets.open(sealed) {
                Ok(secret) => {
                    let attempt = post(client, url, &secret, &delivery);
                    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
                        Ok(Ok(status)) => (Some(status), None),
                        Ok(Err(err)) => (None, Some(err)),
                        Err(_) => (None, Some(format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
                    }
                }
                Err(err) => {
                    tracing::warn!(vendor_id = %delivery.vendor_id, %err, "cannot open a webhook secret");
                    let why = "the webhook secret cannot be opened with this deployment's key";
                    (None, Some(why.to_string()))
                }
            },
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let age = delivery.created_at.until(now);
        let next = if delivered {
            AttemptOutcome::Delivered
        } else if webhook.is_none() || age >= settings.give_up_after {
            AttemptOutcome::Abandoned
        } else {
            let wait = backoff(settings.first_retry, delivery.attempts + 1);
            AttemptOutcome::RetryAt(Timestamp::from_millis(
                now.millis() + wait.as_millis() as i64,
            ))
        };
        let outcome = match next {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "retry",
            AttemptOutcome::Abandoned => "abandoned",
        };
        metrics::counter!("testdrive_webhook_attempts_total", "outcome" => outcome).increment(1);
        if !delivered {
            tracing::info!(
                delivery = %delivery.id, sandbox_id = %delivery.sandbox_id, ?status,
                error = error.as_deref().unwrap_or(""), outcome, "webhook not delivered"
            );
        }
        let attempt = Attempt {
            at: now,
            status,
            error,
            next,
        };
        if let Err(err) = store.record_attempt(delivery.seq, &attempt).await {
            tracing::warn!(%err, "could not record a webhook attempt; it will go again");
        }
    }
}

/// POSTs the delivery; the receiver's status, or why there was none.
async fn post(client: &Sender, url: &str, secret: &str, d: &Delivery) -> Result<u16, String> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "testdrive-webhooks")
        .header("testdrive-signature", signature(secret, d.body.as_bytes()))
        .header("testdrive-delivery", &d.id)
        .header("testdrive-event", &d.kind)
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| format!("the URL cannot be requested: {e}"))?;
    let response = client.request(request).await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            text = format!("{text}: {inner}");
            source = inner.source();
        }
        text
    })?;
    let status = response.status().as_u16();
    // Read (and drop) a bounded answer so the connection can be reused.
    let _ = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect()).await;
    Ok(status)
}

pub(super) async fn run(webhooks: Webhooks, shutdown: CancellationToken) {
    let client = sender(webhooks.inner.settings.allow_private);
    loop {
        let now = webhooks.inner.clock.now();
        let lease_until = Timestamp::from_millis(now.millis() + LEASE.as_millis() as i64);
        match webhooks
            .inner
            .store
            .claim_deliveries(now, lease_until, AT_ONCE as u32 * 2)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                let sending = stream::iter(batch)
                    .for_each_concurrent(AT_ONCE, |d| webhooks.deliver(&client, d));
                tokio::select! {
                    _ = sending => continue,
                    // Requests in flight are dropped; the next start sends them again.
                    _ = shutdown.cancelled() => return,
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not read the webhook outbox"),
        }
        let wait = match webhooks.inner.store.next_delivery_at().await {
            Ok(Some(at)) => webhooks
                .inner
                .clock
                .now()
                .until(at)
                .min(Duration::from_secs(30)),
            _ => Duration::from_secs(30),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            _ = webhooks.inner.bell.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_an_hour() {
        let first = Duration::from_secs(2);
        for (attempt, base) in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 1024.0)] {
            let wait = backoff(first, attempt).as_secs_f64();
            assert!(
                (base * 0.75..=base * 1.25).contains(&wait),
                "{attempt}: {wait}"
            );
        }
        assert!(backoff(first, 40) <= LONGEST_WAIT.mul_f64(1.25));
    }
}
