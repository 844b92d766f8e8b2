//! Sandbox origins and what a demo may do through them (API.md "Opening a sandbox" and
//! "Sandbox origins"), against `testdrive/hostile-demo:1`, a demo that answers every header,
//! cookie spelling, redirect and `101` a hostile app could, and echoes what it was sent.
//!
//! The app listens on `127.0.0.1:<port>` with that as its public URL, so the sandbox
//! domain defaults to `sandbox.localhost`. glibc does not resolve `*.localhost`: every
//! request here is written by hand on a connection to `127.0.0.1:<port>`, with the `Host`
//! header a browser would send, and read back as bytes (so no client tidies up a header
//! on the way).
//!
//! A sandbox is reached through a *door*: its own origin (with the cookie its `?token=`
//! exchange set), `/s/{id}/` on the main origin with the bearer token (scripts), or, with
//! `sandbox_domain = "off"`, `/s/{id}/` with its cookie. Each door gets the same attacks.
//! The checks of one test are gathered and reported together, so that one run tells every
//! way a build falls short.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testdrive::config::Config;

use crate::helpers::*;

pub const HOSTILE_DEMO: &str = "testdrive/hostile-demo:1";

/// The sandbox domain a loopback public URL gets by default.
pub const SANDBOX_DOMAIN: &str = "sandbox.localhost";

/// The names of testdrive's own cookies: a demo may never set one.
const OUR_COOKIES: &[&str] = &[
    "testdrive_sandbox",
    "testdrive_admin",
    "testdrive_trial",
    "testdrive_vendor",
];

/// Headers that let an answer act beyond its sandbox: never passed on.
const HOSTILE_HEADERS: &[&str] = &[
    "service-worker-allowed",
    "clear-site-data",
    "strict-transport-security",
    "nel",
    "report-to",
    "alt-svc",
    "x-accel-redirect",
    "access-control-allow-credentials",
];

/// Ordinary headers of `/headers` that must reach the client as the demo sent them.
const HARMLESS_HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("etag", "\"hostile-1\""),
    ("x-total-count", "42"),
];

/// Puts the app in the single-origin mode.
pub fn off_mode(config: &mut Config) {
    config.sandbox_domain = Some("off".into());
}

// ---------------------------------------------------------------------------------------
// Findings: the checks of one test, reported together
// ---------------------------------------------------------------------------------------

/// What a test found wrong, so far. `finish` fails the test listing all of it.
#[derive(Default)]
pub struct Findings {
    what: String,
    failed: Vec<String>,
    passed: usize,
}

impl Findings {
    pub fn new(what: &str) -> Findings {
        Findings {
            what: what.to_string(),
            ..Findings::default()
        }
    }

    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) -> bool {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(failure());
        }
        ok
    }

    pub fn finish(self) {
        if self.failed.is_empty() {
            eprintln!("{}: all {} checks held", self.what, self.passed);
            return;
        }
        let mut report = format!(
            "{}: {} of {} checks failed:\n",
            self.what,
            self.failed.len(),
            self.failed.len() + self.passed
        );
        for failure in &self.failed {
            let _ = writeln!(report, "  - {failure}");
        }
        panic!("{report}");
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------

/// A response as it came off the wire.
pub struct Answer {
    pub status: u16,
    /// Names in lower case, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Answer {
        let end = find(bytes, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {:?}", lossy(bytes)));
        let mut answer = Answer::parse_head(&bytes[..end]);
        let rest = &bytes[end + 4..];
        answer.body = if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            dechunk(rest)
        } else if let Some(length) = answer.header("content-length") {
            let length: usize = length.trim().parse().unwrap();
            rest[..length.min(rest.len())].to_vec()
        } else {
            rest.to_vec()
        };
        answer
    }

    fn parse_head(head: &[u8]) -> Answer {
        let text = lossy(head);
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lossy(lines.next().unwrap_or_default());
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line in {text:?}"));
        let headers = lines
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = lossy(&line[..colon]).trim().to_ascii_lowercase();
                let value = line[colon + 1..].trim_ascii().to_vec();
                Some((name, value))
            })
            .collect();
        Answer {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// The first value of `name`, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).next().map(lossy)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn text(&self) -> String {
        lossy(&self.body)
    }

    fn summary(&self) -> String {
        let mut s = format!("{}", self.status);
        for (name, value) in &self.headers {
            let _ = write!(s, " | {name}: {}", lossy(value));
        }
        let body: String = self.text().chars().take(200).collect();
        let _ = write!(s, " | body: {body:?}");
        s
    }
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size = lossy(&rest[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let start = eol + 2;
        body.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    body
}

/// Sends `request` on a new connection and reads the answer to the end (the request says
/// `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut bytes))
        .await
        .expect("the service answered and closed within a minute")
        .unwrap();
    Answer::parse(&bytes)
}

