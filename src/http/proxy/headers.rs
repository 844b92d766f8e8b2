//! The headers that cross the proxy, in both directions. Toward the demo: nothing of
//! testdrive's (no sandbox token, console or trial cookie, page key, foreign
//! `Authorization`), and the `Forwarded`/`X-Forwarded-*` headers are testdrive's alone.
//! Toward the client: only headers on an allow-list, cookies confined to the sandbox and
//! host-only, redirects kept inside the sandbox. Nothing a demo answers may widen its reach
//! (`Service-Worker-Allowed`, `Clear-Site-Data`, HSTS, reporting endpoints, `Alt-Svc`…),
//! and whatever cannot be read with certainty is dropped.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::super::auth::bearer_of;
use super::cookie::SetCookie;

/// Where a demo's answer may act.
pub struct Scope<'a> {
    /// `/s/{id}` when the sandbox shares testdrive's origin; empty on its own origin.
    pub prefix: &'a str,
    /// The `host[:port]` spellings that mean this sandbox in an absolute `Location`: the
    /// container's address and the host the client asked for.
    pub authorities: &'a [&'a str],
    /// The path the demo was asked for (relative `Location`s resolve against it).
    pub demo_path: &'a str,
}

/// Names of testdrive's cookies: the demo never receives them and never sets them.
const OUR_COOKIES: &str = "testdrive";

fn is_ours(cookie_name: &str) -> bool {
    cookie_name
        .get(..OUR_COOKIES.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(OUR_COOKIES))
}

/// Response headers a demo may send to the client as they are.
const ALLOWED: &[&str] = &[
    "accept-ranges",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "age",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-range",
    "content-security-policy",
    "content-security-policy-report-only",
    "content-type",
    "cross-origin-embedder-policy",
    "cross-origin-resource-policy",
    "date",
    "etag",
    "expires",
    "last-modified",
    "origin-agent-cluster",
    "permissions-policy",
    "pragma",
    "referrer-policy",
    "retry-after",
    "timing-allow-origin",
    "vary",
    "www-authenticate",
    "x-content-type-options",
    "x-frame-options",
];

/// What a `101 Switching Protocols` answer needs besides the allow-list.
const UPGRADE_ALLOWED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// `x-` headers are the demo's own (`X-Total-Count`…), except those that a server or a
/// proxy in front acts on, or that are testdrive's.
const X_DENIED: &[&str] = &[
    "x-accel-",
    "x-sendfile",
    "x-lighttpd-",
    "x-forwarded-",
    "x-real-ip",
    "x-testdrive",
    "x-dns-prefetch-control",
];

fn allowed(name: &HeaderName, upgrade: bool) -> bool {
    let name = name.as_str();
    ALLOWED.contains(&name)
        || (upgrade && UPGRADE_ALLOWED.contains(&name))
        || (name.starts_with("x-") && !X_DENIED.iter().any(|d| name.starts_with(d)))
}

