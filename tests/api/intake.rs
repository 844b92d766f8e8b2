//! Trial intake under abuse: request shapes meant to make the service hold memory, a
//! connection or a place (a part header that never ends, a million tiny parts, a huge
//! preamble, fields before the demo, a body that stalls, headers that never finish, too
//! many connections, uploads over the spool's budget), each against the real binary run
//! as a child process whose peak memory is read from `/proc/<pid>/status` around it: no
//! shape may grow it by more than 8 MiB. Then the checks on who may start a trial: not
//! another site's page, and per client, behind trusted proxies, never more than a share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Api, TestApp, assert_no_objects, problem};
use crate::process::ChildService;

pub(crate) const BOUNDARY: &str = "intake-test-boundary-5d8a1c";
const MIB: u64 = 1 << 20;
/// The most any one request shape may add to the service's peak memory.
const MEMORY_BOUND: u64 = 8 * MIB;
const CSV: &[u8] = b"city,visitors\nLisbon,12\nPorto,7\n";

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// A field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in the status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

/// Runs `shape` and says how far it raised the service's peak memory above what it used
/// when the shape began (the peak is reset first: `clear_refs` 5).
async fn peak_growth<T>(pid: u32, shape: impl Future<Output = T>) -> (T, u64) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("the peak can be reset");
    let before = status_bytes(pid, "VmRSS:");
    let out = shape.await;
    let peak = status_bytes(pid, "VmHWM:");
    (out, peak.saturating_sub(before))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

// ---------------------------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------------------------

/// What a raw request came to.
#[derive(Debug)]
struct Sent {
    /// Body bytes the service (its kernel) accepted.
    bytes: u64,
    /// Everything the service answered (empty if it just closed).
    answer: String,
    /// Whether the service closed the connection (rather than the client giving up).
    closed: bool,
}

impl Sent {
    fn status(&self) -> Option<u16> {
        self.answer
            .strip_prefix("HTTP/1.1 ")?
            .get(..3)?
            .parse()
            .ok()
    }
}

fn addr(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_string()
}

