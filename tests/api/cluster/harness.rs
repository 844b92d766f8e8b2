//! A cluster of `testdrive serve` processes for the multi-node tests: one PostgreSQL
//! database (`testkit::postgres`), node `a` on the machine's Docker Engine and node `b` on a
//! second Engine of the test's own (`testkit::engine`). Each node has its own data
//! directory, port, sandbox network (name, bridge, subnet: unique to this run, as the
//! machine's Engine is shared with other runs) and log; all share the secret key and the
//! admin token, as a multi-node deployment must.
//!
//! Node `b` reaches its Engine through a symbolic link to the Engine's socket, and registers
//! that path: `cut_engine_link` takes it away, so that no other node can reach `b`'s Engine
//! (`restore_engine_link` puts it back before `b` starts again).
//!
//! Dropping a `Cluster` kills the nodes (their process group, with SIGKILL), removes from the
//! machine's Engine only what this cluster made (its deployment's `testdrive.instance`
//! label, the sandboxes it created, its network and the host firewall rules of both
//! bridges), then the second Engine with everything on it, then the database server if it
//! was the test's own. While panicking it prints the end of each node's log.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use testkit::engine::{Engine, SubnetLease};
use testkit::postgres;

use crate::helpers::{
    Api, GIVEN_IMAGES, docker_ids_on, remove_deployment_on, remove_firewall_rules, require_images,
    test_network,
};

/// How long a node may take to start and answer `/readyz` with 200.
const START_WITHIN: Duration = Duration::from_secs(90);

/// The places each node offers (`TESTDRIVE_MAX_SANDBOXES`).
pub const MAX_SANDBOXES: u64 = 10;

/// The database server: the test binary's shared one, or one the test may kill.
pub enum Database {
    Shared(&'static postgres::Server),
    Own(postgres::Server),
}

impl Deref for Database {
    type Target = postgres::Server;

