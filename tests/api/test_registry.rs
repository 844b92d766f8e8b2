//! A private image registry of a test's own, on loopback, with basic auth: Debian's
//! `docker-registry` (distribution 2.8) with an `htpasswd` file (`apache2-utils`), both
//! installed by `scripts/install-test-tools`. The Engine talks plain HTTP to registries on
//! 127.0.0.0/8, so it needs no `insecure-registries` setting (STACK-NOTES).
//!
//! ```ignore
//! let mut registry = TestRegistry::start("acme", "s3cret");
//! let digest = registry.push(STATIC_FILES, "acme/files:1"); // "sha256:…"
//! let image = format!("{}/acme/files:1", registry.server()); // "127.0.0.1:<port>/acme/files:1"
//! registry.stop();        // "cannot reach the registry"
//! registry.start_again(); // same port, same storage
//! ```
//!
//! Everything of it is its own: a temporary directory holds its configuration, the htpasswd
//! file, its storage and its log, and the Docker CLI configuration its pushes log in with
//! (`DOCKER_CONFIG`), so no credential lands in the machine's own `~/.docker`. `push` leaves
//! the Engine's names under `<server>/` as they were, as a push from the vendor's own machine
//! would: the Engine has an image under the registry's name only once something pulls it,
//! and a tag a pull made keeps naming what was pulled after the tag moved in the registry.
//! Dropping it (after the test's `TestApp`: declare the registry first)
//! kills the registry, removes the directory, and removes every local reference under
//! `<server>/` — what it pushed and whatever a test pulled from it — by reference only, so an
//! image another name still uses (the demo images) is only untagged.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the registry may take to answer `GET /v2/` after it is spawned.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct TestRegistry {
    dir: TempDir,
    port: u16,
    username: String,
    password: String,
    process: Option<Child>,
    /// From spawning the registry to its first answer, at its last start.
    started_in: Duration,
}

