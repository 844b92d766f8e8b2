//! The browser's routes over plain HTTP: who gets which cookie, what each page demands,
//! and that another site cannot make a signed-in browser change anything. (The same pages
//! driven by a real browser are in `browser.rs`.)

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{Api, TestApp, assert_no_objects, require_images, sha256_hex};

/// Posts the demo page's form as its script does (`Accept: application/json`) or as a
/// browser without scripts does.
async fn post_form(
    app: &TestApp,
    demo: &str,
    files: &[(&str, &[u8])],
    json: bool,
) -> reqwest::Response {
    let mut form = Form::new()
        .text("demo", demo.to_string())
        .text("email", "ada@example.com");
    for (name, bytes) in files {
        form = form.part(
            "file",
            Part::bytes(bytes.to_vec()).file_name(name.to_string()),
        );
    }
    let mut req = app.http.post(app.url("/trials")).multipart(form);
    if json {
        req = req.header("accept", "application/json");
    }
    req.send().await.unwrap()
}

/// `name=value` of each `Set-Cookie`, with its attributes.
pub(crate) fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

pub(crate) fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn get_with_cookie(app: &Api, path: &str, cookie: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// A call of a page's script: the cookie, the page key, and where the browser says it
/// comes from.
async fn post_with_cookie(
    app: &TestApp,
    path: &str,
    cookie: &str,
    key: &str,
    site: &str,
) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .header("cookie", cookie)
        .header("x-testdrive-page", key)
        .header("sec-fetch-site", site)
        .send()
        .await
        .unwrap()
}

