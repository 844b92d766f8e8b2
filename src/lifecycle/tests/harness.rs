//! A lifecycle over the fake Engine and an in-memory SQLite store, in paused time that
//! moves only when a test says so.
//!
//! Tokio's paused clock jumps to the next timer whenever the runtime idles — including
//! while a query waits on SQLite's worker thread, which would let deadlines pass in the
//! middle of a database call. A blocking task held for the whole test stops that (the
//! runtime does not auto-advance while one runs), so time moves only by `advance`, and
//! `eventually` waits for background work in real time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::TokioClock;
use crate::domain::token::TokenHash;
use crate::domain::upload::NOTE_DIR;
use crate::domain::{
    Demo, DemoId, DemoManifest, DemoSpec, Ending, ImageStatus, Policy, Sandbox, SandboxEvent,
    SandboxId, SandboxStatus, Timestamp, TrialWindow, UploadName, Vendor, VendorId, VendorName,
};
use crate::engine::Engine;
use crate::engine::fake::{FakeEngine, Gate, Op};
use crate::lifecycle::{Introduction, Lifecycle, LifecycleSettings, Result};
use crate::sandbox_dirs::SandboxDirs;
use crate::spool::Spool;
use crate::store::{SqlStore, Store};
use crate::webhooks::{WebhookSettings, Webhooks};

/// Holds tokio's paused clock still between `advance`s (see the module's comment).
struct StillClock {
    release: std::sync::mpsc::Sender<()>,
}

impl StillClock {
    fn hold() -> StillClock {
        let (release, held) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        StillClock { release }
    }
}

impl Drop for StillClock {
    fn drop(&mut self) {
        let _ = self.release.send(());
    }
}

pub struct Harness {
    pub lifecycle: Lifecycle,
    pub engine: Arc<FakeEngine>,
    pub store: Arc<dyn Store>,
    pub spool_root: tempfile::TempDir,
    vendor: VendorId,
    background: Option<CancellationToken>,
    _still: StillClock,
}

/// A demo manifest for the fake Engine, with `overrides` merged in.
fn manifest(slug: &str, overrides: Value) -> DemoManifest {
    let mut manifest = json!({
        "slug": slug, "title": "Fake", "image": "fake:1", "port": 8080,
        "data_path": "/data", "ready": {"http_path": "/", "timeout_seconds": 20},
        "trial": {"seconds": 900, "max_seconds": 3600}
    });
    if let (Value::Object(m), Value::Object(o)) = (&mut manifest, overrides) {
        for (key, value) in o {
            m.insert(key, value);
        }
    }
    serde_json::from_value(manifest).expect("a manifest")
}