/// The head of a `POST /v1/sandboxes` whose multipart body is `length` bytes.
fn post_head(length: u64) -> String {
    format!(
        "POST /v1/sandboxes HTTP/1.1\r\nhost: testdrive\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// Sends `head`, then `body` piece by piece, on a connection of its own while reading the
/// answer; stops sending when the service closes the connection. Gives up after `limit`.
async fn send_raw(
    api: &Api,
    head: String,
    body: impl Iterator<Item = Bytes> + Send + 'static,
    limit: Duration,
) -> Sent {
    let stream = TcpStream::connect(addr(api)).await.expect("a connection");
    let (mut reader, mut writer) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let sending = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for piece in body {
            if writer.write_all(&piece).await.is_err() {
                return;
            }
            counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        // Everything is sent: keep the connection open for the answer.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    sending.abort();
    Sent {
        bytes: sent.load(Ordering::Relaxed),
        answer: String::from_utf8_lossy(&answer).to_string(),
        closed,
    }
}

/// At least `size` bytes of `unit` repeated, in pieces of about 64 KiB: their length, and
/// the pieces.
fn repeated(unit: &[u8], size: u64) -> (u64, impl Iterator<Item = Bytes> + Send + 'static) {
    let per_piece = (64 * 1024 / unit.len()).max(1);
    let piece = Bytes::from(unit.repeat(per_piece));
    let pieces = size.div_ceil(piece.len() as u64);
    (
        pieces * piece.len() as u64,
        (0..pieces).map(move |_| piece.clone()),
    )
}

pub(crate) fn field(name: &str, value: &str) -> Vec<u8> {
    format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
        .into_bytes()
}

pub(crate) fn file_head(name: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
    )
    .into_bytes()
}

pub(crate) fn closing() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

/// A request: what comes first, then `size` bytes of `unit`, then what closes it.
fn shape(
    first: Vec<u8>,
    unit: &'static [u8],
    size: u64,
    last: Vec<u8>,
) -> (u64, impl Iterator<Item = Bytes> + Send + 'static) {
    let (middle, pieces) = repeated(unit, size);
    let length = first.len() as u64 + middle + last.len() as u64;
    let body = std::iter::once(Bytes::from(first))
        .chain(pieces)
        .chain(std::iter::once(Bytes::from(last)));
    (length, body)
}

/// A vendor's static-files demo on a service: its id.
async fn demo_on(api: &Api, max_bytes: u64) -> String {
    api.static_demo(json!({"upload": {"max_bytes": max_bytes}}))
        .await
        .1
}

/// Nothing of a refused creation is left: no spool entry, no record, no Engine object.
async fn left_nothing(svc: &ChildService) {
    left_nothing_but_ended(svc).await;
    assert!(svc.sandbox_dirs().is_empty(), "{:?}", svc.sandbox_dirs());
    assert!(
        svc.sandboxes().await.is_empty(),
        "{:?}",
        svc.sandboxes().await
    );
}

/// The spool holds nothing: it may take a moment after a connection is cut for the
/// handler to notice and drop its spool.
async fn spool_empties(svc: &ChildService) {
    for _ in 0..600 {
        if svc.spool_entries().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the spool still holds {:?}", svc.spool_entries());
}

// ---------------------------------------------------------------------------------------------
// Abusive bodies
// ---------------------------------------------------------------------------------------------

/// What it is, what comes first, the unit repeated, how many bytes of it, what closes it.
type Shape = (&'static str, Vec<u8>, &'static [u8], u64, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_bodies_are_cut_off_without_growing_memory() {
    let svc = ChildService::start_with(&[("TESTDRIVE_INTAKE__IDLE_SECONDS", "10")]).await;
    let demo = demo_on(&svc, MIB).await;
    let pid = svc.pid();
    // Warm up: one ordinary refused request, so the first shape does not pay for first use.
    let warm = send_raw(
        &svc,
        post_head(4),
        std::iter::once(Bytes::from_static(b"oops")),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(warm.status(), Some(400), "{warm:?}");

    const BIG: u64 = 48 * MIB;
    let tiny_part: &'static [u8] =
        b"--intake-test-boundary-5d8a1c\r\ncontent-disposition: form-data; name=\"seconds\"\r\n\r\n9\r\n";
    let needs_part: &'static [u8] = Box::leak(field("needs", &"n".repeat(4000)).into_boxed_slice());
    let demo_field = field("demo", &demo);
    let shapes: Vec<Shape> = vec![
        (
            "the first part's header never ends",
            format!("--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"demo\"; x=\"")
                .into_bytes(),
            b"a",
            BIG,
            closing(),
        ),
        (
            "the second part's header never ends",
            [
                demo_field.clone(),
                format!("--{BOUNDARY}\r\nx-long: ").into_bytes(),
            ]
            .concat(),
            b"b",
            BIG,
            closing(),
        ),
        (
            "a million tiny parts before the demo",
            Vec::new(),
            tiny_part,
            1_000_000 * tiny_part.len() as u64,
            demo_field.clone(),
        ),
        (
            "a million tiny parts after the demo",
            demo_field.clone(),
            tiny_part,
            1_000_000 * tiny_part.len() as u64,
            closing(),
        ),
        (
            "a huge preamble",
            Vec::new(),
            b"preamble ",
            BIG,
            demo_field.clone(),
        ),
        (
            "four thousand 4 kB fields before the demo",
            Vec::new(),
            needs_part,
            4000 * needs_part.len() as u64,
            demo_field.clone(),
        ),
        (
            "a file far over the demo's limit",
            [demo_field.clone(), file_head("big.csv")].concat(),
            b"x,y\n",
            BIG,
            closing(),
        ),
    ];
    let mut report = Vec::new();
    for (what, first, unit, size, last) in shapes {
        let (length, body) = shape(first, unit, size, last);
        let (sent, growth) = peak_growth(pid, async {
            send_raw(&svc, post_head(length), body, Duration::from_secs(120)).await
        })
        .await;
        let line = format!(
            "{what}: peak memory +{}, {} of {} sent, answered {:?}",
            mib(growth),
            mib(sent.bytes),
            mib(length),
            sent.status()
        );
        eprintln!("intake memory: {line}");
        report.push((what, growth, sent, length, line));
    }
    // A request head that never ends, for comparison (hyper's own limit).
    let (sent, growth) = peak_growth(pid, async {
        let head = "POST /v1/sandboxes HTTP/1.1\r\nhost: testdrive\r\nx-huge: ".to_string();
        send_raw(&svc, head, repeated(b"h", BIG).1, Duration::from_secs(120)).await
    })
    .await;
    let line = format!(
        "a request header never ends: peak memory +{}, {} of {} sent, answered {:?}",
        mib(growth),
        mib(sent.bytes),
        mib(BIG),
        sent.status()
    );
    eprintln!("intake memory: {line}");
    report.push(("a request header never ends", growth, sent, BIG, line));

    spool_empties(&svc).await;
    left_nothing(&svc).await;
    for (what, growth, sent, length, line) in &report {
        assert!(*growth <= MEMORY_BOUND, "{line}");
        assert!(sent.closed, "the service still held the connection: {line}");
        // Cut off: the service stopped reading long before the end.
        assert!(sent.bytes < length / 2, "{line}");
        if let Some(status) = sent.status() {
            assert!((400..500).contains(&status), "{what}: {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stalling clients
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_and_a_stalled_request_head_are_cut_off() {
    let svc = ChildService::start_with(&[
        ("TESTDRIVE_INTAKE__IDLE_SECONDS", "2"),
        ("TESTDRIVE_SERVER__HEADER_READ_SECONDS", "2"),
    ])
    .await;
    let demo = demo_on(&svc, 8 * MIB).await;
    let pid = svc.pid();

    // An upload that sends its demo and part of a file, then nothing.
    let first = [
        field("demo", &demo),
        file_head("a.csv"),
        vec![b'x'; 256 * 1024],
    ]
    .concat();
    let (sent, growth) = peak_growth(pid, async {
        send_raw(
            &svc,
            post_head(8 * MIB),
            std::iter::once(Bytes::from(first)),
            Duration::from_secs(60),
        )
        .await
    })
    .await;
    eprintln!(
        "intake memory: a stalled upload: peak memory +{}, answered {:?}",
        mib(growth),
        sent.status()
    );
    assert!(
        sent.closed,
        "the service waited a minute for a stalled upload"
    );
    assert!(
        sent.answer.is_empty() || sent.status() == Some(400),
        "{sent:?}"
    );
    assert!(growth <= MEMORY_BOUND, "{}", mib(growth));
    spool_empties(&svc).await;
    left_nothing(&svc).await;

    // A request head that trickles in, a header line at a time, and never ends.
    let (closed, growth) = peak_growth(pid, async {
        let mut stream = TcpStream::connect(addr(&svc)).await.unwrap();
        stream
            .write_all(b"POST /v1/sandboxes HTTP/1.1\r\nhost: testdrive\r\n")
            .await
            .unwrap();
        let trickle = async {
            for n in 0.. {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if stream
                    .write_all(format!("x-slow-{n}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), trickle)
            .await
            .is_ok()
    })
    .await;
    eprintln!(
        "intake memory: a request head that never finishes: peak memory +{}, closed: {closed}",
        mib(growth)
    );
    assert!(
        closed,
        "the service kept reading a request head for a minute"
    );
    assert!(growth <= MEMORY_BOUND, "{}", mib(growth));
}

// ---------------------------------------------------------------------------------------------
// Too many connections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503_and_bounded_memory() {
    const CAP: usize = 32;
    const OPENED: usize = 1000;
    let svc = ChildService::start_with(&[
        ("TESTDRIVE_SERVER__MAX_CONNECTIONS", &CAP.to_string()),
        ("TESTDRIVE_SERVER__HEADER_READ_SECONDS", "120"),
    ])
    .await;
    let pid = svc.pid();
    // Each connection sends 30 kB of a request head that never ends.
    let partial = format!(
        "GET /healthz HTTP/1.1\r\nhost: testdrive\r\nx-pad: {}",
        "p".repeat(30_000)
    );
    let (held, growth) = peak_growth(pid, async {
        let mut held = Vec::new();
        for _ in 0..OPENED {
            let Ok(mut stream) = TcpStream::connect(addr(&svc)).await else {
                continue;
            };
            let _ = stream.write_all(partial.as_bytes()).await;
            held.push(stream);
        }
        // Let the service read what it will.
        tokio::time::sleep(Duration::from_millis(500)).await;
        held
    })
    .await;
    eprintln!(
        "intake memory: {OPENED} connections each sending 30 kB of a head: peak memory +{}",
        mib(growth)
    );

    // One more, with a whole request: refused while the others are open.
    let sent = send_raw(
        &svc,
        "GET /healthz HTTP/1.1\r\nhost: testdrive\r\n\r\n".to_string(),
        std::iter::empty(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sent.status(), Some(503), "{sent:?}");
    let answer = sent.answer.to_ascii_lowercase();
    assert!(answer.contains("retry-after:"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(growth <= MEMORY_BOUND, "{}", mib(growth));

    // Closed, their places come back.
    drop(held);
    let mut served = false;
    for _ in 0..200 {
        let res = svc
            .http
            .get(svc.url("/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if res.is_ok_and(|r| r.status() == StatusCode::OK) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no place came back");
}

// ---------------------------------------------------------------------------------------------
// Uploads at once and the spool's budget
// ---------------------------------------------------------------------------------------------

/// An upload that names `demo`, begins a file and then waits (the connection stays open).
async fn begin_upload(api: &Api, demo: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(api)).await.unwrap();
    let first = [field("demo", demo), file_head("a.csv"), CSV.to_vec()].concat();
    stream
        .write_all(post_head(first.len() as u64 + closing().len() as u64).as_bytes())
        .await
        .unwrap();
    stream.write_all(&first).await.unwrap();
    stream
}

/// Finishes an upload `begin_upload` began: the answer's status and body.
async fn finish_upload(mut stream: TcpStream) -> (u16, Value) {
    stream.write_all(&closing()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is a JSON body after the head; read until it parses.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("an answer within a minute")
            .unwrap();
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && let Ok(body) = serde_json::from_str::<Value>(body)
        {
            return (head[9..12].parse().unwrap(), body);
        }
        assert!(n > 0, "the connection closed: {text}");
    }
}

/// Waits until the spool holds `n` uploads' directories (the service has read their demo
/// fields).
async fn spool_holds(svc: &ChildService, n: usize) {
    for _ in 0..600 {
        let dirs = std::fs::read_dir(svc.spool_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("upload").exists())
                    .count()
            })
            .unwrap_or(0);
        if dirs == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the spool does not hold {n} uploads: {:?}",
        svc.spool_entries()
    );
}

async fn create(api: &Api, demo: &str) -> reqwest::Response {
    api.create_sandbox(demo, &[("a.csv", CSV.to_vec())], &[], None)
        .await
}

async fn end_all(api: &Api) {
    for sandbox in api.sandboxes().await {
        let id = sandbox["id"].as_str().unwrap();
        let res = api
            .delete(&format!("/v1/sandboxes/{id}"), Some(&api.admin))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_no_objects(id);
    }
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get(RETRY_AFTER)
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_spool_budget_or_the_upload_cap_are_503_and_leave_nothing() {
    let svc = ChildService::start_with(&[
        (
            "TESTDRIVE_INTAKE__SPOOL_BUDGET_BYTES",
            &(3 * MIB).to_string(),
        ),
        ("TESTDRIVE_INTAKE__MAX_UPLOADS", "2"),
    ])
    .await;
    let big = demo_on(&svc, 2 * MIB).await;
    let small = demo_on(&svc, MIB / 2).await;

    // One upload of the big demo in progress holds 2 MiB of the 3.
    let first = begin_upload(&svc, &big).await;
    spool_holds(&svc, 1).await;
    let (res, growth) = peak_growth(svc.pid(), create(&svc, &big)).await;
    eprintln!(
        "intake memory: an upload over the spool budget: peak memory +{}, answered {}",
        mib(growth),
        res.status()
    );
    assert!(growth <= MEMORY_BOUND, "{}", mib(growth));
    assert!(retry_after(&res) > 0);
    let body = problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("spool"), "{body}");
    // Nothing of it was made: only the first upload's directory is there.
    spool_holds(&svc, 1).await;
    assert!(svc.sandboxes().await.is_empty());

    // A small one fits beside it; while both are read, a third upload is refused outright.
    let second = begin_upload(&svc, &small).await;
    spool_holds(&svc, 2).await;
    let res = create(&svc, &small).await;
    assert!(retry_after(&res) > 0);
    let body = problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"].as_str().unwrap().contains("uploads"),
        "{body}"
    );
    spool_holds(&svc, 2).await;

    // Both in progress complete.
    let (status, body) = finish_upload(first).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = finish_upload(second).await;
    assert_eq!(status, 201, "{body}");
    // Once placed, their room is free again: the big demo fits.
    let res = create(&svc, &big).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    end_all(&svc).await;
    spool_empties(&svc).await;
    left_nothing_but_ended(&svc).await;
}

/// After ending every sandbox: no spool entry and no Engine object (records remain).
async fn left_nothing_but_ended(svc: &ChildService) {
    assert!(svc.spool_entries().is_empty(), "{:?}", svc.spool_entries());
    let objects: Vec<_> = svc
        .engine_objects()
        .into_iter()
        .filter(|o| o.kind != "network")
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

// ---------------------------------------------------------------------------------------------
// Other sites
// ---------------------------------------------------------------------------------------------

fn trial_form(demo: &str) -> Form {
    Form::new()
        .text("demo", demo.to_string())
        .part("file", Part::bytes(CSV.to_vec()).file_name("a.csv"))
}

/// `POST path` with the trial form and these headers (asking for JSON).
async fn post_trial(
    app: &TestApp,
    path: &str,
    demo: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(path))
        .header("accept", "application/json")
        .multipart(trial_form(demo));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_started_from_another_site_are_403_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let ours = app.base.clone();
    let refused: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://localhost:1"),
        ],
    ];
    for path in ["/v1/sandboxes", "/trials"] {
        let records = app.sandboxes().await.len();
        for headers in refused {
            let res = post_trial(&app, path, &demo, headers).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} {headers:?}");
            problem(res, StatusCode::FORBIDDEN).await;
        }
        assert!(app.spool_entries().is_empty());
        assert_eq!(app.sandboxes().await.len(), records, "{path}");
        // Scripts send neither; our own pages send our origin.
        let served: [&[(&str, &str)]; 3] = [
            &[],
            &[("origin", ours.as_str())],
            &[("sec-fetch-site", "same-origin"), ("origin", ours.as_str())],
        ];
        for headers in served {
            let res = post_trial(&app, path, &demo, headers).await;
            assert_eq!(res.status(), StatusCode::CREATED, "{path} {headers:?}");
        }
        end_all(&app).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Clients behind proxies
// ---------------------------------------------------------------------------------------------

async fn create_as(app: &TestApp, demo: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/v1/sandboxes"))
        .multipart(trial_form(demo));
    if let Some(hops) = forwarded_for {
        req = req.header("x-forwarded-for", hops);
    }
    req.send().await.unwrap()
}

/// An app that lets each client create one sandbox a minute, behind `trusted_proxies`
/// (`""`: none), and a demo of it, of which the client `203.0.113.5` (as X-Forwarded-For
/// names it) has just created one.
async fn limited_to_one(trusted_proxies: &str) -> (TestApp, String) {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = trusted_proxies.to_string();
        c.rate_limit.burst = 1;
        c.rate_limit.per_minute = 1;
    })
    .await;
    let (_, demo) = app.static_demo(json!({})).await;
    let res = create_as(&app, &demo, Some("203.0.113.5")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    (app, demo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_limited() {
    let (app, demo) = limited_to_one("127.0.0.1, 10.0.0.0/8").await;
    // The same client behind a second trusted proxy, with a spoofed left-most hop.
    let res = create_as(&app, &demo, Some("198.51.100.9, 203.0.113.5, 10.1.2.3")).await;
    assert!(retry_after(&res) > 0);
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    let res = create_as(&app, &demo, Some("203.0.113.6")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // No header: the proxy itself is the client.
    let res = create_as(&app, &demo, None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = create_as(&app, &demo, None).await;
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    end_all(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let (app, demo) = limited_to_one("").await;
    let res = create_as(&app, &demo, Some("203.0.113.6")).await;
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    end_all(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_holds_more_than_its_share_of_the_places() {
    let app = TestApp::spawn_with(|c| {
        c.trusted_proxies = "127.0.0.1".to_string();
        c.max_sandboxes = 5;
        c.rate_limit.max_share_percent = 20;
    })
    .await;
    let (_, demo) = app.static_demo(json!({})).await;
    let created = create_as(&app, &demo, Some("203.0.113.5")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let res = create_as(&app, &demo, Some("203.0.113.5")).await;
    assert!(retry_after(&res) > 0);
    let body = problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:testdrive:problem:capacity");
    // IPv6 clients count per /64.
    let res = create_as(&app, &demo, Some("2001:db8:1:2::1")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = create_as(&app, &demo, Some("2001:db8:1:2::beef")).await;
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    let res = create_as(&app, &demo, Some("2001:db8:1:3::1")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.sandboxes().await.len(), 3);
    // Ended, the place is the client's to take again.
    let id = created["id"].as_str().unwrap();
    let token = created["token"].as_str().unwrap();
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = create_as(&app, &demo, Some("203.0.113.5")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    end_all(&app).await;
}
