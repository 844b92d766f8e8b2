//! The proxy's filter of a demo's answer: `SetCookie::parse`, `confine_cookie` and
//! `confine_response` (`src/http/proxy/`), fed arbitrary header bytes.
//!
//! Nothing may panic. Each input is read as header lines (`name: value`, split at `\n`) of
//! a demo's answer, filtered once for a sandbox on its own origin (no prefix) and once under
//! `/s/x` (the single-origin mode), as a plain answer and as a `101`. What comes out:
//! only names the filter allows (never one of the headers that act beyond a page); every
//! `Set-Cookie` reads back, with the browser's algorithm, as a cookie with no `Domain`, not
//! named like testdrive's, whose `Path` (when the sandbox shares the origin) starts with
//! `/s/x/`, and which writes out the same again; every `Location` a path inside the sandbox
//! (no `//` at its start, no backslash in its path).

#![no_main]

use libfuzzer_sys::fuzz_target;
use testdrive::http::proxy::SetCookie;
use testdrive::http::proxy::headers::{Scope, confine_cookie, confine_response};

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

const NEVER: &[&str] = &[
    "service-worker-allowed",
    "clear-site-data",
    "strict-transport-security",
    "nel",
    "report-to",
    "reporting-endpoints",
    "alt-svc",
    "access-control-allow-credentials",
    "refresh",
    "link",
    "content-location",
    "x-accel-redirect",
    "x-forwarded-for",
];

fuzz_target!(|data: &[u8]| {
    // The cookie door alone, on the raw bytes.
    if let Some(cookie) = SetCookie::parse(data) {
        let again = SetCookie::parse(cookie.to_header().as_bytes()).expect("reads back");
        assert_eq!(again.to_header(), cookie.to_header());
    }
    for prefix in ["", "/s/x"] {
        if let Some(out) = confine_cookie(data, prefix) {
            check_cookie(out.as_bytes(), prefix);
        }
    }

    let mut answer = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        answer.append(name, value);
    }
    for prefix in ["", "/s/x"] {
        for upgrade in [false, true] {
            let mut headers = answer.clone();
            let scope = Scope {
                prefix,
                authorities: &["10.0.0.2:8080", "x.sandbox.localhost:8080"],
                demo_path: "/a/b",
            };
            confine_response(&mut headers, &scope, upgrade);
            for (name, value) in &headers {
                assert!(!NEVER.contains(&name.as_str()), "{name} passed");
                if name == header::SET_COOKIE {
                    check_cookie(value.as_bytes(), prefix);
                }
                if name == header::LOCATION {
                    let location = value.to_str().expect("a location is ASCII");
                    assert!(location.starts_with(&format!("{prefix}/")), "{location}");
                    assert!(!location.starts_with("//"), "{location}");
                    // A backslash is a slash to browsers in a URL's path, plain text in
                    // its query or fragment.
                    let path = location.split(['?', '#']).next().unwrap_or_default();
                    assert!(!path.contains('\\'), "{location}");
                }
            }
        }
    }
});

fn check_cookie(out: &[u8], prefix: &str) {
    let cookie = SetCookie::parse(out).expect("the filter writes cookies a browser reads");
    assert!(!cookie.had_domain, "a Domain passed");
    assert!(
        !cookie.name.to_ascii_lowercase().starts_with("testdrive"),
        "{} passed",
        cookie.name
    );
    if !prefix.is_empty() {
        let path = cookie.path.as_deref().expect("a path under the prefix");
        assert!(path.starts_with(&format!("{prefix}/")), "{path}");
    }
    assert_eq!(cookie.to_header().as_bytes(), out);
}
