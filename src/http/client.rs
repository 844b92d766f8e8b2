//! Who is asking: the client a request counts against. That is the peer address, unless the
//! peer is one of the reverse proxies the operator trusts (`trusted_proxies`); then it is the
//! right-most `X-Forwarded-For` hop that is not a trusted proxy. Hops to its left were written
//! by the client itself and prove nothing, so a spoofed left-most hop changes nothing.
//!
//! Limits count a `ClientKey`: an IPv4 address, or an IPv6 /64 (one subscriber's network;
//! a single host can use any number of addresses in it).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("{0:?} is not an IP address or a CIDR block (such as 10.0.0.0/8 or fd00::/8)")]
    NotAnAddress(String),
    #[error("{0:?} has a prefix longer than its address")]
    Prefix(String),
}

/// One address or CIDR block of trusted proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn parse(text: &str) -> Result<Block, ClientError> {
        let bad = || ClientError::NotAnAddress(text.to_string());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = canonical(addr.parse().map_err(|_| bad())?);
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > width {
            return Err(ClientError::Prefix(text.to_string()));
        }
        Ok(Block {
            network: masked(addr, prefix),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix) == self.network
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// An IPv4 client reaching an IPv6 socket shows up as `::ffff:a.b.c.d`: it is that IPv4
/// address, and counts as one.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Block>);

impl TrustedProxies {
    /// Comma-separated addresses and CIDR blocks (`10.0.0.1, 10.1.0.0/16, fd00::/8`);
    /// empty trusts no one.
    pub fn parse(text: &str) -> Result<TrustedProxies, ClientError> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Block::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The client of a request that came from `peer` with these `X-Forwarded-For` values
    /// (in the order the headers came): walking the hops from the right, the first that
    /// is not a trusted proxy. A hop that is not an address stops the walk: everything
    /// from there leftwards is the client's own writing, so the last trusted hop (the proxy
    /// that was handed it) counts.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> ClientAddress {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return ClientAddress(client);
        }
        let hops = forwarded_for.rev().flat_map(|value| value.rsplit(','));
        for hop in hops {
            let Some(hop) = parse_hop(hop) else { break };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        ClientAddress(client)
    }
}

/// One `X-Forwarded-For` entry: an address, with a port as some proxies write it
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// The address a request counts against (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    /// The client of a request from `peer` (none when the request did not come over a
    /// socket, as in some unit tests) with these headers.
    pub fn of(
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        proxies: &TrustedProxies,
    ) -> Option<ClientAddress> {
        let peer = peer?.ip();
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or("not an address"));
        Some(proxies.client(peer, forwarded.collect::<Vec<_>>().into_iter()))
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }

    pub fn key(&self) -> ClientKey {
        ClientKey::of(self.0)
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What per-client limits count: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
}

impl ClientKey {
    /// The key an address counts under (an IPv4-mapped address as its IPv4 address).
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6Net(u64::try_from(u128::from(v6) >> 64).unwrap_or(0)),
        }
    }
}

impl fmt::Display for ClientKey {
    /// `192.0.2.1` or `2001:db8:1:2::/64`: how it is stored with a sandbox.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => v4.fmt(f),
            ClientKey::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(proxies: &str, peer: &str, xff: &[&str]) -> String {
        TrustedProxies::parse(proxies)
            .unwrap()
            .client(ip(peer), xff.iter().copied())
            .to_string()
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_blocks() {
        let proxies = TrustedProxies::parse(" 10.0.0.1, 10.1.0.0/16 ,fd00::/8,, ::1 ").unwrap();
        assert!(proxies.trusts(ip("10.0.0.1")));
        assert!(!proxies.trusts(ip("10.0.0.2")));
        assert!(proxies.trusts(ip("10.1.255.3")));
        assert!(!proxies.trusts(ip("10.2.0.1")));
        assert!(proxies.trusts(ip("fd12:3456::1")));
        assert!(!proxies.trusts(ip("fe80::1")));
        assert!(proxies.trusts(ip("::1")));
        // An IPv4 peer on an IPv6 socket is that IPv4 address.
        assert!(proxies.trusts(ip("::ffff:10.0.0.1")));
        // Host bits in a block are cleared, not refused.
        assert!(
            TrustedProxies::parse("192.168.1.77/24")
                .unwrap()
                .trusts(ip("192.168.1.5"))
        );
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .trusts(ip("8.8.8.8"))
        );
        assert!(
            !TrustedProxies::parse("0.0.0.0/0")
                .unwrap()
                .trusts(ip("::2"))
        );
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );

