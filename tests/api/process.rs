//! The real `testdrive` binary as a child process, for crash tests: it can be killed with
//! SIGKILL (or stopped with SIGTERM) at any point and started again on the same data
//! directory, sandbox network and port. Dropping a `ChildService` kills the process and
//! removes every Engine object of its deployment (by its `testdrive.instance` label) and its
//! network, so a failing test leaks nothing; while panicking it prints the end of the log.
//! Its HTTP helpers are those of `helpers::Api`, which it owns and derefs to.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{Api, remove_deployment, require_images, test_network};

/// Milliseconds since the Unix epoch, on the clock the service stamps its records with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as i64
}

/// An RFC 3339 timestamp of a record (`"2026-…Z"`) in milliseconds since the epoch.
pub fn ms(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A port free right now on 127.0.0.1; kept for the service's whole life (restarts too).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `testdrive serve`: only what the caller gives it, nothing inherited of the test's own
/// `TESTDRIVE_*` environment, and the per-client limits lifted (tests make many sandboxes
/// from one address).
pub(crate) fn serve_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testdrive"));
    cmd.arg("serve");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TESTDRIVE_") {
            cmd.env_remove(key);
        }
    }
    // Tests create many sandboxes from one address; the limits have their own tests.
    cmd.env("TESTDRIVE_RATE_LIMIT__BURST", "10000")
        .env("TESTDRIVE_RATE_LIMIT__MAX_SHARE_PERCENT", "100")
        .env("TESTDRIVE_INTAKE__MAX_UPLOADS_PER_CLIENT", "1000")
        .env("TESTDRIVE_INTAKE__MIN_FREE_BYTES", "67108864")
        .env("TESTDRIVE_SERVER__MAX_CONNECTIONS_PER_CLIENT", "100000");
    cmd
}

/// One Engine object of the deployment, with the sandbox it is labelled for.
#[derive(Clone, Debug)]
pub struct EngineObject {
    pub kind: &'static str,
    pub id: String,
    pub sandbox: String,
}

pub struct ChildService {
    api: Api,
    pub data_dir: PathBuf,
    pub network: String,
    /// The deployment's id: the `testdrive.instance` label of every object it makes.
    pub instance: String,
    /// When each process was spawned, in ms since the epoch, oldest first.
    pub starts: Vec<i64>,
    bridge: String,
    subnet: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

impl ChildService {
    /// Starts the service with the test defaults (reconciliation every 2 s).
    pub async fn start() -> ChildService {
        Self::start_with(&[]).await
    }

    /// Starts the service; `env` adds or overrides `TESTDRIVE_*` settings.
    pub async fn start_with(env: &[(&str, &str)]) -> ChildService {
        require_images();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data_dir = dir.path().join("data");
        let port = free_port();
        let (network, bridge, subnet) = test_network();
        let mut service = ChildService {
            api: Api::new(
                format!("http://127.0.0.1:{port}"),
                format!("test-admin-{}", uuid::Uuid::new_v4().simple()),
            ),
            data_dir,
            network,
            instance: String::new(),
            starts: Vec::new(),
            bridge,
            subnet,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: dir.path().join("service.log"),
            dir,
        };
        // From here on a failure drops `service`, which kills the process and cleans up.
        let mut attempts = 0;
        while let Err(exited) = service.boot().await {
            // The free port may have been taken meanwhile: another one, then.
            attempts += 1;
            assert!(
                attempts < 3 && service.log_tail(5).contains("cannot listen"),
                "{exited}"
            );
            service.api.base = format!("http://127.0.0.1:{}", free_port());
        }
        service.instance = read_instance(&service.data_dir.join("testdrive.db")).await;
        service
    }

    fn port(&self) -> &str {
        self.base.rsplit(':').next().unwrap()
    }

