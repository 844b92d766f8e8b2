//! What the vendor learns and what the prospect keeps: webhooks to a real HTTP receiver on
//! 127.0.0.1 (signed, retried, in order, none lost across a restart), the trial report
//! (file profiles, never a value), and the signed deletion receipt (checked with the
//! public key, and with `openssl` as docs/api.md tells verifiers to).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode as AxStatus;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Hooked, TestApp, assert_no_objects, poll, require_images, signed, webhook_app, webhook_receiver,
};

/// What the receiver does with the next requests.
#[derive(Clone, Copy)]
enum Mode {
    Accept,
    /// Answer 500.
    Fail,
    /// Hold the request this long, then answer 200 (unless the sender hung up).
    Hang(Duration),
}

#[derive(Clone, Default)]
struct Received {
    /// Every request, in arrival order: (signature header, body).
    all: Arc<Mutex<Vec<(String, String)>>>,
    /// Requests answered 2xx.
    accepted: Arc<Mutex<Vec<(String, String)>>>,
    modes: Arc<Mutex<Vec<Mode>>>,
}

impl Received {
    fn next_mode(&self) -> Mode {
        let mut modes = self.modes.lock().unwrap();
        if modes.is_empty() {
            Mode::Accept
        } else {
            modes.remove(0)
        }
    }