/// How a request proves it may open the sandbox.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A `Cookie` pair (`name=value`).
    Cookie(String),
    None,
}

/// A way into one sandbox: where to connect, the `Host` to send, the path prefix the
/// sandbox is under on that host (`""` on its own origin, `/s/{id}` on the main one) and
/// the credential.
#[derive(Clone)]
pub struct Door {
    pub addr: SocketAddr,
    pub host: String,
    pub prefix: String,
    pub credential: Credential,
}

impl Door {
    pub fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The URL a browser would be at for `path` (which starts with `/`) behind this door.
    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{}{path}", self.origin(), self.prefix)).unwrap()
    }

    pub fn with(&self, credential: Credential) -> Door {
        Door {
            credential,
            ..self.clone()
        }
    }

    /// The request head for `path` (after the prefix, from `/`): `Host`, the credential,
    /// `extra` headers, and `cookies` joined with the credential's in one `Cookie`.
    pub fn head(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        cookies: &[&str],
    ) -> Vec<u8> {
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hostile-tests\r\n",
            self.prefix, self.host
        );
        let mut all_cookies: Vec<String> = cookies.iter().map(|c| c.to_string()).collect();
        match &self.credential {
            Credential::Bearer(token) => {
                let _ = write!(head, "Authorization: Bearer {token}\r\n");
            }
            Credential::Cookie(pair) => all_cookies.insert(0, pair.clone()),
            Credential::None => {}
        }
        if !all_cookies.is_empty() {
            let _ = write!(head, "Cookie: {}\r\n", all_cookies.join("; "));
        }
        for (name, value) in extra {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.into_bytes()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        cookies: &[&str],
    ) -> Answer {
        let mut request = self.head(method, path, extra, cookies);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        exchange(self.addr, &request).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], &[]).await
    }

    /// A WebSocket-style upgrade: the `101` head, and the connection to talk on.
    pub async fn upgrade(&self, path: &str) -> (Answer, Option<TcpStream>) {
        let mut request = self.head(
            "GET",
            path,
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            &[],
        );
        request.extend_from_slice(b"\r\n");
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        let read_head = async {
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_head)
            .await
            .expect("an answer to the upgrade within a minute");
        if !head.ends_with(b"\r\n\r\n") {
            panic!("no complete answer to the upgrade: {:?}", lossy(&head));
        }
        let answer = Answer::parse_head(&head[..head.len() - 4]);
        if answer.status == 101 {
            (answer, Some(stream))
        } else {
            // Not switched: read the rest of the answer for the report.
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
            head.extend_from_slice(&rest);
            (Answer::parse(&head), None)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cookies, read the way browsers read them (RFC 6265bis, section 5.6)
// ---------------------------------------------------------------------------------------

/// A `Set-Cookie` as a browser would store it.
#[derive(Debug)]
pub struct StoredCookie {
    pub raw: String,
    pub name: String,
    pub value: String,
    /// The last non-empty `Domain` attribute: present means not host-only.
    pub domain: Option<String>,
    /// The last `Path` attribute, if it starts with `/`; otherwise the default path.
    pub path: Option<String>,
    pub http_only: bool,
    pub same_site: Option<String>,
}

impl StoredCookie {
    /// `None` when a browser ignores the line altogether.
    pub fn parse(raw: &[u8]) -> Option<StoredCookie> {
        if raw.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return None;
        }
        let text = lossy(raw);
        let mut parts = text.split(';');
        let pair = parts.next()?;
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name.trim(), value.trim()),
            None => ("", pair.trim()),
        };
        if name.is_empty() && value.is_empty() {
            return None;
        }
        let mut cookie = StoredCookie {
            raw: text.clone(),
            name: name.to_string(),
            value: value.to_string(),
            domain: None,
            path: None,
            http_only: false,
            same_site: None,
        };
        for attribute in parts {
            let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "domain" if !value.is_empty() => cookie.domain = Some(value.to_string()),
                "path" => {
                    cookie.path = value.starts_with('/').then(|| value.to_string());
                }
                "httponly" => cookie.http_only = true,
                "samesite" => cookie.same_site = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        Some(cookie)
    }

    /// The path the browser stores it under, for an answer to a request for `request_path`.
    pub fn effective_path(&self, request_path: &str) -> String {
        self.path.clone().unwrap_or_else(|| {
            let path = request_path.split('?').next().unwrap_or_default();
            match path.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(last) => path[..last].to_string(),
            }
        })
    }
}

