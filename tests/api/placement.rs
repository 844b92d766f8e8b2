//! Issue 16: the prospect's files written straight into place. Each sandbox has a host
//! directory of its own, bound at the demo's data path and owned by the demo's user; the
//! upload is renamed into it (no copy, no archive, no Engine upload); links a demo makes
//! there are never followed; the sandbox is made while the files arrive, and an upload cut
//! short leaves nothing. Against the real Engine and the real binary's HTTP server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::*;

/// The sandbox's data directory as testdrive keeps it.
fn data_dir(app: &TestApp, id: &str) -> PathBuf {
    app.data_dir.join("sandboxes").join(id).join("data")
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (meta.uid(), meta.gid(), meta.mode() & 0o777)
}

/// `(type, source, destination)` of the container's mount at `/data`.
fn data_mount(id: &str) -> (String, String, String) {
    let line = inspect_container(
        id,
        r#"{{range .Mounts}}{{if eq .Destination "/data"}}{{.Type}} {{.Source}} {{.Destination}}{{end}}{{end}}"#,
    );
    let mut parts = line.split_whitespace().map(str::to_string);
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next())
}

async fn fetch(app: &TestApp, id: &str, token: &str, path: &str) -> (StatusCode, String) {
    let res = app.open(id, token, path).await;
    let status = res.status();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn files_are_renamed_into_a_bound_directory_the_demo_user_owns_and_go_at_the_end() {
    let app = TestApp::spawn().await;
    // The image runs as 65534:65534; the load command writes beside the prospect's file.
    let (_, demo) = app
        .static_demo(json!({
            "load_command": ["sh", "-c", "cat /data/a.csv > /data/copy.csv && echo hi > /data/by-demo"]
        }))
        .await;
    let content = b"city,sales\nLyon,12\nOslo,7\n".to_vec();
    let body = app
        .ready_sandbox(&demo, &[("a.csv", content.clone())])
        .await;
    let (id, token) = (
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    );
    let data = data_dir(&app, id);

    assert_eq!(
        data_mount(id),
        (
            "bind".to_string(),
            data.display().to_string(),
            "/data".to_string()
        ),
        "the data path is the sandbox's own host directory"
    );
    assert_eq!(owner_and_mode(&data), (65534, 65534, 0o700));
    assert_eq!(owner_and_mode(&data.join("a.csv")), (65534, 65534, 0o600));
    assert_eq!(std::fs::read(data.join("a.csv")).unwrap(), content);
    assert_eq!(
        std::fs::read(data.join("copy.csv")).unwrap(),
        content,
        "the demo's user read it"
    );
    assert_eq!(
        owner_and_mode(&data.join("by-demo")).0,
        65534,
        "and wrote beside it"
    );
    assert!(
        !data.parent().unwrap().join("upload").exists(),
        "the upload is moved, not copied: nothing stays in upload/"
    );
    assert_eq!(
        fetch(&app, id, token, "/a.csv").await,
        (StatusCode::OK, String::from_utf8(content).unwrap())
    );

    app.end_sandbox(id, token).await;
    assert!(
        !data.parent().unwrap().exists(),
        "the sandbox's directory goes before DELETE answers"
    );
    let ended = app.sandbox(id).await;
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
}

#[tokio::test]
async fn a_demo_user_by_number_gets_the_directory_and_an_unknown_name_fails_in_words() {
    let app = TestApp::spawn().await;
    // The static-files image has no /etc/passwd: a uid alone runs with group 0.
    let (_, demo) = app
        .static_demo(json!({
            "user": "4321",
            "load_command": ["sh", "-c", "echo hi > /data/by-demo"]
        }))
        .await;
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let id = body["id"].as_str().unwrap();
    let data = data_dir(&app, id);
    assert_eq!(owner_and_mode(&data), (4321, 0, 0o700));
    assert_eq!(owner_and_mode(&data.join("by-demo")).0, 4321);
    app.end_sandbox(id, body["token"].as_str().unwrap()).await;

    let (_, ghost) = app.static_demo(json!({"user": "ghost"})).await;
    let res = app
        .create_sandbox(&ghost, &[("a.csv", b"x\n1\n".to_vec())], &[], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    let failure = body["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("no user \"ghost\""), "{body}");
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    app.wait_for(id, token, |s| s["data_deleted_at"].is_string())
        .await;
    assert!(!data_dir(&app, id).parent().unwrap().exists());
    assert_no_objects(id);
}

#[tokio::test]
async fn links_a_demo_makes_in_its_data_directory_are_never_followed() {
    let app = TestApp::spawn().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"keep").unwrap();
    // A warm member runs before the prospect comes: its links are there when the files are
    // placed. One stands where the prospect's file goes, one leads out of the directory.
    let script = format!(
        "ln -s {secret} /data/a.csv; ln -s {outside} /data/escape; \
         exec httpd -f -p 8080 -h /data",
        secret = secret.display(),
        outside = outside.path().display()
    );
    let (key, demo) = app
        .static_demo(json!({"warm_pool": 1, "command": ["sh", "-c", script]}))
        .await;
    app.wait_pool(&key, &demo, 1).await;
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"prospect\n".to_vec())])
        .await;
    let (id, token) = (
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    );
    let data = data_dir(&app, id);
    assert!(data.join("escape").is_symlink(), "the demo made its links");
    let placed = std::fs::symlink_metadata(data.join("a.csv")).unwrap();
    assert!(
        placed.is_file(),
        "the link was replaced by the prospect's file"
    );
    assert_eq!(std::fs::read(data.join("a.csv")).unwrap(), b"prospect\n");
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"keep",
        "nothing written outside"
    );

    app.end_sandbox(id, token).await;
    assert!(!data.exists());
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"keep",
        "the teardown went through no link"
    );
}

