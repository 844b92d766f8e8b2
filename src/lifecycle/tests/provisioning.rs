//! Provisioning: the cold path, the ways it fails, and an end that comes while it runs.

use std::time::Duration;

use serde_json::json;

use super::harness::{Harness, advance, eventually};
use crate::domain::{EndReason, Ending, SandboxEvent, SandboxStatus};
use crate::engine::EngineError;
use crate::engine::fake::Op;

#[tokio::test(start_paused = true)]
async fn a_cold_trial_places_the_files_starts_and_becomes_ready() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let id = h.ready(&demo).await;

    assert_eq!(
        h.kinds(id).await,
        ["created", "data_placed", "started", "ready"]
    );
    let container = h.engine.container(id).expect("a container");
    assert!(container.running);
    assert_eq!(h.placed(id).get("a.csv"), Some(&8));
    assert_eq!(h.engine.calls(Op::Start, Some(id)), 1);
    assert!(!h.spooled(id), "the spool copy goes once the files are in");
    let sandbox = h.sandbox(id).await;
    assert!(sandbox.container_addr.is_some());
    assert!(sandbox.ready_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_load_command_that_fails_fails_the_trial_and_removes_everything() {
    let (h, demo) = Harness::with_demo(json!({"load_command": ["/bin/load", "/data"]})).await;
    h.engine.exec_outcome(3, "bad rows in a.csv");
    let id = h.start(&demo).await;
    let sandbox = h.until_deleted(id).await;

    assert_eq!(sandbox.status, SandboxStatus::Failed);
    let failure = h.failure(id).await.expect("a failure is recorded");
    assert!(failure.contains("exited with code 3"), "{failure}");
    // What it printed is the prospect's: kept with the sandbox, not in the failure.
    assert!(!failure.contains("bad rows"), "{failure}");
    let printed = sandbox.load_output().expect("what it printed is kept");
    assert_eq!(printed.output, "bad rows in a.csv");
    assert_eq!(printed.message.as_deref(), Some("bad rows in a.csv"));
    assert!(!h.events(id).await.contains(&SandboxEvent::Loaded));
    assert!(h.engine.sandboxes().is_empty(), "nothing is left");
    assert!(!h.spooled(id));
}

#[tokio::test(start_paused = true)]
async fn a_demo_that_never_answers_fails_at_its_ready_timeout_not_before() {
    let (h, demo) = Harness::with_demo(json!({"ready": {"timeout_seconds": 30}})).await;
    h.engine.demos_answer(false);
    let id = h.start(&demo).await;
    eventually("it started", async || {
        h.events(id).await.contains(&SandboxEvent::Started {
            from_warm_pool: false,
        })
    })
    .await;

    for _ in 0..29 {
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(h.sandbox(id).await.status, SandboxStatus::Provisioning);

    advance(Duration::from_secs(2)).await;
    let sandbox = h.until_deleted(id).await;
    assert_eq!(sandbox.status, SandboxStatus::Failed);
    let events = h.events(id).await;
    assert!(
        events.iter().any(|e| e
            .detail()
            .is_some_and(|d| d.contains("did not answer GET / on port 8080 within 30 s"))),
        "{events:?}"
    );
    assert!(h.engine.sandboxes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_at_start_fails_with_its_exit_code() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let (id, start) = h.start_held(&demo, Op::Start).await;
    h.engine.crash(id, 7, false);
    start.release();

    let sandbox = h.until_deleted(id).await;
    assert_eq!(sandbox.status, SandboxStatus::Failed);
    h.assert_failed(id, "the demo's container stopped (exit code 7)")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_create_the_engine_refuses_fails_the_trial() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    h.engine.fail_next(
        Op::Create,
        EngineError::Rejected {
            status: 500,
            message: "no space left on device".into(),
        },
    );
    let id = h.start(&demo).await;
    let sandbox = h.until_deleted(id).await;
    assert_eq!(sandbox.status, SandboxStatus::Failed);
    assert!(h.engine.sandboxes().is_empty());
    assert!(!h.spooled(id));
}

/// A prospect who ends the trial while its container starts: provisioning stops at the
/// next step, the sandbox ends as the prospect asked (not as a failure), nothing is left.
#[tokio::test(start_paused = true)]
async fn ending_while_provisioning_stops_it_between_engine_calls() {
    let (h, demo) = Harness::with_demo(json!({})).await;
    let (id, start) = h.start_held(&demo, Op::Start).await;
    // Someone else (a reconciler's repair, say) holds the sandbox's turn, so the end's
    // teardown must wait: the provisioning has to stop on the claim alone.
    let busy = h.lifecycle.inner.turns.take(id).await;
    let ending = h.end_in_background(id, Ending::EndedByProspect);
    eventually("the end is announced", async || {
        h.kinds(id).await.contains(&"ended_by_prospect")
    })
    .await;
    start.release();
    eventually("the provisioning stopped", async || {
        !h.lifecycle.inner.provisions.running(id)
    })
    .await;
    drop(busy);
    let ended = ending.await.unwrap().expect("the end finishes");

    assert_eq!(ended.end_reason, Some(EndReason::EndedByProspect));
    assert!(ended.data_deleted_at.is_some());
    let kinds = h.kinds(id).await;
    assert!(
        !kinds.contains(&"started") && !kinds.contains(&"ready") && !kinds.contains(&"failed"),
        "no step after the end: {kinds:?}"
    );
    assert!(h.engine.sandboxes().is_empty(), "the container went");
}
