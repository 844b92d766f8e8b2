//! Nodes: registration, heartbeats and placement, one caretaker at a time, what each node
//! sees of the shared database, and claims raced by two nodes (on Postgres these race for
//! real: each view takes its own connections from the pool).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;

use super::{cap, new_sandbox, node, postgres, sqlite, vendor_and_demo};
use crate::domain::pool::{NewWarmMember, WarmState};
use crate::domain::webhook::NewDelivery;
use crate::domain::{Demo, Ending, Node, SandboxEvent, SandboxId, Timestamp};
use crate::store::sql::SqlStore;
use crate::store::{
    Capacity, DemoStore, HistoryStore, NewEvent, NodeStore, OutboxStore, PoolStore, SandboxStore,
    Store, StoreError, VendorStore,
};

fn node_record(name: &str, max_sandboxes: u32, last_seen: i64) -> Node {
    Node {
        name: node(name),
        url: format!("http://{name}.internal:8080"),
        engine: "unix:///var/run/docker.sock".to_string(),
        max_sandboxes,
        started_at: Timestamp::from_millis(0),
        last_seen: Timestamp::from_millis(last_seen),
    }
}

/// The same database acting for node `name`.
fn as_node(store: &SqlStore, name: &str) -> Arc<dyn Store> {
    store.for_node(&node(name))
}

/// Registers node `name` (its view of the store), its image of `demo` ready or not.
async fn registered(
    store: &SqlStore,
    name: &str,
    max_sandboxes: u32,
    last_seen: i64,
    demo: &Demo,
    image: bool,
) -> Arc<dyn Store> {
    let view = as_node(store, name);
    view.register_node(&node_record(name, max_sandboxes, last_seen))
        .await
        .unwrap();
    view.image_here(demo.id, image).await.unwrap();
    view
}

const FAR: Timestamp = Timestamp::from_millis(i64::MAX / 2);

async fn nodes_register_beat_and_are_listed(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    // A store records only itself.
    assert!(matches!(
        store.register_node(&node_record("b", 1, 0)).await,
        Err(StoreError::Conflict(_))
    ));
    let a = registered(&store, "a", 4, 1_000, &demo, true).await;
    let b = registered(&store, "b", 2, 1_000, &demo, true).await;
    a.heartbeat(Timestamp::from_millis(5_000)).await.unwrap();
    // A late beat does not take a node back in time.
    a.heartbeat(Timestamp::from_millis(4_000)).await.unwrap();
    b.insert_sandbox(&new_sandbox(&demo, FAR), cap(5))
        .await
        .unwrap();
    let listed = store.nodes().await.unwrap();
    let seen: Vec<(&str, i64, u64)> = listed
        .iter()
        .map(|l| (l.node.name.as_str(), l.node.last_seen.millis(), l.live))
        .collect();
    assert_eq!(seen, [("a", 5_000, 0), ("b", 1_000, 1)]);
    assert_eq!(
        store.node_record(&node("b")).await.unwrap(),
        Some(node_record("b", 2, 1_000))
    );
    assert_eq!(store.node_record(&node("c")).await.unwrap(), None);
    // Registering again replaces what the earlier start recorded.
    b.register_node(&node_record("b", 7, 9_000)).await.unwrap();
    let again = store.node_record(&node("b")).await.unwrap().unwrap();
    assert_eq!((again.max_sandboxes, again.last_seen.millis()), (7, 9_000));
}