/// Whether `path` lies inside `prefix` (`/s/{id}`): that path itself or below it.
fn inside(path: &str, prefix: &str) -> bool {
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Checks every `Set-Cookie` of an answer to `request_path` behind `door`: host-only,
/// inside the sandbox's path, never one of testdrive's names (nor `own`, the name of the
/// cookie the door itself uses). Returns the cookies as stored.
fn check_cookies(
    findings: &mut Findings,
    door: &Door,
    own: Option<&str>,
    request_path: &str,
    answer: &Answer,
    context: &str,
) -> Vec<StoredCookie> {
    let full_path = format!("{}{request_path}", door.prefix);
    let mut stored = Vec::new();
    for raw in answer.all("set-cookie") {
        let Some(cookie) = StoredCookie::parse(raw) else {
            continue;
        };
        let path = cookie.effective_path(&full_path);
        findings.check(cookie.domain.is_none(), || {
            format!(
                "{context}: a cookie with a Domain reached the client: {:?}",
                cookie.raw
            )
        });
        findings.check(inside(&path, &door.prefix), || {
            format!(
                "{context}: a cookie for a path outside {}/ reached the client (a browser \
                 stores it for {path:?}): {:?}",
                door.prefix, cookie.raw
            )
        });
        findings.check(
            !OUR_COOKIES.contains(&cookie.name.as_str()) && Some(cookie.name.as_str()) != own,
            || {
                format!(
                    "{context}: the demo set one of testdrive's own cookies: {:?}",
                    cookie.raw
                )
            },
        );
        stored.push(cookie);
    }
    stored
}

// ---------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------

fn require_hostile_image() {
    let found = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", HOSTILE_DEMO])
        .output()
        .expect("the docker CLI runs");
    assert!(
        found.status.success(),
        "the image {HOSTILE_DEMO} is missing: run sandbox-images/build first"
    );
}

/// A vendor with the hostile demo: (vendor key, demo id).
pub async fn hostile_demo(app: &Api) -> (String, String) {
    require_hostile_image();
    let (_, key) = app
        .vendor(&format!("Hostile {}", uuid::Uuid::new_v4().simple()))
        .await;
    let demo = app
        .demo(
            &key,
            json!({
                "slug": "hostile", "title": "Hostile demo", "image": HOSTILE_DEMO,
                "port": 8080, "data_path": "/data",
                "ready": {"http_path": "/", "timeout_seconds": 60}
            }),
        )
        .await;
    (key, demo)
}

/// A ready sandbox of `demo`: (id, token, url).
pub async fn hostile_sandbox(app: &Api, demo: &str) -> (String, String, String) {
    let body = app.ready_sandbox(demo, &[("a.txt", b"x\n".to_vec())]).await;
    (
        body["id"].as_str().unwrap().to_string(),
        body["token"].as_str().unwrap().to_string(),
        body["url"].as_str().unwrap_or_default().to_string(),
    )
}

pub fn addr_of(app: &Api) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// `<id>.sandbox.localhost:<port>`, the `Host` of a sandbox's own origin.
pub fn sandbox_host(app: &Api, id: &str) -> String {
    format!("{id}.{SANDBOX_DOMAIN}:{}", addr_of(app).port())
}

/// The door of a sandbox's own origin, with no credential yet.
pub fn own_origin(app: &Api, id: &str) -> Door {
    Door {
        addr: addr_of(app),
        host: sandbox_host(app, id),
        prefix: String::new(),
        credential: Credential::None,
    }
}

/// The door of `/s/{id}/` on the main origin, with no credential yet.
pub fn main_origin(app: &Api, id: &str) -> Door {
    let addr = addr_of(app);
    Door {
        addr,
        host: addr.to_string(),
        prefix: format!("/s/{id}"),
        credential: Credential::None,
    }
}

/// The sandbox container's own address, `ip:8080`, as testdrive reaches it.
fn upstream_of(id: &str) -> String {
    format!("{}:8080", container_ip(id))
}

/// `?token=` on `door` (at `path`, which may carry a query): checks the `303` and its
/// cookie as the contract has them and returns the cookie's `name=value`.
async fn exchange_token(
    findings: &mut Findings,
    door: &Door,
    path: &str,
    token: &str,
    cookie_path: &str,
) -> Option<(String, String)> {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let answer = door
        .with(Credential::None)
        .get(&format!("{path}{joiner}token={token}"))
        .await;
    let context = format!("?token= on {}{}{path}", door.origin(), door.prefix);
    if !findings.check(answer.status == 303, || {
        format!("{context}: expected 303, got {}", answer.summary())
    }) {
        return None;
    }
    let location = answer.header("location").unwrap_or_default();
    let went = door.url(path).join(&location).ok();
    let expected = door.url(path);
    findings.check(went.as_ref() == Some(&expected), || {
        format!("{context}: the 303 goes to {location:?}, not the same path without the token ({expected})")
    });
    findings.check(!location.contains(token), || {
        format!("{context}: the 303's Location still holds the token: {location:?}")
    });
    let cookies: Vec<StoredCookie> = answer
        .all("set-cookie")
        .filter_map(StoredCookie::parse)
        .collect();
    // The cookie that holds the token, or else the one cookie set (it may hold something
    // derived from the token).
    let cookie = cookies
        .iter()
        .find(|c| c.value == token)
        .or(if cookies.len() == 1 {
            cookies.first()
        } else {
            None
        });
    let Some(cookie) = cookie else {
        findings.check(false, || {
            format!("{context}: no cookie holds the token: {}", answer.summary())
        });
        return None;
    };
    findings.check(cookie.domain.is_none(), || {
        format!("{context}: the cookie is not host-only: {:?}", cookie.raw)
    });
    findings.check(cookie.path.as_deref() == Some(cookie_path), || {
        format!(
            "{context}: the cookie's Path is not {cookie_path}: {:?}",
            cookie.raw
        )
    });
    findings.check(cookie.http_only, || {
        format!("{context}: the cookie is not HttpOnly: {:?}", cookie.raw)
    });
    findings.check(cookie.same_site.as_deref() == Some("lax"), || {
        format!(
            "{context}: the cookie is not SameSite=Lax: {:?}",
            cookie.raw
        )
    });
    Some((
        cookie.name.clone(),
        format!("{}={}", cookie.name, cookie.value),
    ))
}

// ---------------------------------------------------------------------------------------
// The attacks, through one door
// ---------------------------------------------------------------------------------------

/// Secrets the echo must never show.
struct Secrets<'a> {
    admin: &'a str,
    vendor_key: &'a str,
    token: &'a str,
}

