//! A demo's `Set-Cookie`, read the way a browser reads it (RFC 6265bis §5.6: split at the
//! first `;`, attribute names before the first `=`, blanks and tabs trimmed, names compared
//! without case, the last `Path` wins), then written again from what was understood, so the
//! browser cannot read into it anything the filter did not see. A cookie the filter cannot
//! read with certainty is dropped, never passed on.

/// A cookie as a browser would store it, with the attributes that survive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// The last `Path` whose value starts with `/`; `None`: the browser's default path.
    pub path: Option<String>,
    pub expires: Option<String>,
    pub max_age: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<&'static str>,
    pub partitioned: bool,
    /// Whether a `Domain` attribute was given (it never survives: every demo cookie is
    /// host-only).
    pub had_domain: bool,
}

/// Whitespace as the cookie algorithm trims it: space and horizontal tab.
fn trim_wsp(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A cookie name the filter accepts: an RFC 9110 token, so every reader splits it alike.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value that reads the same to every parser: visible ASCII and inner spaces, no `;`.
fn is_plain_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

impl SetCookie {
    /// Reads one `Set-Cookie` value; `None` for anything a browser would ignore or that
    /// the filter will not pass on (no name, odd bytes, a name that is not a token).
    pub fn parse(raw: &[u8]) -> Option<SetCookie> {
        // Control characters other than the tab make browsers ignore the whole cookie;
        // bytes past ASCII are read differently by different browsers.
        if raw.iter().any(|&b| (b < 0x20 && b != b'\t') || b >= 0x7f) {
            return None;
        }
        let raw = std::str::from_utf8(raw).ok()?;
        let (pair, attributes) = raw.split_once(';').unwrap_or((raw, ""));
        // Without `=` a browser stores a cookie with an empty name: dropped here.
        let (name, value) = pair.split_once('=')?;
        let (name, value) = (trim_wsp(name), trim_wsp(value));
        if !is_token(name) || !is_plain_value(value) {
            return None;
        }
        let mut cookie = SetCookie {
            name: name.to_string(),
            value: value.to_string(),
            path: None,
            expires: None,
            max_age: None,
            secure: false,
            http_only: false,
            same_site: None,
            partitioned: false,
            had_domain: false,
        };
        for attribute in attributes.split(';') {
            let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let (key, value) = (trim_wsp(key), trim_wsp(value));
            match key.to_ascii_lowercase().as_str() {
                "path" => {
                    // A value not starting with `/` means the default path, and a later
                    // `Path` replaces an earlier one.
                    cookie.path = value.starts_with('/').then(|| value.to_string());
                }
                "domain" => cookie.had_domain = true,
                "expires" if is_plain_value(value) && !value.is_empty() => {
                    cookie.expires = Some(value.to_string());
                }
                "max-age"
                    if !value.is_empty()
                        && value
                            .strip_prefix('-')
                            .unwrap_or(value)
                            .bytes()
                            .all(|b| b.is_ascii_digit()) =>
                {
                    cookie.max_age = Some(value.to_string());
                }
                "secure" => cookie.secure = true,
                "httponly" => cookie.http_only = true,
                "samesite" => {
                    cookie.same_site = match value.to_ascii_lowercase().as_str() {
                        "strict" => Some("Strict"),
                        "lax" => Some("Lax"),
                        "none" => Some("None"),
                        _ => None,
                    }
                }
                "partitioned" => cookie.partitioned = true,
                // Unknown attributes, and known ones with values a browser would ignore.
                _ => {}
            }
        }
        Some(cookie)
    }

    /// The cookie written out in one canonical spelling.
    pub fn to_header(&self) -> String {
        let mut out = format!("{}={}", self.name, self.value);
        if let Some(path) = &self.path {
            out.push_str("; Path=");
            out.push_str(path);
        }
        if let Some(expires) = &self.expires {
            out.push_str("; Expires=");
            out.push_str(expires);
        }
        if let Some(max_age) = &self.max_age {
            out.push_str("; Max-Age=");
            out.push_str(max_age);
        }
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if let Some(same_site) = self.same_site {
            out.push_str("; SameSite=");
            out.push_str(same_site);
        }
        if self.partitioned {
            out.push_str("; Partitioned");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Option<SetCookie> {
        SetCookie::parse(raw.as_bytes())
    }

    #[test]
    fn paths_are_read_however_they_are_spelled() {
        for (raw, path) in [
            ("c=1; Path =/; HttpOnly", Some("/")),
            ("d=1; Path\t=/ops", Some("/ops")),
            ("h=1; PATH=/trials", Some("/trials")),
            ("j=1; Path=/; Path=/ops", Some("/ops")),
            ("k=1; Path=/ops; Path=relative", None),
            ("i=1; Path=\"/ops\"", None),
            ("l=1;path=/x;", Some("/x")),
            ("m=1", None),
        ] {
            assert_eq!(parse(raw).unwrap().path.as_deref(), path, "{raw}");
        }
    }

    #[test]
    fn what_cannot_be_read_with_certainty_is_dropped() {
        for raw in [
            "=nameless; Path=/",
            "novalue",
            "a\u{1}=1",
            "a=1\r\nSet-Cookie: b=2",
            "a=\u{e9}",
            "a b=1",
            "a=1;\u{7f}",
            "",
            " = ",
        ] {
            assert_eq!(parse(raw), None, "{raw:?}");
        }
        assert_eq!(SetCookie::parse(b"a=\xff"), None);
    }

    #[test]
    fn cookies_are_written_again_canonically() {
        let cookie = parse(
            "  sid = abc ; domain=.localhost; secure; HTTPONLY; samesite=LAX; max-age=60; \
             expires=Wed, 21 Oct 2015 07:28:00 GMT; Priority=High; Partitioned",
        )
        .unwrap();
        assert!(cookie.had_domain);
        assert_eq!(
            cookie.to_header(),
            "sid=abc; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Max-Age=60; Secure; HttpOnly; \
             SameSite=Lax; Partitioned"
        );
        assert_eq!(parse("t=2").unwrap().to_header(), "t=2");
        assert_eq!(parse("e=\"q\"").unwrap().value, "\"q\"");
        assert_eq!(parse("n=1; Max-Age=soon").unwrap().max_age, None);
    }
}