async fn a_trial_goes_to_the_up_node_with_the_most_free_places(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let up_since = Timestamp::from_millis(10_000);
    let a = registered(&store, "a", 3, 20_000, &demo, true).await;
    let b = registered(&store, "b", 4, 20_000, &demo, true).await;
    // Roomier, but down (not heard from since `up_since`), or without the image.
    registered(&store, "c", 50, 9_999, &demo, true).await;
    registered(&store, "d", 50, 20_000, &demo, false).await;
    // Roomier, but never said whether it has this demo's image.
    let e = as_node(&store, "e");
    e.register_node(&node_record("e", 50, 20_000))
        .await
        .unwrap();

    let place = async || store.place(demo.id, up_since).await.unwrap();
    assert_eq!(place().await, Some(node("b")), "4 free places against 3");
    for _ in 0..2 {
        b.insert_sandbox(&new_sandbox(&demo, FAR), cap(10))
            .await
            .unwrap();
    }
    assert_eq!(place().await, Some(node("a")), "3 free against 2");
    a.insert_sandbox(&new_sandbox(&demo, FAR), cap(10))
        .await
        .unwrap();
    assert_eq!(place().await, Some(node("a")), "a tie goes by name");
    // A sandbox still receiving its files holds its place too.
    let mut receiving = new_sandbox(&demo, FAR);
    receiving.receiving = true;
    a.insert_sandbox(&receiving, cap(10)).await.unwrap();
    assert_eq!(place().await, Some(node("b")));
    // Ended sandboxes leave their places.
    let ended = new_sandbox(&demo, FAR);
    b.insert_sandbox(&ended, cap(10)).await.unwrap();
    b.insert_sandbox(&new_sandbox(&demo, FAR), cap(10))
        .await
        .unwrap();
    a.insert_sandbox(&new_sandbox(&demo, FAR), cap(10))
        .await
        .unwrap();
    assert_eq!(place().await, None, "every up node with the image is full");
    assert!(
        b.end(ended.id, Timestamp::from_millis(1), &Ending::EndedByAdmin)
            .await
            .unwrap()
    );
    assert_eq!(place().await, Some(node("b")));
    // The image gone from b's Engine: b takes no trial of this demo.
    b.image_here(demo.id, false).await.unwrap();
    assert_eq!(place().await, None);
}

async fn one_caretaker_at_a_time(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let down = node("a");
    registered(&store, "a", 3, 0, &demo, true).await;
    let b = registered(&store, "b", 3, 0, &demo, true).await;
    let c = registered(&store, "c", 3, 0, &demo, true).await;
    let at = Timestamp::from_millis;
    assert!(b.take_care(&down, at(1_000), at(31_000)).await.unwrap());
    assert!(!c.take_care(&down, at(2_000), at(32_000)).await.unwrap());
    // The caretaker renews its lease; another takes over only once it lapses.
    assert!(b.take_care(&down, at(30_000), at(60_000)).await.unwrap());
    assert!(!c.take_care(&down, at(59_999), at(90_000)).await.unwrap());
    assert!(c.take_care(&down, at(60_000), at(90_000)).await.unwrap());
    assert!(!b.take_care(&down, at(61_000), at(91_000)).await.unwrap());
    // No node to care for: nothing taken.
    assert!(!b.take_care(&node("z"), at(0), at(1)).await.unwrap());
    // Back up, the node keeps its own deadlines: the lease ends.
    as_node(&store, "a")
        .register_node(&node_record("a", 3, 95_000))
        .await
        .unwrap();
    assert!(b.take_care(&down, at(96_000), at(120_000)).await.unwrap());
}

/// Two caretakers asking at once: one has it.
async fn two_caretakers_racing_one_wins(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    registered(&store, "a", 3, 0, &demo, true).await;
    let views: Vec<_> = ["b", "c", "d", "e"]
        .iter()
        .map(|n| as_node(&store, n))
        .collect();
    let (at, down) = (Timestamp::from_millis, node("a"));
    let won = join_all(
        views
            .iter()
            .map(|v| v.take_care(&down, at(1_000), at(31_000))),
    )
    .await;
    let winners = won.into_iter().filter(|w| *w.as_ref().unwrap()).count();
    assert_eq!(winners, 1);
}

