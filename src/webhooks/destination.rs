//! Where deliveries may go, decided in one place. A webhook URL's host becomes addresses
//! only through `addresses`: a literal IP, in any spelling a resolver would accept (`127.1`,
//! `2130706433`, `0x7f.1`, `017700000001`, `[::ffff:7f00:1]`, …), is read here the way the
//! URL standard reads it and judged as the address it is; a name is resolved and each of its
//! addresses judged. The sender connects only to what `addresses` returns (`GuardedConnector`
//! is its whole connector: no resolver or IP parser of hyper's in between), on every new
//! connection, under the deployment's current rule — so a URL saved while private
//! destinations were allowed, or a name that later resolves somewhere private (DNS
//! rebinding), reaches nothing.
//!
//! A refusal reads the same whatever its cause (no such name, a private address, a
//! malformed host), so the check cannot be used to probe internal DNS.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The one answer to a destination deliveries may not reach.
pub const REFUSED: &str = "must name a host that resolves to public addresses only \
                           (not loopback, private, link-local or other special-purpose ones)";

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A destination deliveries may not reach. It displays as `REFUSED` whatever the cause;
/// the cause is for the service's log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    why: &'static str,
}

impl Refused {
    /// The cause, for the service's own log (never for the vendor).
    pub fn why(&self) -> &'static str {
        self.why
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REFUSED)
    }
}

impl std::error::Error for Refused {}

/// What an address is to a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// A globally routed address.
    Public,
    /// Loopback, private-use, shared (CGNAT), link-local, unique-local or site-local:
    /// reached only where the deployment allows private destinations (tests, one box).
    Private,
    /// Every other special-purpose address (IANA's special-purpose registries, NAT64, 6to4
    /// relays, documentation, benchmarking, multicast, reserved, unspecified, broadcast,
    /// and IPv6 outside global unicast): never reached.
    Special,
}

/// An IPv4 block: (first address, prefix length).
type V4Block = ([u8; 4], u8);
/// An IPv6 block: (first address, prefix length).
type V6Block = (u128, u8);

const V4_PRIVATE: &[V4Block] = &[
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
];

const V4_SPECIAL: &[V4Block] = &[
    ([0, 0, 0, 0], 8),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 88, 99, 0], 24),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    // Reserved, with the limited broadcast 255.255.255.255.
    ([240, 0, 0, 0], 4),
];

const V6_PRIVATE: &[V6Block] = &[
    (1, 128),            // ::1
    (0xfc00 << 112, 7),  // unique local
    (0xfe80 << 112, 10), // link-local
    (0xfec0 << 112, 10), // site-local (deprecated)
];

/// Blocks inside global unicast (2000::/3) that are not globally routed; everything outside
/// 2000::/3 (`::`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
/// discard `100::/64`, segment routing `5f00::/16`, multicast `ff00::/8`, …) is special
/// already.
const V6_SPECIAL: &[V6Block] = &[
    (0x2001 << 112, 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID
    ((0x2001 << 112) | (0xdb8 << 96), 32), // documentation
    (0x3fff << 112, 20), // documentation
];

fn in_v4(ip: Ipv4Addr, blocks: &[V4Block]) -> bool {
    blocks.iter().any(|&(first, len)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from_be_bytes(first)
    })
}

fn in_v6(ip: Ipv6Addr, blocks: &[V6Block]) -> bool {
    blocks.iter().any(|&(first, len)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        u128::from(ip) & mask == first
    })
}

/// What `ip` is to a webhook. An IPv6 address that carries an IPv4 one for the network to
/// reach (IPv4-mapped `::ffff:0:0/96`, 6to4 `2002::/16`) is judged by the IPv4 address.
pub fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) if in_v4(v4, V4_PRIVATE) => Reach::Private,
        IpAddr::V4(v4) if in_v4(v4, V4_SPECIAL) => Reach::Special,
        IpAddr::V4(_) => Reach::Public,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reach(v4.into());
            }
            let [first, high, low, ..] = v6.segments();
            if first == 0x2002 {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                return reach(Ipv4Addr::new(a, b, c, d).into());
            }
            if in_v6(v6, V6_PRIVATE) {
                Reach::Private
            } else if first & 0xe000 != 0x2000 || in_v6(v6, V6_SPECIAL) {
                Reach::Special
            } else {
                Reach::Public
            }
        }
    }
}

