//! Whose images are whose (issue 14): an image only on the Engine serves the vendors an
//! operator gave it to, and any other vendor naming it gets the answer a vendor gets for
//! an image that does not exist; operators may name any image. Registry credentials are
//! the vendor's (or operators') to set, list and delete, are never shown again, never
//! logged, and reach the database file only sealed. The seeded demos' images are the demo
//! vendor's.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use testdrive::domain::{RegistryServer, VendorId};

use crate::at_rest::{contains, database_bytes};
use crate::helpers::{
    Api, CSV_EXPLORER, GIVEN_IMAGES, STATIC_FILES, TestApp, problem, require_images,
};
use crate::images::Tag;
use crate::process::ChildService;

/// The one refusal a vendor gets for an Engine-only image that is not its own.
fn not_yours(image: &str) -> String {
    format!(
        "image: {image} is not an image you may use: name an image in your registry, or ask \
         the operators to give you this one"
    )
}

fn manifest(slug: &str, image: &str) -> Value {
    json!({"slug": slug, "title": "Ownership", "image": image, "port": 8080,
           "data_path": "/data"})
}

async fn send(api: &Api, method: Method, path: &str, token: &str, body: Option<Value>) -> Response {
    let mut req = api.http.request(method, api.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn json_of(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The images listed as given to `vendor`, as `token` sees them.
async fn given(api: &Api, vendor: &str, token: &str) -> Vec<String> {
    let listed = json_of(
        api.get(&format!("/v1/vendors/{vendor}/images"), Some(token))
            .await,
        StatusCode::OK,
    )
    .await;
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["vendor_id"], vendor, "{g}");
            g["image"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_image_serves_only_the_vendors_given_it() {
    require_images();
    let app = TestApp::spawn().await;
    // X: on the Engine, and given to nobody yet.
    let tag = Tag::new();
    let x = tag.0.as_str();
    let nowhere = format!("testdrive-test/nowhere-{}:1", uuid::Uuid::new_v4().simple());
    let (a, a_key) = app.vendor("Owner A").await;
    let (b, b_key) = app.vendor("Other B").await;

    // Given to A: 201, and again 200 with the same grant.
    let give = async |vendor: &str, token: &str, image: &str| {
        let path = format!("/v1/vendors/{vendor}/images");
        send(
            &app,
            Method::POST,
            &path,
            token,
            Some(json!({"image": image})),
        )
        .await
    };
    let grant = json_of(give(&a, &app.admin, x).await, StatusCode::CREATED).await;
    let mut fields: Vec<&str> = grant
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(fields, ["given_at", "image", "vendor_id"], "{grant}");
    assert_eq!(
        (grant["image"].as_str(), grant["vendor_id"].as_str()),
        (Some(x), Some(a.as_str()))
    );
    assert!(grant["given_at"].is_string(), "{grant}");
    assert_eq!(
        json_of(give(&a, &app.admin, x).await, StatusCode::OK).await,
        grant
    );

    // B naming X, and B naming an image that is nowhere: the same answer.
    let refused = problem(
        app.post_json("/v1/demos", Some(&b_key), &manifest("taken", x))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["field"], "image");
    assert_eq!(refused["detail"], not_yours(x));
    let missing = problem(
        app.post_json("/v1/demos", Some(&b_key), &manifest("taken", &nowhere))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        refused.to_string().replace(x, "<image>"),
        missing.to_string().replace(&nowhere, "<image>"),
        "one answer whether or not the image exists"
    );

    // A may; operators may register it for B.
    app.demo(&a_key, manifest("mine", x)).await;
    let by_ops = json_of(
        app.post_json(
            &format!("/v1/demos?vendor_id={b}"),
            Some(&app.admin),
            &manifest("by-ops", x),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(by_ops["vendor_id"], b.as_str());

    // B moving its own demo onto X, or onto nothing, is refused the same way; operators may.
    let b_demo = app.demo(&b_key, manifest("own", STATIC_FILES)).await;
    let path = format!("/v1/demos/{b_demo}");
    for image in [x, nowhere.as_str()] {
        let res = send(
            &app,
            Method::PATCH,
            &path,
            &b_key,
            Some(json!({"image": image})),
        )
        .await;
        let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            (body["field"].as_str(), body["detail"].as_str()),
            (Some("image"), Some(not_yours(image).as_str()))
        );
    }
    let res = send(
        &app,
        Method::PATCH,
        &path,
        &app.admin,
        Some(json!({"image": x})),
    )
    .await;
    assert_eq!(json_of(res, StatusCode::OK).await["image"], x);

    // Operators are still told when an Engine-only image is not there.
    let res = app
        .post_json(
            &format!("/v1/demos?vendor_id={b}"),
            Some(&app.admin),
            &manifest("none", &nowhere),
        )
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "image");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the Docker Engine has no image"),
        "{body}"
    );

    // A registry image is not for operators to give: its registry decides, with the
    // vendor's credentials.
    let body = problem(
        give(&a, &app.admin, "registry.invalid/acme/app:1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["field"], "image");
    let res = app
        .post_json(
            "/v1/demos",
            Some(&b_key),
            &manifest("pulled", "registry.invalid/acme/app:1"),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );

    // Only operators give; a vendor that is not there is 404.
    problem(give(&a, &a_key, CSV_EXPLORER).await, StatusCode::FORBIDDEN).await;
    let stranger = uuid::Uuid::now_v7().to_string();
    problem(give(&stranger, &app.admin, x).await, StatusCode::NOT_FOUND).await;

    // Listed for A and operators; B neither sees A's list nor has X.
    let mut expected: Vec<String> = GIVEN_IMAGES.iter().map(|i| i.to_string()).collect();
    expected.push(x.to_string());
    expected.sort();
    assert_eq!(given(&app, &a, &a_key).await, expected);
    assert_eq!(given(&app, &a, &app.admin).await, expected);
    assert!(!given(&app, &b, &b_key).await.contains(&x.to_string()));
    let peek = problem(
        app.get(&format!("/v1/vendors/{a}/images"), Some(&b_key))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let none = problem(
        app.get(&format!("/v1/vendors/{stranger}/images"), Some(&b_key))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(peek, none, "another vendor's list is not there");

    // An image may be given to several vendors.
    app.give(&b, x).await;
    app.demo(&b_key, manifest("given-later", x)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_are_sealed_and_never_shown_again() {
    let svc = ChildService::start().await;
    let (a, a_key) = svc.vendor("Registry A").await;
    let (_, b_key) = svc.vendor("Registry B").await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let [first, second, third] = ["first", "second", "third"].map(|n| format!("pw-{n}-{tag}"));
    let login =
        |username: &str, password: &str| json!({"username": username, "password": password});
    let at = |server: &str| format!("/v1/vendors/{a}/registries/{server}");
    let put = async |server: &str, token: &str, body: Value| {
        send(&svc, Method::PUT, &at(server), token, Some(body)).await
    };

    // The vendor, and operators, store credentials: 204, nothing in the answer.
    let res = put("127.0.0.1:5000", &a_key, login("ci-bot", &first)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.text().await.unwrap().is_empty());
    let res = put("Registry.Example.com", &svc.admin, login("ops", &second)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let list = async |token: &str| -> Value {
        let res = svc
            .get(&format!("/v1/vendors/{a}/registries"), Some(token))
            .await;
        json_of(res, StatusCode::OK).await
    };
    let listed = list(&a_key).await;
    let shown: Vec<(&str, &str)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut fields: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
            fields.sort();
            assert_eq!(fields, ["server", "updated_at", "username"], "{l}");
            (
                l["server"].as_str().unwrap(),
                l["username"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("127.0.0.1:5000", "ci-bot"),
            ("registry.example.com", "ops")
        ]
    );
    assert_eq!(list(&svc.admin).await, listed);

    // Another vendor: as if there were nothing, whatever it tries.
    let stranger = uuid::Uuid::now_v7();
    let nothing = problem(
        svc.get(&format!("/v1/vendors/{stranger}/registries"), Some(&b_key))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let peek = problem(
        svc.get(&format!("/v1/vendors/{a}/registries"), Some(&b_key))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(peek, nothing);
    let overwrite = put("127.0.0.1:5000", &b_key, login("b", "b")).await;
    assert_eq!(problem(overwrite, StatusCode::NOT_FOUND).await, nothing);
    let res = send(&svc, Method::DELETE, &at("127.0.0.1:5000"), &b_key, None).await;
    assert_eq!(problem(res, StatusCode::NOT_FOUND).await, nothing);

    // Storing again replaces.
    let res = put("127.0.0.1:5000", &a_key, login("ci-bot-2", &third)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let listed = list(&a_key).await;
    assert_eq!(listed["items"][0]["username"], "ci-bot-2");
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // What is not a registry server, a username or a password.
    let long = "p".repeat(4097);
    for (server, body, field) in [
        ("https:%2F%2Fx", login("u", "p"), "server"),
        ("r_x.example", login("u", "p"), "server"),
        ("r.example", login("", "p"), "username"),
        ("r.example", login("u", ""), "password"),
        ("r.example", login("u", &long), "password"),
    ] {
        let body = problem(
            put(server, &a_key, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["field"], field, "{server}: {body}");
    }

    // No password is in the database's bytes (only sealed), nor in the log.
    let bytes = database_bytes(&svc.data_dir);
    for password in [&first, &second, &third] {
        assert!(
            !contains(&bytes, password),
            "{password} in the database file"
        );
        let logged = svc.log_lines_with(&[password]);
        assert!(logged.is_empty(), "the log: {logged}");
    }
    assert!(
        contains(&bytes, "ci-bot-2"),
        "the file read is the database's"
    );
    for stored in stored_passwords(&svc.data_dir).await {
        assert!(stored.starts_with("v1:"), "sealed: {stored}");
    }

    // Deleted: 204, then 404.
    let res = send(
        &svc,
        Method::DELETE,
        &at("registry.example.com"),
        &a_key,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = send(
        &svc,
        Method::DELETE,
        &at("registry.example.com"),
        &a_key,
        None,
    )
    .await;
    problem(res, StatusCode::NOT_FOUND).await;
    let listed = list(&a_key).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["server"], "127.0.0.1:5000");
}

/// The passwords as the database holds them, read from the file.
async fn stored_passwords(data_dir: &std::path::Path) -> Vec<String> {
    let stored =
        crate::helpers::read_database(data_dir, "SELECT password FROM registry_credentials").await;
    assert!(!stored.is_empty());
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_credentials_open_what_the_vendor_stored() {
    let app = TestApp::spawn().await;
    let (a, a_key) = app.vendor("Puller A").await;
    let (b, _) = app.vendor("Puller B").await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let res = send(
        &app,
        Method::PUT,
        &format!("/v1/vendors/{a}/registries/127.0.0.1:5000"),
        &a_key,
        Some(json!({"username": "ci-bot", "password": password})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let registry = &app.state().registry;
    let server = RegistryServer::parse("127.0.0.1:5000").unwrap();
    let a = VendorId::parse(&a).unwrap();
    let opened = registry
        .pull_credentials(a, &server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            opened.server.as_str(),
            opened.username.as_str(),
            opened.password.as_str()
        ),
        ("127.0.0.1:5000", "ci-bot", password.as_str())
    );
    assert!(!format!("{opened:?}").contains(&password));
    let other = RegistryServer::parse("registry.example.com").unwrap();
    assert!(
        registry
            .pull_credentials(a, &other)
            .await
            .unwrap()
            .is_none()
    );
    let b = VendorId::parse(&b).unwrap();
    assert!(
        registry
            .pull_credentials(b, &server)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_demos_images_are_the_demo_vendors() {
    require_images();
    let app = TestApp::spawn().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox-images");
    let manifests = [
        root.join("csv-explorer/demo.json"),
        root.join("static-files/demo.json"),
    ];
    let key_file = app.data_dir.join("demo-vendor-key");
    let state = app.state();
    let seeded =
        testdrive::seed::apply(&state.registry, state.store.as_ref(), &manifests, &key_file)
            .await
            .unwrap();
    assert_eq!(seeded.registered, ["csv-explorer", "static-files"]);
    let key = seeded
        .new_vendor_key
        .expect("a new vendor")
        .expose()
        .to_string();
    let vendor = app.vendor_of(&key).await;
    assert_eq!(
        given(&app, &vendor, &key).await,
        [CSV_EXPLORER, STATIC_FILES]
    );

    // Its key changes its demos as any vendor's does, images included.
    let demos = json_of(app.get("/v1/demos", Some(&key)).await, StatusCode::OK).await;
    let csv = demos["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["slug"] == "csv-explorer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/demos/{csv}");
    for image in [STATIC_FILES, CSV_EXPLORER] {
        let res = send(
            &app,
            Method::PATCH,
            &path,
            &key,
            Some(json!({"image": image})),
        )
        .await;
        assert_eq!(json_of(res, StatusCode::OK).await["image"], image);
    }

    // Seeding again changes nothing.
    let again =
        testdrive::seed::apply(&state.registry, state.store.as_ref(), &manifests, &key_file)
            .await
            .unwrap();
    assert!(again.registered.is_empty() && again.new_vendor_key.is_none());
    assert_eq!(
        given(&app, &vendor, &key).await,
        [CSV_EXPLORER, STATIC_FILES]
    );
}
