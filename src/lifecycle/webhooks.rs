//! Webhooks: each lifecycle change of a vendor's sandboxes (`sandbox.created`, `.ready`,
//! `.extended`, `.ended`, `.failed`) is POSTed to the vendor's URL, signed with
//! `Testdrive-Signature: sha256=<hex HMAC-SHA256 of the exact body>`.
//!
//! At least once, in order per sandbox, nothing lost: a delivery is written to the outbox
//! in the same transaction as the event it announces; the sender leases the oldest
//! undelivered delivery of each sandbox, so a later change of a sandbox waits for the
//! earlier one; a failed attempt is retried with exponential backoff and jitter until it
//! is older than `give_up_after` (more than a day); a sender that dies lets its lease run
//! out and the delivery goes again. A slow or failing endpoint costs the sender only:
//! provisioning just writes a row.
//!
//! Addresses are checked where they are used: the sender's resolver drops loopback,
//! private and link-local addresses (unless allowed), so a name that later resolves
//! somewhere private (DNS rebinding) reaches nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::Lifecycle;
use crate::domain::{DemoId, EndReason, Prospect, SandboxId, SandboxStatus, Timestamp};
use crate::store::{Attempt, AttemptOutcome, Delivery, NewDelivery, Sandbox};

#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Deliver to loopback, private and link-local addresses too (tests, one-box setups).
    pub allow_private: bool,
    /// The wait before the second attempt; each later wait doubles, up to an hour.
    pub first_retry: Duration,
    /// A delivery older than this is given up (at least a day).
    pub give_up_after: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private: false,
            first_retry: Duration::from_secs(2),
            give_up_after: Duration::from_secs(26 * 3600),
        }
    }
}

/// How long a sender holds a delivery; past it, the delivery is free to go again.
const LEASE: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once (each to a different sandbox's queue).
const AT_ONCE: usize = 8;
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// The webhook type announcing an event of this kind, if any.
pub fn webhook_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "created" => "sandbox.created",
        "ready" => "sandbox.ready",
        "extended" => "sandbox.extended",
        "failed" => "sandbox.failed",
        k if EndReason::parse(k).is_some() => "sandbox.ended",
        _ => return None,
    })
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    at: Timestamp,
    sandbox: SandboxPayload<'a>,
}

/// The sandbox as the vendor sees it (no token, no address).
#[derive(Serialize)]
struct SandboxPayload<'a> {
    id: SandboxId,
    demo_id: DemoId,
    status: SandboxStatus,
    created_at: Timestamp,
    ready_at: Option<Timestamp>,
    expires_at: Timestamp,
    ended_at: Option<Timestamp>,
    end_reason: Option<EndReason>,
    data_deleted_at: Option<Timestamp>,
    prospect: &'a Prospect,
    files: &'a [crate::domain::FileRecord],
}

/// The delivery announcing `kind` of `sandbox`, as of now.
pub fn delivery(kind: &str, at: Timestamp, sandbox: &Sandbox) -> Option<NewDelivery> {
    let webhook_type = webhook_type(kind)?;
    let id = uuid::Uuid::now_v7().to_string();
    let body = Body {
        id: &id,
        kind: webhook_type,
        at,
        sandbox: SandboxPayload {
            id: sandbox.id,
            demo_id: sandbox.demo_id,
            status: sandbox.status,
            created_at: sandbox.created_at,
            ready_at: sandbox.ready_at,
            expires_at: sandbox.expires_at,
            ended_at: sandbox.ended_at,
            end_reason: sandbox.end_reason,
            data_deleted_at: sandbox.data_deleted_at,
            prospect: &sandbox.prospect,
            files: &sandbox.files,
        },
    };
    Some(NewDelivery {
        body: serde_json::to_string(&body).expect("a webhook body serialises"),
        id,
        vendor_id: sandbox.vendor_id,
        kind: webhook_type.to_string(),
    })
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An address a webhook may not go to unless private destinations are allowed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Resolves a webhook's host, keeping only the addresses it may reach.
async fn resolve(host: &str, port: u16, allow_private: bool) -> std::io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if all.is_empty() {
        return Err(std::io::Error::other(format!("{host} does not resolve")));
    }
    let allowed: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| allow_private || !is_private(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(std::io::Error::other(format!(
            "{host} resolves only to loopback, private or link-local addresses"
        )));
    }
    Ok(allowed)
}

/// Checks, when a vendor sets its URL, that its host resolves and not to a private address.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    let host = uri.host().ok_or("must name a host")?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    tokio::time::timeout(Duration::from_secs(5), resolve(host, port, allow_private))
        .await
        .map_err(|_| format!("{host} did not resolve in time"))?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The sender's DNS resolver: `resolve` under the deployment's rule.
#[derive(Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            // The connector sets the port; 0 here.
            Ok(resolve(name.as_str(), 0, allow_private).await?.into_iter())
        })
    }
}

type Sender = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

fn sender(allow_private: bool) -> Sender {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
    http.enforce_http(false);
    http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
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

impl Lifecycle {
    /// One delivery attempt, recorded.
    async fn deliver(&self, client: &Sender, delivery: Delivery) {
        let settings = &self.inner.settings.webhooks;
        let store = &self.inner.store;
        let now = self.now();
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
            Some((url, secret)) => {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, post(client, url, secret, &delivery))
                    .await
                {
                    Ok(Ok(status)) => (Some(status), None),
                    Ok(Err(err)) => (None, Some(err)),
                    Err(_) => (None, Some(format!("no answer within {ATTEMPT_TIMEOUT:?}"))),
                }
            }
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

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let client = sender(lifecycle.inner.settings.webhooks.allow_private);
    loop {
        let now = lifecycle.now();
        let lease_until = Timestamp::from_millis(now.millis() + LEASE.as_millis() as i64);
        match lifecycle
            .inner
            .store
            .claim_deliveries(now, lease_until, AT_ONCE as u32 * 2)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                let sending = stream::iter(batch)
                    .for_each_concurrent(AT_ONCE, |d| lifecycle.deliver(&client, d));
                tokio::select! {
                    _ = sending => continue,
                    // Requests in flight are dropped; the next start sends them again.
                    _ = shutdown.cancelled() => return,
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not read the webhook outbox"),
        }
        let wait = match lifecycle.inner.store.next_delivery_at().await {
            Ok(Some(at)) => lifecycle.now().until(at).min(Duration::from_secs(30)),
            _ => Duration::from_secs(30),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            _ = lifecycle.inner.deliveries.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_exact_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

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

    #[test]
    fn lifecycle_changes_map_to_webhook_types() {
        assert_eq!(webhook_type("created"), Some("sandbox.created"));
        assert_eq!(webhook_type("expired"), Some("sandbox.ended"));
        assert_eq!(webhook_type("ended_by_admin"), Some("sandbox.ended"));
        assert_eq!(webhook_type("failed"), Some("sandbox.failed"));
        assert_eq!(webhook_type("data_placed"), None);
        assert_eq!(webhook_type("slept"), None);
    }
}
