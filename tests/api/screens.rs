//! Screens of the pages a newcomer judged (issue 15), in a real Chromium: a failed trial
//! (an Excel workbook renamed `.csv`, a file the demo refuses) and the CSV Explorer on a
//! European Excel export; the operators' and vendors' consoles at desktop and phone width
//! are shot by `layout.rs`, which checks them. With `TESTDRIVE_SCREENSHOTS=<dir>` each is saved as a PNG there, its name
//! prefixed by `TESTDRIVE_SHOT_PREFIX` (e.g. `before-`); without it the flows still run
//! and check that each page answers with what it is about.
//!
//! The fixtures are made here, never downloaded. `layout.rs` shares the flows.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::browser::{Browser, ONE_AT_A_TIME, Session, Snap, screenshot};
use crate::helpers::*;

pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const PROVISIONING: Duration = Duration::from_secs(120);

/// Saves `name` (with the prefix of `TESTDRIVE_SHOT_PREFIX`) when screenshots are wanted.
pub(crate) async fn shot(s: &Session, name: &str) {
    let prefix = std::env::var("TESTDRIVE_SHOT_PREFIX").unwrap_or_default();
    screenshot(s, &format!("{prefix}{name}")).await;
}

pub(crate) fn csv_explorer_manifest() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-images/csv-explorer/demo.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn static_manifest(slug: &str, title: &str) -> Value {
    json!({
        "slug": slug, "title": title, "image": STATIC_FILES,
        "port": 8080, "data_path": "/data",
        "ready": {"http_path": "/", "timeout_seconds": 20}
    })
}

pub(crate) fn css_id(attr: &str, id: &str) -> String {
    format!("[{attr}=\"{id}\"]")
}

/// CRC-32 (IEEE), as ZIP wants it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A ZIP archive of `entries`, stored (not compressed): enough to be an Excel workbook to
/// anything that sniffs its first bytes or its entry names.
pub(crate) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed to extract
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time and date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment
                h.extend_from_slice(&0u16.to_le_bytes()); // disk
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend(header(0x0201_4b50, true));
    }
    let start = out.len() as u32;
    let count = entries.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // disks
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// An Excel workbook (the parts every `.xlsx` has), as a prospect's renamed file holds it.
pub(crate) fn excel_workbook() -> Vec<u8> {
    zip_of(&[
        (
            "[Content_Types].xml",
            br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#,
        ),
        (
            "xl/workbook.xml",
            br#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets><sheet name="seattle-weather" sheetId="1"/></sheets></workbook>"#,
        ),
        (
            "xl/worksheets/sheet1.xml",
            br#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>date</t></is></c></row></sheetData></worksheet>"#,
        ),
    ])
}

/// A weather export as Excel writes "CSV" in much of Europe: UTF-8 BOM, `;` between
/// fields, decimal commas, day-first dates, CRLF line ends; `rows` data rows.
pub(crate) fn european_export(rows: usize) -> Vec<u8> {
    let mut text = String::from("\u{feff}Datum;Niederschlag;Temperatur max;Wind;Wetter\r\n");
    for i in 0..rows {
        let day = i % 28 + 1;
        let month = i / 28 % 12 + 1;
        let rain = (i * 7 % 50) as f64 / 10.0;
        let temp = 2.5 + (i * 13 % 170) as f64 / 10.0;
        let wind = (i * 3 % 60) as f64 / 10.0 + 0.5;
        let weather = ["Regen", "Sonne", "Nebel", "Schnee"][i % 4];
        text.push_str(&format!(
            "{day:02}.{month:02}.2012;{};{};{};{weather}\r\n",
            format!("{rain:.1}").replace('.', ","),
            format!("{temp:.1}").replace('.', ","),
            format!("{wind:.1}").replace('.', ","),
        ));
    }
    text.into_bytes()
}