impl Harness {
    /// Must run in a `#[tokio::test(start_paused = true)]`.
    pub async fn new() -> Harness {
        Harness::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut LifecycleSettings)) -> Harness {
        let still = StillClock::hold();
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::connect(
                "sqlite::memory:",
                crate::domain::NodeName::parse("local").unwrap(),
            )
            .await
            .expect("an in-memory store"),
        );
        let engine = FakeEngine::new();
        let clock = Arc::new(TokioClock::new());
        let spool_root = tempfile::tempdir().expect("a spool directory");
        let mut settings = LifecycleSettings {
            max_running: 10,
            max_sleeping: 10,
            dirs: SandboxDirs::new(spool_root.path().to_path_buf(), None),
            reconcile_every: Duration::from_secs(3600),
            flush_every: Duration::from_secs(5),
            disk_check_every: None,
            remove_unused_images: true,
            shared: false,
        };
        configure(&mut settings);
        let webhooks = Webhooks::new(store.clone(), clock.clone(), WebhookSettings::default());
        let lifecycle = Lifecycle::new(
            store.clone(),
            engine.clone(),
            clock,
            webhooks,
            Arc::new(NoCredentials),
            settings,
        );
        let vendor = Vendor {
            id: VendorId::new(),
            name: VendorName::parse("Acme").expect("a name"),
            created_at: Timestamp::from_millis(0),
        };
        store
            .insert_vendor(&vendor, TokenHash::of("key"))
            .await
            .expect("a vendor");
        Harness {
            lifecycle,
            engine,
            store,
            spool_root,
            vendor: vendor.id,
            background: None,
            _still: still,
        }
    }

    /// A harness with one demo of the fake image (`overrides` merged into its manifest).
    pub async fn with_demo(overrides: Value) -> (Harness, Demo) {
        let h = Harness::new().await;
        let demo = h.demo("demo", overrides).await;
        (h, demo)
    }

    /// A demo of the fake image; `overrides` are merged into its manifest.
    pub async fn demo(&self, slug: &str, overrides: Value) -> Demo {
        let demo = Demo {
            id: DemoId::new(),
            vendor_id: self.vendor,
            spec: DemoSpec::parse(manifest(slug, overrides), &Policy::default())
                .expect("a valid demo"),
            enabled: true,
            image_status: ImageStatus::Ready,
            image_error: None,
            image_digest: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        };
        self.store.insert_demo(&demo).await.expect("a demo");
        demo
    }

    /// Runs the background loops (deadlines, sleep, reconciler, pools…) until dropped.
    pub fn run_background(&mut self) {
        let shutdown = CancellationToken::new();
        tokio::spawn(self.lifecycle.clone().run(shutdown.clone()));
        self.background = Some(shutdown);
    }

    /// Starts a trial of `demo` with one small CSV; its id.
    pub async fn start(&self, demo: &Demo) -> SandboxId {
        let begun = self.lifecycle.begin(demo).await.expect("the trial begins");
        let mut spool = Spool::create(self.spool_root.path(), begun.id(), demo.spec.upload.clone())
            .await
            .expect("a spool");
        let chunks = stream::iter([Ok(bytes::Bytes::from_static(b"x,y\n1,2\n"))]);
        spool
            .write(UploadName::parse("a.csv").expect("a name"), chunks)
            .await
            .expect("the file spools");
        let window = TrialWindow::parse(None, &demo.spec.trial).expect("a window");
        let created = begun
            .finish(window, Introduction::default(), spool)
            .await
            .expect("the trial starts");
        created.sandbox.id
    }

    /// A trial of `demo` that became ready (and whose history says so: the event follows
    /// the status).
    pub async fn ready(&self, demo: &Demo) -> SandboxId {
        let id = self.start(demo).await;
        self.until_status(id, SandboxStatus::Ready).await;
        eventually(&format!("{id}'s ready event"), async || {
            let events = self.events(id).await;
            events
                .iter()
                .any(|e| matches!(e, SandboxEvent::Ready { .. }))
        })
        .await;
        id
    }

    /// A trial of `demo` started with `op` held at its gate, once the call got there.
    pub async fn start_held(&self, demo: &Demo, op: Op) -> (SandboxId, Gate) {
        let gate = self.engine.hold(op);
        let id = self.start(demo).await;
        gate.arrived().await;
        (id, gate)
    }

    /// A trial of `demo` that became ready and then fell asleep.
    pub async fn asleep(&self, demo: &Demo) -> SandboxId {
        let id = self.ready(demo).await;
        assert!(self.store.mark_asleep(id).await.expect("the store answers"));
        self.engine.stop(id).await.expect("the container stops");
        id
    }

    /// Ends the sandbox in a task of its own.
    pub fn end_in_background(&self, id: SandboxId, ending: Ending) -> JoinHandle<Result<Sandbox>> {
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move { lifecycle.end(id, ending).await })
    }

    /// Wakes the sandbox in a task of its own.
    pub fn wake_in_background(&self, id: SandboxId) -> JoinHandle<Result<Sandbox>> {
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move { lifecycle.wake(id).await })
    }

    /// Asserts the sandbox failed, saying `why`.
    pub async fn assert_failed(&self, id: SandboxId, why: &str) {
        assert_eq!(self.failure(id).await.as_deref(), Some(why));
    }

    /// What the sandbox's failure says, if it failed.
    pub async fn failure(&self, id: SandboxId) -> Option<String> {
        self.events(id).await.into_iter().find_map(|e| match e {
            SandboxEvent::Ended { ending, .. } => ending.failure().map(|f| f.as_str().to_string()),
            _ => None,
        })
    }

    pub async fn sandbox(&self, id: SandboxId) -> Sandbox {
        self.store
            .sandbox(id)
            .await
            .expect("the store answers")
            .expect("the sandbox exists")
    }

    pub async fn events(&self, id: SandboxId) -> Vec<SandboxEvent> {
        self.store
            .history(id)
            .await
            .expect("the store answers")
            .into_iter()
            .map(|r| r.event)
            .collect()
    }

    pub async fn kinds(&self, id: SandboxId) -> Vec<&'static str> {
        self.events(id)
            .await
            .iter()
            .map(SandboxEvent::kind)
            .collect()
    }

    pub async fn until_status(&self, id: SandboxId, status: SandboxStatus) {
        eventually(&format!("{id} is {status}"), async || {
            self.sandbox(id).await.status == status
        })
        .await;
    }

    /// Waits until every copy of the sandbox's data is recorded gone.
    pub async fn until_deleted(&self, id: SandboxId) -> Sandbox {
        eventually(&format!("{id}'s data is deleted"), async || {
            self.sandbox(id).await.data_deleted_at.is_some()
        })
        .await;
        self.sandbox(id).await
    }

    /// Whether the sandbox's upload directory still holds anything.
    pub fn spooled(&self, id: SandboxId) -> bool {
        self.spool_root
            .path()
            .join(id.to_string())
            .join("upload")
            .exists()
    }

    /// The files in the sandbox's data directory: name → bytes.
    /// The prospect's files in the sandbox's data directory, by size (not `.testdrive/`).
    /// What the demo was told about the prospect (`.testdrive/prospect.json`), if placed.
    pub fn note(&self, id: SandboxId) -> Option<Value> {
        let path = self.spool_root.path().join(id.to_string()).join("data");
        let bytes = std::fs::read(path.join(NOTE_DIR).join("prospect.json")).ok()?;
        Some(serde_json::from_slice(&bytes).expect("the note is JSON"))
    }

    pub fn placed(&self, id: SandboxId) -> std::collections::BTreeMap<String, u64> {
        let data = self.spool_root.path().join(id.to_string()).join("data");
        std::fs::read_dir(data)
            .map(|entries| {
                entries
                    .map(|e| e.expect("an entry"))
                    .filter(|e| e.file_name() != NOTE_DIR)
                    .map(|e| {
                        let bytes = e.metadata().expect("its size").len();
                        (e.file_name().to_string_lossy().into_owned(), bytes)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(shutdown) = &self.background {
            shutdown.cancel();
        }
    }
}

/// A real pause: background work (SQLite's thread) goes on, the clock does not move.
async fn real_pause() {
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2)))
        .await
        .expect("a pause");
}