/// Filters a demo's answer in place: the allow-list, confined cookies, a `Location` that
/// stays inside the sandbox (one that leaves it is dropped, so testdrive's origin never
/// redirects elsewhere in a demo's name). `upgrade`: the answer is a `101`.
pub fn confine_response(headers: &mut HeaderMap, scope: &Scope<'_>, upgrade: bool) {
    let original = std::mem::take(headers);
    let mut last = None;
    for (name, value) in original {
        // `HeaderMap`'s iterator names only the first of several values.
        let name = match name {
            Some(name) => {
                last = Some(name.clone());
                name
            }
            None => match &last {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        if name == header::SET_COOKIE {
            if let Some(cookie) = confine_cookie(value.as_bytes(), scope.prefix) {
                headers.append(header::SET_COOKIE, cookie);
            }
        } else if name == header::LOCATION {
            if let Some(location) = confine_location(&value, scope) {
                headers.insert(header::LOCATION, location);
            }
        } else if allowed(&name, upgrade) {
            headers.append(name, value);
        }
    }
}

/// A demo's cookie, host-only and inside the sandbox; `None` to drop it.
pub fn confine_cookie(raw: &[u8], prefix: &str) -> Option<HeaderValue> {
    let mut cookie = SetCookie::parse(raw)?;
    if is_ours(&cookie.name) {
        return None;
    }
    // `__Host-` cookies may not carry a path other than `/`; under a prefix they would be
    // refused by the browser anyway.
    if !prefix.is_empty() {
        cookie.path = Some(match cookie.path.take() {
            Some(path) => format!("{prefix}{path}"),
            None => format!("{prefix}/"),
        });
    }
    HeaderValue::from_str(&cookie.to_header()).ok()
}

/// A `Location` that stays inside the sandbox, as a path (under the prefix when the
/// sandbox shares testdrive's origin); `None` when it would leave it.
fn confine_location(value: &HeaderValue, scope: &Scope<'_>) -> Option<HeaderValue> {
    let value = value.to_str().ok()?;
    let base = url::Url::parse("http://sandbox.invalid/")
        .ok()?
        .join(scope.demo_path)
        .ok()?;
    let target = base.join(value).ok()?;
    let here = |authority: &str| {
        let host = target.host_str().unwrap_or_default();
        let with_port = match target.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        authority.eq_ignore_ascii_case(&with_port) || authority.eq_ignore_ascii_case(host)
    };
    let inside = matches!(target.scheme(), "http" | "https")
        && (target.host_str() == Some("sandbox.invalid")
            || scope.authorities.iter().any(|a| here(a)));
    if !inside {
        return None;
    }
    // Dot segments can leave a path starting `//` (`/.//evil.example`), which a browser
    // reads as another host: one slash is all a path inside the sandbox needs.
    let path = format!("/{}", target.path().trim_start_matches('/'));
    let mut local = format!("{}{path}", scope.prefix);
    if let Some(query) = target.query() {
        local.push('?');
        local.push_str(query);
    }
    if let Some(fragment) = target.fragment() {
        local.push('#');
        local.push_str(fragment);
    }
    HeaderValue::from_str(&local).ok()
}

/// Request headers the client may not set for the demo: testdrive sets these itself.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// Who asked, as testdrive tells the demo.
pub struct Forwarded<'a> {
    pub client: Option<std::net::IpAddr>,
    pub host: Option<&'a HeaderValue>,
    pub proto: &'static str,
    /// `/s/{id}` on the shared origin; empty on the sandbox's own.
    pub prefix: &'a str,
}

/// Prepares the client's headers for the demo: testdrive's credentials out (`is_ours`
/// tells whether a bearer token is testdrive's), forwarding headers testdrive's own.
pub fn prepare_request(
    headers: &mut HeaderMap,
    is_ours_token: impl Fn(&str) -> bool,
    forwarded: &Forwarded<'_>,
) {
    // Every `Authorization` value, not only the first one `bearer` reads.
    let carries_ours = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|value| bearer_of(value).is_some_and(&is_ours_token));
    if carries_ours {
        headers.remove(header::AUTHORIZATION);
    }
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && !is_ours(name)
        })
        .collect();
    let cookie = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten();
    headers.remove(header::COOKIE);
    if let Some(cookie) = cookie {
        headers.insert(header::COOKIE, cookie);
    }
    let testdrive_own: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-testdrive"))
        .cloned()
        .collect();
    for name in testdrive_own {
        headers.remove(name);
    }
    for name in FORWARDING {
        headers.remove(*name);
    }

    let mut parts = Vec::new();
    if let Some(client) = forwarded.client {
        if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        parts.push(match client {
            std::net::IpAddr::V4(v4) => format!("for={v4}"),
            std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        });
    }
    if let Some(host) = forwarded.host.filter(|h| is_plain_host(h)) {
        headers.insert("x-forwarded-host", host.clone());
        parts.push(format!("host=\"{}\"", host.to_str().unwrap_or_default()));
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(forwarded.proto),
    );
    parts.push(format!("proto={}", forwarded.proto));
    if !forwarded.prefix.is_empty()
        && let Ok(prefix) = HeaderValue::from_str(forwarded.prefix)
    {
        headers.insert("x-forwarded-prefix", prefix);
    }
    if let Ok(value) = HeaderValue::from_str(&parts.join(";")) {
        headers.insert("forwarded", value);
    }
}

