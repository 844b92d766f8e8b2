//! Demos of images in a vendor's own registry (issue 14): pulled through the Engine with the
//! vendor's credentials, pinned to the digest the pull resolved, and failing in words a
//! vendor can act on. Each test has a private registry of its own (`TestRegistry`, on
//! loopback with basic auth), declared before the app so that it is dropped after it: the
//! registry's drop removes every image pulled from it.
//!
//! The images pushed are the demo images (static-files, csv-explorer), so a pull finds their
//! layers on the Engine already and fetches only the manifest and config: what is timed is
//! testdrive's pull path, not a transfer.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    CSV_EXPLORER, STATIC_FILES, TestApp, container_of, poll, problem, require_images,
};
use crate::test_registry::TestRegistry;

const USER: &str = "acme";
const PASSWORD: &str = "registry-password-4ac1";

const REFUSED: &str = "the registry refused the credentials for";
const HAS_NO: &str = "the registry has no";
const UNREACHABLE: &str = "cannot reach the registry";

/// `PUT /v1/vendors/{vendor}/registries/{server}` as the vendor: must be `204`.
async fn store_credentials(
    app: &TestApp,
    vendor: &str,
    key: &str,
    server: &str,
    username: &str,
    password: &str,
) {
    let res = app
        .http
        .put(app.url(&format!("/v1/vendors/{vendor}/registries/{server}")))
        .bearer_auth(key)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

/// A new vendor with its credentials for `registry` stored: (vendor id, key).
async fn vendor_of(app: &TestApp, registry: &TestRegistry, password: &str) -> (String, String) {
    let (vendor, key) = app
        .vendor(&format!("Acme {}", uuid::Uuid::new_v4().simple()))
        .await;
    store_credentials(app, &vendor, &key, &registry.server(), USER, password).await;
    (vendor, key)
}

/// Registers a demo of `image` as the static-files demos are (`Api::static_demo`), with
/// this slug: the `201` answer, which says the pull has begun.
async fn register(app: &TestApp, key: &str, slug: &str, image: &str) -> Value {
    let manifest = json!({
        "slug": slug, "title": "Files", "image": image,
        "port": 8080, "data_path": "/data",
        "ready": {"http_path": "/", "timeout_seconds": 20}
    });
    let res = app.post_json("/v1/demos", Some(key), &manifest).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["image_status"], "pulling", "{body}");
    assert_eq!(body["image_digest"], Value::Null, "{body}");
    body
}

fn id(demo: &Value) -> String {
    demo["id"].as_str().unwrap().to_string()
}

async fn demo_record(app: &TestApp, key: &str, demo: &str) -> Value {
    let res = app.get(&format!("/v1/demos/{demo}"), Some(key)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Polls the demo until its pull is over; its record then.
async fn pulled(app: &TestApp, key: &str, demo: &str) -> Value {
    poll(
        Duration::from_millis(20),
        async || demo_record(app, key, demo).await,
        |d| d["image_status"] != "pulling",
    )
    .await
}

/// `POST /v1/demos/{demo}/pull` as `key`: `202` with the demo, pulling.
async fn pull_again(app: &TestApp, key: &str, demo: &str) -> Value {
    let res = app
        .http
        .post(app.url(&format!("/v1/demos/{demo}/pull")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["image_status"], "pulling", "{body}");
    body
}

async fn in_catalog(app: &TestApp, demo: &str) -> bool {
    let catalog: Value = app.get("/v1/catalog", None).await.json().await.unwrap();
    catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == demo)
}

/// Asserts the demo's pull failed with words containing each of `words`, never showing
/// the password, and that it is neither listed nor takes a trial.
async fn assert_failed(app: &TestApp, key: &str, demo: &str, words: &[&str]) -> String {
    let record = pulled(app, key, demo).await;
    assert_eq!(record["image_status"], "failed", "{record}");
    assert_eq!(record["image_digest"], Value::Null, "{record}");
    let error = record["image_error"]
        .as_str()
        .expect("image_error")
        .to_string();
    for word in words {
        assert!(error.contains(word), "{error:?} should say {word:?}");
    }
    assert!(!error.contains(PASSWORD), "{error}");
    assert!(!in_catalog(app, demo).await);
    let res = app
        .create_sandbox(demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], Some(10))
        .await;
    problem(res, StatusCode::CONFLICT).await;
    error
}

/// The Engine's id of the image `reference` names.
fn image_id(reference: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the sandbox's container was made from: (the reference it names, the image's id).
fn running_image(sandbox: &str) -> (String, String) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Config.Image}} {{.Image}}",
            &container_of(sandbox),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let (reference, id) = said.trim().split_once(' ').unwrap();
    (reference.to_string(), id.to_string())
}