async fn each_node_sees_its_own_deadlines_slots_and_wakes(store: SqlStore) {
    let (_, mut demo) = vendor_and_demo(&store).await;
    demo.spec.trial.idle_seconds = Some(10);
    let b = as_node(&store, "b");
    let (on_a, on_b) = (
        new_sandbox(&demo, Timestamp::from_millis(1_000)),
        new_sandbox(&demo, Timestamp::from_millis(1_000)),
    );
    store.insert_sandbox(&on_a, cap(1)).await.unwrap();
    // b has places of its own: a's sandbox does not take them.
    b.insert_sandbox(&on_b, cap(1)).await.unwrap();
    let read = |id| {
        let store = store.clone();
        async move { store.sandbox(id).await.unwrap().unwrap() }
    };
    // Each node has its own subnet: both take slot 0. Anyone reads either sandbox.
    let (a_row, b_row) = (read(on_a.id).await, read(on_b.id).await);
    assert_eq!((a_row.node.as_str(), a_row.addr_slot), ("a", Some(0)));
    assert_eq!((b_row.node.as_str(), b_row.addr_slot), ("b", Some(0)));
    assert_eq!(b.sandbox(on_a.id).await.unwrap().unwrap().node, node("a"));
    assert_eq!(store.sandboxes(&Default::default()).await.unwrap().len(), 2);
    // Counts, ids and idle moments: each node's own.
    assert_eq!(store.count_live_by_state(None).await.unwrap().total(), 1);
    assert_eq!(
        b.ids_with_status(crate::domain::SandboxStatus::Provisioning)
            .await
            .unwrap(),
        [on_b.id]
    );
    for (view, id) in [(&store as &dyn Store, on_a.id), (b.as_ref(), on_b.id)] {
        assert!(
            view.mark_ready(id, Timestamp::from_millis(0), "x")
                .await
                .unwrap()
        );
    }
    assert_eq!(
        b.sleep_due(Timestamp::from_millis(10_000)).await.unwrap(),
        [on_b.id]
    );
    assert_eq!(
        store.next_idle().await.unwrap(),
        Some(Timestamp::from_millis(10_000))
    );
    assert_eq!(b.next_idle().await.unwrap(), None);
    // Wakes count against each node's running places.
    assert_eq!(
        b.reserve_wake(on_b.id, Timestamp::from_millis(11_000), 1)
            .await
            .unwrap(),
        crate::store::Wake::Reserved
    );
    store.release_all_wakes().await.unwrap();
    assert_eq!(
        b.count_live_by_state(None).await.unwrap().running,
        1,
        "a's start forgets only a's wakes"
    );
    // Deadlines: b never ends a's sandbox, and its next deadline is its own.
    store
        .end(on_a.id, Timestamp::from_millis(0), &Ending::EndedByAdmin)
        .await
        .unwrap();
    assert_eq!(
        b.next_deadline().await.unwrap(),
        Some(Timestamp::from_millis(1_000))
    );
    assert_eq!(store.next_deadline().await.unwrap(), None);
    assert_eq!(
        b.end_due(Timestamp::from_millis(2_000)).await.unwrap(),
        [on_b.id]
    );
    assert_eq!(store.pending_teardowns().await.unwrap(), [on_a.id]);
    assert_eq!(b.pending_teardowns().await.unwrap(), [on_b.id]);
    assert_eq!(store.ends_without_event().await.unwrap(), [on_a.id]);
    assert_eq!(b.ends_without_event().await.unwrap(), [on_b.id]);
}

async fn warm_pools_and_images_are_each_nodes(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let b = as_node(&store, "b");
    let member = |n: i64| NewWarmMember {
        id: SandboxId::new(),
        demo_id: demo.id,
        spec: demo.spec.clone(),
        created_at: Timestamp::from_millis(n),
    };
    let (m_a, m_b) = (member(1), member(2));
    store.insert_warm(&m_a).await.unwrap();
    b.insert_warm(&m_b).await.unwrap();
    let ids = |members: Vec<crate::domain::pool::WarmMember>| -> Vec<(SandboxId, u32)> {
        members.iter().map(|m| (m.id, m.addr_slot)).collect()
    };
    assert_eq!(ids(store.warm_members(None).await.unwrap()), [(m_a.id, 0)]);
    assert_eq!(ids(b.warm_members(None).await.unwrap()), [(m_b.id, 0)]);
    // A node claims only its own members.
    for (view, id) in [(&store as &dyn Store, m_a.id), (b.as_ref(), m_b.id)] {
        assert!(
            view.set_warm_state(id, &[WarmState::Warming], WarmState::Warm)
                .await
                .unwrap()
        );
    }
    let mut claim = new_sandbox(&demo, FAR);
    claim.id = m_a.id;
    assert!(!b.claim_warm(&claim, cap(5)).await.unwrap());
    assert!(store.claim_warm(&claim, cap(5)).await.unwrap());
    assert_eq!(
        store.sandbox(m_a.id).await.unwrap().unwrap().node,
        node("a")
    );
    // Images are the Engine's: each node's list is its own.
    store
        .record_pulled_image("img@sha256:1", Timestamp::from_millis(1))
        .await
        .unwrap();
    b.record_pulled_image("img@sha256:1", Timestamp::from_millis(2))
        .await
        .unwrap();
    b.record_pulled_image("img@sha256:2", Timestamp::from_millis(3))
        .await
        .unwrap();
    store.forget_pulled_image("img@sha256:1").await.unwrap();
    assert!(store.pulled_images().await.unwrap().is_empty());
    assert_eq!(
        b.pulled_images().await.unwrap(),
        ["img@sha256:1", "img@sha256:2"]
    );
}

