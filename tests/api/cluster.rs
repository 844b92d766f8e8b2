//! Several nodes (issue 18): two real `testdrive serve` processes on one PostgreSQL
//! database, node `a` driving the machine's Docker Engine and node `b` a second Engine of
//! the test's own (see `cluster::harness`). What the contract promises: trials spread over
//! the nodes, any node answers every route for any sandbox (the API, `/s/{id}/`, sandbox
//! hosts, WebSocket), a node not heard from for 15 s is `down` and takes no new trials while
//! its deadlines are kept (by a live node that reaches its Engine, else by itself before it
//! takes requests again), it rejoins when it comes back, and a database restart costs 503s
//! while it lasts and nothing after.
//!
//! The times measured (down detection, failover of a deadline, recovery) are printed with
//! `eprintln!` (`cargo test cluster -- --nocapture` shows them); the only time asserted is
//! the protocol's own: down within 15 s, plus a margin for the polling.

mod harness;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{problem, sha256_hex};
use crate::process::{ms, now_ms};
use harness::{Cluster, MAX_SANDBOXES, Node, Trial, poll_until, sales_csv};

/// A node not heard from for this long is `down` (the contract's 15 s).
const DOWN_AFTER: Duration = Duration::from_secs(15);
/// What polling `/v1/nodes` may add to it.
const POLL_MARGIN: Duration = Duration::from_secs(5);

const SECOND: Duration = Duration::from_secs(1);
const QUARTER: Duration = Duration::from_millis(250);

/// Waits until `/v1/nodes` through `via` lists every one of `names` with `status`.
async fn wait_nodes(via: &Node, names: &[&str], status: &str, limit: Duration) -> Value {
    let (_, _, body) = poll_until(
        &format!("nodes {names:?} {status} (asked of {})", via.name),
        limit,
        QUARTER,
        async || via.get_json("/v1/nodes").await,
        |(code, _, body)| {
            *code == StatusCode::OK
                && names.iter().all(|name| {
                    body["items"].as_array().is_some_and(|items| {
                        items
                            .iter()
                            .any(|n| n["name"] == *name && n["status"] == status)
                    })
                })
        },
    )
    .await;
    body
}

/// Waits until `/readyz` of `via` answers `status` (`says`: how the wait is named).
async fn wait_readyz(via: &Node, status: StatusCode, says: &str, limit: Duration) {
    let _ = poll_until(
        &format!("/readyz of {} to say {says}", via.name),
        limit,
        QUARTER,
        async || {
            via.http
                .get(via.url("/readyz"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map(|r| r.status())
                .map_err(|e| e.to_string())
        },
        |s| *s == Ok(status),
    )
    .await;
}

/// `GET /s/{id}/` with the sandbox token through `via`, and the same through the sandbox's
/// own host on `via`'s port: both must be the demo's page showing the uploaded file.
async fn assert_serves_the_demo(via: &Node, trial: &Trial) {
    let res = via
        .get(&format!("/s/{}/", trial.id), Some(&trial.token))
        .await;
    let status = res.status();
    let page = res.text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "/s/{}/ through node {}: {page}",
        trial.id,
        via.name
    );
    assert!(
        page.contains("CSV Explorer") && page.contains("sales.csv"),
        "/s/{}/ through node {} is the demo's page with the file: {page}",
        trial.id,
        via.name
    );

    // The sandbox's host, on this node's port (glibc does not resolve `*.localhost`: the
    // client sends it to 127.0.0.1 with the Host header).
    let res = via.open(&trial.id, &trial.token, "/").await;
    let status = res.status();
    let page = res.text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{} through node {}: {page}",
        via.sandbox_url(&trial.id, "/"),
        via.name
    );
    assert!(
        page.contains("CSV Explorer") && page.contains("sales.csv"),
        "{page}"
    );

    // The file's bytes come back unchanged, whichever node holds the sandbox.
    let raw = via
        .get(
            &format!("/s/{}/files/sales.csv", trial.id),
            Some(&trial.token),
        )
        .await;
    assert_eq!(
        raw.status(),
        StatusCode::OK,
        "the file through node {}",
        via.name
    );
    assert_eq!(
        sha256_hex(&raw.bytes().await.unwrap()),
        sha256_hex(&sales_csv()[0].1)
    );
}

