//! The sales conversation in a real browser (issue 17): a vendor invites a named prospect
//! from its console, the prospect opens the link (greeted, the sheet filled in), answers the
//! vendor's questions and starts a trial of the CSV Explorer, which greets them by company
//! and question; they ask to talk to a person, end the trial and answer the exit questions.
//! The vendor's console then holds the conversation, the used invitation and the funnel;
//! the vendor's webhook heard both things the prospect said, signed; the report holds it all
//! and the file's shape, never a value; the used link answers politely.
//!
//! Headless Chromium, the real service and the real Engine (`browser.rs`). With
//! `TESTDRIVE_SCREENSHOTS=docs/screenshots/issue-17` it saves `invitation.png`,
//! `demo-greeting.png`, `exit-questions.png` and `funnel.png` there.

use fantoccini::Locator;
use fantoccini::wd::WindowHandle;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::browser::{Browser, ONE_AT_A_TIME, Session, Snap};
use crate::helpers::*;
use crate::screens::{PATIENCE, PROVISIONING, css_id, csv_explorer_manifest, shot, trial_status};

const COMPANY: &str = "Globex Corporation";
const EMAIL: &str = "ana.lopez@globex.example";
const NOTE: &str = "Hi Ana, as promised on Tuesday's call: try it on last quarter's export.";
const NEEDS: &str = "Which region grows fastest?";
const ROLE: &str = "Analyst";
const GOAL: &str = "Answers for the board pack in minutes, not days";
const CONTACT: &str = "Could someone walk our team through the search? Thursday works.";
const FIT: &str = "Yes";
const MISSING: &str = "An export to our BI tool";

/// The demo's questions: asked on its page, and on the trial page once it has ended.
fn questions() -> (Value, Value) {
    (
        json!([
            {"id": "role", "label": "Your role", "kind": "choice",
             "options": ["Analyst", "Engineer", "Manager"], "required": true},
            {"id": "goal", "label": "What would make this trial a success?"}
        ]),
        json!([
            {"id": "fit", "label": "Would this fit your team?", "kind": "choice",
             "options": ["Yes", "Maybe", "No"], "required": true},
            {"id": "missing", "label": "What is missing?"}
        ]),
    )
}

/// The prospect's sample: every cell a value found nowhere else (so that finding one in
/// the report would be a leak, not a coincidence).
fn sample(suffix: &str) -> (Vec<u8>, Vec<String>) {
    let rows = [
        ("Northmarch", "2024-Q1", "18234.50"),
        ("Southwold", "2024-Q1", "9120.25"),
        ("Eastbrook", "2024-Q2", "27411.75"),
        ("Westhaven", "2024-Q2", "13377.10"),
    ];
    let mut text = String::from("region,quarter,revenue\n");
    let mut cells = Vec::new();
    for (region, quarter, revenue) in rows {
        let region = format!("{region} {suffix}");
        text.push_str(&format!("{region},{quarter}-{suffix},{revenue}\n"));
        cells.extend([region, format!("{quarter}-{suffix}"), revenue.to_string()]);
    }
    (text.into_bytes(), cells)
}

/// Picks `label` in the `<select>` `css`.
async fn choose(s: &Session, css: &str, label: &str) {
    s.wait_visible(css).await;
    s.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_label(label)
        .await
        .unwrap_or_else(|e| panic!("cannot choose {label:?} in {css}: {e}"));
    s.wait_until(css, |x| x.value.as_deref() == Some(label), PATIENCE)
        .await;
}

