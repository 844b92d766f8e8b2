//! Demos' images that vanish from the Engine and come back: the check the reconciler runs,
//! a trial and a warm pool member that meet the gap before it ran.

use serde_json::json;

use super::harness::{Harness, eventually};
use crate::domain::pool::WarmState;
use crate::domain::{DemoId, ImageStatus, SandboxStatus};
use crate::engine::fake::Op;

async fn status(h: &Harness, demo: DemoId) -> ImageStatus {
    h.store.demo(demo).await.unwrap().unwrap().image_status
}

/// The kinds of the deployment's events, oldest first.
async fn service_kinds(h: &Harness) -> Vec<&'static str> {
    let mut events = h.store.recent_service_events(None, 100).await.unwrap();
    events.reverse();
    events.iter().map(|e| e.event.kind()).collect()
}

#[tokio::test(start_paused = true)]
async fn the_check_moves_a_demo_once_each_way_and_asks_each_image_once() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let twin = h.demo("twin", json!({})).await; // the same image
    let other = h.demo("other", json!({"image": "other:1"})).await;

    h.engine.remove_image("fake:1");
    h.lifecycle.check_images().await.unwrap();
    assert_eq!(
        h.engine.calls(Op::ImageExists, None),
        2,
        "two images, asked once each"
    );
    assert_eq!(status(&h, demo.id).await, ImageStatus::Missing);
    assert_eq!(status(&h, twin.id).await, ImageStatus::Missing);
    assert_eq!(status(&h, other.id).await, ImageStatus::Ready);
    h.lifecycle.check_images().await.unwrap();
    assert_eq!(service_kinds(&h).await, ["image_missing", "image_missing"]);
    let vendors_view = h
        .store
        .recent_service_events(Some(demo.vendor_id), 100)
        .await
        .unwrap();
    assert_eq!(vendors_view.len(), 2, "its vendor sees them");

    h.engine.put_image_back("fake:1");
    h.lifecycle.check_images().await.unwrap();
    h.lifecycle.check_images().await.unwrap();
    assert_eq!(status(&h, demo.id).await, ImageStatus::Ready);
    assert_eq!(
        service_kinds(&h).await,
        ["image_missing", "image_missing", "image_back", "image_back"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_trial_that_meets_a_vanished_image_fails_in_words_and_marks_the_demo() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    h.engine.remove_image("fake:1");
    let id = h.start(&demo).await;
    h.until_status(id, SandboxStatus::Failed).await;
    eventually("the failure's event", async || {
        h.failure(id).await.is_some()
    })
    .await;
    let failure = h.failure(id).await.unwrap();
    assert_eq!(
        failure,
        "this demo is not available right now: its product image is missing on the \
         server; the vendor has been told"
    );
    assert_eq!(status(&h, demo.id).await, ImageStatus::Missing);
    assert_eq!(service_kinds(&h).await, ["image_missing"]);
    h.until_deleted(id).await;
    assert!(h.engine.sandboxes().is_empty());

    // The reconciler's check finds it missing too, and says nothing more.
    h.lifecycle.check_images().await.unwrap();
    assert_eq!(service_kinds(&h).await, ["image_missing"]);
}

#[tokio::test(start_paused = true)]
async fn the_pool_of_a_demo_whose_image_vanished_waits_for_it() {
    let (h, demo) = Harness::with_demo(json!({"warm_pool": 1})).await;
    h.engine.remove_image("fake:1");
    // The keeper meets the gap first: the demo is marked, and the keeper stops trying.
    h.lifecycle.tend_pools().await.unwrap();
    assert_eq!(status(&h, demo.id).await, ImageStatus::Missing);
    let tries = h.engine.calls(Op::Create, None);
    assert_eq!(tries, 1);
    h.lifecycle.tend_pools().await.unwrap();
    assert_eq!(
        h.engine.calls(Op::Create, None),
        tries,
        "no retry while missing"
    );
    assert!(h.store.warm_members(None).await.unwrap().is_empty());

    // Back: the pool fills again.
    h.engine.put_image_back("fake:1");
    h.lifecycle.check_images().await.unwrap();
    h.lifecycle.tend_pools().await.unwrap();
    let members = h.store.warm_members(None).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].state, WarmState::Warm);

    // A running member of a demo whose image goes missing is drained.
    h.engine.remove_image("fake:1");
    h.lifecycle.check_images().await.unwrap();
    h.lifecycle.tend_pools().await.unwrap();
    eventually("the member is drained", async || {
        h.store.warm_members(None).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(
        service_kinds(&h).await,
        ["image_missing", "image_back", "image_missing"]
    );
}
