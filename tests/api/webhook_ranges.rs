//! Where webhooks may not go: a literal IP in any spelling and every special-purpose range
//! is refused with the one answer an unknown name gets, and a URL saved while private
//! destinations were allowed reaches nothing once the deployment stops allowing them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Hooked, Recorded, TestApp, poll, problem, recording_receiver, require_images, webhook_app,
};

/// Webhook URLs whose host is, or resolves to, an address deliveries may not reach.
const REFUSED: &[&str] = &[
    // Loopback, in the spellings resolvers and browsers accept.
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://127.0.1/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0x7f000001/hook",
    "http://017700000001/hook",
    "http://0177.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://localhost:9/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[::127.0.0.1]/hook",
    // IPv4 carried in IPv6: NAT64 (both prefixes), 6to4, Teredo.
    "http://[64:ff9b::7f00:1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",
    "http://[64:ff9b:1::a00:1]/hook",
    "http://[2002:7f00:1::1]/hook",
    "http://[2002:a9fe:a9fe::1]/hook",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
    // The special-purpose IPv4 registry.
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://10.0.0.1/hook",
    "http://100.64.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://172.16.0.1/hook",
    "http://192.0.0.1/hook",
    "http://192.0.2.1/hook",
    "http://192.88.99.1/hook",
    "http://192.168.0.1/hook",
    "http://198.18.0.1/hook",
    "http://198.19.255.254/hook",
    "http://198.51.100.1/hook",
    "http://203.0.113.1/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    // The special-purpose IPv6 registry.
    "http://[::]/hook",
    "http://[100::1]/hook",
    "http://[2001:2::1]/hook",
    "http://[2001:10::1]/hook",
    "http://[2001:20::1]/hook",
    "http://[2001:db8::1]/hook",
    "http://[3fff::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[fe80::1]/hook",
    "http://[fec0::1]/hook",
    "http://[ff02::1]/hook",
    // Hosts that are no address and no name, and a name that does not resolve.
    "http://1.2.3.4.5/hook",
    "http://0x7g.1/hook",
    "https://no-such-host.invalid/hook",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_ips_in_every_spelling_and_special_ranges_get_one_answer() {
    require_images();
    let app = TestApp::spawn().await;
    let (vendor, key) = app.vendor("Ranges").await;
    let mut accepted = Vec::new();
    let mut details = std::collections::BTreeMap::new();
    for url in REFUSED {
        let res = app
            .patch_vendor(&vendor, &key, json!({"webhook_url": url}))
            .await;
        if res.status() != StatusCode::UNPROCESSABLE_ENTITY {
            accepted.push(format!("{url} ({})", res.status()));
            continue;
        }
        let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "webhook_url");
        details
            .entry(body["detail"].as_str().unwrap().to_string())
            .or_insert_with(Vec::new)
            .push(*url);
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    assert_eq!(
        details.len(),
        1,
        "one answer for every refusal, so nothing can be learnt from it: {details:#?}"
    );
    // Unset again, for what follows.
    let res = app
        .patch_vendor(&vendor, &key, json!({"webhook_url": null}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let shown = app.vendor_record(&vendor, &key).await;
    assert!(shown.get("webhook_url").is_none(), "{shown}");

    // A public address is accepted (the check does not connect).
    let res = app
        .patch_vendor(
            &vendor,
            &key,
            json!({"webhook_url": "https://1.1.1.1/hook"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// The vendor's deliveries once `done` holds for them, up to a minute.
async fn deliveries_when(
    app: &TestApp,
    vendor: &str,
    key: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("/v1/vendors/{vendor}/deliveries");
    let fetch = async || {
        let body: Value = app.get(&path, Some(key)).await.json().await.unwrap();
        body["items"].as_array().unwrap().clone()
    };
    poll(Duration::from_millis(100), fetch, |items| done(items)).await
}

/// The bodies the receiver got, parsed.
fn bodies(received: &Recorded) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_saved_while_private_was_allowed_gets_nothing_once_it_is_not() {
    require_images();
    let mut app = webhook_app().await;
    let (addr, received) = recording_receiver().await;
    let url = format!("http://{addr}/hook");
    let Hooked {
        key, demo, vendor, ..
    } = app.hooked_demo(json!({}), &url).await;

    // Allowed: the receiver hears of a sandbox.
    let first = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let first = first["id"].as_str().unwrap().to_string();
    deliveries_when(&app, &vendor, &key, |items| {
        items.iter().any(|d| d["delivered_at"].is_string())
    })
    .await;
    assert!(
        bodies(&received)
            .iter()
            .any(|b| b["sandbox"]["id"] == first.as_str())
    );

    // The operator stops allowing private destinations; the saved URL stays as it was.
    app.reconfigure(|c| c.webhook_allow_private = false).await;
    let shown = app.vendor_record(&vendor, &key).await;
    assert_eq!(shown["webhook_url"], url.as_str());
    let heard_before = received.lock().unwrap().len();

    let second = app
        .ready_sandbox(&demo, &[("b.csv", b"y\n".to_vec())])
        .await;
    let second = second["id"].as_str().unwrap().to_string();
    // Its first delivery (the later ones wait behind it) is tried again and again, and
    // refused each time: recorded as failed, never sent.
    let items = deliveries_when(&app, &vendor, &key, |items| {
        items.iter().any(|d| {
            d["sandbox_id"] == second.as_str()
                && (d["attempts"].as_u64() >= Some(2) || d["delivered_at"].is_string())
        })
    })
    .await;
    for d in items.iter().filter(|d| d["sandbox_id"] == second.as_str()) {
        assert!(d["delivered_at"].is_null(), "{d}");
        assert_eq!(d["last_status"], Value::Null, "never sent: {d}");
        if d["attempts"].as_u64() > Some(0) {
            let error = d["last_error"].as_str().unwrap_or_default();
            assert!(error.contains("public addresses"), "{d}");
        }
    }
    let heard = bodies(&received);
    assert_eq!(heard.len(), heard_before, "nothing more arrived: {heard:?}");
    assert!(heard.iter().all(|b| b["sandbox"]["id"] != second.as_str()));
}