/// Saves `name` showing the page from the top of `first` to the bottom of `last` (the
/// whole page for `html`): the window grows to fit that span for the picture, then goes
/// back to its size. Only when screenshots are wanted.
async fn shot_span(s: &Session, name: &str, first: &str, last: &str) {
    if std::env::var_os("TESTDRIVE_SCREENSHOTS").is_none() {
        return;
    }
    let (width, height) = s.get_window_size().await.unwrap();
    // The span in page coordinates, and what of the window is not page.
    let span = s
        .execute(
            "const top = document.querySelector(arguments[0]).getBoundingClientRect().top + scrollY; \
             const bottom = document.querySelector(arguments[1]).getBoundingClientRect().bottom + scrollY; \
             return [Math.max(0, top - 16), bottom + 16, outerHeight - innerHeight];",
            vec![json!(first), json!(last)],
        )
        .await
        .unwrap();
    let number = |i: usize| span[i].as_f64().unwrap_or_default().ceil() as u32;
    let (top, bottom, frame) = (number(0), number(1), number(2));
    s.set_window_size(width as u32, bottom - top + frame)
        .await
        .unwrap();
    s.execute("window.scrollTo(0, arguments[0]);", vec![json!(top)])
        .await
        .unwrap();
    // Let the page settle at its new size before the picture.
    sleep(std::time::Duration::from_millis(300)).await;
    shot(s, name).await;
    s.set_window_size(width as u32, height as u32)
        .await
        .unwrap();
}

/// Waits for a window other than `known` (a link with `target=_blank` opened it); returns it.
async fn new_window(s: &Session, known: &WindowHandle) -> WindowHandle {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let windows = s.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| w != known) {
            return w;
        }
        if Instant::now() >= deadline {
            panic!("no new window opened\n{}", s.diagnose().await);
        }
        sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Reloads the page until `done` holds of the snaps of `parts` (each a selector), or
/// fails with the last of them.
async fn reload_until(s: &Session, parts: &[String], done: impl Fn(&[Snap]) -> bool) -> Vec<Snap> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut snaps = Vec::with_capacity(parts.len());
        for part in parts {
            snaps.push(s.snap(part).await.unwrap_or_default());
        }
        if done(&snaps) {
            return snaps;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = parts
                .iter()
                .zip(&snaps)
                .map(|(p, snap)| format!("{p}: {snap:?}"))
                .collect();
            panic!(
                "the page never showed what was expected:\n{}\n{}",
                shown.join("\n"),
                s.diagnose().await
            );
        }
        sleep(std::time::Duration::from_millis(500)).await;
        s.refresh().await.unwrap();
    }
}

