//! Sleep and wake, crash repair, capacity and rate limits, and an Engine outage (issue 3),
//! against the real service and the real Docker Engine. An idle sandbox's container stops
//! and keeps its data and address; the next request wakes it. A demo that crashed sleeps
//! until the next request restarts it; one whose container vanished fails. Sleeping
//! sandboxes hold a place of their own, not a running one. An Engine cut off behind a socket
//! forwarder makes creation answer 503 while reads go on, and the teardown that fell due
//! meanwhile happens once it is back.
//!
//! Waits are "eventually" with generous limits; nothing here asserts how fast anything is.
//! The wake latency is measured and printed, never asserted.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const HELLO: &[u8] = b"hello from the prospect's own file\n";

fn hello() -> Vec<(&'static str, Vec<u8>)> {
    vec![("hello.txt", HELLO.to_vec())]
}

/// Polls `check` until it returns `Some`, up to `limit`.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn str_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

/// A ready sandbox of `demo` holding `hello.txt`: (id, token).
async fn hello_sandbox(app: &TestApp, demo: &str) -> (String, String) {
    let body = app.ready_sandbox(demo, &hello()).await;
    (
        str_of(&body, "id").to_string(),
        str_of(&body, "token").to_string(),
    )
}

async fn record(app: &TestApp, id: &str, token: &str) -> Value {
    let res = app.get(&format!("/v1/sandboxes/{id}"), Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

/// `GET /s/{id}/hello.txt` with the sandbox token.
async fn open_hello(app: &TestApp, id: &str, token: &str) -> Response {
    app.get(&format!("/s/{id}/hello.txt"), Some(token)).await
}

/// Opens the sandbox and checks the prospect's file comes back unchanged.
async fn assert_serves_hello(app: &TestApp, id: &str, token: &str) {
    let res = open_hello(app, id, token).await;
    let status = res.status();
    let body = res.bytes().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], HELLO);
}