/// None of `HOSTILE_HEADERS` is in `answer`; `suffix` says where, after "reached the client".
fn check_no_hostile_headers(findings: &mut Findings, context: &str, answer: &Answer, suffix: &str) {
    for name in HOSTILE_HEADERS {
        findings.check(answer.header(name).is_none(), || {
            format!(
                "{context}: the demo's {name}: {:?} reached the client{suffix}",
                answer.header(name).unwrap_or_default()
            )
        });
    }
}

/// Every attack of the hostile demo through `door` (which carries a working credential).
/// `own_cookie` is the name of the cookie the door's exchange set, if any.
async fn attack_through(
    findings: &mut Findings,
    door: &Door,
    id: &str,
    own_cookie: Option<&str>,
    secrets: &Secrets<'_>,
) {
    let label = format!("{}{}/", door.origin(), door.prefix);

    // Response headers and cookies.
    let answer = door.get("/headers").await;
    let context = format!("GET {label}headers");
    if findings.check(answer.status == 200, || {
        format!(
            "{context}: expected the demo's 200, got {}",
            answer.summary()
        )
    }) {
        check_no_hostile_headers(findings, &context, &answer, "");
        for (name, value) in HARMLESS_HEADERS {
            findings.check(answer.header(name).as_deref() == Some(*value), || {
                format!(
                    "{context}: the demo's harmless {name}: {value} did not survive (got {:?})",
                    answer.header(name)
                )
            });
        }
        let stored = check_cookies(findings, door, own_cookie, "/headers", &answer, &context);
        eprintln!(
            "{context}: Set-Cookie as passed on: {:?}",
            answer.all("set-cookie").map(lossy).collect::<Vec<_>>()
        );
        let ok = stored.iter().find(|c| c.name == "ok");
        findings.check(
            ok.is_some_and(|c| {
                c.value == "1"
                    && c.http_only
                    && c.same_site.as_deref() == Some("lax")
                    && c.effective_path(&format!("{}/headers", door.prefix))
                        == format!("{}/app", door.prefix)
            }),
            || {
                format!(
                    "{context}: the benign `ok=1; Path=/app; HttpOnly; SameSite=Lax` did not \
                     survive as a cookie for {}/app: {ok:?}",
                    door.prefix
                )
            },
        );
        findings.check(
            stored.iter().any(|c| c.name == "ok2" && c.value == "2"),
            || format!("{context}: the benign `ok2=2` did not survive"),
        );
    }

    // Redirects stay inside the sandbox; its own ones keep working.
    let upstream = upstream_of(id);
    let targets = [
        "//evil.example/".to_string(),
        "http://evil.example/".to_string(),
        "/\\evil.example".to_string(),
        "\\\\evil.example".to_string(),
        "https:evil.example".to_string(),
        format!("https://{upstream}/x"),
        format!("http://{upstream}/x"),
        "next".to_string(),
        "/ok".to_string(),
    ];
    for to in &targets {
        let encoded: String = form_urlencoded::byte_serialize(to.as_bytes()).collect();
        let path = format!("/redirect?to={encoded}");
        let answer = door.get(&path).await;
        let context = format!("GET {label}redirect?to={to}");
        let Some(location) = answer.header("location") else {
            findings.check(to != "/ok", || {
                format!(
                    "{context}: the demo's own redirect lost its Location: {}",
                    answer.summary()
                )
            });
            continue;
        };
        let went = door.url(&path).join(&location);
        let stays = went.as_ref().is_ok_and(|url| {
            url.origin() == door.url("/").origin() && inside(url.path(), &door.prefix)
        });
        findings.check(stays, || {
            format!(
                "{context}: Location {location:?} leaves the sandbox (a browser goes to {})",
                went.as_ref()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|e| e.to_string())
            )
        });
        if to == "/ok" {
            findings.check(
                answer.status == 302 && went.as_ref().ok() == Some(&door.url("/ok")),
                || {
                    format!(
                        "{context}: the demo's own redirect does not lead to {}",
                        door.url("/ok")
                    )
                },
            );
        }
    }

    // A 101 answer is filtered like any other, and the upgraded connection works.
    let (answer, stream) = door.upgrade("/ws").await;
    let context = format!("upgrade at {label}ws");
    if findings.check(answer.status == 101, || {
        format!(
            "{context}: expected the demo's 101, got {}",
            answer.summary()
        )
    }) {
        check_no_hostile_headers(findings, &context, &answer, " in the 101");
        check_cookies(findings, door, own_cookie, "/ws", &answer, &context);
        let mut stream = stream.unwrap();
        stream.write_all(b"ping-hostile").await.unwrap();
        let mut echoed = [0u8; 12];
        let read =
            tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut echoed)).await;
        findings.check(
            matches!(read, Ok(Ok(_))) && &echoed == b"ping-hostile",
            || format!("{context}: the upgraded connection did not echo: {read:?}"),
        );
    }

    // What reaches the demo: the path as sent (percent-encoding kept), testdrive's own
    // forwarding headers, none of testdrive's credentials. A path whose encoding matters,
    // and a plain one, so that the rest is seen even where the first is refused.
    let spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Prefix", "/evil-prefix"),
    ];
    let admin_cookie = format!("testdrive_admin={}", secrets.admin);
    let trial_cookie = format!("testdrive_trial={}", secrets.token);
    let vendor_cookie = format!("testdrive_vendor={}", secrets.vendor_key);
    let sandbox_cookie = format!("testdrive_sandbox={}", secrets.token);
    let cookies = [
        admin_cookie.as_str(),
        trial_cookie.as_str(),
        vendor_cookie.as_str(),
        sandbox_cookie.as_str(),
        "theirs=1",
    ];
    for path in ["/echo/a%2Fb%20c?x=%41", "/echo/plain?x=%41&y=%2F"] {
        let answer = door.send("GET", path, &spoofed, &cookies).await;
        let context = format!("GET {label}{}", &path[1..]);
        if !findings.check(answer.status == 200, || {
            format!(
                "{context}: expected the demo's echo, got {}",
                answer.summary()
            )
        }) {
            continue;
        }
        let echo = answer.text();
        eprintln!("{context}: the demo received:\n{echo}");
        check_echo(findings, &context, &echo, path, door, secrets);
        let cookie_lines: Vec<&str> = echo
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("cookie:"))
            .collect();
        findings.check(cookie_lines.iter().any(|l| l.contains("theirs=1")), || {
            format!(
                "{context}: the demo's own cookie `theirs=1` did not reach it: {cookie_lines:?}"
            )
        });
    }

    // A foreign Authorization (an operator's token) beside the door's own credential.
    if !matches!(door.credential, Credential::Bearer(_)) {
        let bearer = format!("Bearer {}", secrets.admin);
        let answer = door
            .send("GET", "/echo/foreign", &[("Authorization", &bearer)], &[])
            .await;
        let context = format!("GET {label}echo/foreign with an operator's Authorization");
        findings.check(
            answer.status != 200 || !answer.text().contains(secrets.admin),
            || {
                format!(
                    "{context}: the operator's token reached the demo:\n{}",
                    answer.text()
                )
            },
        );
    }
}

