//! A demo's image that vanishes from the Engine (`docker image prune -a`, `docker rmi`)
//! and comes back (issue 13). Each test tags its own copy of the static-files image under a
//! name of its own, so removing it touches nothing another test (or the base image) uses:
//! `docker rmi` of one of several tags only untags.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{STATIC_FILES, TestApp, poll, problem, require_images};
use crate::pages::{cookie_value, first_snapshot, login, page_key, set_cookies};

/// A tag of the static-files image that exists only for one test; removed when dropped,
/// whatever happened.
pub struct Tag(pub String);

impl Tag {
    pub fn new() -> Tag {
        let tag = Tag(format!(
            "testdrive-test/vanishing-{}:1",
            uuid::Uuid::new_v4().simple()
        ));
        tag.put_back();
        tag
    }

    /// `docker image prune -a` as far as this demo is concerned.
    fn remove(&self) {
        let out = Command::new("docker")
            .args(["rmi", &self.0])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn put_back(&self) {
        let out = Command::new("docker")
            .args(["tag", STATIC_FILES, &self.0])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// A vendor given the tagged image, with a demo of it: (vendor key, demo id).
async fn demo_of(app: &TestApp, tag: &Tag, overrides: Value) -> (String, String) {
    app.static_demo_of(&tag.0, overrides).await
}

async fn demo_record(app: &TestApp, key: &str, demo: &str) -> Value {
    let res = app.get(&format!("/v1/demos/{demo}"), Some(key)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Waits until the demo's `image_status` is `status`; how long that took.
async fn until_image(app: &TestApp, key: &str, demo: &str, status: &str) -> Duration {
    let started = Instant::now();
    poll(
        Duration::from_millis(50),
        async || demo_record(app, key, demo).await["image_status"].clone(),
        |s| *s == status,
    )
    .await;
    started.elapsed()
}

async fn in_catalog(app: &TestApp, demo: &str) -> bool {
    let catalog: Value = app.get("/v1/catalog", None).await.json().await.unwrap();
    let listed = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == demo);
    let page = app.get("/", None).await.text().await.unwrap();
    assert_eq!(
        page.contains(&format!("/demos/{demo}")),
        listed,
        "the catalog page and the API agree"
    );
    listed
}

/// The deployment's events (as `token` sees them) about `image`: their kinds, oldest first.
async fn image_events(app: &TestApp, token: &str, image: &str) -> Vec<String> {
    let mut kinds: Vec<String> = app
        .service_events(token)
        .await
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().contains(image))
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.reverse();
    kinds
}

/// The demo page's form, as its script posts it (`json`) or a browser without scripts.
async fn post_trial_form(app: &TestApp, demo: &str, json: bool) -> reqwest::Response {
    let form = Form::new().text("demo", demo.to_string()).part(
        "file",
        Part::bytes(b"x,y\n1,2\n".to_vec()).file_name("a.csv"),
    );
    let mut req = app.http.post(app.url("/trials")).multipart(form);
    if json {
        req = req.header("accept", "application/json");
    }
    req.send().await.unwrap()
}

const WORDS: &str = "this demo is not available right now: its product image is missing";
const PAGE_WORDS: &str = "is not available right now: its product image is missing";

/// The vendor changes its demo (its description): the answer, with the image checked.
async fn touch(app: &TestApp, key: &str, demo: &str) -> Value {
    let res = app
        .http
        .patch(app.url(&format!("/v1/demos/{demo}")))
        .bearer_auth(key)
        .json(&json!({"description": "touched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Signs in to a console: (cookie, page key).
async fn console(app: &TestApp, base: &str, token: &str) -> (String, String) {
    let res = login(app, base, token, "same-origin").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = cookie_value(&set_cookies(&res)[0]);
    let key = page_key(app, base, &cookie).await;
    (cookie, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_whose_image_vanished_leaves_the_catalog_until_it_is_back() {
    require_images();
    let app = TestApp::spawn().await;
    let tag = Tag::new();
    let (key, demo) = demo_of(&app, &tag, json!({"warm_pool": 1})).await;
    assert_eq!(
        demo_record(&app, &key, &demo).await["image_status"],
        "ready"
    );
    assert!(in_catalog(&app, &demo).await);
    poll(
        Duration::from_millis(100),
        async || demo_record(&app, &key, &demo).await["warm_ready"].clone(),
        |n| *n == 1,
    )
    .await;

    tag.remove();
    let noticed = until_image(&app, &key, &demo, "missing").await;
    println!("the reconciler noticed the missing image after {noticed:?} (pass every 2 s)");

    // Out of the catalog (API and page); its page says so, without a form.
    assert!(!in_catalog(&app, &demo).await);
    let res = app.get(&format!("/demos/{demo}"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains(PAGE_WORDS), "{page}");
    assert!(!page.contains("trial-form"), "{page}");

    // No trial starts, through either door, and nothing says what the Engine said.
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], Some(30))
        .await;
    let body = problem(res, StatusCode::CONFLICT).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with(WORDS), "{detail}");
    assert!(!detail.contains("Docker"), "{detail}");
    problem(
        post_trial_form(&app, &demo, true).await,
        StatusCode::CONFLICT,
    )
    .await;
    let res = post_trial_form(&app, &demo, false).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains(PAGE_WORDS));
    assert!(app.sandboxes().await.is_empty());

    // Its warm pool is drained and stays empty.
    poll(
        Duration::from_millis(100),
        async || demo_record(&app, &key, &demo).await["warm_ready"].clone(),
        |n| *n == 0,
    )
    .await;
    poll(
        Duration::from_millis(100),
        async || app.instance_objects(),
        |objects| objects.is_empty(),
    )
    .await;

    // Operators and the vendor are told, in the API and in their consoles.
    assert_eq!(
        image_events(&app, &app.admin, &tag.0).await,
        ["image_missing"]
    );
    assert_eq!(image_events(&app, &key, &tag.0).await, ["image_missing"]);
    let (ops, ops_key) = console(&app, "/ops", &app.admin).await;
    let snapshot = first_snapshot(&app, "/ops", &ops, &ops_key).await;
    let missing = snapshot["images_missing"].as_array().unwrap();
    assert!(
        missing
            .iter()
            .any(|d| d["id"] == demo.as_str() && d["image"] == tag.0.as_str()),
        "{snapshot}"
    );
    let (vendor, vendor_key) = console(&app, "/vendor", &key).await;
    let snapshot = first_snapshot(&app, "/vendor", &vendor, &vendor_key).await;
    assert_eq!(snapshot["demos"][0]["id"], demo.as_str());
    assert_eq!(
        snapshot["demos"][0]["image_status"], "missing",
        "{snapshot}"
    );
    assert!(
        snapshot["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "image_missing"),
        "{snapshot}"
    );

    // Back: in the catalog again, its pool refilled, and a trial runs.
    tag.put_back();
    let noticed = until_image(&app, &key, &demo, "ready").await;
    println!("the reconciler noticed the image back after {noticed:?} (pass every 2 s)");
    assert!(in_catalog(&app, &demo).await);
    assert_eq!(
        image_events(&app, &app.admin, &tag.0).await,
        ["image_missing", "image_back"],
        "each change recorded once, over several passes"
    );
    let snapshot = first_snapshot(&app, "/ops", &ops, &ops_key).await;
    assert!(
        !snapshot["images_missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == demo.as_str()),
        "{snapshot}"
    );
    poll(
        Duration::from_millis(100),
        async || demo_record(&app, &key, &demo).await["warm_ready"].clone(),
        |n| *n == 1,
    )
    .await;
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
        .await;
    app.end_sandbox(
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    )
    .await;
}

/// The image goes between two reconciler passes (an hour apart here), right before a
/// trial: the trial fails in words, and the demo is marked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_that_meets_the_vanished_image_fails_in_words_and_marks_the_demo() {
    require_images();
    let app = TestApp::spawn_with(|c| c.reconcile_seconds = 3600).await;
    let tag = Tag::new();
    let (key, demo) = demo_of(&app, &tag, json!({})).await;

    // The reconciler's first pass runs as the service starts, so it may check the image
    // after it is gone (then the trial is refused, 409). That pass has ended then, and the
    // next is an hour away: put the image back, and go again, now surely in the gap.
    let mut before: Vec<&str> = vec![];
    let body: Value = loop {
        tag.remove();
        let res = app
            .create_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], Some(60))
            .await;
        if res.status() == StatusCode::CONFLICT && before.is_empty() {
            tag.put_back();
            assert_eq!(touch(&app, &key, &demo).await["image_status"], "ready");
            println!("the reconciler's first pass saw the image gone first; again, in the gap");
            before = vec!["image_missing", "image_back"];
            continue;
        }
        assert_eq!(res.status(), StatusCode::CREATED);
        break res.json().await.unwrap();
    };
    let expected = |more: &[&'static str]| -> Vec<String> {
        before.iter().chain(more).map(|k| k.to_string()).collect()
    };
    assert_eq!(body["status"], "failed", "{body}");
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    // The failure, as the prospect's, the vendor's and the operators' history says it.
    for who in [token, key.as_str(), app.admin.as_str()] {
        let events = app.events(id, who).await;
        let failed = events.iter().find(|e| e["kind"] == "failed");
        let detail = failed
            .and_then(|e| e["detail"].as_str())
            .unwrap_or_default();
        assert!(detail.contains(WORDS), "{events:?}");
        for event in &events {
            assert!(!event.to_string().contains("Docker"), "{event}");
        }
    }

    // Marked before the failure was recorded: no wait for the reconciler.
    assert_eq!(
        demo_record(&app, &key, &demo).await["image_status"],
        "missing"
    );
    assert!(!in_catalog(&app, &demo).await);
    assert_eq!(
        image_events(&app, &app.admin, &tag.0).await,
        expected(&["image_missing"])
    );
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], None)
        .await;
    problem(res, StatusCode::CONFLICT).await;
    app.wait_as_admin(id, |s| !s["data_deleted_at"].is_null())
        .await;
    crate::helpers::assert_no_objects(id);

    // The vendor puts the image back and touches the demo: it is checked at once.
    tag.put_back();
    let patched = touch(&app, &key, &demo).await;
    assert_eq!(patched["image_status"], "ready", "{patched}");
    assert!(in_catalog(&app, &demo).await);
    assert_eq!(
        image_events(&app, &app.admin, &tag.0).await,
        expected(&["image_missing", "image_back"])
    );
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
        .await;
    app.end_sandbox(
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    )
    .await;
}