/// The demo's live search over a WebSocket through `via`, at `url` (`ws://…/ws`), with the
/// sandbox token: a search term out, its matches back.
async fn assert_live_search(via: &Node, trial: &Trial, url: String) {
    let mut request = url.clone().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", trial.token).parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", via.port))
        .await
        .unwrap();
    let upgrade = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(request, tcp),
    )
    .await;
    let (mut ws, response) = match upgrade {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => panic!("{url} through node {}: {e}", via.name),
        Err(_) => panic!("{url} through node {}: no answer to the upgrade", via.name),
    };
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("west")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await.expect("an answer").unwrap() {
                Message::Text(text) => break text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} through node {}: no search answer", via.name));
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["query"], "west");
    assert!(reply["matches"].as_u64().unwrap() > 0, "{reply}");
    ws.close(None).await.unwrap();
}

/// `GET /s/{id}/` through `via` while the sandbox's node is dead: a prompt 503
/// problem, not a hang. Returns how long the answer took.
async fn assert_unavailable(via: &Node, trial: &Trial) -> Duration {
    let started = Instant::now();
    let res = via
        .http
        .get(via.url(&format!("/s/{}/", trial.id)))
        .bearer_auth(&trial.token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "/s/{}/ through node {} while its node is dead did not answer: {e}",
                trial.id, via.name
            )
        });
    let took = started.elapsed();
    problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    took
}

/// (a) and (b): trials spread over both nodes, each listed `up` with its live count, and
/// every sandbox answers through both nodes, on `/s/{id}/`, on its own host and over a
/// WebSocket through the node that does not hold it; ending one through the other node
/// removes its container from its owner's Engine before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_spread_over_both_nodes_and_every_node_serves_every_sandbox() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.a(), cluster.b());

    // Both nodes are listed, up, by either node.
    for via in [a, b] {
        let listed = wait_nodes(via, &["a", "b"], "up", 30 * SECOND).await;
        let items = listed["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{listed}");
        for node in [a, b] {
            let entry = items.iter().find(|n| n["name"] == node.name).unwrap();
            assert_eq!(entry["url"], node.node_url().as_str(), "{entry}");
            assert_eq!(entry["max_sandboxes"], MAX_SANDBOXES, "{entry}");
            assert_eq!(entry["live"], 0, "{entry}");
            let seen = ms(&entry["last_seen"]).expect("last_seen is a time");
            assert!((now_ms() - seen).abs() < 20_000, "{entry}");
        }
    }

    // Four trials, asked alternately of a and b: with equal places the node with the most
    // free places takes each, so they go two and two.
    let (_, demo) = cluster.csv_demo().await;
    let mut trials = Vec::new();
    for i in 0..4 {
        let via = if i % 2 == 0 { a } else { b };
        trials.push(cluster.trial(via, &demo, &sales_csv(), None).await);
    }
    let mut placed = Vec::new();
    for trial in &trials {
        placed.push(cluster.node_of(&trial.id).await);
    }
    eprintln!("four trials placed on {placed:?}");
    let on = |name: &str| placed.iter().filter(|n| *n == name).count();
    assert_eq!((on("a"), on("b")), (2, 2), "placed on {placed:?}");
    // Each sandbox's container is on its own node's Engine, and only there.
    for (trial, node) in trials.iter().zip(&placed) {
        let (owner, other) = if node == "a" { (a, b) } else { (b, a) };
        assert_eq!(
            owner.containers_of(&trial.id).len(),
            1,
            "{} on {node}",
            trial.id
        );
        assert!(
            other.containers_of(&trial.id).is_empty(),
            "{} on {node}",
            trial.id
        );
    }
    // The live counts say so.
    for via in [a, b] {
        poll_until(
            "live counts of 2 and 2",
            30 * SECOND,
            QUARTER,
            async || via.get_json("/v1/nodes").await.2,
            |body| {
                body["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == 2 && items.iter().all(|n| n["live"] == 2))
            },
        )
        .await;
    }

    // Every sandbox is read through both nodes.
    for trial in &trials {
        for via in [a, b] {
            assert_serves_the_demo(via, trial).await;
            let seen = via
                .get(&format!("/v1/sandboxes/{}", trial.id), Some(&trial.token))
                .await;
            assert_eq!(
                seen.status(),
                StatusCode::OK,
                "the prospect's view via {}",
                via.name
            );
        }
    }

    // The live search over a WebSocket through the node that does not hold the sandbox,
    // on testdrive's origin and on the sandbox's own.
    for (trial, node) in trials.iter().zip(&placed) {
        let other = if node == "a" { b } else { a };
        let main = other
            .url(&format!("/s/{}/ws", trial.id))
            .replace("http://", "ws://");
        assert_live_search(other, trial, main).await;
        let own = other
            .sandbox_url(&trial.id, "/ws")
            .replace("http://", "ws://");
        assert_live_search(other, trial, own).await;
    }

    // Ended through the other node: gone from its owner's Engine before the answer.
    for (trial, node) in trials.iter().zip(&placed) {
        let (owner, other) = if node == "a" { (a, b) } else { (b, a) };
        let res = other
            .delete(&format!("/v1/sandboxes/{}", trial.id), Some(&trial.token))
            .await;
        let status = res.status();
        let ended: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{ended}");
        assert_eq!(ended["status"], "ended", "{ended}");
        assert!(ended["data_deleted_at"].is_string(), "{ended}");
        assert!(
            owner.containers_of(&trial.id).is_empty(),
            "{}'s container is gone from node {}'s Engine",
            trial.id,
            owner.name
        );
        assert!(
            !owner.sandbox_dir(&trial.id).exists(),
            "its directory on {}",
            owner.name
        );
    }

    // One receipt key for the deployment: a receipt read through either node verifies
    // with the key either node publishes.
    let key_a: Value = a.get("/v1/receipt-key", None).await.json().await.unwrap();
    let key_b: Value = b.get("/v1/receipt-key", None).await.json().await.unwrap();
    assert_eq!(key_a, key_b);
    for trial in &trials {
        for via in [a, b] {
            let res = via
                .get(
                    &format!("/v1/sandboxes/{}/receipt", trial.id),
                    Some(&trial.token),
                )
                .await;
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "a receipt through {}",
                via.name
            );
            let signed: Value = res.json().await.unwrap();
            assert!(signature_holds(&signed, &key_a), "{signed}");
        }
    }
}