/// The echoed request head: as sent, with testdrive's forwarding headers only.
fn check_echo(
    findings: &mut Findings,
    context: &str,
    echo: &str,
    path: &str,
    door: &Door,
    secrets: &Secrets<'_>,
) {
    let first = echo.lines().next().unwrap_or_default();
    let expected = format!("GET {path} HTTP/1.1");
    findings.check(first == expected, || {
        format!("{context}: the demo got the request line {first:?}, not {expected:?}")
    });
    let lower = echo.to_ascii_lowercase();
    for (what, secret) in [
        ("the sandbox token", secrets.token),
        ("the operators' token", secrets.admin),
        ("the vendor's key", secrets.vendor_key),
    ] {
        findings.check(!echo.contains(secret), || {
            format!("{context}: {what} reached the demo")
        });
    }
    findings.check(!lower.contains("testdrive_"), || {
        format!("{context}: one of testdrive's cookies reached the demo")
    });
    for spoof in ["6.6.6.6", "evil.example", "/evil-prefix"] {
        findings.check(!echo.contains(spoof), || {
            format!(
                "{context}: the client's own forwarding header ({spoof}) reached the demo as sent"
            )
        });
    }
    let values = |name: &str| -> Vec<String> {
        echo.lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    let xff = values("x-forwarded-for");
    findings.check(xff == ["127.0.0.1"], || {
        format!("{context}: X-Forwarded-For is {xff:?}, not the client's address alone")
    });
    let xfh = values("x-forwarded-host");
    findings.check(xfh.iter().all(|h| *h == door.host), || {
        format!("{context}: X-Forwarded-Host is {xfh:?}, not the Host the client sent")
    });
    let xfp = values("x-forwarded-proto");
    findings.check(xfp.iter().all(|p| p == "http"), || {
        format!("{context}: X-Forwarded-Proto is {xfp:?}")
    });
    let authorization = values("authorization");
    findings.check(authorization.is_empty(), || {
        format!("{context}: an Authorization reached the demo: {authorization:?}")
    });
}

/// What the echo must never show, for a sandbox of the vendor `key`.
fn secrets<'a>(app: &'a TestApp, key: &'a str, token: &'a str) -> Secrets<'a> {
    Secrets {
        admin: &app.admin,
        vendor_key: key,
        token,
    }
}