/// A page as a browser navigating to it gets it, with `cookie`.
pub(crate) async fn page_html(app: &Api, path: &str, cookie: &str) -> String {
    app.http
        .get(app.url(path))
        .header("cookie", cookie)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The page key a page shows its script (`data-key`).
pub(crate) fn key_of(html: &str) -> String {
    let start = html.find("data-key=\"").expect("the page shows a key") + "data-key=\"".len();
    html[start..start + 32].to_string()
}

/// The page key a page shows its script, fetched as a browser navigates.
pub(crate) async fn page_key(app: &Api, path: &str, cookie: &str) -> String {
    key_of(&page_html(app, path, cookie).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_is_held_by_http_only_cookies_and_ends_with_a_receipt() {
    require_images();
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let data = b"name,city\nAda,London\n".to_vec();

    let res = post_form(&app, &demo, &[("people.csv", &data)], true).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookies = set_cookies(&res);
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["location"], format!("/trials/{id}"));
    assert!(body.get("token").is_none(), "scripts never see the token");
    let trial = cookies
        .iter()
        .find(|c| c.contains(&format!("Path=/trials/{id};")))
        .unwrap_or_else(|| panic!("a cookie for the trial page: {cookies:?}"));
    let opener = cookies
        .iter()
        .find(|c| c.contains(&format!("Path=/s/{id}/;")))
        .unwrap_or_else(|| panic!("a cookie for the sandbox: {cookies:?}"));
    for cookie in [trial, opener] {
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
    }
    let trial = cookie_value(trial);
    let opener = cookie_value(opener);

    // The page is this browser's only.
    let locked = app.get(&format!("/trials/{id}"), None).await;
    assert_eq!(locked.status(), StatusCode::NOT_FOUND);
    assert!(locked.text().await.unwrap().contains("id=\"locked\""));
    let page = get_with_cookie(&app, &format!("/trials/{id}"), &trial).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers().get(CONTENT_SECURITY_POLICY).cloned();
    assert!(csp.is_some_and(|v| v.to_str().unwrap().contains("default-src 'self'")));
    assert!(page.text().await.unwrap().contains("people.csv"));

    // What the page's script calls needs the key only the page shows; a script's fetch
    // of the page itself (a demo's, on this origin) gets nothing.
    let res = get_with_cookie(&app, &format!("/trials/{id}/state"), &trial).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app
        .http
        .get(app.url(&format!("/trials/{id}")))
        .header("cookie", &trial)
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let key = page_key(&app, &format!("/trials/{id}"), &trial).await;

    // Ready, and the demo opens with the other cookie.
    let mut state: Value = Value::Null;
    for _ in 0..600 {
        let res = app
            .http
            .get(app.url(&format!("/trials/{id}/state")))
            .header("cookie", &trial)
            .header("x-testdrive-page", &key)
            .send()
            .await
            .unwrap();
        state = res.json().await.unwrap();
        if state["status"] != "provisioning" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state["status"], "ready", "{state}");
    // The cookie on testdrive's origin sends the browser on to the sandbox's own origin,
    // which trades the token for a cookie of its host.
    let sent_on = get_with_cookie(&app, &format!("/s/{id}/people.csv"), &opener).await;
    assert_eq!(sent_on.status(), StatusCode::SEE_OTHER);
    let to = sent_on.headers()["location"].to_str().unwrap().to_string();
    assert!(
        to.starts_with(&app.sandbox_url(&id, "/people.csv?token=tds_")),
        "{to}"
    );
    let traded = app.http.get(&to).send().await.unwrap();
    assert_eq!(traded.status(), StatusCode::SEE_OTHER);
    let host_cookie = cookie_value(&set_cookies(&traded)[0]);
    let opened = app
        .http
        .get(app.sandbox_url(&id, "/people.csv"))
        .header("cookie", &host_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    assert!(
        opened.headers().get(CONTENT_SECURITY_POLICY).is_none(),
        "the demo's own pages are not ours to restrict"
    );
    assert_eq!(opened.bytes().await.unwrap().to_vec(), data);

    // Extending adds the demo's trial length.
    let before = state["expires_at"].as_str().unwrap().to_string();
    let res = post_with_cookie(
        &app,
        &format!("/trials/{id}/extend"),
        &trial,
        &key,
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let extended: Value = res.json().await.unwrap();
    assert!(extended["expires_at"].as_str().unwrap() > before.as_str());

    // Another site cannot make the browser end it.
    let res = post_with_cookie(
        &app,
        &format!("/trials/{id}/end"),
        &trial,
        &key,
        "cross-site",
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post_with_cookie(
        &app,
        &format!("/trials/{id}/end"),
        &trial,
        "0".repeat(32).as_str(),
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "another key");
    assert_eq!(app.sandbox(&id).await["status"], "ready");

    let res = post_with_cookie(
        &app,
        &format!("/trials/{id}/end"),
        &trial,
        &key,
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ended: Value = res.json().await.unwrap();
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["deleted"], true, "answered once everything is gone");
    assert_no_objects(&id);
    let record = app.sandbox(&id).await;
    assert_eq!(record["end_reason"], "ended_by_prospect");

    let receipt = get_with_cookie(&app, &format!("/trials/{id}"), &trial)
        .await
        .text()
        .await
        .unwrap();
    assert!(receipt.contains("id=\"receipt\""), "{receipt}");
    assert!(receipt.contains(&sha256_hex(&data)));
    assert!(receipt.contains("id=\"receipt-container\""));
    // The signed receipt, to keep: this browser's only, behind the page key.
    let path = format!("/trials/{id}/receipt.json?key={key}");
    let file = get_with_cookie(&app, &path, &trial).await;
    assert_eq!(file.status(), StatusCode::OK);
    let signed: Value = file.json().await.unwrap();
    assert_eq!(signed["receipt"]["sandbox_id"], id.as_str());
    assert_eq!(signed["algorithm"], "Ed25519");
    let res = app.get(&format!("/trials/{id}/receipt.json"), None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_works_without_scripts_and_refusals_leave_nothing() {
    require_images();
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv"], "max_bytes": 1024}}))
        .await;

    // A plain form post goes on to the trial page.
    let res = post_form(&app, &demo, &[("a.csv", b"x,y\n1,2\n")], false).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with("/trials/"), "{location}");
    let id = location.trim_start_matches("/trials/").to_string();

    // Refused uploads: a page for browsers without scripts, a problem document for the
    // script; nothing is kept either way.
    for (name, bytes, status) in [
        (
            "notes.exe",
            b"MZ".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("big.csv", vec![b'a'; 4096], StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let res = post_form(&app, &demo, &[(name, &bytes)], false).await;
        assert_eq!(res.status(), status, "{name}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(res.text().await.unwrap().contains("id=\"error\""));
        let res = post_form(&app, &demo, &[(name, &bytes)], true).await;
        crate::helpers::problem(res, status).await;
    }
    let sandboxes = app.sandboxes().await;
    assert_eq!(sandboxes.len(), 1, "only the accepted one: {sandboxes:?}");
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert!(app.spool_entries().is_empty());
    assert_no_objects(&id);
}

/// Reads the first `snapshot` event of a console's stream.
pub(crate) async fn first_snapshot(app: &Api, console: &str, cookie: &str, key: &str) -> Value {
    let mut res = get_with_cookie(app, &format!("{console}/stream?key={key}"), cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut text = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(start) = text.find("event: snapshot\ndata: ") {
            let rest = &text[start + "event: snapshot\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return serde_json::from_str(&rest[..end]).unwrap();
            }
        }
    }
    panic!("the stream ended without a snapshot: {text}");
}

pub(crate) async fn login(app: &Api, console: &str, token: &str, site: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("{console}/login")))
        .header("sec-fetch-site", site)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_console_takes_only_its_own_credential_and_shows_only_its_own() {
    require_images();
    let app = TestApp::spawn().await;
    let (key_a, demo_a) = app.static_demo(json!({})).await;
    let (key_b, demo_b) = app.static_demo(json!({})).await;
    let file = [("a.csv", b"x\n1\n".to_vec())];
    let a = app.ready_sandbox(&demo_a, &file).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app.ready_sandbox(&demo_b, &file).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Not signed in: a login form, and no stream.
    let page = app.get("/ops", None).await.text().await.unwrap();
    assert!(page.contains("id=\"login\""));
    let res = app.get("/ops/stream", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Each console takes its own credential only; other sites cannot sign anyone in.
    assert_eq!(
        login(&app, "/ops", &key_a, "same-origin").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "/vendor", &app.admin, "same-origin")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "/ops", &app.admin, "cross-site").await.status(),
        StatusCode::FORBIDDEN
    );
    let res = login(&app, "/ops", &app.admin, "same-origin").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = set_cookies(&res);
    assert!(
        set[0].contains("Path=/ops;")
            && set[0].contains("HttpOnly")
            && set[0].contains("SameSite=Strict"),
        "{set:?}"
    );
    let ops = cookie_value(&set[0]);
    let res = login(&app, "/vendor", &key_a, "same-origin").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let vendor_a = cookie_value(&set_cookies(&res)[0]);

    let ids = |snapshot: &Value| -> Vec<String> {
        snapshot["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let res = get_with_cookie(&app, "/ops/stream", &ops).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "the cookie alone is not enough"
    );
    let ops_key = page_key(&app, "/ops", &ops).await;
    let vendor_key = page_key(&app, "/vendor", &vendor_a).await;
    assert_ne!(ops_key, vendor_key);
    let all = first_snapshot(&app, "/ops", &ops, &ops_key).await;
    assert!(ids(&all).contains(&a) && ids(&all).contains(&b), "{all}");
    assert!(all["capacity"]["running"].as_u64().unwrap() >= 2, "{all}");
    let row = all["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a)
        .unwrap();
    assert!(
        row["memory_bytes"].as_u64().unwrap() > 0,
        "memory from the Engine: {row}"
    );

    let own = first_snapshot(&app, "/vendor", &vendor_a, &vendor_key).await;
    assert_eq!(ids(&own), std::slice::from_ref(&a), "{own}");
    assert!(
        own["capacity"].is_null(),
        "vendors do not see the deployment's capacity"
    );
    assert_eq!(own["demos"][0]["id"], demo_a.as_str());
    assert!(
        own["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["sandbox_id"] == a.as_str())
    );

    // A vendor cannot end another vendor's sandbox, nor can another site end any.
    let res = post_with_cookie(
        &app,
        &format!("/vendor/sandboxes/{b}/end"),
        &vendor_a,
        &vendor_key,
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = post_with_cookie(
        &app,
        &format!("/ops/sandboxes/{b}/end"),
        &ops,
        &ops_key,
        "cross-site",
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.sandbox(&b).await["status"], "ready");

    let res = post_with_cookie(
        &app,
        &format!("/vendor/sandboxes/{a}/end"),
        &vendor_a,
        &vendor_key,
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.sandbox(&a).await["end_reason"], "ended_by_vendor");
    let res = post_with_cookie(
        &app,
        &format!("/ops/sandboxes/{b}/end"),
        &ops,
        &ops_key,
        "same-origin",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.sandbox(&b).await["end_reason"], "ended_by_admin");
    assert_no_objects(&a);
    assert_no_objects(&b);
    let _ = key_b;
}
