//! The sales conversation through the API (issue 17): a vendor's invitations and their
//! page, the demo's questions and the prospect's answers, what the demo is told about the
//! prospect (`{data_path}/.testdrive/prospect.json`), feedback and contact requests with
//! their signed webhooks, the report, and the demo's funnel. Against the real HTTP server
//! and the real Docker Engine.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use testdrive::domain::conversation::{InvitationRequest, InvitationTerms};
use testdrive::domain::{Invitation, Timestamp, VendorId};

use crate::helpers::*;
use crate::screens::csv_explorer_manifest;

/// What the demos of these tests ask: before the trial, and at its end.
fn asking() -> Value {
    json!({
        "questions": [
            {"id": "role", "label": "Your role", "kind": "choice",
             "options": ["Analyst", "Engineer"], "required": true},
            {"id": "goal", "label": "What would make this a success?"}
        ],
        "exit_questions": [
            {"id": "verdict", "label": "Would you buy it?", "kind": "choice",
             "options": ["Yes", "Not yet"]},
            {"id": "missing", "label": "What was missing?"}
        ]
    })
}

/// One small CSV, the file every trial here uploads.
fn csv() -> Vec<(&'static str, Vec<u8>)> {
    vec![("a.csv", b"x,y\n1,2\n".to_vec())]
}

fn str_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

/// The answer's JSON body, which must come with `status`.
async fn json_of(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `POST /v1/invitations` as `token`: the invitation made.
async fn invite(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/invitations", Some(token), &body).await;
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let made = json_of(res, StatusCode::CREATED).await;
    assert_eq!(
        location,
        Some(format!("/v1/invitations/{}", str_of(&made, "id")))
    );
    made
}

/// `GET /v1/invitations/{id}` as `token`, which must see it.
async fn invitation(app: &TestApp, token: &str, id: &str) -> Value {
    json_of(
        app.get(&format!("/v1/invitations/{id}"), Some(token)).await,
        StatusCode::OK,
    )
    .await
}

/// A page of the service, as a browser gets it: (status, HTML).
async fn page(app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = app.get(path, None).await;
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/html"),
        "{path}: {content_type}"
    );
    (status, res.text().await.unwrap())
}

/// The whole tag of `html` that holds `needle` (from its `<` to its `>`).
fn tag_with<'a>(html: &'a str, needle: &str) -> &'a str {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in the page:\n{html}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

/// The text right inside the element with this `id` (up to its first child or its end).
fn text_of(html: &str, id: &str) -> String {
    let tag = tag_with(html, &format!("id=\"{id}\""));
    let start = html.find(tag).unwrap() + tag.len();
    let end = start + html[start..].find('<').unwrap();
    html[start..end].trim().to_string()
}

/// A trial's form with its parts in exactly this order (the helpers put the fields first).
enum Field<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a [u8]),
}