/// `path` behind `door` (which carries no credential) is refused with 401.
async fn check_needs_token(findings: &mut Findings, door: &Door, path: &str) {
    let answer = door.get(path).await;
    findings.check(answer.status == 401, || {
        format!(
            "GET {}{}{path} without a token: expected 401, got {}",
            door.origin(),
            door.prefix,
            answer.summary()
        )
    });
}

/// `/` behind `door` is the demo's page; `how` says what credential the door carries.
async fn check_demo_page(findings: &mut Findings, door: &Door, how: &str) {
    let answer = door.get("/").await;
    findings.check(
        answer.status == 200 && answer.text().contains("<h1>hostile-demo</h1>"),
        || {
            format!(
                "GET {}{}/ {how}: not the demo's page: {}",
                door.origin(),
                door.prefix,
                answer.summary()
            )
        },
    );
}

/// A vendor with the hostile demo and a ready sandbox of it.
struct Hostile {
    key: String,
    demo: String,
    id: String,
    token: String,
    url: String,
}

async fn hostile(app: &TestApp) -> Hostile {
    let (key, demo) = hostile_demo(app).await;
    let (id, token, url) = hostile_sandbox(app, &demo).await;
    Hostile {
        key,
        demo,
        id,
        token,
        url,
    }
}

// ---------------------------------------------------------------------------------------
// The tests: the sandbox's own origin (the default with a loopback public URL)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sandbox_is_served_on_its_own_origin() {
    let app = TestApp::spawn().await;
    let Hostile { id, token, url, .. } = hostile(&app).await;
    let mut findings = Findings::new("a sandbox on its own origin");
    let port = addr_of(&app).port();
    let expected = format!("http://{id}.{SANDBOX_DOMAIN}:{port}/");
    findings.check(url == expected, || {
        format!("the sandbox's url is {url:?}, not {expected:?}")
    });

    let door = own_origin(&app, &id);
    // Without a token: 401, on any path.
    check_needs_token(&mut findings, &door, "/").await;
    // The token, once, becomes a cookie for this host; the same path without it.
    exchange_token(&mut findings, &door, "/echo/deep?a=1", &token, "/").await;
    let exchanged = exchange_token(&mut findings, &door, "/", &token, "/").await;
    if let Some((_, pair)) = exchanged {
        let door = door.with(Credential::Cookie(pair));
        check_demo_page(&mut findings, &door, "with the cookie").await;
    }
    // The bearer token works there too.
    let with_token = door.with(Credential::Bearer(token.clone()));
    check_demo_page(&mut findings, &with_token, "with the bearer token").await;
    findings.finish();
}

