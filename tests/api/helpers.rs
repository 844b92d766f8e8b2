//! Test harness: each test spawns the real service in-process on port 0, with its own data
//! directory and database, against the real Docker Engine. Every Engine object the service
//! makes carries the app's instance label; dropping a `TestApp` removes whatever is left
//! with that label, so a failing test does not leak — and `assert_no_objects` makes a
//! leak a failure.
//!
//! `Api` is the HTTP side of a running service (its address, admin token and client, and
//! the requests tests make of it); both `TestApp` and the child process of `process.rs`
//! own one and deref to it, so `app.get(…)` and `svc.get(…)` are the same code.

#[path = "../support/sample.rs"]
mod sample;
pub use sample::csv_of_size;

use std::net::SocketAddr;
use std::ops::Deref;
use std::process::Command;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use testdrive::app::Running;
use testdrive::config::Config;

pub const CSV_EXPLORER: &str = "testdrive/csv-explorer:1";
pub const STATIC_FILES: &str = "testdrive/static-files:1";
/// The demo images every vendor `Api::vendor` creates is given.
pub const GIVEN_IMAGES: [&str; 3] = [CSV_EXPLORER, STATIC_FILES, crate::origins::HOSTILE_DEMO];

/// The HTTP side of a running service: where it listens, its admin token, and a client
/// that does not follow redirects.
pub struct Api {
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
}

pub struct TestApp {
    api: Api,
    /// The app's own sandbox network (a deployment's addresses are its own to hand out).
    pub network: String,
    /// The network's interface on the host.
    pub bridge: String,
    pub instance: String,
    pub data_dir: std::path::PathBuf,
    /// The Engine it runs on when not the machine's (`spawn_on`), for `docker -H`.
    pub engine_host: Option<String>,
    config: Config,
    running: Option<Running>,
    _dir: Option<TempDir>,
}

/// The names in a directory (none if it is missing).
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Under a `sandboxes/` directory: each sandbox's `upload/` and everything in it, as paths.
pub fn upload_entries(root: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                out.push(entry.path().display().to_string());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for sandbox in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let upload = sandbox.path().join("upload");
        if upload.exists() {
            out.push(upload.display().to_string());
            walk(&upload, &mut out);
        }
    }
    out
}

pub fn require_images() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        for image in [CSV_EXPLORER, STATIC_FILES] {
            let found = Command::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}", image])
                .output()
                .expect("the docker CLI runs");
            assert!(
                found.status.success(),
                "the image {image} is missing: run sandbox-images/build first"
            );
        }
        remove_stale_test_networks();
    });
}

pub fn docker_ids(kind: &str, label: &str) -> Vec<String> {
    docker_ids_on(None, kind, label)
}

