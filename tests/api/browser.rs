//! The HTML pages in a real browser: headless Chromium driven over WebDriver (chromedriver
//! and fantoccini) against the real service and the real Engine. The tests read the pages
//! only through their DOM contract (ids, classes, data attributes) and check what the pages
//! claim against the API and the Engine.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`CHROMIUM` and `CHROMEDRIVER` name other
//! binaries). Without them the tests fail, unless `TESTDRIVE_SKIP_BROWSER=1`. With
//! `TESTDRIVE_SCREENSHOTS=<dir>` they save PNG screenshots of each page there.
//!
//! One browser test runs at a time (each starts its own chromedriver, Chromium and service);
//! every wait is a poll with a generous deadline, never an assertion on speed.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::{Instant, sleep};

use crate::helpers::*;

/// How long a page may take to show something: generous, the machine is busy.
const PATIENCE: Duration = Duration::from_secs(60);
/// Sandboxes start real containers; a loaded machine may take a while.
const PROVISIONING: Duration = Duration::from_secs(120);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// Browser tests take turns: each runs a Chromium and a service on a small machine.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// A chromedriver child process (with the Chromiums it starts, in its own process group,
/// all killed on drop) and the profile directories of its sessions.
pub struct Browser {
    driver: Child,
    url: String,
    chromium: PathBuf,
    dir: tempfile::TempDir,
    sessions: AtomicU32,
}

/// One browser session (a window with its own profile, so its own cookies).
pub struct Session {
    client: Client,
    driver: String,
    id: String,
}

impl Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// An executable: a path as given, or a name looked up on PATH.
fn executable(name: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| is_exe(p))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

impl Browser {
    /// Starts chromedriver and waits until it answers. `None` when the browser is missing
    /// and TESTDRIVE_SKIP_BROWSER=1 says to skip; missing otherwise is a failure.
    pub async fn start(test: &str) -> Option<Browser> {
        let driver_name = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium_name =
            std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let (driver, chromium) = match (executable(&driver_name), executable(&chromium_name)) {
            (Some(d), Some(c)) => (d, c),
            (d, c) => {
                let mut missing = Vec::new();
                if d.is_none() {
                    missing.push(format!("chromedriver ({driver_name})"));
                }
                if c.is_none() {
                    missing.push(format!("Chromium ({chromium_name})"));
                }
                let missing = missing.join(" and ");
                if std::env::var("TESTDRIVE_SKIP_BROWSER").as_deref() == Ok("1") {
                    // Straight to stderr: the test harness captures eprintln! of a test
                    // that passes, and this must show.
                    let banner = format!(
                        "\n\
                         ############################################################\n\
                         ## SKIPPED browser test {test}: {missing} not found\n\
                         ## (TESTDRIVE_SKIP_BROWSER=1). The HTML pages were NOT tested.\n\
                         ############################################################\n"
                    );
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
                    return None;
                }
                panic!(
                    "the browser tests need {missing}: install Debian's chromium and \
                     chromium-driver (apt-get install chromium chromium-driver) or run \
                     scripts/install-test-tools; CHROMIUM and CHROMEDRIVER name other binaries, and \
                     TESTDRIVE_SKIP_BROWSER=1 skips these tests"
                );
            }
        };

        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let log = dir.path().join("chromedriver.log");
        let mut command = Command::new(&driver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping kills Chromium too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let mut browser = Browser {
            driver: child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            dir,
            sessions: AtomicU32::new(0),
        };

        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(res) = http.get(format!("{}/status", browser.url)).send().await
                && let Ok(body) = res.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before answering; its log:\n{}",
                    browser.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within {PATIENCE:?}; its log:\n{}",
                browser.url,
                browser.log_tail()
            );
            sleep(Duration::from_millis(100)).await;
        }
        Some(browser)
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A desktop-sized session.
    pub async fn session(&self) -> Session {
        self.open(DESKTOP, false).await
    }

    /// A phone-sized session (a phone's viewport, emulated).
    pub async fn phone(&self) -> Session {
        self.open(PHONE, true).await
    }

