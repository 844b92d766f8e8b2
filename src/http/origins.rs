//! Where a sandbox is served. A demo is a vendor's code running on a prospect's data, so by
//! default every sandbox gets its own origin, `<id>.<sandbox domain>`: whatever its pages
//! do (service workers, cookies, storage, script) stays on that origin, away from
//! testdrive's pages, consoles and cookies. `off` keeps the older single-origin mode, where
//! every sandbox is a path (`/s/{id}/`) of testdrive's own origin and only the proxy's
//! header and cookie filter stands between a demo and the consoles.

use std::fmt;

use crate::domain::SandboxId;

/// How sandboxes are reached, fixed at start from the public URL and the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxOrigins {
    /// Each sandbox at `/s/{id}/` of the public URL: one origin for everything (weaker).
    Shared { public_url: String },
    /// Each sandbox at `<scheme>://<id>.<domain>[:<port>]/`.
    Own {
        public_url: String,
        domain: SandboxDomain,
        /// `http` or `https`, as the public URL.
        scheme: &'static str,
        /// The public URL's explicit port, if it has one.
        port: Option<u16>,
    },
}

/// A DNS name under which every sandbox gets a host of its own: lowercase labels of
/// letters, digits and hyphens, no IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxDomain(String);

impl SandboxDomain {
    pub fn parse(raw: &str) -> Result<SandboxDomain, String> {
        let domain = raw.trim().trim_matches('.').to_ascii_lowercase();
        let bad = |why: &str| Err(format!("sandbox_domain {raw:?} {why}"));
        if domain.is_empty() {
            return bad("is empty");
        }
        // A sandbox host adds a 36-character label and a dot.
        if domain.len() > 253 - 37 {
            return bad("is too long");
        }
        for label in domain.split('.') {
            let valid = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return bad("must be a DNS name (letters, digits, hyphens; dot-separated)");
            }
        }
        if domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad("must be a DNS name, not an address");
        }
        Ok(SandboxDomain(domain))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The default sandbox domain for a service on loopback: browsers and curl send every
/// `*.localhost` name to loopback without DNS, so a one-box set-up is isolated as it is.
pub const LOOPBACK_DOMAIN: &str = "sandbox.localhost";

/// The scheme, lower-cased host and explicit port of an `http(s)` URL or an `Origin`.
pub(super) fn url_parts(url: &str) -> Option<(&'static str, String, Option<u16>)> {
    let uri: axum::http::Uri = url.parse().ok()?;
    let scheme = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    Some((scheme, uri.host()?.to_ascii_lowercase(), uri.port_u16()))
}

/// A public URL only this machine's browsers can use: loopback, or the unspecified address
/// a service listening on all addresses gets as its default public URL.
fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host == "[::]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

impl SandboxOrigins {
    /// From the `sandbox_domain` setting (`None`: the default; `off`; a domain) and the
    /// public URL (without a trailing slash). No setting is only allowed on loopback: a
    /// public deployment must choose a domain, with wildcard DNS and certificate, or `off`.
    pub fn resolve(setting: Option<&str>, public_url: &str) -> Result<SandboxOrigins, String> {
        let public_url = public_url.trim_end_matches('/').to_string();
        let (scheme, host, port) = url_parts(&public_url)
            .ok_or_else(|| format!("public_url {public_url:?} is not an http(s) URL"))?;
        let domain = match setting.map(str::trim) {
            Some(off) if off.eq_ignore_ascii_case("off") => {
                return Ok(SandboxOrigins::Shared { public_url });
            }
            Some(domain) if !domain.is_empty() => SandboxDomain::parse(domain)?,
            _ if is_loopback_host(&host) => SandboxDomain(LOOPBACK_DOMAIN.to_string()),
            _ => {
                return Err(format!(
                    "the public URL {public_url} is not on loopback, so sandbox_domain \
                     (TESTDRIVE_SANDBOX_DOMAIN) must be set: a domain whose every name \
                     <id>.<domain> reaches this service (wildcard DNS and certificate), or \
                     \"off\" to serve sandboxes under /s/{{id}}/ of the public URL (weaker: \
                     see docs/security.md)"
                ));
            }
        };
        // testdrive's own host under the sandbox domain would be taken for a sandbox's.
        if host == domain.as_str() || host.ends_with(&format!(".{domain}")) {
            return Err(format!(
                "sandbox_domain {domain} must not be the public URL's host {host} or a domain \
                 above it: choose a domain of its own (see the README)"
            ));
        }
        Ok(SandboxOrigins::Own {
            public_url,
            domain,
            scheme,
            port,
        })
    }