/// The `docker` CLI, talking to `host` (`None`: the machine's Engine).
pub fn docker_cli(host: Option<&str>) -> Command {
    let mut command = Command::new("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    command
}

/// As `docker_ids`, on the Engine at `host` (`None`: the machine's).
pub fn docker_ids_on(host: Option<&str>, kind: &str, label: &str) -> Vec<String> {
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-aq", "--filter"],
        "volume" => vec!["volume", "ls", "-q", "--filter"],
        "network" => vec!["network", "ls", "-q", "--filter"],
        _ => unreachable!(),
    };
    let out = docker_cli(host)
        .args(args)
        .arg(format!("label={label}"))
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Engine objects labelled for this sandbox: containers, volumes, networks.
pub fn objects_of(sandbox_id: &str) -> Vec<String> {
    let label = format!("testdrive.sandbox={sandbox_id}");
    ["container", "volume", "network"]
        .iter()
        .flat_map(|kind| {
            docker_ids(kind, &label)
                .into_iter()
                .map(move |id| format!("{kind} {id}"))
        })
        .collect()
}

pub fn assert_no_objects(sandbox_id: &str) {
    let left = objects_of(sandbox_id);
    assert!(left.is_empty(), "objects of {sandbox_id} remain: {left:?}");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sandbox's container, for `docker` commands: found by its label (its name says
/// nothing of the sandbox); `testdrive-<id>`, which names nothing, if there is none.
pub fn container_of(sandbox_id: &(impl std::fmt::Display + ?Sized)) -> String {
    docker_ids("container", &format!("testdrive.sandbox={sandbox_id}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| format!("testdrive-{sandbox_id}"))
}

/// `docker exec` in the sandbox's container, for checks from inside.
pub fn exec_in(sandbox_id: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(["exec", &container_of(sandbox_id)])
        .args(cmd)
        .output()
        .expect("the docker CLI runs")
}

/// Runs `sh -c script` in the sandbox: (exit status success, stdout + stderr).
pub fn sh_in(sandbox_id: &str, script: &str) -> (bool, String) {
    let out = exec_in(sandbox_id, &["sh", "-c", script]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `docker inspect -f <format>` of the sandbox's container, trimmed.
pub fn inspect_container(sandbox_id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, &container_of(sandbox_id)])
        .output()
        .expect("the docker CLI runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The sandbox's address on the sandbox network.
pub fn container_ip(sandbox_id: &str) -> String {
    inspect_container(
        sandbox_id,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    )
}

/// `docker network inspect -f <format>` of the app's sandbox network, trimmed.
pub fn inspect_network(app: &TestApp, format: &str) -> String {
    let out = Command::new("docker")
        .args(["network", "inspect", "-f", format, &app.network])
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A sandbox network for one test app (in-process or a child process), on a /24 of
/// 10.214.0.0/16 no other network uses: the Engine refuses overlapping subnets, so trying
/// them in turn finds a free one. Returns (name, bridge, subnet).
pub fn test_network() -> (String, String, String) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let name = format!("testdrive-test-{tag}");
    let bridge = format!("tdt{tag}");
    let start = u32::from_str_radix(tag, 16).unwrap() % 256;
    for attempt in 0..256 {
        let third = (start + attempt) % 256;
        let subnet = format!("10.214.{third}.0/24");
        let out = Command::new("docker")
            .args([
                "network",
                "create",
                "--internal",
                "--label",
                "testdrive.test=1",
            ])
            .args(["-o", "com.docker.network.bridge.enable_icc=false"])
            .args(["-o", "com.docker.network.bridge.enable_ip_masquerade=false"])
            .arg("-o")
            .arg(format!("com.docker.network.bridge.name={bridge}"))
            .arg(format!("--subnet={subnet}"))
            .arg(format!("--gateway=10.214.{third}.1"))
            .arg(&name)
            .output()
            .expect("the docker CLI runs");
        if out.status.success() {
            return (name, bridge, subnet);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("overlap"), "cannot create {name}: {err}");
    }
    panic!("no free /24 in 10.214.0.0/16 for a test network");
}

/// Test networks left by runs that were killed (an hour old is surely stale).
fn remove_stale_test_networks() {
    let out = Command::new("docker")
        .args(["network", "ls", "-q", "--filter", "label=testdrive.test=1"])
        .output()
        .expect("the docker CLI runs");
    for id in String::from_utf8_lossy(&out.stdout).lines() {
        let created = Command::new("docker")
            .args(["network", "inspect", "-f", "{{.Created.Unix}}", id])
            .output()
            .expect("the docker CLI runs");
        let created: i64 = String::from_utf8_lossy(&created.stdout)
            .trim()
            .parse()
            .unwrap_or(i64::MAX);
        if created < time::OffsetDateTime::now_utc().unix_timestamp() - 3600 {
            let name = Command::new("docker")
                .args(["network", "inspect", "-f", "{{.Name}}", id])
                .output()
                .expect("the docker CLI runs");
            let _ = Command::new("docker").args(["network", "rm", id]).output();
            let name = String::from_utf8_lossy(&name.stdout);
            if let Some(tag) = name.trim().strip_prefix("testdrive-test-") {
                remove_firewall_rules(&format!("tdt{tag}"));
            }
        }
    }
}

async fn boot(config: Config) -> Running {
    require_images();
    testdrive::app::start(config)
        .await
        .expect("the service starts")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut app = Self::spawn_in(dir.path(), configure).await;
        app._dir = Some(dir);
        app
    }

    /// Like `spawn_with`, on a data directory the test prepared (and removes) itself.
    pub async fn spawn_in(
        data_dir: &std::path::Path,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = Config::defaults();
        config.data_dir = data_dir.to_path_buf();
        let (network, bridge, subnet) = test_network();
        config.sandbox.network = network;
        config.sandbox.bridge = bridge;
        config.sandbox.subnet = subnet;
        Self::start(config, configure).await
    }

    /// A service left to pick its own sandbox network, as a deployment with default
    /// settings does.
    pub async fn spawn_with_own_network(configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::defaults();
        config.data_dir = dir.path().to_path_buf();
        let mut app = Self::start(config, configure).await;
        app._dir = Some(dir);
        app
    }

    /// An app whose Engine is `engine` (see `private_engine`), with a sandbox network of its
    /// own that the service makes there at start. Drop the app before the Engine (declare
    /// it after): its cleanup talks to the Engine.
    pub async fn spawn_on(
        engine: &crate::private_engine::PrivateEngine,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::defaults();
        config.data_dir = dir.path().to_path_buf();
        config.docker_host = Some(engine.host());
        // Named as `test_network` names them, so that the cleanup removes its firewall
        // rules; a subnet no route of the host uses, as the Engine cannot know the others.
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        config.sandbox.network = format!("testdrive-test-{tag}");
        config.sandbox.bridge = format!("tdt{tag}");
        config.sandbox.subnet = crate::private_engine::unused_subnet(230);
        let mut app = Self::start(config, configure).await;
        app.engine_host = Some(engine.host());
        app._dir = Some(dir);
        app
    }

    async fn start(mut config: Config, configure: impl FnOnce(&mut Config)) -> TestApp {
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_token = Some(format!("test-admin-{}", uuid::Uuid::new_v4().simple()));
        config.reconcile_seconds = 2;
        // A test's end stops its service (see `Drop`); nothing of a test waits for that.
        config.shutdown_grace_seconds = 1;
        // Tests create many sandboxes from one address; the limits have their own tests.
        config.rate_limit.burst = 10_000;
        config.rate_limit.max_share_percent = 100;
        config.intake.max_uploads_per_client = 1000;
        // Test machines may have little disk to spare; the floor has its own tests.
        config.intake.min_free_bytes = 64 << 20;
        // Every test client is 127.0.0.1.
        config.server.max_connections_per_client = 100_000;
        configure(&mut config);
        let running = boot(config.clone()).await;
        let store = &running.state.store;
        let instance = store.instance_id().await.expect("an instance id");
        // The network as the service resolved it: what it picked for the parts left "auto".
        let picked: Value = match store.setting("sandbox_network").await.unwrap() {
            Some(raw) => serde_json::from_str(&raw).unwrap(),
            None => json!({}),
        };
        let resolved = |given: &str, key: &str| match given {
            "auto" => picked[key].as_str().expect("a picked network").to_string(),
            given => given.to_string(),
        };
        let bridge = resolved(&config.sandbox.bridge, "bridge");
        TestApp {
            api: Api::new(
                format!("http://{}", running.addr),
                config.admin_token.clone().unwrap(),
            ),
            network: resolved(&config.sandbox.network, "name"),
            bridge,
            instance,
            data_dir: config.data_dir.clone(),
            engine_host: None,
            config,
            running: Some(running),
            _dir: None,
        }
    }

    /// The running service's parts, for what no route does (seeding, opening credentials).
    pub fn state(&self) -> &testdrive::http::AppState {
        &self.running.as_ref().expect("the service runs").state
    }

    /// Stops the service, keeping its data directory, and starts it again on it. `between`
    /// runs while it is down.
    pub async fn restart(&mut self, between: impl FnOnce(&TestApp)) {
        self.running.take().expect("running").stop().await;
        between(self);
        let running = boot(self.config.clone()).await;
        // In-process it binds port 0 again, so the address is a new one.
        self.api.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    /// Stops the service and starts it again on the same data directory with its
    /// configuration changed by `configure` (an operator changing a setting).
    pub async fn reconfigure(&mut self, configure: impl FnOnce(&mut Config)) {
        configure(&mut self.config);
        self.restart(|_| {}).await;
    }

    /// Uploads on disk: each sandbox's `upload/` directory and what it holds (a placed
    /// upload leaves none).
    pub fn spool_entries(&self) -> Vec<String> {
        upload_entries(&self.data_dir.join("sandboxes"))
    }

    /// The sandboxes that have a directory (their data, or an upload arriving).
    pub fn sandbox_dirs(&self) -> Vec<String> {
        names_in(&self.data_dir.join("sandboxes"))
    }

    /// The sandbox id of the demo's one warm pool member (its container's label).
    pub fn warm_member(&self, demo: &str) -> String {
        let out = Command::new("docker")
            .args(["ps", "--filter"])
            .arg(format!("label=testdrive.instance={}", self.instance))
            .args(["--filter", &format!("label=testdrive.demo={demo}")])
            .args(["--format", "{{.Label \"testdrive.sandbox\"}}"])
            .output()
            .expect("the docker CLI runs");
        let members = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            !members.is_empty() && !members.contains('\n'),
            "{members:?}"
        );
        members
    }

    /// Containers and volumes this app's service made that still exist.
    pub fn instance_objects(&self) -> Vec<String> {
        let label = format!("testdrive.instance={}", self.instance);
        let host = self.engine_host.as_deref();
        let mut all = docker_ids_on(host, "container", &label);
        all.extend(docker_ids_on(host, "volume", &label));
        all
    }

    /// Nothing of a refused upload remains: no spooled file, no sandbox directory, no
    /// Engine object, no record.
    pub async fn assert_left_nothing(&self) {
        assert!(
            self.sandbox_dirs().is_empty(),
            "sandbox directories: {:?} (uploads: {:?})",
            self.sandbox_dirs(),
            self.spool_entries()
        );
        assert!(
            self.instance_objects().is_empty(),
            "engine objects: {:?}",
            self.instance_objects()
        );
        let records = self.sandboxes().await;
        assert!(records.is_empty(), "sandbox records: {records:?}");
    }
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A resolver that answers `*.localhost` with loopback, as browsers and curl do (glibc
/// does not), and everything else as the system does.
struct Localhost;

impl reqwest::dns::Resolve for Localhost {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            if name == "localhost" || name.ends_with(".localhost") {
                let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                ));
                return Ok(addrs);
            }
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name, 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

impl Api {
    /// For a service at `base` (`http://host:port`) with this admin token.
    pub fn new(base: String, admin: String) -> Api {
        Api {
            base,
            admin,
            http: Api::client(),
        }
    }

    /// A fresh client that does not follow redirects and, like a browser, sends every
    /// `*.localhost` name (sandbox origins) to loopback.
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(Localhost))
            .build()
            .unwrap()
    }

    /// The sandbox's own origin, `http://<id>.sandbox.localhost:<port>`, with `path`.
    pub fn sandbox_url(&self, id: &str, path: &str) -> String {
        let port = self.base.rsplit(':').next().unwrap();
        format!("http://{id}.sandbox.localhost:{port}{path}")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` of the sandbox, through its own origin, with its token.
    pub async fn open(&self, id: &str, token: &str, path: &str) -> Response {
        self.http
            .get(self.sandbox_url(id, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// The deployment's events (`GET /v1/service-events`) as `token` sees them, newest first.
    pub async fn service_events(&self, token: &str) -> Vec<Value> {
        let res = self.get("/v1/service-events", Some(token)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["items"].as_array().unwrap().clone()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.delete(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    /// A new vendor: (id, API key).
    /// A new vendor, given the demo images (`GIVEN_IMAGES`) as operators give a vendor its
    /// Engine-only images: (vendor id, API key).
    pub async fn vendor(&self, name: &str) -> (String, String) {
        let res = self
            .post_json("/v1/vendors", Some(&self.admin), &json!({ "name": name }))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        for image in GIVEN_IMAGES {
            self.give(&id, image).await;
        }
        (id, body["api_key"].as_str().unwrap().to_string())
    }

    /// Gives an Engine-only image to the vendor (as operators do).
    pub async fn give(&self, vendor: &str, image: &str) {
        let res = self
            .post_json(
                &format!("/v1/vendors/{vendor}/images"),
                Some(&self.admin),
                &json!({ "image": image }),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "giving {image}: {status} {body}"
        );
    }

    /// Registers a demo and returns its id.
    pub async fn demo(&self, key: &str, manifest: Value) -> String {
        let res = self.post_json("/v1/demos", Some(key), &manifest).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// A vendor with one demo of the static-files image; `overrides` are merged into its
    /// manifest. Returns (vendor key, demo id).
    pub async fn static_demo(&self, overrides: Value) -> (String, String) {
        self.static_demo_of(STATIC_FILES, overrides).await
    }

    /// Like `static_demo`, of `image` (a copy of the static-files image under another
    /// name), which the new vendor is given first.
    pub async fn static_demo_of(&self, image: &str, overrides: Value) -> (String, String) {
        let (vendor, key) = self
            .vendor(&format!("Vendor {}", uuid::Uuid::new_v4().simple()))
            .await;
        if !GIVEN_IMAGES.contains(&image) {
            self.give(&vendor, image).await;
        }
        let mut manifest = json!({
            "slug": "files", "title": "Static files", "image": image,
            "port": 8080, "data_path": "/data",
            "ready": {"http_path": "/", "timeout_seconds": 20}
        });
        merge(&mut manifest, overrides);
        let demo = self.demo(&key, manifest).await;
        (key, demo)
    }

    pub async fn create_sandbox(
        &self,
        demo: &str,
        files: &[(&str, Vec<u8>)],
        fields: &[(&str, &str)],
        wait: Option<u32>,
    ) -> Response {
        let mut form = Form::new().text("demo", demo.to_string());
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        for (name, bytes) in files {
            form = form.part(
                "file",
                Part::bytes(bytes.clone()).file_name(name.to_string()),
            );
        }
        let path = match wait {
            Some(n) => format!("/v1/sandboxes?wait={n}"),
            None => "/v1/sandboxes".to_string(),
        };
        self.http
            .post(self.url(&path))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Creates a sandbox and waits until it is ready; returns its creation body.
    pub async fn ready_sandbox(&self, demo: &str, files: &[(&str, Vec<u8>)]) -> Value {
        let res = self.create_sandbox(demo, files, &[], Some(60)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{body}");
        body
    }

    /// A ready sandbox of a new static-files demo (`overrides` merged into its manifest),
    /// holding one small CSV: (id, token).
    pub async fn static_sandbox(&self, overrides: Value) -> (String, String) {
        let (_, demo) = self.static_demo(overrides).await;
        let body = self
            .ready_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
            .await;
        (
            body["id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }

    /// Ends the sandbox as its prospect and checks nothing of it is left on the Engine.
    pub async fn end_sandbox(&self, id: &str, token: &str) {
        let res = self
            .delete(&format!("/v1/sandboxes/{id}"), Some(token))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_no_objects(id);
    }

    /// `PATCH /v1/vendors/{vendor}` with `body`, as `key`.
    pub async fn patch_vendor(&self, vendor: &str, key: &str, body: Value) -> Response {
        self.http
            .patch(self.url(&format!("/v1/vendors/{vendor}")))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A vendor with one demo of the static-files image (`overrides` merged into its
    /// manifest) whose webhooks go to `url`.
    pub async fn hooked_demo(&self, overrides: Value, url: &str) -> Hooked {
        let (key, demo) = self.static_demo(overrides).await;
        let vendor = self.vendor_of(&key).await;
        let res = self
            .patch_vendor(&vendor, &key, json!({ "webhook_url": url }))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        Hooked {
            key,
            demo,
            vendor,
            answer: res.json().await.unwrap(),
        }
    }

    /// The vendor as `key` sees it (`GET /v1/vendors/{vendor}`).
    pub async fn vendor_record(&self, vendor: &str, key: &str) -> Value {
        self.get(&format!("/v1/vendors/{vendor}"), Some(key))
            .await
            .json()
            .await
            .unwrap()
    }

    /// The id of the vendor whose key this is (read from its first demo).
    pub async fn vendor_of(&self, key: &str) -> String {
        let demos: Value = self.get("/v1/demos", Some(key)).await.json().await.unwrap();
        demos["items"][0]["vendor_id"].as_str().unwrap().to_string()
    }

    /// Polls the sandbox (as `token`) until `done` holds, up to a minute.
    /// The sandbox's trial report as `token` (a vendor's or the operators') reads it: its
    /// text (to look for what it must not hold) and its JSON.
    pub async fn report(&self, id: &str, token: &str) -> (String, Value) {
        let res = self
            .get(&format!("/v1/sandboxes/{id}/report"), Some(token))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        let report = serde_json::from_str(&text).unwrap();
        (text, report)
    }

    /// The demo as its vendor reads it.
    pub async fn demo_view(&self, key: &str, demo: &str) -> Value {
        let res = self.get(&format!("/v1/demos/{demo}"), Some(key)).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// Waits (up to a minute) until the demo's pool has exactly `n` members ready.
    pub async fn wait_pool(&self, key: &str, demo: &str, n: u64) {
        for _ in 0..600 {
            if self.demo_view(key, demo).await["warm_ready"] == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the pool never reached {n}: {}",
            self.demo_view(key, demo).await
        );
    }

    pub async fn wait_for(&self, id: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/sandboxes/{id}");
        let fetch = async || self.get(&path, Some(token)).await.json().await.unwrap();
        poll(Duration::from_millis(50), fetch, done).await
    }

    /// Polls the sandbox as operators see it (`sandbox`: each answer must be 200) until
    /// `done` holds, up to a minute.
    pub async fn wait_as_admin(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        poll(
            Duration::from_millis(20),
            async || self.sandbox(id).await,
            done,
        )
        .await
    }

    /// The sandbox's events, as `token` sees them.
    pub async fn events(&self, id: &str, token: &str) -> Vec<Value> {
        let body: Value = self
            .get(&format!("/v1/sandboxes/{id}/events"), Some(token))
            .await
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }

    /// The sandbox as operators see it.
    pub async fn sandbox(&self, id: &str) -> Value {
        let res = self
            .get(&format!("/v1/sandboxes/{id}"), Some(&self.admin))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// Every sandbox record (operators' list).
    pub async fn sandboxes(&self) -> Vec<Value> {
        let res = self.get("/v1/sandboxes", Some(&self.admin)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["items"].as_array().unwrap().clone()
    }
}

/// What `Api::hooked_demo` made.
pub struct Hooked {
    pub key: String,
    pub demo: String,
    pub vendor: String,
    /// The answer to setting the URL (the only one that shows the secret).
    pub answer: Value,
}

/// Fetches something (a sandbox record, what a receiver got) every `every` until `done`
/// holds, up to a minute.
pub async fn poll<T: std::fmt::Debug>(
    every: Duration,
    mut fetch: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = fetch().await;
        if done(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting; last: {got:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// An app whose webhooks may go to a receiver on 127.0.0.1, retried after 100 ms.
pub async fn webhook_app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.webhook_allow_private = true;
        c.webhook_first_retry_ms = 100;
    })
    .await
}

/// A webhook receiver on 127.0.0.1 at `http://<addr>/hook`: `answer` is given each request
/// as (its `testdrive-signature` header, its body) and says the status to answer with.
pub async fn webhook_receiver<F, A>(answer: F) -> SocketAddr
where
    F: Fn(String, Bytes) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = axum::http::StatusCode> + Send + 'static,
{
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let signature = headers
                .get("testdrive-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            answer(signature, body)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What a `recording_receiver` got: (signature header, body), in arrival order.
pub type Recorded = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver that records every request and answers 204.
pub async fn recording_receiver() -> (SocketAddr, Recorded) {
    let received = Recorded::default();
    let record = received.clone();
    let addr = webhook_receiver(move |signature, body| {
        let body = String::from_utf8_lossy(&body).to_string();
        record.lock().unwrap().push((signature, body));
        async { axum::http::StatusCode::NO_CONTENT }
    })
    .await;
    (addr, received)
}

/// The `testdrive-signature` value of `body` signed with `secret`.
pub fn signed(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The kinds of a sandbox's events, in order.
pub fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// JSON merge patch, for manifest overrides.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Asserts a problem document with this status, returning it.
pub async fn problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {}",
        res.status()
    );
    let got = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// Removes what a deployment leaves on the Engine: every container (with its anonymous
/// volumes), volume and network labelled `testdrive.instance=<instance>` (none if `instance`
/// is empty, i.e. not known yet), then its sandbox network and its bridge's firewall rules.
/// Errors are ignored: this is cleanup.
pub fn remove_deployment(instance: &str, network: &str, bridge: &str) {
    remove_deployment_on(None, instance, network, bridge)
}

/// As `remove_deployment`, on the Engine at `host` (`None`: the machine's).
pub fn remove_deployment_on(host: Option<&str>, instance: &str, network: &str, bridge: &str) {
    if !instance.is_empty() {
        let label = format!("testdrive.instance={instance}");
        let containers = docker_ids_on(host, "container", &label);
        if !containers.is_empty() {
            let _ = docker_cli(host)
                .args(["rm", "-fv"])
                .args(&containers)
                .output();
        }
        let volumes = docker_ids_on(host, "volume", &label);
        if !volumes.is_empty() {
            let _ = docker_cli(host)
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        for network in docker_ids_on(host, "network", &label) {
            let _ = docker_cli(host).args(["network", "rm", &network]).output();
        }
    }
    let _ = docker_cli(host).args(["network", "rm", network]).output();
    remove_firewall_rules(bridge);
}

/// The host firewall rules a service installed for its bridge.
pub fn remove_firewall_rules(bridge: &str) {
    for rule in testdrive::engine::firewall_rules(bridge) {
        let _ = Command::new(rule.program)
            .args(["-w", "-D"])
            .args(&rule.args)
            .output();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The service stops first: its reconciler makes a missing sandbox network again, so
        // one still running would put back the network removed below. On a current-thread
        // runtime nothing else runs while this does, and the runtime drops its tasks after.
        if let Some(running) = self.running.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| runtime.block_on(running.stop()));
        }
        // Whatever the test did, nothing of this app stays on the Engine.
        remove_deployment_on(
            self.engine_host.as_deref(),
            &self.instance,
            &self.network,
            &self.bridge,
        );
    }
}

/// One text column of the service's database, read from its file (`sql` selects it): what
/// the database really holds, beside what the API says.
pub async fn read_database(data_dir: &std::path::Path, sql: &'static str) -> Vec<String> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("testdrive.db"))
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let values: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
    let _ = conn.close().await;
    values
}