    /// Spawns the process and waits until it says where it listens and `/readyz` is 200;
    /// `Err` if it exits first.
    async fn boot(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the service is running already");
        // A fresh client: pooled connections to a killed process are of no use.
        self.api.http = Api::client();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file opens");
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = serve_command();
        cmd.env("TESTDRIVE_DATA_DIR", &self.data_dir)
            .env("TESTDRIVE_LISTEN", format!("127.0.0.1:{}", self.port()))
            .env("TESTDRIVE_ADMIN_TOKEN", &self.admin)
            .env("TESTDRIVE_RECONCILE_SECONDS", "2")
            .env("TESTDRIVE_SANDBOX__NETWORK", &self.network)
            .env("TESTDRIVE_SANDBOX__BRIDGE", &self.bridge)
            .env("TESTDRIVE_SANDBOX__SUBNET", &self.subnet)
            .env("TESTDRIVE_LOG", "info,testdrive=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        self.starts.push(now_ms());
        self.child = Some(cmd.spawn().expect("the testdrive binary starts"));

        let listening = format!("testdrive: listening on {}", self.base);
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("the service exited ({status}) before it was ready"));
            }
            if self.log_since(log_offset).contains(&listening) {
                let ready = self
                    .http
                    .get(self.url("/readyz"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < limit,
                "the service was not ready within a minute"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    }

    /// The last `n` lines the service logged (all its runs).
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.log_since(0);
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The lines the service logged (all its runs) that contain any of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> String {
        self.log_since(0)
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the service runs").id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the service runs");
        child.kill().expect("SIGKILL is delivered");
        child.wait().expect("the killed service is reaped");
    }

    /// SIGTERM: the graceful stop. Wait for the exit with `wait_exit`.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().expect("a process").try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the service again on the same data directory, network and port (so `base`
    /// stays as it is).
    pub async fn restart(&mut self) {
        if let Err(exited) = self.boot().await {
            panic!("{exited}");
        }
    }

    /// The time the current (last) process was spawned, ms since the epoch.
    pub fn last_start(&self) -> i64 {
        *self.starts.last().expect("started once")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    /// Uploads on disk: each sandbox's `upload/` and everything in it, as paths.
    pub fn spool_entries(&self) -> Vec<String> {
        crate::helpers::upload_entries(&self.spool_dir())
    }

    /// The sandboxes that have a directory (their data, or an upload arriving).
    pub fn sandbox_dirs(&self) -> Vec<String> {
        crate::helpers::names_in(&self.spool_dir())
    }

    /// Every container and volume of this deployment on the Engine, and any network
    /// labelled for it, with the sandbox each is labelled for.
    pub fn engine_objects(&self) -> Vec<EngineObject> {
        let label = format!("label=testdrive.instance={}", self.instance);
        let list = |kind: &'static str, args: &[&str], id: &str| -> Vec<EngineObject> {
            let out = Command::new("docker")
                .args(args)
                .args(["--filter", &label, "--format"])
                .arg(format!(r#"{id} {{{{.Label "testdrive.sandbox"}}}}"#))
                .output()
                .expect("the docker CLI runs");
            assert!(out.status.success(), "docker {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let (id, sandbox) = line.split_once(' ').unwrap_or((line, ""));
                    EngineObject {
                        kind,
                        id: id.to_string(),
                        sandbox: sandbox.trim().to_string(),
                    }
                })
                .collect()
        };
        let mut all = list("container", &["ps", "-a"], "{{.ID}}");
        all.extend(list("volume", &["volume", "ls"], "{{.Name}}"));
        all.extend(list("network", &["network", "ls"], "{{.ID}}"));
        all
    }
}

impl Deref for ChildService {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The deployment id, read from the service's SQLite file without writing to it.
async fn read_instance(db: &Path) -> String {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the service's database opens read-only");
    let instance: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'instance'")
        .fetch_one(&mut conn)
        .await
        .expect("the database holds the instance id");
    let _ = conn.close().await;
    instance
}

impl Drop for ChildService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines the service logged ({}) ---\n{}\n---",
                self.dir.path().display(),
                self.log_tail(60)
            );
        }
        remove_deployment(&self.instance, &self.network, &self.bridge);
    }
}
