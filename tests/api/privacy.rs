//! No value of a prospect's file reaches the vendor or the operators: every file kind a
//! prospect really uploads (the `tabular` fixtures, a unique marker in each value), and a
//! demo whose load command prints the files, then everything a vendor or an operator can
//! read: records, lists, events, reports, receipts, deliveries, service events, metrics,
//! webhooks, both consoles and the service's log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tabular::fixtures::{self, Fixture, Reading};
use tabular::sniff::Content;

use crate::helpers::{Api, Recorded, merge, poll, recording_receiver, require_images};
use crate::pages::{cookie_value, first_snapshot, key_of, login, page_html, set_cookies};
use crate::process::ChildService;

/// The markers of `markers` that `text` holds.
fn leaked<'a>(text: &str, markers: &'a [String]) -> Vec<&'a str> {
    markers
        .iter()
        .filter(|m| text.contains(m.as_str()))
        .map(String::as_str)
        .collect()
}

/// Signs in to a console (`/ops` or `/vendor`): its page, and its first snapshot.
async fn console(api: &Api, base: &str, token: &str) -> (String, String) {
    let res = login(api, base, token, "same-origin").await;
    let cookie = set_cookies(&res)
        .iter()
        .map(|c| cookie_value(c))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookie.is_empty(), "{base}: signed in");
    let page = page_html(api, base, &cookie).await;
    let snapshot = first_snapshot(api, base, &cookie, &key_of(&page)).await;
    (page, snapshot.to_string())
}

