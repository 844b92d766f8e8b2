//! A trial that cannot work is explained in words the prospect can act on: a wrong file
//! (a workbook renamed `.csv`, a PDF, UTF-16 or Windows-1252 text) is refused before
//! anything is made, naming the file, what it is and what to do; a file the demo's load
//! command refuses fails the sandbox with `failure` in words, the demo's own last line
//! shown to the prospect only, never to the vendor, in events or to operators.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// A ZIP's local file entry, stored (the sniffing needs only the names).
fn zip_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut entry = b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
    entry.extend_from_slice(&[0; 4]); // CRC-32, not checked by anyone here
    entry.extend_from_slice(&(data.len() as u32).to_le_bytes());
    entry.extend_from_slice(&(data.len() as u32).to_le_bytes());
    entry.extend_from_slice(&(name.len() as u16).to_le_bytes());
    entry.extend_from_slice(&0u16.to_le_bytes());
    entry.extend_from_slice(name.as_bytes());
    entry.extend_from_slice(data);
    entry
}

/// The start of an Excel workbook as Excel writes it, with a sheet of weather data.
fn workbook() -> Vec<u8> {
    [
        zip_entry(
            "[Content_Types].xml",
            br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#,
        ),
        zip_entry("_rels/.rels", b"<Relationships/>"),
        zip_entry("xl/workbook.xml", b"<workbook><sheets/></workbook>"),
        zip_entry(
            "xl/worksheets/sheet1.xml",
            b"<sheetData><row><c t=\"inlineStr\"><is><t>date</t></is></c></row></sheetData>",
        ),
    ]
    .concat()
}

/// A CSV that is Windows-1252 (as Excel's plain "CSV" saves it) only far past its head.
fn late_windows_1252() -> Vec<u8> {
    let mut csv = b"city;temp\r\n".to_vec();
    for i in 0..2000 {
        csv.extend_from_slice(format!("Seattle;{i},5\r\n").as_bytes());
    }
    csv.extend_from_slice(b"Z\xfcrich;3,5\r\n");
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_file_is_refused_in_words_before_anything_is_made() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv", "json"]}}))
        .await;
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("date;temp\r\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let cases: [(&str, Vec<u8>, &[&str]); 5] = [
        (
            "seattle-weather.csv",
            workbook(),
            &[
                "seattle-weather.csv is an Excel workbook, not a CSV file",
                "File → Save As → CSV UTF-8",
            ],
        ),
        (
            "airports.json",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj".to_vec(),
            &["airports.json is a PDF document, not a JSON file"],
        ),
        (
            "cars.csv",
            utf16,
            &["cars.csv is text in UTF-16", "CSV UTF-8"],
        ),
        (
            "zurich.csv",
            late_windows_1252(),
            &["zurich.csv is not UTF-8 text (line 2002", "CSV UTF-8"],
        ),
        (
            "chart.csv",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10".to_vec(),
            &["chart.csv is a picture (PNG), not a CSV file"],
        ),
    ];
    for (name, bytes, words) in cases {
        // After a good file, so that the refusal also takes back what was already spooled.
        let files = [("good.csv", b"a,b\n1,2\n".to_vec()), (name, bytes)];
        let res = app.create_sandbox(&demo, &files, &[], Some(30)).await;
        let body = problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        let detail = body["detail"].as_str().unwrap();
        for word in words {
            assert!(detail.contains(word), "{name}: {detail}");
        }
        app.assert_left_nothing().await;
    }
    // A file of nothing but blank lines has no data.
    let res = app
        .create_sandbox(&demo, &[("blank.csv", b"\r\n \r\n".to_vec())], &[], None)
        .await;
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("blank.csv is empty"),
        "{body}"
    );
    app.assert_left_nothing().await;
    // A demo that asks for workbooks gets them.
    let (_, books) = app
        .static_demo(json!({"upload": {"extensions": ["xlsx"]}}))
        .await;
    let ready = app
        .ready_sandbox(&books, &[("seattle-weather.xlsx", workbook())])
        .await;
    let (id, token) = (
        ready["id"].as_str().unwrap(),
        ready["token"].as_str().unwrap(),
    );
    app.end_sandbox(id, token).await;
}