/// A sandbox host belongs wholly to the sandbox: testdrive's own routes are the demo's
/// there (with the token) or refused (without), never testdrive's.
#[tokio::test]
async fn nothing_of_testdrives_is_served_on_a_sandbox_host() {
    let app = TestApp::spawn().await;
    let Hostile {
        id, token, demo, ..
    } = hostile(&app).await;
    let mut findings = Findings::new("nothing of testdrive's on a sandbox host");
    let door = own_origin(&app, &id);
    let paths = [
        "/v1/catalog".to_string(),
        "/ops".to_string(),
        "/vendor".to_string(),
        "/assets/app.css".to_string(),
        "/openapi.json".to_string(),
        "/healthz".to_string(),
        format!("/demos/{demo}"),
        format!("/trials/{id}"),
        format!("/v1/sandboxes/{id}"),
        format!("/s/{id}/"),
    ];
    let with_token = door.with(Credential::Bearer(token.clone()));
    for path in &paths {
        let answer = with_token.get(path).await;
        let expected = format!(
            "hostile-demo: no such route: GET {}",
            path.split('?').next().unwrap()
        );
        findings.check(answer.text().contains(&expected), || {
            format!(
                "GET {}{path} with the sandbox's token: not the demo's answer: {}",
                door.origin(),
                answer.summary()
            )
        });
        check_needs_token(&mut findings, &door, path).await;
    }
    // A login or a trial form posted to a sandbox host is the demo's too.
    let answer = with_token
        .send(
            "POST",
            "/ops/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "0"),
            ],
            &[],
        )
        .await;
    findings.check(answer.text().contains("hostile-demo"), || {
        format!(
            "POST {}/ops/login: not the demo's answer: {}",
            door.origin(),
            answer.summary()
        )
    });
    findings.finish();
}

#[tokio::test]
async fn one_sandboxs_token_opens_no_other_sandbox_host() {
    let app = TestApp::spawn().await;
    let (_, demo) = hostile_demo(&app).await;
    let (first, token, _) = hostile_sandbox(&app, &demo).await;
    let (second, _, _) = hostile_sandbox(&app, &demo).await;
    let mut findings = Findings::new("a token on another sandbox's host");
    let mine = own_origin(&app, &first);
    let pair = exchange_token(&mut findings, &mine, "/", &token, "/").await;
    let refused = |answer: &Answer| matches!(answer.status, 401 | 404);
    let other = own_origin(&app, &second);
    let answer = other.get(&format!("/?token={token}")).await;
    findings.check(refused(&answer), || {
        format!(
            "{}/?token=<first's token>: expected 401 or 404, got {}",
            other.origin(),
            answer.summary()
        )
    });
    let answer = other.with(Credential::Bearer(token.clone())).get("/").await;
    findings.check(refused(&answer), || {
        format!(
            "{}/ with the first's bearer token: expected 401 or 404, got {}",
            other.origin(),
            answer.summary()
        )
    });
    if let Some((_, pair)) = pair {
        let answer = other.with(Credential::Cookie(pair)).get("/").await;
        findings.check(refused(&answer), || {
            format!(
                "{}/ with the first's cookie: expected 401 or 404, got {}",
                other.origin(),
                answer.summary()
            )
        });
    }
    // Hosts of no sandbox under the sandbox domain: refused, not testdrive's pages.
    for label in [uuid::Uuid::new_v4().to_string(), "nosuch".to_string()] {
        let door = Door {
            host: format!("{label}.{SANDBOX_DOMAIN}:{}", addr_of(&app).port()),
            ..other.clone()
        };
        let answer = door
            .with(Credential::Bearer(token.clone()))
            .get("/ops")
            .await;
        findings.check(
            (400..500).contains(&answer.status) && !answer.text().contains("form id=\"login\""),
            || {
                format!(
                    "{}/ops: expected a refusal, got {}",
                    door.origin(),
                    answer.summary()
                )
            },
        );
    }
    findings.finish();
}

/// On the main origin, `/s/{id}/` still serves a script that sends the bearer token, and
/// sends a browser (`?token=`, or a cookie) on to the sandbox's origin.
#[tokio::test]
async fn the_main_origin_serves_scripts_and_sends_browsers_on() {
    let app = TestApp::spawn().await;
    let Hostile { id, token, .. } = hostile(&app).await;
    let mut findings = Findings::new("/s/{id}/ on the main origin");
    let door = main_origin(&app, &id);
    let sandbox_origin = format!("http://{}", sandbox_host(&app, &id));

    let answer = door
        .with(Credential::Bearer(token.clone()))
        .get("/echo/script")
        .await;
    findings.check(
        answer.status == 200 && answer.text().starts_with("GET /echo/script HTTP/1.1\r\n"),
        || {
            format!(
                "GET /s/{id}/echo/script with the bearer token: not forwarded: {}",
                answer.summary()
            )
        },
    );
    let sent_on = |answer: &Answer| {
        (300..400).contains(&answer.status)
            && answer.header("location").is_some_and(|l| {
                door.url("/")
                    .join(&l)
                    .is_ok_and(|u| u.origin().ascii_serialization() == sandbox_origin)
            })
    };
    for (what, answer) in [
        ("?token=", door.get(&format!("/?token={token}")).await),
        (
            "the sandbox cookie",
            door.with(Credential::Cookie(format!("testdrive_sandbox={token}")))
                .get("/echo/browser")
                .await,
        ),
    ] {
        findings.check(sent_on(&answer), || {
            format!(
                "/s/{id}/ with {what}: expected a redirect to {sandbox_origin}/…, got {}",
                answer.summary()
            )
        });
    }
    check_needs_token(&mut findings, &door, "/").await;
    findings.finish();
}

