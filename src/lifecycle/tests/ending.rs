//! The one end path: every reason goes the same way, one caller wins, deadlines are kept,
//! and a teardown the Engine cannot finish is finished later.

use std::time::Duration;

use serde_json::json;

use super::harness::{Harness, advance, advance_until, eventually};
use crate::domain::receipt::Receipt;
use crate::domain::{EndReason, Ending, SandboxEvent, SandboxId, SandboxStatus};
use crate::lifecycle::reconcile;

/// What the history says from the end on.
async fn from_the_end(h: &Harness, id: SandboxId) -> Vec<&'static str> {
    let kinds = h.kinds(id).await;
    let start = kinds
        .iter()
        .position(|k| SandboxEvent::end_kinds().contains(k))
        .expect("an end event");
    kinds[start..].to_vec()
}

/// Moves the clock on until the sandbox's data is deleted (its deadline passed).
async fn until_expired(h: &Harness, id: SandboxId, within: Duration) {
    advance_until("the trial expired", within, async || {
        h.sandbox(id).await.data_deleted_at.is_some()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn every_reason_to_end_goes_the_same_way() {
    let (mut h, demo) = Harness::with_demo(json!({"trial": {"seconds": 60}})).await;
    let cases = [
        Ending::EndedByProspect,
        Ending::EndedByVendor,
        Ending::EndedByAdmin,
        Ending::failed("the disk is full"),
    ];
    for ending in cases {
        let id = h.ready(&demo).await;
        let reason = ending.reason();
        let ended = h.lifecycle.end(id, ending).await.expect("it ends");
        assert_eq!(ended.end_reason, Some(reason));
        assert!(ended.data_deleted_at.is_some(), "{reason:?}");
        assert_eq!(
            from_the_end(&h, id).await,
            [
                reason.as_str(),
                "container_removed",
                "volumes_removed",
                "files_removed",
                "data_deleted"
            ]
        );
        let history = h.store.history(id).await.unwrap();
        assert!(Receipt::of(&ended, &history).is_some(), "a receipt");
    }

    // The deadline is the fifth reason, claimed by the scheduler.
    h.run_background();
    let id = h.ready(&demo).await;
    until_expired(&h, id, Duration::from_secs(150)).await;
    assert_eq!(h.sandbox(id).await.end_reason, Some(EndReason::Expired));
    assert_eq!(
        from_the_end(&h, id).await,
        [
            "expired",
            "container_removed",
            "volumes_removed",
            "files_removed",
            "data_deleted"
        ]
    );
    assert!(h.engine.sandboxes().is_empty());
}

/// Two trials of two minutes, one extended by a minute: each ends at its own deadline,
/// never before it.
#[tokio::test(start_paused = true)]
async fn deadlines_are_kept_and_extensions_move_them() {
    let (mut h, demo) = Harness::with_demo(json!({"trial": {"seconds": 120}})).await;
    h.run_background();
    let plain = h.ready(&demo).await;
    let extended = h.ready(&demo).await;
    let deadline = h.sandbox(plain).await.expires_at;
    h.lifecycle.extend(extended, 60).await.expect("it extends");

    advance(Duration::from_secs(119)).await;
    assert_eq!(h.sandbox(plain).await.status, SandboxStatus::Ready);

    // (How promptly is the scheduler's own tests' to say, on a clock no database shares;
    // the limits here leave room for its 30 s safety look.)
    until_expired(&h, plain, Duration::from_secs(90)).await;
    let ended = h.sandbox(plain).await;
    assert_eq!(ended.end_reason, Some(EndReason::Expired));
    assert!(
        ended.ended_at.expect("an end time") >= deadline,
        "not before"
    );
    assert_eq!(h.sandbox(extended).await.status, SandboxStatus::Ready);

    until_expired(&h, extended, Duration::from_secs(150)).await;
    let ended = h.sandbox(extended).await;
    assert!(ended.ended_at.unwrap() >= deadline.plus_seconds(60));
    let by = h.events(extended).await.into_iter().find_map(|e| match e {
        SandboxEvent::Extended { by_seconds, .. } => Some(by_seconds),
        _ => None,
    });
    assert_eq!(by, Some(60));
}

#[tokio::test(start_paused = true)]
async fn two_ends_at_once_are_announced_once_and_both_wait_for_the_data() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.ready(&demo).await;
    let (a, b) = tokio::join!(
        h.lifecycle.end(id, Ending::EndedByAdmin),
        h.lifecycle.end(id, Ending::EndedByProspect)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert!(a.data_deleted_at.is_some() && b.data_deleted_at.is_some());
    let ends = h
        .kinds(id)
        .await
        .into_iter()
        .filter(|k| SandboxEvent::end_kinds().contains(k))
        .count();
    assert_eq!(ends, 1);
}

#[tokio::test(start_paused = true)]
async fn a_teardown_the_engine_cannot_finish_is_finished_by_the_reconciler() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.ready(&demo).await;

    h.engine.set_reachable(false);
    assert!(h.lifecycle.end(id, Ending::EndedByAdmin).await.is_err());
    let ended = h.sandbox(id).await;
    assert_eq!(ended.status, SandboxStatus::Ended, "the end is recorded");
    assert!(ended.data_deleted_at.is_none(), "but nothing is promised");

    h.engine.set_reachable(true);
    reconcile::once(&h.lifecycle).await.expect("a pass");
    assert!(h.sandbox(id).await.data_deleted_at.is_some());
    assert!(h.engine.sandboxes().is_empty());
    eventually("no spool left", async || !h.spooled(id)).await;

    // Ending it again answers from the record: there is nothing left to ask the Engine.
    h.engine.set_reachable(false);
    let again = h.lifecycle.end(id, Ending::EndedByAdmin).await;
    assert!(again.expect("no Engine call").data_deleted_at.is_some());
}