fn csv_explorer_manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-images/csv-explorer/demo.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every string anywhere in `value`, joined: what a reader of it could see.
fn all_text(value: &serde_json::Value) -> String {
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_demo_cannot_load_fails_in_words_and_its_message_is_the_prospects_alone() {
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;
    // Passes the intake (it is UTF-8 text) but line 3 has one field too few.
    let ragged = b"city,temp\nQ7MARKERseattle,Q7MARKER5\nQ7MARKERportland\n".to_vec();
    let res = app
        .create_sandbox(
            &demo,
            &[
                ("good.csv", b"a,b\n1,2\n".to_vec()),
                ("weather.csv", ragged),
            ],
            &[],
            Some(60),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "failed", "{created}");
    // The `?wait=` answer says why, in words, and the demo's own last line to the prospect.
    let failure = created["failure"].as_str().expect("a failure");
    assert_eq!(
        failure,
        "the demo could not load your files (its load command exited with code 1)"
    );
    let message = "weather.csv: line 3 has 1 field, but the header has 2 fields; every row \
                   needs as many fields as the header.";
    assert_eq!(created["load_message"], message, "{created}");
    assert!(
        created["load_output"]
            .as_str()
            .is_some_and(|o| o.contains("ok   good.csv") && o.contains(message)),
        "{created}"
    );
    let mine = app
        .wait_for(&id, &token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(mine["failure"], failure);
    assert_eq!(mine["load_message"], message);

    // The vendor and operators read the failure, never what the demo printed.
    let theirs = [
        json_of(
            app.get(&format!("/v1/sandboxes/{id}"), Some(&vendor_key))
                .await,
        )
        .await,
        app.sandbox(&id).await,
    ];
    for view in &theirs {
        assert_eq!(view["failure"], failure, "{view}");
        assert!(view.get("load_message").is_none(), "{view}");
        assert!(view.get("load_output").is_none(), "{view}");
    }
    let listed = app.sandboxes().await;
    let item = listed.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(item["failure"], failure);
    let mut read = vec![all_text(item)];
    read.extend(theirs.iter().map(all_text));
    for token in [&vendor_key, &app.admin, &token] {
        read.extend(app.events(&id, token).await.iter().map(all_text));
    }
    for text in &read {
        for secret in ["Q7MARKER", "line 3", "ok   good.csv", "csv-explorer check"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_no_objects(&id);
}

async fn json_of(res: reqwest::Response) -> serde_json::Value {
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// How long a page may take to show something on a busy machine.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
const PROVISIONING: std::time::Duration = std::time::Duration::from_secs(120);

/// In a real browser: a renamed workbook is refused on the form in the server's words
/// before anything is sent; a file the demo cannot load leads to a trial page that says so
/// readably (the demo's message first, all it printed folded away), and "Try again" returns
/// to the demo's form with the prospect's answers filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_trial_explains_itself_and_try_again_refills_the_form() {
    use crate::browser::{Browser, ONE_AT_A_TIME, screenshot};

    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) =
        Browser::start("a_failed_trial_explains_itself_and_try_again_refills_the_form").await
    else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;
    let files = tempfile::tempdir().unwrap();
    let book = files.path().join("seattle-weather.csv");
    std::fs::write(&book, workbook()).unwrap();
    let ragged = files.path().join("weather.csv");
    std::fs::write(&ragged, b"city,temp\nseattle,5\nportland\n").unwrap();

    let s = browser.session().await;
    let form_path = format!("/demos/{demo}");
    s.goto(&app.url(&form_path)).await.unwrap();
    s.wait_visible("form#trial-form").await;
    s.type_into("input#email", "ana@example.com").await;
    s.type_into("input#company", "Initech").await;
    s.type_into("textarea#needs", "Does it read our weather exports?")
        .await;

    // The workbook: refused on the form, in the server's words, with nothing sent.
    s.mark_unsent().await;
    s.pick_file("input#files", &book).await;
    s.click("button#start").await;
    s.wait_until(
        "#form-error",
        |e| {
            e.visible
                && e.text.contains(
                    "seattle-weather.csv is an Excel workbook, not a CSV file: open it in Excel",
                )
        },
        PATIENCE,
    )
    .await;
    s.assert_nothing_sent().await;
    screenshot(&s, "failure-form-workbook.png").await;

    // The ragged CSV passes the form, and the demo's load command refuses it.
    s.pick_file("input#files", &ragged).await;
    s.click("button#start").await;
    s.wait_url(|u| u.path().starts_with("/trials/"), PATIENCE)
        .await;
    let failure = s.wait_until("#failure", |f| f.visible, PROVISIONING).await;
    assert!(
        failure.text.contains("Your trial could not start"),
        "{}",
        failure.text
    );
    let message = s.wait_visible("#load-message").await;
    assert_eq!(
        message.text.trim(),
        "weather.csv: line 3 has 1 field, but the header has 2 fields; every row needs as \
         many fields as the header."
    );
    let reason = s.wait_visible("#failure-reason").await;
    assert!(
        reason.text.contains("the demo could not load your files"),
        "{}",
        reason.text
    );
    // All it printed is there, folded away, never instead of the message.
    let output = s
        .snap("details#load-output-box #load-output")
        .await
        .unwrap();
    assert!(output.found && !output.visible, "the output is folded");
    let printed = s
        .execute(
            "return document.querySelector('#load-output').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        printed
            .as_str()
            .is_some_and(|p| p.contains("weather.csv: line 3")),
        "{printed}"
    );
    // The message is not cut mid-word: it wraps where the words end.
    let wraps = s
        .execute(
            "const e = document.querySelector('#load-message'); \
             return getComputedStyle(e).whiteSpace + ' ' + getComputedStyle(e).wordBreak;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wraps, "pre-wrap normal");
    screenshot(&s, "failure-trial-page.png").await;

    // "Try again" goes back to the demo's form with the answers filled in.
    s.click("a#try-again").await;
    s.wait_url(|u| u.path() == form_path, PATIENCE).await;
    s.wait_visible("form#trial-form").await;
    s.wait_until(
        "input#email",
        |e| e.value.as_deref() == Some("ana@example.com"),
        PATIENCE,
    )
    .await;
    assert_eq!(
        s.snap("input#company").await.unwrap().value.as_deref(),
        Some("Initech")
    );
    assert_eq!(
        s.snap("textarea#needs").await.unwrap().value.as_deref(),
        Some("Does it read our weather exports?")
    );
    let note = s.wait_visible("#refilled").await;
    assert!(
        note.text.contains("Choose your files again"),
        "{}",
        note.text
    );
    screenshot(&s, "failure-try-again.png").await;
    s.close().await;
    let sandboxes = app.sandboxes().await;
    for sandbox in &sandboxes {
        let id = sandbox["id"].as_str().unwrap();
        app.wait_as_admin(id, |s| s["data_deleted_at"].is_string())
            .await;
        assert_no_objects(id);
    }
}

/// A browser without scripts posts the form itself: a refusal is a page whose way out is
/// back to the demo's form it came from (never to an address another site gave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_sent_without_scripts_leads_back_to_the_form() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv"]}}))
        .await;
    let post = async |referer: String| {
        let form = reqwest::multipart::Form::new()
            .text("demo", demo.clone())
            .text("email", "ada@example.com")
            .part(
                "file",
                reqwest::multipart::Part::bytes(workbook()).file_name("weather.csv"),
            );
        let res = app
            .http
            .post(app.url("/trials"))
            .header("referer", referer)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        res.text().await.unwrap()
    };
    let page = post(app.url(&format!("/demos/{demo}"))).await;
    assert!(page.contains("is an Excel workbook"), "{page}");
    assert!(
        page.contains(&format!(r#"id="back" href="/demos/{demo}""#)),
        "{page}"
    );
    let page = post("https://elsewhere.example/phish?x=1".to_string()).await;
    assert!(!page.contains(r#"id="back""#), "{page}");
    app.assert_left_nothing().await;
}