    /// Accepted bodies, parsed.
    fn accepted(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1.
async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let state = received.clone();
    let addr = webhook_receiver(move |signature, body: Bytes| {
        let state = state.clone();
        async move {
            let body = String::from_utf8(body.to_vec()).unwrap();
            state
                .all
                .lock()
                .unwrap()
                .push((signature.clone(), body.clone()));
            match state.next_mode() {
                Mode::Fail => AxStatus::INTERNAL_SERVER_ERROR,
                // If the sender hangs up meanwhile, this future is dropped: not received.
                Mode::Hang(d) => {
                    tokio::time::sleep(d).await;
                    state.accepted.lock().unwrap().push((signature, body));
                    AxStatus::OK
                }
                Mode::Accept => {
                    state.accepted.lock().unwrap().push((signature, body));
                    AxStatus::NO_CONTENT
                }
            }
        }
    })
    .await;
    (addr, received)
}

/// Waits until `done` holds for the accepted deliveries, up to a minute.
async fn wait_accepted(received: &Received, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let fetch = async || received.accepted();
    poll(Duration::from_millis(100), fetch, |accepted| done(accepted)).await
}

/// The types delivered for one sandbox, first delivery of each id only, in arrival order.
fn types_for(accepted: &[Value], sandbox: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    accepted
        .iter()
        .filter(|d| d["sandbox"]["id"] == sandbox)
        .filter(|d| seen.insert(d["id"].as_str().unwrap().to_string()))
        .map(|d| d["type"].as_str().unwrap().to_string())
        .collect()
}

const LIFECYCLE: [&str; 4] = [
    "sandbox.created",
    "sandbox.ready",
    "sandbox.extended",
    "sandbox.ended",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_in_order() {
    require_images();
    let app = webhook_app().await;
    let (addr, received) = receiver().await;
    let url = format!("http://{addr}/hook");
    let Hooked {
        key,
        demo,
        vendor,
        answer: body,
    } = app.hooked_demo(json!({}), &url).await;
    assert_eq!(body["webhook_url"], url.as_str());
    let secret = body["webhook_secret"].as_str().unwrap().to_string();
    // Shown once.
    let again: Value = app
        .patch_vendor(&vendor, &key, json!({"webhook_url": url}))
        .await
        .json()
        .await
        .unwrap();
    assert!(again.get("webhook_secret").is_none(), "{again}");

    // The receiver fails the first three requests: the first delivery is retried, and
    // the later ones of the same sandbox wait for it.
    received.modes.lock().unwrap().extend([Mode::Fail; 3]);
    let created = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{id}/extend"),
            Some(&token),
            &json!({"seconds": 60}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await;
    assert_no_objects(&id);

    let accepted = wait_accepted(&received, |a| types_for(a, &id).len() == 4).await;
    assert_eq!(types_for(&accepted, &id), LIFECYCLE, "in order");
    // Every request carried the signature of its exact body.
    for (signature, body) in received.all.lock().unwrap().iter() {
        assert_eq!(signature, &signed(&secret, body), "{body}");
    }
    let ended = accepted
        .iter()
        .find(|d| d["type"] == "sandbox.ended")
        .unwrap();
    assert_eq!(ended["sandbox"]["end_reason"], "ended_by_prospect");
    assert_eq!(ended["sandbox"]["id"], id.as_str());

    // The vendor sees how its deliveries went.
    let res = app
        .get(&format!("/v1/vendors/{vendor}/deliveries"), Some(&key))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let deliveries: Value = res.json().await.unwrap();
    let created = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "sandbox.created")
        .unwrap()
        .clone();
    assert_eq!(created["attempts"], 4, "{created}");
    assert_eq!(created["last_status"], 204);
    assert!(created["delivered_at"].is_string());
    // Another vendor sees none of them.
    let (other, other_key) = app.vendor("Someone else").await;
    let res = app
        .get(
            &format!("/v1/vendors/{vendor}/deliveries"),
            Some(&other_key),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let _ = other;

    // Removing the URL stops deliveries.
    let res = app
        .patch_vendor(&vendor, &key, json!({"webhook_url": null}))
        .await;
    let body: Value = res.json().await.unwrap();
    assert!(body.get("webhook_url").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_are_checked() {
    let app = TestApp::spawn().await; // private destinations not allowed
    let (vendor, key) = app.vendor("Acme").await;
    for (url, why) in [
        ("ftp://example.com/hook", "http"),
        ("http://127.0.0.1:9/hook", "private"),
        ("http://localhost:9/hook", "private"),
        ("http://169.254.169.254/latest", "private"),
        ("https://user:pw@example.com/", "credentials"),
    ] {
        let res = app
            .patch_vendor(&vendor, &key, json!({"webhook_url": url}))
            .await;
        let problem = crate::helpers::problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], "webhook_url", "{url}");
        assert!(
            problem["detail"].as_str().unwrap().contains(why),
            "{url}: {problem}"
        );
    }
    // A prospect's token may not touch a vendor.
    let res = app
        .patch_vendor(&vendor, "tds_nope", json!({"webhook_url": null}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_is_lost_across_a_restart_mid_delivery() {
    require_images();
    let mut app = webhook_app().await;
    let (addr, received) = receiver().await;
    let Hooked { demo, .. } = app
        .hooked_demo(json!({}), &format!("http://{addr}/hook"))
        .await;

    // The receiver holds the first request while the service stops and starts again.
    received
        .modes
        .lock()
        .unwrap()
        .push(Mode::Hang(Duration::from_secs(5)));
    let created = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        if !received.all.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !received.all.lock().unwrap().is_empty(),
        "a delivery is in flight"
    );
    app.restart(|_| {}).await;
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert_no_objects(&id);

    let accepted = wait_accepted(&received, |a| types_for(a, &id).len() == 3).await;
    assert_eq!(
        types_for(&accepted, &id),
        ["sandbox.created", "sandbox.ready", "sandbox.ended"]
    );
    // The first was cut off by the restart and sent again by the next run.
    let created_sent = received
        .all
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, body)| body.contains("\"type\":\"sandbox.created\""))
        .count();
    assert!(created_sent >= 2, "sent {created_sent} time(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_profiles_files_and_never_shows_a_value() {
    require_images();
    let app = TestApp::spawn().await;
    let (key, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv", "json", "ndjson"]}}))
        .await;
    let csv = "customer,spend,signed_up,vip\n\
               Zanzibar Holdings,1200.50,2024-03-01,true\n\
               Quokka Ltd,99,2024-04-15,false\n";
    let json_file =
        r#"{"region": "Atlantis-North", "accounts": [1, 2], "owner": {"name": "Xerxes"}}"#;
    let created = app
        .ready_sandbox(
            &demo,
            &[
                ("customers.csv", csv.as_bytes().to_vec()),
                ("meta.json", json_file.as_bytes().to_vec()),
                (
                    "deals.json",
                    br#"[{"deal": "Kraken Ltd", "value": 12.5, "won": true},
                         {"deal": "Narwhal plc", "value": 7, "won": false}]"#
                        .to_vec(),
                ),
                (
                    "events.ndjson",
                    b"{\"who\": \"Ulysses\", \"at\": \"2024-05-06\"}\n{\"who\": \"Penelope\", \"at\": \"2024-05-07\"}\n"
                        .to_vec(),
                ),
            ],
        )
        .await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    for _ in 0..3 {
        let res = app
            .get(&format!("/s/{id}/customers.csv"), Some(&token))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    app.post_json(
        &format!("/v1/sandboxes/{id}/extend"),
        Some(&token),
        &json!({"seconds": 120}),
    )
    .await;

    // Not for the prospect.
    let res = app
        .get(&format!("/v1/sandboxes/{id}/report"), Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    app.delete(&format!("/v1/sandboxes/{id}"), Some(&key)).await;
    assert_no_objects(&id);
    // It outlives the data.
    let (text, report) = app.report(&id, &key).await;
    let files: HashMap<&str, &Value> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), &f["profile"]))
        .collect();
    assert_eq!(
        files["customers.csv"],
        &json!({"format": "csv", "delimiter": ",", "header": true, "rows": 2, "columns": [
            {"name": "customer", "type": "text"}, {"name": "spend", "type": "number"},
            {"name": "signed_up", "type": "date"}, {"name": "vip", "type": "boolean"}]})
    );
    assert_eq!(
        files["meta.json"],
        &json!({"format": "json", "top_level": "object", "keys": ["region", "accounts", "owner"]})
    );
    // An array of records and newline-delimited records read like tables: their keys with
    // a type each and how many, never a value.
    assert_eq!(
        files["deals.json"],
        &json!({"format": "json", "top_level": "array", "length": 2, "records": 2, "columns": [
            {"name": "deal", "type": "text"}, {"name": "value", "type": "number"},
            {"name": "won", "type": "boolean"}]})
    );
    assert_eq!(
        files["events.ndjson"],
        &json!({"format": "json", "top_level": "lines", "length": 2, "records": 2, "columns": [
            {"name": "who", "type": "text"}, {"name": "at", "type": "date"}]})
    );
    assert_eq!(
        report["extensions"],
        json!({"count": 1, "seconds_added": 120})
    );
    assert_eq!(report["end_reason"], "ended_by_vendor");
    assert_eq!(report["usage"]["requests"], 3);
    assert!(report["usage"]["first_opened_at"].is_string(), "{report}");
    for value in [
        "Zanzibar",
        "Quokka",
        "1200.50",
        "2024-03-01",
        "Atlantis",
        "Xerxes",
        "Kraken",
        "Narwhal",
        "Ulysses",
        "Penelope",
        "2024-05-06",
    ] {
        assert!(!text.contains(value), "the report shows {value}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deletion_receipt_is_signed_and_checks_out() {
    require_images();
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let data = b"x\n1\n".to_vec();
    let created = app.ready_sandbox(&demo, &[("a.csv", data.clone())]).await;
    let (id, token) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    let res = app
        .get(&format!("/v1/sandboxes/{id}/receipt"), Some(&token))
        .await;
    crate::helpers::problem(res, StatusCode::CONFLICT).await;

    app.delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await;
    let res = app
        .get(&format!("/v1/sandboxes/{id}/receipt"), Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let signed: Value = res.json().await.unwrap();
    let key: Value = app.get("/v1/receipt-key", None).await.json().await.unwrap();

    let bytes = BASE64.decode(signed["signed"].as_str().unwrap()).unwrap();
    let signature = BASE64
        .decode(signed["signature"].as_str().unwrap())
        .unwrap();
    let public: [u8; 32] = BASE64
        .decode(key["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let verifier = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    assert!(verifier.verify_strict(&bytes, &signature).is_ok());
    let receipt: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(receipt, signed["receipt"]);
    assert_eq!(receipt["sandbox_id"], id.as_str());
    assert_eq!(
        receipt["files"][0]["sha256"],
        crate::helpers::sha256_hex(&data).as_str()
    );
    for when in [
        "container_removed_at",
        "volumes_removed_at",
        "data_deleted_at",
    ] {
        assert!(receipt[when].is_string(), "{when}: {receipt}");
    }
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(verifier.verify_strict(&tampered, &signature).is_err());

    // The check docs/api.md gives verifiers, with openssl.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), key["pem"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("receipt.json"), &bytes).unwrap();
    std::fs::write(dir.path().join("receipt.sig"), signature.to_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
        ])
        .args(["-in", "receipt.json", "-sigfile", "receipt.sig"])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");

    // The demo's vendor may fetch it too; another sandbox's token may not.
    let other = app
        .ready_sandbox(&demo, &[("b.csv", b"y\n".to_vec())])
        .await;
    let res = app
        .get(
            &format!("/v1/sandboxes/{id}/receipt"),
            Some(other["token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let other_id = other["id"].as_str().unwrap();
    app.delete(&format!("/v1/sandboxes/{other_id}"), Some(&app.admin))
        .await;
}