/// Whether the signed receipt's signature is the key's over its `signed` bytes.
fn signature_holds(signed: &Value, key: &Value) -> bool {
    use base64::Engine as _;
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let public: [u8; 32] = decode(&key["public_key"]).try_into().unwrap();
    let verifier = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&decode(&signed["signature"])).unwrap();
    verifier
        .verify_strict(&decode(&signed["signed"]), &signature)
        .is_ok()
}

/// (c) and (d): node b killed with SIGKILL is `down` on a within 15 s (plus the poll);
/// meanwhile its sandboxes answer a prompt 503 through a, new trials all go to a, and a
/// ends b's sandbox whose window closes, on b's Engine. A deadline that passes while no
/// live node can reach b's Engine is kept by b itself before it takes requests again. Back,
/// b is `up`, removes the data directories of its ended sandboxes, serves the one still
/// running, and takes trials again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_goes_down_its_deadlines_are_kept_and_it_rejoins() {
    let mut cluster = Cluster::start().await;
    wait_nodes(cluster.a(), &["a", "b"], "up", 30 * SECOND).await;
    let (_, demo) = cluster.csv_demo().await;

    // On b: one long trial (kept through it all), one of 90 s whose deadline passes while
    // nobody can reach b's Engine, and last one of 40 s, whose deadline comes after b is
    // seen down. Trials that land on a meanwhile stay there.
    let (long, mut on_a) = cluster.trial_on("b", &demo, &sales_csv(), None).await;
    let (medium, more) = cluster.trial_on("b", &demo, &sales_csv(), Some(90)).await;
    on_a.extend(more);
    let (short, more) = cluster.trial_on("b", &demo, &sales_csv(), Some(40)).await;
    on_a.extend(more);
    for trial in [&long, &medium, &short] {
        assert_eq!(cluster.b().containers_of(&trial.id).len(), 1);
    }

    // (c) b dies.
    cluster.kill("b");
    let killed = Instant::now();
    let killed_ms = now_ms();
    let (a, b) = (cluster.a(), cluster.b());

    // A prospect of b's running sandbox, through a, at once: a clear 503.
    let took = assert_unavailable(a, &long).await;
    eprintln!(
        "/s/{{id}}/ of a sandbox of the dead node through a: 503 in {} ms",
        took.as_millis()
    );
    // Its record, though, is the database's: read through a before b counts as down.
    let res = a
        .get(&format!("/v1/sandboxes/{}", long.id), Some(&long.token))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the record of b's sandbox through a"
    );
    let record: Value = res.json().await.unwrap();
    assert_eq!(record["status"], "ready", "{record}");

    let listed = wait_nodes(a, &["b"], "down", DOWN_AFTER + POLL_MARGIN + 10 * SECOND).await;
    let detected = killed.elapsed();
    eprintln!(
        "node b seen down by a {} ms after SIGKILL (the contract: 15 s without a heartbeat)",
        detected.as_millis()
    );
    assert!(
        detected <= DOWN_AFTER + POLL_MARGIN,
        "b was seen down only {detected:?} after it was killed: {listed}"
    );
    let entry_a = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a")
        .cloned()
        .unwrap();
    assert_eq!(entry_a["status"], "up", "{listed}");

    // Down: still a prompt 503 for its sandboxes, on /s/{id}/ and on their own hosts.
    let took = assert_unavailable(a, &long).await;
    eprintln!("…and once b is down: 503 in {} ms", took.as_millis());
    let res = a
        .http
        .get(a.sandbox_url(&long.id, "/"))
        .bearer_auth(&long.token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the sandbox host of a dead node's sandbox answers");
    problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    // The record is still there to read, through a.
    assert_eq!(a.sandbox(&long.id).await["node"], "b");

    // New trials all go to a.
    for _ in 0..3 {
        let trial = cluster.trial(a, &demo, &sales_csv(), None).await;
        assert_eq!(
            cluster.node_of(&trial.id).await,
            "a",
            "a trial placed on a down node"
        );
        assert_eq!(a.containers_of(&trial.id).len(), 1);
        on_a.push(trial);
    }

    // a ends b's 40 s trial at its deadline, on b's Engine.
    let expires = ms(&short.body["expires_at"]).expect("expires_at");
    let ended = poll_until(
        "b's short trial ended by a",
        Duration::from_millis((expires - now_ms()).max(0) as u64) + 60 * SECOND,
        QUARTER,
        async || a.sandbox(&short.id).await,
        |s| s["status"] == "ended",
    )
    .await;
    assert_eq!(ended["end_reason"], "expired", "{ended}");
    let ended_at = ms(&ended["ended_at"]).expect("ended_at");
    eprintln!(
        "b's sandbox ended by a {} ms after its deadline ({} ms after b was killed)",
        ended_at - expires,
        ended_at - killed_ms
    );
    poll_until(
        "the short trial's container gone from b's Engine",
        30 * SECOND,
        QUARTER,
        async || b.containers_of(&short.id),
        |left| left.is_empty(),
    )
    .await;
    // b's other sandboxes are not ended by it.
    assert_ne!(a.sandbox(&long.id).await["status"], "ended");

    // Nobody reaches b's Engine any more: the 90 s trial's deadline passes with b down.
    let medium_expires = ms(&medium.body["expires_at"]).expect("expires_at");
    assert!(
        now_ms() < medium_expires,
        "the 90 s trial's deadline passed before this part of the test began: make it longer"
    );
    cluster.cut_engine_link();
    let wait = (medium_expires - now_ms()).max(0) as u64 + 5_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    eprintln!(
        "the 90 s trial while b's Engine is out of reach, past its deadline: {}",
        cluster.a().sandbox(&medium.id).await["status"]
    );

    // (d) b comes back: before it takes requests the deadline that passed is kept, by b
    // itself or by a, which reaches b's Engine again as b starts (either may win the claim;
    // the other finds it ended). Its container goes with the teardown that follows.
    cluster.restore_engine_link();
    let restarted = Instant::now();
    cluster.restart("b").await;
    let (a, b) = (cluster.a(), cluster.b());
    let seen = b.sandbox(&medium.id).await;
    assert_eq!(
        seen["status"], "ended",
        "b took requests before ending what was due: {seen}"
    );
    assert_eq!(seen["end_reason"], "expired", "{seen}");
    poll_until(
        "the 90 s trial's container gone from b's Engine",
        30 * SECOND,
        QUARTER,
        async || b.containers_of(&medium.id),
        |found| found.is_empty(),
    )
    .await;

    let listed = wait_nodes(a, &["a", "b"], "up", 30 * SECOND).await;
    eprintln!(
        "node b up again on a {} ms after its restart began: {listed}",
        restarted.elapsed().as_millis()
    );

    // Its ended sandboxes' directories are removed, and the records say so.
    for trial in [&short, &medium] {
        let done = poll_until(
            "the ended sandbox's data deleted",
            60 * SECOND,
            QUARTER,
            async || a.sandbox(&trial.id).await,
            |s| s["data_deleted_at"].is_string(),
        )
        .await;
        assert_eq!(done["end_reason"], "expired", "{done}");
        assert!(
            !b.sandbox_dir(&trial.id).exists(),
            "{} is gone from b's disk",
            b.sandbox_dir(&trial.id).display()
        );
    }

    // The long trial lived through it: served through both nodes again.
    poll_until(
        "the long trial served through a again",
        60 * SECOND,
        QUARTER,
        async || {
            a.get(&format!("/s/{}/", long.id), Some(&long.token))
                .await
                .status()
        },
        |s| *s == StatusCode::OK,
    )
    .await;
    for via in [a, b] {
        assert_serves_the_demo(via, &long).await;
    }
    assert_eq!(b.containers_of(&long.id).len(), 1);

    // And b takes trials again: it has the more free places now.
    let next = cluster.trial(a, &demo, &sales_csv(), None).await;
    assert_eq!(cluster.node_of(&next.id).await, "b");
}

