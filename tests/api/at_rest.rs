//! Data at rest: the data directory is the service's alone whatever the umask it was
//! started with; webhook secrets never reach the database file in plain text (nor do those
//! an earlier version stored, after a start); what a demo's load command prints stays with
//! the prospect (never in events, the vendor's or operators' views, reports, webhooks or
//! the service's log); the signed receipt is handed out behind the trial page's key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    Api, Hooked, Recorded, TestApp, poll, recording_receiver, require_images, signed, webhook_app,
};
use crate::process::ChildService;

/// Every path under `dir` (itself included) with its permission bits, links not followed.
fn modes_under(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let meta = std::fs::symlink_metadata(dir).unwrap();
    out.push((dir.to_path_buf(), true, meta.permissions().mode() & 0o7777));
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(modes_under(&path));
        } else {
            out.push((path, false, meta.permissions().mode() & 0o7777));
        }
    }
    out
}

/// Paths under `dir` that are not 0700 (directories) or 0600 (files).
fn loose_paths(dir: &Path) -> Vec<String> {
    modes_under(dir)
        .into_iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| format!("{} {mode:o}", path.display()))
        .collect()
}

/// Waits until `done` holds for what the receiver got, up to a minute.
async fn received_when(
    received: &Recorded,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let fetch = async || received.lock().unwrap().clone();
    poll(Duration::from_millis(100), fetch, |got| done(got)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_whatever_the_umask() {
    require_images();
    // The usual umask, which leaves new files readable by everyone: the child inherits it.
    // SAFETY: umask(2) only swaps the process's file mode mask.
    unsafe {
        libc::umask(0o022);
    }
    let mut svc = ChildService::start().await;
    let Hooked { demo, .. } = svc.hooked_demo(json!({}), "https://1.1.1.1/hook").await;
    let created = svc
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let id = created["id"].as_str().unwrap();

    let data = svc.data_dir.clone();
    for name in [
        "testdrive.db",
        "testdrive.db-wal",
        "testdrive.db-shm",
        "receipt-key",
    ] {
        assert!(data.join(name).exists(), "{name} is there");
    }
    let loose = loose_paths(&data);
    assert!(loose.is_empty(), "readable by others: {loose:#?}");
    assert!(data.join("secret-key").exists(), "the sealing key is kept");

    // A data directory left looser (by an older version, or by hand) is tightened at start.
    svc.terminate();
    assert!(svc.wait_exit(Duration::from_secs(30)).await.is_some());
    std::fs::write(data.join("admin-token"), "an older token\n").unwrap();
    for (path, is_dir, _) in modes_under(&data) {
        let loose = if is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    svc.restart().await;
    let loose = loose_paths(&data);
    assert!(loose.is_empty(), "not tightened: {loose:#?}");
    let res = svc
        .delete(&format!("/v1/sandboxes/{id}"), Some(&svc.admin))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// The bytes of the database's files (the file, its WAL and shared memory).
pub fn database_bytes(data_dir: &Path) -> Vec<u8> {
    ["testdrive.db", "testdrive.db-wal", "testdrive.db-shm"]
        .iter()
        .flat_map(|name| std::fs::read(data_dir.join(name)).unwrap_or_default())
        .collect()
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The vendors' webhook secrets as the database holds them, read from the file.
async fn stored_secrets(data_dir: &Path) -> Vec<String> {
    crate::helpers::read_database(
        data_dir,
        "SELECT webhook_secret FROM vendors WHERE webhook_secret IS NOT NULL",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_never_reach_the_database_in_plain_text() {
    require_images();
    let mut app = webhook_app().await;
    let (addr, received) = recording_receiver().await;
    let Hooked {
        demo, answer: set, ..
    } = app
        .hooked_demo(json!({}), &format!("http://{addr}/hook"))
        .await;
    let secret = set["webhook_secret"].as_str().unwrap().to_string();

    let stored = stored_secrets(&app.data_dir).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("v1:"), "sealed: {}", stored[0]);
    assert!(!stored[0].contains(&secret));
    assert!(
        !contains(&database_bytes(&app.data_dir), &secret),
        "the secret shown once is nowhere in the database's bytes"
    );

    // Deliveries are still signed with it.
    let first = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let first = first["id"].as_str().unwrap().to_string();
    let got = received_when(&received, |got| {
        got.iter().any(|(_, body)| body.contains(&first))
    })
    .await;
    for (signature, body) in &got {
        assert_eq!(signature, &signed(&secret, body));
    }

    // A secret an earlier version stored in plain text is sealed at the next start, and
    // signs as before.
    let legacy = format!("whsec_legacy{}", uuid::Uuid::new_v4().simple());
    app.restart(|app| {
        let db = app.data_dir.join("testdrive.db");
        let out = std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(&db)
            .arg(format!("UPDATE vendors SET webhook_secret = '{legacy}';"))
            .output()
            .expect("sqlite3 runs");
        assert!(out.status.success(), "{out:?}");
        assert!(contains(&database_bytes(&app.data_dir), &legacy));
    })
    .await;
    let stored = stored_secrets(&app.data_dir).await;
    assert!(
        stored[0].starts_with("v1:"),
        "sealed at start: {}",
        stored[0]
    );
    assert!(
        !contains(&database_bytes(&app.data_dir), &legacy),
        "no trace of the plain text is left in the file"
    );
    received.lock().unwrap().clear();
    let second = app
        .ready_sandbox(&demo, &[("b.csv", b"y\n".to_vec())])
        .await;
    let second = second["id"].as_str().unwrap().to_string();
    let got = received_when(&received, |got| {
        got.iter().any(|(_, body)| body.contains(&second))
    })
    .await;
    for (signature, body) in got.iter().filter(|(_, b)| b.contains(&second)) {
        assert_eq!(signature, &signed(&legacy, body));
    }
}

/// Starts a trial through the demo page's form (as its script does): the trial id and the
/// cookie of the trial page.
async fn start_trial(api: &Api, demo: &str, name: &str, data: &[u8]) -> (String, String) {
    let form = Form::new().text("demo", demo.to_string()).part(
        "file",
        Part::bytes(data.to_vec()).file_name(name.to_string()),
    );
    let res = api
        .http
        .post(api.url("/trials"))
        .header("accept", "application/json")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookies: Vec<String> = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    let cookie = cookies
        .iter()
        .find(|c| c.contains(&format!("Path=/trials/{id}")))
        .unwrap_or_else(|| panic!("a cookie for the trial page: {cookies:?}"));
    (id, cookie.split(';').next().unwrap().to_string())
}

/// The trial page as the browser that started the trial navigates to it.
async fn trial_page(api: &Api, id: &str, cookie: &str) -> String {
    let res = api
        .http
        .get(api.url(&format!("/trials/{id}")))
        .header("cookie", cookie)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

/// The value of the first `attr="…"` in `html`.
fn attribute(html: &str, attr: &str) -> String {
    let start = html
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("no {attr} in the page"))
        + attr.len()
        + 2;
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_load_command_prints_stays_with_the_prospect() {
    require_images();
    let svc = ChildService::start_with(&[
        ("TESTDRIVE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TESTDRIVE_WEBHOOK_FIRST_RETRY_MS", "100"),
    ])
    .await;
    let (addr, received) = recording_receiver().await;
    // The load command prints the prospect's file, then fails.
    let Hooked {
        key, demo, vendor, ..
    } = svc
        .hooked_demo(
            json!({"load_command": ["sh", "-c", "cat /data/*; exit 3"]}),
            &format!("http://{addr}/hook"),
        )
        .await;
    let marker = format!("prospect-secret-{}", uuid::Uuid::new_v4().simple());
    let data = format!("name,salary\n{marker},100\n").into_bytes();

    // Through the API: the prospect holds the sandbox token.
    let res = svc
        .create_sandbox(&demo, &[("people.csv", data.clone())], &[], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let (api_id, token) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(created["status"], "failed", "{created}");
    // Through the demo page's form: the prospect holds the trial page's cookie.
    let (page_id, cookie) = start_trial(&svc, &demo, "people.csv", &data).await;
    svc.wait_as_admin(&page_id, |s| s["status"] == "failed")
        .await;

    // The prospect sees what it printed: in the sandbox token's view, and on the trial page.
    let own: Value = svc
        .get(&format!("/v1/sandboxes/{api_id}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        own["load_output"]
            .as_str()
            .unwrap_or_default()
            .contains(&marker),
        "{own}"
    );
    let page = trial_page(&svc, &page_id, &cookie).await;
    assert!(page.contains(&marker), "the trial page shows it");
    let key_of_page = attribute(&page, "data-key");
    let state: Value = svc
        .http
        .get(svc.url(&format!("/trials/{page_id}/state")))
        .header("cookie", &cookie)
        .header("x-testdrive-page", &key_of_page)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["load_output"]
            .as_str()
            .unwrap_or_default()
            .contains(&marker)
    );
    assert!(!state["failure"].as_str().unwrap().contains(&marker));

    // Nobody else does: the failure says how it ended, not what it printed.
    for id in [&api_id, &page_id] {
        let events = svc
            .get(&format!("/v1/sandboxes/{id}/events"), Some(&svc.admin))
            .await
            .text()
            .await
            .unwrap();
        assert!(events.contains("exited with code 3"), "{events}");
        for (what, path, who) in [
            ("events", format!("/v1/sandboxes/{id}/events"), &svc.admin),
            ("events", format!("/v1/sandboxes/{id}/events"), &key),
            (
                "the operators' view",
                format!("/v1/sandboxes/{id}"),
                &svc.admin,
            ),
            ("the vendor's view", format!("/v1/sandboxes/{id}"), &key),
            ("the report", format!("/v1/sandboxes/{id}/report"), &key),
            (
                "the report",
                format!("/v1/sandboxes/{id}/report"),
                &svc.admin,
            ),
        ] {
            let text = svc.get(&path, Some(who)).await.text().await.unwrap();
            assert!(!text.contains(&marker), "{what} {path}: {text}");
        }
    }
    let events = svc.events(&api_id, &token).await;
    assert!(!Value::from(events).to_string().contains(&marker));
    for (what, path, who) in [
        (
            "the operators' list",
            "/v1/sandboxes".to_string(),
            &svc.admin,
        ),
        ("the vendor's list", "/v1/sandboxes".to_string(), &key),
        (
            "the deliveries",
            format!("/v1/vendors/{vendor}/deliveries"),
            &key,
        ),
    ] {
        let text = svc.get(&path, Some(who)).await.text().await.unwrap();
        assert!(!text.contains(&marker), "{what}: {text}");
    }

    // The webhooks announcing both failures carry none of it.
    let got = received_when(&received, |got| {
        [&api_id, &page_id].iter().all(|id| {
            got.iter()
                .any(|(_, b)| b.contains(id.as_str()) && b.contains("sandbox.failed"))
        })
    })
    .await;
    for (_, body) in &got {
        assert!(!body.contains(&marker), "a webhook: {body}");
    }
    // Nor does the service's log.
    let logged = svc.log_lines_with(&[&marker]);
    assert!(logged.is_empty(), "the log: {logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_download_needs_the_page_key() {
    require_images();
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let (id, cookie) = start_trial(&app, &demo, "a.csv", b"x,y\n1,2\n").await;
    app.wait_as_admin(&id, |s| s["status"] == "ready").await;
    let key = attribute(&trial_page(&app, &id, &cookie).await, "data-key");
    let res = app
        .http
        .post(app.url(&format!("/trials/{id}/end")))
        .header("cookie", &cookie)
        .header("x-testdrive-page", &key)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let page = trial_page(&app, &id, &cookie).await;
    let start = page
        .find("id=\"receipt-download\"")
        .expect("a download link");
    let link = attribute(&page[start..], "href").replace("&amp;", "&");
    assert!(link.contains(&format!("key={key}")), "{link}");
    let get = |path: String| {
        let app = &app;
        let cookie = cookie.clone();
        async move {
            app.http
                .get(app.url(&path))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let file = get(link).await;
    assert_eq!(file.status(), StatusCode::OK);
    let signed: Value = file.json().await.unwrap();
    assert_eq!(signed["receipt"]["sandbox_id"], id.as_str());

    // The cookie alone (a page of the demo's, on this origin, can make the browser send
    // it) is not enough.
    let res = get(format!("/trials/{id}/receipt.json")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = get(format!("/trials/{id}/receipt.json?key={}", "0".repeat(32))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