/// Whether a delivery may go to `ip` under the deployment's rule.
pub fn may_reach(ip: IpAddr, allow_private: bool) -> bool {
    match reach(ip) {
        Reach::Public => true,
        Reach::Private => allow_private,
        Reach::Special => false,
    }
}

/// A URL's host as the URL standard reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Reads a host: `[…]` is an IPv6 address; a host whose last label is a number is an IPv4
/// address in one of the spellings resolvers accept (one to four parts, each decimal, octal
/// with a leading `0`, or hexadecimal with `0x`), or nothing; anything else must be a DNS
/// name (letters, digits, `-`, `_`). `None`: no host a delivery may be sent to.
fn parse_host(raw: &str) -> Option<Host> {
    if let Some(inner) = raw.strip_prefix('[') {
        let v6: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
        return Some(Host::Ip(v6.into()));
    }
    let host = raw.to_ascii_lowercase();
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(&host).split('.').collect();
    let last = labels.last().copied().unwrap_or_default();
    let ends_in_a_number =
        (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || number(last).is_some();
    if ends_in_a_number {
        return ipv4(&labels).map(|v4| Host::Ip(v4.into()));
    }
    let is_name = host.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    is_name.then_some(Host::Name(host))
}

/// One part of an IPv4 address: `0x…` hexadecimal, `0…` octal, else decimal.
fn number(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
        if hex.is_empty() {
            return Some(0);
        }
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// One to four parts: each but the last is a byte, the last fills the remaining bytes
/// (`127.1` is 127.0.0.1, `2130706433` is 127.0.0.1).
fn ipv4(parts: &[&str]) -> Option<Ipv4Addr> {
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts.iter().map(|p| number(p)).collect::<Option<_>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) || *last >= 1u64 << (8 * (5 - numbers.len())) {
        return None;
    }
    let mut address = *last;
    for (i, &n) in leading.iter().enumerate() {
        address += n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(address as u32))
}

/// The addresses a delivery to `uri` may connect to under the deployment's rule: the
/// literal IP, or those the name resolves to that may be reached. The only way a webhook
/// URL's host becomes an address.
pub async fn addresses(uri: &Uri, allow_private: bool) -> Result<Vec<SocketAddr>, Refused> {
    let refused = |why| Refused { why };
    let host = uri.host().ok_or(refused("no host"))?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let candidates: Vec<IpAddr> = match parse_host(host).ok_or(refused("not a host"))? {
        Host::Ip(ip) => vec![ip],
        Host::Name(name) => tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((name.as_str(), port)),
        )
        .await
        .map_err(|_| refused("no answer from the resolver in time"))?
        .map_err(|_| refused("does not resolve"))?
        .map(|a| a.ip())
        .collect(),
    };
    if candidates.is_empty() {
        return Err(refused("does not resolve"));
    }
    let allowed: Vec<SocketAddr> = candidates
        .into_iter()
        .filter(|&ip| may_reach(ip, allow_private))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    if allowed.is_empty() {
        return Err(refused("only addresses deliveries may not reach"));
    }
    Ok(allowed)
}

/// Checks, when a vendor sets its URL, that deliveries could reach it.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), Refused> {
    let uri: Uri = url.parse().map_err(|_| Refused { why: "not a URL" })?;
    addresses(&uri, allow_private).await.map(|_| ())
}