/// (e) PostgreSQL killed and started again under the running nodes: meanwhile `/readyz`
/// and the API answer 503 (problem+json) on both, promptly; afterwards nothing is lost —
/// every sandbox is still listed and served, both nodes are `up`, and trials work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_costs_503s_while_it_lasts_and_nothing_after() {
    let cluster = Cluster::start_with_own_database().await;
    let (a, b) = (cluster.a(), cluster.b());
    wait_nodes(a, &["a", "b"], "up", 30 * SECOND).await;
    let (_, demo) = cluster.csv_demo().await;
    let first = cluster.trial(a, &demo, &sales_csv(), None).await;
    let second = cluster.trial(b, &demo, &sales_csv(), None).await;
    let before: Vec<Value> = a.sandboxes().await;
    assert_eq!(before.len(), 2);

    tokio::task::block_in_place(|| cluster.db.kill());
    let killed = Instant::now();

    for via in [a, b] {
        wait_readyz(via, StatusCode::SERVICE_UNAVAILABLE, "503", 30 * SECOND).await;
        eprintln!(
            "node {}: /readyz 503 {} ms after PostgreSQL was killed",
            via.name,
            killed.elapsed().as_millis()
        );
        let started = Instant::now();
        let res = via
            .http
            .get(via.url("/v1/sandboxes"))
            .bearer_auth(&cluster.admin)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the API of {} hung without its database: {e}", via.name));
        problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
        eprintln!(
            "node {}: GET /v1/sandboxes 503 in {} ms without the database",
            via.name,
            started.elapsed().as_millis()
        );
        let res = tokio::time::timeout(
            Duration::from_secs(60),
            via.create_sandbox(&demo, &sales_csv(), &[], Some(30)),
        )
        .await
        .unwrap_or_else(|_| panic!("a trial through {} hung without the database", via.name));
        problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    }

    tokio::task::block_in_place(|| cluster.db.restart())
        .unwrap_or_else(|e| panic!("PostgreSQL starts again: {e}\n{}", cluster.db.log()));
    let restarted = Instant::now();
    eprintln!("PostgreSQL down for {} ms", killed.elapsed().as_millis());
    for via in [a, b] {
        wait_readyz(via, StatusCode::OK, "200 again", 60 * SECOND).await;
        eprintln!(
            "node {}: /readyz 200 {} ms after PostgreSQL was back",
            via.name,
            restarted.elapsed().as_millis()
        );
    }

    // Nothing lost, nothing half-made by the refused trials.
    let after = a.sandboxes().await;
    let ids = |list: &[Value]| {
        let mut ids: Vec<String> = list
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before), "{after:?}");
    for trial in [&first, &second] {
        let seen = b.sandbox(&trial.id).await;
        assert_eq!(seen["status"], "ready", "{seen}");
        for via in [a, b] {
            assert_serves_the_demo(via, trial).await;
        }
    }
    wait_nodes(a, &["a", "b"], "up", 30 * SECOND).await;
    let again = cluster.trial(b, &demo, &sales_csv(), None).await;
    assert_eq!(b.sandbox(&again.id).await["status"], "ready");
}