    /// `mobile`: emulate a phone's viewport of that size (a window's size includes the
    /// browser's own frame, and Chromium keeps windows at least 500 px wide).
    async fn open(&self, (width, height): (u32, u32), mobile: bool) -> Session {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.path().join(format!("profile-{n}"));
        let mut capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                    "--lang=en-US",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        if mobile {
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 2.0,
                    "mobile": true, "touch": true
                }
            });
        }
        let capabilities: Capabilities = capabilities.as_object().unwrap().clone();
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e}; its log:\n{}",
                    self.chromium.display(),
                    self.log_tail()
                )
            });
        let id = client
            .session_id()
            .await
            .expect("a session id")
            .expect("a session id");
        Session {
            client,
            driver: self.url.clone(),
            id,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group this test started: chromedriver and its Chromiums.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What a page shows of one element, read in one script call.
#[derive(Debug, Clone, Default)]
pub struct Snap {
    pub found: bool,
    pub visible: bool,
    pub text: String,
    pub value: Option<String>,
    pub attrs: BTreeMap<String, String>,
}

impl Snap {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// Found, visible and with some text.
    pub fn shows_something(&self) -> bool {
        self.found && self.visible && !self.text.trim().is_empty()
    }
}

const SNAP_JS: &str = r#"
const el = document.querySelector(arguments[0]);
if (!el) return null;
const attrs = {};
for (const a of el.attributes) attrs[a.name] = a.value;
const visible = typeof el.checkVisibility === 'function'
    ? el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
    : el.getClientRects().length > 0;
return {
    text: el.innerText ?? el.textContent ?? '',
    visible,
    attrs,
    value: typeof el.value === 'string' ? el.value : null,
};
"#;

impl Session {
    pub async fn snap(&self, css: &str) -> Result<Snap, fantoccini::error::CmdError> {
        let v = self.execute(SNAP_JS, vec![json!(css)]).await?;
        if v.is_null() {
            return Ok(Snap::default());
        }
        Ok(Snap {
            found: true,
            visible: v["visible"] == true,
            text: v["text"].as_str().unwrap_or_default().to_string(),
            value: v["value"].as_str().map(str::to_string),
            attrs: v["attrs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The browser's console since the last call (errors in the page's scripts show here).
    pub async fn console(&self) -> Vec<String> {
        let res = reqwest::Client::new()
            .post(format!("{}/session/{}/se/log", self.driver, self.id))
            .json(&json!({"type": "browser"}))
            .send()
            .await;
        let Ok(res) = res else { return vec![] };
        let body: Value = res.json().await.unwrap_or_default();
        body["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where the browser is and what it shows, for a failure message (and a screenshot, when
    /// screenshots are wanted).
    pub async fn diagnose(&self) -> String {
        let url = self
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|e| format!("(no url: {e})"));
        let text = self
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let text: String = text.chars().take(3000).collect();
        let console = self.console().await.join("\n");
        let millis = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        screenshot(self, &format!("failure-{millis}.png")).await;
        format!("browser at {url}\n--- page text ---\n{text}\n--- console ---\n{console}")
    }

    /// Polls `css` every 100 ms until `done` holds of what the page shows, up to `timeout`;
    /// returns that. `done` also sees a missing element (`found == false`).
    pub async fn wait_until(
        &self,
        css: &str,
        done: impl Fn(&Snap) -> bool,
        timeout: Duration,
    ) -> Snap {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.snap(css).await {
                Ok(snap) if done(&snap) => return snap,
                Ok(snap) => format!("{snap:?}"),
                // Mid-navigation scripts can fail: not yet.
                Err(e) => format!("script error: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "gave up after {timeout:?} waiting on `{css}`; last: {last}\n{}",
                    self.diagnose().await
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `css` is visible.
    pub async fn wait_visible(&self, css: &str) -> Snap {
        self.wait_until(css, |s| s.found && s.visible, PATIENCE)
            .await
    }

    /// Waits until the browser's URL satisfies `done`; returns it.
    pub async fn wait_url(
        &self,
        done: impl Fn(&reqwest::Url) -> bool,
        timeout: Duration,
    ) -> reqwest::Url {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.current_url().await {
                Ok(url) if done(&url) => return url,
                Ok(url) => url.to_string(),
                Err(e) => format!("error: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "gave up after {timeout:?} waiting for the URL; last: {last}\n{}",
                    self.diagnose().await
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css` once it is visible (retrying while something covers it or the page is
    /// still settling).
    pub async fn click(&self, css: &str) {
        self.wait_visible(css).await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let err = match self.find(Locator::Css(css)).await {
                Ok(el) => match el.click().await {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("cannot click `{css}`: {err}\n{}", self.diagnose().await);
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into the field `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_until(css, |s| s.found, PATIENCE).await;
        let el = self.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
        self.wait_until(css, |s| s.value.as_deref() == Some(text), PATIENCE)
            .await;
    }

    /// Selects a file in the file input `css` (absolute path), replacing what it held: as
    /// if picked again in the file chooser.
    pub async fn pick_file(&self, css: &str, path: &Path) {
        self.wait_until(css, |s| s.found, PATIENCE).await;
        self.execute(
            "const i = document.querySelector(arguments[0]); \
             if (i.files.length) { i.value = ''; }",
            vec![json!(css)],
        )
        .await
        .unwrap();
        let input = self.find(Locator::Css(css)).await.unwrap();
        input
            .send_keys(path.to_str().expect("a UTF-8 path"))
            .await
            .unwrap_or_else(|e| panic!("cannot pick {}: {e}", path.display()));
    }

    /// The cells of every row matching `rows`, by cell selector (text, trimmed; None when
    /// the row has no such cell).
    pub async fn rows(&self, rows: &str, cells: &[&str]) -> Vec<BTreeMap<String, Option<String>>> {
        let v = self
            .execute(
                "return [...document.querySelectorAll(arguments[0])].map(r => { \
                   const o = {}; \
                   for (const c of arguments[1]) { \
                     const e = r.querySelector(c); \
                     o[c] = e ? e.innerText.trim() : null; \
                   } \
                   return o; \
                 });",
                vec![json!(rows), json!(cells)],
            )
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    /// Logs in at `path` (`/ops` or `/vendor`) with `token` through the login form.
    pub async fn log_in(&self, base: &str, path: &str, token: &str) {
        self.goto(&format!("{base}{path}")).await.unwrap();
        self.wait_visible("form#login").await;
        self.type_into("form#login input#token", token).await;
        self.click("form#login button[type=submit]").await;
        self.wait_until("table#sandboxes", |s| s.found, PATIENCE)
            .await;
    }

    /// Logs in to the operators' console and waits until its live feed is connected.
    pub async fn log_in_live(&self, base: &str, admin: &str) {
        self.log_in(base, "/ops", admin).await;
        self.wait_until(
            "#live",
            |l| l.attr("data-connected") == Some("true"),
            PATIENCE,
        )
        .await;
    }

    /// Marks the page, so that `assert_nothing_sent` can tell it neither navigated nor sent a
    /// request since.
    pub async fn mark_unsent(&self) {
        self.execute("window.__unsent = performance.now();", vec![])
            .await
            .unwrap();
    }

    /// Since `mark_unsent`: the page is the same document and made no fetch or XHR.
    pub async fn assert_nothing_sent(&self) {
        let sent = self
            .execute(
                "if (window.__unsent === undefined) return ['(the page navigated)']; \
                 return performance.getEntriesByType('resource') \
                   .filter(e => (e.initiatorType === 'fetch' || e.initiatorType === 'xmlhttprequest') \
                                && e.startTime >= window.__unsent) \
                   .map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(sent, json!([]), "the page sent something");
    }

    /// The trial page's `#status[data-status]` and whether `a#open` is visible, read at
    /// one instant.
    pub async fn status_and_open(&self) -> (String, bool) {
        let v = self
            .execute(
                "const st = document.querySelector('#status'); \
                 const open = document.querySelector('a#open'); \
                 return [st ? st.dataset.status : null, \
                         !!open && open.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})];",
                vec![],
            )
            .await
            .unwrap();
        (v[0].as_str().unwrap_or_default().to_string(), v[1] == true)
    }

    /// Ends the session (Chromium closes); the driver itself goes with the `Browser`.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Saves a PNG of what `session` shows as `<TESTDRIVE_SCREENSHOTS>/<name>`, when that is set.
pub async fn screenshot(session: &Session, name: &str) {
    let Some(dir) = std::env::var_os("TESTDRIVE_SCREENSHOTS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    match session.screenshot().await {
        Ok(png) => {
            let path = dir.join(name);
            std::fs::write(&path, png)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            eprintln!("screenshot: {}", path.display());
        }
        Err(e) => eprintln!("no screenshot {name}: {e}"),
    }
}

/// "14:59" → 899, "1:02:03" → 3723, wherever it stands in the text.
fn countdown_seconds(text: &str) -> Option<u64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == ':'))
        .filter(|t| t.contains(':'))
        .find_map(|t| {
            let parts: Vec<&str> = t.split(':').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return None;
            }
            parts
                .iter()
                .try_fold(0u64, |acc, p| Some(acc * 60 + p.parse::<u64>().ok()?))
        })
}

fn rfc3339(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("not RFC 3339: {text:?}: {e}"))
}

fn css_id(attr: &str, id: &str) -> String {
    format!("[{attr}=\"{id}\"]")
}

fn csv_explorer_manifest() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-images/csv-explorer/demo.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn static_manifest(slug: &str, title: &str, overrides: Value) -> Value {
    let mut manifest = json!({
        "slug": slug, "title": title, "image": STATIC_FILES,
        "port": 8080, "data_path": "/data",
        "ready": {"http_path": "/", "timeout_seconds": 20}
    });
    merge(&mut manifest, overrides);
    manifest
}

/// Creates a sandbox through the API without waiting; returns its id.
async fn sandbox_via_api(app: &TestApp, demo: &str) -> String {
    let res = app
        .create_sandbox(demo, &[("a.csv", b"x\n".to_vec())], &[], None)
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Ends a sandbox as operators and checks nothing of it remains.
async fn end_via_api(app: &TestApp, id: &str) {
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_objects(id);
}

/// Waits until the dashboard row `row` shows its sandbox ended, or is gone.
async fn wait_row_ended(s: &Session, row: &str) {
    let status = format!("{row} .status");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let shown = s.snap(row).await.unwrap();
        let st = s.snap(&status).await.unwrap();
        if !shown.found || st.attr("data-status") == Some("ended") {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "the dashboard still shows `{row}` as {st:?}\n{}",
                s.diagnose().await
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prospect_tries_a_demo_end_to_end() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("prospect_tries_a_demo_end_to_end").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;

    // The prospect's files: a CSV with a value found nowhere else, and a file of a kind
    // the demo does not take.
    let files = tempfile::tempdir().unwrap();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let marker = format!("Zanzibar Widgets {suffix}");
    let csv = format!(
        "id,company,region,amount\n1,{marker},north,120.50\n2,Initech,south,99.99\n\
         3,Globex,east,42.00\n4,Umbrella,west,7.25\n"
    )
    .into_bytes();
    let csv_name = format!("prospects-{suffix}.csv");
    let csv_path = files.path().join(&csv_name);
    std::fs::write(&csv_path, &csv).unwrap();
    let exe_path = files.path().join("notes.exe");
    std::fs::write(&exe_path, b"MZ\x90\x00not really a program").unwrap();

    let s = browser.session().await;

    // The catalog shows the demo.
    s.goto(&app.url("/")).await.unwrap();
    let card = format!("article.demo{}", css_id("data-demo-id", &demo));
    let shown = s.wait_until(&card, Snap::shows_something, PATIENCE).await;
    for expected in [
        "CSV Explorer",
        "Acme Analytics",
        "Upload your CSV or JSON files",
        "30",
    ] {
        assert!(
            shown.text.contains(expected),
            "the catalog card lacks {expected:?}: {:?}",
            shown.text
        );
    }
    let lower = shown.text.to_lowercase();
    assert!(
        lower.contains("csv") && lower.contains("json"),
        "the card names the accepted files: {:?}",
        shown.text
    );
    screenshot(&s, "catalog.png").await;

    // Its "try" link leads to the demo's page.
    s.click(&format!("{card} a.try")).await;
    let demo_path = format!("/demos/{demo}");
    s.wait_url(|u| u.path() == demo_path, PATIENCE).await;
    s.wait_visible("form#trial-form").await;
    let input = s.snap("input#files").await.unwrap();
    assert!(input.found, "the demo page has input#files");
    assert_eq!(input.attr("type"), Some("file"));
    assert_eq!(input.attr("name"), Some("file"));
    assert!(
        input.attr("multiple").is_some(),
        "input#files takes several files"
    );
    assert!(
        s.snap("#drop").await.unwrap().found,
        "the page has a drop zone #drop"
    );
    assert!(s.snap("progress#upload-progress").await.unwrap().found);
    let error = s.snap("#form-error").await.unwrap();
    assert!(error.found, "the page has #form-error");
    assert_eq!(error.attr("role"), Some("alert"));
    assert!(
        !error.visible || error.text.trim().is_empty(),
        "no error before anything is picked: {error:?}"
    );

    s.type_into("input#email", "ana@example.com").await;
    s.type_into("input#company", "Initech").await;
    s.type_into("textarea#needs", "Does it handle our regions?")
        .await;

    // A file of the wrong kind is refused in the page, before anything is sent.
    s.mark_unsent().await;
    s.pick_file("input#files", &exe_path).await;
    s.click("button#start").await;
    s.wait_until(
        "#form-error",
        |e| e.visible && e.text.contains("not accepted"),
        PATIENCE,
    )
    .await;
    s.assert_nothing_sent().await;
    assert_eq!(s.current_url().await.unwrap().path(), demo_path);
    assert!(
        app.sandboxes().await.is_empty(),
        "a refused file created a sandbox"
    );

    // The right file, then start.
    s.pick_file("input#files", &csv_path).await;
    screenshot(&s, "demo.png").await;
    s.click("button#start").await;
    let url = s
        .wait_url(|u| u.path().starts_with("/trials/"), PROVISIONING)
        .await;
    let id = url.path().trim_start_matches("/trials/").to_string();
    // While it is provisioning there is nothing to open yet.
    let (status, open_visible) = s.status_and_open().await;
    if status == "provisioning" {
        assert!(
            !open_visible,
            "a#open shows while the sandbox is provisioning"
        );
    }
    let trial_url = app.url(&format!("/trials/{id}"));
    let record = app.sandbox(&id).await;
    assert_eq!(record["demo_id"], demo.as_str());
    assert_eq!(record["prospect"]["email"], "ana@example.com");
    assert_eq!(record["prospect"]["company"], "Initech");
    assert_eq!(record["prospect"]["needs"], "Does it handle our regions?");
    assert_eq!(record["files"][0]["name"], csv_name.as_str());
    assert_eq!(record["files"][0]["sha256"], sha256_hex(&csv));

    // The trial page: ready, with time running out.
    s.wait_until(
        "#status",
        |st| st.attr("data-status") == Some("ready"),
        PROVISIONING,
    )
    .await;
    assert!(
        !s.snap("#status").await.unwrap().text.trim().is_empty(),
        "the status has words"
    );
    let first = s
        .wait_until(
            "#countdown",
            |c| countdown_seconds(&c.text).is_some(),
            PATIENCE,
        )
        .await;
    let left = countdown_seconds(&first.text).unwrap();
    assert!((1..=1800).contains(&left), "{:?}", first.text);
    let expires = rfc3339(
        first
            .attr("data-expires-at")
            .expect("#countdown has data-expires-at"),
    );
    let api_expires = rfc3339(app.sandbox(&id).await["expires_at"].as_str().unwrap());
    assert!(
        (expires - api_expires).abs() <= time::Duration::seconds(1),
        "the page's deadline {expires} is the sandbox's {api_expires}"
    );
    s.wait_until(
        "#countdown",
        |c| countdown_seconds(&c.text).is_some_and(|now| now < left),
        PATIENCE,
    )
    .await;
    screenshot(&s, "trial-ready.png").await;

    // Extending moves the deadline later, on the page and in the record.
    if s.snap("button#extend").await.unwrap().visible {
        s.click("button#extend").await;
        let moved = s
            .wait_until(
                "#countdown",
                |c| {
                    c.attr("data-expires-at")
                        .is_some_and(|at| rfc3339(at) > expires)
                },
                PATIENCE,
            )
            .await;
        let now_expires = rfc3339(moved.attr("data-expires-at").unwrap());
        let api_expires = rfc3339(app.sandbox(&id).await["expires_at"].as_str().unwrap());
        assert!(
            (now_expires - api_expires).abs() <= time::Duration::seconds(1),
            "after extending, the page shows {now_expires}, the sandbox ends {api_expires}"
        );
    } else {
        eprintln!("note: no button#extend on a fresh CSV Explorer trial");
    }

    // Open the demo in the same tab: the CSV Explorer shows the prospect's own data.
    let open = s.wait_visible("a#open").await;
    let href = open.attr("href").expect("a#open has an href").to_string();
    let open_url = url.join(&href).unwrap();
    assert_eq!(open_url.path(), format!("/s/{id}/"), "{href}");
    s.goto(open_url.as_str()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let source = s.source().await.unwrap_or_default();
        if source.contains(&marker) && source.contains(&csv_name) {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "the opened demo does not show {marker:?} from {csv_name}\n{}",
                s.diagnose().await
            );
        }
        sleep(Duration::from_millis(500)).await;
        s.refresh().await.unwrap();
    }
    screenshot(&s, "demo-open.png").await;

    // Back on the trial page; the same page at phone width, in another browser holding
    // the same cookies.
    s.goto(&trial_url).await.unwrap();
    s.wait_until(
        "#status",
        |st| st.attr("data-status") == Some("ready"),
        PATIENCE,
    )
    .await;
    let phone = browser.phone().await;
    phone.goto(&app.url("/")).await.unwrap();
    for cookie in s.get_all_cookies().await.unwrap() {
        let name = cookie.name().to_string();
        phone
            .add_cookie(cookie)
            .await
            .unwrap_or_else(|e| panic!("cannot copy the cookie {name}: {e}"));
    }
    phone.goto(&trial_url).await.unwrap();
    phone
        .wait_until(
            "#status",
            |st| st.attr("data-status") == Some("ready"),
            PATIENCE,
        )
        .await;
    screenshot(&phone, "trial-phone.png").await;
    phone.close().await;

    // End it: the receipt lists the file and when each copy was destroyed.
    let before = s.snap("button#end-confirm").await.unwrap();
    assert!(
        !before.visible,
        "the confirmation shows before button#end is clicked: {before:?}"
    );
    s.click("button#end").await;
    s.click("button#end-confirm").await;
    s.wait_until("#receipt", |r| r.found && r.visible, PROVISIONING)
        .await;
    let check_receipt = async |s: &Session| {
        let rows = s
            .rows(
                "#receipt tr.receipt-file",
                &[".name", ".bytes", ".sha256", ".deleted-at"],
            )
            .await;
        assert_eq!(rows.len(), 1, "one file in the receipt: {rows:?}");
        let row = &rows[0];
        let cell = |c: &str| {
            row[c]
                .clone()
                .unwrap_or_else(|| panic!("no {c} cell: {row:?}"))
        };
        assert_eq!(cell(".name"), csv_name);
        let digits: String = cell(".bytes")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(digits, csv.len().to_string(), "bytes: {:?}", cell(".bytes"));
        assert_eq!(cell(".sha256"), sha256_hex(&csv));
        assert!(!cell(".deleted-at").is_empty(), "{row:?}");
        for part in ["#receipt-container", "#receipt-volumes"] {
            let snap = s.snap(part).await.unwrap();
            assert!(snap.shows_something(), "{part} shows when: {snap:?}");
        }
    };
    check_receipt(&s).await;
    screenshot(&s, "receipt.png").await;

    let ended = app.sandbox(&id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "ended_by_prospect", "{ended}");
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
    assert_no_objects(&id);
    s.wait_until(
        "#status",
        |st| st.attr("data-status") == Some("ended"),
        PATIENCE,
    )
    .await;

    // The receipt stays for this browser…
    s.refresh().await.unwrap();
    s.wait_until("#receipt", |r| r.found && r.visible, PATIENCE)
        .await;
    check_receipt(&s).await;

    // …and nobody else sees it.
    let stranger = browser.session().await;
    stranger.goto(&trial_url).await.unwrap();
    stranger.wait_until("#locked", |l| l.found, PATIENCE).await;
    assert!(!stranger.snap("#receipt").await.unwrap().found);
    let source = stranger.source().await.unwrap();
    assert!(
        !source.contains(&sha256_hex(&csv)),
        "a stranger sees the sha256"
    );
    assert!(!source.contains(&csv_name), "a stranger sees the file name");
    let res = app.get(&format!("/trials/{id}"), None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    stranger.close().await;
    s.close().await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_updates_without_reload() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("dashboard_updates_without_reload").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;

    let s = browser.session().await;
    s.log_in_live(&app.base, &app.admin).await;
    s.execute("window.__marker = 42;", vec![]).await.unwrap();

    // A sandbox appears, becomes ready and shows its memory, with no reload.
    let first = sandbox_via_api(&app, &demo).await;
    let row = format!("tr{}", css_id("data-sandbox-id", &first));
    s.wait_until(&row, |r| r.found, PATIENCE).await;
    s.wait_until(
        &format!("{row} .status"),
        |st| st.attr("data-status") == Some("ready"),
        PROVISIONING,
    )
    .await;
    s.wait_until(
        &format!("{row} .mem"),
        |m| m.text.chars().any(|c| c.is_ascii_digit()),
        PATIENCE,
    )
    .await;
    for cell in [".demo", ".vendor", ".age", ".left"] {
        let snap = s.snap(&format!("{row} {cell}")).await.unwrap();
        assert!(snap.shows_something(), "{cell} of the row: {snap:?}");
    }
    assert!(
        s.snap("#capacity").await.unwrap().shows_something(),
        "#capacity"
    );
    s.wait_until("ol#events li", |e| e.found, PATIENCE).await;

    // Ended elsewhere: the row says so (or goes), still no reload.
    let second = sandbox_via_api(&app, &demo).await;
    let row2 = format!("tr{}", css_id("data-sandbox-id", &second));
    s.wait_until(
        &format!("{row2} .status"),
        |st| st.attr("data-status") == Some("ready"),
        PROVISIONING,
    )
    .await;
    screenshot(&s, "ops.png").await;
    end_via_api(&app, &first).await;
    wait_row_ended(&s, &row).await;
    assert_eq!(
        s.execute("return window.__marker;", vec![]).await.unwrap(),
        json!(42),
        "the dashboard reloaded"
    );

    // Ending from the dashboard: the row's end button, then its confirmation.
    let confirm = format!("{row2} button.end-confirm");
    let before = s.snap(&confirm).await.unwrap();
    assert!(
        !before.visible,
        "the row's confirmation shows before its end button is clicked: {before:?}"
    );
    s.click(&format!("{row2} button.end")).await;
    s.click(&confirm).await;
    // The record says ended at once; the data is gone a moment later.
    let ended = app
        .wait_as_admin(&second, |s| {
            s["status"] == "ended" && s["data_deleted_at"].is_string()
        })
        .await;
    assert_eq!(ended["end_reason"], "ended_by_admin", "{ended}");
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
    assert_no_objects(&second);
    wait_row_ended(&s, &row2).await;
    assert_eq!(
        s.execute("return window.__marker;", vec![]).await.unwrap(),
        json!(42),
        "the dashboard reloaded"
    );
    s.close().await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_sees_only_its_own_trials() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("vendor_sees_only_its_own_trials").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, key_a) = app.vendor("Alpha Analytics").await;
    let (_, key_b) = app.vendor("Bravo Biometrics").await;
    let demo_a = app
        .demo(
            &key_a,
            static_manifest("alpha-files", "Alpha Files", json!({})),
        )
        .await;
    let demo_b = app
        .demo(
            &key_b,
            static_manifest("bravo-files", "Bravo Files", json!({})),
        )
        .await;
    let sandbox_a = app
        .ready_sandbox(&demo_a, &[("a.csv", b"a\n".to_vec())])
        .await;
    let sandbox_b = app
        .ready_sandbox(&demo_b, &[("b.csv", b"b\n".to_vec())])
        .await;
    let sandbox_a = sandbox_a["id"].as_str().unwrap();
    let sandbox_b = sandbox_b["id"].as_str().unwrap();

    let s = browser.session().await;
    s.log_in(&app.base, "/vendor", &key_a).await;
    s.wait_until(
        &format!("tr{}", css_id("data-sandbox-id", sandbox_a)),
        |r| r.found,
        PATIENCE,
    )
    .await;
    s.wait_until(
        &format!("#demos li{}", css_id("data-demo-id", &demo_a)),
        |d| d.found && d.text.contains("Alpha Files"),
        PATIENCE,
    )
    .await;
    screenshot(&s, "vendor.png").await;
    assert!(
        !s.snap(&format!("tr{}", css_id("data-sandbox-id", sandbox_b)))
            .await
            .unwrap()
            .found,
        "vendor A sees B's sandbox"
    );
    assert!(
        !s.snap(&format!("li{}", css_id("data-demo-id", &demo_b)))
            .await
            .unwrap()
            .found,
        "vendor A sees B's demo"
    );
    let source = s.source().await.unwrap();
    for other in [
        sandbox_b,
        demo_b.as_str(),
        "Bravo Files",
        "Bravo Biometrics",
        "b.csv",
    ] {
        assert!(!source.contains(other), "vendor A's page shows {other:?}");
    }
    s.close().await;

    end_via_api(&app, sandbox_a).await;
    end_via_api(&app, sandbox_b).await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upload_is_refused_in_the_browser() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("bad_upload_is_refused_in_the_browser").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"max_bytes": 1024, "extensions": ["csv"]}}))
        .await;
    let files = tempfile::tempdir().unwrap();
    let big = files.path().join("big.csv");
    std::fs::write(&big, csv_of_size(4096)).unwrap();

    let s = browser.session().await;
    s.goto(&app.url(&format!("/demos/{demo}"))).await.unwrap();
    s.wait_visible("form#trial-form").await;
    s.type_into("input#email", "bo@example.com").await;
    s.mark_unsent().await;
    s.pick_file("input#files", &big).await;
    s.click("button#start").await;
    s.wait_until(
        "#form-error",
        |e| e.visible && e.text.contains("too large"),
        PATIENCE,
    )
    .await;
    assert_eq!(
        s.current_url().await.unwrap().path(),
        format!("/demos/{demo}")
    );
    s.assert_nothing_sent().await;
    // Give a stray request time to land before checking that none did.
    sleep(Duration::from_secs(1)).await;
    assert!(
        app.sandboxes().await.is_empty(),
        "a refused file created a sandbox"
    );
    s.close().await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

/// A vendor's demo runs on testdrive's origin, so its scripts are "same-origin" to the
/// browser. In a browser signed in to the operators' console, a hostile demo page tries
/// everything a script can: read the console's stream, fetch the console page (for its
/// key), end another sandbox, and open the console in a window to read it. The console
/// cookie is sent each time (403, not 401) and still opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_cannot_use_a_signed_in_console() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("a_demo_cannot_use_a_signed_in_console").await else {
        return;
    };
    // The single-origin mode, where a demo's page is same-origin to the console: only the
    // page keys and the header filter stand between them.
    let app = TestApp::spawn_with(|c| c.sandbox_domain = Some("off".into())).await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["html", "csv"]}}))
        .await;
    let victim = sandbox_via_api(&app, &demo).await;
    let page = format!(
        r#"<!doctype html><title>demo</title><button id="go">go</button><script>
document.getElementById("go").onclick = async () => {{
  const out = {{}};
  const status = async (path, options) => {{
    try {{ return (await fetch(path, options)).status; }} catch (e) {{ return "error"; }}
  }};
  out.stream = await status("/ops/stream");
  out.page = await status("/ops");
  out.end = await status("/ops/sandboxes/{victim}/end", {{ method: "POST" }});
  const w = window.open("/ops", "_blank");
  await new Promise((r) => setTimeout(r, 3000));
  let popup = "no window";
  if (w) {{
    try {{
      popup = w.closed ? "closed"
        : "READ " + (w.document.body ? w.document.body.innerHTML.length : 0);
    }} catch (e) {{ popup = "blocked"; }}
  }}
  out.popup = popup;
  document.body.setAttribute("data-result", JSON.stringify(out));
}};
</script>"#
    );
    let res = app
        .create_sandbox(&demo, &[("evil.html", page.into_bytes())], &[], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    let (id, token) = (
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    );

    let s = browser.session().await;
    s.log_in(&app.base, "/ops", &app.admin).await;
    // The prospect (here, the operator trying a demo) opens the sandbox: token → cookie.
    s.goto(&app.url(&format!("/s/{id}/?token={token}")))
        .await
        .unwrap();
    s.goto(&app.url(&format!("/s/{id}/evil.html")))
        .await
        .unwrap();
    s.wait_visible("button#go").await;
    s.click("button#go").await;
    let done = s
        .wait_until("body", |b| b.attr("data-result").is_some(), PATIENCE)
        .await;
    let result: Value = serde_json::from_str(done.attr("data-result").unwrap()).unwrap();
    eprintln!("what the demo page got: {result}");
    // 403, not 401: the console cookie went along, and the page key was missing.
    assert_eq!(result["stream"], 403, "{result}");
    assert_eq!(
        result["page"], 403,
        "a script may not fetch the console page: {result}"
    );
    assert_eq!(result["end"], 403, "{result}");
    let popup = result["popup"].as_str().unwrap_or_default();
    assert!(
        !popup.starts_with("READ"),
        "the demo read the console's window: {result}"
    );
    assert_eq!(app.sandbox(&victim).await["status"], "ready");
    s.close().await;
    end_via_api(&app, &victim).await;
    end_via_api(&app, id).await;
}

#[test]
fn countdowns_read_as_seconds() {
    assert_eq!(countdown_seconds("14:59"), Some(899));
    assert_eq!(countdown_seconds("1:02:03 left"), Some(3723));
    assert_eq!(countdown_seconds("ends in 0:05"), Some(5));
    assert_eq!(countdown_seconds("soon"), None);
    assert_eq!(countdown_seconds("12:"), None);
}