/// The sender's connector: TCP to the addresses `addresses` allows, tried in turn.
#[derive(Clone)]
pub(super) struct GuardedConnector {
    pub(super) allow_private: bool,
    pub(super) connect_timeout: Duration,
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let GuardedConnector {
            allow_private,
            connect_timeout,
        } = self.clone();
        Box::pin(async move {
            let allowed = addresses(&uri, allow_private).await.map_err(|refused| {
                tracing::debug!(host = uri.host(), why = refused.why(), "webhook refused");
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused)
            })?;
            let mut last = None;
            for addr in allowed {
                match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        return Ok(TokioIo::new(tcp));
                    }
                    Ok(Err(err)) => last = Some(err),
                    Err(_) => {
                        last = Some(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no connection within {connect_timeout:?}"),
                        ))
                    }
                }
            }
            Err(last.expect("at least one address was tried"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_ipv4_spelling_is_read_as_the_address_it_is() {
        let loopback = Host::Ip(ip("127.0.0.1"));
        for spelling in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0x7f.1",
            "0X7F.0.0.1",
            "0x7f000001",
            "017700000001",
            "0177.0.0.01",
            "127.0.0.1.",
            "0x7f.0x0.0x0.0x1",
        ] {
            assert_eq!(parse_host(spelling), Some(loopback.clone()), "{spelling}");
        }
        assert_eq!(parse_host("0"), Some(Host::Ip(ip("0.0.0.0"))));
        assert_eq!(parse_host("0x"), Some(Host::Ip(ip("0.0.0.0"))));
        assert_eq!(parse_host("10.0x10.1"), Some(Host::Ip(ip("10.16.0.1"))));
        // Numeric-looking hosts that are no address: refused, never handed to a resolver.
        for bad in [
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "1.2.65536",
            "4294967296",
            "08.1.1.1",
            "0x7g.1",
            "127..1",
            "example.0x10",
            "example.123",
            "",
            ".",
            "exa mple.com",
            "ex%41mple.com",
            "a..b",
            "[::1",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
        assert_eq!(
            parse_host("Hooks.Example.COM."),
            Some(Host::Name("hooks.example.com.".into()))
        );
        assert_eq!(
            parse_host("1.2.3.4.nip.io"),
            Some(Host::Name("1.2.3.4.nip.io".into()))
        );
        assert_eq!(
            parse_host("[::ffff:7f00:1]"),
            Some(Host::Ip(ip("::ffff:127.0.0.1")))
        );
    }

    #[test]
    fn private_addresses_are_reached_only_where_allowed() {
        for private in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            // By the IPv4 address they carry.
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2002:c0a8:101::1",
        ] {
            assert_eq!(reach(ip(private)), Reach::Private, "{private}");
            assert!(!may_reach(ip(private), false), "{private}");
            assert!(may_reach(ip(private), true), "{private}");
        }
    }

    #[test]
    fn every_special_purpose_range_is_refused() {
        for special in [
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0.0.0.0",
            "::ffff:198.18.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:ffff::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002:e000:1::",
            "2002:c612:1::",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
            "ff02::1",
            "ff0e::1",
            "4000::1",
            "8000::1",
        ] {
            assert_eq!(reach(ip(special)), Reach::Special, "{special}");
            assert!(!may_reach(ip(special), true), "{special}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:2800:220:1::1",
            "2001:200::1",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "3fff:1000::1",
        ] {
            assert_eq!(reach(ip(public)), Reach::Public, "{public}");
            assert!(may_reach(ip(public), false), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_with_a_literal_ip_are_judged_like_resolved_names() {
        for url in [
            "http://127.0.0.1/h",
            "http://127.1/h",
            "http://2130706433/h",
            "http://0x7f.1/h",
            "http://017700000001/h",
            "https://0x7f000001:8443/h",
            "http://[::1]/h",
            "http://[::ffff:127.0.0.1]/h",
            "http://[::ffff:7f00:1]/h",
            "http://[64:ff9b::7f00:1]/h",
            "http://[64:ff9b:1::a00:1]/h",
            "http://[2002:7f00:1::]/h",
            "http://[2001::1]/h",
            "http://[::127.0.0.1]/h",
            "http://198.18.0.1/h",
            "http://240.0.0.1/h",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/h",
            "http://1.2.3.4.5/h",
        ] {
            let refused = check_destination(url, false).await.unwrap_err();
            assert_eq!(refused.to_string(), REFUSED, "{url}");
        }
        let uri: Uri = "http://127.1:9/h".parse().unwrap();
        assert_eq!(
            addresses(&uri, true).await.unwrap(),
            vec!["127.0.0.1:9".parse::<SocketAddr>().unwrap()],
            "allowed, and connected to as the address it is"
        );
        let uri: Uri = "https://8.8.8.8/h".parse().unwrap();
        assert_eq!(
            addresses(&uri, false).await.unwrap(),
            vec!["8.8.8.8:443".parse::<SocketAddr>().unwrap()]
        );
        // Special ranges stay refused even where private destinations are allowed.
        assert!(
            check_destination("http://[64:ff9b::7f00:1]/", true)
                .await
                .is_err()
        );
    }
}