/// Picks `path` on the demo's page and starts the trial: `Ok(trial id)` once the browser
/// is on the trial page, `Err(the form's refusal)` when the page refuses the file.
pub(crate) async fn start_trial(
    s: &Session,
    app: &TestApp,
    demo: &str,
    path: &Path,
) -> Result<String, String> {
    s.goto(&app.url(&format!("/demos/{demo}"))).await.unwrap();
    s.wait_visible("form#trial-form").await;
    s.type_into("input#email", "ana@example.com").await;
    s.type_into("input#company", "Initech").await;
    s.pick_file("input#files", path).await;
    s.click("button#start").await;
    let deadline = Instant::now() + PROVISIONING;
    loop {
        let url = s.current_url().await.unwrap();
        if let Some(id) = url.path().strip_prefix("/trials/") {
            return Ok(id.to_string());
        }
        let error = s.snap("#form-error").await.unwrap_or_default();
        if error.visible && !error.text.trim().is_empty() {
            return Err(error.text);
        }
        if Instant::now() >= deadline {
            panic!(
                "the trial neither started nor was refused\n{}",
                s.diagnose().await
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the trial page shows a status in `wanted`; returns it.
pub(crate) async fn trial_status(s: &Session, wanted: &[&str]) -> String {
    let st = s
        .wait_until(
            "#status",
            |st| {
                st.attr("data-status")
                    .is_some_and(|status| wanted.contains(&status))
            },
            PROVISIONING,
        )
        .await;
    st.attr("data-status").unwrap().to_string()
}

/// Opens the demo of trial `id` in the same tab and waits until it shows `expect`.
pub(crate) async fn open_demo(s: &Session, app: &TestApp, id: &str, expect: &str) {
    s.goto(&app.url(&format!("/s/{id}/"))).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let source = s.source().await.unwrap_or_default();
        if source.contains(expect) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "the opened demo does not show {expect:?}\n{}",
                s.diagnose().await
            );
        }
        sleep(Duration::from_millis(500)).await;
        s.refresh().await.unwrap();
    }
}

/// A ready sandbox of `demo`, made through the API: its id.
pub(crate) async fn ready_via_api(app: &TestApp, demo: &str, email: &str) -> String {
    let res = app
        .create_sandbox(
            demo,
            &[("a.csv", b"x,y\n1,2\n".to_vec())],
            &[("email", email), ("company", "Initech")],
            Some(60),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Live and ended sandboxes of two vendors (long names, as real ones are): the vendor's
/// key of the first, and every sandbox made (ended ones already gone from the Engine).
pub(crate) struct Consoles {
    pub vendor_key: String,
    pub live: Vec<String>,
    pub ended: Vec<String>,
}

pub(crate) async fn populate_consoles(app: &TestApp) -> Consoles {
    let (_, key_a) = app.vendor("Northwind Meteorological Analytics").await;
    let (_, key_b) = app.vendor("Contoso Airport Data Services").await;
    let mut extendable = static_manifest("weather-lab", "Weather Lab");
    extendable["trial"] = json!({"seconds": 900, "max_seconds": 3600});
    let demo_a = app.demo(&key_a, extendable).await;
    let demo_b = app
        .demo(
            &key_b,
            static_manifest("runway-insights", "Runway Insights"),
        )
        .await;
    let mut live = Vec::new();
    let mut ended = Vec::new();
    for (demo, email) in [
        (&demo_a, "ana.lopez@example.com"),
        (&demo_a, "kim@example.org"),
        (&demo_b, "ops-team@airport.example"),
    ] {
        live.push(ready_via_api(app, demo, email).await);
    }
    // An extension: its event names the new deadline.
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{}/extend", live[0]),
            Some(&app.admin),
            &json!({"seconds": 600}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let gone = ready_via_api(app, &demo_a, "former@example.com").await;
    let res = app
        .delete(&format!("/v1/sandboxes/{gone}"), Some(&app.admin))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_objects(&gone);
    ended.push(gone);
    Consoles {
        vendor_key: key_a,
        live,
        ended,
    }
}

/// Signs in to `path` and waits until the table shows every sandbox in `rows`.
pub(crate) async fn console_with_rows(
    s: &Session,
    app: &TestApp,
    path: &str,
    token: &str,
    rows: &[&String],
) {
    s.log_in(&app.base, path, token).await;
    s.wait_until(
        "#live",
        |l| l.attr("data-connected") == Some("true"),
        PATIENCE,
    )
    .await;
    for id in rows {
        s.wait_until(
            &format!("tr{}", css_id("data-sandbox-id", id)),
            |r| r.found,
            PATIENCE,
        )
        .await;
    }
    s.wait_until("ol#events li", |e| e.found, PATIENCE).await;
}

pub(crate) async fn end_all(app: &TestApp, ids: &[String]) {
    for id in ids {
        let res = app
            .delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_no_objects(id);
    }
}

// ---------------------------------------------------------------------------------------
// The screens
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_a_workbook_renamed_csv_and_a_file_the_demo_refuses() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("screen_a_workbook_renamed_csv").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;
    let files = tempfile::tempdir().unwrap();
    let workbook = files.path().join("weather.csv");
    std::fs::write(&workbook, excel_workbook()).unwrap();
    // Text, so it passes the intake; rows shorter than the header, which the demo's load
    // command refuses with its message for the prospect.
    let ragged = files.path().join("stations.csv");
    std::fs::write(
        &ragged,
        "station,elevation,opened\nBay Springs,140,1961\nThigpen\n",
    )
    .unwrap();

    let s = browser.session().await;
    let refusal = start_trial(&s, &app, &demo, &workbook)
        .await
        .expect_err("a workbook under a .csv name is refused on the form");
    assert!(refusal.contains("Excel workbook"), "{refusal}");
    shot(&s, "form-workbook-refused.png").await;

    let id = start_trial(&s, &app, &demo, &ragged)
        .await
        .expect("a text file starts a trial");
    assert_eq!(trial_status(&s, &["failed", "ready"]).await, "failed");
    s.wait_until("#failure", Snap::shows_something, PATIENCE)
        .await;
    shot(&s, "trial-failed.png").await;
    let phone = browser.phone().await;
    phone.goto(&app.url("/")).await.unwrap();
    for cookie in s.get_all_cookies().await.unwrap() {
        phone.add_cookie(cookie).await.unwrap();
    }
    phone
        .goto(&app.url(&format!("/trials/{id}")))
        .await
        .unwrap();
    trial_status(&phone, &["failed"]).await;
    shot(&phone, "trial-failed-phone.png").await;
    phone.close().await;
    app.wait_as_admin(&id, |s| s["data_deleted_at"].is_string())
        .await;
    assert_no_objects(&id);
    s.close().await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_the_csv_explorer_on_an_excel_export() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("screen_the_csv_explorer_on_an_excel_export").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("wetter-2012.csv");
    std::fs::write(&path, european_export(40)).unwrap();

    let s = browser.session().await;
    let id = start_trial(&s, &app, &demo, &path)
        .await
        .expect("the export is accepted");
    let status = trial_status(&s, &["ready", "failed"]).await;
    assert_eq!(status, "ready", "{}", s.diagnose().await);
    open_demo(&s, &app, &id, "wetter-2012.csv").await;
    shot(&s, "csv-explorer-excel-export.png").await;
    // The same demo on a phone: its origin's cookies, copied.
    let demo_url = s.current_url().await.unwrap();
    let cookies = s.get_all_cookies().await.unwrap();
    let phone = browser.phone().await;
    phone.goto(demo_url.as_str()).await.unwrap();
    for cookie in cookies {
        phone.add_cookie(cookie).await.unwrap();
    }
    phone.goto(demo_url.as_str()).await.unwrap();
    phone
        .wait_until("h2", |h| h.text.contains("wetter-2012.csv"), PATIENCE)
        .await;
    shot(&phone, "csv-explorer-excel-export-phone.png").await;
    phone.close().await;
    s.close().await;
    end_all(&app, &[id]).await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

#[test]
fn the_workbook_is_a_zip_with_excel_parts() {
    let zip = excel_workbook();
    assert!(zip.starts_with(b"PK\x03\x04"));
    assert!(zip.windows(19).any(|w| w == b"[Content_Types].xml"));
    assert!(zip.windows(15).any(|w| w == b"xl/workbook.xml"));
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let export = european_export(3);
    assert!(export.starts_with("\u{feff}Datum;".as_bytes()));
    assert!(
        String::from_utf8(export)
            .unwrap()
            .contains("\r\n01.01.2012;0,0;2,5;0,5;Regen\r\n")
    );
}