/// Moves the paused clock on a second at a time, firing the timers due at each step and
/// giving the background work real time to act (and set its next timer) in between.
pub async fn advance(by: Duration) {
    let mut left = by;
    while !left.is_zero() {
        let step = left.min(Duration::from_secs(1));
        tokio::time::advance(step).await;
        real_pause().await;
        left -= step;
    }
}

/// Moves the clock on a second at a time until `done` holds; fails the test if `limit`
/// passes first. How long it took, in the clock's time.
pub async fn advance_until(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> Duration {
    let mut passed = Duration::ZERO;
    while !done().await {
        assert!(passed < limit, "{what}: not within {limit:?}");
        advance(Duration::from_secs(1)).await;
        passed += Duration::from_secs(1);
    }
    passed
}

/// Waits for a task that needs time to pass (a probe backing off), moving the clock on a
/// tenth of a second at a time.
pub async fn settle<T>(task: tokio::task::JoinHandle<T>) -> T {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while !task.is_finished() {
        assert!(
            std::time::Instant::now() < give_up,
            "gave up waiting for a task"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        real_pause().await;
    }
    task.await.expect("the task finishes")
}

/// Waits, in real time, until `done` holds; fails the test after ten seconds.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < give_up,
            "gave up waiting: {what}"
        );
        real_pause().await;
    }
}

/// No vendor has stored registry credentials.
pub struct NoCredentials;

#[async_trait::async_trait]
impl crate::engine::Credentials for NoCredentials {
    async fn pull_credentials(
        &self,
        _vendor: crate::domain::VendorId,
        _server: &crate::domain::RegistryServer,
    ) -> std::result::Result<Option<crate::engine::PullCredentials>, String> {
        Ok(None)
    }
}