    fn deref(&self) -> &postgres::Server {
        match self {
            Database::Shared(server) => server,
            Database::Own(server) => server,
        }
    }
}

/// One `testdrive serve` process and how to start it again.
pub struct Node {
    pub name: &'static str,
    api: Api,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Its Engine as `docker -H` takes it; `None`: the machine's.
    pub engine_host: Option<String>,
    pub network: String,
    pub bridge: String,
    subnet: String,
    log: PathBuf,
    child: Option<Child>,
    /// Keeps the subnet of `b`'s sandbox network from other test runs.
    _lease: Option<SubnetLease>,
}

impl Deref for Node {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Node {
    /// `http://127.0.0.1:<port>`, its `TESTDRIVE_NODE_URL`.
    pub fn node_url(&self) -> String {
        self.api.base.clone()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last `n` lines it logged (all its runs).
    pub fn log_tail(&self, n: usize) -> String {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A sandbox's directory on this node's disk.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("sandboxes").join(id)
    }

    /// Containers on this node's Engine labelled for the sandbox.
    pub fn containers_of(&self, id: &str) -> Vec<String> {
        docker_ids_on(
            self.engine_host.as_deref(),
            "container",
            &format!("testdrive.sandbox={id}"),
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            testkit::signal_group(&child, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub db: Database,
    pub database_url: String,
    pub admin: String,
    secret_key: String,
    /// The second Engine (node `b`'s).
    pub engine: Engine,
    /// The link node `b` registered as its Engine's endpoint.
    engine_link: PathBuf,
    /// Every sandbox a test created through `trial`, for the cleanup.
    created: std::sync::Mutex<BTreeSet<String>>,
    dir: TempDir,
}

impl Cluster {
    /// Two nodes, `a` (the machine's Engine) and `b` (a second Engine), on a fresh
    /// database of the shared PostgreSQL server.
    pub async fn start() -> Cluster {
        let db = Database::Shared(postgres::shared());
        Self::start_on(db).await
    }

    /// As `start`, on a PostgreSQL server of the test's own (which it may kill).
    pub async fn start_with_own_database() -> Cluster {
        let server = tokio::task::spawn_blocking(postgres::Server::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start PostgreSQL for the multi-node tests: {e}\n\
                     (scripts/install-test-tools installs Debian's `postgresql`)"
                )
            });
        Self::start_on(Database::Own(server)).await
    }

    async fn start_on(db: Database) -> Cluster {
        require_images();
        let database_url = tokio::task::block_in_place(|| db.create_database())
            .unwrap_or_else(|e| panic!("cannot make a database for the cluster: {e}"));
        let engine = tokio::task::block_in_place(Engine::start).unwrap_or_else(|e| {
            panic!(
                "cannot start a second Docker Engine for node b: {e}\n\
                 (the multi-node tests need root, dockerd and iproute2; CI has them)"
            )
        });
        tokio::task::block_in_place(|| engine.load_images(&GIVEN_IMAGES)).unwrap_or_else(|e| {
            panic!("cannot copy the demo images to the second Engine: {e} (sandbox-images/build)")
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine_link = dir.path().join("b-docker.sock");
        std::os::unix::fs::symlink(engine.socket(), &engine_link).expect("a link to the socket");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            db,
            database_url,
            admin: format!("test-admin-{}", uuid::Uuid::new_v4().simple()),
            secret_key: base64::engine::general_purpose::STANDARD
                .encode(uuid::Uuid::new_v4().into_bytes().repeat(2)),
            engine,
            engine_link,
            created: Default::default(),
            dir,
        };
        // From here on a failure drops `cluster`, which cleans up what exists.
        let (network, bridge, subnet) = test_network();
        cluster.add_node("a", None, network, bridge, subnet, None);
        let lease = SubnetLease::acquire().expect("a free /24 for node b's sandbox network");
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let b_host = format!("unix://{}", cluster.engine_link.display());
        cluster.add_node(
            "b",
            Some(b_host),
            format!("testdrive-test-{tag}"),
            format!("tdt{tag}"),
            lease.cidr(),
            Some(lease),
        );
        for i in 0..cluster.nodes.len() {
            cluster.boot(i).await;
        }
        cluster
    }

    fn add_node(
        &mut self,
        name: &'static str,
        engine_host: Option<String>,
        network: String,
        bridge: String,
        subnet: String,
        lease: Option<SubnetLease>,
    ) {
        let port = testkit::free_port().expect("a free port");
        let data_dir = self.dir.path().join(format!("node-{name}"));
        self.nodes.push(Node {
            name,
            api: Api::new(format!("http://127.0.0.1:{port}"), self.admin.clone()),
            port,
            data_dir,
            engine_host,
            network,
            bridge,
            subnet,
            log: self.dir.path().join(format!("node-{name}.log")),
            child: None,
            _lease: lease,
        });
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn a(&self) -> &Node {
        self.node("a")
    }

    pub fn b(&self) -> &Node {
        self.node("b")
    }

    /// Spawns node `i` (dying with the test process) and waits until `/readyz` is 200.
    async fn boot(&mut self, i: usize) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)
            .expect("the node's log opens");
        let node = &self.nodes[i];
        let mut cmd = crate::process::serve_command();
        cmd.env("TESTDRIVE_DATABASE_URL", &self.database_url)
            .env("TESTDRIVE_NODE_NAME", node.name)
            .env("TESTDRIVE_NODE_URL", node.node_url())
            .env("TESTDRIVE_SECRET_KEY", &self.secret_key)
            .env("TESTDRIVE_ADMIN_TOKEN", &self.admin)
            .env("TESTDRIVE_DATA_DIR", &node.data_dir)
            .env("TESTDRIVE_LISTEN", format!("127.0.0.1:{}", node.port))
            .env("TESTDRIVE_MAX_SANDBOXES", MAX_SANDBOXES.to_string())
            .env("TESTDRIVE_RECONCILE_SECONDS", "2")
            .env("TESTDRIVE_SHUTDOWN_GRACE_SECONDS", "1")
            .env("TESTDRIVE_SANDBOX__NETWORK", &node.network)
            .env("TESTDRIVE_SANDBOX__BRIDGE", &node.bridge)
            .env("TESTDRIVE_SANDBOX__SUBNET", &node.subnet)
            .env("TESTDRIVE_LOG", "info,testdrive=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        if let Some(host) = &node.engine_host {
            cmd.env("TESTDRIVE_DOCKER_HOST", host);
        }
        let child = testkit::spawn_tied_to_process(cmd).expect("the testdrive binary starts");
        let node = &mut self.nodes[i];
        node.child = Some(child);
        // A fresh client: pooled connections to a killed process are of no use.
        node.api.http = Api::client();

        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                node.child = None;
                panic!(
                    "node {} exited ({status}) before it was ready; its log:\n{}",
                    node.name,
                    node.log_tail(40)
                );
            }
            let ready = node
                .http
                .get(node.url("/readyz"))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                eprintln!(
                    "node {} ready {} ms after it was spawned",
                    node.name,
                    started.elapsed().as_millis()
                );
                return;
            }
            assert!(
                started.elapsed() < START_WITHIN,
                "node {} was not ready within {START_WITHIN:?}; its log:\n{}",
                node.name,
                node.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL to the node's process (and anything it forked), then reap.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.nodes[i].is_running(), "node {name} is not running");
        self.nodes[i].kill();
    }

    /// Starts the node again on the same data directory, port, network and Engine; returns
    /// once it answers `/readyz` with 200.
    pub async fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(!self.nodes[i].is_running(), "node {name} still runs");
        self.boot(i).await;
    }

    /// Removes the link through which node `b`'s Engine is reached: no other node can
    /// reach it any more (node `b` itself must not run meanwhile).
    pub fn cut_engine_link(&self) {
        std::fs::remove_file(&self.engine_link).expect("the link goes");
    }

    pub fn restore_engine_link(&self) {
        std::os::unix::fs::symlink(self.engine.socket(), &self.engine_link)
            .expect("the link comes back");
    }

    /// A vendor with the CSV Explorer demo, registered through node `a`: (vendor key, demo).
    pub async fn csv_demo(&self) -> (String, String) {
        let a = self.a();
        let (_, key) = a
            .vendor(&format!("Cluster vendor {}", uuid::Uuid::new_v4().simple()))
            .await;
        let demo = a.demo(&key, crate::screens::csv_explorer_manifest()).await;
        // Each node looks at a new demo's image at its next heartbeat (every 3 s); only
        // then are trials placed there.
        tokio::time::sleep(Duration::from_secs(4)).await;
        (key, demo)
    }

    /// Creates a trial through `via` (waiting until it is ready) with `files` and, when
    /// given, a trial window of `seconds`: its creation body.
    pub async fn trial(
        &self,
        via: &Node,
        demo: &str,
        files: &[(&str, Vec<u8>)],
        seconds: Option<u64>,
    ) -> Trial {
        let seconds = seconds.map(|s| s.to_string());
        let mut fields: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = &seconds {
            fields.push(("seconds", s));
        }
        let res = via.create_sandbox(demo, files, &fields, Some(90)).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "a trial through {}: {body}",
            via.name
        );
        let trial = Trial {
            id: body["id"].as_str().unwrap().to_string(),
            token: body["token"].as_str().unwrap().to_string(),
            body,
        };
        self.created.lock().unwrap().insert(trial.id.clone());
        assert_eq!(trial.body["status"], "ready", "{}", trial.body);
        trial
    }