/// The count a funnel step shows, when it shows one.
fn count(snap: &Snap) -> Option<u64> {
    snap.attr("data-count")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sales_conversation_in_a_browser() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("the_sales_conversation_in_a_browser").await else {
        return;
    };
    let app = webhook_app().await;
    let (addr, received) = recording_receiver().await;

    // 1. The vendor's demo with its questions, and a webhook that records what it hears.
    let (vendor, key) = app.vendor("Acme Analytics").await;
    let mut manifest = csv_explorer_manifest();
    let (asked, exit) = questions();
    manifest["questions"] = asked;
    manifest["exit_questions"] = exit;
    let demo = app.demo(&key, manifest).await;
    let res = app
        .patch_vendor(
            &vendor,
            &key,
            json!({"webhook_url": format!("http://{addr}/hook")}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let hooked: Value = res.json().await.unwrap();
    let secret = hooked["webhook_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook_secret: {hooked}"))
        .to_string();

    // 2. The vendor invites Globex from its console.
    let console = browser.session().await;
    console.log_in(&app.base, "/vendor", &key).await;
    console.wait_visible("form#invite-form").await;
    console
        .find(Locator::Css("#invite-demo"))
        .await
        .unwrap()
        .select_by_value(&demo)
        .await
        .unwrap();
    console.type_into("#invite-company", COMPANY).await;
    console.type_into("#invite-email", EMAIL).await;
    console.type_into("#invite-note", NOTE).await;
    console.type_into("#invite-days", "7").await;
    console.click("#invite-send").await;
    let link = console.wait_visible("a#invited-url").await;
    let url = link
        .attr("href")
        .expect("#invited-url has an href")
        .to_string();
    assert_eq!(link.text.trim(), url, "the link is shown to copy");
    let invitation = url
        .strip_prefix(&app.url("/invitations/"))
        .unwrap_or_else(|| panic!("the link {url} is not an invitation of {}", app.base))
        .to_string();
    let made: Value = app
        .get(&format!("/v1/invitations/{invitation}"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(made["status"], "open", "{made}");
    assert_eq!(made["demo_id"], demo.as_str(), "{made}");
    assert_eq!(made["company"], COMPANY, "{made}");
    assert_eq!(made["email"], EMAIL, "{made}");
    assert_eq!(made["note"], NOTE, "{made}");
    assert!(made["opened_at"].is_null(), "not opened yet: {made}");
    let row = format!(
        "#invitation-list tr{}",
        css_id("data-invitation", &invitation)
    );
    let listed = console.wait_until(&row, |r| r.found, PATIENCE).await;
    assert_eq!(listed.attr("data-status"), Some("open"), "{listed:?}");

    // 3. The prospect opens the link: greeted, the sheet filled in, the questions asked.
    let s = browser.session().await;
    s.goto(&url).await.unwrap();
    s.wait_until(
        "#invited-company",
        |c| c.visible && c.text.trim() == COMPANY,
        PATIENCE,
    )
    .await;
    let note = s.snap("#invitation-note").await.unwrap();
    assert!(note.visible && note.text.contains(NOTE), "{note:?}");
    let greeting = s.snap("#invitation").await.unwrap();
    assert!(
        greeting.text.contains("Acme Analytics") && greeting.text.contains("CSV Explorer"),
        "the greeting names the vendor and the demo: {greeting:?}"
    );
    assert_eq!(
        s.snap("#email").await.unwrap().value.as_deref(),
        Some(EMAIL)
    );
    assert_eq!(
        s.snap("#company").await.unwrap().value.as_deref(),
        Some(COMPANY)
    );
    let role = s.snap("#q-role").await.unwrap();
    assert!(role.visible, "#q-role: {role:?}");
    assert!(
        role.attr("required").is_some(),
        "role is required: {role:?}"
    );
    assert!(
        ["Analyst", "Engineer", "Manager"]
            .iter()
            .all(|o| role.text.contains(o)),
        "the role's options: {role:?}"
    );
    let goal = s.snap("#q-goal").await.unwrap();
    assert!(goal.visible && goal.attr("required").is_none(), "{goal:?}");
    let kinds = s
        .execute(
            "return ['#q-role', '#q-goal'].map(c => document.querySelector(c).tagName);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kinds, json!(["SELECT", "TEXTAREA"]));
    let required = s.snap("label[for=q-role] .required").await.unwrap();
    assert!(
        required.visible,
        "the role says it is required: {required:?}"
    );
    let opened: Value = app
        .get(&format!("/v1/invitations/{invitation}"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert!(opened["opened_at"].is_string(), "opened: {opened}");
    assert_eq!(opened["status"], "open", "{opened}");

    // 4. A CSV, the question, the answers: the trial starts and becomes ready.
    let files = tempfile::tempdir().unwrap();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (csv, cells) = sample(suffix);
    let csv_name = format!("regions-{suffix}.csv");
    let csv_path = files.path().join(&csv_name);
    std::fs::write(&csv_path, &csv).unwrap();
    s.type_into("textarea#needs", NEEDS).await;
    choose(&s, "#q-role", ROLE).await;
    s.type_into("#q-goal", GOAL).await;
    // The file last: picking it checks the whole form (upload.js), the questions too.
    s.pick_file("input#files", &csv_path).await;
    s.wait_until("#file-list li", |f| f.text.contains(&csv_name), PATIENCE)
        .await;
    let error = s.snap("#form-error").await.unwrap();
    assert!(
        !error.visible,
        "an error with everything answered: {error:?}"
    );
    shot_span(&s, "invitation.png", "html", "html").await;
    s.click("button#start").await;
    let trial = s
        .wait_url(|u| u.path().starts_with("/trials/"), PROVISIONING)
        .await;
    let id = trial.path().trim_start_matches("/trials/").to_string();
    let trial_url = app.url(&format!("/trials/{id}"));
    let status = trial_status(&s, &["ready", "failed"]).await;
    assert_eq!(status, "ready", "{}", s.diagnose().await);
    let record = app.sandbox(&id).await;
    assert_eq!(record["demo_id"], demo.as_str(), "{record}");
    assert_eq!(record["invitation_id"], invitation.as_str(), "{record}");
    assert_eq!(record["prospect"]["email"], EMAIL, "{record}");
    assert_eq!(record["prospect"]["company"], COMPANY, "{record}");
    assert_eq!(record["prospect"]["needs"], NEEDS, "{record}");
    assert_eq!(
        record["answers"],
        json!({"role": ROLE, "goal": GOAL}),
        "{record}"
    );
    let used: Value = app
        .get(&format!("/v1/invitations/{invitation}"), Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(used["status"], "used", "{used}");
    assert_eq!(used["sandbox_id"], id.as_str(), "{used}");
    assert!(used["used_at"].is_string(), "{used}");

    // 5. The demo opens in a window of its own and greets Globex with its question; the
    // prospect's file is there, testdrive's note to the demo is not.
    let trial_window = s.window().await.unwrap();
    s.click("a#open").await;
    let demo_window = new_window(&s, &trial_window).await;
    s.switch_to_window(demo_window).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let company = s.snap("#prospect-company").await.unwrap_or_default();
        if company.found && s.snap("section.file h2").await.unwrap_or_default().found {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "the opened demo does not greet the prospect\n{}",
                s.diagnose().await
            );
        }
        sleep(std::time::Duration::from_millis(500)).await;
        s.refresh().await.unwrap();
    }
    let prepared = s.snap("#prepared-for").await.unwrap();
    assert!(prepared.visible, "#prepared-for: {prepared:?}");
    let company = s.snap("#prospect-company").await.unwrap();
    assert!(company.text.contains(COMPANY), "{company:?}");
    let needs = s.snap("#prospect-needs").await.unwrap();
    assert!(needs.visible && needs.text.contains(NEEDS), "{needs:?}");
    // Only the invitation's note and the company: never the email.
    assert!(!prepared.text.contains(EMAIL), "{prepared:?}");
    let listed = s
        .execute(
            "return [...document.querySelectorAll('section.file h2')].map(h => h.innerText.trim());",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(listed, json!([csv_name]), "the files the demo lists");
    let text = s
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap();
    let text = text.as_str().unwrap_or_default();
    assert!(
        !text.contains(".testdrive") && !text.contains("prospect.json"),
        "the demo lists testdrive's directory: {text}"
    );
    assert!(
        text.contains(&cells[0]),
        "the demo shows the prospect's data"
    );
    shot(&s, "demo-greeting.png").await;
    s.close_window().await.unwrap();
    s.switch_to_window(trial_window).await.unwrap();

    // 6. Back on the trial page: a person to talk to.
    s.goto(&trial_url).await.unwrap();
    trial_status(&s, &["ready"]).await;
    let sent = s.snap("#contact-sent").await.unwrap();
    assert!(
        !sent.visible,
        "#contact-sent before anything was sent: {sent:?}"
    );
    s.click("#contact-open").await;
    s.type_into("#contact-message", CONTACT).await;
    s.click("#contact-send").await;
    s.wait_visible("#contact-sent").await;
    let error = s.snap("#contact-error").await.unwrap();
    assert!(!error.visible, "{error:?}");

    // 7. The end: the receipt, and the vendor's exit questions beside it.
    assert!(
        !s.snap("#exit-questions").await.unwrap().found,
        "the exit questions are asked only once the trial is over"
    );
    s.click("button#end").await;
    s.click("button#end-confirm").await;
    s.wait_until("#receipt", |r| r.found && r.visible, PROVISIONING)
        .await;
    s.wait_visible("#exit-questions").await;
    let fit = s.snap("label[for=x-fit]").await.unwrap();
    assert!(fit.text.contains("Would this fit your team?"), "{fit:?}");
    let feedback_sent = s.snap("#feedback-sent").await.unwrap();
    assert!(!feedback_sent.visible, "{feedback_sent:?}");
    choose(&s, "#x-fit", FIT).await;
    s.type_into("#x-missing", MISSING).await;
    shot_span(&s, "exit-questions.png", "html", "html").await;
    s.click("#feedback-send").await;
    s.wait_visible("#feedback-sent").await;
    let form = s.snap("#feedback-form").await.unwrap();
    assert!(!form.visible, "the form goes once answered: {form:?}");
    let error = s.snap("#feedback-error").await.unwrap();
    assert!(!error.visible, "{error:?}");
    let ended = app
        .wait_as_admin(&id, |x| x["data_deleted_at"].is_string())
        .await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "ended_by_prospect", "{ended}");
    assert_no_objects(&id);
    // After a reload the page remembers both were sent.
    s.refresh().await.unwrap();
    s.wait_visible("#receipt").await;
    s.wait_visible("#feedback-sent").await;
    s.wait_visible("#contact-sent").await;

    // 8. The vendor's console: the conversation, the used invitation, the funnel.
    console.goto(&app.url("/vendor")).await.unwrap();
    let contact_item = format!(
        "#conversations li.conversation{}[data-kind=contact_requested]",
        css_id("data-sandbox", &id)
    );
    let feedback_item = format!(
        "#conversations li.conversation{}[data-kind=feedback]",
        css_id("data-sandbox", &id)
    );
    let funnel = format!("#funnel-{demo}");
    let steps = [
        "page_views",
        "trials",
        "ready",
        "opened",
        "feedback",
        "contact_requested",
    ];
    let mut parts = vec![contact_item.clone(), feedback_item.clone(), row.clone()];
    parts.extend(
        steps
            .iter()
            .map(|step| format!("{funnel} g.step[data-step={step}]")),
    );
    let snaps = reload_until(&console, &parts, |snaps| {
        snaps[0].found
            && snaps[1].found
            && snaps[2].attr("data-status") == Some("used")
            && snaps[3..].iter().all(|st| count(st).is_some_and(|n| n > 0))
    })
    .await;
    let contact = &snaps[0];
    assert!(
        contact.visible && contact.text.contains(CONTACT) && contact.text.contains(COMPANY),
        "the contact request: {contact:?}"
    );
    assert!(contact.text.contains(EMAIL), "who asks: {contact:?}");
    let answers = &snaps[1];
    for expected in [
        "Would this fit your team?",
        FIT,
        "What is missing?",
        MISSING,
        COMPANY,
    ] {
        assert!(
            answers.visible && answers.text.contains(expected),
            "the feedback lacks {expected:?}: {answers:?}"
        );
    }
    let rows = console.rows(&row, &[".opened", ".used"]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    for cell in [".opened", ".used"] {
        assert!(
            rows[0][cell].as_deref().is_some_and(|t| !t.is_empty()),
            "the invitation's {cell} time: {rows:?}"
        );
    }
    let used_cell = console.snap(&format!("{row} .used")).await.unwrap();
    assert_eq!(used_cell.attr("data-sandbox"), Some(id.as_str()));
    assert!(
        console.snap(&row).await.unwrap().text.contains(COMPANY),
        "the row names the company"
    );
    for (step, snap) in steps.iter().zip(&snaps[3..]) {
        assert!(snap.visible, "the {step} bar shows: {snap:?}");
        eprintln!("funnel {step}: {:?}", snap.attr("data-count"));
    }
    assert_eq!(count(&snaps[4]), Some(1), "one trial: {:?}", snaps[4]);
    let chart = console.snap(&funnel).await.unwrap();
    assert!(
        chart.visible && chart.text.contains("CSV Explorer"),
        "{chart:?}"
    );
    shot_span(&console, "funnel.png", "#conversation", "#funnels").await;

    // 9. The webhook heard both, signed; the report holds the conversation and the file's
    // shape, never a value of it.
    let delivered = poll(
        std::time::Duration::from_millis(100),
        async || received.lock().unwrap().clone(),
        |got: &Vec<(String, String)>| {
            let types: Vec<Value> = got
                .iter()
                .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok())
                .map(|b| b["type"].clone())
                .collect();
            types.contains(&json!("sandbox.feedback"))
                && types.contains(&json!("prospect.contact_requested"))
        },
    )
    .await;
    for (signature, body) in &delivered {
        assert_eq!(signature, &signed(&secret, body), "{body}");
    }
    let of_type = |kind: &str| -> Value {
        delivered
            .iter()
            .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
            .find(|b| b["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} delivered"))
    };
    let feedback_hook = of_type("sandbox.feedback");
    assert_eq!(
        feedback_hook["sandbox"]["id"],
        id.as_str(),
        "{feedback_hook}"
    );
    assert_eq!(
        feedback_hook["feedback"]["answers"],
        json!({"fit": FIT, "missing": MISSING}),
        "{feedback_hook}"
    );
    assert_eq!(
        feedback_hook["sandbox"]["invitation_id"],
        invitation.as_str(),
        "{feedback_hook}"
    );
    assert_eq!(
        feedback_hook["sandbox"]["answers"],
        json!({"role": ROLE, "goal": GOAL}),
        "{feedback_hook}"
    );
    let contact_hook = of_type("prospect.contact_requested");
    assert_eq!(contact_hook["sandbox"]["id"], id.as_str(), "{contact_hook}");
    assert_eq!(
        contact_hook["contact"]["message"], CONTACT,
        "{contact_hook}"
    );
    assert_eq!(
        contact_hook["sandbox"]["prospect"]["company"], COMPANY,
        "{contact_hook}"
    );
    assert_eq!(
        contact_hook["sandbox"]["prospect"]["email"], EMAIL,
        "{contact_hook}"
    );

    let (text, report) = app.report(&id, &key).await;
    assert_eq!(report["invitation"]["id"], invitation.as_str(), "{report}");
    assert_eq!(report["invitation"]["company"], COMPANY, "{report}");
    assert_eq!(report["invitation"]["note"], NOTE, "{report}");
    assert!(report["invitation"]["opened_at"].is_string(), "{report}");
    assert_eq!(
        report["answers"],
        json!({"role": ROLE, "goal": GOAL}),
        "{report}"
    );
    assert_eq!(
        report["feedback"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["feedback"][0]["answers"],
        json!({"fit": FIT, "missing": MISSING}),
        "{report}"
    );
    assert_eq!(
        report["contact_requests"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["contact_requests"][0]["message"], CONTACT,
        "{report}"
    );
    assert_eq!(report["prospect"]["needs"], NEEDS, "{report}");
    let files = report["files"].as_array().expect("the report's files");
    assert_eq!(files.len(), 1, "{report}");
    assert_eq!(files[0]["name"], csv_name.as_str(), "{report}");
    assert_eq!(files[0]["bytes"], csv.len(), "{report}");
    let profile = &files[0]["profile"];
    assert_eq!(profile["format"], "csv", "{report}");
    assert_eq!(profile["header"], true, "{report}");
    assert_eq!(profile["rows"], 4, "{report}");
    let columns: Vec<(&str, &str)> = profile["columns"]
        .as_array()
        .expect("the file's columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("region", "text"),
            ("quarter", "text"),
            ("revenue", "number")
        ],
        "{report}"
    );
    for cell in &cells {
        assert!(
            !text.contains(cell.as_str()),
            "the report holds {cell:?}: {text}"
        );
    }

    // The pages' scripts said nothing alarming along the way.
    for (who, session) in [("prospect", &s), ("vendor", &console)] {
        let severe: Vec<String> = session
            .console()
            .await
            .into_iter()
            .filter(|line| line.contains("SEVERE"))
            .collect();
        assert!(severe.is_empty(), "the {who}'s browser console: {severe:?}");
    }

    // 10. The used link answers politely (410 Gone), with no form.
    s.goto(&url).await.unwrap();
    let closed = s
        .wait_until("#invitation-closed", |c| c.found && c.visible, PATIENCE)
        .await;
    assert_eq!(closed.attr("data-reason"), Some("used"), "{closed:?}");
    assert!(
        closed.text.contains(COMPANY) && closed.text.contains("Acme Analytics"),
        "{closed:?}"
    );
    assert!(!s.snap("form#trial-form").await.unwrap().found);
    let res = app.get(&format!("/invitations/{invitation}"), None).await;
    assert_eq!(res.status(), StatusCode::GONE);

    s.close().await;
    console.close().await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
    assert!(
        app.sandbox_dirs().is_empty(),
        "sandbox directories: {:?}",
        app.sandbox_dirs()
    );
}