fn retry_after(res: &Response) -> u64 {
    res.headers()
        .get(RETRY_AFTER)
        .unwrap_or_else(|| panic!("no Retry-After on a {}", res.status()))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

/// `docker inspect` of the sandbox's container (`None`: there is no such container).
fn inspect(id: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", &container_of(&id)])
        .output()
        .expect("the docker CLI runs");
    if !out.status.success() {
        return None;
    }
    let all: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    Some(all[0].clone())
}

/// Whether the sandbox's container runs (`None`: there is no such container).
fn container_running(id: &str) -> Option<bool> {
    inspect(id).map(|c| c["State"]["Running"] == true)
}

/// The container's address on the app's sandbox network: (assigned, in use). A stopped
/// container keeps the assigned one and has none in use.
fn addresses(app: &TestApp, id: &str) -> (String, String) {
    let container = inspect(id).expect("the container exists");
    let endpoint = &container["NetworkSettings"]["Networks"][&app.network];
    (
        endpoint["IPAMConfig"]["IPv4Address"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        endpoint["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The files of the sandbox's data directory, each as `name inode`: the same list later
/// means the same files, kept where they were.
fn data_of(app: &TestApp, id: &str) -> Vec<String> {
    let dir = app.data_dir.join("sandboxes").join(id).join("data");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let inode = std::os::unix::fs::MetadataExt::ino(&e.metadata().unwrap());
                    format!("{} {inode}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn docker(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the sandbox is asleep: its record says `sleeping`, a `slept` event (the
/// `n`th) is recorded and its container has stopped.
async fn wait_asleep(app: &TestApp, id: &str, token: &str, n: usize) -> Vec<Value> {
    eventually("the sandbox falls asleep", MINUTE, async || {
        let events = app.events(id, token).await;
        (count(&events, "slept") >= n
            && record(app, id, token).await["status"] == "sleeping"
            && container_running(id) == Some(false))
        .then_some(events)
    })
    .await
}

/// Ends the sandbox as `token`; nothing of it may remain.
async fn end(app: &TestApp, id: &str, token: &str) {
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ended: Value = res.json().await.unwrap();
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
    assert_no_objects(id);
}

async fn all_sandboxes(app: &TestApp) -> Vec<Value> {
    let body: Value = app
        .get("/v1/sandboxes", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

/// A service timestamp (RFC 3339) in milliseconds since the epoch.
fn ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no time"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The "in N ms" of a `woke` event.
fn woke_ms(event: &Value) -> u64 {
    let detail = event["detail"].as_str().unwrap_or_default();
    detail
        .strip_prefix("in ")
        .and_then(|d| d.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a woke event says {detail:?}, not \"in N ms\""))
}

// ---------------------------------------------------------------------------------------------
// Sleep and wake
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_sleeps_keeping_data_and_address_and_a_request_wakes_it() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 2}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    assert_serves_hello(&app, &id, &token).await;
    let (assigned, in_use) = addresses(&app, &id);
    assert!(
        !assigned.is_empty() && assigned == in_use,
        "{assigned} / {in_use}"
    );
    let data = data_of(&app, &id);
    assert!(!data.is_empty());

    let events = wait_asleep(&app, &id, &token, 1).await;
    let asleep = record(&app, &id, &token).await;
    assert_eq!(asleep["status"], "sleeping", "{asleep}");
    assert!(asleep["ended_at"].is_null() && asleep["data_deleted_at"].is_null());
    // Not before idle_seconds without a request (the service's own clock on both sides).
    let slept = events.iter().find(|e| e["kind"] == "slept").unwrap();
    let last_active = ms(&asleep["usage"]["last_active_at"]);
    assert!(
        ms(&slept["at"]) >= last_active + 2000,
        "slept at {} but last active at {}",
        slept["at"],
        asleep["usage"]["last_active_at"]
    );
    // Stopped, not removed: its data and its address stay.
    assert_eq!(container_running(&id), Some(false));
    assert_eq!(data_of(&app, &id), data);
    assert_eq!(addresses(&app, &id).0, assigned);

    // The next request wakes it and is answered, with the same data, at the same address.
    assert_serves_hello(&app, &id, &token).await;
    let awake = record(&app, &id, &token).await;
    assert_eq!(awake["status"], "ready", "{awake}");
    assert_eq!(container_running(&id), Some(true));
    assert_eq!(addresses(&app, &id), (assigned.clone(), assigned));
    let events = app.events(&id, &token).await;
    let woke: Vec<&Value> = events.iter().filter(|e| e["kind"] == "woke").collect();
    assert_eq!(woke.len(), 1, "{:?}", kinds(&events));
    woke_ms(woke[0]);
    let order = kinds(&events);
    let at = |k: &str| order.iter().position(|x| x == k).unwrap();
    assert!(
        at("ready") < at("slept") && at("slept") < at("woke"),
        "{order:?}"
    );

    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sandbox_still_ends_at_its_deadline() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"trial": {"seconds": 8, "idle_seconds": 1}}))
        .await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    wait_asleep(&app, &id, &token, 1).await;

    let ended = app
        .wait_for(&id, &token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "expired", "{ended}");
    assert_no_objects(&id);
    let events = kinds(&app.events(&id, &token).await);
    assert!(
        events.contains(&"expired".to_string()) && events.contains(&"data_deleted".to_string()),
        "{events:?}"
    );
    assert!(!events.contains(&"woke".to_string()), "{events:?}");
    // Ended is ended: no request wakes it.
    assert_eq!(
        open_hello(&app, &id, &token).await.status(),
        StatusCode::GONE
    );
    assert!(app.instance_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_in_use_never_falls_asleep() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 2}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;

    // Used every half second for longer than idle_seconds and than the 5 s between two
    // flushes of the activity counted in memory.
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(9) {
        assert_serves_hello(&app, &id, &token).await;
        requests += 1;
        let now = record(&app, &id, &token).await;
        assert_eq!(now["status"], "ready", "after {requests} requests: {now}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = kinds(&app.events(&id, &token).await);
    assert!(
        !events.contains(&"slept".to_string()) && !events.contains(&"woke".to_string()),
        "a sandbox in use was put to sleep: {events:?}"
    );
    assert_eq!(container_running(&id), Some(true));
    let now = record(&app, &id, &token).await;
    assert!(
        now["usage"]["requests"].as_u64().unwrap() >= requests,
        "{now}"
    );

    // Left alone, it does sleep: the setting was in force all along.
    wait_asleep(&app, &id, &token, 1).await;
    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_latency_over_rounds_of_sleep_and_wake() {
    const ROUNDS: usize = 10;
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 1}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;

    let mut first_request = Vec::new();
    for round in 1..=ROUNDS {
        wait_asleep(&app, &id, &token, round).await;
        let started = Instant::now();
        let res = open_hello(&app, &id, &token).await;
        let elapsed = started.elapsed();
        assert_eq!(res.status(), StatusCode::OK, "round {round}");
        assert_eq!(&res.bytes().await.unwrap()[..], HELLO, "round {round}");
        first_request.push(elapsed.as_millis() as u64);
    }
    let events = app.events(&id, &token).await;
    let mut woke: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "woke")
        .map(woke_ms)
        .collect();
    assert_eq!(woke.len(), ROUNDS, "{:?}", kinds(&events));

    // Nearest rank.
    let pct =
        |sorted: &[u64], p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).max(1) - 1];
    first_request.sort_unstable();
    woke.sort_unstable();
    eprintln!(
        "wake latency over {ROUNDS} rounds: first request to a sleeping sandbox \
         median {} ms, p90 {} ms (min {}, max {}); the service's own \"woke in\" \
         median {} ms, p90 {} ms; all first requests (ms): {first_request:?}",
        pct(&first_request, 0.5),
        pct(&first_request, 0.9),
        first_request[0],
        first_request[ROUNDS - 1],
        pct(&woke, 0.5),
        pct(&woke, 0.9),
    );
    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_a_sleeping_sandbox_wake_it_once_and_are_all_answered() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 1}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    wait_asleep(&app, &id, &token, 1).await;

    let answers =
        futures_util::future::join_all((0..6).map(|_| open_hello(&app, &id, &token))).await;
    for res in answers {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(&res.bytes().await.unwrap()[..], HELLO);
    }
    let events = app.events(&id, &token).await;
    assert_eq!(count(&events, "woke"), 1, "{:?}", kinds(&events));
    end(&app, &id, &token).await;
}

// ---------------------------------------------------------------------------------------------
// Crash repair
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_demo_sleeps_and_the_next_request_restarts_it() {
    let app = TestApp::spawn().await;
    // No idle_seconds: only the crash can put it to sleep.
    let (_, demo) = app.static_demo(json!({})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    let (assigned, _) = addresses(&app, &id);

    docker(&["kill", &container_of(&id)]);
    let stopped = eventually("the reconciler notices the crash", MINUTE, async || {
        let events = app.events(&id, &token).await;
        let stopped = events.iter().find(|e| e["kind"] == "stopped").cloned();
        (record(&app, &id, &token).await["status"] == "sleeping")
            .then_some(stopped)
            .flatten()
    })
    .await;
    assert!(stopped["detail"].is_string(), "{stopped}");
    assert_eq!(container_running(&id), Some(false));
    assert!(!data_of(&app, &id).is_empty());

    // The next request restarts it, with the prospect's data.
    assert_serves_hello(&app, &id, &token).await;
    assert_eq!(record(&app, &id, &token).await["status"], "ready");
    assert_eq!(container_running(&id), Some(true));
    assert_eq!(addresses(&app, &id), (assigned.clone(), assigned));
    let events = kinds(&app.events(&id, &token).await);
    assert!(events.contains(&"woke".to_string()), "{events:?}");

    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_container_fails_the_sandbox_awake_or_asleep() {
    let app = TestApp::spawn().await;
    let (_, awake_demo) = app.static_demo(json!({})).await;
    let (_, sleepy_demo) = app.static_demo(json!({"trial": {"idle_seconds": 1}})).await;
    let (awake, awake_token) = hello_sandbox(&app, &awake_demo).await;
    let (asleep, asleep_token) = hello_sandbox(&app, &sleepy_demo).await;
    wait_asleep(&app, &asleep, &asleep_token, 1).await;

    // Removed behind the service's back (without -v: the volumes stay for it to find).
    for id in [&awake, &asleep] {
        docker(&["rm", "-f", &container_of(&id)]);
    }
    for (id, token) in [(&awake, &awake_token), (&asleep, &asleep_token)] {
        let failed = app
            .wait_for(id, token, |s| s["data_deleted_at"].is_string())
            .await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["end_reason"], "failed", "{failed}");
        let events = app.events(id, token).await;
        let why = events
            .iter()
            .find(|e| e["kind"] == "failed")
            .unwrap_or_else(|| panic!("no failed event: {:?}", kinds(&events)));
        assert!(
            why["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("vanished"),
            "{why}"
        );
        assert_no_objects(id);
        assert_eq!(open_hello(&app, id, token).await.status(), StatusCode::GONE);
    }
    assert!(app.instance_objects().is_empty());
    assert!(app.spool_entries().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Capacity and the rate limit
// ---------------------------------------------------------------------------------------------

/// A refused creation: 429 with a Retry-After, as a problem document.
async fn assert_429(res: Response) -> Value {
    assert!(retry_after(&res) >= 1);
    problem(res, StatusCode::TOO_MANY_REQUESTS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_sandboxes_free_running_places_within_a_bound_of_their_own() {
    let app = TestApp::spawn_with(|c| {
        c.max_sandboxes = 1;
        c.max_sleeping = 1;
    })
    .await;
    let (_, sleepy) = app.static_demo(json!({"trial": {"idle_seconds": 2}})).await;
    let (_, awake) = app.static_demo(json!({})).await;

    // The one running place taken: the next creation is refused, whichever the demo.
    let (first, first_token) = hello_sandbox(&app, &awake).await;
    assert_429(app.create_sandbox(&sleepy, &hello(), &[], None).await).await;
    assert_eq!(all_sandboxes(&app).await.len(), 1);
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());
    end(&app, &first, &first_token).await;

    // Asleep, a sandbox gives its running place back…
    let (dozer, dozer_token) = hello_sandbox(&app, &sleepy).await;
    wait_asleep(&app, &dozer, &dozer_token, 1).await;
    let (runner, runner_token) = hello_sandbox(&app, &awake).await;
    // …but still holds a live place: one running and one asleep is all there may be.
    assert_429(app.create_sandbox(&awake, &hello(), &[], None).await).await;
    assert_eq!(all_sandboxes(&app).await.len(), 3);
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());

    // It cannot wake while the running place is taken: 503, and it stays asleep.
    let res = open_hello(&app, &dozer, &dozer_token).await;
    assert!(retry_after(&res) >= 1);
    problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        record(&app, &dozer, &dozer_token).await["status"],
        "sleeping"
    );
    assert_eq!(container_running(&dozer), Some(false));

    // Once the place is free it wakes, with its data.
    end(&app, &runner, &runner_token).await;
    assert_serves_hello(&app, &dozer, &dozer_token).await;
    assert_eq!(container_running(&dozer), Some(true));
    end(&app, &dozer, &dozer_token).await;
    assert!(app.instance_objects().is_empty());
}

/// Containers of this app that run right now.
fn running_containers(app: &TestApp) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=testdrive.instance={}", app.instance))
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sleeping_sandboxes_woken_at_once_share_the_one_running_place() {
    let app = TestApp::spawn_with(|c| {
        c.max_sandboxes = 1;
        c.max_sleeping = 2;
    })
    .await;
    let (_, sleepy) = app.static_demo(json!({"trial": {"idle_seconds": 1}})).await;
    let (a, a_token) = hello_sandbox(&app, &sleepy).await;
    wait_asleep(&app, &a, &a_token, 1).await;
    let (b, b_token) = hello_sandbox(&app, &sleepy).await;
    wait_asleep(&app, &b, &b_token, 1).await;
    assert!(running_containers(&app).is_empty());

    let (res_a, res_b) = tokio::join!(
        open_hello(&app, &a, &a_token),
        open_hello(&app, &b, &b_token)
    );
    let mut statuses = [res_a.status(), res_b.status()];
    statuses.sort();
    let running = running_containers(&app);
    let records = [
        record(&app, &a, &a_token).await["status"].clone(),
        record(&app, &b, &b_token).await["status"].clone(),
    ];
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
        "max_sandboxes = 1, yet {} containers run; records say {records:?}",
        running.len()
    );
    assert_eq!(running.len(), 1, "{running:?}");

    end(&app, &a, &a_token).await;
    end(&app, &b, &b_token).await;
    assert!(app.instance_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demos_own_cap_refuses_its_next_sandbox_while_other_demos_accept() {
    let app = TestApp::spawn().await;
    let (_, capped) = app.static_demo(json!({"max_sandboxes": 1})).await;
    let (_, other) = app.static_demo(json!({})).await;

    let (first, first_token) = hello_sandbox(&app, &capped).await;
    let body = assert_429(app.create_sandbox(&capped, &hello(), &[], None).await).await;
    assert_eq!(body["type"], "urn:testdrive:problem:capacity", "{body}");
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());
    assert_eq!(all_sandboxes(&app).await.len(), 1);

    let (second, second_token) = hello_sandbox(&app, &other).await;
    // The cap counts live sandboxes: once the first ends, there is room again.
    end(&app, &first, &first_token).await;
    let (third, third_token) = hello_sandbox(&app, &capped).await;

    end(&app, &second, &second_token).await;
    end(&app, &third, &third_token).await;
    assert!(app.instance_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_over_the_rate_limit_are_429_and_leave_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit.burst = 2;
        c.rate_limit.per_minute = 1;
    })
    .await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (a, a_token) = hello_sandbox(&app, &demo).await;
    let (b, b_token) = hello_sandbox(&app, &demo).await;
    let before = app.instance_objects();

    let res = app.create_sandbox(&demo, &hello(), &[], Some(60)).await;
    assert_429(res).await;
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());
    assert_eq!(all_sandboxes(&app).await.len(), 2);
    assert_eq!(app.instance_objects(), before);

    // Reads, opening and ending are not creations: not limited.
    assert_serves_hello(&app, &a, &a_token).await;
    end(&app, &a, &a_token).await;
    end(&app, &b, &b_token).await;
    assert!(app.instance_objects().is_empty());
}

// ---------------------------------------------------------------------------------------------
// An Engine outage
// ---------------------------------------------------------------------------------------------

const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A Unix socket in front of the Engine's that the test can cut and restore: `cut` stops
/// accepting and closes every connection it forwards; `restore` listens again on the same
/// path.
struct EngineLink {
    path: PathBuf,
    _dir: TempDir,
    open: Option<(CancellationToken, JoinHandle<()>)>,
}

impl EngineLink {
    fn new() -> EngineLink {
        // Short: a socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("td-engine-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        let mut link = EngineLink {
            path: dir.path().join("docker.sock"),
            _dir: dir,
            open: None,
        };
        link.restore();
        link
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn restore(&mut self) {
        assert!(self.open.is_none(), "the link is open already");
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("the forwarder listens");
        let cut = CancellationToken::new();
        self.open = Some((cut.clone(), tokio::spawn(forward(listener, cut))));
    }

    async fn cut(&mut self) {
        let (cut, task) = self.open.take().expect("the link is open");
        cut.cancel();
        task.await.expect("the forwarder stops");
        // Nothing listens on the path any more: a connection is refused (soon: on a loaded
        // machine the closed listener can take a moment to go).
        let refused = async {
            while std::os::unix::net::UnixStream::connect(&self.path).is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), refused)
            .await
            .expect("the cut Engine link still accepts connections");
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        if let Some((cut, _)) = self.open.take() {
            cut.cancel();
        }
    }
}

async fn forward(listener: UnixListener, cut: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cut.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                let cut = cut.clone();
                connections.spawn(async move {
                    let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut engine) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        }
    }
    drop(listener);
    // Every forwarded connection closes (both ends drop).
    connections.shutdown().await;
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.get("/readyz", None).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_outage_refuses_creation_keeps_reads_and_defers_teardown_until_it_is_back() {
    let mut link = EngineLink::new();
    let host = link.host();
    let app = TestApp::spawn_with(|c| c.docker_host = Some(host)).await;
    // The trial must still run when the Engine is cut, and its deadline must pass while the
    // Engine is away. A short window keeps the test short; if a loaded machine used it all
    // up before the cut, the set-up is tried again with twice the window.
    let mut window = 6;
    let (demo, id, token) = loop {
        let (_, demo) = app
            .static_demo(json!({"trial": {"seconds": window, "max_seconds": 600}}))
            .await;
        let (id, token) = hello_sandbox(&app, &demo).await;
        assert_eq!(readyz(&app).await, StatusCode::OK);
        link.cut().await;
        if record(&app, &id, &token).await["status"] == "ready" {
            break (demo, id, token);
        }
        link.restore();
        eventually("/readyz turns 200", MINUTE, async || {
            (readyz(&app).await == StatusCode::OK).then_some(())
        })
        .await;
        end(&app, &id, &token).await;
        window *= 2;
        assert!(
            window <= 96,
            "every trial ended before the Engine could be cut"
        );
    };
    eventually("/readyz turns 503", MINUTE, async || {
        (readyz(&app).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;

    // No new sandbox while the Engine is away, and nothing of the attempt is kept.
    let known = all_sandboxes(&app).await.len();
    let res = app.create_sandbox(&demo, &hello(), &[], None).await;
    assert!(retry_after(&res) >= 1);
    let body = problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = body["detail"].as_str().unwrap().to_lowercase();
    assert!(
        detail.contains("engine") && detail.contains("unavailable"),
        "{body}"
    );
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());
    assert_eq!(all_sandboxes(&app).await.len(), known);

    // Reads go on.
    assert_eq!(
        app.get(&format!("/v1/sandboxes/{id}"), Some(&token))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.get("/v1/catalog", None).await.status(), StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/sandboxes/{id}/events"), Some(&token))
            .await
            .status(),
        StatusCode::OK
    );

    // The deadline passes while the Engine is away: the record ends, the data cannot go yet.
    let ended = app.wait_for(&id, &token, |s| s["status"] == "ended").await;
    assert_eq!(ended["end_reason"], "expired", "{ended}");
    // A few reconciler rounds and teardown retries later, still nothing could be removed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = record(&app, &id, &token).await;
    assert!(ended["data_deleted_at"].is_null(), "{ended}");
    assert!(
        inspect(&id).is_some(),
        "the container went although the Engine was cut off"
    );
    assert!(!objects_of(&id).is_empty());

    // Back: ready again, and the overdue teardown happens without a restart.
    link.restore();
    eventually("/readyz turns 200", MINUTE, async || {
        (readyz(&app).await == StatusCode::OK).then_some(())
    })
    .await;
    let gone = app
        .wait_for(&id, &token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(gone["end_reason"], "expired", "{gone}");
    assert_no_objects(&id);
    let events = kinds(&app.events(&id, &token).await);
    assert!(events.contains(&"data_deleted".to_string()), "{events:?}");

    // A sandbox made right after works.
    let res = app
        .create_sandbox(&demo, &hello(), &[("seconds", "600")], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let fresh: Value = res.json().await.unwrap();
    assert_eq!(fresh["status"], "ready", "{fresh}");
    let (fresh_id, fresh_token) = (str_of(&fresh, "id"), str_of(&fresh, "token"));
    assert_serves_hello(&app, fresh_id, fresh_token).await;
    end(&app, fresh_id, fresh_token).await;
    assert!(app.instance_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_sandbox_asked_for_during_an_outage_stays_asleep_and_wakes_after() {
    let mut link = EngineLink::new();
    let host = link.host();
    let app = TestApp::spawn_with(|c| c.docker_host = Some(host)).await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 1}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    wait_asleep(&app, &id, &token, 1).await;

    link.cut().await;
    eventually("/readyz turns 503", Duration::from_secs(10), async || {
        (readyz(&app).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    // The Engine cannot start it: 503, as for any call the Engine's absence stops; the
    // prospect's sandbox and data are not lost over it.
    let res = open_hello(&app, &id, &token).await;
    let status = res.status();
    let retry = res.headers().get(RETRY_AFTER).cloned();
    let body = res.text().await.unwrap();
    let now = record(&app, &id, &token).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{body}; the sandbox is now {now}"
    );
    assert!(retry.is_some());
    assert_eq!(now["status"], "sleeping", "{now}");

    link.restore();
    eventually("/readyz turns 200", MINUTE, async || {
        (readyz(&app).await == StatusCode::OK).then_some(())
    })
    .await;
    assert_serves_hello(&app, &id, &token).await;
    end(&app, &id, &token).await;
    assert!(app.instance_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_fell_idle_during_an_outage_is_stopped_once_the_engine_is_back() {
    let mut link = EngineLink::new();
    let host = link.host();
    let app = TestApp::spawn_with(|c| c.docker_host = Some(host)).await;
    let (_, demo) = app.static_demo(json!({"trial": {"idle_seconds": 2}})).await;
    let (id, token) = hello_sandbox(&app, &demo).await;
    link.cut().await;
    let asleep = app
        .wait_for(&id, &token, |s| s["status"] == "sleeping")
        .await;
    assert!(asleep["ended_at"].is_null(), "{asleep}");
    // Give the service its attempts at stopping the container while the Engine is away.
    tokio::time::sleep(Duration::from_secs(3)).await;

    link.restore();
    // Asleep means no compute: once the Engine answers, the container must stop.
    eventually(
        "the container of a sleeping sandbox stops once the Engine is back",
        MINUTE,
        async || (container_running(&id) == Some(false)).then_some(()),
    )
    .await;
    assert_eq!(record(&app, &id, &token).await["status"], "sleeping");
    assert_serves_hello(&app, &id, &token).await;
    end(&app, &id, &token).await;
    assert!(app.instance_objects().is_empty());
}