/// The running and live limits are each node's; a demo's cap is the deployment's.
async fn places_are_per_node_and_a_demos_cap_is_shared(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let b = as_node(&store, "b");
    store
        .insert_sandbox(&new_sandbox(&demo, FAR), cap(1))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_sandbox(&new_sandbox(&demo, FAR), cap(1)).await,
        Err(StoreError::Capacity(_))
    ));
    b.insert_sandbox(&new_sandbox(&demo, FAR), cap(1))
        .await
        .unwrap();
    let capped = Capacity {
        running: 10,
        live: 10,
        per_demo: Some(2),
    };
    let err = as_node(&store, "c")
        .insert_sandbox(&new_sandbox(&demo, FAR), capped)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("this demo allows 2 sandboxes at once and has 2"),
        "{err}"
    );
}

/// A delivery is leased by the node that claimed it; a node's start frees its own leases only.
async fn a_nodes_start_frees_only_its_own_leases(store: SqlStore) {
    let sandboxes = with_deliveries(&store, 2).await;
    let b = as_node(&store, "b");
    let (now, lease) = (Timestamp::from_millis(10), Timestamp::from_millis(60_000));
    let got_a = store.claim_deliveries(now, lease, 1).await.unwrap();
    let got_b = b.claim_deliveries(now, lease, 1).await.unwrap();
    assert_eq!(got_a.len() + got_b.len(), 2);
    assert_ne!(got_a[0].sandbox_id, got_b[0].sandbox_id);
    assert!(sandboxes.contains(&got_a[0].sandbox_id));
    b.release_delivery_leases().await.unwrap();
    let again = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [got_b[0].seq]
    );
}

/// A vendor with a webhook and `n` sandboxes of node `a`, each with one delivery due.
async fn with_deliveries(store: &SqlStore, n: usize) -> Vec<SandboxId> {
    let (vendor, demo) = vendor_and_demo(store).await;
    store
        .set_vendor_webhook(vendor.id, Some("https://hooks.example.com/"), "v1:s")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let s = new_sandbox(&demo, FAR);
        store.insert_sandbox(&s, cap(1_000)).await.unwrap();
        let delivery = NewDelivery {
            id: uuid::Uuid::new_v4().to_string(),
            vendor_id: vendor.id,
            kind: "sandbox.ended".to_string(),
            body: "{}".to_string(),
        };
        store
            .append_event(NewEvent {
                sandbox: s.id,
                at: Timestamp::from_millis(1),
                event: &SandboxEvent::ended(Ending::EndedByAdmin),
                announce: Some(&delivery),
            })
            .await
            .unwrap();
        ids.push(s.id);
    }
    ids
}

