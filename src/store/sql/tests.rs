//! The SQL's behaviour, on SQLite and on a real Postgres (each test twice, `on_sqlite::…`
//! and `on_postgres::…`, each on a fresh database): uniqueness, capacity in the insert, one
//! end per sandbox, address slots, sleep and wake, activity, the history, logins and given
//! images, the conversation, nodes and what each node sees, and claims raced by two nodes.
//! The migrations of SQLite's older data are tested on SQLite alone.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::*;
use crate::domain::conversation::{InvitationRequest, InvitationTerms};
use crate::domain::token::{IssuedToken, TokenHash};
use crate::domain::{
    ContactMessage, Demo, DemoId, DemoManifest, DemoSpec, EndReason, Ending, Funnel, ImageGrant,
    ImageRef, ImageStatus, Invitation, InvitationId, NewSandbox, Policy, Prospect, Received,
    RegistryServer, SandboxEvent, SandboxStatus, StoredLogin, Timestamp, Usage, Vendor, VendorId,
    VendorName, given_image,
};
use crate::store::{
    AccessStore, Capacity, ConversationStore, DemoStore, HistoryStore, NewEvent, OutboxStore,
    SandboxStore, StoreError, VendorStore, Wake,
};

/// Each test body below, run once on each database.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sqlite().await).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::postgres().await).await
                }
            )*
        }
    };
}

fn node(name: &str) -> NodeName {
    NodeName::parse(name).unwrap()
}

/// A fresh in-memory SQLite store, acting for node `a`.
pub(super) async fn sqlite() -> SqlStore {
    SqlStore::connect("sqlite::memory:", node("a"))
        .await
        .unwrap()
}

/// A store on a fresh database of the test process's Postgres server, acting for node `a`.
pub(super) async fn postgres() -> SqlStore {
    let url = tokio::task::spawn_blocking(|| testkit::postgres::shared().create_database())
        .await
        .unwrap()
        .expect("a fresh Postgres database");
    SqlStore::connect(&url, node("a")).await.unwrap()
}

fn cap(running: u32) -> Capacity {
    Capacity {
        running,
        live: running,
        per_demo: None,
    }
}

fn spec(slug: &str) -> DemoSpec {
    let manifest: DemoManifest = serde_json::from_value(serde_json::json!({
        "slug": slug, "title": "T", "image": "img:1", "port": 80, "data_path": "/data"
    }))
    .unwrap();
    DemoSpec::parse(manifest, &Policy::default()).unwrap()
}

/// A vendor and its demo.
pub(super) async fn vendor_and_demo(store: &SqlStore) -> (Vendor, Demo) {
    let vendor = Vendor {
        id: VendorId::new(),
        name: VendorName::parse("Acme").unwrap(),
        created_at: Timestamp::now(),
    };
    store
        .insert_vendor(&vendor, TokenHash::of("k"))
        .await
        .unwrap();
    let demo = Demo {
        id: DemoId::new(),
        vendor_id: vendor.id,
        spec: spec("one"),
        enabled: true,
        image_status: ImageStatus::Ready,
        image_error: None,
        image_digest: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    store.insert_demo(&demo).await.unwrap();
    (vendor, demo)
}

fn new_sandbox(demo: &Demo, expires_at: Timestamp) -> NewSandbox {
    let id = SandboxId::new();
    NewSandbox {
        id,
        demo_id: demo.id,
        vendor_id: demo.vendor_id,
        token_hash: IssuedToken::for_sandbox(id).hash(),
        spec: demo.spec.clone(),
        created_at: Timestamp::from_millis(0),
        expires_at,
        files: vec![],
        profiles: vec![],
        prospect: Prospect::default(),
        receiving: false,
    }
}

/// `n` sandboxes of `demo`, far from expiry: their ids, in order.
async fn insert_live(store: &SqlStore, demo: &Demo, n: usize) -> Vec<SandboxId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let s = new_sandbox(demo, Timestamp::from_millis(i64::MAX / 2));
        store.insert_sandbox(&s, cap(10)).await.unwrap();
        ids.push(s.id);
    }
    ids
}

async fn names_and_slugs_are_unique(store: SqlStore) {
    let (vendor, demo) = vendor_and_demo(&store).await;
    let again = Vendor {
        id: VendorId::new(),
        ..vendor.clone()
    };
    assert!(matches!(
        store.insert_vendor(&again, TokenHash::of("x")).await,
        Err(StoreError::Conflict(_))
    ));
    let twin = Demo {
        id: DemoId::new(),
        ..demo.clone()
    };
    assert!(matches!(
        store.insert_demo(&twin).await,
        Err(StoreError::Conflict(_))
    ));
    // A deleted demo frees its slug.
    assert!(store.delete_demo(demo.id, Timestamp::now()).await.unwrap());
    store.insert_demo(&twin).await.unwrap();
    assert!(store.demo(demo.id).await.unwrap().is_none());
}

