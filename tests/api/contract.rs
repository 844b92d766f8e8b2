//! The HTTP contract, route by route: every status the contract names comes back as a problem
//! document (`application/problem+json`) with the exact code, the right caller sees the right
//! thing, and a refused upload leaves nothing behind — no spooled file, no Engine object, no
//! sandbox record.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const CSV: &[u8] = b"x,y\n1,2\n";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A request with an optional bearer token and an optional JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut req = app.http.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

/// `PATCH` with a JSON body.
async fn patch(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> Response {
    call(app, Method::PATCH, path, token, Some(&body)).await
}

/// A request whose body and content type are given as they are (or left out).
async fn call_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app.http.request(method, app.url(path)).body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        req = req.header(CONTENT_TYPE, content_type);
    }
    req.send().await.unwrap()
}

/// A request with this exact `Authorization` header value.
async fn get_with_authorization(app: &TestApp, path: &str, value: &[u8]) -> Response {
    app.http
        .get(app.url(path))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        )
        .send()
        .await
        .unwrap()
}

/// Asserts a JSON answer with this status and returns its body.
async fn json_body(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a problem document with this status that names `field`.
async fn problem_on(res: Response, status: StatusCode, field: &str) -> Value {
    let body = problem(res, status).await;
    assert_eq!(body["field"], field, "{body}");
    body
}

/// A `401` problem document with the challenge RFC 9110 requires.
async fn unauthorized(res: Response) -> Value {
    assert_eq!(
        res.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(b"Bearer".as_slice())
    );
    problem(res, StatusCode::UNAUTHORIZED).await
}

fn str_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

fn items(body: &Value) -> &Vec<Value> {
    body["items"].as_array().expect("an items list")
}

fn ids(body: &Value) -> Vec<&str> {
    items(body).iter().map(|i| str_of(i, "id")).collect()
}

/// Every sandbox the service knows, as the operator sees them.
async fn all_sandboxes(app: &TestApp) -> Value {
    json_body(
        app.get("/v1/sandboxes", Some(&app.admin)).await,
        StatusCode::OK,
    )
    .await
}

/// A refused creation: the exact status as a problem document, and nothing left behind.
async fn refused(app: &TestApp, res: Response, status: StatusCode) -> Value {
    let body = problem(res, status).await;
    app.assert_left_nothing().await;
    body
}

/// A ready sandbox of `demo` holding one small CSV: (id, token).
async fn sandbox_of(app: &TestApp, demo: &str) -> (String, String) {
    let body = app.ready_sandbox(demo, &[("a.csv", CSV.to_vec())]).await;
    (
        str_of(&body, "id").to_string(),
        str_of(&body, "token").to_string(),
    )
}

/// Ends the sandbox as `token` and checks that nothing of it remains on the Engine.
async fn end(app: &TestApp, id: &str, token: &str) -> Value {
    let ended = json_body(
        app.delete(&format!("/v1/sandboxes/{id}"), Some(token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
    assert_no_objects(id);
    ended
}

async fn status_of(app: &TestApp, id: &str, token: &str) -> String {
    let body = json_body(
        app.get(&format!("/v1/sandboxes/{id}"), Some(token)).await,
        StatusCode::OK,
    )
    .await;
    str_of(&body, "status").to_string()
}

/// The smallest manifest the contract accepts, for the static-files image.
fn minimal_manifest(slug: &str) -> Value {
    json!({"slug": slug, "title": "Static files", "image": STATIC_FILES,
           "port": 8080, "data_path": "/data"})
}

async fn catalog_ids(app: &TestApp) -> Vec<String> {
    let body = json_body(app.get("/v1/catalog", None).await, StatusCode::OK).await;
    ids(&body).into_iter().map(str::to_string).collect()
}

/// A `multipart/form-data` body written byte by byte, so file names reach the service exactly
/// as given (reqwest escapes some) and malformed bodies can be sent.
struct RawForm(Vec<u8>);

const BOUNDARY: &str = "contract-test-boundary-7MA4YWxkTrZu0gW";

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

impl RawForm {
    fn new() -> Self {
        RawForm(Vec::new())
    }

    /// Opens a part: the boundary and its headers; its content follows.
    fn begin(mut self, disposition: &[u8]) -> Self {
        self.0
            .extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: ").as_bytes());
        self.0.extend_from_slice(disposition);
        self.0.extend_from_slice(b"\r\n\r\n");
        self
    }

    fn part(self, disposition: &[u8], content: &[u8]) -> Self {
        let mut form = self.begin(disposition);
        form.0.extend_from_slice(content);
        form.0.extend_from_slice(b"\r\n");
        form
    }

    fn field(self, name: &str, value: &str) -> Self {
        self.part(
            format!("form-data; name=\"{name}\"").as_bytes(),
            value.as_bytes(),
        )
    }

    fn file_disposition(file_name: &[u8]) -> Vec<u8> {
        let mut disposition = b"form-data; name=\"file\"; filename=\"".to_vec();
        disposition.extend_from_slice(file_name);
        disposition.push(b'"');
        disposition
    }

    fn file(self, file_name: &[u8], content: &[u8]) -> Self {
        self.part(&Self::file_disposition(file_name), content)
    }

    /// Opens a file part whose content the caller sends after these bytes.
    fn begin_file(self, file_name: &[u8]) -> Self {
        self.begin(&Self::file_disposition(file_name))
    }

    fn finish(mut self) -> Vec<u8> {
        self.0
            .extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.0
    }
}

/// `POST /v1/sandboxes{query}` with a hand-written multipart body.
async fn post_form(app: &TestApp, query: &str, body: impl Into<reqwest::Body>) -> Response {
    call_raw(
        app,
        Method::POST,
        &format!("/v1/sandboxes{query}"),
        None,
        Some(&multipart_type()),
        body,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_missing_or_unknown_tokens_are_401() {
    let app = TestApp::spawn().await;
    let (vendor_id, key) = app.vendor("Acme").await;
    let forged_vendor = format!("tdv_{}_not-the-secret", vendor_id.replace('-', ""));
    let unknown_vendor = format!("tdv_{}_whatever", uuid::Uuid::now_v7().simple());
    let unknown_sandbox = format!("tds_{}_whatever", uuid::Uuid::now_v7().simple());
    let almost_admin = format!("{}x", app.admin);
    let almost_key = format!("{key}x");
    let sandbox_path = format!("/v1/sandboxes/{}", uuid::Uuid::now_v7());
    let routes = [
        "/v1/vendors",
        "/v1/demos",
        "/v1/sandboxes",
        sandbox_path.as_str(),
        "/metrics",
    ];
    for path in routes {
        unauthorized(app.get(path, None).await).await;
        for token in [
            "nonsense",
            forged_vendor.as_str(),
            unknown_vendor.as_str(),
            unknown_sandbox.as_str(),
            almost_admin.as_str(),
            almost_key.as_str(),
        ] {
            let body = unauthorized(app.get(path, Some(token)).await).await;
            assert_eq!(body["type"], "urn:testdrive:problem:unauthorized", "{path}");
        }
    }
    // Writes too: the token is checked before anything else.
    let res = app
        .post_json("/v1/vendors", None, &json!({"name": "Nobody"}))
        .await;
    unauthorized(res).await;
    let res = app
        .post_json("/v1/demos", Some("nonsense"), &minimal_manifest("x"))
        .await;
    unauthorized(res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_malformed_bearer_headers_are_401() {
    let app = TestApp::spawn().await;
    let admin = app.admin.clone();
    let malformed: Vec<Vec<u8>> = vec![
        b"Bearer".to_vec(),
        b"Bearer ".to_vec(),
        b"Bearer     ".to_vec(),
        format!("Basic {admin}").into_bytes(),
        format!("Token {admin}").into_bytes(),
        format!("Bearer{admin}").into_bytes(),
        admin.clone().into_bytes(),
        // Not visible ASCII: the header cannot even be read as text.
        [b"Bearer ".as_slice(), admin.as_bytes(), b"\xff"].concat(),
    ];
    for value in malformed {
        let res = get_with_authorization(&app, "/v1/vendors", &value).await;
        let shown = String::from_utf8_lossy(&value).to_string();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{shown:?}");
        unauthorized(res).await;
    }
    // The scheme is case-insensitive: the same token with a lower-case scheme works.
    let res =
        get_with_authorization(&app, "/v1/vendors", format!("bearer {admin}").as_bytes()).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_vendor_keys_and_sandbox_tokens_are_403_on_admin_routes() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let (id, token) = sandbox_of(&app, &demo).await;
    for caller in [key.as_str(), token.as_str()] {
        let res = app
            .post_json("/v1/vendors", Some(caller), &json!({"name": "Sneaky"}))
            .await;
        problem(res, StatusCode::FORBIDDEN).await;
        problem(
            app.get("/v1/vendors", Some(caller)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        let body = problem(
            app.get("/metrics", Some(caller)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(body["type"], "urn:testdrive:problem:forbidden");
    }
    // Nothing was created by the refused calls.
    let vendors = json_body(
        app.get("/v1/vendors", Some(&app.admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(items(&vendors).len(), 1, "{vendors}");
    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sandbox_tokens_are_403_on_demo_routes_and_the_sandbox_list() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let t = Some(token.as_str());
    let demo_path = format!("/v1/demos/{demo}");
    problem(app.get("/v1/demos", t).await, StatusCode::FORBIDDEN).await;
    let res = app
        .post_json("/v1/demos", t, &minimal_manifest("mine"))
        .await;
    problem(res, StatusCode::FORBIDDEN).await;
    problem(app.get(&demo_path, t).await, StatusCode::FORBIDDEN).await;
    let res = patch(&app, &demo_path, t, json!({"title": "Mine now"})).await;
    problem(res, StatusCode::FORBIDDEN).await;
    problem(app.delete(&demo_path, t).await, StatusCode::FORBIDDEN).await;
    problem(app.get("/v1/sandboxes", t).await, StatusCode::FORBIDDEN).await;
    let res = app.get(&format!("/v1/sandboxes?demo={demo}"), t).await;
    problem(res, StatusCode::FORBIDDEN).await;
    // The demo is untouched and still in the catalog.
    assert_eq!(catalog_ids(&app).await, vec![demo.clone()]);
    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_another_vendors_demo_is_404() {
    let app = TestApp::spawn().await;
    let (key_a, demo) = app.static_demo(json!({})).await;
    let (_, key_b) = app.vendor("Vendor B").await;
    let path = format!("/v1/demos/{demo}");
    let b = Some(key_b.as_str());
    let body = problem(app.get(&path, b).await, StatusCode::NOT_FOUND).await;
    // Indistinguishable from a demo that does not exist.
    let missing = problem(
        app.get(&format!("/v1/demos/{}", uuid::Uuid::now_v7()), b)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(body, missing);
    let res = patch(&app, &path, b, json!({"title": "Taken over"})).await;
    problem(res, StatusCode::NOT_FOUND).await;
    problem(app.delete(&path, b).await, StatusCode::NOT_FOUND).await;
    let listed = json_body(app.get("/v1/demos", b).await, StatusCode::OK).await;
    assert!(items(&listed).is_empty(), "{listed}");

    // A's demo is as it was; A and the operator see it.
    let seen = json_body(app.get(&path, Some(&key_a)).await, StatusCode::OK).await;
    assert_eq!(seen["title"], "Static files");
    assert_eq!(seen["enabled"], true);
    let all = json_body(app.get("/v1/demos", Some(&app.admin)).await, StatusCode::OK).await;
    assert_eq!(ids(&all), vec![demo.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_another_vendors_sandbox_is_404() {
    let app = TestApp::spawn().await;
    let (key_a, demo) = app.static_demo(json!({})).await;
    let (_, key_b) = app.vendor("Vendor B").await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let b = Some(key_b.as_str());
    let path = format!("/v1/sandboxes/{id}");
    problem(app.get(&path, b).await, StatusCode::NOT_FOUND).await;
    problem(
        app.get(&format!("{path}/events"), b).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let res = app
        .post_json(&format!("{path}/extend"), b, &json!({"seconds": 60}))
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    problem(app.delete(&path, b).await, StatusCode::NOT_FOUND).await;
    let listed = json_body(app.get("/v1/sandboxes", b).await, StatusCode::OK).await;
    assert!(items(&listed).is_empty(), "{listed}");

    // Untouched: still ready, deadline unchanged, and A lists it.
    assert_eq!(status_of(&app, &id, &token).await, "ready");
    let events = app.events(&id, &token).await;
    assert!(events.iter().all(|e| e["kind"] != "extended"), "{events:?}");
    let listed = json_body(app.get("/v1/sandboxes", Some(&key_a)).await, StatusCode::OK).await;
    assert_eq!(ids(&listed), vec![id.as_str()]);
    end(&app, &id, &key_a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_one_sandboxs_token_is_404_on_another_sandbox() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (x, x_token) = sandbox_of(&app, &demo).await;
    let (y, y_token) = sandbox_of(&app, &demo).await;
    let with_x = Some(x_token.as_str());
    let path = format!("/v1/sandboxes/{y}");
    problem(app.get(&path, with_x).await, StatusCode::NOT_FOUND).await;
    problem(
        app.get(&format!("{path}/events"), with_x).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let res = app
        .post_json(&format!("{path}/extend"), with_x, &json!({"seconds": 60}))
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    problem(app.delete(&path, with_x).await, StatusCode::NOT_FOUND).await;
    // …and it does not open Y through the proxy either.
    unauthorized(app.get(&format!("/s/{y}/a.csv"), with_x).await).await;
    assert_eq!(status_of(&app, &y, &y_token).await, "ready");
    end(&app, &x, &x_token).await;
    end(&app, &y, &y_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_only_the_vendor_and_operators_see_the_prospect() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let res = app
        .create_sandbox(
            &demo,
            &[("a.csv", CSV.to_vec())],
            &[
                ("email", "ana@example.com"),
                ("company", "Initech"),
                ("needs", "Regions"),
            ],
            Some(60),
        )
        .await;
    let created = json_body(res, StatusCode::CREATED).await;
    assert!(created.get("prospect").is_none(), "{created}");
    let id = str_of(&created, "id").to_string();
    let token = str_of(&created, "token").to_string();
    let path = format!("/v1/sandboxes/{id}");
    let sheet = json!({"email": "ana@example.com", "company": "Initech", "needs": "Regions"});

    let own = json_body(app.get(&path, Some(&token)).await, StatusCode::OK).await;
    assert!(own.get("prospect").is_none(), "{own}");
    let extended = json_body(
        app.post_json(
            &format!("{path}/extend"),
            Some(&token),
            &json!({"seconds": 60}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(extended.get("prospect").is_none(), "{extended}");

    for caller in [key.as_str(), app.admin.as_str()] {
        let seen = json_body(app.get(&path, Some(caller)).await, StatusCode::OK).await;
        assert_eq!(seen["prospect"], sheet);
        let listed = json_body(app.get("/v1/sandboxes", Some(caller)).await, StatusCode::OK).await;
        assert_eq!(items(&listed)[0]["prospect"], sheet);
    }
    let ended = end(&app, &id, &token).await;
    assert!(ended.get("prospect").is_none(), "{ended}");
}

// ---------------------------------------------------------------------------------------------
// Vendors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_are_created_with_a_key_shown_once() {
    let app = TestApp::spawn().await;
    let res = app
        .post_json(
            "/v1/vendors",
            Some(&app.admin),
            &json!({"name": "  Acme Analytics "}),
        )
        .await;
    let location = res.headers()[LOCATION].to_str().unwrap().to_string();
    let created = json_body(res, StatusCode::CREATED).await;
    let id = str_of(&created, "id");
    assert_eq!(location, format!("/v1/vendors/{id}"));
    assert_eq!(created["name"], "Acme Analytics");
    assert!(created["created_at"].is_string());
    let key = str_of(&created, "api_key");
    assert!(key.starts_with("tdv_"), "{key}");

    // The key works, and is never shown again.
    let demos = json_body(app.get("/v1/demos", Some(key)).await, StatusCode::OK).await;
    assert!(items(&demos).is_empty());
    let listed = json_body(
        app.get("/v1/vendors", Some(&app.admin)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&listed), vec![id]);
    let entry = items(&listed)[0].as_object().unwrap();
    let mut fields: Vec<&str> = entry.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["created_at", "id", "name"]);
    assert!(!listed.to_string().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_are_readable_by_operators_and_themselves_only() {
    let app = TestApp::spawn().await;
    let (a, a_key) = app.vendor("Vendor A").await;
    let (_, b_key) = app.vendor("Vendor B").await;
    let path = format!("/v1/vendors/{a}");
    let seen = json_body(app.get(&path, Some(&app.admin)).await, StatusCode::OK).await;
    assert_eq!(seen["name"], "Vendor A");
    assert!(seen.get("api_key").is_none());
    let own = json_body(app.get(&path, Some(&a_key)).await, StatusCode::OK).await;
    assert_eq!(own["id"], a.as_str());
    problem(app.get(&path, Some(&b_key)).await, StatusCode::NOT_FOUND).await;
    problem(
        app.get("/v1/vendors/not-a-uuid", Some(&app.admin)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    unauthorized(app.get(&path, None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for body in [r#"{"name": "#, "not json", r#"{"name": "a"} trailing"#, ""] {
        let res = call_raw(
            &app,
            Method::POST,
            "/v1/vendors",
            Some(&app.admin),
            Some("application/json"),
            body,
        )
        .await;
        let problem = problem(res, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["type"], "urn:testdrive:problem:malformed-request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_non_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    let body = r#"{"name": "Acme"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let res = call_raw(
            &app,
            Method::POST,
            "/v1/vendors",
            Some(&app.admin),
            content_type,
            body,
        )
        .await;
        problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let listed = json_body(
        app.get("/v1/vendors", Some(&app.admin)).await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&listed).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_invalid_bodies_are_422() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "a\u{1b}[31m"}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "Acme", "plan": "gold"}), "body"),
        (json!({}), "body"),
        (json!({"name": 5}), "body"),
    ];
    for (body, field) in cases {
        let res = app.post_json("/v1/vendors", Some(&app.admin), &body).await;
        let problem = problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, field).await;
        assert_eq!(problem["type"], "urn:testdrive:problem:invalid", "{body}");
    }
    let listed = json_body(
        app.get("/v1/vendors", Some(&app.admin)).await,
        StatusCode::OK,
    )
    .await;
    assert!(items(&listed).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendors_duplicate_name_is_409() {
    let app = TestApp::spawn().await;
    app.vendor("Acme").await;
    let res = app
        .post_json("/v1/vendors", Some(&app.admin), &json!({"name": "Acme"}))
        .await;
    let body = problem(res, StatusCode::CONFLICT).await;
    assert_eq!(body["type"], "urn:testdrive:problem:conflict");
    // Trimmed before the comparison.
    let res = app
        .post_json("/v1/vendors", Some(&app.admin), &json!({"name": " Acme "}))
        .await;
    problem(res, StatusCode::CONFLICT).await;
}

// ---------------------------------------------------------------------------------------------
// Demos
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_are_created_with_defaults_filled_in() {
    let app = TestApp::spawn().await;
    let (vendor_id, key) = app.vendor("Acme").await;
    let res = app
        .post_json("/v1/demos", Some(&key), &minimal_manifest("files"))
        .await;
    let location = res.headers()[LOCATION].to_str().unwrap().to_string();
    let demo = json_body(res, StatusCode::CREATED).await;
    let id = str_of(&demo, "id");
    assert_eq!(location, format!("/v1/demos/{id}"));
    assert_eq!(demo["vendor_id"], vendor_id.as_str());
    assert_eq!(demo["enabled"], true);
    let expected = json!({
        "slug": "files", "title": "Static files", "description": "", "image": STATIC_FILES,
        "port": 8080, "data_path": "/data", "command": null, "env": {}, "load_command": null,
        "ready": {"http_path": "/", "timeout_seconds": 30},
        "limits": {"memory_mb": 256, "cpus": 0.5, "pids": 128, "disk_mb": 50 + 1024},
        "writable_paths": [],
        "trial": {"seconds": 1800, "max_seconds": 7200, "idle_seconds": null},
        "upload": {"max_bytes": 52428800, "max_files": 10, "extensions": []},
        "warm_pool": 0, "user": null, "max_sandboxes": null
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&demo[field], value, "{field}");
    }
    // What was answered is what is stored.
    let read = json_body(app.get(&location, Some(&key)).await, StatusCode::OK).await;
    assert_eq!(read, demo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_duplicate_slug_is_409_for_the_same_vendor_only() {
    let app = TestApp::spawn().await;
    let (_, key_a) = app.vendor("Vendor A").await;
    let (_, key_b) = app.vendor("Vendor B").await;
    app.demo(&key_a, minimal_manifest("files")).await;
    let res = app
        .post_json("/v1/demos", Some(&key_a), &minimal_manifest("files"))
        .await;
    problem(res, StatusCode::CONFLICT).await;
    // Another vendor may use the same slug.
    app.demo(&key_b, minimal_manifest("files")).await;
    let all = json_body(app.get("/v1/demos", Some(&app.admin)).await, StatusCode::OK).await;
    assert_eq!(items(&all).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_invalid_manifests_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme").await;
    let cases = [
        (json!({"slug": "CSV"}), "slug"),
        (json!({"slug": "a_b"}), "slug"),
        (json!({"slug": ""}), "slug"),
        (json!({"slug": "a".repeat(41)}), "slug"),
        (json!({"colour": "red"}), "body"),
        (json!({"limits": {"memory": 3}}), "body"),
        (json!({"port": -1}), "port"),
        (json!({"port": 0}), "port"),
        (json!({"port": 70000}), "port"),
        (json!({"port": u64::MAX}), "body"),
        (json!({"port": 8080.5}), "body"),
        (json!({"port": "8080"}), "body"),
        (json!({"limits": {"memory_mb": -256}}), "limits.memory_mb"),
        (
            json!({"limits": {"memory_mb": 1_000_000_000}}),
            "limits.memory_mb",
        ),
        (json!({"limits": {"cpus": 100.0}}), "limits.cpus"),
        (json!({"limits": {"pids": -1}}), "limits.pids"),
        (
            json!({"ready": {"timeout_seconds": -1}}),
            "ready.timeout_seconds",
        ),
        (
            json!({"ready": {"timeout_seconds": 1_000_000}}),
            "ready.timeout_seconds",
        ),
        (json!({"trial": {"seconds": -5}}), "trial.seconds"),
        (json!({"trial": {"seconds": 0}}), "trial.seconds"),
        (json!({"trial": {"seconds": i64::MAX}}), "trial.seconds"),
        (
            json!({"trial": {"seconds": 7200, "max_seconds": 7199}}),
            "trial.max_seconds",
        ),
        (
            json!({"trial": {"max_seconds": 2_592_001}}),
            "trial.max_seconds",
        ),
        (
            json!({"trial": {"seconds": 100, "max_seconds": 50}}),
            "trial.max_seconds",
        ),
        (json!({"upload": {"max_bytes": -1}}), "upload.max_bytes"),
        (
            json!({"upload": {"max_bytes": 1_i64 << 50}}),
            "upload.max_bytes",
        ),
        (json!({"upload": {"max_files": 0}}), "upload.max_files"),
        (
            json!({"upload": {"extensions": ["c s v"]}}),
            "upload.extensions",
        ),
        (json!({"warm_pool": -1}), "warm_pool"),
        (json!({"data_path": "data"}), "data_path"),
        (json!({"image": "not an image"}), "image"),
    ];
    for (overrides, field) in cases {
        let mut manifest = minimal_manifest("files");
        merge(&mut manifest, overrides.clone());
        let res = app.post_json("/v1/demos", Some(&key), &manifest).await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{overrides}"
        );
        let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{overrides}: {body}");
    }
    for required in ["slug", "title", "image", "port", "data_path"] {
        let mut manifest = minimal_manifest("files");
        manifest.as_object_mut().unwrap().remove(required);
        let res = app.post_json("/v1/demos", Some(&key), &manifest).await;
        let body = problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, required).await;
        assert!(str_of(&body, "detail").contains("required"), "{body}");
    }
    let listed = json_body(app.get("/v1/demos", Some(&key)).await, StatusCode::OK).await;
    assert!(items(&listed).is_empty(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_malformed_or_non_json_bodies_are_400_and_415() {
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme").await;
    let res = call_raw(
        &app,
        Method::POST,
        "/v1/demos",
        Some(&key),
        Some("application/json"),
        r#"{"slug": "files","#,
    )
    .await;
    problem(res, StatusCode::BAD_REQUEST).await;
    let res = call_raw(
        &app,
        Method::POST,
        "/v1/demos",
        Some(&key),
        Some("text/plain"),
        minimal_manifest("files").to_string(),
    )
    .await;
    problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_an_image_the_engine_lacks_is_422_on_image() {
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme").await;
    let mut manifest = minimal_manifest("files");
    manifest["image"] = json!("testdrive/no-such-image:404");
    let res = app.post_json("/v1/demos", Some(&key), &manifest).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "image").await;
    // Patching a demo onto a missing image is refused the same way.
    let demo = app.demo(&key, minimal_manifest("files")).await;
    let res = patch(
        &app,
        &format!("/v1/demos/{demo}"),
        Some(&key),
        json!({"image": "testdrive/no-such-image:404"}),
    )
    .await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_patch_merges_and_never_changes_the_slug() {
    let app = TestApp::spawn().await;
    let (key, demo) = app
        .static_demo(json!({"trial": {"seconds": 1200, "max_seconds": 3600}}))
        .await;
    let path = format!("/v1/demos/{demo}");
    let change = |body: Value| patch(&app, &path, Some(&key), body);

    let patched = json_body(
        change(json!({"trial": {"seconds": 600}})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        patched["trial"],
        json!({"seconds": 600, "max_seconds": 3600, "idle_seconds": null})
    );
    assert_eq!(patched["title"], "Static files");
    assert_eq!(patched["slug"], "files");
    // Sending the slug unchanged is fine; changing it is not.
    json_body(change(json!({"slug": "files"})).await, StatusCode::OK).await;
    problem_on(
        change(json!({"slug": "renamed"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "slug",
    )
    .await;
    // Removing a required field, a broken rule, an unknown field, a non-boolean `enabled`.
    problem_on(
        change(json!({"port": null})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "port",
    )
    .await;
    problem_on(
        change(json!({"trial": {"seconds": 3601}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "trial.max_seconds",
    )
    .await;
    problem_on(
        change(json!({"colour": "red"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body",
    )
    .await;
    problem_on(
        change(json!({"enabled": "no"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "enabled",
    )
    .await;
    problem_on(
        change(json!([1, 2])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "body",
    )
    .await;
    let res = call_raw(
        &app,
        Method::PATCH,
        &path,
        Some(&key),
        Some("application/json"),
        "{",
    )
    .await;
    problem(res, StatusCode::BAD_REQUEST).await;

    // None of the refused patches changed anything.
    let read = json_body(app.get(&path, Some(&key)).await, StatusCode::OK).await;
    assert_eq!(read["slug"], "files");
    assert_eq!(read["port"], 8080);
    assert_eq!(read["trial"]["seconds"], 600);
    assert_eq!(read["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_disabled_leave_the_catalog_and_take_no_sandboxes() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let path = format!("/v1/demos/{demo}");
    assert_eq!(catalog_ids(&app).await, vec![demo.clone()]);

    let res = patch(&app, &path, Some(&key), json!({"enabled": false})).await;
    let patched = json_body(res, StatusCode::OK).await;
    assert_eq!(patched["enabled"], false);
    assert!(catalog_ids(&app).await.is_empty());
    // The vendor still sees it.
    let read = json_body(app.get(&path, Some(&key)).await, StatusCode::OK).await;
    assert_eq!(read["enabled"], false);
    let res = app
        .create_sandbox(&demo, &[("a.csv", CSV.to_vec())], &[], None)
        .await;
    refused(&app, res, StatusCode::NOT_FOUND).await;

    // Enabled again, it is back.
    let res = patch(&app, &path, Some(&key), json!({"enabled": true})).await;
    json_body(res, StatusCode::OK).await;
    assert_eq!(catalog_ids(&app).await, vec![demo.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_delete_is_204_then_the_demo_is_gone() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let path = format!("/v1/demos/{demo}");
    let res = app.delete(&path, Some(&key)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap().is_empty());

    problem(app.get(&path, Some(&key)).await, StatusCode::NOT_FOUND).await;
    problem(
        app.get(&path, Some(&app.admin)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(app.delete(&path, Some(&key)).await, StatusCode::NOT_FOUND).await;
    let res = patch(&app, &path, Some(&key), json!({"title": "Back"})).await;
    problem(res, StatusCode::NOT_FOUND).await;
    assert!(catalog_ids(&app).await.is_empty());
    let listed = json_body(app.get("/v1/demos", Some(&key)).await, StatusCode::OK).await;
    assert!(items(&listed).is_empty());
    let res = app
        .create_sandbox(&demo, &[("a.csv", CSV.to_vec())], &[], None)
        .await;
    refused(&app, res, StatusCode::NOT_FOUND).await;
    // Its slug is free again.
    app.demo(&key, minimal_manifest("files")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_an_operator_must_name_the_vendor() {
    let app = TestApp::spawn().await;
    let (vendor_id, key) = app.vendor("Acme").await;
    let manifest = minimal_manifest("files");

    let res = app
        .post_json("/v1/demos", Some(&app.admin), &manifest)
        .await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "vendor_id").await;
    let unknown = format!("/v1/demos?vendor_id={}", uuid::Uuid::now_v7());
    let res = app.post_json(&unknown, Some(&app.admin), &manifest).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "vendor_id").await;
    let res = app
        .post_json("/v1/demos?vendor_id=nope", Some(&app.admin), &manifest)
        .await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "vendor_id").await;
    // A vendor cannot register for someone else, even itself by id.
    let own = format!("/v1/demos?vendor_id={vendor_id}");
    let res = app.post_json(&own, Some(&key), &manifest).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "vendor_id").await;
    let res = app
        .post_json("/v1/demos?owner=x", Some(&app.admin), &manifest)
        .await;
    problem(res, StatusCode::BAD_REQUEST).await;

    let res = app.post_json(&own, Some(&app.admin), &manifest).await;
    let demo = json_body(res, StatusCode::CREATED).await;
    assert_eq!(demo["vendor_id"], vendor_id.as_str());
    // It is the vendor's: the vendor sees it, the catalog names the vendor.
    let listed = json_body(app.get("/v1/demos", Some(&key)).await, StatusCode::OK).await;
    assert_eq!(ids(&listed), vec![str_of(&demo, "id")]);
    let catalog = json_body(app.get("/v1/catalog", None).await, StatusCode::OK).await;
    assert_eq!(items(&catalog)[0]["vendor"], "Acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_is_public_and_shows_only_what_prospects_need() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(
            json!({"description": "Browse files.", "env": {"SECRET": "x"},
                            "upload": {"extensions": ["csv"]}}),
        )
        .await;
    let catalog = json_body(app.get("/v1/catalog", None).await, StatusCode::OK).await;
    let entry = items(&catalog)[0].as_object().unwrap();
    let mut fields: Vec<&str> = entry.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "description",
            "id",
            "slug",
            "title",
            "trial",
            "upload",
            "vendor"
        ]
    );
    assert_eq!(entry["id"], demo.as_str());
    assert_eq!(entry["description"], "Browse files.");
    assert_eq!(entry["upload"]["extensions"], json!(["csv"]));
}

// ---------------------------------------------------------------------------------------------
// Sandbox creation: refusals leave nothing behind
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_for_an_unknown_demo_is_404() {
    let app = TestApp::spawn().await;
    app.static_demo(json!({})).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let res = app
        .create_sandbox(&unknown, &[("a.csv", CSV.to_vec())], &[], None)
        .await;
    refused(&app, res, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_malformed_or_missing_demo_is_422() {
    let app = TestApp::spawn().await;
    app.static_demo(json!({})).await;
    for malformed in ["not-a-uuid", "", &"1".repeat(65)] {
        let res = app
            .create_sandbox(malformed, &[("a.csv", CSV.to_vec())], &[], None)
            .await;
        let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "demo", "{malformed:?}: {body}");
    }
    // No demo field at all.
    let form = RawForm::new()
        .field("email", "ana@example.com")
        .field("seconds", "60");
    let res = post_form(&app, "", form.finish()).await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "demo");
    assert!(str_of(&body, "detail").contains("required"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_file_before_the_demo_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let form = RawForm::new().file(b"a.csv", CSV).field("demo", &demo);
    let res = post_form(&app, "", form.finish()).await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "demo");
    assert!(str_of(&body, "detail").contains("before"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_without_a_file_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let res = app
        .create_sandbox(&demo, &[], &[("email", "ana@example.com")], None)
        .await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "file");
    // A file part without a file name is no file either.
    let form = RawForm::new()
        .field("demo", &demo)
        .part(b"form-data; name=\"file\"", CSV);
    let res = post_form(&app, "", form.finish()).await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_over_the_demos_byte_limit_is_413() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"max_bytes": 1000}}))
        .await;
    let res = app
        .create_sandbox(&demo, &[("big.csv", vec![b'x'; 1001])], &[], None)
        .await;
    let body = refused(&app, res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body["type"], "urn:testdrive:problem:too-large");
    // The limit is on all files together.
    let res = app
        .create_sandbox(
            &demo,
            &[("a.csv", vec![b'x'; 600]), ("b.csv", vec![b'y'; 600])],
            &[],
            None,
        )
        .await;
    refused(&app, res, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_too_many_files_is_413() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({"upload": {"max_files": 2}})).await;
    let files: Vec<(&str, Vec<u8>)> = ["a.csv", "b.csv", "c.csv"]
        .into_iter()
        .map(|n| (n, CSV.to_vec()))
        .collect();
    let res = app.create_sandbox(&demo, &files, &[], None).await;
    let body = refused(&app, res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(str_of(&body, "detail").contains('2'), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_file_type_the_demo_refuses_is_415() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv", "json"]}}))
        .await;
    for name in ["notes.txt", "a.csv.exe", "csv", ".csv", "noextension"] {
        let res = app
            .create_sandbox(&demo, &[(name, CSV.to_vec())], &[], None)
            .await;
        let body = refused(&app, res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert_eq!(body["type"], "urn:testdrive:problem:unsupported-type");
    }
    // A refused file after an accepted one refuses the whole upload.
    let res = app
        .create_sandbox(
            &demo,
            &[("a.csv", CSV.to_vec()), ("b.exe", CSV.to_vec())],
            &[],
            None,
        )
        .await;
    refused(&app, res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_an_unsafe_file_name_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let long = [b"a".repeat(252), b".csv".to_vec()].concat();
    let long_multibyte = "é".repeat(128).into_bytes();
    let unsafe_names: Vec<Vec<u8>> = vec![
        b"a/b.csv".to_vec(),
        b"/etc/passwd".to_vec(),
        b"../escape.csv".to_vec(),
        b"a\\b.csv".to_vec(),
        b"C:\\x.csv".to_vec(),
        b"..".to_vec(),
        b".".to_vec(),
        b"tab\there.csv".to_vec(),
        "nel\u{85}.csv".as_bytes().to_vec(),
        "evil\u{202e}vsc.exe".as_bytes().to_vec(),
        b" lead.csv".to_vec(),
        long,
        long_multibyte,
    ];
    for name in unsafe_names {
        let form = RawForm::new().field("demo", &demo).file(&name, CSV);
        let res = post_form(&app, "", form.finish()).await;
        let shown = String::from_utf8_lossy(&name).to_string();
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{shown:?} was not refused as unsafe"
        );
        let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "file", "{shown:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_accepts_names_just_inside_the_rules() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let longest = format!("{}.csv", "a".repeat(251));
    assert_eq!(longest.len(), 255);
    let names = [longest.as_str(), "a..b.csv", "données été.csv", ".env"];
    let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (*n, CSV.to_vec())).collect();
    let created = app.ready_sandbox(&demo, &files).await;
    let stored: Vec<&str> = created["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| str_of(f, "name"))
        .collect();
    assert_eq!(stored, names);
    end(&app, str_of(&created, "id"), str_of(&created, "token")).await;
}

/// NUL and the other C0 control bytes but TAB, and DEL, cannot appear in a header field at
/// all (RFC 9110 field-value), so a part header carrying one raw is a malformed body, not a
/// file name: `400`. (Control characters a header can carry, TAB and C1 controls, are `422`
/// above; HTML form clients percent-encode the others, which then arrive as a harmless name.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_raw_nul_or_control_byte_in_a_part_header_is_400() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    for name in [
        b"a\0b.csv".as_slice(),
        b"a\x01b.csv",
        b"a\x1bb.csv",
        b"a\x7fb.csv",
    ] {
        let form = RawForm::new().field("demo", &demo).file(name, CSV);
        let res = post_form(&app, "", form.finish()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name:?}");
        refused(&app, res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_duplicate_file_names_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let res = app
        .create_sandbox(
            &demo,
            &[("a.csv", CSV.to_vec()), ("a.csv", b"other\n".to_vec())],
            &[],
            None,
        )
        .await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_an_empty_file_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let res = app
        .create_sandbox(
            &demo,
            &[("a.csv", CSV.to_vec()), ("empty.csv", Vec::new())],
            &[],
            None,
        )
        .await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_non_multipart_body_is_415() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let res = app
        .post_json("/v1/sandboxes", None, &json!({"demo": demo}))
        .await;
    refused(&app, res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let form = format!("demo={demo}");
    for content_type in [Some("application/x-www-form-urlencoded"), None] {
        let res = call_raw(
            &app,
            Method::POST,
            "/v1/sandboxes",
            None,
            content_type,
            form.clone(),
        )
        .await;
        refused(&app, res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_bad_seconds_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"trial": {"seconds": 600, "max_seconds": 3600}}))
        .await;
    for seconds in [
        "0",
        "-5",
        "3601",
        "ten",
        "1e3",
        "60.5",
        "99999999999999999999",
    ] {
        let res = app
            .create_sandbox(
                &demo,
                &[("a.csv", CSV.to_vec())],
                &[("seconds", seconds)],
                None,
            )
            .await;
        let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "seconds", "{seconds}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_an_unknown_or_invalid_form_field_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let cases = [
        ("plan", "gold", "plan"),
        ("email", "not-an-address", "email"),
        ("company", "x\u{7}y", "company"),
    ];
    for (name, value, field) in cases {
        let res = app
            .create_sandbox(&demo, &[("a.csv", CSV.to_vec())], &[(name, value)], None)
            .await;
        let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{body}");
    }
    // The demo given twice.
    let form = RawForm::new()
        .field("demo", &demo)
        .field("demo", &demo)
        .file(b"a.csv", CSV);
    let res = post_form(&app, "", form.finish()).await;
    let body = refused(&app, res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_bad_query_is_refused_before_the_upload() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    // A value of the wrong type is invalid (422, like a JSON body's); a parameter the route
    // does not take is malformed (400). Either way the upload is not read.
    for (query, status, kind) in [
        ("?wait=abc", StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("?wait=-1", StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("?wait=1.5", StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ("?later=1", StatusCode::BAD_REQUEST, "malformed-request"),
    ] {
        let form = RawForm::new().field("demo", &demo).file(b"a.csv", CSV);
        let res = post_form(&app, query, form.finish()).await;
        let body = refused(&app, res, status).await;
        assert_eq!(
            body["type"],
            format!("urn:testdrive:problem:{kind}"),
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_a_malformed_multipart_body_is_400() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let complete = RawForm::new()
        .field("demo", &demo)
        .file(b"a.csv", CSV)
        .finish();
    // Cut inside the file, after the demo field: the spool was opened, and must go again.
    let truncated = complete[..complete.len() - 20].to_vec();
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        (
            "garbage",
            Some(multipart_type()),
            b"\x00\x01garbage\xff".to_vec(),
        ),
        ("truncated", Some(multipart_type()), truncated),
        ("no closing boundary", Some(multipart_type()), {
            let mut b = complete.clone();
            b.truncate(complete.len() - (BOUNDARY.len() + 6));
            b
        }),
        (
            "no boundary",
            Some("multipart/form-data".to_string()),
            complete.clone(),
        ),
        (
            "another boundary",
            Some("multipart/form-data; boundary=other".to_string()),
            complete.clone(),
        ),
        ("empty", Some(multipart_type()), Vec::new()),
    ];
    for (what, content_type, body) in cases {
        let res = call_raw(
            &app,
            Method::POST,
            "/v1/sandboxes",
            None,
            content_type.as_deref(),
            body,
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        refused(&app, res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stops_reading_an_upload_over_the_limit() {
    const LIMIT: usize = 1 << 20;
    const SENT: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"max_bytes": LIMIT}}))
        .await;
    let head = RawForm::new()
        .field("demo", &demo)
        .begin_file(b"huge.csv")
        .0;
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let content = stream::iter(0..SENT / CHUNK).map(move |_| {
        counter.fetch_add(CHUNK, Ordering::SeqCst);
        chunk.clone()
    });
    let body = stream::once(async move { Bytes::from(head) })
        .chain(content)
        .chain(stream::once(async move { Bytes::from(tail) }))
        .map(Ok::<Bytes, std::io::Error>);

    let answer = app
        .http
        .post(app.url("/v1/sandboxes"))
        .header(CONTENT_TYPE, multipart_type())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let pulled = pulled.load(Ordering::SeqCst);
    match answer {
        Ok(res) => {
            problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        // The service may close the connection once it has answered; the client, still
        // sending, can then see the reset before the answer.
        Err(err) => eprintln!("upload over the limit: the connection closed: {err:?}"),
    }
    eprintln!("upload over the limit: the client sent {pulled} of {SENT} bytes");
    assert!(
        pulled < SENT / 2,
        "the service read {pulled} bytes of a {SENT}-byte upload with a {LIMIT}-byte limit"
    );
    app.assert_left_nothing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_over_the_services_request_limit_is_413() {
    // The whole request may be at most policy.max_upload_bytes + 1 MiB: here the form's text
    // fields use up that slack, so the request limit runs out inside a file the demo allows.
    const MAX: usize = 2 << 20;
    let app = TestApp::spawn_with(|c| c.policy.max_upload_bytes = MAX as u64).await;
    let (_, demo) = app.static_demo(json!({"upload": {"max_bytes": MAX}})).await;
    let mut form = RawForm::new().field("demo", &demo);
    let needs = "n".repeat(3_900);
    for _ in 0..300 {
        form = form.field("needs", &needs);
    }
    let body = form.file(b"big.csv", &vec![b'x'; MAX - 1024]).finish();
    refused(
        &app,
        post_form(&app, "", body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_at_capacity_is_429_with_retry_after_until_a_place_frees() {
    let app = TestApp::spawn_with(|c| c.max_sandboxes = 1).await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (first, first_token) = sandbox_of(&app, &demo).await;

    let res = app
        .create_sandbox(&demo, &[("b.csv", CSV.to_vec())], &[], None)
        .await;
    let retry_after: u64 = res
        .headers()
        .get(RETRY_AFTER)
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);
    let body = problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:testdrive:problem:capacity");
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());
    let all = all_sandboxes(&app).await;
    assert_eq!(ids(&all), vec![first.as_str()]);

    end(&app, &first, &first_token).await;
    let (second, second_token) = sandbox_of(&app, &demo).await;
    end(&app, &second, &second_token).await;
    assert!(app.instance_objects().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Reading, listing, extending, ending
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_unknown_or_malformed_ids_are_404() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid"] {
        let path = format!("/v1/sandboxes/{id}");
        let admin = Some(app.admin.as_str());
        problem(app.get(&path, admin).await, StatusCode::NOT_FOUND).await;
        problem(
            app.get(&format!("{path}/events"), admin).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let res = app
            .post_json(&format!("{path}/extend"), admin, &json!({"seconds": 60}))
            .await;
        problem(res, StatusCode::NOT_FOUND).await;
        problem(app.delete(&path, admin).await, StatusCode::NOT_FOUND).await;
        problem(
            app.get(&format!("/v1/demos/{id}"), admin).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_list_filters_are_checked() {
    let app = TestApp::spawn().await;
    let admin = Some(app.admin.as_str());
    let res = app.get("/v1/sandboxes?status=READY", admin).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "status").await;
    let res = app.get("/v1/sandboxes?demo=nope", admin).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "demo").await;
    let res = app.get("/v1/sandboxes?colour=red", admin).await;
    problem(res, StatusCode::BAD_REQUEST).await;
    let res = app.get("/v1/sandboxes?status=ended", admin).await;
    assert!(items(&json_body(res, StatusCode::OK).await).is_empty());
}

/// Follows `next` from `first` to the end; the ids of every page, in order.
async fn follow_pages(app: &TestApp, first: &str, token: Option<&str>) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut link = Some(first.to_string());
    while let Some(path) = link {
        let body = json_body(app.get(&path, token).await, StatusCode::OK).await;
        pages.push(ids(&body).iter().map(|s| s.to_string()).collect());
        link = body["next"].as_str().map(str::to_string);
        assert!(pages.len() <= 10, "the pages never end: {body}");
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages_linked_by_next() {
    let app = TestApp::spawn().await;
    let admin = Some(app.admin.as_str());
    for n in 0..5 {
        app.vendor(&format!("Pager {n}")).await;
    }
    let whole = json_body(app.get("/v1/vendors", admin).await, StatusCode::OK).await;
    assert_eq!(whole["next"], Value::Null, "{whole}");
    let all: Vec<String> = ids(&whole).iter().map(|s| s.to_string()).collect();
    assert!(all.len() >= 5);
    let pages = follow_pages(&app, "/v1/vendors?limit=2", admin).await;
    assert!(
        pages.iter().all(|p| p.len() <= 2 && !p.is_empty()),
        "{pages:?}"
    );
    assert_eq!(pages.concat(), all, "paging neither skips nor repeats");

    // Sandboxes, newest first, with the filters carried in `next`.
    let (_, demo) = app.static_demo(json!({})).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(sandbox_of(&app, &demo).await);
    }
    let pages = follow_pages(&app, &format!("/v1/sandboxes?demo={demo}&limit=2"), admin).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let mut newest_first: Vec<String> = made.iter().map(|(id, _)| id.clone()).collect();
    newest_first.reverse();
    assert_eq!(pages.concat(), newest_first);
    let first = json_body(
        app.get(&format!("/v1/sandboxes?demo={demo}&limit=2"), admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let next = first["next"].as_str().unwrap();
    assert!(next.contains(&format!("demo={demo}")), "{next}");
    for (id, token) in &made {
        end(&app, id, token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_mistakes_are_answered_in_the_api_words() {
    let app = TestApp::spawn().await;
    let admin = Some(app.admin.as_str());
    for limit in ["", "0", "1001", "ten"] {
        let res = app
            .get(&format!("/v1/sandboxes?limit={limit}"), admin)
            .await;
        let body = problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "limit").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("whole number from 1 to 1000"),
            "{body}"
        );
    }
    let res = app.get("/v1/vendors?after=somewhere", admin).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "after").await;
    let res = app.get("/v1/sandboxes?stauts=ready", admin).await;
    let body = problem(res, StatusCode::BAD_REQUEST).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`stauts` is not a query parameter of this route")
            && detail.contains("`status`"),
        "{body}"
    );
    let res = app.get("/v1/sandboxes?limit=1&limit=2", admin).await;
    let body = problem(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("more than once"),
        "{body}"
    );
    let res = app.get("/v1/catalog?limit=5", None).await;
    let body = problem(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("it takes none"),
        "{body}"
    );
    let res = app.get("/v1/sandboxes?wait=x", admin).await;
    let body = problem(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`wait` is not a query parameter")
    );
    let res = app
        .post_json("/v1/sandboxes?wait=soon", None, &json!({}))
        .await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "wait").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_with_bad_seconds_is_422() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"trial": {"seconds": 1800, "max_seconds": 3600}}))
        .await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let path = format!("/v1/sandboxes/{id}/extend");
    let extend = {
        let (app, path, token) = (&app, &path, &token);
        move |body: Value| async move { app.post_json(path, Some(token), &body).await }
    };
    for seconds in [json!(0), json!(-60), json!(3601), json!(i64::MAX)] {
        let res = extend(json!({ "seconds": seconds })).await;
        problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "seconds").await;
    }
    // Wrong shapes.
    for body in [
        json!({"seconds": "600"}),
        json!({"seconds": 60.5}),
        json!({}),
        json!({"seconds": 60, "reason": "more"}),
    ] {
        let res = extend(body.clone()).await;
        problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Up to max_seconds from creation exactly, then not a second more.
    let res = extend(json!({"seconds": 1800})).await;
    let extended = json_body(res, StatusCode::OK).await;
    let lifetime = time_between(&extended, "created_at", "expires_at");
    assert_eq!(lifetime, 3600);
    let res = extend(json!({"seconds": 1})).await;
    problem_on(res, StatusCode::UNPROCESSABLE_ENTITY, "seconds").await;
    let events = app.events(&id, &token).await;
    let extensions = events.iter().filter(|e| e["kind"] == "extended").count();
    assert_eq!(extensions, 1, "{events:?}");
    end(&app, &id, &token).await;
}

/// Whole seconds between two RFC 3339 timestamps of a record.
fn time_between(record: &Value, from: &str, to: &str) -> i64 {
    let at = |field: &str| {
        time::OffsetDateTime::parse(
            str_of(record, field),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    (at(to) - at(from)).whole_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_with_a_malformed_body_is_400_or_415() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let path = format!("/v1/sandboxes/{id}/extend");
    for body in ["{\"seconds\": ", "seconds=60", ""] {
        let res = call_raw(
            &app,
            Method::POST,
            &path,
            Some(&token),
            Some("application/json"),
            body,
        )
        .await;
        problem(res, StatusCode::BAD_REQUEST).await;
    }
    let res = call_raw(
        &app,
        Method::POST,
        &path,
        Some(&token),
        Some("text/plain"),
        r#"{"seconds": 60}"#,
    )
    .await;
    problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    end(&app, &id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_after_the_end_is_409() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let ended = end(&app, &id, &key).await;
    assert_eq!(ended["end_reason"], "ended_by_vendor");
    for caller in [token.as_str(), key.as_str(), app.admin.as_str()] {
        let res = app
            .post_json(
                &format!("/v1/sandboxes/{id}/extend"),
                Some(caller),
                &json!({"seconds": 60}),
            )
            .await;
        let body = problem(res, StatusCode::CONFLICT).await;
        assert_eq!(body["type"], "urn:testdrive:problem:conflict");
    }
    // The record stays readable and unchanged.
    let read = json_body(
        app.get(&format!("/v1/sandboxes/{id}"), Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["expires_at"], ended["expires_at"]);
    assert_eq!(read["status"], "ended");
}

// ---------------------------------------------------------------------------------------------
// Opening a sandbox
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_to_the_trailing_slash_with_308() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::now_v7();
    let res = app.get(&format!("/s/{id}"), None).await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[LOCATION], format!("/s/{id}/").as_str());
    let res = app.get(&format!("/s/{id}?a=1&b=2"), None).await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        res.headers()[LOCATION],
        format!("/s/{id}/?a=1&b=2").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_an_unknown_sandbox_looks_like_a_locked_one() {
    // Without this sandbox's token, an id that does not exist and one that does answer
    // alike (401), so probing ids tells nothing; a malformed id names nothing (404).
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for path in [format!("/s/{unknown}/"), format!("/s/{unknown}/a.csv")] {
        unauthorized(app.get(&path, None).await).await;
        unauthorized(app.get(&path, Some(&app.admin)).await).await;
    }
    let res = app.get(&format!("/s/{unknown}/?token=tds_x_y"), None).await;
    unauthorized(res).await;
    problem(app.get("/s/not-a-uuid/", None).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_without_or_with_a_wrong_token_is_401() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let (id, token) = sandbox_of(&app, &demo).await;
    let root = format!("/s/{id}/");
    let file = format!("/s/{id}/a.csv");
    unauthorized(app.get(&root, None).await).await;
    unauthorized(app.get(&file, None).await).await;
    let wrong = format!("{token}x");
    for bad in [wrong.as_str(), key.as_str(), app.admin.as_str(), "nonsense"] {
        unauthorized(app.get(&file, Some(bad)).await).await;
        let res = app.get(&format!("{root}?token={bad}"), None).await;
        assert!(res.headers().get("set-cookie").is_none());
        unauthorized(res).await;
    }
    let res = app
        .http
        .get(app.url(&file))
        .header("cookie", format!("testdrive_sandbox={wrong}"))
        .send()
        .await
        .unwrap();
    unauthorized(res).await;
    // The right token opens it.
    let res = app.get(&file, Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), CSV);
    end(&app, &id, &token).await;
}

// ---------------------------------------------------------------------------------------------
// Operations, the OpenAPI document, routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_200() {
    let app = TestApp::spawn().await;
    let health = json_body(app.get("/healthz", None).await, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let ready = json_body(app.get("/readyz", None).await, StatusCode::OK).await;
    assert_eq!(ready, json!({"database": "ok", "engine": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_and_are_prefixed() {
    let app = TestApp::spawn().await;
    let (key, _) = app.static_demo(json!({})).await;
    unauthorized(app.get("/metrics", None).await).await;
    problem(app.get("/metrics", Some(&key)).await, StatusCode::FORBIDDEN).await;
    let res = app.get("/metrics", Some(&app.admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    for expected in [
        "testdrive_sandboxes_running",
        "testdrive_sandboxes_sleeping",
        "testdrive_sandboxes_running_capacity",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {text}");
    }
    for name in names {
        assert!(name.starts_with("testdrive_"), "{name} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_paths() {
    let app = TestApp::spawn().await;
    let doc = json_body(app.get("/openapi.json", None).await, StatusCode::OK).await;
    assert!(str_of(&doc, "openapi").starts_with('3'), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/v1/vendors", &["get", "post"][..]),
        ("/v1/vendors/{id}/registries", &["get"]),
        ("/v1/vendors/{id}/registries/{server}", &["delete", "put"]),
        ("/v1/vendors/{id}/images", &["get", "post"]),
        ("/v1/demos", &["get", "post"]),
        ("/v1/demos/{id}", &["delete", "get", "patch"]),
        ("/v1/catalog", &["get"]),
        ("/v1/sandboxes", &["get", "post"]),
        ("/v1/sandboxes/{id}", &["delete", "get"]),
        ("/v1/sandboxes/{id}/extend", &["post"]),
        ("/v1/sandboxes/{id}/events", &["get"]),
        ("/v1/sandboxes/{id}/feedback", &["post"]),
        ("/v1/sandboxes/{id}/contact", &["post"]),
        ("/v1/invitations", &["get", "post"]),
        ("/v1/invitations/{id}", &["get"]),
        ("/v1/demos/{id}/funnel", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
        for method in methods {
            assert!(item.get(*method).is_some(), "{method} {path}");
        }
    }
    // Every parameter is where a client puts it: `{id}` in the path, the rest in the query
    // (and optional there).
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = str_of(param, "name");
                let in_path = path.contains(&format!("{{{name}}}"));
                let place = if in_path { "path" } else { "query" };
                assert_eq!(param["in"], place, "{method} {path}: {param}");
                assert_eq!(param["required"], in_path, "{method} {path}: {param}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_problems() {
    let app = TestApp::spawn().await;
    // (`/` is the catalog page.)
    for path in [
        "/nothing",
        "/v1",
        "/v1/nothing",
        "/v2/vendors",
        "/v1/demos/x/y",
    ] {
        let body = problem(app.get(path, Some(&app.admin)).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["type"], "urn:testdrive:problem:not-found", "{path}");
    }
    let res = app.post_json("/v1/nothing", None, &json!({})).await;
    problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_problems() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::now_v7();
    let cases = [
        (Method::PUT, "/v1/vendors".to_string()),
        (Method::DELETE, "/v1/vendors".to_string()),
        (Method::DELETE, "/v1/catalog".to_string()),
        (Method::POST, "/v1/catalog".to_string()),
        (Method::PUT, format!("/v1/demos/{id}")),
        (Method::POST, format!("/v1/demos/{id}")),
        (Method::PATCH, format!("/v1/sandboxes/{id}")),
        (Method::GET, format!("/v1/sandboxes/{id}/extend")),
        (Method::POST, format!("/v1/sandboxes/{id}/events")),
        (Method::POST, "/healthz".to_string()),
        (Method::POST, "/metrics".to_string()),
    ];
    for (method, path) in cases {
        let res = call(&app, method.clone(), &path, Some(&app.admin), None).await;
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = res.headers()["allow"].to_str().unwrap().to_string();
        assert!(!allow.split(',').any(|m| m == method.as_str()), "{allow}");
        let body = problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(body["type"], "urn:testdrive:problem:method-not-allowed");
    }
}