#[tokio::test]
async fn a_demo_on_its_own_origin_acts_only_there() {
    let app = TestApp::spawn().await;
    let Hostile { key, id, token, .. } = hostile(&app).await;
    let mut findings = Findings::new("the hostile demo on its own origin");
    let door = own_origin(&app, &id);
    if let Some((name, pair)) = exchange_token(&mut findings, &door, "/", &token, "/").await {
        let door = door.with(Credential::Cookie(pair));
        let secrets = secrets(&app, &key, &token);
        attack_through(&mut findings, &door, &id, Some(&name), &secrets).await;
    }
    findings.finish();
}

#[tokio::test]
async fn a_demo_opened_by_a_script_on_the_main_origin_acts_only_in_its_path() {
    let app = TestApp::spawn().await;
    let Hostile { key, id, token, .. } = hostile(&app).await;
    let mut findings = Findings::new("the hostile demo for a script on /s/{id}/");
    let door = main_origin(&app, &id).with(Credential::Bearer(token.clone()));
    let secrets = secrets(&app, &key, &token);
    attack_through(&mut findings, &door, &id, None, &secrets).await;
    findings.finish();
}

// ---------------------------------------------------------------------------------------
// The tests: `sandbox_domain = "off"`, the single-origin mode
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_demo_in_off_mode_acts_only_in_its_path() {
    let app = TestApp::spawn_with(off_mode).await;
    let Hostile {
        key,
        id,
        token,
        url,
        ..
    } = hostile(&app).await;
    let mut findings = Findings::new("the hostile demo in off mode");
    // The single origin: the sandbox is `/s/{id}/` on the main origin, as before.
    let expected = format!("{}/s/{id}/", app.base);
    findings.check(url == expected, || {
        format!("the sandbox's url is {url:?}, not {expected:?}")
    });
    let door = main_origin(&app, &id);
    check_needs_token(&mut findings, &door, "/").await;
    let secrets = secrets(&app, &key, &token);
    let prefix = format!("/s/{id}/");
    if let Some((name, pair)) = exchange_token(&mut findings, &door, "/", &token, &prefix).await {
        let door = door.with(Credential::Cookie(pair));
        check_demo_page(&mut findings, &door, "with the cookie").await;
        attack_through(&mut findings, &door, &id, Some(&name), &secrets).await;
    }
    let door = door.with(Credential::Bearer(token.clone()));
    attack_through(&mut findings, &door, &id, None, &secrets).await;
    findings.finish();
}

#[test]
fn cookies_are_read_the_way_browsers_read_them() {
    let parse = |raw: &[u8]| StoredCookie::parse(raw).unwrap();
    assert_eq!(parse(b"c=1; Path =/; HttpOnly").path.as_deref(), Some("/"));
    assert_eq!(parse(b"d=1; Path\t=/ops").path.as_deref(), Some("/ops"));
    assert_eq!(parse(b"h=1; PATH=/trials").path.as_deref(), Some("/trials"));
    assert_eq!(parse(b"i=1; Path=\"/ops\"").path, None);
    assert_eq!(
        parse(b"j=1; Path=/; Path=/ops").path.as_deref(),
        Some("/ops")
    );
    assert_eq!(
        parse(b"k=1; Domain =sandbox.localhost; Path=/")
            .domain
            .as_deref(),
        Some("sandbox.localhost")
    );
    assert_eq!(
        parse(b"f=1; domain=.localhost").domain.as_deref(),
        Some(".localhost")
    );
    assert_eq!(parse(b"f=1; Domain=").domain, None);
    let nameless = parse(b"=nameless; Path=/");
    assert_eq!(
        (nameless.name.as_str(), nameless.value.as_str()),
        ("", "nameless")
    );
    let ok = parse(b"ok=1; Path=/app; HttpOnly; SameSite=Lax");
    assert!(ok.http_only);
    assert_eq!(ok.same_site.as_deref(), Some("lax"));
    assert!(StoredCookie::parse(b"x=1\x01").is_none());
    let ok2 = parse(b"ok2=2");
    assert_eq!(ok2.effective_path("/s/abc/headers"), "/s/abc");
    assert_eq!(ok2.effective_path("/headers"), "/");
    assert!(inside("/s/abc", "/s/abc"));
    assert!(inside("/s/abc/app", "/s/abc"));
    assert!(!inside("/s/abcd", "/s/abc"));
    assert!(!inside("/ops", "/s/abc"));
    assert!(inside("/ops", ""));
}

#[test]
fn answers_are_read_off_the_wire() {
    let answer = Answer::parse(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=\xe9\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.all("set-cookie").count(), 2);
    assert_eq!(answer.body, b"abcde");
}