/// A multipart body sent as the test says, for uploads that stop halfway.
struct SlowUpload {
    parts: mpsc::Sender<std::io::Result<Bytes>>,
    answer: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

const BOUNDARY: &str = "td-slow-upload";

impl SlowUpload {
    /// Sends the form's `demo` field and the start of one file, and waits.
    async fn begin(app: &TestApp, demo: &str) -> SlowUpload {
        let (parts, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = Api::client()
            .post(app.url("/v1/sandboxes?wait=60"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(reqwest::Body::wrap_stream(body));
        let answer = tokio::spawn(request.send());
        let head = format!(
            "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"demo\"\r\n\r\n{demo}\r\n\
             --{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; \
             filename=\"a.csv\"\r\ncontent-type: text/csv\r\n\r\nx,y\n"
        );
        parts.send(Ok(Bytes::from(head))).await.unwrap();
        SlowUpload { parts, answer }
    }

    async fn finish(self) -> Value {
        let rest = format!("1,2\n\r\n--{BOUNDARY}--\r\n");
        self.parts.send(Ok(Bytes::from(rest))).await.unwrap();
        drop(self.parts);
        let res = self.answer.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// The client gives up halfway: the connection breaks.
    async fn cut(self) {
        let _ = self
            .parts
            .send(Err(std::io::Error::other("the client gave up")))
            .await;
        let _ = self.answer.await;
    }
}

/// This deployment's running containers, by the sandbox they are labelled for.
fn running_sandboxes(app: &TestApp) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--filter"])
        .arg(format!("label=testdrive.instance={}", app.instance))
        .args(["--format", "{{.Label \"testdrive.sandbox\"}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until exactly one of this deployment's containers runs: the one of the upload
/// under way. Its sandbox.
async fn the_one_running(app: &TestApp) -> String {
    let running = poll(
        Duration::from_millis(20),
        async || running_sandboxes(app),
        |ids| ids.len() == 1,
    )
    .await;
    running[0].clone()
}

#[tokio::test]
async fn the_sandbox_runs_while_the_files_arrive_and_a_cut_upload_leaves_nothing() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;

    // Cut short: its container was made and started, then everything goes.
    let upload = SlowUpload::begin(&app, &demo).await;
    let running = the_one_running(&app).await;
    assert_eq!(app.sandbox_dirs(), [running], "its directory is there too");
    assert!(
        app.sandboxes().await.is_empty(),
        "a sandbox whose files are still arriving is in no list"
    );
    upload.cut().await;
    poll(
        Duration::from_millis(50),
        async || (app.instance_objects(), app.sandbox_dirs()),
        |(objects, dirs)| objects.is_empty() && dirs.is_empty(),
    )
    .await;
    app.assert_left_nothing().await;

    // Finished: the sandbox that ran while the file arrived is the prospect's.
    let upload = SlowUpload::begin(&app, &demo).await;
    let running = the_one_running(&app).await;
    let body = upload.finish().await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["id"].as_str().unwrap(), running);
    let (id, token) = (
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    );
    assert_eq!(fetch(&app, id, token, "/a.csv").await.1, "x,y\n1,2\n");
    let kinds = kinds(&app.events(id, token).await);
    assert_eq!(
        kinds[..4],
        ["created", "data_placed", "started", "ready"],
        "{kinds:?}"
    );
    app.end_sandbox(id, token).await;
}

/// A directory bind-mounted at another path, unmounted when dropped.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn the_engine_binds_the_data_directory_from_the_host_path_it_is_given() {
    // testdrive sees its data directory at one path; the Engine's host has it at another
    // (as when testdrive runs in a container).
    let data = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .arg("--bind")
        .arg(data.path())
        .arg(host.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot bind-mount (these tests need root)"
    );
    let _mounted = BindMount(host.path().to_path_buf());
    let app = TestApp::spawn_in(data.path(), |config| {
        config.host_data_dir = Some(host.path().to_path_buf());
    })
    .await;
    let (_, demo) = app.static_demo(json!({})).await;
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let (id, token) = (
        body["id"].as_str().unwrap(),
        body["token"].as_str().unwrap(),
    );
    let (_, source, _) = data_mount(id);
    assert_eq!(
        source,
        host.path()
            .join("sandboxes")
            .join(id)
            .join("data")
            .display()
            .to_string()
    );
    assert_eq!(fetch(&app, id, token, "/a.csv").await.1, "x\n1\n");
    app.end_sandbox(id, token).await;
    drop(app);
}