    /// A trial placed on node `on`: trials are made through node `a` until one lands there
    /// (with equal places, the node with the most free places takes the next one, so this
    /// takes at most a few once `on` has seen the demo's image, within a heartbeat of the
    /// demo's registration); the ones placed elsewhere are returned too, to end or keep.
    pub async fn trial_on(
        &self,
        on: &str,
        demo: &str,
        files: &[(&str, Vec<u8>)],
        seconds: Option<u64>,
    ) -> (Trial, Vec<Trial>) {
        let mut elsewhere = Vec::new();
        for _ in 0..12 {
            let trial = self.trial(self.a(), demo, files, seconds).await;
            if self.node_of(&trial.id).await == on {
                return (trial, elsewhere);
            }
            elsewhere.push(trial);
            // The node may not have looked at the new demo's image yet.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "twelve trials in a row went elsewhere than {on}: {:?}",
            self.a().get_json("/v1/nodes").await
        );
    }

    /// The node the admin's view of the sandbox names.
    pub async fn node_of(&self, id: &str) -> String {
        let seen = self.a().sandbox(id).await;
        seen["node"]
            .as_str()
            .unwrap_or_else(|| panic!("the admin's view of a sandbox has \"node\": {seen}"))
            .to_string()
    }

    /// Every `testdrive.instance` label on the machine's Engine's objects of the sandboxes
    /// made here, and the deployment's id as the database keeps it (when it can be read).
    fn instances(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for id in self.created.lock().unwrap().iter() {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=testdrive.sandbox={id}"),
                ])
                .args(["--format", "{{.Label \"testdrive.instance\"}}"])
                .output();
            if let Ok(out) = out {
                found.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty()),
                );
            }
        }
        let db = self.database_url.rsplit('/').next().unwrap_or_default();
        if self.db.is_running()
            && let Ok(out) = self
                .db
                .psql(db, "SELECT value FROM meta WHERE key = 'instance'")
        {
            found.extend(
                out.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
        found
    }
}

