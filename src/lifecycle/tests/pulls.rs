//! Registry images: the pull's outcome on the demo, the pin every sandbox then runs, a
//! failure in words, and a vanished image pulled again by its digest while a trial waits.

use serde_json::json;

use super::harness::Harness;
use crate::domain::{Demo, ImageRef, ImageStatus, SandboxStatus};
use crate::engine::EngineError;
use crate::engine::fake::Op;

const IMAGE: &str = "registry.example.com/acme/app:1";

/// A demo of a registry image, registered as the API does (`pulling`), and its pull.
async fn pulled(h: &Harness) -> Demo {
    let demo = h.demo("app", json!({"image": IMAGE})).await;
    assert!(h.store.start_pull(demo.id).await.unwrap());
    h.lifecycle.pull_now(&demo, false).await.unwrap();
    h.store.demo(demo.id).await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_pulled_demo_is_ready_and_its_sandboxes_run_the_digest() {
    let h = Harness::new().await;
    let demo = pulled(&h).await;
    assert_eq!(demo.image_status, ImageStatus::Ready);
    let digest = demo.image_digest.clone().expect("a digest");
    let pinned = ImageRef::parse(IMAGE).unwrap().pinned(&digest);
    assert_eq!(demo.run_image(), pinned);
    let id = h.ready(&demo).await;
    assert_eq!(h.sandbox(id).await.spec.image, pinned);
    let events = h.store.recent_service_events(None, 10).await.unwrap();
    assert_eq!(events[0].event.kind(), "image_pulled");
}

#[tokio::test(start_paused = true)]
async fn a_refused_pull_fails_the_demo_in_words() {
    let h = Harness::new().await;
    h.engine.fail_next(
        Op::Pull,
        EngineError::Pull {
            failure: crate::engine::PullFailure::of("unauthorized: authentication required"),
            message: "unauthorized: authentication required".into(),
        },
    );
    let demo = pulled(&h).await;
    assert_eq!(demo.image_status, ImageStatus::Failed);
    let why = demo.image_error.clone().unwrap();
    assert!(
        why.starts_with("the registry refused the credentials for registry.example.com"),
        "{why}"
    );
    assert!(!demo.on_offer());
}

#[tokio::test(start_paused = true)]
async fn a_vanished_registry_image_is_pulled_again_by_its_digest_while_the_trial_waits() {
    let h = Harness::new().await;
    let demo = pulled(&h).await;
    h.engine.remove_image(&demo.run_image());
    let id = h.ready(&demo).await;
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Ready);
    assert_eq!(h.engine.calls(Op::Pull, None), 2, "pulled again");
    let demo = h.store.demo(demo.id).await.unwrap().unwrap();
    assert_eq!(demo.image_status, ImageStatus::Ready);
}

#[tokio::test(start_paused = true)]
async fn an_image_nothing_uses_any_more_is_removed_and_one_in_use_is_kept() {
    let h = Harness::new().await;
    let demo = pulled(&h).await;
    let id = h.ready(&demo).await;
    h.store
        .delete_demo(demo.id, crate::domain::Timestamp::from_millis(1))
        .await
        .unwrap();
    h.lifecycle.remove_unused_images().await.unwrap();
    assert!(
        h.engine.image_there(&demo.run_image()),
        "its live sandbox still runs it"
    );
    h.lifecycle
        .end(id, crate::domain::Ending::EndedByVendor)
        .await
        .unwrap();
    h.lifecycle.remove_unused_images().await.unwrap();
    assert!(!h.engine.image_there(&demo.run_image()));
    assert!(h.store.pulled_images().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pull_cut_short_by_a_restart_starts_again() {
    let h = Harness::new().await;
    let demo = h.demo("app", json!({"image": IMAGE})).await;
    assert!(h.store.start_pull(demo.id).await.unwrap());
    h.lifecycle.recover().await.unwrap();
    super::harness::eventually("the pull ends", async || {
        let now = h.store.demo(demo.id).await.unwrap().unwrap();
        now.image_status == ImageStatus::Ready
    })
    .await;
}
