//! The reconciler: what it repairs, what it removes, what it must leave alone, and the
//! restart that comes before it; the sandbox network made again when it goes missing.

use std::time::Duration;

use serde_json::json;

use super::harness::{Harness, advance, advance_until, eventually};
use crate::domain::token::TokenHash;
use crate::domain::{
    Ending, NewSandbox, Prospect, SandboxEvent, SandboxId, SandboxStatus, ServiceEvent,
    ServiceEventRecord, Timestamp,
};
use crate::engine::fake::Op;
use crate::lifecycle::reconcile;
use crate::store::Capacity;

#[tokio::test(start_paused = true)]
async fn a_vanished_container_fails_its_sandbox() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.ready(&demo).await;
    h.engine.vanish(id);

    reconcile::once(&h.lifecycle).await.unwrap();
    let sandbox = h.sandbox(id).await;
    assert_eq!(sandbox.status, SandboxStatus::Failed);
    assert!(sandbox.data_deleted_at.is_some());
    h.assert_failed(id, "the sandbox's container vanished")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_container_sleeps_until_a_request_restarts_it() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.ready(&demo).await;
    h.engine.crash(id, 137, true);

    reconcile::once(&h.lifecycle).await.unwrap();
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Sleeping);
    assert!(h.events(id).await.contains(&SandboxEvent::Stopped {
        exit_code: 137,
        oom_killed: true
    }));
    let awake = h.lifecycle.wake(id).await.expect("a request restarts it");
    assert_eq!(awake.status, SandboxStatus::Ready);
    assert_eq!(h.placed(id).len(), 1, "data intact");
}

impl Harness {
    /// The deployment's events, oldest first.
    async fn service_events(&self) -> Vec<ServiceEvent> {
        let mut newest_first = self
            .store
            .recent_service_events(None, 100)
            .await
            .expect("the store answers");
        newest_first.reverse();
        newest_first.into_iter().map(|r| r.event).collect()
    }
}

/// An Engine restart stops every container at once: each sandbox sleeps with its own
/// `stopped` event, and the deployment gets one event for them all.
#[tokio::test(start_paused = true)]
async fn containers_an_engine_restart_stopped_are_one_event_of_the_deployment() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let (a, b) = (h.ready(&demo).await, h.ready(&demo).await);
    let running = h.ready(&demo).await;
    h.engine.crash(a, 137, false);
    h.engine.crash(b, 0, false);

    reconcile::once(&h.lifecycle).await.unwrap();
    for id in [a, b] {
        assert_eq!(h.sandbox(id).await.status, SandboxStatus::Sleeping);
        assert_eq!(h.kinds(id).await.last(), Some(&"stopped"));
    }
    assert_eq!(h.sandbox(running).await.status, SandboxStatus::Ready);
    let stopped = ServiceEvent::ContainersStopped { sandboxes: 2 };
    assert_eq!(h.service_events().await, vec![stopped.clone()]);

    // Nothing new on the next pass.
    reconcile::once(&h.lifecycle).await.unwrap();
    assert_eq!(h.service_events().await, vec![stopped]);
}