/// A ready trial of the demo: its id.
async fn trial(app: &TestApp, demo: &str) -> String {
    let body = app
        .ready_sandbox(demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
        .await;
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_image_is_pulled_pinned_and_moves_only_when_pulled_again() {
    require_images();
    let registry = TestRegistry::start(USER, PASSWORD);
    let first = registry.push(STATIC_FILES, "acme/files:1");
    let app = TestApp::spawn().await;
    let (_, key) = vendor_of(&app, &registry, PASSWORD).await;
    let image = format!("{}/acme/files:1", registry.server());
    let pinned = |digest: &str| format!("{}/acme/files@{digest}", registry.server());

    let started = Instant::now();
    let demo = id(&register(&app, &key, "files", &image).await);
    let record = pulled(&app, &key, &demo).await;
    println!(
        "pull of {STATIC_FILES} from the local registry: registration to ready in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(record["image_status"], "ready", "{record}");
    assert_eq!(record["image_digest"], first, "{record}");
    assert_eq!(record["image_error"], Value::Null, "{record}");
    assert!(in_catalog(&app, &demo).await);
    let sandbox = trial(&app, &demo).await;
    assert_eq!(
        running_image(&sandbox),
        (pinned(&first), image_id(STATIC_FILES))
    );

    // The vendor pushes another product under the same tag: nothing changes for trials.
    let second = registry.push(CSV_EXPLORER, "acme/files:1");
    assert_ne!(first, second);
    let sandbox = trial(&app, &demo).await;
    assert_eq!(
        running_image(&sandbox),
        (pinned(&first), image_id(STATIC_FILES)),
        "a moved tag changes nothing until the demo is pulled again"
    );
    assert_eq!(demo_record(&app, &key, &demo).await["image_digest"], first);

    // Until the vendor asks for it.
    pull_again(&app, &key, &demo).await;
    let record = pulled(&app, &key, &demo).await;
    assert_eq!(record["image_status"], "ready", "{record}");
    assert_eq!(record["image_digest"], second, "{record}");
    let sandbox = trial(&app, &demo).await;
    assert_eq!(
        running_image(&sandbox),
        (pinned(&second), image_id(CSV_EXPLORER))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_no_credentials_fail_the_pull_in_words() {
    require_images();
    let registry = TestRegistry::start(USER, PASSWORD);
    registry.push(STATIC_FILES, "acme/files:1");
    let app = TestApp::spawn().await;
    let server = registry.server();
    let image = format!("{server}/acme/files:1");

    let (_, key) = vendor_of(&app, &registry, "not-the-password-93d2").await;
    let demo = id(&register(&app, &key, "files", &image).await);
    let error = assert_failed(&app, &key, &demo, &[REFUSED, &server]).await;
    assert!(!error.contains("not-the-password-93d2"), "{error}");
    println!("wrong password: {error}");

    // Another vendor, with no credentials for this registry, cannot use the image either.
    let (_, other) = app.vendor("Other vendor").await;
    let demo = id(&register(&app, &other, "files", &image).await);
    let error = assert_failed(&app, &other, &demo, &[REFUSED, &server]).await;
    println!("no credentials: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tag_or_repository_fails_the_pull_in_words() {
    require_images();
    let registry = TestRegistry::start(USER, PASSWORD);
    registry.push(STATIC_FILES, "acme/files:1");
    let app = TestApp::spawn().await;
    let (_, key) = vendor_of(&app, &registry, PASSWORD).await;

    for (slug, missing) in [("tag", "acme/files:2"), ("repository", "acme/nothing:1")] {
        let image = format!("{}/{missing}", registry.server());
        let demo = id(&register(&app, &key, slug, &image).await);
        let error = assert_failed(&app, &key, &demo, &[HAS_NO, missing]).await;
        println!("missing {slug}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_was_down_is_pulled_from_once_back() {
    require_images();
    let mut registry = TestRegistry::start(USER, PASSWORD);
    let digest = registry.push(STATIC_FILES, "acme/files:1");
    let app = TestApp::spawn().await;
    let (_, key) = vendor_of(&app, &registry, PASSWORD).await;
    let image = format!("{}/acme/files:1", registry.server());

    registry.stop();
    let demo = id(&register(&app, &key, "files", &image).await);
    let error = assert_failed(&app, &key, &demo, &[UNREACHABLE, &registry.server()]).await;
    println!("registry down: {error}");

    registry.start_again();
    pull_again(&app, &key, &demo).await;
    let record = pulled(&app, &key, &demo).await;
    assert_eq!(record["image_status"], "ready", "{record}");
    assert_eq!(record["image_digest"], digest, "{record}");
    assert_eq!(record["image_error"], Value::Null, "{record}");
    assert!(in_catalog(&app, &demo).await);
    trial(&app, &demo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_image_removed_from_the_engine_is_pulled_again() {
    require_images();
    let registry = TestRegistry::start(USER, PASSWORD);
    let digest = registry.push(STATIC_FILES, "acme/files:1");
    let app = TestApp::spawn().await;
    let (_, key) = vendor_of(&app, &registry, PASSWORD).await;
    let image = format!("{}/acme/files:1", registry.server());
    let pinned = format!("{}/acme/files@{digest}", registry.server());
    let demo = id(&register(&app, &key, "files", &image).await);
    assert_eq!(pulled(&app, &key, &demo).await["image_status"], "ready");

    // `docker rmi` of every name the pull gave it (the demo image keeps its own). Removing
    // the tag also removes the digest names of its repository, so some are gone already.
    let names = registry.local_references();
    assert!(names.contains(&pinned), "{names:?}");
    for name in &names {
        let _ = Command::new("docker").args(["rmi", name]).output().unwrap();
    }
    assert_eq!(registry.local_references(), Vec::<String>::new());

    // The next trial gets the image back: pulled before it, or, if the reconciler met the
    // gap first, the demo waits (409) until its pull is over. No trial fails for it.
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], Some(60))
        .await;
    let sandbox = if res.status() == StatusCode::CONFLICT {
        println!("the reconciler met the removed image first; the trial waited");
        let record = pulled(&app, &key, &demo).await;
        assert_eq!(record["image_status"], "ready", "{record}");
        trial(&app, &demo).await
    } else {
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    assert_eq!(
        running_image(&sandbox),
        (pinned.clone(), image_id(STATIC_FILES))
    );
    assert_eq!(image_id(&pinned), image_id(STATIC_FILES));
    let record = demo_record(&app, &key, &demo).await;
    assert_eq!(record["image_status"], "ready", "{record}");
    assert_eq!(record["image_digest"], digest, "{record}");
}
