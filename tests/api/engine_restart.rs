//! The Engine's daemon restarted under live sandboxes (issue 13): `systemctl restart docker`
//! stops every container. The sandboxes must come back on their next request with their
//! data, through sleep and wake, and the ops console must say what happened. The machine's
//! Engine is shared with other test runs, so the service runs on a private Engine
//! (`private_engine`) that the test stops and starts.
//!
//! Nothing here asserts how fast anything is: the time from the daemon being back to the
//! sandbox asleep, and the wake, are measured and printed.

use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::private_engine::PrivateEngine;

const HELLO: &[u8] = b"the prospect's own file, kept across an Engine restart\n";

/// `GET <the sandbox's own origin>/hello.txt` with the sandbox token.
async fn open_hello(app: &TestApp, id: &str, token: &str) -> Response {
    app.open(id, token, "/hello.txt").await
}

async fn assert_serves_hello(app: &TestApp, id: &str, token: &str) {
    let res = open_hello(app, id, token).await;
    let status = res.status();
    let body = res.bytes().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], HELLO);
}

/// Polls the deployment's events until one of `kind` is there; returns it.
async fn wait_service_event(app: &TestApp, kind: &str) -> Value {
    let events = poll(
        Duration::from_millis(50),
        async || app.service_events(&app.admin).await,
        |events| events.iter().any(|e| e["kind"] == kind),
    )
    .await;
    events.into_iter().find(|e| e["kind"] == kind).unwrap()
}

/// `docker inspect` of the sandbox's container on the private Engine.
fn inspect_on(engine: &PrivateEngine, id: &str) -> Value {
    let label = format!("testdrive.sandbox={id}");
    let containers = docker_ids_on(Some(&engine.host()), "container", &label);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let out = engine.docker(&["inspect", &containers[0]]);
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].clone()
}

/// The address the container is at (empty when stopped).
fn address(container: &Value, network: &str) -> String {
    container["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_an_engine_restart_stopped_sleep_and_come_back_on_the_next_request_with_their_data()
 {
    let mut engine = PrivateEngine::start().await;
    engine.load_image(STATIC_FILES).await;
    // After the Engine: dropped first, while the Engine can still be asked to clean up.
    // No periodic reconciliation during the test: what finds the stopped containers is the
    // pass the Engine's return sets off, as it would be in production (every 30 s).
    let app = TestApp::spawn_on(&engine, |c| c.reconcile_seconds = 3600).await;
    let (_, demo) = app.static_demo(json!({})).await;
    let created = app
        .ready_sandbox(&demo, &[("hello.txt", HELLO.to_vec())])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert_serves_hello(&app, &id, &token).await;
    let before = inspect_on(&engine, &id);
    let ip = address(&before, &app.network);
    assert!(!ip.is_empty(), "{before}");
    let placed = app
        .data_dir
        .join("sandboxes")
        .join(&id)
        .join("data")
        .join("hello.txt");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&placed).unwrap());

    // The daemon stops, and every container with it. The service notices.
    let stopping = Instant::now();
    engine.stop().await;
    let stop = stopping.elapsed();
    let unreachable = wait_service_event(&app, "engine_unreachable").await;
    assert!(
        unreachable["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not answer")),
        "{unreachable}"
    );
    // A request meanwhile is told to come back, and the sandbox is kept.
    let asking = Instant::now();
    let res = open_hello(&app, &id, &token).await;
    let refused_in = asking.elapsed();
    let status = res.status();
    let retry_after = res.headers().get(RETRY_AFTER).cloned();
    let body = res.text().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("the Docker Engine does not answer"), "{body}");
    let retry_after: u64 = retry_after
        .expect("a Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let during = app.sandbox(&id).await;
    assert!(
        during["status"] == "ready" || during["status"] == "sleeping",
        "{during}"
    );

    // Back, on the same data root: the container is there, stopped. The reconciler puts
    // the sandbox to sleep.
    engine.start_again().await;
    let back = Instant::now();
    let asleep = app.wait_as_admin(&id, |s| s["status"] == "sleeping").await;
    let to_sleep = back.elapsed();
    assert!(asleep["data_deleted_at"].is_null(), "{asleep}");
    let stopped = inspect_on(&engine, &id);
    assert_eq!(stopped["State"]["Running"], false, "{stopped}");
    let exit_code = stopped["State"]["ExitCode"].clone();

    // The ops console says what happened.
    let back_event = wait_service_event(&app, "engine_back").await;
    let containers_stopped = wait_service_event(&app, "containers_stopped").await;
    assert!(
        containers_stopped["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("1 sandbox found with its container stopped")),
        "{containers_stopped}"
    );

    // The next request wakes it: the same file, at the same address, in the same place.
    let waking = Instant::now();
    assert_serves_hello(&app, &id, &token).await;
    let wake = waking.elapsed();
    assert_eq!(app.sandbox(&id).await["status"], "ready");
    let awake = inspect_on(&engine, &id);
    assert_eq!(awake["State"]["Running"], true);
    assert_eq!(address(&awake, &app.network), ip);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&placed).unwrap()),
        inode
    );

    // The sandbox's own history: stopped (by the restart), then woke.
    let events = app.events(&id, &token).await;
    let order = kinds(&events);
    let at = |k: &str| {
        order
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} event in {order:?}"))
    };
    assert!(
        at("ready") < at("stopped") && at("stopped") < at("woke"),
        "{order:?}"
    );
    let stopped_event = &events[at("stopped")];
    let woke_event = &events[at("woke")];

    eprintln!(
        "engine restart: the daemon stopped in {} ms, started again in {} ms ({}); a request \
         meanwhile: 503 in {} ms; container exit code {exit_code} ({}); daemon back → sandbox \
         asleep {} ms; wake (request answered) {} ms, service's own {:?}; {:?}",
        stop.as_millis(),
        engine.started_in().as_millis(),
        engine.driver(),
        refused_in.as_millis(),
        stopped_event["detail"],
        to_sleep.as_millis(),
        wake.as_millis(),
        woke_event["detail"],
        back_event["detail"],
    );

    app.delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await
        .error_for_status()
        .unwrap();
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}
