//! Where deliveries may go. A vendor's URL is checked when it is set, and its host is
//! resolved again on every delivery by a resolver that drops loopback, private and
//! link-local addresses (unless the deployment allows them), so a name that later resolves
//! somewhere private (DNS rebinding) reaches nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::Name;

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
pub(super) struct GuardedResolver {
    pub(super) allow_private: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