/// `a` and a caretaker acting for `a` end its due sandboxes at the same time, over and over:
/// each sandbox is ended by one of them.
async fn racing_end_due_ends_each_sandbox_once(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let caretaker = as_node(&store, "a");
    let mut all = HashSet::new();
    for round in 0..10 {
        for _ in 0..5 {
            let s = new_sandbox(&demo, Timestamp::from_millis(round));
            store.insert_sandbox(&s, cap(1_000)).await.unwrap();
            all.insert(s.id);
        }
        let now = Timestamp::from_millis(round);
        let (mine, theirs) = tokio::join!(store.end_due(now), caretaker.end_due(now));
        let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
        assert_eq!(mine.len() + theirs.len(), 5, "round {round}");
        assert!(mine.iter().all(|id| !theirs.contains(id)));
    }
    // And `end` against `end_due`: one wins.
    let s = new_sandbox(&demo, Timestamp::from_millis(100));
    store.insert_sandbox(&s, cap(1_000)).await.unwrap();
    let at = Timestamp::from_millis(100);
    let (ended, due) = tokio::join!(
        caretaker.end(s.id, at, &Ending::EndedByAdmin),
        store.end_due(at)
    );
    assert_eq!(u8::from(ended.unwrap()) + due.unwrap().len() as u8, 1);
}

/// Two nodes claim deliveries at the same time, over and over: each is leased once.
async fn racing_claims_lease_each_delivery_once(store: SqlStore) {
    let n = 40;
    with_deliveries(&store, n).await;
    let b = as_node(&store, "b");
    let (now, lease) = (Timestamp::from_millis(10), Timestamp::from_millis(60_000));
    let mut seen = HashSet::new();
    for _ in 0..n {
        let (mine, theirs) = tokio::join!(
            store.claim_deliveries(now, lease, 3),
            b.claim_deliveries(now, lease, 3)
        );
        for d in mine.unwrap().into_iter().chain(theirs.unwrap()) {
            assert!(seen.insert(d.seq), "delivery {} leased twice", d.seq);
        }
    }
    assert_eq!(seen.len(), n);
}

/// Many prospects at once for the last places: no more sandboxes than places, each at its
/// own slot; and across nodes, no more than the demo's cap.
async fn racing_inserts_never_pass_a_limit(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let attempts: Vec<_> = (0..12).map(|_| new_sandbox(&demo, FAR)).collect();
    let results = join_all(attempts.iter().map(|s| store.insert_sandbox(s, cap(3)))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    let slots: HashSet<Option<u32>> = store
        .sandboxes(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.addr_slot)
        .collect();
    assert_eq!(slots, HashSet::from([Some(0), Some(1), Some(2)]));

    // Node b and c race for the demo's last place (it allows 5; a holds 3).
    let views = [as_node(&store, "b"), as_node(&store, "c")];
    let capped = Capacity {
        running: 100,
        live: 100,
        per_demo: Some(5),
    };
    let attempts: Vec<_> = (0..12).map(|_| new_sandbox(&demo, FAR)).collect();
    let results = join_all(
        attempts
            .iter()
            .enumerate()
            .map(|(n, s)| views[n % 2].insert_sandbox(s, capped)),
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
}

/// Warm members made at once on one node each take their own slot.
async fn racing_warm_members_take_distinct_slots(store: SqlStore) {
    let (_, demo) = vendor_and_demo(&store).await;
    let members: Vec<_> = (0..8)
        .map(|n| NewWarmMember {
            id: SandboxId::new(),
            demo_id: demo.id,
            spec: demo.spec.clone(),
            created_at: Timestamp::from_millis(n),
        })
        .collect();
    let done = join_all(members.iter().map(|m| store.insert_warm(m))).await;
    assert!(done.iter().all(|d| d.is_ok()));
    let slots: HashSet<u32> = store
        .warm_members(None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.addr_slot)
        .collect();
    assert_eq!(slots, (0..8).collect());
}

on_both!(
    nodes_register_beat_and_are_listed,
    a_trial_goes_to_the_up_node_with_the_most_free_places,
    one_caretaker_at_a_time,
    two_caretakers_racing_one_wins,
    each_node_sees_its_own_deadlines_slots_and_wakes,
    warm_pools_and_images_are_each_nodes,
    places_are_per_node_and_a_demos_cap_is_shared,
    a_nodes_start_frees_only_its_own_leases,
    racing_end_due_ends_each_sandbox_once,
    racing_claims_lease_each_delivery_once,
    racing_inserts_never_pass_a_limit,
    racing_warm_members_take_distinct_slots,
);
