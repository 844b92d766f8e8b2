//! The tenancy matrix: every route × every kind of caller → the status the contract gives,
//! for resources owned by vendor A (A's vendor record, A's demo, A's sandbox). Callers: no
//! token, a bad token (A's key with one character more: it claims A's id but fails the hash),
//! the operators, vendor A, vendor B, the token of A's sandbox, and the token of a sandbox of
//! B's demo.
//!
//! Beyond the status of each cell:
//! - a `401` carries `WWW-Authenticate: Bearer`, every refusal is a problem document;
//! - every refusal on a route that names a resource (`401`, `403`, `404`, `422`; a `409` is an
//!   answer about the caller's own resource, not a refusal) is exactly the
//!   answer the same caller gets for an id that names nothing, so existence does not leak;
//! - nothing of A reaches B (vendor or prospect) and nothing of B reaches A, outside the public
//!   catalog; a prospect's information sheet reaches only its vendor and the operators; no
//!   sandbox-token view has a `prospect` field; no answer repeats a key or token.
//!
//! State-changing cells do not disturb the others: reads run first, then creations, then the
//! changes. A `PATCH` or `DELETE` expected to succeed runs against a fresh resource of A made
//! for that cell (a sandbox `DELETE` by the sandbox token uses that fresh sandbox's own token),
//! while the refusals run against A's real demo and sandbox, which are checked untouched at
//! the end. Extending adds a valid 60 s, so its status reflects authorization only.
//!
//! Every cell is checked and all mismatches are reported at once.

use std::fmt::Write as _;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const CSV: &[u8] = b"region,sales\nnorth,1\n";
const INDEX: &[u8] = b"<!doctype html><title>demo</title>\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Caller {
    NoToken,
    BadToken,
    Admin,
    VendorA,
    VendorB,
    SandboxA,
    SandboxB,
}

use Caller::*;

const CALLERS: [Caller; 7] = [
    NoToken, BadToken, Admin, VendorA, VendorB, SandboxA, SandboxB,
];

impl Caller {
    fn label(self) -> &'static str {
        match self {
            NoToken => "none",
            BadToken => "bad",
            Admin => "admin",
            VendorA => "vendA",
            VendorB => "vendB",
            SandboxA => "sbxA",
            SandboxB => "sbxB",
        }
    }

    /// Whether this caller is on A's side (may see A's things).
    fn is_a(self) -> bool {
        matches!(self, Admin | VendorA | SandboxA)
    }

    fn is_b(self) -> bool {
        matches!(self, Admin | VendorB | SandboxB)
    }
}

/// What a route's request carries.
#[derive(Clone)]
enum BodySpec {
    Nothing,
    Json(Value),
    /// `{"name": …}`, unique per cell.
    NewVendor,
    /// A minimal manifest with a slug unique per cell.
    NewDemo,
    /// The prospect's form for A's demo, with one file.
    SandboxForm,
}

/// Which fresh resource of A a cell expected to succeed runs against instead of A's own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    No,
    Demo,
    Sandbox,
}

struct Route {
    method: Method,
    /// `{vendor}`, `{demo}`, `{sandbox}` stand for A's vendor, demo and sandbox.
    path: &'static str,
    body: BodySpec,
    fresh: Fresh,
    /// A public answer that names every vendor's things by design (exempt from the
    /// nothing-of-the-other-vendor check, not from the information-sheet check).
    public_names: bool,
    /// In `CALLERS` order.
    expect: [u16; 7],
}

const OK: u16 = 200;
const CREATED: u16 = 201;
const ACCEPTED: u16 = 202;
const NO_CONTENT: u16 = 204;
const UNAUTH: u16 = 401;
const FORBID: u16 = 403;
const NOTFOUND: u16 = 404;
const CONFLICT: u16 = 409;
const INVALID: u16 = 422;

fn route(method: Method, path: &'static str, expect: [u16; 7]) -> Route {
    Route {
        method,
        path,
        body: BodySpec::Nothing,
        fresh: Fresh::No,
        public_names: false,
        expect,
    }
}