    /// Where a prospect opens the sandbox.
    pub fn url(&self, id: SandboxId) -> String {
        match self {
            SandboxOrigins::Shared { public_url } => format!("{public_url}/s/{id}/"),
            SandboxOrigins::Own {
                domain,
                scheme,
                port,
                ..
            } => {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{id}.{domain}{port}/")
            }
        }
    }

    pub fn own_origins(&self) -> bool {
        matches!(self, SandboxOrigins::Own { .. })
    }

    /// What a request's `Host` (or `:authority`) says it is for.
    pub fn host(&self, host: Option<&str>) -> Host {
        let SandboxOrigins::Own { domain, .. } = self else {
            return Host::Service;
        };
        let Some(host) = host else {
            return Host::Service;
        };
        // An IPv6 literal is never a sandbox's host; anything else loses its port.
        if host.starts_with('[') {
            return Host::Service;
        }
        let name = host.split(':').next().unwrap_or(host);
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // More trailing dots: another spelling (so another origin) of a name.
        if name.ends_with('.') {
            let bare = name.trim_end_matches('.');
            return if bare == domain.as_str() || bare.ends_with(&format!(".{domain}")) {
                Host::UnknownSandbox
            } else {
                Host::Service
            };
        }
        if name == domain.as_str() {
            return Host::UnknownSandbox;
        }
        let Some(label) = name
            .strip_suffix(domain.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
        else {
            return Host::Service;
        };
        // One spelling per sandbox (each spelling would be an origin of its own): the
        // hyphenated id, as `url` writes it.
        match SandboxId::parse(label) {
            Ok(id) if id.to_string() == label => Host::Sandbox(id),
            _ => Host::UnknownSandbox,
        }
    }
}

/// Whom a request is for, by its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// testdrive's own pages and API.
    Service,
    /// A sandbox's own origin.
    Sandbox(SandboxId),
    /// A name under the sandbox domain that is no sandbox's: served nothing of testdrive's.
    UnknownSandbox,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_deployments_get_sandbox_localhost() {
        let id = SandboxId::new();
        for public in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:9",
            "http://0.0.0.0:7",
        ] {
            let origins = SandboxOrigins::resolve(None, public).unwrap();
            assert!(origins.own_origins(), "{public}");
            let port = public.trim_end_matches('/').rsplit(':').next().unwrap();
            assert_eq!(
                origins.url(id),
                format!("http://{id}.sandbox.localhost:{port}/")
            );
        }
        let err = SandboxOrigins::resolve(None, "https://try.example.com").unwrap_err();
        assert!(err.contains("sandbox_domain"), "{err}");
    }

    #[test]
    fn a_public_deployment_names_its_domain_or_turns_it_off() {
        let id = SandboxId::new();
        let own =
            SandboxOrigins::resolve(Some("Try-Sandbox.Example.NET."), "https://try.example.com")
                .unwrap();
        assert_eq!(
            own.url(id),
            format!("https://{id}.try-sandbox.example.net/")
        );
        let off = SandboxOrigins::resolve(Some("off"), "https://try.example.com").unwrap();
        assert_eq!(off.url(id), format!("https://try.example.com/s/{id}/"));
        assert_eq!(
            off.host(Some(&format!("{id}.try.example.com"))),
            Host::Service
        );
        for bad in [
            "exa mple.com",
            "-a.com",
            "a..b",
            "try.example.com",
            "example.com",
            "10.0.0.1",
            "a_b.com",
            "é.com",
        ] {
            assert!(
                SandboxOrigins::resolve(Some(bad), "https://try.example.com").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hosts_are_told_apart() {
        let id = SandboxId::new();
        let origins = SandboxOrigins::resolve(None, "http://127.0.0.1:8080").unwrap();
        assert_eq!(origins.host(Some("127.0.0.1:8080")), Host::Service);
        assert_eq!(origins.host(None), Host::Service);
        assert_eq!(
            origins.host(Some(&format!("{id}.sandbox.localhost:8080"))),
            Host::Sandbox(id)
        );
        assert_eq!(
            origins.host(Some(&format!("{id}.SANDBOX.localhost."))),
            Host::Sandbox(id)
        );
        for other in [
            "sandbox.localhost",
            "nope.sandbox.localhost:8080",
            &format!("x.{id}.sandbox.localhost"),
            &format!("{}.sandbox.localhost", id.simple()),
            &format!("{id}.sandbox.localhost.."),
        ] {
            assert_eq!(origins.host(Some(other)), Host::UnknownSandbox, "{other}");
        }
        assert_eq!(origins.host(Some("xsandbox.localhost")), Host::Service);
    }
}