async fn send_form(app: &TestApp, fields: &[Field<'_>]) -> Response {
    let mut form = Form::new();
    for field in fields {
        form = match field {
            Field::Text(name, value) => form.text(name.to_string(), value.to_string()),
            Field::File(name, bytes) => form.part(
                "file",
                Part::bytes(bytes.to_vec()).file_name(name.to_string()),
            ),
        };
    }
    app.http
        .post(app.url("/v1/sandboxes?wait=60"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// A trial with these form fields, ready: its creation body.
async fn ready_trial(app: &TestApp, demo: &str, fields: &[(&str, &str)]) -> Value {
    let res = app.create_sandbox(demo, &csv(), fields, Some(60)).await;
    let created = json_of(res, StatusCode::CREATED).await;
    assert_eq!(created["status"], "ready", "{created}");
    created
}

fn id_and_token(created: &Value) -> (String, String) {
    (
        str_of(created, "id").to_string(),
        str_of(created, "token").to_string(),
    )
}

/// A refused creation left nothing behind: no sandbox directory, no Engine object, and no
/// record beside `kept` (the trials of the test, all ended already).
async fn assert_nothing_beside(app: &TestApp, kept: &[&str]) {
    assert!(
        app.sandbox_dirs().is_empty(),
        "sandbox directories: {:?} (uploads: {:?})",
        app.sandbox_dirs(),
        app.spool_entries()
    );
    assert!(
        app.instance_objects().is_empty(),
        "engine objects: {:?}",
        app.instance_objects()
    );
    let records: BTreeSet<String> = app
        .sandboxes()
        .await
        .iter()
        .map(|s| str_of(s, "id").to_string())
        .collect();
    let kept: BTreeSet<String> = kept.iter().map(|k| k.to_string()).collect();
    assert_eq!(records, kept, "sandbox records");
}

/// `prospect.json` as the demo reads it, from inside its container.
fn prospect_json_inside(id: &str) -> Value {
    let (ok, text) = sh_in(id, "cat /data/.testdrive/prospect.json");
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (uid, gid, mode) of `path` on the host, not following a link.
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (meta.uid(), meta.gid(), meta.mode() & 0o777)
}

/// An invitation of the vendor's to `demo` that expired an hour ago (made as the route
/// makes one, an hour and a minute back: no route makes the past).
async fn expired_invitation(app: &TestApp, vendor: &str, demo: &str) -> String {
    let request: InvitationRequest = serde_json::from_value(json!({
        "demo_id": demo, "company": "Initech", "expires_in_seconds": 60
    }))
    .unwrap();
    let terms = InvitationTerms::parse(&request).unwrap();
    let made_at = Timestamp::from_millis(Timestamp::now().millis() - 3_660_000);
    let invitation = Invitation::new(VendorId::parse(vendor).unwrap(), terms, made_at);
    app.state()
        .store
        .insert_invitation(&invitation)
        .await
        .unwrap();
    invitation.id.to_string()
}

/// The webhook of this type about this sandbox, once it has arrived: (signature, body,
/// body as JSON).
async fn delivered(received: &Recorded, kind: &str, sandbox: &str) -> (String, String, Value) {
    let matches = |body: &str| {
        serde_json::from_str::<Value>(body)
            .is_ok_and(|v| v["type"] == kind && v["sandbox"]["id"] == sandbox)
    };
    let got = poll(
        Duration::from_millis(50),
        async || received.lock().unwrap().clone(),
        |got| got.iter().any(|(_, body)| matches(body)),
    )
    .await;
    let (signature, body) = got.into_iter().find(|(_, body)| matches(body)).unwrap();
    let value = serde_json::from_str(&body).unwrap();
    (signature, body, value)
}

/// Sends `body` to `path` until the trial has said it five times (two were sent before),
/// then once more, which is refused.
async fn said_five_times(app: &TestApp, path: &str, token: &str, body: &Value, ok: StatusCode) {
    for _ in 0..3 {
        let res = app.post_json(path, Some(token), body).await;
        assert_eq!(res.status(), ok);
    }
    problem(
        app.post_json(path, Some(token), body).await,
        StatusCode::CONFLICT,
    )
    .await;
}

/// Waits until at least `at_least` webhooks of type `kind` arrived, checks every delivery's
/// signature, and says how many of `kind` there are.
async fn announced(received: &Recorded, secret: &str, kind: &str, at_least: usize) -> usize {
    let of_kind = |got: &[(String, String)]| {
        got.iter()
            .filter(|(_, b)| b.contains(&format!("\"type\":\"{kind}\"")))
            .count()
    };
    let got = poll(
        Duration::from_millis(50),
        async || received.lock().unwrap().clone(),
        |got| of_kind(got) >= at_least,
    )
    .await;
    for (signature, body) in &got {
        assert_eq!(signature, &signed(secret, body), "{body}");
    }
    of_kind(&got)
}

async fn funnel(app: &TestApp, token: &str, demo: &str, query: &str) -> Response {
    app.get(&format!("/v1/demos/{demo}/funnel{query}"), Some(token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_checked_and_each_vendor_sees_only_its_own() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let vendor = app.vendor_of(&key).await;
    let (other_key, other_demo) = app.static_demo(json!({})).await;
    let other_vendor = app.vendor_of(&other_key).await;

    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "email": "ana@globex.example",
               "note": "Hi Ana, as promised.", "expires_in_seconds": 86400, "max_trials": 2}),
    )
    .await;
    let keys: BTreeSet<&str> = made
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "url",
            "demo_id",
            "vendor_id",
            "company",
            "email",
            "note",
            "created_at",
            "expires_at",
            "opened_at",
            "sandbox_id",
            "used_at",
            "max_trials",
            "trials",
            "status"
        ]),
        "{made}"
    );
    let id = str_of(&made, "id");
    assert_eq!(made["url"], app.url(&format!("/invitations/{id}")));
    assert_eq!(made["demo_id"], demo.as_str());
    assert_eq!(made["vendor_id"], vendor.as_str());
    assert_eq!(made["company"], "Globex");
    assert_eq!(made["email"], "ana@globex.example");
    assert_eq!(made["note"], "Hi Ana, as promised.");
    assert_eq!(made["max_trials"], 2);
    assert_eq!(made["trials"], 0);
    assert_eq!(made["status"], "open");
    for unset in ["opened_at", "sandbox_id", "used_at"] {
        assert!(made[unset].is_null(), "{unset}: {made}");
    }
    let created = Timestamp::parse_rfc3339(str_of(&made, "created_at")).unwrap();
    let expires = Timestamp::parse_rfc3339(str_of(&made, "expires_at")).unwrap();
    assert_eq!(expires.millis() - created.millis(), 86_400_000);
    assert_eq!(invitation(&app, &key, id).await, made);

    // Only a company is needed: one trial, open 14 days.
    let plain = invite(&app, &key, json!({"demo_id": demo, "company": "Initech"})).await;
    assert_eq!(plain["max_trials"], 1);
    assert!(
        plain["email"].is_null() && plain["note"].is_null(),
        "{plain}"
    );
    let created = Timestamp::parse_rfc3339(str_of(&plain, "created_at")).unwrap();
    let expires = Timestamp::parse_rfc3339(str_of(&plain, "expires_at")).unwrap();
    assert_eq!(expires.millis() - created.millis(), 14 * 86_400_000);

    // What is wrong is named.
    for (body, field) in [
        (json!({"demo_id": demo}), "company"),
        (json!({"demo_id": demo, "company": ""}), "company"),
        (
            json!({"demo_id": demo, "company": "X", "email": "nobody"}),
            "email",
        ),
        (
            json!({"demo_id": demo, "company": "X", "expires_in_seconds": 10}),
            "expires_in_seconds",
        ),
        (
            json!({"demo_id": demo, "company": "X", "expires_in_seconds": 91 * 86400}),
            "expires_in_seconds",
        ),
        (
            json!({"demo_id": demo, "company": "X", "max_trials": 0}),
            "max_trials",
        ),
        (
            json!({"demo_id": demo, "company": "X", "max_trials": 101}),
            "max_trials",
        ),
        (json!({"company": "X"}), "demo_id"),
        // Only operators name the vendor.
        (
            json!({"demo_id": demo, "company": "X", "vendor_id": vendor}),
            "vendor_id",
        ),
    ] {
        let res = app.post_json("/v1/invitations", Some(&key), &body).await;
        let problem = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    // Another vendor's demo does not exist for this vendor.
    let res = app
        .post_json(
            "/v1/invitations",
            Some(&key),
            &json!({"demo_id": other_demo, "company": "X"}),
        )
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    // Without a token, 401.
    let res = app
        .post_json(
            "/v1/invitations",
            None,
            &json!({"demo_id": demo, "company": "X"}),
        )
        .await;
    problem(res, StatusCode::UNAUTHORIZED).await;

    // Operators invite on a vendor's behalf: the vendor named must be the demo's.
    let by_admin = invite(
        &app,
        &app.admin,
        json!({"demo_id": other_demo, "company": "Umbrella", "vendor_id": other_vendor}),
    )
    .await;
    assert_eq!(by_admin["vendor_id"], other_vendor.as_str());
    let unnamed = invite(
        &app,
        &app.admin,
        json!({"demo_id": other_demo, "company": "Acme"}),
    )
    .await;
    assert_eq!(unnamed["vendor_id"], other_vendor.as_str());
    let res = app
        .post_json(
            "/v1/invitations",
            Some(&app.admin),
            &json!({"demo_id": other_demo, "company": "X", "vendor_id": vendor}),
        )
        .await;
    let wrong = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(wrong["field"], "vendor_id");

    // Each vendor lists its own, newest first; operators list them all.
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| str_of(i, "id").to_string())
            .collect()
    };
    let listed = async |token: &str| {
        let body = json_of(
            app.get("/v1/invitations", Some(token)).await,
            StatusCode::OK,
        )
        .await;
        let made: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| str_of(i, "created_at"))
            .collect();
        assert!(made.is_sorted_by(|a, b| a >= b), "newest first: {body}");
        ids(&body).into_iter().collect::<BTreeSet<String>>()
    };
    let set = |ids: &[&Value]| -> BTreeSet<String> {
        ids.iter().map(|i| str_of(i, "id").to_string()).collect()
    };
    assert_eq!(listed(&key).await, set(&[&made, &plain]));
    assert_eq!(listed(&other_key).await, set(&[&by_admin, &unnamed]));
    assert_eq!(
        listed(&app.admin).await,
        set(&[&made, &plain, &by_admin, &unnamed])
    );
    // Another vendor's invitation does not exist for this one; operators see it.
    let res = app
        .get(&format!("/v1/invitations/{id}"), Some(&other_key))
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    assert_eq!(invitation(&app, &app.admin, id).await, made);
    let res = app
        .get(
            &format!("/v1/invitations/{}", uuid::Uuid::new_v4()),
            Some(&key),
        )
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    assert!(app.sandboxes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_page_greets_the_company_and_its_trial_carries_the_invitation() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "email": "ana@globex.example",
               "note": "Hi Ana, here is the demo we talked about."}),
    )
    .await;
    let id = str_of(&made, "id").to_string();

    // The link opens the demo's page greeting the company with the note, the information
    // sheet filled in, the invitation in the form.
    let (status, html) = page(&app, &format!("/invitations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "invited-company"), "Globex");
    assert_eq!(
        text_of(&html, "invitation-note"),
        "Hi Ana, here is the demo we talked about."
    );
    let hidden = tag_with(&html, "name=\"invitation\"");
    assert!(
        hidden.contains("type=\"hidden\"") && hidden.contains(&format!("value=\"{id}\"")),
        "{hidden}"
    );
    assert!(
        tag_with(&html, &format!("name=\"demo\" value=\"{demo}\"")).contains("hidden"),
        "the demo's own form"
    );
    assert!(tag_with(&html, "name=\"email\"").contains("value=\"ana@globex.example\""));
    assert!(tag_with(&html, "name=\"company\"").contains("value=\"Globex\""));
    // The demo's own page greets nobody.
    let (status, plain) = page(&app, &format!("/demos/{demo}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!plain.contains("invited-company") && !plain.contains("name=\"invitation\""));

    // Opening it is noted (once: the first time).
    let opened = invitation(&app, &key, &id).await;
    let opened_at = str_of(&opened, "opened_at").to_string();
    assert_eq!(opened["status"], "open");
    assert!(opened["sandbox_id"].is_null(), "{opened}");
    let (status, _) = page(&app, &format!("/invitations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        invitation(&app, &key, &id).await["opened_at"],
        opened_at.as_str()
    );

    // The prospect starts the trial from the page (its form as it is sent).
    let created = ready_trial(
        &app,
        &demo,
        &[
            ("invitation", id.as_str()),
            ("email", "ana@globex.example"),
            ("company", "Globex"),
        ],
    )
    .await;
    let (sandbox, token) = id_and_token(&created);
    assert_eq!(created["invitation_id"], id.as_str(), "{created}");
    let own: Value = app
        .get(&format!("/v1/sandboxes/{sandbox}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["invitation_id"], id.as_str(), "the prospect's view");
    for who in [&key, &app.admin] {
        let seen = json_of(
            app.get(&format!("/v1/sandboxes/{sandbox}"), Some(who))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["invitation_id"], id.as_str(), "{seen}");
        assert_eq!(seen["prospect"]["company"], "Globex");
    }

    // A prospect's token invites nobody, and lists nothing.
    let res = app
        .post_json(
            "/v1/invitations",
            Some(&token),
            &json!({"demo_id": demo, "company": "Globex"}),
        )
        .await;
    problem(res, StatusCode::FORBIDDEN).await;
    problem(
        app.get("/v1/invitations", Some(&token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // The invitation is used: it names its trial, and its page says so politely.
    let used = invitation(&app, &key, &id).await;
    assert_eq!(used["sandbox_id"], sandbox.as_str());
    assert_eq!(used["trials"], 1);
    assert_eq!(used["status"], "used");
    assert_eq!(used["opened_at"], opened_at.as_str());
    assert!(used["used_at"].is_string(), "{used}");
    let listed = json_of(app.get("/v1/invitations", Some(&key)).await, StatusCode::OK).await;
    assert_eq!(listed["items"][0]["sandbox_id"], sandbox.as_str());
    let (status, html) = page(&app, &format!("/invitations/{id}")).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        tag_with(&html, "id=\"invitation-closed\"").contains("data-reason=\"used\""),
        "{html}"
    );
    assert!(
        !html.contains("name=\"invitation\""),
        "no form to start another"
    );

    // The report holds the invitation, also after the end.
    app.end_sandbox(&sandbox, &token).await;
    let (_, report) = app.report(&sandbox, &key).await;
    assert_eq!(
        report["invitation"],
        json!({
            "id": id, "company": "Globex", "email": "ana@globex.example",
            "note": "Hi Ana, here is the demo we talked about.",
            "created_at": made["created_at"], "opened_at": opened_at
        }),
        "{report}"
    );

    // A second trial with it is refused, and leaves nothing behind.
    let res = app
        .create_sandbox(&demo, &csv(), &[("invitation", id.as_str())], Some(60))
        .await;
    problem(res, StatusCode::CONFLICT).await;
    assert_nothing_beside(&app, &[&sandbox]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_says_so_and_refuses_a_trial_leaving_nothing() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let vendor = app.vendor_of(&key).await;
    let expired = expired_invitation(&app, &vendor, &demo).await;

    let seen = invitation(&app, &key, &expired).await;
    assert_eq!(seen["status"], "expired", "{seen}");
    let (status, html) = page(&app, &format!("/invitations/{expired}")).await;
    assert_eq!(status, StatusCode::GONE);
    let closed = tag_with(&html, "id=\"invitation-closed\"");
    assert!(closed.contains("data-reason=\"expired\""), "{closed}");
    assert!(
        html.contains("Initech"),
        "it is the company's invitation: {html}"
    );
    assert!(!html.contains("name=\"invitation\""), "no form: {html}");

    // Given after the demo (refused before the files), or before it (once they are in).
    let res = app
        .create_sandbox(&demo, &csv(), &[("invitation", expired.as_str())], Some(60))
        .await;
    let refusal = problem(res, StatusCode::CONFLICT).await;
    assert!(str_of(&refusal, "detail").contains("expired"), "{refusal}");
    app.assert_left_nothing().await;
    let res = send_form(
        &app,
        &[
            Field::Text("invitation", &expired),
            Field::Text("demo", &demo),
            Field::File("a.csv", b"x,y\n1,2\n"),
        ],
    )
    .await;
    problem(res, StatusCode::CONFLICT).await;
    app.assert_left_nothing().await;

    // An invitation that does not exist, or is for another demo, is not one.
    let (other_key, other_demo) = app.static_demo(json!({})).await;
    let elsewhere = invite(
        &app,
        &other_key,
        json!({"demo_id": other_demo, "company": "X"}),
    )
    .await;
    for wrong in [
        str_of(&elsewhere, "id").to_string(),
        uuid::Uuid::new_v4().to_string(),
        "not-an-id".to_string(),
    ] {
        let res = send_form(
            &app,
            &[
                Field::Text("demo", &demo),
                Field::File("a.csv", b"x,y\n1,2\n"),
                Field::Text("invitation", &wrong),
            ],
        )
        .await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], "invitation", "{wrong}: {refusal}");
        app.assert_left_nothing().await;
    }
    let unknown = format!("/invitations/{}", uuid::Uuid::new_v4());
    assert_eq!(
        app.get(&unknown, None).await.status(),
        StatusCode::NOT_FOUND
    );
    // The other vendor's invitation is still open: a refusal on another demo took nothing.
    let still = invitation(&app, &other_key, str_of(&elsewhere, "id")).await;
    assert_eq!(still["status"], "open");
    assert_eq!(still["trials"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_trial_does_not_use_up_its_invitation() {
    let app = TestApp::spawn().await;
    // The demo loads good.csv only.
    let (key, demo) = app
        .static_demo(json!({"load_command": ["sh", "-c", "test -f /data/good.csv"]}))
        .await;
    let made = invite(&app, &key, json!({"demo_id": demo, "company": "Globex"})).await;
    let id = str_of(&made, "id").to_string();

    let res = app
        .create_sandbox(
            &demo,
            &[("bad.csv", b"x\n1\n".to_vec())],
            &[("invitation", id.as_str())],
            Some(60),
        )
        .await;
    let failed = json_of(res, StatusCode::CREATED).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["invitation_id"], id.as_str());
    let failed_id = str_of(&failed, "id").to_string();
    app.wait_as_admin(&failed_id, |s| s["data_deleted_at"].is_string())
        .await;
    assert_no_objects(&failed_id);

    // Still open: its page offers the form, and the next trial may start.
    let open = invitation(&app, &key, &id).await;
    assert_eq!(open["status"], "open", "{open}");
    assert_eq!(open["trials"], 0);
    let (status, html) = page(&app, &format!("/invitations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("name=\"invitation\""), "{html}");

    let res = app
        .create_sandbox(
            &demo,
            &[("good.csv", b"x\n1\n".to_vec())],
            &[("invitation", id.as_str())],
            Some(60),
        )
        .await;
    let created = json_of(res, StatusCode::CREATED).await;
    assert_eq!(created["status"], "ready", "{created}");
    let (sandbox, token) = id_and_token(&created);
    let used = invitation(&app, &key, &id).await;
    assert_eq!(used["status"], "used", "{used}");
    assert_eq!(used["trials"], 1);
    assert_eq!(used["sandbox_id"], sandbox.as_str());

    // An ended trial (not a failed one) keeps it used.
    app.end_sandbox(&sandbox, &token).await;
    assert_eq!(invitation(&app, &key, &id).await["status"], "used");
    let res = app
        .create_sandbox(
            &demo,
            &[("good.csv", b"x\n1\n".to_vec())],
            &[("invitation", id.as_str())],
            Some(60),
        )
        .await;
    problem(res, StatusCode::CONFLICT).await;
    assert_nothing_beside(&app, &[&failed_id, &sandbox]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_racing_for_the_last_trial_of_an_invitation_start_one() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "max_trials": 2}),
    )
    .await;
    let id = str_of(&made, "id").to_string();
    let first = ready_trial(&app, &demo, &[("invitation", id.as_str())]).await;
    let (first_id, first_token) = id_and_token(&first);
    assert_eq!(invitation(&app, &key, &id).await["status"], "open");

    // Two prospects send the link's form at once for its last trial.
    let send = || async {
        let res = app
            .create_sandbox(&demo, &csv(), &[("invitation", id.as_str())], Some(60))
            .await;
        let status = res.status();
        (status, res.text().await.unwrap())
    };
    let (a, b) = tokio::join!(send(), send());
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let won = [a, b]
        .into_iter()
        .find(|(s, _)| *s == StatusCode::CREATED)
        .unwrap();
    let won: Value = serde_json::from_str(&won.1).unwrap();
    let (won_id, won_token) = id_and_token(&won);
    let used = invitation(&app, &key, &id).await;
    assert_eq!(used["trials"], 2, "{used}");
    assert_eq!(used["status"], "used");
    assert_eq!(used["sandbox_id"], won_id.as_str());

    app.end_sandbox(&first_id, &first_token).await;
    app.end_sandbox(&won_id, &won_token).await;
    assert_nothing_beside(&app, &[&first_id, &won_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_asking_malformed_questions_is_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Asks badly").await;
    let manifest = |patch: Value| {
        let mut m = json!({
            "slug": "asks", "title": "Asks", "image": STATIC_FILES,
            "port": 8080, "data_path": "/data"
        });
        merge(&mut m, patch);
        m
    };
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": format!("q{i}"), "label": "x"}))
        .collect();
    let options: Vec<String> = (0..21).map(|i| format!("o{i}")).collect();
    for (list, bad, field) in [
        ("questions", json!([{"label": "no id"}]), "questions[0].id"),
        (
            "questions",
            json!([{"id": "Role", "label": "x"}]),
            "questions[0].id",
        ),
        (
            "questions",
            json!([{"id": "a b", "label": "x"}]),
            "questions[0].id",
        ),
        (
            "questions",
            json!([{"id": "x".repeat(41), "label": "x"}]),
            "questions[0].id",
        ),
        (
            "questions",
            json!([{"id": "a", "label": "x"}, {"id": "a", "label": "y"}]),
            "questions[1].id",
        ),
        ("questions", json!([{"id": "a"}]), "questions[0].label"),
        (
            "questions",
            json!([{"id": "a", "label": "x", "kind": "scale"}]),
            "questions[0].kind",
        ),
        (
            "questions",
            json!([{"id": "a", "label": "x", "kind": "choice", "options": ["one"]}]),
            "questions[0].options",
        ),
        (
            "questions",
            json!([{"id": "a", "label": "x", "kind": "choice", "options": options}]),
            "questions[0].options",
        ),
        (
            "questions",
            json!([{"id": "a", "label": "x", "kind": "choice", "options": ["a", "a"]}]),
            "questions[0].options",
        ),
        (
            "questions",
            json!([{"id": "a", "label": "x", "options": ["a", "b"]}]),
            "questions[0].options",
        ),
        ("questions", json!(many), "questions"),
        (
            "exit_questions",
            json!([{"id": "ok", "label": "x"}, {"id": "", "label": "y"}]),
            "exit_questions[1].id",
        ),
    ] {
        let res = app
            .post_json("/v1/demos", Some(&key), &manifest(json!({ list: bad })))
            .await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], field, "{bad}: {refusal}");
    }
    let listed = json_of(app.get("/v1/demos", Some(&key)).await, StatusCode::OK).await;
    assert_eq!(listed["items"], json!([]), "no demo was made");
    // Twenty questions of twenty choices each are fine.
    let twenty: Vec<Value> = (0..20)
        .map(|i| {
            json!({"id": format!("q{i}"), "label": "x", "kind": "choice",
                        "options": &options[..20]})
        })
        .collect();
    app.demo(&key, manifest(json!({"questions": twenty}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_checked_against_the_questions_and_a_refusal_leaves_nothing() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(asking()).await;
    let long = "x".repeat(2001);
    for (fields, field) in [
        (vec![("q.goal", "faster")], "q.role"),
        (vec![("q.role", "")], "q.role"),
        (vec![("q.role", "CEO")], "q.role"),
        (vec![("q.role", "analyst")], "q.role"),
        (vec![("q.role", "Analyst"), ("q.age", "40")], "q.age"),
        (
            vec![("q.role", "Analyst"), ("q.verdict", "Yes")],
            "q.verdict",
        ),
        (
            vec![("q.role", "Analyst"), ("q.role", "Engineer")],
            "q.role",
        ),
        (
            vec![("q.role", "Analyst"), ("q.goal", long.as_str())],
            "q.goal",
        ),
    ] {
        let res = app.create_sandbox(&demo, &csv(), &fields, Some(60)).await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], field, "{fields:?}: {refusal}");
        app.assert_left_nothing().await;
    }
    // After the files too (the answers come last).
    let res = send_form(
        &app,
        &[
            Field::Text("demo", &demo),
            Field::File("a.csv", b"x,y\n1,2\n"),
            Field::Text("q.role", "Manager"),
        ],
    )
    .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.assert_left_nothing().await;

    // Good answers are kept, trimmed; an empty one is no answer. The vendor and the
    // operators read them; the prospect's own view does not repeat them.
    let created = ready_trial(&app, &demo, &[("q.role", "Analyst"), ("q.goal", "  ")]).await;
    let (sandbox, token) = id_and_token(&created);
    assert!(created.get("answers").is_none(), "{created}");
    assert!(created["invitation_id"].is_null(), "{created}");
    let own = json_of(
        app.get(&format!("/v1/sandboxes/{sandbox}"), Some(&token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(own.get("answers").is_none(), "{own}");
    for who in [&key, &app.admin] {
        let seen = json_of(
            app.get(&format!("/v1/sandboxes/{sandbox}"), Some(who))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["answers"], json!({"role": "Analyst"}), "{seen}");
    }
    let second = ready_trial(
        &app,
        &demo,
        &[
            ("q.goal", " Faster month-end close "),
            ("q.role", "Engineer"),
        ],
    )
    .await;
    let (second_id, second_token) = id_and_token(&second);
    let seen = app.sandbox(&second_id).await;
    assert_eq!(
        seen["answers"],
        json!({"role": "Engineer", "goal": "Faster month-end close"})
    );
    let (_, report) = app.report(&second_id, &key).await;
    assert_eq!(
        report["answers"],
        json!({"role": "Engineer", "goal": "Faster month-end close"})
    );
    assert!(report["invitation"].is_null(), "{report}");
    assert_eq!(report["feedback"], json!([]));
    assert_eq!(report["contact_requests"], json!([]));
    // A demo that asks nothing takes no answers.
    let (_, silent) = app.static_demo(json!({})).await;
    let res = app
        .create_sandbox(&silent, &csv(), &[("q.role", "Analyst")], Some(60))
        .await;
    let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(refusal["field"], "q.role");

    app.end_sandbox(&sandbox, &token).await;
    app.end_sandbox(&second_id, &second_token).await;
    assert_nothing_beside(&app, &[&sandbox, &second_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_told_what_the_prospect_chose_to_tell_before_it_is_ready() {
    let app = TestApp::spawn().await;
    // The load command runs before the demo counts as ready: it keeps what it found.
    let mut overrides = asking();
    merge(
        &mut overrides,
        json!({"load_command": ["sh", "-c",
            "cp /data/.testdrive/prospect.json /data/seen-by-load.json"]}),
    );
    let (key, demo) = app.static_demo(overrides).await;
    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "email": "ana@globex.example",
               "note": "Hi Ana, your data stays yours."}),
    )
    .await;
    let created = ready_trial(
        &app,
        &demo,
        &[
            ("invitation", str_of(&made, "id")),
            ("email", "ana@globex.example"),
            ("company", "Globex"),
            ("needs", "Does it handle our regions?"),
            ("q.role", "Analyst"),
            ("q.goal", "A faster close"),
        ],
    )
    .await;
    let (sandbox, token) = id_and_token(&created);
    let expected = json!({
        "company": "Globex",
        "needs": "Does it handle our regions?",
        "answers": {"role": "Analyst", "goal": "A faster close"},
        "invitation_note": "Hi Ana, your data stays yours."
    });
    assert_eq!(prospect_json_inside(&sandbox), expected);
    let (ok, seen) = sh_in(&sandbox, "cat /data/seen-by-load.json");
    assert!(ok, "{seen}");
    assert_eq!(
        serde_json::from_str::<Value>(&seen).unwrap(),
        expected,
        "it was there before the load command ran"
    );
    let (ok, all) = sh_in(&sandbox, "cat /data/.testdrive/* /data/*");
    assert!(ok, "{all}");
    assert!(!all.contains("ana@globex"), "never the email: {all}");
    // The demo's user owns them, and only it may read them.
    let (ok, modes) = sh_in(
        &sandbox,
        "stat -c '%u:%g %a' /data/.testdrive /data/.testdrive/prospect.json",
    );
    assert!(ok, "{modes}");
    assert_eq!(
        modes.lines().collect::<Vec<_>>(),
        ["65534:65534 700", "65534:65534 600"]
    );
    let note_dir = app
        .data_dir
        .join("sandboxes")
        .join(&sandbox)
        .join("data/.testdrive");
    assert_eq!(owner_and_mode(&note_dir), (65534, 65534, 0o700));
    assert_eq!(
        owner_and_mode(&note_dir.join("prospect.json")),
        (65534, 65534, 0o600)
    );
    assert_eq!(
        names_in(&note_dir),
        ["prospect.json"],
        "nothing else is there"
    );

    // Only what was told: answers alone, or nothing at all (the file is still there).
    let bare = ready_trial(&app, &demo, &[("q.role", "Engineer")]).await;
    let (bare_id, bare_token) = id_and_token(&bare);
    assert_eq!(
        prospect_json_inside(&bare_id),
        json!({"answers": {"role": "Engineer"}})
    );
    let (_, silent) = app.static_demo(json!({})).await;
    let silent = ready_trial(&app, &silent, &[("email", "bob@initech.example")]).await;
    let (silent_id, silent_token) = id_and_token(&silent);
    assert_eq!(prospect_json_inside(&silent_id), json!({}));

    // It goes with the rest of the data.
    app.end_sandbox(&sandbox, &token).await;
    assert!(!note_dir.exists());
    app.end_sandbox(&bare_id, &bare_token).await;
    app.end_sandbox(&silent_id, &silent_token).await;
    assert_nothing_beside(&app, &[&sandbox, &bare_id, &silent_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_may_not_take_the_name_testdrive_keeps_for_the_prospect() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": ["csv", "json"]}}))
        .await;
    for files in [
        vec![(".testdrive", b"{}".to_vec())],
        vec![
            ("a.csv", b"x\n1\n".to_vec()),
            (".testdrive", b"x\n".to_vec()),
        ],
    ] {
        let res = app.create_sandbox(&demo, &files, &[], Some(60)).await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], "file", "{refusal}");
        assert!(
            str_of(&refusal, "detail").contains(".testdrive"),
            "{refusal}"
        );
        app.assert_left_nothing().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_that_claims_a_warm_member_gets_its_prospect_json_too() {
    require_images();
    let app = TestApp::spawn().await;
    let mut overrides = asking();
    merge(&mut overrides, json!({"warm_pool": 1}));
    let (key, demo) = app.static_demo(overrides).await;
    app.wait_pool(&key, &demo, 1).await;
    // The member runs knowing nothing about anyone.
    let member = app.warm_member(&demo);
    let (ok, listing) = sh_in(&member, "ls -a /data");
    assert!(ok, "{listing}");
    assert!(!listing.contains(".testdrive"), "{listing}");

    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "note": "Welcome back"}),
    )
    .await;
    let created = ready_trial(
        &app,
        &demo,
        &[
            ("invitation", str_of(&made, "id")),
            ("company", "Globex"),
            ("needs", "Regions?"),
            ("q.role", "Engineer"),
        ],
    )
    .await;
    let (sandbox, token) = id_and_token(&created);
    assert_eq!(sandbox, member, "the trial took the member");
    let events = app.events(&sandbox, &token).await;
    assert!(
        str_of(&events[0], "detail").contains("warm pool"),
        "{events:?}"
    );
    assert_eq!(created["invitation_id"], made["id"]);
    assert_eq!(
        invitation(&app, &key, str_of(&made, "id")).await["status"],
        "used"
    );
    assert_eq!(
        prospect_json_inside(&sandbox),
        json!({"company": "Globex", "needs": "Regions?", "answers": {"role": "Engineer"},
               "invitation_note": "Welcome back"})
    );
    let (ok, modes) = sh_in(
        &sandbox,
        "stat -c '%u:%g %a' /data/.testdrive /data/.testdrive/prospect.json",
    );
    assert!(ok, "{modes}");
    assert_eq!(
        modes.lines().collect::<Vec<_>>(),
        ["65534:65534 700", "65534:65534 600"]
    );

    app.end_sandbox(&sandbox, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_the_prospects_checked_against_the_exit_questions_and_signed_to_the_vendor() {
    require_images();
    let app = webhook_app().await;
    let (addr, received) = recording_receiver().await;
    let hooked = app
        .hooked_demo(asking(), &format!("http://{addr}/hook"))
        .await;
    let secret = str_of(&hooked.answer, "webhook_secret").to_string();
    let created = ready_trial(&app, &hooked.demo, &[("q.role", "Analyst")]).await;
    let (sandbox, token) = id_and_token(&created);
    let path = format!("/v1/sandboxes/{sandbox}/feedback");
    let good = json!({"answers": {"verdict": "Not yet", "missing": " Excel export "}});

    // Only the prospect speaks for the prospect.
    for who in [hooked.key.as_str(), app.admin.as_str()] {
        problem(
            app.post_json(&path, Some(who), &good).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    problem(
        app.post_json(&path, None, &good).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Answers to the exit questions only, a choice among its options, at least one.
    for (body, field) in [
        (json!({"answers": {"role": "Engineer"}}), "answers.role"),
        (json!({"answers": {"verdict": "Maybe"}}), "answers.verdict"),
        (
            json!({"answers": {"missing": "x".repeat(2001)}}),
            "answers.missing",
        ),
        (json!({"answers": {}}), "answers"),
        (json!({"answers": {"verdict": ""}}), "answers"),
    ] {
        let res = app.post_json(&path, Some(&token), &body).await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], field, "{body}: {refusal}");
    }
    let res = app
        .post_json(&path, Some(&token), &json!({"answers": {"verdict": 3}}))
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());

    let res = app.post_json(&path, Some(&token), &good).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (signature, body, hook) = delivered(&received, "sandbox.feedback", &sandbox).await;
    assert_eq!(
        signature,
        signed(&secret, &body),
        "signed with the vendor's secret"
    );
    assert_eq!(
        hook["feedback"],
        json!({"answers": {"verdict": "Not yet", "missing": "Excel export"}}),
        "{hook}"
    );
    assert_eq!(hook["sandbox"]["answers"], json!({"role": "Analyst"}));
    assert!(hook.get("contact").is_none(), "{hook}");
    assert!(!body.contains(&token), "no token in a webhook");

    // Also after the end; the report holds each, in order.
    app.end_sandbox(&sandbox, &token).await;
    let after = json!({"answers": {"verdict": "Yes"}});
    let res = app.post_json(&path, Some(&token), &after).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let report = json_of(
        app.get(
            &format!("/v1/sandboxes/{sandbox}/report"),
            Some(&hooked.key),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let feedback = report["feedback"].as_array().unwrap();
    assert_eq!(feedback.len(), 2, "{report}");
    assert_eq!(
        feedback[0]["answers"],
        json!({"verdict": "Not yet", "missing": "Excel export"})
    );
    assert_eq!(feedback[1]["answers"], json!({"verdict": "Yes"}));
    assert!(feedback[0]["at"].as_str() <= feedback[1]["at"].as_str());
    assert_eq!(report["answers"], json!({"role": "Analyst"}));
    let kinds = kinds(&app.events(&sandbox, &token).await);
    assert_eq!(
        kinds.iter().filter(|k| *k == "feedback").count(),
        2,
        "{kinds:?}"
    );

    // Five times at most, each announced once, signed.
    said_five_times(&app, &path, &token, &after, StatusCode::NO_CONTENT).await;
    assert_eq!(
        announced(&received, &secret, "sandbox.feedback", 5).await,
        5
    );
    assert_nothing_beside(&app, &[&sandbox]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_request_reaches_the_vendor_signed_and_stays_in_the_report() {
    require_images();
    let app = webhook_app().await;
    let (addr, received) = recording_receiver().await;
    let hooked = app
        .hooked_demo(json!({}), &format!("http://{addr}/hook"))
        .await;
    let secret = str_of(&hooked.answer, "webhook_secret").to_string();
    let made = invite(
        &app,
        &hooked.key,
        json!({"demo_id": hooked.demo, "company": "Globex", "email": "ana@globex.example"}),
    )
    .await;
    let invitation_id = str_of(&made, "id").to_string();
    let created = ready_trial(
        &app,
        &hooked.demo,
        &[
            ("invitation", invitation_id.as_str()),
            ("email", "ana@globex.example"),
            ("company", "Globex"),
        ],
    )
    .await;
    let (sandbox, token) = id_and_token(&created);
    let path = format!("/v1/sandboxes/{sandbox}/contact");
    let message = json!({"message": "Could someone call me about pricing?"});

    for who in [hooked.key.as_str(), app.admin.as_str()] {
        problem(
            app.post_json(&path, Some(who), &message).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    for bad in [
        json!({"message": "   "}),
        json!({"message": "x".repeat(2001)}),
        json!({"message": "ring\u{0007}"}),
    ] {
        let res = app.post_json(&path, Some(&token), &bad).await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], "message", "{refusal}");
    }
    let res = app.post_json(&path, Some(&token), &message).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let (signature, body, hook) =
        delivered(&received, "prospect.contact_requested", &sandbox).await;
    assert_eq!(signature, signed(&secret, &body));
    assert_eq!(
        hook["contact"],
        json!({"message": "Could someone call me about pricing?"})
    );
    assert_eq!(hook["sandbox"]["invitation_id"], invitation_id.as_str());
    assert_eq!(hook["sandbox"]["prospect"]["email"], "ana@globex.example");
    assert!(hook.get("feedback").is_none(), "{hook}");
    // The trial's other webhooks name the invitation too.
    for kind in ["sandbox.created", "sandbox.ready"] {
        let (_, _, hook) = delivered(&received, kind, &sandbox).await;
        assert_eq!(
            hook["sandbox"]["invitation_id"],
            invitation_id.as_str(),
            "{hook}"
        );
    }

    // The message is the vendor's to read in the report, not a line of history.
    let events = app.events(&sandbox, &token).await;
    let history = serde_json::to_string(&events).unwrap();
    assert!(history.contains("contact_requested"), "{history}");
    assert!(!history.contains("pricing"), "{history}");
    app.end_sandbox(&sandbox, &token).await;
    let res = app
        .post_json(&path, Some(&token), &json!({"message": "Still there?"}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "also after the end");
    let (_, report) = app.report(&sandbox, &app.admin).await;
    let asked: Vec<&str> = report["contact_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["at"].is_string(), "{c}");
            str_of(c, "message")
        })
        .collect();
    assert_eq!(
        asked,
        ["Could someone call me about pricing?", "Still there?"]
    );
    assert_eq!(report["invitation"]["id"], invitation_id.as_str());
    assert_eq!(report["invitation"]["company"], "Globex");

    // Five times at most, each announced once, signed.
    said_five_times(&app, &path, &token, &message, StatusCode::ACCEPTED).await;
    assert_eq!(
        announced(&received, &secret, "prospect.contact_requested", 5).await,
        5
    );
    assert_nothing_beside(&app, &[&sandbox]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_counts_how_far_the_demos_visitors_got() {
    let app = TestApp::spawn().await;
    // The demo loads anything but bad.csv.
    let mut overrides = asking();
    merge(
        &mut overrides,
        json!({"load_command": ["sh", "-c", "test ! -e /data/bad.csv"]}),
    );
    let (key, demo) = app.static_demo(overrides).await;
    let (other_key, other_demo) = app.static_demo(json!({})).await;

    // A fresh demo: nothing yet.
    let empty = json_of(funnel(&app, &key, &demo, "").await, StatusCode::OK).await;
    for step in [
        "page_views",
        "trials",
        "ready",
        "opened",
        "active_5m",
        "extended",
        "feedback",
        "contact_requested",
    ] {
        assert_eq!(empty[step], 0, "{step}: {empty}");
    }
    assert_eq!(empty["demo_id"], demo.as_str());
    assert!(empty["since"].as_str() < empty["until"].as_str(), "{empty}");

    // Two views of the demo's page, one of an invitation's; one of another demo's.
    for path in [
        format!("/demos/{demo}"),
        format!("/demos/{demo}"),
        format!("/demos/{other_demo}"),
    ] {
        assert_eq!(page(&app, &path).await.0, StatusCode::OK);
    }
    let made = invite(&app, &key, json!({"demo_id": demo, "company": "Globex"})).await;
    let invitation_id = str_of(&made, "id").to_string();
    assert_eq!(
        page(&app, &format!("/invitations/{invitation_id}")).await.0,
        StatusCode::OK
    );

    // Three trials: one opened, extended, with feedback and a contact request; one left
    // alone; one that failed before it was ready.
    let used = ready_trial(
        &app,
        &demo,
        &[
            ("invitation", invitation_id.as_str()),
            ("q.role", "Analyst"),
        ],
    )
    .await;
    let (used_id, used_token) = id_and_token(&used);
    let idle = ready_trial(&app, &demo, &[("q.role", "Engineer")]).await;
    let (idle_id, idle_token) = id_and_token(&idle);
    let res = app
        .create_sandbox(
            &demo,
            &[("bad.csv", b"x\n1\n".to_vec())],
            &[("q.role", "Analyst")],
            Some(60),
        )
        .await;
    let broken = json_of(res, StatusCode::CREATED).await;
    assert_eq!(broken["status"], "failed", "{broken}");
    let broken_id = str_of(&broken, "id").to_string();

    assert_eq!(
        app.open(&used_id, &used_token, "/a.csv").await.status(),
        StatusCode::OK
    );
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{used_id}/extend"),
            Some(&used_token),
            &json!({"seconds": 60}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Another trial's token speaks for nobody here.
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{used_id}/contact"),
            Some(&idle_token),
            &json!({"message": "Call me"}),
        )
        .await;
    problem(res, StatusCode::NOT_FOUND).await;
    for (path, body, status) in [
        (
            "feedback",
            json!({"answers": {"verdict": "Yes"}}),
            StatusCode::NO_CONTENT,
        ),
        (
            "feedback",
            json!({"answers": {"verdict": "Not yet"}}),
            StatusCode::NO_CONTENT,
        ),
        (
            "contact",
            json!({"message": "Call me"}),
            StatusCode::ACCEPTED,
        ),
    ] {
        let res = app
            .post_json(
                &format!("/v1/sandboxes/{used_id}/{path}"),
                Some(&used_token),
                &body,
            )
            .await;
        assert_eq!(res.status(), status, "{path}");
    }

    // Proxy activity reaches the database in batches: the funnel shows it once written.
    let counts = poll(
        Duration::from_millis(200),
        async || json_of(funnel(&app, &key, &demo, "").await, StatusCode::OK).await,
        |f| f["opened"] == 1,
    )
    .await;
    assert_eq!(
        counts,
        json!({
            "demo_id": demo, "since": counts["since"], "until": counts["until"],
            "page_views": 3, "trials": 3, "ready": 2,
            "opened": 1, "active_5m": 0, "extended": 1, "feedback": 1, "contact_requested": 1
        })
    );
    // The operators see the same.
    let by_admin = json_of(funnel(&app, &app.admin, &demo, "").await, StatusCode::OK).await;
    assert_eq!(by_admin["trials"], 3);
    assert_eq!(by_admin["page_views"], 3);
    // The other demo's page view is its own.
    let other = json_of(
        funnel(&app, &other_key, &other_demo, "").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(other["page_views"], 1);
    assert_eq!(other["trials"], 0);

    // Since a moment: only the trials started from then on.
    let last =
        Timestamp::parse_rfc3339(str_of(&app.sandbox(&broken_id).await, "created_at")).unwrap();
    let after_all = Timestamp::from_millis(last.millis() + 1).to_rfc3339();
    let since = json_of(
        funnel(&app, &key, &demo, &format!("?since={after_all}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(since["since"], after_all.as_str());
    assert_eq!(since["trials"], 0, "{since}");
    assert_eq!(since["feedback"], 0, "{since}");
    let first = Timestamp::parse_rfc3339(str_of(&used, "created_at")).unwrap();
    let from_first = first.to_rfc3339();
    let since = json_of(
        funnel(&app, &key, &demo, &format!("?since={from_first}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(since["trials"], 3, "{since}");

    // Not another vendor's, nor the prospect's; a `since` that is not a time, or in the
    // future, is refused.
    problem(
        funnel(&app, &other_key, &demo, "").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        funnel(&app, &used_token, &demo, "").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let future = Timestamp::from_millis(Timestamp::now().millis() + 3_600_000).to_rfc3339();
    for bad in [
        "yesterday".to_string(),
        "2024-13-01T00:00:00Z".to_string(),
        future,
    ] {
        let res = funnel(&app, &key, &demo, &format!("?since={bad}")).await;
        let refusal = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(refusal["field"], "since", "{bad}: {refusal}");
    }

    app.end_sandbox(&used_id, &used_token).await;
    app.end_sandbox(&idle_id, &idle_token).await;
    app.wait_as_admin(&broken_id, |s| s["data_deleted_at"].is_string())
        .await;
    assert_nothing_beside(&app, &[&used_id, &idle_id, &broken_id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_explorer_greets_the_invited_company_with_the_vendors_note() {
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&key, csv_explorer_manifest()).await;
    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": "Globex", "note": "Hi Ana, as promised."}),
    )
    .await;
    let created = ready_trial(
        &app,
        &demo,
        &[
            ("invitation", str_of(&made, "id")),
            ("company", "Globex"),
            ("needs", "Which region sells most?"),
        ],
    )
    .await;
    let (sandbox, token) = id_and_token(&created);
    let res = app.open(&sandbox, &token, "/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert_eq!(text_of(&html, "prospect-company"), "Globex", "{html}");
    assert_eq!(text_of(&html, "prospect-needs"), "Which region sells most?");
    assert_eq!(text_of(&html, "invitation-note"), "Hi Ana, as promised.");
    app.end_sandbox(&sandbox, &token).await;
    assert_nothing_beside(&app, &[&sandbox]).await;
}

/// `text` as HTML shows it (the entities the templates write).
fn unescape(text: &str) -> String {
    [
        ("&#34;", "\""),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#60;", "<"),
        ("&lt;", "<"),
        ("&#62;", ">"),
        ("&gt;", ">"),
        ("&#38;", "&"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(text.to_string(), |text, (entity, shown)| {
        text.replace(entity, shown)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_page_shows_what_the_vendor_wrote_as_text_never_as_markup() {
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({})).await;
    let company = "Globex \"Labs\" <b>bold</b> & Co";
    let email = "ana\"onfocus=alert(1)@globex.example";
    let note = "<script>alert(1)</script> See you <i>soon</i>";
    let made = invite(
        &app,
        &key,
        json!({"demo_id": demo, "company": company, "email": email, "note": note}),
    )
    .await;
    assert_eq!(made["email"], email, "an address the service accepts");
    let (status, html) = page(&app, &format!("/invitations/{}", str_of(&made, "id"))).await;
    assert_eq!(status, StatusCode::OK);
    for markup in [
        "<script>alert(1)",
        "<b>bold",
        "<i>soon",
        "\"onfocus=",
        "\"Labs\"",
    ] {
        assert!(!html.contains(markup), "{markup:?} is in the page:\n{html}");
    }
    assert_eq!(unescape(&text_of(&html, "invited-company")), company);
    assert_eq!(unescape(&text_of(&html, "invitation-note")), note);
    // The address stays inside its attribute: the attribute ends where the value does.
    let field = tag_with(&html, "name=\"email\"");
    let value = field
        .split_once(" value=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value)
        .unwrap_or_else(|| panic!("no value in {field}"));
    assert_eq!(unescape(value), email, "{field}");

    // The page of a closed invitation too.
    let vendor = app.vendor_of(&key).await;
    let expired = expired_invitation(&app, &vendor, &demo).await;
    let request: InvitationRequest =
        serde_json::from_value(json!({"demo_id": demo, "company": company})).unwrap();
    let mut hostile = Invitation::new(
        VendorId::parse(&vendor).unwrap(),
        InvitationTerms::parse(&request).unwrap(),
        Timestamp::now(),
    );
    hostile.expires_at = Timestamp::from_millis(Timestamp::now().millis() - 1000);
    app.state().store.insert_invitation(&hostile).await.unwrap();
    assert_eq!(
        page(&app, &format!("/invitations/{expired}")).await.0,
        StatusCode::GONE
    );
    let (status, html) = page(&app, &format!("/invitations/{}", hostile.id)).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        !html.contains("<b>bold") && !html.contains("\"Labs\""),
        "{html}"
    );
    assert!(unescape(&html).contains(company), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_sends_at_most_five_contact_requests_and_feedbacks_even_all_at_once() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(asking()).await;
    let created = ready_trial(&app, &demo, &[("q.role", "Analyst")]).await;
    let (sandbox, token) = id_and_token(&created);
    for (path, body, ok) in [
        (
            "contact",
            json!({"message": "Call me"}),
            StatusCode::ACCEPTED,
        ),
        (
            "feedback",
            json!({"answers": {"verdict": "Yes"}}),
            StatusCode::NO_CONTENT,
        ),
    ] {
        let path = format!("/v1/sandboxes/{sandbox}/{path}");
        let sends =
            (0..12).map(|_| async { app.post_json(&path, Some(&token), &body).await.status() });
        let statuses = futures_util::future::join_all(sends).await;
        let accepted = statuses.iter().filter(|s| **s == ok).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((accepted, refused), (5, 7), "{path}: {statuses:?}");
    }
    let (_, report) = app.report(&sandbox, &app.admin).await;
    assert_eq!(report["contact_requests"].as_array().unwrap().len(), 5);
    assert_eq!(report["feedback"].as_array().unwrap().len(), 5);
    app.end_sandbox(&sandbox, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_demo_left_at_the_prospect_files_place_is_replaced_never_followed() {
    let app = TestApp::spawn().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"keep").unwrap();
    // Warm members run before their prospect comes: what they leave is there when
    // `prospect.json` is placed. One makes `.testdrive` a link out of its directory; one a
    // directory of its own whose `prospect.json` is a link to a file of the host's.
    let scripts = [
        format!("ln -s {} /data/.testdrive", outside.path().display()),
        format!(
            "mkdir /data/.testdrive && ln -s {} /data/.testdrive/prospect.json && \
             echo planted > /data/.testdrive/planted",
            secret.display()
        ),
    ];
    for script in scripts {
        let command = format!("{script}; exec httpd -f -p 8080 -h /data");
        let mut overrides = asking();
        merge(
            &mut overrides,
            json!({"warm_pool": 1, "command": ["sh", "-c", command]}),
        );
        let (key, demo) = app.static_demo(overrides).await;
        app.wait_pool(&key, &demo, 1).await;
        // The member made them (the claim below replaces them).
        let member = app.warm_member(&demo);
        let left = app
            .data_dir
            .join("sandboxes")
            .join(&member)
            .join("data/.testdrive");
        assert!(
            left.is_symlink() || left.join("prospect.json").is_symlink(),
            "{script}: the member {member:?} left a link"
        );
        let created =
            ready_trial(&app, &demo, &[("company", "Globex"), ("q.role", "Analyst")]).await;
        let (sandbox, token) = id_and_token(&created);
        assert_eq!(sandbox, member, "the trial took that member");
        let events = app.events(&sandbox, &token).await;
        assert!(
            str_of(&events[0], "detail").contains("warm pool"),
            "{events:?}"
        );

        let note_dir = app
            .data_dir
            .join("sandboxes")
            .join(&sandbox)
            .join("data/.testdrive");
        let meta = std::fs::symlink_metadata(&note_dir).unwrap();
        assert!(
            meta.is_dir(),
            "{script}: a directory of testdrive's, not the link"
        );
        assert_eq!(names_in(&note_dir), ["prospect.json"], "{script}");
        let note = std::fs::symlink_metadata(note_dir.join("prospect.json")).unwrap();
        assert!(note.is_file(), "{script}: a file, not the link");
        assert_eq!(owner_and_mode(&note_dir), (65534, 65534, 0o700));
        assert_eq!(
            owner_and_mode(&note_dir.join("prospect.json")),
            (65534, 65534, 0o600)
        );
        assert_eq!(
            prospect_json_inside(&sandbox),
            json!({"company": "Globex", "answers": {"role": "Analyst"}})
        );
        assert_eq!(
            names_in(outside.path()),
            ["secret"],
            "nothing written outside"
        );
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep");

        app.end_sandbox(&sandbox, &token).await;
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep");
    }
}
