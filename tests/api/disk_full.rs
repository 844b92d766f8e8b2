//! The disk under the spool fills: uploads are refused with `507`, in plain words, with
//! `Retry-After`, before their body is read when the request says it will not fit, and as
//! soon as the disk goes under `intake.min_free_bytes` while one streams; nothing of them is
//! left (spool, record, Engine object), the deployment's events say so once, and a trial
//! already running goes on as before. The spool is a small tmpfs mounted on the app's spool
//! directory before it starts (the tests run as root), filled by the test with a file of its
//! own to leave as much room as each case needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, inspect_container, problem};
use crate::intake::{BOUNDARY, closing, field, file_head};

const MIB: u64 = 1 << 20;
/// What every refusal for want of disk says, and nothing of the OS's.
const NO_ROOM: &str =
    "the server has no room for this upload right now; try again later or with smaller files";
/// The test's own file on the small disk, taking the room it should not have.
const FILLER: &str = "filler-of-the-test";

// ---------------------------------------------------------------------------------------------
// A small disk
// ---------------------------------------------------------------------------------------------

/// A data directory whose `sandboxes/` (the spool) is a tmpfs of its own; unmounted when dropped, however
/// the test ended.
struct SmallDisk {
    dir: TempDir,
    spool: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spool = dir.path().join("sandboxes");
        std::fs::create_dir(&spool).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("testdrive-test-spool")
            .arg(&spool)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir, spool }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        testdrive::spool::free_space(&self.spool).unwrap()
    }

    /// Writes the filler until about `free` bytes are left.
    fn leave(&self, free: u64) {
        let path = self.spool.join(FILLER);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let block = vec![7u8; 64 * 1024];
        while self.free() > free {
            let n = (self.free() - free).min(block.len() as u64) as usize;
            std::io::Write::write_all(&mut file, &block[..n]).unwrap();
        }
    }

    /// Gives the filler's room back.
    fn empty(&self) {
        std::fs::remove_file(self.spool.join(FILLER)).unwrap();
    }

    /// What the spool holds besides the filler: uploads' directories.
    /// Uploads on the disk: each sandbox's `upload/` and what it holds.
    fn uploads(&self) -> Vec<String> {
        crate::helpers::upload_entries(&self.spool)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.spool)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a test failed mid-upload): detach it now, gone once let go.
            let _ = Command::new("umount").arg("-l").arg(&self.spool).status();
        }
    }
}

/// A service on a small disk, keeping `floor` bytes free on it.
async fn app_on(disk: &SmallDisk, floor: u64) -> TestApp {
    TestApp::spawn_in(disk.data_dir(), |c| c.intake.min_free_bytes = floor).await
}

/// A static-files demo taking uploads of up to `max_bytes`: its id.
async fn demo(app: &TestApp, max_bytes: u64) -> String {
    app.static_demo(json!({"upload": {"max_bytes": max_bytes, "extensions": []}}))
        .await
        .1
}

// ---------------------------------------------------------------------------------------------
// Raw requests
// ---------------------------------------------------------------------------------------------