/// What `token` reads at `path`, which answers it (a receipt may be `409` before the end).
async fn text(api: &Api, path: &str, token: &str) -> String {
    let res = api.get(path, Some(token)).await;
    let status = res.status();
    let body = res.text().await.unwrap();
    assert!(
        status == StatusCode::OK || (path.ends_with("/receipt") && status == StatusCode::CONFLICT),
        "{path}: {status} {body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_of_any_file_kind_reaches_the_vendor_or_the_operators() {
    require_images();
    let svc = ChildService::start_with(&[
        ("TESTDRIVE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TESTDRIVE_WEBHOOK_FIRST_RETRY_MS", "100"),
    ])
    .await;
    let (addr, received): (_, Recorded) = recording_receiver().await;
    let upload = json!({"upload": {"extensions": ["csv", "tsv", "json"]}});
    let hooked = svc
        .hooked_demo(upload.clone(), &format!("http://{addr}/hook"))
        .await;
    let (key, vendor) = (hooked.key.clone(), hooked.vendor.clone());
    // The same vendor's second demo: its load command prints the files, to stdout and
    // stderr, and fails.
    let mut manifest = json!({
        "slug": "printer", "title": "Prints its data", "image": crate::helpers::STATIC_FILES,
        "port": 8080, "data_path": "/data",
        "ready": {"http_path": "/", "timeout_seconds": 20},
        "load_command": ["/bin/sh", "-c", "cat /data/*; cat /data/* >&2; exit 1"]
    });
    merge(&mut manifest, upload);
    let printer = svc.demo(&key, manifest).await;

    let seed = 100_000 + (uuid::Uuid::new_v4().as_u128() % 900_000) as u32;
    let all = fixtures::all(seed);
    let markers: Vec<String> = all.iter().flat_map(|f| f.markers.clone()).collect();
    // The markers really are in the files (so finding none below means something).
    for f in &all {
        for m in &f.markers {
            assert!(f.holds(m), "{} holds {m}", f.name);
        }
    }

    // One sandbox per file kind. A kind refused before provisioning is fine (nothing
    // is kept of it); one accepted is used, then ended.
    let mut ids = Vec::new();
    for f in &all {
        let res = svc
            .create_sandbox(&hooked.demo, &[(f.name, f.bytes.clone())], &[], Some(60))
            .await;
        let status = res.status();
        let body = res.text().await.unwrap();
        if status != StatusCode::CREATED {
            assert!(status.is_client_error(), "{}: {status} {body}", f.name);
            continue;
        }
        let created: Value = serde_json::from_str(&body).unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        let token = created["token"].as_str().unwrap().to_string();
        svc.delete(&format!("/v1/sandboxes/{id}"), Some(&token))
            .await;
        ids.push((id, f));
    }
    let profiled: Vec<&Fixture> = ids.iter().map(|(_, f)| *f).collect();
    assert!(
        profiled
            .iter()
            .any(|f| matches!(f.reading, Reading::Table { header: false, .. })),
        "a headerless file went through"
    );

    // The load command prints every text file; the prospect, and only the prospect, sees it.
    let text_files: Vec<(&str, Vec<u8>)> = all
        .iter()
        .filter(|f| Content::sniff(&f.bytes).is_text() && std::str::from_utf8(&f.bytes).is_ok())
        .map(|f| (f.name, f.bytes.clone()))
        .collect();
    let res = svc
        .create_sandbox(&printer, &text_files, &[], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["status"], "failed", "{created}");
    let failed = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    let own = text(&svc, &format!("/v1/sandboxes/{failed}"), &token).await;
    assert!(
        !leaked(&own, &markers).is_empty(),
        "the prospect sees what the load command printed: {own}"
    );

    // Everything the vendor and the operators can read.
    let mut sandbox_ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    sandbox_ids.push(&failed);
    let mut reads: Vec<(String, String)> = Vec::new();
    for who in [&key, &svc.admin] {
        for id in &sandbox_ids {
            for path in [
                format!("/v1/sandboxes/{id}"),
                format!("/v1/sandboxes/{id}/events"),
                format!("/v1/sandboxes/{id}/report"),
                format!("/v1/sandboxes/{id}/receipt"),
            ] {
                reads.push((path.clone(), text(&svc, &path, who).await));
            }
        }
        for path in [
            "/v1/sandboxes?limit=100".to_string(),
            format!("/v1/vendors/{vendor}/deliveries"),
        ] {
            reads.push((path.clone(), text(&svc, &path, who).await));
        }
    }
    reads.push((
        "/v1/service-events".into(),
        text(&svc, "/v1/service-events", &svc.admin).await,
    ));
    reads.push(("/metrics".into(), text(&svc, "/metrics", &svc.admin).await));
    for (base, token) in [("/ops", &svc.admin), ("/vendor", &key)] {
        let (page, snapshot) = console(&svc, base, token).await;
        reads.push((base.to_string(), page));
        reads.push((format!("{base}/stream"), snapshot));
    }
    // The reports did read the files (a report of nothing would hide nothing).
    let reports: String = reads
        .iter()
        .filter(|(p, _)| p.ends_with("/report"))
        .map(|(_, t)| t.as_str())
        .collect();
    assert!(
        reports.contains("\"header\":false") && reports.contains("\"delimiter\":\";\""),
        "{reports}"
    );
    for (path, body) in &reads {
        let found = leaked(body, &markers);
        assert!(found.is_empty(), "{path} shows {found:?}: {body}");
    }

    // Every webhook of every sandbox has been sent, and holds no value.
    let every_end = |got: &[(String, String)]| {
        sandbox_ids.iter().all(|id| {
            got.iter().any(|(_, b)| {
                b.contains(id) && (b.contains("sandbox.ended") || b.contains("sandbox.failed"))
            })
        })
    };
    let got = poll(
        Duration::from_millis(100),
        async || received.lock().unwrap().clone(),
        |got| every_end(got),
    )
    .await;
    for (_, body) in &got {
        let found = leaked(body, &markers);
        assert!(found.is_empty(), "a webhook shows {found:?}: {body}");
    }
    // Nor does the service's log.
    let marker_refs: Vec<&str> = markers.iter().map(String::as_str).collect();
    let logged = svc.log_lines_with(&marker_refs);
    assert!(logged.is_empty(), "the log: {logged}");
}