/// The health watch (it sets off the reconciler): an outage is an event when the pings
/// stop being answered and another, with its length, when they are answered again.
#[tokio::test(start_paused = true)]
async fn an_engine_outage_is_noted_as_it_starts_and_as_it_ends() {
    let mut h = Harness::new().await;
    h.run_background();
    h.engine.set_reachable(false);
    advance_until("the outage is noted", Duration::from_secs(10), async || {
        h.service_events().await == vec![ServiceEvent::EngineUnreachable]
    })
    .await;
    advance(Duration::from_secs(6)).await;
    h.engine.set_reachable(true);
    advance_until("the return is noted", Duration::from_secs(10), async || {
        h.service_events().await.len() == 2
    })
    .await;
    match h.service_events().await.as_slice() {
        [
            ServiceEvent::EngineUnreachable,
            ServiceEvent::EngineBack { after_ms },
        ] => assert!((6000..=10_000).contains(after_ms), "{after_ms}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn objects_nobody_knows_go_and_live_sandboxes_stay() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let live = h.ready(&demo).await;
    let stray = SandboxId::new();
    h.engine.leftover(stray);

    reconcile::once(&h.lifecycle).await.unwrap();
    assert!(h.engine.container(stray).is_none(), "the stray went");
    assert!(
        h.engine.container(live).unwrap().running,
        "the live one stayed"
    );
    assert_eq!(h.sandbox(live).await.status, SandboxStatus::Ready);
}

/// The reconciler lists the Engine, then reads the database: a sandbox that became ready
/// in between is not in the listing, and must not be repaired for it.
#[tokio::test(start_paused = true)]
async fn a_sandbox_made_after_the_listing_is_left_alone() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let listing = h.engine.hold(Op::List);
    let lifecycle = h.lifecycle.clone();
    let pass = tokio::spawn(async move { reconcile::once(&lifecycle).await });
    listing.arrived().await;
    let id = h.ready(&demo).await;
    listing.release();
    pass.await.unwrap().unwrap();

    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Ready);
    assert!(h.engine.container(id).unwrap().running);
    assert_eq!(
        h.kinds(id).await,
        ["created", "data_placed", "started", "ready"],
        "nothing happened to it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_fails_cut_short_trials_and_announces_ends_it_missed() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let record = |id| NewSandbox {
        id,
        demo_id: demo.id,
        vendor_id: demo.vendor_id,
        token_hash: TokenHash::of("t"),
        spec: demo.spec.clone(),
        created_at: Timestamp::from_millis(0),
        expires_at: Timestamp::from_millis(i64::MAX / 2),
        files: vec![],
        profiles: vec![],
        prospect: Prospect::default(),
        receiving: false,
    };
    let capacity = Capacity {
        running: 10,
        live: 10,
        per_demo: None,
    };
    // One was provisioning when the previous run stopped; it had made its container.
    let cut_short = SandboxId::new();
    h.store
        .insert_sandbox(&record(cut_short), capacity)
        .await
        .unwrap();
    h.engine.leftover(cut_short);
    // Another's end was recorded, but not its event.
    let unannounced = SandboxId::new();
    h.store
        .insert_sandbox(&record(unannounced), capacity)
        .await
        .unwrap();
    let at = Timestamp::from_millis(5_000);
    h.store
        .end(unannounced, at, &Ending::EndedByVendor)
        .await
        .unwrap();
    // And a failure's: its words were kept with the end, so the event says them.
    let failed = SandboxId::new();
    h.store
        .insert_sandbox(&record(failed), capacity)
        .await
        .unwrap();
    let why = Ending::failed("the demo did not answer GET / on port 80 within 5 s");
    h.store.end(failed, at, &why).await.unwrap();

    h.lifecycle.recover().await.unwrap();
    assert_eq!(
        h.store.history(failed).await.unwrap()[0].event,
        SandboxEvent::Ended {
            ending: why,
            recovered: true
        }
    );
    assert_eq!(h.sandbox(cut_short).await.status, SandboxStatus::Failed);
    let history = h.store.history(unannounced).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].at, at, "dated when it ended");
    assert_eq!(
        history[0].event,
        SandboxEvent::Ended {
            ending: Ending::EndedByVendor,
            recovered: true
        }
    );

    reconcile::once(&h.lifecycle).await.unwrap();
    eventually("the cut-short trial is torn down", async || {
        h.sandbox(cut_short).await.data_deleted_at.is_some()
    })
    .await;
    assert!(h.engine.sandboxes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_start_that_meets_a_missing_network_makes_it_again_and_says_so() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    h.engine.remove_network();
    let id = h.ready(&demo).await;

    assert!(h.engine.container(id).unwrap().running);
    assert_eq!(h.engine.calls(Op::EnsureNetwork, None), 1);
    assert_eq!(h.engine.calls(Op::Reattach, Some(id)), 1);
    let events = h.store.recent_service_events(None, 10).await.unwrap();
    assert!(
        matches!(
            &events[..],
            [ServiceEventRecord { event: ServiceEvent::NetworkRecreated { noticed_by, .. }, .. }]
                if noticed_by == "while starting a new sandbox"
        ),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_makes_a_missing_network_again_before_anything_needs_it() {
    let h = Harness::new().await;
    h.engine.remove_network();
    reconcile::once(&h.lifecycle).await.unwrap();
    let events = h.store.recent_service_events(None, 10).await.unwrap();
    assert!(
        matches!(
            &events[..],
            [ServiceEventRecord { event: ServiceEvent::NetworkRecreated { noticed_by, .. }, .. }]
                if noticed_by == "by the reconciler"
        ),
        "{events:?}"
    );
    // Whole again: the next pass has nothing to say.
    reconcile::once(&h.lifecycle).await.unwrap();
    assert_eq!(
        h.store.recent_service_events(None, 10).await.unwrap().len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn objects_nobody_knows_are_removed_as_found_and_named() {
    let h = Harness::new().await;
    let stray = SandboxId::new();
    h.engine.leftover(stray);
    reconcile::once(&h.lifecycle).await.unwrap();
    assert!(h.engine.sandboxes().is_empty());
    assert_eq!(h.engine.calls(Op::RemoveFound, None), 1);
    let events = h.store.recent_service_events(None, 10).await.unwrap();
    assert!(
        matches!(
            &events[..],
            [ServiceEventRecord {
                event: ServiceEvent::OrphansRemoved { sandbox, containers: 1, volumes: 1, networks: 0 },
                ..
            }] if *sandbox == stray
        ),
        "{events:?}"
    );
}