/// An answer read off a raw connection (a `100 Continue` is one too).
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then_some(value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// Reads the next answer from `reader`; what follows it stays in `buf`. Gives up after a
/// minute.
async fn next_answer(reader: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut more = async |buf: &mut Vec<u8>| {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout_at(deadline, reader.read(&mut chunk))
            .await
            .expect("an answer within a minute")
            .expect("the connection reads");
        assert!(n > 0, "closed before a whole answer: {:?}", buf);
        buf.extend_from_slice(&chunk[..n]);
    };
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        more(buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head[9..12].parse().expect("a status");
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let length = match status {
        100..=199 => 0,
        _ => answer
            .header("content-length")
            .expect("a content-length")
            .parse()
            .unwrap(),
    };
    while buf.len() < end + 4 + length {
        more(buf).await;
    }
    answer.body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
    buf.drain(..end + 4 + length);
    answer
}

/// The head of a `POST /v1/sandboxes`, with `more` header lines.
fn post_head(more: &[&str]) -> String {
    let mut head = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nhost: testdrive\r\n\
         content-type: multipart/form-data; boundary={BOUNDARY}\r\n"
    );
    for line in more {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Checks a refusal for want of disk read off a raw connection.
fn assert_no_room(answer: &Answer) {
    assert_eq!(answer.status, 507, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let retry: u64 = answer
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert_eq!(answer.json()["detail"], NO_ROOM);
    assert_eq!(answer.json()["status"], 507);
}

/// A checked refusal for want of disk from reqwest.
async fn assert_no_room_res(res: reqwest::Response) {
    assert!(res.headers().contains_key("retry-after"), "{res:?}");
    let body = problem(res, StatusCode::INSUFFICIENT_STORAGE).await;
    assert_eq!(body["detail"], NO_ROOM);
}

/// Sends a trial form for `demo` whose file is `file_bytes` long, in chunked transfer
/// coding (no Content-Length: the service cannot know its size before it arrives), while
/// reading the answer. Returns the answer and how many body bytes the service took before
/// it (what its kernel accepted, at most).
async fn upload_chunked(app: &TestApp, demo: &str, file_bytes: u64) -> (Answer, u64) {
    let stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let first = [field("demo", demo), file_head("big.csv")].concat();
    let head = post_head(&["transfer-encoding: chunked"]);
    let sending = tokio::spawn(async move {
        let piece = b"1,2\n".repeat(16 * 1024);
        let pieces = file_bytes.div_ceil(piece.len() as u64);
        let body = std::iter::once(first)
            .chain((0..pieces).map(|_| piece.clone()))
            .chain(std::iter::once(closing()));
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for part in body {
            let framed = [
                format!("{:x}\r\n", part.len()).as_bytes(),
                &part,
                b"\r\n".as_slice(),
            ]
            .concat();
            if writer.write_all(&framed).await.is_err() {
                return;
            }
            counter.fetch_add(part.len() as u64, Ordering::Relaxed);
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
        // Keep the connection open for the answer.
        std::future::pending::<()>().await;
    });
    let answer = next_answer(&mut reader, &mut Vec::new()).await;
    sending.abort();
    (answer, sent.load(Ordering::Relaxed))
}

/// The deployment's events of `kind`.
async fn service_events(app: &TestApp, kind: &str) -> Vec<Value> {
    let mut events = app.service_events(&app.admin).await;
    events.retain(|e| e["kind"] == kind);
    events
}

/// What must not change of a running sandbox's record.
fn settled(record: &Value) -> Value {
    let keep = [
        "id",
        "status",
        "created_at",
        "ready_at",
        "expires_at",
        "ended_at",
        "end_reason",
        "files",
        "data_deleted_at",
    ];
    keep.iter()
        .map(|k| (k.to_string(), record[k].clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_disk_cannot_hold_is_507_leaves_nothing_and_running_trials_go_on() {
    let disk = SmallDisk::mount(48 * MIB);
    let app = app_on(&disk, 4 * MIB).await;
    let demo = demo(&app, 40 * MIB).await;

    // A trial running before the disk fills.
    let csv = b"x,y\n1,2\n".to_vec();
    let running = app.ready_sandbox(&demo, &[("a.csv", csv.clone())]).await;
    let id = running["id"].as_str().unwrap().to_string();
    let token = running["token"].as_str().unwrap().to_string();
    let before = app.sandbox(&id).await;
    let started = inspect_container(&id, "{{.State.StartedAt}}");
    let objects = app.instance_objects();
    assert!(!objects.is_empty());

    // 8 MiB of room above the 4 MiB floor; a 36 MiB upload that does not say its size.
    disk.leave(12 * MIB);
    let (answer, taken) = upload_chunked(&app, &demo, 36 * MIB).await;
    eprintln!(
        "disk full: a 36 MiB chunked upload with 8 MiB of room was refused after the service \
         took {:.1} MiB of it; {:.1} MiB free after",
        taken as f64 / MIB as f64,
        disk.free() as f64 / MIB as f64
    );
    assert_no_room(&answer);
    let detail = answer.json()["detail"].as_str().unwrap().to_string();
    assert!(!detail.contains("os error") && !detail.contains("No space"));
    assert!(taken < 36 * MIB, "it was read to its end: {taken}");
    // Nothing of it is kept: its spool directory went before the answer.
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
    assert!(disk.free() >= 11 * MIB, "{}", disk.free());

    // One that says it is over the room is refused too (before its body is read).
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = post_head(&[&format!("content-length: {}", 10 * MIB)]);
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_no_room(&next_answer(&mut stream, &mut Vec::new()).await);
    drop(stream);

    // No record, no Engine object: only the running trial's.
    let sandboxes = app.sandboxes().await;
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(app.instance_objects(), objects);
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());

    // The running trial answers through its own origin as before, its record unchanged.
    let res = app.open(&id, &token, "/a.csv").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), csv.as_slice());
    assert_eq!(settled(&app.sandbox(&id).await), settled(&before));
    assert_eq!(inspect_container(&id, "{{.State.StartedAt}}"), started);

    // The operators read it once among the deployment's events, however many were refused.
    let events = service_events(&app, "disk_full").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let said = events[0]["detail"].as_str().unwrap();
    eprintln!("disk full: the ops console says \"{said}\"");
    // The floor held: the upload stopped under it (looks come every MiB written, later on a
    // loaded machine), and the disk never ran out.
    let free_then: f64 = said
        .split("has ")
        .nth(1)
        .and_then(|rest| rest.split(" MB free").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no free space in {said:?}"));
    let free_then = (free_then * 1e6) as u64;
    assert!(
        (1..4 * MIB).contains(&free_then),
        "{free_then} bytes free when it stopped"
    );

    // An upload that fits the room left is served.
    let small = app
        .ready_sandbox(&demo, &[("b.csv", b"a,b\n3,4\n".to_vec())])
        .await;
    let small_id = small["id"].as_str().unwrap();
    app.end_sandbox(small_id, small["token"].as_str().unwrap())
        .await;
    app.end_sandbox(&id, &token).await;
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_room_is_refused_before_its_body_is_read() {
    let disk = SmallDisk::mount(48 * MIB);
    let app = app_on(&disk, 4 * MIB).await;
    let demo = demo(&app, 40 * MIB).await;
    disk.leave(12 * MIB);
    let addr = app.base.trim_start_matches("http://").to_string();

    // curl's way with a large body: it waits for `100 Continue` before sending it. The
    // service answers 507 instead, so not a byte of the body leaves the client.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = post_head(&[
        &format!("content-length: {}", 20 * MIB),
        "expect: 100-continue",
    ]);
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_no_room(&next_answer(&mut stream, &mut Vec::new()).await);
    drop(stream);

    // Without `Expect`: the head alone has the answer; the body is never sent.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = post_head(&[&format!("content-length: {}", 20 * MIB)]);
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_no_room(&next_answer(&mut stream, &mut Vec::new()).await);
    drop(stream);
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
    assert!(app.sandboxes().await.is_empty());

    // A request that fits the room is asked for its body (`100 Continue`) and served.
    let body = [
        field("demo", &demo),
        file_head("a.csv"),
        b"x,y\n1,2\n".to_vec(),
        closing(),
    ]
    .concat();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = post_head(&[
        &format!("content-length: {}", body.len()),
        "expect: 100-continue",
    ]);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let go_on = next_answer(&mut stream, &mut buf).await;
    assert_eq!(go_on.status, 100, "{go_on:?}");
    stream.write_all(&body).await.unwrap();
    let created = next_answer(&mut stream, &mut buf).await;
    assert_eq!(created.status, 201, "{created:?}");
    let created = created.json();
    let id = created["id"].as_str().unwrap();
    app.wait_for(id, created["token"].as_str().unwrap(), |s| {
        s["status"] == "ready"
    })
    .await;
    app.end_sandbox(id, created["token"].as_str().unwrap())
        .await;
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_floor_every_upload_is_refused_up_front() {
    let disk = SmallDisk::mount(16 * MIB);
    let app = app_on(&disk, 4 * MIB).await;
    let demo = demo(&app, MIB).await;
    let csv = || vec![("a.csv", b"x,y\n1,2\n".to_vec())];

    // Above the floor a small upload is served (and, ready, out of the spool) ...
    app.ready_sandbox(&demo, &csv()).await;
    // ... under it, not even a small one, said or unsaid.
    disk.leave(2 * MIB);
    let free = disk.free();
    assert!(free < 4 * MIB, "{free}");
    assert_no_room_res(app.create_sandbox(&demo, &csv(), &[], None).await).await;
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = post_head(&["transfer-encoding: chunked", "expect: 100-continue"]);
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_no_room(&next_answer(&mut stream, &mut Vec::new()).await);
    drop(stream);
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
    assert_eq!(app.sandboxes().await.len(), 1);

    // Room again: served again.
    disk.empty();
    app.ready_sandbox(&demo, &csv()).await;
    for sandbox in app.sandboxes().await {
        let id = sandbox["id"].as_str().unwrap();
        let res = app
            .delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_runs_out_mid_upload_is_the_same_refusal() {
    // No floor: the upload runs into the end of the disk itself (ENOSPC).
    let disk = SmallDisk::mount(8 * MIB);
    let app = app_on(&disk, 0).await;
    let demo = demo(&app, 40 * MIB).await;
    let (answer, taken) = upload_chunked(&app, &demo, 16 * MIB).await;
    eprintln!(
        "disk full: a 16 MiB chunked upload onto an 8 MiB disk was refused after the service \
         took {:.1} MiB of it",
        taken as f64 / MIB as f64
    );
    assert_no_room(&answer);
    assert!(disk.uploads().is_empty(), "{:?}", disk.uploads());
    assert_eq!(disk.free(), 8 * MIB);
    assert!(app.sandboxes().await.is_empty());
    let events = service_events(&app, "disk_full").await;
    assert_eq!(events.len(), 1, "{events:?}");
}
