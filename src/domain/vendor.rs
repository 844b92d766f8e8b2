//! Vendors: the companies whose products are tried.

use serde::Serialize;

use super::{Invalid, Timestamp, VendorId, parse_text};

#[derive(Clone, Debug, PartialEq)]
pub struct Vendor {
    pub id: VendorId,
    pub name: VendorName,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VendorName(String);

impl VendorName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = parse_text("name", raw, 100, false)?;
        if name.is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        Ok(VendorName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a vendor's webhooks go: an absolute `http` or `https` URL with a host and no
/// credentials in it. (Whether its host resolves to an address deliveries may reach is
/// checked where it is resolved, on every delivery.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = |why: &str| Invalid::new("webhook_url", why);
        let raw = raw.trim();
        if raw.len() > 2048 {
            return Err(invalid("must be at most 2048 bytes"));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let uri: axum::http::Uri = raw.parse().map_err(|_| invalid("is not a URL"))?;
        match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http" | "https") => {}
            _ => return Err(invalid("must be an http:// or https:// URL")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("must name a host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("must not carry credentials"));
        }
        if authority.host().is_empty() {
            return Err(invalid("must name a host"));
        }
        Ok(WebhookUrl(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_with_a_host() {
        for ok in [
            "https://hooks.example.com/td",
            "http://127.0.0.1:9000/x?y=1",
            " HTTPS://a.b ",
        ] {
            assert!(WebhookUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "https:///path",
            "https://exa mple.com/",
            "javascript:alert(1)",
            "",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_required() {
        assert_eq!(VendorName::parse(" Acme ").unwrap().as_str(), "Acme");
        assert!(VendorName::parse("   ").is_err());
        assert!(VendorName::parse("a\u{1b}[31m").is_err());
    }
}