async fn an_image_status_moves_once_and_keeps_the_demo_out_of_the_catalog(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let (missing, ready) = (ImageStatus::Missing, ImageStatus::Ready);
    assert_eq!(store.catalog().await.unwrap().len(), 1);
    // Two callers seeing the image gone: one moves it.
    assert!(
        store
            .set_image_status(demo.id, ready, missing)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_image_status(demo.id, ready, missing)
            .await
            .unwrap()
    );
    let read = store.demo(demo.id).await.unwrap().unwrap();
    assert_eq!(read.image_status, missing);
    assert!(store.catalog().await.unwrap().is_empty());
    // An edit of the demo does not undo it.
    store.update_demo(&demo).await.unwrap();
    assert_eq!(
        store.demo(demo.id).await.unwrap().unwrap().image_status,
        missing
    );
    assert!(
        store
            .set_image_status(demo.id, missing, ready)
            .await
            .unwrap()
    );
    assert_eq!(store.catalog().await.unwrap().len(), 1);
    // A deleted demo's status stays as it was.
    assert!(store.delete_demo(demo.id, Timestamp::now()).await.unwrap());
    assert!(
        !store
            .set_image_status(demo.id, ready, missing)
            .await
            .unwrap()
    );
}

async fn capacity_is_checked_in_the_insert(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let far = Timestamp::from_millis(i64::MAX / 2);
    store
        .insert_sandbox(&new_sandbox(&demo, far), cap(2))
        .await
        .unwrap();
    let second = new_sandbox(&demo, far);
    store.insert_sandbox(&second, cap(2)).await.unwrap();
    assert!(matches!(
        store.insert_sandbox(&new_sandbox(&demo, far), cap(2)).await,
        Err(StoreError::Capacity(_))
    ));
    // An ended sandbox frees its place.
    assert!(
        store
            .end(second.id, Timestamp::now(), &Ending::EndedByProspect)
            .await
            .unwrap()
    );
    store
        .insert_sandbox(&new_sandbox(&demo, far), cap(2))
        .await
        .unwrap();
}

