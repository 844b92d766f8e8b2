//! Where a demo's image comes from. A reference whose first part names a registry host
//! (`registry.example.com/acme/app:1.4`, `127.0.0.1:5000/app`, `localhost/app`) is a
//! registry image: testdrive pulls it with the vendor's credentials for that server. Any
//! other (`testdrive/csv-explorer:1`) names an image that is only on the Engine, which an
//! operator gives to a vendor. The rule is the Engine's own: the first part is a registry
//! when it has a `.` or a `:`, or is `localhost`.

use std::fmt;

use super::Invalid;

/// A parsed image reference: `[server/]repository[:tag][@sha256:<64 hex>]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    server: Option<RegistryServer>,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(raw: &str) -> Result<ImageRef, Invalid> {
        let bad =
            |why: &str| Invalid::new("image", format!("{raw:?} is not an image reference: {why}"));
        if raw.is_empty() || raw.len() > 255 {
            return Err(bad("it must be 1 to 255 characters"));
        }
        let (rest, digest) = match raw.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("a digest is sha256:<64 hex digits>"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad("a digest is sha256:<64 hex digits>"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (raw, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(tag[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad(
                    "a tag is letters, digits, `_`, `.` and `-`, at most 128",
                ));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let server = match parts.first() {
            Some(first)
                if parts.len() > 1
                    && (first.contains('.') || first.contains(':') || *first == "localhost") =>
            {
                let server = RegistryServer::parse(first).map_err(|e| bad(&e.reason))?;
                parts.remove(0);
                Some(server)
            }
            _ => None,
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
            return Err(bad(
                "a repository is lower-case letters, digits and `._-` between `/`",
            ));
        }
        Ok(ImageRef {
            server,
            repository: parts.join("/"),
            tag,
            digest,
        })
    }

    /// The registry it is pulled from; `None` for an image only on the Engine.
    pub fn server(&self) -> Option<&RegistryServer> {
        self.server.as_ref()
    }

    /// `[server/]repository`, without tag or digest.
    pub fn name(&self) -> String {
        match &self.server {
            Some(server) => format!("{server}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to pull: the reference as given, `latest` when it names neither tag nor digest
    /// (as the Engine reads it).
    pub fn pull_reference(&self) -> String {
        match (&self.tag, &self.digest) {
            (None, None) => format!("{}:latest", self.name()),
            _ => self.to_string(),
        }
    }

    /// The same image pinned to `digest` (`sha256:…`): what sandboxes run once a pull
    /// resolved it, so a tag moved in the registry later changes nothing.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A registry's server as credentials are kept for it: `host[:port]`, lower-case, no
/// scheme or path (`registry.example.com`, `127.0.0.1:5000`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryServer(String);

impl RegistryServer {
    pub fn parse(raw: &str) -> Result<RegistryServer, Invalid> {
        let bad = || {
            Invalid::new(
                "server",
                format!("{raw:?} is not a registry server: host[:port], like registry.example.com"),
            )
        };
        let lower = raw.to_ascii_lowercase();
        let (host, port) = match lower.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (lower.as_str(), None),
        };
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
        {
            return Err(bad());
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(RegistryServer(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_images_are_told_from_engine_only_ones_as_the_engine_does() {
        let engine_only = ImageRef::parse("testdrive/csv-explorer:1").unwrap();
        assert_eq!(engine_only.server(), None);
        assert_eq!(engine_only.name(), "testdrive/csv-explorer");
        assert_eq!(engine_only.to_string(), "testdrive/csv-explorer:1");
        for (raw, server, name) in [
            (
                "registry.example.com/acme/app:1.4",
                "registry.example.com",
                "registry.example.com/acme/app",
            ),
            ("127.0.0.1:5000/app", "127.0.0.1:5000", "127.0.0.1:5000/app"),
            ("localhost/app:2", "localhost", "localhost/app"),
        ] {
            let image = ImageRef::parse(raw).unwrap();
            assert_eq!(
                image.server().map(RegistryServer::as_str),
                Some(server),
                "{raw}"
            );
            assert_eq!(image.name(), name);
            assert_eq!(image.to_string(), raw);
        }
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/app")
                .unwrap()
                .pull_reference(),
            "127.0.0.1:5000/app:latest"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = ImageRef::parse("r.example/a/b:1").unwrap().pinned(&digest);
        assert_eq!(pinned, format!("r.example/a/b@{digest}"));
        let parsed = ImageRef::parse(&pinned).unwrap();
        assert_eq!(parsed.digest(), Some(digest.as_str()));
        assert_eq!(parsed.pull_reference(), pinned);
    }

    #[test]
    fn bad_references_and_servers_are_refused() {
        for bad in [
            "",
            "bad image",
            "UPPER/case",
            "a//b",
            "a:",
            "a@sha256:abc",
            "-a",
            "a/b:-tag",
            "r.example:0/a",
            "http://r.example/a",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RegistryServer::parse("Registry.Example.com:5000")
                .unwrap()
                .as_str(),
            "registry.example.com:5000"
        );
        for bad in [
            "",
            "https://r.example",
            "r.example/path",
            "r_x.example",
            "r.example:99999",
        ] {
            assert!(RegistryServer::parse(bad).is_err(), "{bad}");
        }
    }
}