impl TestRegistry {
    /// Starts a registry on a free port of 127.0.0.1 that accepts `username`/`password`
    /// (and nothing else); panics if it does not answer.
    pub fn start(username: &str, password: &str) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("tdreg-")
            .tempdir()
            .expect("a temporary directory");
        let mut registry = TestRegistry {
            port: free_port(),
            username: username.to_string(),
            password: password.to_string(),
            process: None,
            started_in: Duration::ZERO,
            dir,
        };
        let htpasswd = run(
            Command::new("htpasswd").args(["-Bbn", username, password]),
            "htpasswd (apache2-utils: run scripts/install-test-tools)",
        );
        fs::write(registry.path("htpasswd"), htpasswd.stdout).expect("the htpasswd file");
        fs::create_dir(registry.path("storage")).expect("the storage directory");
        fs::create_dir(registry.path("docker")).expect("the Docker CLI's directory");
        registry.write_config();
        registry.start_again();
        registry
    }

    /// `127.0.0.1:<port>`: the registry's server, as image references and
    /// `PUT /v1/vendors/{id}/registries/{server}` name it.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From spawning the registry to its first answer, at its last start.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Pushes the Engine's `local_image` as `<server>/<repo_tag>` (logged in as the
    /// registry's user) and returns the pushed manifest's digest, `sha256:…`. The Engine's
    /// names under `<server>/` are left as they were, as a push from the vendor's own machine
    /// would leave them: the Engine has the image under the registry's name only once
    /// something pulls it, and a tag an earlier pull made still names what was pulled.
    pub fn push(&self, local_image: &str, repo_tag: &str) -> String {
        assert!(self.is_running(), "push to a stopped registry");
        let target = format!("{}/{repo_tag}", self.server());
        let before = self.local_references();
        let earlier = before.contains(&target).then(|| image_id(&target));
        let mut login = self.docker();
        login
            .args(["login", "--username", &self.username, "--password-stdin"])
            .arg(self.server())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = login.spawn().expect("the docker CLI runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker login: {}", text(&out));
        run(
            self.docker().args(["tag", local_image, &target]),
            "docker tag",
        );
        let pushed = self.docker().args(["push", &target]).output().unwrap();
        if let Some(earlier) = earlier {
            let _ = self.docker().args(["tag", &earlier, &target]).output();
        }
        for made in self.local_references() {
            if !before.contains(&made) {
                let _ = self.docker().args(["rmi", &made]).output();
            }
        }
        assert!(pushed.status.success(), "docker push: {}", text(&pushed));
        // "<tag>: digest: sha256:… size: …"
        let said = text(&pushed);
        let digest = said
            .split_whitespace()
            .skip_while(|word| *word != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in what docker push said: {said}"));
        assert!(digest.starts_with("sha256:"), "{said}");
        digest.to_string()
    }

    /// Kills the registry (`cannot reach the registry`); its port and storage are kept for
    /// `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the registry (again) on the same port and storage, and waits until it
    /// answers; panics if it does not.
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "the registry is running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("registry.log"))
            .expect("the registry's log");
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(self.path("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Should the test binary die without dropping it, the registry dies too (it is tied
        // to the spawning thread, which outlives the registry in a test).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let spawned = Instant::now();
        let process = command
            .spawn()
            .expect("docker-registry runs (run scripts/install-test-tools)");
        self.process = Some(process);
        while !self.answers() {
            let exited = self.process.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || spawned.elapsed() > START_LIMIT {
                self.stop();
                panic!(
                    "the test registry on {} did not answer ({exited:?}); its log:\n{}",
                    self.server(),
                    fs::read_to_string(self.path("registry.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.started_in = spawned.elapsed();
    }

    /// The Engine's references under `<server>/`: `repo:tag` and `repo@sha256:…`.
    pub fn local_references(&self) -> Vec<String> {
        let prefix = format!("{}/", self.server());
        let out = run(
            Command::new("docker").args([
                "image",
                "ls",
                "--digests",
                "--format",
                "{{.Repository}} {{.Tag}} {{.Digest}}",
            ]),
            "docker image ls",
        );
        let mut references = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut fields = line.split(' ');
            let (Some(repo), Some(tag), Some(digest)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !repo.starts_with(&prefix) {
                continue;
            }
            if tag != "<none>" {
                references.push(format!("{repo}:{tag}"));
            }
            if digest != "<none>" {
                references.push(format!("{repo}@{digest}"));
            }
        }
        references.sort();
        references.dedup();
        references
    }

    /// A `docker` command with the configuration `push` logs in with.
    fn docker(&self) -> Command {
        let mut command = Command::new("docker");
        command.env("DOCKER_CONFIG", self.path("docker"));
        command
    }

    /// A `docker` command whose configuration of its own holds `credentials` for this
    /// registry, or none (`None`), written as `docker login` would without asking the
    /// registry first: what the CLI sends the Engine with a pull.
    pub fn docker_as(&self, credentials: Option<(&str, &str)>) -> Command {
        use base64::Engine as _;
        let dir = self.path(&format!("docker-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&dir).unwrap();
        if let Some((username, password)) = credentials {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let config = serde_json::json!({ "auths": { self.server(): { "auth": auth } } });
            fs::write(dir.join("config.json"), config.to_string()).unwrap();
        }
        let mut command = Command::new("docker");
        command.env("DOCKER_CONFIG", dir);
        command
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self) {
        // `delete` lets a test remove a manifest through the registry's API; the fixed
        // secret keeps uploads valid across `start_again`.
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {server}\n  secret: {secret}\n\
             auth:\n  htpasswd:\n    realm: testdrive-test\n    path: {htpasswd}\n",
            storage = self.path("storage").display(),
            server = self.server(),
            secret = uuid::Uuid::new_v4().simple(),
            htpasswd = self.path("htpasswd").display(),
        );
        fs::write(self.path("config.yml"), config).expect("the registry's configuration");
    }

    /// Whether `GET /v2/` is answered with `401` (the registry, asking for credentials).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.server());
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 16];
        let Ok(n) = stream.read(&mut head) else {
            return false;
        };
        head[..n].get(9..12) == Some(b"401")
    }

    fn remove_local_references(&self) {
        for reference in self.local_references() {
            let _ = Command::new("docker").args(["rmi", &reference]).output();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        self.remove_local_references();
        let left = self.local_references();
        if !left.is_empty() {
            eprintln!(
                "test registry {}: could not remove {left:?} from the Engine",
                self.server()
            );
        }
    }
}

/// The Engine's id of the image `reference` names.
fn image_id(reference: &str) -> String {
    let out = run(
        Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", reference]),
        "docker image inspect",
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    assert!(out.status.success(), "{what}: {}", text(&out));
    out
}

/// stdout and stderr.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

mod self_test {
    use super::*;
    use crate::helpers::{CSV_EXPLORER, STATIC_FILES, require_images};

    /// The harness itself: a push, a pull through the Engine with the right credentials
    /// (and with a wrong password, and none, refused), down and back on the same storage,
    /// and nothing left on the Engine once dropped.
    #[test]
    fn a_private_registry_takes_a_push_and_serves_only_its_user() {
        require_images();
        let mut registry = TestRegistry::start("acme", "s3cret");
        eprintln!(
            "test registry answered {} ms after it was spawned",
            registry.started_in().as_millis()
        );
        let started = Instant::now();
        let digest = registry.push(STATIC_FILES, "acme/files:1");
        eprintln!(
            "push of {STATIC_FILES}: {} ms ({digest})",
            started.elapsed().as_millis()
        );
        let server = registry.server();
        let image = format!("{server}/acme/files:1");
        assert!(
            registry.local_references().is_empty(),
            "a push leaves no name on the Engine: {:?}",
            registry.local_references()
        );

        let refused = registry
            .docker_as(Some(("acme", "wrong")))
            .args(["pull", &image])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        assert!(
            text(&refused).contains("unauthorized"),
            "{}",
            text(&refused)
        );
        let anonymous = registry
            .docker_as(None)
            .args(["pull", &image])
            .output()
            .unwrap();
        assert!(!anonymous.status.success(), "{}", text(&anonymous));

        let started = Instant::now();
        let pulled = registry
            .docker_as(Some(("acme", "s3cret")))
            .args(["pull", &image])
            .output()
            .unwrap();
        assert!(pulled.status.success(), "{}", text(&pulled));
        eprintln!(
            "docker pull of it through the Engine: {} ms",
            started.elapsed().as_millis()
        );
        assert!(text(&pulled).contains(&digest), "{}", text(&pulled));
        assert_eq!(image_id(&image), image_id(STATIC_FILES));
        assert_eq!(
            registry.local_references(),
            vec![
                format!("{server}/acme/files:1"),
                format!("{server}/acme/files@{digest}")
            ]
        );

        // Another product pushed under the same tag: the Engine's tag still names what it
        // pulled, as when a vendor pushes from elsewhere.
        let moved = registry.push(CSV_EXPLORER, "acme/files:1");
        assert_ne!(moved, digest);
        assert_eq!(image_id(&image), image_id(STATIC_FILES));
        assert_eq!(
            registry.local_references(),
            vec![
                format!("{server}/acme/files:1"),
                format!("{server}/acme/files@{digest}")
            ]
        );

        registry.stop();
        let down = registry
            .docker_as(Some(("acme", "s3cret")))
            .args(["pull", &image])
            .output()
            .unwrap();
        assert!(!down.status.success());
        assert!(
            text(&down).contains("connection refused"),
            "{}",
            text(&down)
        );
        registry.start_again();
        assert_eq!(registry.server(), server, "the same port");
        let by_digest = format!("{server}/acme/files@{moved}");
        run(
            registry
                .docker_as(Some(("acme", "s3cret")))
                .args(["pull", &by_digest]),
            "docker pull by digest after a restart",
        );
        assert_eq!(image_id(&by_digest), image_id(CSV_EXPLORER));

        drop(registry);
        let left: Vec<String> = String::from_utf8_lossy(
            &Command::new("docker")
                .args(["image", "ls", "--digests", "--format", "{{.Repository}}"])
                .output()
                .unwrap()
                .stdout,
        )
        .lines()
        .filter(|repo| repo.starts_with(&format!("{server}/")))
        .map(str::to_string)
        .collect();
        assert!(left.is_empty(), "left on the Engine: {left:?}");
        // Only names were removed: the images they named are still there under their own.
        image_id(STATIC_FILES);
        image_id(CSV_EXPLORER);
    }
}