async fn a_sandbox_ends_once_and_deadlines_are_claimed_once(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let early = new_sandbox(&demo, Timestamp::from_millis(1_000));
    let late = new_sandbox(&demo, Timestamp::from_millis(5_000));
    store.insert_sandbox(&early, cap(10)).await.unwrap();
    store.insert_sandbox(&late, cap(10)).await.unwrap();

    assert_eq!(
        store.next_deadline().await.unwrap(),
        Some(Timestamp::from_millis(1_000))
    );
    assert_eq!(
        store.end_due(Timestamp::from_millis(2_000)).await.unwrap(),
        vec![early.id]
    );
    assert!(
        store
            .end_due(Timestamp::from_millis(2_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.next_deadline().await.unwrap(),
        Some(Timestamp::from_millis(5_000))
    );
    assert!(
        !store
            .end(early.id, Timestamp::now(), &Ending::EndedByAdmin)
            .await
            .unwrap()
    );
    let ended = store.sandbox(early.id).await.unwrap().unwrap();
    assert_eq!(ended.status, SandboxStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::Expired));
    assert!(
        !store
            .mark_ready(early.id, Timestamp::now(), "x")
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_deadline(early.id, Timestamp::from_millis(9_000))
            .await
            .unwrap()
    );

    assert_eq!(store.pending_teardowns().await.unwrap(), vec![early.id]);
    store
        .mark_data_deleted(early.id, Timestamp::now())
        .await
        .unwrap();
    assert!(store.pending_teardowns().await.unwrap().is_empty());
}

async fn address_slots_are_held_until_the_data_is_deleted(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let far = Timestamp::from_millis(i64::MAX / 2);
    let ids = insert_live(&store, &demo, 3).await;
    let slot = |id| {
        let store = store.clone();
        async move { store.sandbox(id).await.unwrap().unwrap().addr_slot }
    };
    assert_eq!(slot(ids[0]).await, Some(0));
    assert_eq!(slot(ids[1]).await, Some(1));
    assert_eq!(slot(ids[2]).await, Some(2));

    // Ended is not enough: the slot frees only once the objects are gone.
    store
        .end(
            ids[1],
            Timestamp::now(),
            &Ending::failed("the demo did not answer"),
        )
        .await
        .unwrap();
    let next = new_sandbox(&demo, far);
    store.insert_sandbox(&next, cap(10)).await.unwrap();
    assert_eq!(slot(next.id).await, Some(3));
    store
        .mark_data_deleted(ids[1], Timestamp::now())
        .await
        .unwrap();
    let reuse = new_sandbox(&demo, far);
    store.insert_sandbox(&reuse, cap(10)).await.unwrap();
    assert_eq!(slot(reuse.id).await, Some(1));
}

async fn sleeping_sandboxes_count_apart_and_per_demo_caps_hold(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let far = Timestamp::from_millis(i64::MAX / 2);
    let asleep = new_sandbox(&demo, far);
    store.insert_sandbox(&asleep, cap(1)).await.unwrap();
    store
        .mark_ready(asleep.id, Timestamp::from_millis(0), "x")
        .await
        .unwrap();
    sqlx::query("UPDATE sandboxes SET status = 'sleeping'")
        .execute(&store.pool)
        .await
        .unwrap();
    // One running place: the sleeping sandbox does not take it…
    let roomy = Capacity {
        running: 1,
        live: 2,
        per_demo: None,
    };
    store
        .insert_sandbox(&new_sandbox(&demo, far), roomy)
        .await
        .unwrap();
    let counts = store.count_live_by_state(Some(demo.id)).await.unwrap();
    assert_eq!((counts.running, counts.sleeping), (1, 1));
    // …but it does count as live, and against the demo's own cap.
    let another = new_sandbox(&demo, far);
    let full = |c| store.insert_sandbox(&another, c);
    let err = full(Capacity {
        running: 5,
        live: 2,
        per_demo: None,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("live"), "{err}");
    let err = full(Capacity {
        running: 5,
        live: 5,
        per_demo: Some(2),
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("this demo allows 2"), "{err}");
}

async fn idle_sandboxes_fall_asleep_and_wake(store: SqlStore) {
    let (_, mut demo) = vendor_and_demo(&store).await;
    demo.spec.trial.idle_seconds = Some(10);
    let far = Timestamp::from_millis(i64::MAX / 2);
    let s = new_sandbox(&demo, far);
    store.insert_sandbox(&s, cap(5)).await.unwrap();
    // Not ready yet: nothing to put to sleep.
    assert_eq!(store.next_idle().await.unwrap(), None);
    store
        .mark_ready(s.id, Timestamp::from_millis(1_000), "x")
        .await
        .unwrap();
    assert_eq!(
        store.next_idle().await.unwrap(),
        Some(Timestamp::from_millis(11_000))
    );
    // Activity pushes the moment back.
    store
        .add_usage(&[Usage {
            sandbox: s.id,
            requests: 1,
            first_active_at: Timestamp::from_millis(5_000),
            last_active_at: Timestamp::from_millis(5_000),
        }])
        .await
        .unwrap();
    assert!(
        store
            .sleep_due(Timestamp::from_millis(11_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .sleep_due(Timestamp::from_millis(15_000))
            .await
            .unwrap(),
        vec![s.id]
    );
    assert_eq!(store.next_idle().await.unwrap(), None);
    // Waking takes a running place first, atomically: with one place, a second
    // sandbox can be neither woken nor made while this one wakes.
    assert_eq!(
        store
            .reserve_wake(s.id, Timestamp::from_millis(19_000), 1)
            .await
            .unwrap(),
        Wake::Reserved
    );
    assert_eq!(
        store
            .reserve_wake(s.id, Timestamp::from_millis(19_000), 1)
            .await
            .unwrap(),
        Wake::NotSleeping
    );
    let counts = store.count_live_by_state(None).await.unwrap();
    assert_eq!((counts.running, counts.sleeping), (1, 0));
    assert!(matches!(
        store.insert_sandbox(&new_sandbox(&demo, far), cap(1)).await,
        Err(StoreError::Capacity(_))
    ));
    assert!(
        store
            .mark_awake(s.id, Timestamp::from_millis(20_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_awake(s.id, Timestamp::from_millis(20_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.next_idle().await.unwrap(),
        Some(Timestamp::from_millis(30_000))
    );
}

async fn a_failure_is_kept_on_the_record_in_words(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    let failed = Ending::failed("the demo did not answer GET / on port 80 within 5 s");
    assert!(
        store
            .end(s.id, Timestamp::from_millis(9), &failed)
            .await
            .unwrap()
    );
    let read = |r: crate::domain::Sandbox| (r.status, r.failure.map(|f| f.as_str().to_string()));
    let words = Some("the demo did not answer GET / on port 80 within 5 s".to_string());
    assert_eq!(
        read(store.sandbox(s.id).await.unwrap().unwrap()),
        (SandboxStatus::Failed, words.clone())
    );
    // An end that comes second changes nothing.
    let late = Timestamp::from_millis(10);
    assert!(!store.end(s.id, late, &Ending::EndedByAdmin).await.unwrap());
    assert_eq!(
        read(store.sandbox(s.id).await.unwrap().unwrap()),
        (SandboxStatus::Failed, words)
    );
    // Other ends carry no words.
    let t = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&t, cap(10)).await.unwrap();
    assert!(store.end(t.id, late, &Ending::EndedByAdmin).await.unwrap());
    assert_eq!(read(store.sandbox(t.id).await.unwrap().unwrap()).1, None);
}

async fn usage_accumulates(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    let batch = |n, at| Usage {
        sandbox: s.id,
        requests: n,
        first_active_at: Timestamp::from_millis(at),
        last_active_at: Timestamp::from_millis(at),
    };
    store.add_usage(&[batch(3, 50)]).await.unwrap();
    store.add_usage(&[batch(2, 40)]).await.unwrap();
    let read = store.sandbox(s.id).await.unwrap().unwrap();
    assert_eq!(read.requests, 5);
    assert_eq!(read.last_active_at, Some(Timestamp::from_millis(50)));
    assert_eq!(read.first_opened_at, Some(Timestamp::from_millis(50)));
}

async fn an_end_without_its_event_is_found(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    assert!(store.ends_without_event().await.unwrap().is_empty(), "live");
    let at = Timestamp::from_millis(9);
    assert!(store.end(s.id, at, &Ending::EndedByAdmin).await.unwrap());
    assert_eq!(store.ends_without_event().await.unwrap(), [s.id]);
    store
        .append_event(NewEvent {
            sandbox: s.id,
            at,
            event: &SandboxEvent::ended(Ending::EndedByAdmin),
            announce: None,
        })
        .await
        .unwrap();
    assert!(store.ends_without_event().await.unwrap().is_empty());
}

async fn active_time_counts_spans_between_close_requests(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    let batch = |first, last| Usage {
        sandbox: s.id,
        requests: 1,
        first_active_at: Timestamp::from_millis(first),
        last_active_at: Timestamp::from_millis(last),
    };
    // 2 s of use; half a second later 0.5 s more (the gap counts); then, after more than
    // five minutes away, a single request (the gap does not count).
    for b in [
        batch(1_000, 3_000),
        batch(3_500, 4_000),
        batch(400_000, 400_000),
    ] {
        store.add_usage(&[b]).await.unwrap();
    }
    let read = store.sandbox(s.id).await.unwrap().unwrap();
    assert_eq!(read.active_ms, 3_000);
    assert_eq!(read.first_opened_at, Some(Timestamp::from_millis(1_000)));
}

async fn events_read_back_as_they_were_written(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let s = new_sandbox(&demo, Timestamp::from_millis(i64::MAX / 2));
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    let events = [
        SandboxEvent::Extended {
            by_seconds: 300,
            until: Timestamp::from_millis(1_000_000),
        },
        SandboxEvent::ended(Ending::failed("the demo did not answer")),
    ];
    for (n, event) in events.iter().enumerate() {
        store
            .append_event(NewEvent {
                sandbox: s.id,
                at: Timestamp::from_millis(n as i64),
                event,
                announce: None,
            })
            .await
            .unwrap();
    }
    let read: Vec<SandboxEvent> = store
        .history(s.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(read, events);
    let recent = store.recent_events(None, 1).await.unwrap();
    assert_eq!(recent[0].0, s.id);
    assert_eq!(recent[0].1.event, events[1]);
}

/// An in-memory database migrated only as far as `version`, holding the vendor `v` and
/// its demo `d`: what an earlier version left, for a migration to find.
async fn pool_at(version: i64) -> AnyPool {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect("sqlite::memory:")
        .await
        .unwrap();
    SQLITE_MIGRATOR.run_to(version, &pool).await.unwrap();
    sqlx::query(
        "INSERT INTO vendors (id, name, key_hash, created_at) VALUES ('v', 'V', 'k', 0);
         INSERT INTO demos (id, vendor_id, slug, spec, enabled, created_at, updated_at)
             VALUES ('d', 'v', 's', '{}', 1, 0, 0);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// The store on `pool` once every migration ran, its rows adopted as at a connect.
async fn migrated(pool: AnyPool) -> SqlStore {
    SQLITE_MIGRATOR.run(&pool).await.unwrap();
    let store = SqlStore {
        pool,
        dialect: Dialect::Sqlite,
        node: node("a"),
    };
    store.adopt_rows_from_before_nodes().await.unwrap();
    store
}

/// A history written before events were structured (kind and a sentence) reads back as
/// the same events, with the numbers the receipt and the report need.
#[tokio::test]
async fn an_older_history_is_migrated_into_events() {
    let pool = pool_at(4).await;
    let id = SandboxId::new();
    sqlx::query(
        "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec, created_at,
                                expires_at, files, prospect)
         VALUES (?, 'd', 'v', 'h', 'ended', '{}', 0, 0, '[]', '{}')",
    )
    .bind(id.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let old = [
        (
            "created",
            Some("2 file(s), 300 bytes; trial window 900 s; from the warm pool"),
        ),
        ("data_placed", Some("2 file(s) in /srv/data")),
        ("started", Some("already running: taken from the warm pool")),
        ("loaded", None),
        ("ready", Some("in 412 ms")),
        ("extended", Some("by 600 s, until 2026-11-18T11:06:40.123Z")),
        ("slept", None),
        (
            "stopped",
            Some(
                "the demo's container stopped (exit code 137, out of memory); asleep until \
                 the next request restarts it",
            ),
        ),
        ("woke", Some("in 90 ms")),
        ("failed", Some("the load command exited with code 3")),
        ("ended_by_admin", Some("recorded at restart")),
        ("expired", None),
        ("container_removed", None),
        ("volumes_removed", None),
        (
            "data_deleted",
            Some("no container, volume or spooled upload of this sandbox remains"),
        ),
    ];
    for (n, (kind, detail)) in old.iter().enumerate() {
        sqlx::query(
            "INSERT INTO sandbox_events (sandbox_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(n as i64)
        .bind(kind)
        .bind(detail)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = migrated(pool).await;
    let history = store.history(id).await.unwrap();
    let shown: Vec<(&str, Option<String>)> = history
        .iter()
        .map(|r| (r.event.kind(), r.event.detail()))
        .collect();
    let expected: Vec<(&str, Option<String>)> = old
        .iter()
        .map(|(k, d)| (*k, d.map(str::to_string)))
        .collect();
    assert_eq!(shown, expected, "the API shows what it showed before");
    assert_eq!(
        history[5].event,
        SandboxEvent::Extended {
            by_seconds: 600,
            until: Timestamp::from_millis(1_795_000_000_123)
        }
    );
    assert_eq!(
        history[0].event,
        SandboxEvent::Created {
            files: 2,
            bytes: 300,
            window_seconds: 900,
            from_warm_pool: true
        }
    );
}

/// A failure an earlier version recorded with what the load command printed: the output
/// moves to the sandbox (the prospect's), the event keeps the sentence before it.
#[tokio::test]
async fn an_older_failure_gives_its_load_output_to_the_sandbox() {
    let pool = pool_at(5).await;
    let (printed, other) = (SandboxId::new(), SandboxId::new());
    for (id, failure) in [
        (
            printed,
            "the load command exited with code 3: name,salary\nAda: 100",
        ),
        (other, "the demo did not answer GET / on port 80 within 5 s"),
    ] {
        sqlx::query(
            "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec,
                                    created_at, expires_at, files, prospect)
             VALUES (?1, 'd', 'v', 'h', 'failed', '{}', 0, 0, '[]', '{}');
             INSERT INTO sandbox_events (sandbox_id, at, kind, data)
             VALUES (?1, 0, 'failed', json_object('type', 'ended', 'recovered', json('false'),
                     'ending', json_object('reason', 'failed', 'failure', ?2)))",
        )
        .bind(id.to_string())
        .bind(failure)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = migrated(pool).await;
    let failure = |events: Vec<crate::domain::EventRecord>| match &events[0].event {
        SandboxEvent::Ended { ending, .. } => ending.failure().unwrap().as_str().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        failure(store.history(printed).await.unwrap()),
        "the load command exited with code 3"
    );
    let load_output = async |id: SandboxId| -> Option<String> {
        sqlx::query_scalar("SELECT load_output FROM sandboxes WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&store.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        load_output(printed).await.as_deref(),
        Some("name,salary\nAda: 100")
    );
    assert_eq!(
        failure(store.history(other).await.unwrap()),
        "the demo did not answer GET / on port 80 within 5 s"
    );
    assert_eq!(load_output(other).await, None);
    // The words move onto the record too, so a sandbox is read without its history.
    let kept = async |id: SandboxId| -> Option<String> {
        sqlx::query_scalar("SELECT failure FROM sandboxes WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&store.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        kept(printed).await.as_deref(),
        Some("the load command exited with code 3")
    );
    assert_eq!(
        kept(other).await.as_deref(),
        Some("the demo did not answer GET / on port 80 within 5 s")
    );
    // Past their trial windows (both expire at 0), nobody reads it any more.
    assert_eq!(
        store.forget_load_outputs(Timestamp::now()).await.unwrap(),
        1
    );
    assert_eq!(load_output(printed).await, None);
}

async fn a_webhook_secret_is_replaced_only_while_it_is_the_one_read(store: SqlStore) {
    let (vendor, _) = vendor_and_demo(&store).await;
    let url = "https://hooks.example.com/";
    assert!(
        store
            .set_vendor_webhook(vendor.id, Some(url), "plain")
            .await
            .unwrap()
    );
    assert_eq!(
        store.webhook_secrets().await.unwrap(),
        vec![(vendor.id, "plain".to_string())]
    );
    assert!(
        store
            .replace_webhook_secret(vendor.id, "plain", "v1:sealed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_webhook_secret(vendor.id, "plain", "v1:other")
            .await
            .unwrap()
    );
    assert_eq!(
        store.vendor_webhook(vendor.id).await.unwrap(),
        Some((url.to_string(), "v1:sealed".to_string()))
    );
}

async fn live_sandboxes_are_counted_per_client_until_their_data_is_gone(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let ids = insert_live(&store, &demo, 3).await;
    store.set_client_key(ids[0], "192.0.2.1").await.unwrap();
    store.set_client_key(ids[1], "192.0.2.1").await.unwrap();
    store.set_client_key(ids[2], "2001:db8::/64").await.unwrap();
    assert_eq!(store.count_live_for_client("192.0.2.1").await.unwrap(), 2);
    assert_eq!(
        store.count_live_for_client("2001:db8::/64").await.unwrap(),
        1
    );
    assert_eq!(store.count_live_for_client("192.0.2.2").await.unwrap(), 0);
    // An ended sandbox no longer counts, and its client is forgotten with its data.
    let now = Timestamp::now();
    assert!(store.end(ids[0], now, &Ending::EndedByAdmin).await.unwrap());
    assert_eq!(store.count_live_for_client("192.0.2.1").await.unwrap(), 1);
    assert!(store.mark_data_deleted(ids[0], now).await.unwrap());
    let kept: Option<String> = sqlx::query_scalar("SELECT client_key FROM sandboxes WHERE id = $1")
        .bind(ids[0].to_string())
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(kept, None);
}

/// At the migration, each vendor is given the Engine-only images of its demos (not those
/// of deleted demos, not registry images), spelled as `given_image` spells them, given
/// when its first demo of the image was made.
#[tokio::test]
async fn existing_demos_give_their_engine_images_to_their_vendors() {
    let pool = pool_at(9).await;
    let (v, w) = (VendorId::new(), VendorId::new());
    let digest = format!("acme/app@sha256:{}", "a".repeat(64));
    let demos: [(VendorId, &str, i64, Option<i64>); 9] = [
        (v, "testdrive/csv-explorer:1", 10, None),
        (v, "testdrive/csv-explorer:1", 5, None),
        (v, "busybox", 7, None),
        (v, &digest, 8, None),
        (v, "registry.example.com/acme/app:1", 1, None),
        (v, "127.0.0.1:5000/app", 1, None),
        (v, "localhost/app:2", 1, None),
        (w, "acme/private:3", 1, Some(9)),
        (w, "testdrive/csv-explorer:1", 20, None),
    ];
    for (n, id) in [v, w].into_iter().enumerate() {
        sqlx::query("INSERT INTO vendors (id, name, key_hash, created_at) VALUES (?, ?, 'k', 0)")
            .bind(id.to_string())
            .bind(format!("vendor {n}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    for (n, (vendor, image, created, deleted)) in demos.iter().enumerate() {
        sqlx::query(
            "INSERT INTO demos (id, vendor_id, slug, spec, enabled, created_at, updated_at,
                                deleted_at)
             VALUES (?, ?, ?, json_object('image', ?), 1, ?, ?, ?)",
        )
        .bind(DemoId::new().to_string())
        .bind(vendor.to_string())
        .bind(format!("s{n}"))
        .bind(image)
        .bind(created)
        .bind(created)
        .bind(deleted)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = migrated(pool).await;
    let given = |grants: Vec<ImageGrant>| -> Vec<(String, i64)> {
        grants
            .into_iter()
            .map(|g| (g.image, g.given_at.millis()))
            .collect()
    };
    assert_eq!(
        given(store.images_given(v).await.unwrap()),
        [
            (digest.clone(), 8),
            ("busybox:latest".to_string(), 7),
            ("testdrive/csv-explorer:1".to_string(), 5),
        ]
    );
    assert_eq!(
        given(store.images_given(w).await.unwrap()),
        [("testdrive/csv-explorer:1".to_string(), 20)]
    );
    // The SQL reads references as `ImageRef` does.
    for (vendor, image, _, deleted) in demos {
        let engine_only = ImageRef::parse(image).unwrap().server().is_none();
        let spelled = if engine_only {
            given_image(image).unwrap()
        } else {
            image.to_string()
        };
        assert_eq!(
            store.is_given(vendor, &spelled).await.unwrap(),
            engine_only && deleted.is_none(),
            "{image}"
        );
    }
}

async fn logins_are_replaced_per_server_and_images_given_once(store: SqlStore) {
    let (vendor, _) = vendor_and_demo(&store).await;
    let other = Vendor {
        id: VendorId::new(),
        name: VendorName::parse("Other").unwrap(),
        created_at: Timestamp::now(),
    };
    store
        .insert_vendor(&other, TokenHash::of("o"))
        .await
        .unwrap();
    let server = RegistryServer::parse("registry.example.com").unwrap();
    let login = |username: &str, sealed: &str, at: i64| StoredLogin {
        server: server.clone(),
        username: username.to_string(),
        sealed_password: sealed.to_string(),
        updated_at: Timestamp::from_millis(at),
    };
    store
        .put_login(vendor.id, &login("a", "v1:one", 1))
        .await
        .unwrap();
    store
        .put_login(vendor.id, &login("b", "v1:two", 2))
        .await
        .unwrap();
    let kept = store.logins(vendor.id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].username.as_str(), kept[0].sealed_password.as_str()),
        ("b", "v1:two")
    );
    assert!(store.login(other.id, &server).await.unwrap().is_none());
    assert!(!store.delete_login(other.id, &server).await.unwrap());
    assert!(store.delete_login(vendor.id, &server).await.unwrap());
    assert!(store.login(vendor.id, &server).await.unwrap().is_none());

    let grant = ImageGrant {
        image: "acme/app:1".to_string(),
        vendor_id: vendor.id,
        given_at: Timestamp::from_millis(100),
    };
    assert_eq!(
        store.give_image(&grant).await.unwrap(),
        (grant.clone(), true)
    );
    let again = ImageGrant {
        given_at: Timestamp::from_millis(200),
        ..grant.clone()
    };
    assert_eq!(
        store.give_image(&again).await.unwrap(),
        (grant.clone(), false)
    );
    assert!(store.is_given(vendor.id, "acme/app:1").await.unwrap());
    assert!(!store.is_given(other.id, "acme/app:1").await.unwrap());
    assert!(!store.is_given(vendor.id, "acme/app:2").await.unwrap());
}

/// A sandbox of `demo` recorded while its files arrive, as `Lifecycle::begin` records one.
async fn receiving(store: &SqlStore, demo: &Demo) -> SandboxId {
    let mut s = new_sandbox(demo, Timestamp::from_millis(i64::MAX / 2));
    s.receiving = true;
    store.insert_sandbox(&s, cap(10)).await.unwrap();
    s.id
}

fn received(at: i64, invitation: Option<InvitationId>) -> Received {
    Received {
        created_at: Timestamp::from_millis(at),
        expires_at: Timestamp::from_millis(at + 900_000),
        files: vec![],
        profiles: vec![],
        prospect: Prospect::default(),
        answers: Default::default(),
        invitation,
    }
}

async fn an_invitation_starts_its_trials_and_no_more_a_failed_one_gives_its_place_back(
    store: SqlStore,
) {
    let (vendor, demo) = vendor_and_demo(&store).await;
    let request: InvitationRequest = serde_json::from_value(serde_json::json!({
        "demo_id": demo.id.to_string(), "company": "Globex", "expires_in_seconds": 3600
    }))
    .unwrap();
    let terms = InvitationTerms::parse(&request).unwrap();
    let invitation = Invitation::new(vendor.id, terms, Timestamp::from_millis(1_000));
    store.insert_invitation(&invitation).await.unwrap();
    let id = invitation.id;

    let first = receiving(&store, &demo).await;
    assert!(
        store
            .receive(first, &received(2_000, Some(id)))
            .await
            .unwrap()
    );
    let second = receiving(&store, &demo).await;
    assert!(matches!(
        store.receive(second, &received(3_000, Some(id))).await,
        Err(StoreError::Conflict(_))
    ));
    // Refused whole: the second sandbox is still waiting for its files, not received.
    assert!(store.forget_unreceived(Some(second)).await.unwrap() == vec![second]);
    let kept = store.invitation(id).await.unwrap().unwrap();
    assert_eq!((kept.trials, kept.sandbox_id), (1, Some(first)));
    assert_eq!(kept.used_at, Some(Timestamp::from_millis(2_000)));
    assert_eq!(
        store.sandbox(first).await.unwrap().unwrap().invitation_id,
        Some(id)
    );

    // The first trial fails: the invitation may start another.
    let failed = Ending::failed("the demo refused the file");
    assert!(
        store
            .end(first, Timestamp::from_millis(4_000), &failed)
            .await
            .unwrap()
    );
    assert_eq!(store.invitation(id).await.unwrap().unwrap().trials, 0);
    let third = receiving(&store, &demo).await;
    assert!(
        store
            .receive(third, &received(5_000, Some(id)))
            .await
            .unwrap()
    );

    // Past its expiry, nothing.
    let late = receiving(&store, &demo).await;
    let after = 1_000 + 3_600_000;
    assert!(matches!(
        store.receive(late, &received(after, Some(id))).await,
        Err(StoreError::Conflict(_))
    ));
    // Opened once: the first time is kept.
    store
        .invitation_opened(id, Timestamp::from_millis(7))
        .await
        .unwrap();
    store
        .invitation_opened(id, Timestamp::from_millis(9))
        .await
        .unwrap();
    let listed = store.invitations(Some(vendor.id), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].opened_at, Some(Timestamp::from_millis(7)));
    assert!(
        store
            .invitations(Some(VendorId::new()), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_funnel_counts_views_since_then_and_how_far_those_trials_got(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let minute = 60_000;
    for at in [0, 10 * minute, 10 * minute + 5, 20 * minute] {
        store
            .page_viewed(demo.id, Timestamp::from_millis(at))
            .await
            .unwrap();
    }
    // Three trials since minute 5: ready, opened and active, extended, feedback, contact.
    let mut ids = Vec::new();
    for at in [1_000, 6 * minute, 7 * minute, 8 * minute] {
        let id = receiving(&store, &demo).await;
        assert!(store.receive(id, &received(at, None)).await.unwrap());
        ids.push(id);
    }
    store
        .mark_ready(ids[1], Timestamp::from_millis(6 * minute), "10.0.0.2:80")
        .await
        .unwrap();
    store
        .mark_ready(ids[2], Timestamp::from_millis(7 * minute), "10.0.0.3:80")
        .await
        .unwrap();
    store
        .add_usage(&[Usage {
            sandbox: ids[1],
            requests: 3,
            first_active_at: Timestamp::from_millis(6 * minute),
            last_active_at: Timestamp::from_millis(6 * minute + 1),
        }])
        .await
        .unwrap();
    let events = [
        (
            ids[1],
            SandboxEvent::Extended {
                by_seconds: 60,
                until: Timestamp::from_millis(1),
            },
        ),
        (
            ids[1],
            SandboxEvent::Feedback {
                answers: Default::default(),
            },
        ),
        (
            ids[1],
            SandboxEvent::Feedback {
                answers: Default::default(),
            },
        ),
        (
            ids[2],
            SandboxEvent::ContactRequested {
                message: ContactMessage::parse("hi").unwrap(),
            },
        ),
        // Before `since`: not counted.
        (
            ids[0],
            SandboxEvent::ContactRequested {
                message: ContactMessage::parse("hi").unwrap(),
            },
        ),
    ];
    for (sandbox, event) in &events {
        store
            .append_event(NewEvent {
                sandbox: *sandbox,
                at: Timestamp::from_millis(9),
                event,
                announce: None,
            })
            .await
            .unwrap();
    }
    let funnel = store
        .funnel(demo.id, Timestamp::from_millis(5 * minute + 30_000))
        .await
        .unwrap();
    assert_eq!(
        funnel,
        Funnel {
            page_views: 3,
            trials: 3,
            ready: 2,
            opened: 1,
            active_5m: 0,
            extended: 1,
            feedback: 1,
            contact_requested: 1,
        }
    );
    let said = store.conversations(None, 10).await.unwrap();
    assert_eq!(said.len(), 4, "feedback and contact requests, newest first");
    assert_eq!(said[0].0.id, ids[0]);
}

on_both!(
    names_and_slugs_are_unique,
    an_image_status_moves_once_and_keeps_the_demo_out_of_the_catalog,
    capacity_is_checked_in_the_insert,
    a_sandbox_ends_once_and_deadlines_are_claimed_once,
    address_slots_are_held_until_the_data_is_deleted,
    sleeping_sandboxes_count_apart_and_per_demo_caps_hold,
    idle_sandboxes_fall_asleep_and_wake,
    a_failure_is_kept_on_the_record_in_words,
    usage_accumulates,
    an_end_without_its_event_is_found,
    active_time_counts_spans_between_close_requests,
    events_read_back_as_they_were_written,
    a_webhook_secret_is_replaced_only_while_it_is_the_one_read,
    live_sandboxes_are_counted_per_client_until_their_data_is_gone,
    logins_are_replaced_per_server_and_images_given_once,
    an_invitation_starts_its_trials_and_no_more_a_failed_one_gives_its_place_back,
    the_funnel_counts_views_since_then_and_how_far_those_trials_got,
);

/// A database file is made where the URL says, in WAL mode, and opened again as it was.
#[tokio::test]
async fn a_sqlite_file_is_created_in_wal_mode_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("testdrive.db").display());
    let store = SqlStore::connect(&url, node("a")).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let id = store.instance_id().await.unwrap();
    store.pool.close().await;
    let again = SqlStore::connect(&url, node("a")).await.unwrap();
    assert_eq!(again.instance_id().await.unwrap(), id);
}

/// Rows SQLite kept from before nodes become the connecting node's: its sandboxes, warm
/// members, pulled images and the leases it held.
#[tokio::test]
async fn rows_from_before_nodes_become_the_connecting_nodes() {
    let pool = pool_at(14).await;
    let id = SandboxId::new();
    sqlx::query(
        "INSERT INTO sandboxes (id, demo_id, vendor_id, token_hash, status, spec, created_at,
                                expires_at, files, prospect, addr_slot)
         VALUES ($1, 'd', 'v', 'h', 'ready', '{}', 0, 5, '[]', '{}', 0);
         INSERT INTO warm_members (id, demo_id, spec, state, addr_slot, created_at)
         VALUES ('w', 'd', '{}', 'warm', 1, 0);
         INSERT INTO pulled_images (reference, pulled_at) VALUES ('img@sha256:1', 0);
         INSERT INTO webhook_deliveries (id, vendor_id, sandbox_id, type, body, created_at,
                                         next_attempt_at, lease_until)
         VALUES ('d1', 'v', $1, 'sandbox.ended', '{}', 0, 0, 99)",
    )
    .bind(id.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let store = migrated(pool).await;
    // (The demo `d` of `pool_at` has no valid id: the rows are read as they are kept.)
    let nodes: Vec<String> =
        sqlx::query_scalar("SELECT node FROM sandboxes UNION ALL SELECT node FROM warm_members")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(nodes, ["a", "a"]);
    assert_eq!(
        store.end_due(Timestamp::from_millis(5)).await.unwrap(),
        [id]
    );
    assert_eq!(store.pulled_images().await.unwrap(), ["img@sha256:1"]);
    store.release_delivery_leases().await.unwrap();
    let lease: Option<i64> = sqlx::query_scalar("SELECT lease_until FROM webhook_deliveries")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(lease, None);
}

/// While Postgres is down the store answers `Unavailable` within seconds (the API's 503),
/// and works again by itself once it is back.
#[tokio::test]
async fn a_postgres_outage_is_unavailable_at_once_and_passes() {
    let server = tokio::task::spawn_blocking(|| testkit::postgres::Server::start().unwrap())
        .await
        .unwrap();
    let url = server.create_database().unwrap();
    let store = SqlStore::connect(&url, node("a")).await.unwrap();
    store.ping().await.unwrap();
    server.kill();
    let asked = std::time::Instant::now();
    assert!(matches!(
        store.vendors().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    let server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    store.ping().await.unwrap();
    assert!(store.vendors().await.unwrap().is_empty());
    drop(server);
}

mod nodes;
