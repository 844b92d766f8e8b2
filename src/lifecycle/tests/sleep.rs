//! Sleep and wake: the idle clock, a wake's place, and a wake that meets an end.

use std::time::Duration;

use serde_json::json;

use super::harness::{Harness, advance_until, settle};
use crate::domain::{Ending, SandboxEvent, SandboxStatus};
use crate::engine::fake::Op;
use crate::lifecycle::LifecycleError;

#[tokio::test(start_paused = true)]
async fn an_idle_sandbox_sleeps_and_the_next_request_wakes_it() {
    let mut h = Harness::new().await;
    h.run_background();
    let demo = h
        .demo(
            "naps",
            json!({"trial": {"seconds": 3600, "idle_seconds": 60}}),
        )
        .await;
    let id = h.ready(&demo).await;

    let idle = advance_until("it sleeps", Duration::from_secs(150), async || {
        h.events(id).await.contains(&SandboxEvent::Slept)
    })
    .await;
    assert!(
        idle >= Duration::from_secs(60),
        "not before it was idle: {idle:?}"
    );
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Sleeping);
    assert!(!h.engine.container(id).unwrap().running, "no compute");
    assert_eq!(h.placed(id).len(), 1, "data kept");

    let awake = h.lifecycle.wake(id).await.expect("it wakes");
    assert_eq!(awake.status, SandboxStatus::Ready);
    assert!(h.engine.container(id).unwrap().running);
    assert_eq!(h.kinds(id).await.last(), Some(&"woke"));
}

#[tokio::test(start_paused = true)]
async fn a_wake_the_engine_cannot_serve_gives_its_place_back() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.asleep(&demo).await;

    h.engine.set_reachable(false);
    let woke = h.lifecycle.wake(id).await;
    assert!(matches!(woke, Err(LifecycleError::Engine(_))), "{woke:?}");
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Sleeping);
    let counts = h.store.count_live_by_state(None).await.unwrap();
    assert_eq!(
        (counts.running, counts.sleeping),
        (0, 1),
        "its place is free"
    );

    h.engine.set_reachable(true);
    assert_eq!(
        h.lifecycle.wake(id).await.unwrap().status,
        SandboxStatus::Ready
    );
}

#[tokio::test(start_paused = true)]
async fn a_wake_with_no_running_place_leaves_it_asleep() {
    let h = Harness::with(|s| s.max_running = 1).await;
    let demo = h.demo("crowded", json!({})).await;
    let dozer = h.asleep(&demo).await;
    let _busy = h.ready(&demo).await;

    let woke = h.lifecycle.wake(dozer).await;
    assert!(matches!(woke, Err(LifecycleError::Capacity(_))), "{woke:?}");
    assert_eq!(h.sandbox(dozer).await.status, SandboxStatus::Sleeping);
    assert_eq!(
        h.engine.calls(Op::Start, Some(dozer)),
        1,
        "never started again"
    );
}

/// A request wakes a sleeping sandbox while an operator ends it: the end waits for the
/// wake's turn, the wake answers that the sandbox ended, and nothing is left.
#[tokio::test(start_paused = true)]
async fn a_wake_during_an_end_answers_ended_and_leaves_nothing() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.asleep(&demo).await;
    let start = h.engine.hold(Op::Start);
    let waking = h.wake_in_background(id);
    start.arrived().await;
    let ending = h.end_in_background(id, Ending::EndedByAdmin);
    h.until_status(id, SandboxStatus::Ended).await;
    start.release();

    let woke = waking.await.unwrap();
    assert!(matches!(woke, Err(LifecycleError::Ended)), "{woke:?}");
    let ended = ending.await.unwrap().expect("the end finishes");
    assert!(ended.data_deleted_at.is_some());
    assert!(h.engine.sandboxes().is_empty());
    assert!(!h.kinds(id).await.contains(&"woke"));
}

#[tokio::test(start_paused = true)]
async fn a_demo_that_does_not_come_back_from_sleep_fails_the_sandbox() {
    let (h, demo) = Harness::with_demo(json!({"ready": {"timeout_seconds": 5}})).await;
    let id = h.asleep(&demo).await;
    let start = h.engine.hold(Op::Start);
    let waking = h.wake_in_background(id);
    start.arrived().await;
    h.engine.crash(id, 1, false);
    start.release();

    let woke = settle(waking).await;
    assert!(
        matches!(woke, Err(LifecycleError::WakeFailed(_))),
        "{woke:?}"
    );
    let sandbox = h.until_deleted(id).await;
    assert_eq!(sandbox.status, SandboxStatus::Failed);
    assert!(h.engine.sandboxes().is_empty());
}
