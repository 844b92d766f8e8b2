//! Browser credentials and request guards, shared by the pages and the proxy. The pages
//! never show a token to page scripts: the sandbox token lives in `HttpOnly` cookies scoped
//! to the trial's own paths, the admin token and vendor key in cookies scoped to their
//! console. Every request that changes something must come
//! from our own pages (the browser's `Sec-Fetch-Site`/`Origin` say so), on top of
//! `SameSite`, so another site cannot make a logged-in browser end a sandbox.
//!
//! By default a demo is served on an origin of its own (`origins`), where none of this can
//! reach it. With `sandbox_domain = "off"` it is served on this same origin (`/s/{id}/`),
//! so its scripts are "same-origin" to the browser and a cookie-held credential alone would
//! be theirs to use: a demo opened in a browser signed in to `/ops` could read the
//! console's stream. So, in either mode, every
//! call a page's script makes must also carry the page key, a value derived from the
//! credential that only the page itself shows, and the page is only given to a top-level
//! navigation (`Sec-Fetch-Mode: navigate`, not a script's `fetch`), never framed
//! (`frame-ancestors 'none'`), and isolated from windows a demo opens
//! (`Cross-Origin-Opener-Policy: same-origin`, which the proxy strips from demos' answers).

use axum::http::{HeaderMap, HeaderValue, header};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// The trial page's cookie (`Path=/trials/{id}`): the sandbox token.
pub const TRIAL_COOKIE: &str = "testdrive_trial";

/// The sandbox's cookie (`Path=/s/{id}/`): the sandbox token, for the proxy.
pub const SANDBOX_COOKIE: &str = "testdrive_sandbox";

/// How long the browser keeps a trial's cookie: past the end, so the prospect can come
/// back for the deletion receipt.
pub const TRIAL_COOKIE_SECONDS: u64 = 30 * 24 * 3600;

/// How long a console login lasts.
pub const CONSOLE_COOKIE_SECONDS: u64 = 12 * 3600;

/// The values of every cookie named `name` the browser sent.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure` when the service is reached over https;
/// without `max_age` it lasts as long as the browser session.
pub fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let secure = if state.https() { "; Secure" } else { "" };
    let max_age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let cookie =
        format!("{name}={value}; Path={path}{max_age}; HttpOnly; SameSite={same_site}{secure}");
    // Tokens and paths are ASCII without separators; anything else is a bug here.
    HeaderValue::from_str(&cookie).expect("a cookie of ASCII tokens and paths")
}

/// The header a page's script sends its page key in (`?key=` for `EventSource`).
pub const PAGE_KEY_HEADER: &str = "x-testdrive-page";

/// The page key of a credential: shown in the page, required of the page's script calls.
pub fn page_key(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"testdrive page key\0")
        .chain_update(token.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// Whether the request carries the page key of `token` (header, or `key` in the query).
pub fn has_page_key(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
    let expected = page_key(token);
    let from_query = query.into_iter().flat_map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == "key")
            .map(|(_, v)| v.into_owned())
    });
    headers
        .get_all(PAGE_KEY_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .chain(from_query)
        .any(|presented| presented.as_bytes().ct_eq(expected.as_bytes()).into())
}

/// Refuses to hand a page that shows a page key to anything but a top-level navigation:
/// a script's `fetch` of it (a demo's, on this origin) would read the key.
pub fn navigation_only(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("sec-fetch-mode") {
        Some(mode) if mode.as_bytes() != b"navigate" => Err(ApiError::Forbidden),
        _ => Ok(()),
    }
}

/// Refuses a state-changing request that another site made the browser send.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || ApiError::Forbidden;
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            _ => Err(refused()),
        };
    }
    // Older browsers: the Origin, when sent, must name the host the request went to.
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    if origin_host.as_bytes() == host.as_bytes() {
        Ok(())
    } else {
        Err(refused())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request's headers from (name, value) pairs, in order (a name may repeat).
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; testdrive_trial=t1; testdrive_trialx=no")]);
        assert_eq!(cookies(&h, TRIAL_COOKIE).collect::<Vec<_>>(), ["t1"]);
    }

    #[test]
    fn page_keys_belong_to_their_credential() {
        let key = page_key("tds_a");
        assert_eq!(key.len(), 32);
        assert_ne!(key, page_key("tds_b"));
        let mut h = HeaderMap::new();
        h.insert(PAGE_KEY_HEADER, HeaderValue::from_str(&key).unwrap());
        assert!(has_page_key(&h, None, "tds_a"));
        assert!(!has_page_key(&h, None, "tds_b"));
        assert!(has_page_key(
            &HeaderMap::new(),
            Some(&format!("x=1&key={key}")),
            "tds_a"
        ));
        assert!(!has_page_key(&HeaderMap::new(), Some("key="), "tds_a"));
        assert!(navigation_only(&headers(&[("sec-fetch-mode", "navigate")])).is_ok());
        assert!(navigation_only(&headers(&[("sec-fetch-mode", "cors")])).is_err());
        assert!(navigation_only(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn other_sites_cannot_post() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        let ours = [
            ("origin", "http://td.example:8080"),
            ("host", "td.example:8080"),
        ];
        assert!(same_origin(&headers(&ours)).is_ok());
        let theirs = [
            ("origin", "https://evil.example"),
            ("host", "td.example:8080"),
        ];
        assert!(same_origin(&headers(&theirs)).is_err());
        // No browser headers at all: a script or curl, which holds the token anyway.
        assert!(same_origin(&HeaderMap::new()).is_ok());
    }
}