/// A trial as its creation answered.
#[derive(Clone, Debug)]
pub struct Trial {
    pub id: String,
    pub token: String,
    pub body: Value,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "--- the last lines node {} logged ---\n{}\n---",
                    node.name,
                    node.log_tail(60)
                );
            }
        }
        // The machine's Engine: only what this cluster made.
        let a = &self
            .nodes
            .first()
            .map(|n| (n.network.clone(), n.bridge.clone()));
        for instance in self.instances() {
            if let Some((network, bridge)) = a {
                remove_deployment_on(None, &instance, network, bridge);
            }
        }
        for id in self.created.lock().unwrap().iter() {
            let left = docker_ids_on(None, "container", &format!("testdrive.sandbox={id}"));
            if !left.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-fv"])
                    .args(&left)
                    .output();
            }
            for kind in ["volume", "network"] {
                for object in docker_ids_on(None, kind, &format!("testdrive.sandbox={id}")) {
                    let _ = Command::new("docker").args([kind, "rm", &object]).output();
                }
            }
        }
        for node in &self.nodes {
            if node.engine_host.is_none() {
                let _ = Command::new("docker")
                    .args(["network", "rm", &node.network])
                    .output();
            }
            // Each node installs its bridge's rule in the host's firewall.
            remove_firewall_rules(&node.bridge);
        }
        // The second Engine goes with everything on it when `engine` drops, after this.
    }
}

/// Polls `fetch` every `every` until `done` holds, up to `limit`: the last value.
pub async fn poll_until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut fetch: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let got = fetch().await;
        if done(&got) {
            return got;
        }
        assert!(
            started.elapsed() < limit,
            "gave up waiting ({limit:?}) for {what}; last: {got:?}"
        );
        tokio::time::sleep(every).await;
    }
}

impl Api {
    /// `GET path` as the operators, with a timeout: (status, content type, body as JSON
    /// or as a string).
    pub async fn get_json(&self, path: &str) -> (StatusCode, String, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} of {} did not answer: {e}", self.base));
        let status = res.status();
        let kind = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, kind, body)
    }
}

/// The CSV Explorer's trial data: a small CSV whose rows the live search finds.
pub fn sales_csv() -> Vec<(&'static str, Vec<u8>)> {
    vec![("sales.csv", crate::helpers::csv_of_size(8 << 10))]
}
