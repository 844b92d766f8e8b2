//! Warm pools: filling, claiming, and a drain that meets a claim.

use serde_json::json;

use super::harness::{Harness, eventually};
use crate::domain::pool::WarmState;
use crate::domain::{SandboxEvent, SandboxId, SandboxStatus};
use crate::engine::fake::Op;
use crate::lifecycle::reconcile;

async fn members(h: &Harness) -> Vec<SandboxId> {
    h.store
        .warm_members(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.state == WarmState::Warm)
        .map(|m| m.id)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_trial_claims_a_running_member_and_the_keeper_fills_the_pool_again() {
    let (h, demo) = Harness::with_demo(json!({"warm_pool": 2})).await;
    h.lifecycle.tend_pools().await.unwrap();
    let before = members(&h).await;
    assert_eq!(before.len(), 2);

    let id = h.ready(&demo).await;
    assert!(
        before.contains(&id),
        "the sandbox is a member that ran already"
    );
    assert_eq!(
        h.engine.calls(Op::Start, Some(id)),
        1,
        "only the member's own start"
    );
    let events = h.events(id).await;
    assert!(matches!(
        events[0],
        SandboxEvent::Created {
            from_warm_pool: true,
            ..
        }
    ));
    assert!(events.contains(&SandboxEvent::Started {
        from_warm_pool: true
    }));
    assert_eq!(h.placed(id).len(), 1);
    assert_eq!(h.note(id), Some(json!({})), "a claimed member is told too");

    h.lifecycle.tend_pools().await.unwrap();
    let after = members(&h).await;
    assert_eq!(after.len(), 2, "refilled");
    assert!(!after.contains(&id), "a member never serves two prospects");
}

/// The keeper drains a member while a prospect claims it: whichever wins, no prospect is
/// left with a sandbox whose container was removed.
#[tokio::test(start_paused = true)]
async fn a_drain_and_a_claim_at_once_never_lose_a_sandbox() {
    let (h, demo) = Harness::with_demo(json!({"warm_pool": 1})).await;

    // The drain first: the member is marked draining, then its removal is held.
    h.lifecycle.tend_pools().await.unwrap();
    let member = members(&h).await[0];
    let removal = h.engine.hold(Op::RemoveContainer);
    let lifecycle = h.lifecycle.clone();
    let draining = tokio::spawn(async move { lifecycle.drain_member(member).await });
    removal.arrived().await;
    let id = h.ready(&demo).await;
    assert_ne!(id, member, "a draining member is not claimed");
    removal.release();
    draining.await.unwrap().unwrap();
    assert!(h.engine.container(id).unwrap().running);
    assert!(h.engine.container(member).is_none());
    assert!(h.store.warm_member(member).await.unwrap().is_none());

    // The claim first: the drain finds a sandbox, not a member, and leaves it.
    h.lifecycle.tend_pools().await.unwrap();
    let member = members(&h).await[0];
    let claimed = h.ready(&demo).await;
    assert_eq!(claimed, member);
    h.lifecycle.drain_member(member).await.unwrap();
    assert!(h.engine.container(claimed).unwrap().running);
    assert_eq!(h.sandbox(claimed).await.status, SandboxStatus::Ready);
}

/// The reconciler lists the Engine, then reads the pool: a member that came up in between
/// is not in the listing, and must not be drained for it.
#[tokio::test(start_paused = true)]
async fn a_member_made_after_the_listing_is_not_drained() {
    let (h, _demo) = Harness::with_demo(json!({"warm_pool": 1})).await;
    let listing = h.engine.hold(Op::List);
    let lifecycle = h.lifecycle.clone();
    let pass = tokio::spawn(async move { reconcile::once(&lifecycle).await });
    listing.arrived().await;
    h.lifecycle.tend_pools().await.unwrap();
    let member = members(&h).await[0];
    listing.release();
    pass.await.unwrap().unwrap();

    assert_eq!(members(&h).await, [member]);
    assert!(h.engine.container(member).unwrap().running);
}

#[tokio::test(start_paused = true)]
async fn members_give_their_places_to_prospects() {
    let h = Harness::with(|s| s.max_running = 2).await;
    let _pooled = h.demo("pooled", json!({"warm_pool": 2})).await;
    let other = h.demo("other", json!({})).await;
    h.lifecycle.tend_pools().await.unwrap();
    assert_eq!(members(&h).await.len(), 2);

    let id = h.ready(&other).await;
    eventually("a member gave its place up", async || {
        members(&h).await.len() == 1
    })
    .await;
    assert_eq!(h.engine.sandboxes().len(), 2, "never more than the places");
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Ready);
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_container_died_is_replaced() {
    let (h, _demo) = Harness::with_demo(json!({"warm_pool": 1})).await;
    h.lifecycle.tend_pools().await.unwrap();
    let member = members(&h).await[0];
    h.engine.crash(member, 137, true);

    reconcile::once(&h.lifecycle).await.unwrap();
    assert!(h.engine.container(member).is_none(), "drained");
    h.lifecycle.tend_pools().await.unwrap();
    let now = members(&h).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], member);
}
