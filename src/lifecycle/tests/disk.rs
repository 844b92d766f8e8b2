//! The disk watch over the fake Engine, with each sandbox's volume in a temporary
//! directory: a sandbox whose volume cannot be measured is logged and passed over, and
//! every other sandbox is still measured — and ended when over its allowance — in the
//! same round.

use std::path::PathBuf;

use serde_json::json;

use super::harness::Harness;
use crate::domain::SandboxStatus;
use crate::lifecycle::disk;

/// A volume directory as the Engine lays them out (`<volumes>/<name>/_data`), holding
/// `bytes` in one file.
fn volume(root: &std::path::Path, name: &str, bytes: usize) -> PathBuf {
    let data = root.join(name).join("_data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), vec![1u8; bytes]).unwrap();
    data
}

#[tokio::test(start_paused = true)]
async fn one_sandbox_that_cannot_be_measured_does_not_skip_the_others() {
    let h = Harness::with(|s| s.max_running = 40).await;
    let demo = h
        .demo(
            "disk",
            json!({"limits": {"disk_mb": 16}, "upload": {"max_bytes": 1048576}}),
        )
        .await;
    let root = tempfile::tempdir().unwrap();

    // Several broken ones, so that whatever order the round takes, one comes first.
    let mut broken = Vec::new();
    for i in 0..15 {
        let id = h.ready(&demo).await;
        // Not a directory: reading it fails.
        let data = root.path().join(format!("broken{i}")).join("_data");
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, b"not a directory").unwrap();
        h.engine.place_volumes(id, vec![data]);
        broken.push(id);
    }
    let over = h.ready(&demo).await;
    h.engine
        .place_volumes(over, vec![volume(root.path(), "over", 17 << 20)]);
    let within = h.ready(&demo).await;
    h.engine
        .place_volumes(within, vec![volume(root.path(), "within", 1 << 20)]);

    assert!(
        disk::check(&h.lifecycle).await.unwrap(),
        "the volumes are visible"
    );

    let why = h
        .failure(over)
        .await
        .expect("the sandbox over its allowance ended");
    assert!(why.contains("over the demo's limit of 16 MB"), "{why}");
    assert_eq!(h.sandbox(within).await.status, SandboxStatus::Ready);
    for id in broken {
        assert_eq!(h.sandbox(id).await.status, SandboxStatus::Ready);
    }
}