/// A `Host` value safe to quote in `Forwarded`: letters, digits, `.-:[]`.
fn is_plain_host(host: &HeaderValue) -> bool {
    !host.is_empty()
        && host
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(prefix: &'a str, authorities: &'a [&'a str]) -> Scope<'a> {
        Scope {
            prefix,
            authorities,
            demo_path: "/app/page",
        }
    }

    fn answer(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    const HOSTILE: &[(&str, &[u8])] = &[
        ("service-worker-allowed", b"/"),
        ("clear-site-data", b"\"cookies\""),
        (
            "strict-transport-security",
            b"max-age=31536000; includeSubDomains",
        ),
        ("nel", b"{\"report_to\":\"x\",\"max_age\":1}"),
        ("report-to", b"{\"group\":\"x\"}"),
        ("reporting-endpoints", b"x=\"https://evil.example/\""),
        ("alt-svc", b"h2=\":443\""),
        ("x-accel-redirect", b"/internal"),
        ("access-control-allow-credentials", b"true"),
        ("refresh", b"0; url=https://evil.example/"),
        ("link", b"<https://evil.example/>; rel=preload"),
        ("content-location", b"https://evil.example/"),
        ("accept-ch", b"Sec-CH-UA-Model"),
        ("set-login", b"logged-in"),
        ("x-forwarded-host", b"evil.example"),
        ("cross-origin-opener-policy", b"unsafe-none"),
    ];

    #[test]
    fn only_allowed_headers_reach_the_client() {
        let mut pairs = HOSTILE.to_vec();
        pairs.extend([
            ("content-type", b"text/html" as &[u8]),
            ("cache-control", b"no-store"),
            ("etag", b"\"1\""),
            ("x-total-count", b"3"),
        ]);
        for prefix in ["", "/s/x"] {
            let mut headers = answer(&pairs);
            confine_response(&mut headers, &scope(prefix, &[]), false);
            let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(
                names,
                ["content-type", "cache-control", "etag", "x-total-count"]
            );
        }
        let mut upgrade = answer(&[
            ("upgrade", b"websocket"),
            ("connection", b"upgrade"),
            ("sec-websocket-accept", b"abc"),
            ("service-worker-allowed", b"/"),
        ]);
        confine_response(&mut upgrade, &scope("", &[]), true);
        assert_eq!(upgrade.len(), 3);
        assert!(!upgrade.contains_key("service-worker-allowed"));
    }

    fn cookies_after(prefix: &str, raws: &[&[u8]]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for raw in raws {
            headers.append(header::SET_COOKIE, HeaderValue::from_bytes(raw).unwrap());
        }
        confine_response(&mut headers, &scope(prefix, &[]), false);
        headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn cookies_stay_inside_the_sandbox_however_they_are_spelled() {
        let hostile: &[&[u8]] = &[
            b"c=1; Path =/; HttpOnly",
            b"d=1; Path\t=/ops",
            b"e=1; Domain=sandbox.localhost; Path=/",
            b"f=1; domain=.localhost",
            b"testdrive_sandbox=stolen; Path=/",
            b"TESTDRIVE_admin=x; Path=/ops",
            b"j=1; Path=/; Path=/ops",
            b"i=1; Path=\"/ops\"",
            b"=nameless; Path=/",
            b"k=\xff",
        ];
        assert_eq!(
            cookies_after("/s/x", hostile),
            [
                "c=1; Path=/s/x/; HttpOnly",
                "d=1; Path=/s/x/ops",
                "e=1; Path=/s/x/",
                "f=1; Path=/s/x/",
                "j=1; Path=/s/x/ops",
                "i=1; Path=/s/x/",
            ]
        );
        assert_eq!(
            cookies_after("", hostile),
            [
                "c=1; Path=/; HttpOnly",
                "d=1; Path=/ops",
                "e=1; Path=/",
                "f=1",
                "j=1; Path=/ops",
                "i=1",
            ]
        );
        assert_eq!(
            cookies_after(
                "/s/x",
                &[b"ok=1; Path=/app; HttpOnly; SameSite=Lax", b"ok2=2"]
            ),
            [
                "ok=1; Path=/s/x/app; HttpOnly; SameSite=Lax",
                "ok2=2; Path=/s/x/"
            ]
        );
    }

    fn location(prefix: &str, value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_str(value).unwrap());
        confine_response(
            &mut headers,
            &scope(prefix, &["10.0.0.2:8080", "id.sandbox.localhost:8080"]),
            false,
        );
        headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn redirects_never_leave_the_sandbox() {
        for (value, shared, own) in [
            ("/login", Some("/s/x/login"), Some("/login")),
            (
                "next?a=1#f",
                Some("/s/x/app/next?a=1#f"),
                Some("/app/next?a=1#f"),
            ),
            ("../../../ops", Some("/s/x/ops"), Some("/ops")),
            (
                "http://10.0.0.2:8080/x?y=1",
                Some("/s/x/x?y=1"),
                Some("/x?y=1"),
            ),
            (
                "http://id.sandbox.localhost:8080/y",
                Some("/s/x/y"),
                Some("/y"),
            ),
            ("/a%2Fb", Some("/s/x/a%2Fb"), Some("/a%2Fb")),
            ("//evil.example/", None, None),
            ("/\\evil.example", None, None),
            ("http://evil.example/", None, None),
            ("https://10.0.0.3:8080/", None, None),
            ("javascript:alert(1)", None, None),
            (
                "/.//evil.example/x",
                Some("/s/x/evil.example/x"),
                Some("/evil.example/x"),
            ),
            (
                "/a/..//evil.example/",
                Some("/s/x/evil.example/"),
                Some("/evil.example/"),
            ),
            (
                "/%2e//evil.example",
                Some("/s/x/evil.example"),
                Some("/evil.example"),
            ),
            (
                "/.\\/evil.example",
                Some("/s/x/evil.example"),
                Some("/evil.example"),
            ),
            (
                "http://sandbox.invalid//evil.example",
                Some("/s/x/evil.example"),
                Some("/evil.example"),
            ),
        ] {
            assert_eq!(location("/s/x", value).as_deref(), shared, "{value}");
            assert_eq!(location("", value).as_deref(), own, "{value}");
        }
    }

    /// `pairs` as a request's headers, prepared for the demo as `forwarded` says (tokens
    /// that start with `tds_` are testdrive's).
    fn prepared(pairs: &[(&'static str, &'static str)], forwarded: &Forwarded<'_>) -> HeaderMap {
        let mut headers = crate::http::session::tests::headers(pairs);
        prepare_request(&mut headers, |t| t.starts_with("tds_"), forwarded);
        headers
    }

    #[test]
    fn nothing_of_testdrives_reaches_the_demo() {
        let host = HeaderValue::from_static("id.sandbox.localhost:8080");
        let headers = prepared(
            &[
                ("authorization", "Bearer tds_x"),
                ("cookie", "a=1; testdrive_sandbox=t; testdrive_admin=a; b=2"),
                ("x-testdrive-page", "key"),
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
            ],
            &Forwarded {
                client: Some("127.0.0.1".parse().unwrap()),
                host: Some(&host),
                proto: "http",
                prefix: "",
            },
        );
        assert!(!headers.contains_key(header::AUTHORIZATION));
        assert!(!headers.contains_key("x-testdrive-page"));
        assert!(!headers.contains_key("x-real-ip"));
        assert!(!headers.contains_key("x-forwarded-prefix"));
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(
            headers["forwarded"],
            "for=127.0.0.1;host=\"id.sandbox.localhost:8080\";proto=http"
        );

        let two = prepared(
            &[
                ("authorization", "Basic dTpw"),
                ("authorization", "Bearer tds_x"),
            ],
            &Forwarded {
                client: None,
                host: None,
                proto: "http",
                prefix: "",
            },
        );
        assert!(!two.contains_key(header::AUTHORIZATION));

        let basic = prepared(
            &[
                ("authorization", "Basic dTpw"),
                ("cookie", "testdrive_trial=t"),
            ],
            &Forwarded {
                client: None,
                host: None,
                proto: "https",
                prefix: "/s/x",
            },
        );
        assert_eq!(basic[header::AUTHORIZATION], "Basic dTpw");
        assert!(!basic.contains_key(header::COOKIE));
        assert_eq!(basic["x-forwarded-prefix"], "/s/x");
    }
}