/// The matrix, in the order it runs: reads, then creations, then changes, destructive last.
fn routes() -> Vec<Route> {
    let g = Method::GET;
    let all_ok = [OK; 7];
    let admin_only = [UNAUTH, UNAUTH, OK, FORBID, FORBID, FORBID, FORBID];
    let vendors_list = [UNAUTH, UNAUTH, OK, OK, OK, FORBID, FORBID];
    let demo_of_a = [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID];
    let sandbox_of_a = [UNAUTH, UNAUTH, OK, OK, NOTFOUND, OK, NOTFOUND];
    let proxy = [UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH, OK, UNAUTH];
    vec![
        route(g.clone(), "/v1/vendors", admin_only),
        route(
            g.clone(),
            "/v1/vendors/{vendor}",
            [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
        ),
        route(g.clone(), "/v1/demos", vendors_list),
        route(g.clone(), "/v1/demos/{demo}", demo_of_a),
        Route {
            public_names: true,
            ..route(g.clone(), "/v1/catalog", all_ok)
        },
        route(g.clone(), "/v1/sandboxes", vendors_list),
        route(g.clone(), "/v1/sandboxes?demo={demo}", vendors_list),
        route(g.clone(), "/v1/sandboxes/{sandbox}", sandbox_of_a),
        route(g.clone(), "/v1/sandboxes/{sandbox}/events", sandbox_of_a),
        route(g.clone(), "/v1/demos/{demo}/funnel", demo_of_a),
        route(g.clone(), "/v1/invitations", vendors_list),
        // For the vendor and operators only: a prospect's token is refused outright.
        route(
            g.clone(),
            "/v1/sandboxes/{sandbox}/report",
            [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
        ),
        // A's sandbox is live: no receipt yet, for whoever may see it.
        route(
            g.clone(),
            "/v1/sandboxes/{sandbox}/receipt",
            [
                UNAUTH, UNAUTH, CONFLICT, CONFLICT, NOTFOUND, CONFLICT, NOTFOUND,
            ],
        ),
        route(g.clone(), "/v1/receipt-key", all_ok),
        route(
            g.clone(),
            "/v1/vendors/{vendor}/deliveries",
            [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
        ),
        route(
            g.clone(),
            "/v1/vendors/{vendor}/registries",
            [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
        ),
        route(
            g.clone(),
            "/v1/vendors/{vendor}/images",
            [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
        ),
        route(g.clone(), "/s/{sandbox}/", proxy),
        route(g.clone(), "/s/{sandbox}/a.csv", proxy),
        route(g.clone(), "/metrics", admin_only),
        route(g.clone(), "/healthz", all_ok),
        route(g.clone(), "/readyz", all_ok),
        route(g.clone(), "/openapi.json", all_ok),
        Route {
            body: BodySpec::NewVendor,
            ..route(
                Method::POST,
                "/v1/vendors",
                [UNAUTH, UNAUTH, CREATED, FORBID, FORBID, FORBID, FORBID],
            )
        },
        Route {
            body: BodySpec::NewDemo,
            // An operator must name the vendor (docs/api.md).
            ..route(
                Method::POST,
                "/v1/demos",
                [UNAUTH, UNAUTH, INVALID, CREATED, CREATED, FORBID, FORBID],
            )
        },
        Route {
            body: BodySpec::NewDemo,
            // A vendor registers for itself only; naming a vendor is the operators' form.
            ..route(
                Method::POST,
                "/v1/demos?vendor_id={vendor}",
                [UNAUTH, UNAUTH, CREATED, INVALID, INVALID, FORBID, FORBID],
            )
        },
        Route {
            body: BodySpec::SandboxForm,
            public_names: true,
            // Public: whatever token comes along is ignored.
            ..route(Method::POST, "/v1/sandboxes?wait=60", [CREATED; 7])
        },
        Route {
            body: BodySpec::Json(json!({"seconds": 60})),
            ..route(Method::POST, "/v1/sandboxes/{sandbox}/extend", sandbox_of_a)
        },
        // Only the prospect speaks for the prospect: any other token is refused whichever
        // sandbox it names.
        Route {
            body: BodySpec::Json(json!({"message": "May we talk?"})),
            ..route(
                Method::POST,
                "/v1/sandboxes/{sandbox}/contact",
                [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, ACCEPTED, NOTFOUND],
            )
        },
        Route {
            body: BodySpec::Json(json!({"answers": {"fit": "Yes"}})),
            ..route(
                Method::POST,
                "/v1/sandboxes/{sandbox}/feedback",
                [UNAUTH, UNAUTH, FORBID, FORBID, FORBID, NO_CONTENT, NOTFOUND],
            )
        },
        Route {
            body: BodySpec::Json(json!({"webhook_url": null})),
            ..route(
                Method::PATCH,
                "/v1/vendors/{vendor}",
                [UNAUTH, UNAUTH, OK, OK, NOTFOUND, FORBID, FORBID],
            )
        },
        Route {
            body: BodySpec::Json(json!({"username": "ci", "password": "tenancy-matrix"})),
            ..route(
                Method::PUT,
                "/v1/vendors/{vendor}/registries/registry.example.com",
                [
                    UNAUTH, UNAUTH, NO_CONTENT, NO_CONTENT, NOTFOUND, FORBID, FORBID,
                ],
            )
        },
        Route {
            // Given already (as every test vendor is): the same grant again.
            body: BodySpec::Json(json!({"image": STATIC_FILES})),
            ..route(
                Method::POST,
                "/v1/vendors/{vendor}/images",
                [UNAUTH, UNAUTH, OK, FORBID, FORBID, FORBID, FORBID],
            )
        },
        Route {
            body: BodySpec::Json(json!({"description": "patched by the tenancy matrix"})),
            fresh: Fresh::Demo,
            ..route(Method::PATCH, "/v1/demos/{demo}", demo_of_a)
        },
        Route {
            fresh: Fresh::Demo,
            ..route(
                Method::DELETE,
                "/v1/demos/{demo}",
                [
                    UNAUTH, UNAUTH, NO_CONTENT, NO_CONTENT, NOTFOUND, FORBID, FORBID,
                ],
            )
        },
        Route {
            fresh: Fresh::Sandbox,
            ..route(Method::DELETE, "/v1/sandboxes/{sandbox}", sandbox_of_a)
        },
    ]
}

/// What came back, kept whole for the checks.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    text: String,
}

impl Answer {
    async fn of(res: Response) -> Answer {
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
        };
        let content_type = header("content-type");
        let www_authenticate = header("www-authenticate");
        let status = res.status().as_u16();
        Answer {
            status,
            content_type,
            www_authenticate,
            text: res.text().await.unwrap(),
        }
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.text).ok()
    }

    /// The same answer, as far as a caller can tell (bodies compared as JSON when they are).
    fn same_as(&self, other: &Answer) -> bool {
        self.status == other.status
            && self.content_type == other.content_type
            && self.www_authenticate == other.www_authenticate
            && match (self.json(), other.json()) {
                (Some(a), Some(b)) => a == b,
                _ => self.text == other.text,
            }
    }

    fn short(&self) -> String {
        let text: String = self.text.chars().take(300).collect();
        format!("{} {text}", self.status)
    }
}

/// The request a cell makes.
enum Payload {
    Nothing,
    Json(Value),
    Form(String),
}

async fn send(
    app: &TestApp,
    method: &Method,
    path: &str,
    token: Option<&str>,
    payload: &Payload,
) -> Answer {
    let mut req = app.http.request(method.clone(), app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req = match payload {
        Payload::Nothing => req,
        Payload::Json(body) => req.json(body),
        Payload::Form(demo) => req.multipart(
            Form::new()
                .text("demo", demo.clone())
                .part("file", Part::bytes(CSV.to_vec()).file_name("a.csv")),
        ),
    };
    Answer::of(req.send().await.unwrap()).await
}

fn fill(template: &str, vendor: &str, demo: &str, sandbox: &str) -> String {
    template
        .replace("{vendor}", vendor)
        .replace("{demo}", demo)
        .replace("{sandbox}", sandbox)
}

fn minimal_manifest(slug: &str) -> Value {
    json!({"slug": slug, "title": "Tenancy matrix", "image": STATIC_FILES,
           "port": 8080, "data_path": "/data"})
}

/// A prospect's information sheet, each field unique to this test run.
struct Sheet {
    email: String,
    company: String,
    needs: String,
}

impl Sheet {
    fn new(who: &str) -> Sheet {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Sheet {
            email: format!("prospect-{who}-{tag}@example.com"),
            company: format!("Company {who} {tag}"),
            needs: format!("Needs of {who} {tag}"),
        }
    }

    fn fields(&self) -> [(&str, &str); 3] {
        [
            ("email", self.email.as_str()),
            ("company", self.company.as_str()),
            ("needs", self.needs.as_str()),
        ]
    }

    fn markers(&self) -> Vec<String> {
        vec![self.email.clone(), self.company.clone(), self.needs.clone()]
    }
}

/// One tenant: a vendor, its demo and a ready sandbox of it with an information sheet.
struct Tenant {
    vendor: String,
    name: String,
    key: String,
    demo: String,
    slug: String,
    sandbox: String,
    token: String,
    sheet: Sheet,
}

async fn tenant(app: &TestApp, who: &str) -> Tenant {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let name = format!("Tenancy vendor {who} {tag}");
    let (vendor, key) = app.vendor(&name).await;
    let slug = format!("tenancy-{}-{tag}", who.to_lowercase());
    let mut manifest = minimal_manifest(&slug);
    // Any file type, so the sandbox can hold an index page for `/s/{id}/`.
    merge(
        &mut manifest,
        json!({"ready": {"http_path": "/", "timeout_seconds": 30},
               "upload": {"extensions": []},
               "exit_questions": [{"id": "fit", "label": "A fit?"}]}),
    );
    let demo = app.demo(&key, manifest).await;
    let sheet = Sheet::new(who);
    let res = app
        .create_sandbox(
            &demo,
            &[("index.html", INDEX.to_vec()), ("a.csv", CSV.to_vec())],
            &sheet.fields(),
            Some(60),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["status"], "ready", "{created}");
    Tenant {
        vendor,
        name,
        key,
        demo,
        slug,
        sandbox: created["id"].as_str().unwrap().to_string(),
        token: created["token"].as_str().unwrap().to_string(),
        sheet,
    }
}

impl Tenant {
    /// Strings that name this tenant's things (ids, names), not its prospect's sheet.
    fn id_markers(&self) -> Vec<String> {
        vec![
            self.vendor.clone(),
            self.name.clone(),
            self.demo.clone(),
            self.slug.clone(),
            self.sandbox.clone(),
        ]
    }
}

/// One executed cell.
struct Cell {
    route: usize,
    caller: Caller,
    expected: u16,
    fresh: bool,
    answer: Answer,
    /// The same request by the same caller for an id that names nothing (refusals only).
    absent: Option<Answer>,
}

/// The demo as operators see it (`Null` if they do not).
async fn demo_record(app: &TestApp, id: &str) -> Value {
    let res = app.get(&format!("/v1/demos/{id}"), Some(&app.admin)).await;
    if res.status() != StatusCode::OK {
        return Value::Null;
    }
    res.json().await.unwrap()
}

fn has_prospect(body: &Value) -> bool {
    body.get("prospect").is_some()
        || body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i.get("prospect").is_some()))
}

fn contains_any<'a>(text: &str, markers: &'a [String]) -> Vec<&'a str> {
    markers
        .iter()
        .filter(|m| text.contains(m.as_str()))
        .map(String::as_str)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_matrix_every_route_by_every_caller() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    let bad_token = format!("{}x", a.key);
    let routes = routes();
    let demo_a_before = demo_record(&app, &a.demo).await;

    // The table of expectations, for the issue note.
    let mut table = String::new();
    let cells = routes.len() * CALLERS.len();
    writeln!(
        table,
        "tenancy matrix: {} routes × {} callers = {cells} cells \
         ({{vendor}}/{{demo}}/{{sandbox}} = vendor A / A's demo / A's sandbox; \
         * = the 2xx cell runs against a fresh resource of A)",
        routes.len(),
        CALLERS.len()
    )
    .unwrap();
    write!(table, "{:<46}", "route").unwrap();
    for caller in CALLERS {
        write!(table, "{:>6}", caller.label()).unwrap();
    }
    table.push('\n');
    for r in &routes {
        write!(table, "{:<46}", format!("{} {}", r.method, r.path)).unwrap();
        for expected in r.expect {
            let star = if r.fresh != Fresh::No && (200..300).contains(&expected) {
                "*"
            } else {
                " "
            };
            write!(table, "{:>5}{star}", expected).unwrap();
        }
        table.push('\n');
    }
    eprintln!("{table}");

    // Sandboxes the matrix creates (all of A's demo), spare ones first used as the fresh
    // targets of the sandbox DELETE row.
    let mut made_sandboxes: Vec<String> = Vec::new();
    let mut spare: Vec<(String, String)> = Vec::new();
    let mut a_made: Vec<String> = Vec::new();
    let mut b_made: Vec<String> = Vec::new();
    let mut n = 0u32;
    let mut executed: Vec<Cell> = Vec::new();

    for (ri, r) in routes.iter().enumerate() {
        for (ci, caller) in CALLERS.into_iter().enumerate() {
            n += 1;
            let expected = r.expect[ci];
            let fresh = r.fresh != Fresh::No && (200..300).contains(&expected);
            let mut token: Option<String> = match caller {
                NoToken => None,
                BadToken => Some(bad_token.clone()),
                Admin => Some(app.admin.clone()),
                VendorA => Some(a.key.clone()),
                VendorB => Some(b.key.clone()),
                SandboxA => Some(a.token.clone()),
                SandboxB => Some(b.token.clone()),
            };
            let (mut demo, mut sandbox) = (a.demo.clone(), a.sandbox.clone());
            if fresh {
                match r.fresh {
                    Fresh::Demo => {
                        demo = app
                            .demo(&a.key, minimal_manifest(&format!("fresh-{n}")))
                            .await;
                        a_made.push(demo.clone());
                    }
                    Fresh::Sandbox => {
                        let (id, own) = match spare.pop() {
                            Some(pair) => pair,
                            None => {
                                let body =
                                    app.ready_sandbox(&a.demo, &[("a.csv", CSV.to_vec())]).await;
                                let id = body["id"].as_str().unwrap().to_string();
                                made_sandboxes.push(id.clone());
                                (id, body["token"].as_str().unwrap().to_string())
                            }
                        };
                        if caller == SandboxA {
                            // "The sandbox's own token": the fresh sandbox's.
                            token = Some(own);
                        }
                        sandbox = id;
                    }
                    Fresh::No => unreachable!(),
                }
            }
            let payload = match &r.body {
                BodySpec::Nothing => Payload::Nothing,
                BodySpec::Json(body) => Payload::Json(body.clone()),
                BodySpec::NewVendor => {
                    Payload::Json(json!({"name": format!("Tenancy new vendor {n}")}))
                }
                BodySpec::NewDemo => Payload::Json(minimal_manifest(&format!("new-{n}"))),
                BodySpec::SandboxForm => Payload::Form(a.demo.clone()),
            };
            let path = fill(r.path, &a.vendor, &demo, &sandbox);
            let answer = send(&app, &r.method, &path, token.as_deref(), &payload).await;

            // Keep track of what the cell made, for the visibility checks and the cleanup.
            if (200..300).contains(&answer.status)
                && let Some(body) = answer.json()
            {
                if matches!(r.body, BodySpec::SandboxForm)
                    && let (Some(id), Some(own)) = (body["id"].as_str(), body["token"].as_str())
                {
                    made_sandboxes.push(id.to_string());
                    spare.push((id.to_string(), own.to_string()));
                    a_made.push(id.to_string());
                }
                if matches!(r.body, BodySpec::NewDemo)
                    && let Some(id) = body["id"].as_str()
                {
                    if body["vendor_id"] == a.vendor.as_str() {
                        a_made.push(id.to_string());
                    } else if body["vendor_id"] == b.vendor.as_str() {
                        b_made.push(id.to_string());
                    }
                }
            }

            // A refusal on a route naming A's things must be the answer for nothing at all.
            let names_something = ["{vendor}", "{demo}", "{sandbox}"]
                .iter()
                .any(|p| r.path.contains(p));
            // (A 409 is an answer about the caller's own resource, not a refusal.)
            let absent = if (400..500).contains(&expected)
                && expected != CONFLICT
                && names_something
                && !r.path.starts_with("/s/")
            {
                let nothing = uuid::Uuid::now_v7().to_string();
                let path = fill(r.path, &nothing, &nothing, &nothing);
                Some(send(&app, &r.method, &path, token.as_deref(), &payload).await)
            } else {
                None
            };
            executed.push(Cell {
                route: ri,
                caller,
                expected,
                fresh,
                answer,
                absent,
            });
        }
    }

    // The checks, all of them, each failure a line.
    let a_ids: Vec<String> = a.id_markers().into_iter().chain(a_made).collect();
    let b_ids: Vec<String> = b.id_markers().into_iter().chain(b_made).collect();
    let a_sheet = a.sheet.markers();
    let b_sheet = b.sheet.markers();
    let secrets = vec![
        a.key.clone(),
        a.token.clone(),
        b.key.clone(),
        b.token.clone(),
    ];
    let mut wrong: Vec<String> = Vec::new();
    for cell in &executed {
        let r = &routes[cell.route];
        let at = format!(
            "{} {} as {}{}",
            r.method,
            r.path,
            cell.caller.label(),
            if cell.fresh { " (fresh)" } else { "" }
        );
        let answer = &cell.answer;
        if answer.status != cell.expected {
            wrong.push(format!(
                "{at}: expected {}, got {}",
                cell.expected,
                answer.short()
            ));
        }
        if answer.status == 401 && answer.www_authenticate.as_deref() != Some("Bearer") {
            wrong.push(format!(
                "{at}: 401 without `WWW-Authenticate: Bearer` (got {:?})",
                answer.www_authenticate
            ));
        }
        if answer.status >= 400 {
            let body = answer.json().unwrap_or(Value::Null);
            let is_problem = answer.content_type.as_deref() == Some("application/problem+json")
                && body["status"] == answer.status
                && body["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("urn:testdrive:problem:"))
                && body["detail"].as_str().is_some_and(|d| !d.is_empty());
            if !is_problem {
                wrong.push(format!(
                    "{at}: not a problem document ({:?}): {}",
                    answer.content_type,
                    answer.short()
                ));
            }
        }
        if let Some(absent) = &cell.absent
            && !answer.same_as(absent)
        {
            wrong.push(format!(
                "{at}: differs from the answer for an id that names nothing \
                 (existence leaks): {} vs {} ({:?} vs {:?})",
                answer.short(),
                absent.short(),
                answer.www_authenticate,
                absent.www_authenticate
            ));
        }
        if !r.public_names {
            if !cell.caller.is_a() {
                let seen = contains_any(&answer.text, &a_ids);
                if !seen.is_empty() {
                    wrong.push(format!("{at}: shows A's {seen:?}: {}", answer.short()));
                }
            }
            if !cell.caller.is_b() {
                let seen = contains_any(&answer.text, &b_ids);
                if !seen.is_empty() {
                    wrong.push(format!("{at}: shows B's {seen:?}: {}", answer.short()));
                }
            }
        }
        if !matches!(cell.caller, Admin | VendorA) {
            let seen = contains_any(&answer.text, &a_sheet);
            if !seen.is_empty() {
                wrong.push(format!("{at}: shows A's prospect sheet {seen:?}"));
            }
        }
        if !matches!(cell.caller, Admin | VendorB) {
            let seen = contains_any(&answer.text, &b_sheet);
            if !seen.is_empty() {
                wrong.push(format!("{at}: shows B's prospect sheet {seen:?}"));
            }
        }
        if matches!(cell.caller, SandboxA | SandboxB)
            && answer.json().is_some_and(|body| has_prospect(&body))
        {
            wrong.push(format!("{at}: a sandbox token sees a `prospect` field"));
        }
        let seen = contains_any(&answer.text, &secrets);
        if !seen.is_empty() {
            wrong.push(format!("{at}: repeats a key or token"));
        }
    }

    // The negative checks above mean something: the owners do see their things.
    let answer_of = |path: &str, caller: Caller| {
        executed
            .iter()
            .find(|c| routes[c.route].path == path && c.caller == caller)
            .map(|c| c.answer.text.clone())
            .unwrap_or_default()
    };
    let must_show: [(&str, Caller, Vec<&String>); 7] = [
        (
            "/v1/sandboxes",
            Admin,
            vec![&a.sandbox, &b.sandbox, &a.sheet.email, &b.sheet.email],
        ),
        ("/v1/sandboxes", VendorA, vec![&a.sandbox, &a.sheet.email]),
        ("/v1/sandboxes", VendorB, vec![&b.sandbox, &b.sheet.email]),
        ("/v1/demos", VendorA, vec![&a.demo]),
        ("/v1/demos", VendorB, vec![&b.demo]),
        ("/v1/sandboxes/{sandbox}", VendorA, vec![&a.sheet.needs]),
        (
            "/v1/sandboxes/{sandbox}/report",
            VendorA,
            vec![&a.sheet.needs],
        ),
    ];
    for (path, caller, wanted) in must_show {
        let text = answer_of(path, caller);
        for w in wanted {
            if !text.contains(w.as_str()) {
                wrong.push(format!(
                    "GET {path} as {}: does not show its own {w}",
                    caller.label()
                ));
            }
        }
    }

    // The prospect-token views of B's own sandbox: nothing of A, no information sheet.
    for path in [
        format!("/v1/sandboxes/{}", b.sandbox),
        format!("/v1/sandboxes/{}/events", b.sandbox),
    ] {
        let answer = send(&app, &Method::GET, &path, Some(&b.token), &Payload::Nothing).await;
        let at = format!("GET {path} (B's own sandbox) as sbxB");
        if answer.status != 200 {
            wrong.push(format!("{at}: expected 200, got {}", answer.short()));
        }
        let of_a = [a_ids.clone(), a_sheet.clone()].concat();
        let seen = contains_any(&answer.text, &of_a);
        if !seen.is_empty() {
            wrong.push(format!("{at}: shows A's {seen:?}"));
        }
        let seen = contains_any(&answer.text, &b_sheet);
        if !seen.is_empty() || answer.json().is_some_and(|body| has_prospect(&body)) {
            wrong.push(format!("{at}: shows the information sheet"));
        }
    }

    // The refusals changed nothing: A's demo as it was, A's and B's sandboxes ready, A's
    // sandbox extended once per extend cell that succeeded, B's never.
    let demo_a = demo_record(&app, &a.demo).await;
    if demo_a != demo_a_before {
        wrong.push(format!(
            "A's demo was changed by a refused cell: {demo_a_before} became {demo_a}"
        ));
    }
    let extend_successes = executed
        .iter()
        .filter(|c| routes[c.route].path.ends_with("/extend") && c.answer.status == 200)
        .count();
    for (who, id, extends) in [("A", &a.sandbox, extend_successes), ("B", &b.sandbox, 0)] {
        let record = app.sandbox(id).await;
        if record["status"] != "ready" {
            wrong.push(format!("{who}'s sandbox is no longer ready: {record}"));
        }
        let extended = app
            .events(id, &app.admin)
            .await
            .iter()
            .filter(|e| e["kind"] == "extended")
            .count();
        if extended != extends {
            wrong.push(format!(
                "{who}'s sandbox was extended {extended} times, expected {extends}"
            ));
        }
    }

    // Clean up before failing, so a failure leaves nothing behind either.
    made_sandboxes.push(a.sandbox.clone());
    made_sandboxes.push(b.sandbox.clone());
    for id in &made_sandboxes {
        let res = app
            .delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "ending {id}");
        assert_no_objects(id);
    }

    eprintln!(
        "tenancy matrix: {cells} cells run, {} mismatches",
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} mismatches in the tenancy matrix:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