        for bad in [
            "10.0.0",
            "10.0.0.1/",
            "10.0.0.1/x",
            "10.0.0.1/+8",
            "proxy.local",
            "*",
        ] {
            assert_eq!(
                TrustedProxies::parse(bad),
                Err(ClientError::NotAnAddress(bad.to_string())),
                "{bad}"
            );
        }
        assert!(matches!(
            TrustedProxies::parse("10.0.0.0/33"),
            Err(ClientError::Prefix(_))
        ));
        assert!(matches!(
            TrustedProxies::parse("::/129"),
            Err(ClientError::Prefix(_))
        ));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client("", "203.0.113.9", &["198.51.100.1"]), "203.0.113.9");
        assert_eq!(
            client("10.0.0.1", "203.0.113.9", &["198.51.100.1"]),
            "203.0.113.9"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_counts() {
        let proxies = "10.0.0.0/8";
        assert_eq!(
            client(proxies, "10.0.0.1", &["198.51.100.7"]),
            "198.51.100.7"
        );
        // A spoofed left-most hop does not move the client.
        assert_eq!(
            client(proxies, "10.0.0.1", &["1.2.3.4, 198.51.100.7"]),
            "198.51.100.7"
        );
        // Chains of trusted proxies are walked through, across several headers too.
        assert_eq!(
            client(
                proxies,
                "10.0.0.1",
                &["1.2.3.4, 198.51.100.7, 10.9.9.9", "10.5.5.5"]
            ),
            "198.51.100.7"
        );
        // No header: the proxy itself.
        assert_eq!(client(proxies, "10.0.0.1", &[]), "10.0.0.1");
        // Every hop trusted: the left-most.
        assert_eq!(
            client(proxies, "10.0.0.1", &["10.3.3.3, 10.2.2.2"]),
            "10.3.3.3"
        );
        // Garbage stops the walk at the last trusted hop: that proxy was handed it.
        assert_eq!(
            client(proxies, "10.0.0.1", &["198.51.100.7, unknown, 10.2.2.2"]),
            "10.2.2.2"
        );
        assert_eq!(client(proxies, "10.0.0.1", &["nonsense"]), "10.0.0.1");
        // Ports, brackets and blanks as proxies write them.
        assert_eq!(
            client(proxies, "10.0.0.1", &[" 198.51.100.7:4711 "]),
            "198.51.100.7"
        );
        assert_eq!(
            client(proxies, "10.0.0.1", &["[2001:db8::5]:4711"]),
            "2001:db8::5"
        );
        assert_eq!(
            client(proxies, "::ffff:10.0.0.1", &["::ffff:198.51.100.7"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let key = |text: &str| ClientAddress(canonical(ip(text))).key();
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    }

    #[test]
    fn headers_are_read_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "1.1.1.1, 198.51.100.7".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = Some("10.0.0.1:5000".parse().unwrap());
        let found = ClientAddress::of(&headers, peer, &proxies).unwrap();
        assert_eq!(found.to_string(), "198.51.100.7");
        assert_eq!(ClientAddress::of(&headers, None, &proxies), None);
        // A header that is not text is not an address.
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff198.51.100.7").unwrap(),
        );
        let found = ClientAddress::of(&headers, peer, &proxies).unwrap();
        assert_eq!(found.to_string(), "10.0.0.1");
    }
}
