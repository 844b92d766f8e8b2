//! Warm pools against the real Engine: a trial takes a started member instead of starting
//! a container, the pool refills, a member never serves two prospects, a demo change
//! drains its pool, members give up their places to prospects, and a member that dies is
//! replaced.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    TestApp, assert_no_objects, container_of, docker_ids, kinds, objects_of, require_images,
};

/// The warm pool members of this app: containers labelled for it that no sandbox record
/// (as operators see them) names.
async fn members(app: &TestApp) -> HashSet<String> {
    let sandboxes: HashSet<String> = app
        .sandboxes()
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let label = format!("testdrive.instance={}", app.instance);
    let names = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label={label}")])
        .args(["--format", "{{.Label \"testdrive.sandbox\"}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&names.stdout)
        .lines()
        .map(str::to_string)
        .filter(|id| !id.is_empty() && !sandboxes.contains(id))
        .collect()
}

/// Waits until `check` holds for the set of members, up to a minute.
async fn wait_members(app: &TestApp, check: impl Fn(&HashSet<String>) -> bool) -> HashSet<String> {
    for _ in 0..600 {
        let now = members(app).await;
        if check(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the members never got there: {:?}", members(app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_takes_a_started_member_and_the_pool_refills() {
    require_images();
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({"warm_pool": 2})).await;
    app.wait_pool(&key, &demo, 2).await;
    let before = members(&app).await;
    assert_eq!(before.len(), 2, "{before:?}");

    let data = b"name\nAda\n".to_vec();
    let created = app
        .ready_sandbox(&demo, &[("people.csv", data.clone())])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(
        before.contains(&id),
        "the sandbox is a member that was running already"
    );
    let events = app.events(&id, &token).await;
    let created_event = &events[0];
    assert!(
        created_event["detail"]
            .as_str()
            .unwrap()
            .contains("warm pool"),
        "{events:?}"
    );
    assert_eq!(
        kinds(&events),
        ["created", "data_placed", "started", "ready"],
        "no container start on the prospect's path"
    );
    // The prospect's files are in it, bound after the claim.
    let res = app.get(&format!("/s/{id}/people.csv"), Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), data);

    // The pool refills with a new member; the claimed one is never in it again.
    app.wait_pool(&key, &demo, 2).await;
    let after = wait_members(&app, |m| m.len() == 2).await;
    assert!(!after.contains(&id));

    // Claimed, it is a sandbox like any other: ending it removes everything of it.
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_objects(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_never_serves_two_prospects() {
    require_images();
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({"warm_pool": 1})).await;
    app.wait_pool(&key, &demo, 1).await;

    // Three prospects at once for a pool of one.
    let trials = (0..3).map(|i| {
        let api = &app;
        let demo = demo.clone();
        async move {
            let name = format!("mine-{i}.csv");
            let body = api
                .ready_sandbox(&demo, &[(name.as_str(), format!("x\n{i}\n").into_bytes())])
                .await;
            (i, body)
        }
    });
    let trials = futures_util::future::join_all(trials).await;
    let ids: HashSet<&str> = trials
        .iter()
        .map(|(_, b)| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "three sandboxes, three containers");
    for (i, body) in &trials {
        let (id, token) = (
            body["id"].as_str().unwrap(),
            body["token"].as_str().unwrap(),
        );
        let own = app.get(&format!("/s/{id}/mine-{i}.csv"), Some(token)).await;
        assert_eq!(own.status(), StatusCode::OK);
        for other in (0..3).filter(|j| j != i) {
            let res = app
                .get(&format!("/s/{id}/mine-{other}.csv"), Some(token))
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "no one else's file");
        }
    }
    for (_, body) in &trials {
        let id = body["id"].as_str().unwrap();
        app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
            .await;
        assert_no_objects(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_change_drains_its_pool_and_removal_empties_it() {
    require_images();
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({"warm_pool": 2})).await;
    app.wait_pool(&key, &demo, 2).await;
    let old = members(&app).await;

    // Members run the old spec: all go, new ones come.
    let res = app
        .http
        .patch(app.url(&format!("/v1/demos/{demo}")))
        .bearer_auth(&key)
        .json(&json!({"title": "Static files, renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new = wait_members(&app, |m| m.len() == 2 && m.is_disjoint(&old)).await;
    for id in &old {
        assert!(
            objects_of(id).is_empty(),
            "{id} was drained with its volume"
        );
    }
    app.wait_pool(&key, &demo, 2).await;

    // A trial now runs the new spec.
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = body["id"].as_str().unwrap().to_string();
    assert!(new.contains(&id));
    assert_eq!(app.sandbox(&id).await["status"], "ready");

    // Disabled: the pool empties; removed: likewise, and running sandboxes are untouched.
    let res = app
        .http
        .patch(app.url(&format!("/v1/demos/{demo}")))
        .bearer_auth(&key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    wait_members(&app, |m| m.is_empty()).await;
    let res = app
        .http
        .patch(app.url(&format!("/v1/demos/{demo}")))
        .bearer_auth(&key)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.wait_pool(&key, &demo, 2).await;
    let res = app.delete(&format!("/v1/demos/{demo}"), Some(&key)).await;
    assert!(res.status().is_success(), "{}", res.status());
    wait_members(&app, |m| m.is_empty()).await;
    assert_eq!(app.sandbox(&id).await["status"], "ready");
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert_no_objects(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_hold_only_places_no_prospect_needs() {
    require_images();
    let app = TestApp::spawn_with(|c| c.max_sandboxes = 2).await;
    let (key, pooled) = app.static_demo(json!({"warm_pool": 2})).await;
    let (_, other) = app.static_demo(json!({})).await;
    app.wait_pool(&key, &pooled, 2).await;

    // Both running places are held by members, yet a prospect of another demo gets one.
    let body = app
        .ready_sandbox(&other, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = body["id"].as_str().unwrap().to_string();
    wait_members(&app, |m| m.len() == 1).await;
    let running = docker_ids("container", &format!("testdrive.instance={}", app.instance));
    assert_eq!(
        running.len(),
        2,
        "never more containers than running places"
    );

    // And the pool refills once the place is free again.
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    app.wait_pool(&key, &pooled, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_container_dies_is_replaced() {
    require_images();
    let app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({"warm_pool": 1})).await;
    app.wait_pool(&key, &demo, 1).await;
    let dead = members(&app).await.into_iter().next().unwrap();
    let out = Command::new("docker")
        .args(["kill", &container_of(&dead)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // The reconciler drains it (with its volume); the keeper makes another.
    let now = wait_members(&app, |m| m.len() == 1 && !m.contains(&dead)).await;
    assert!(objects_of(&dead).is_empty());
    app.wait_pool(&key, &demo, 1).await;
    // The new one serves a trial.
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = body["id"].as_str().unwrap().to_string();
    assert!(now.contains(&id));
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert_no_objects(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_survive_a_restart_and_are_claimed_after_it() {
    require_images();
    let mut app = TestApp::spawn().await;
    let (key, demo) = app.static_demo(json!({"warm_pool": 1})).await;
    app.wait_pool(&key, &demo, 1).await;
    let kept = members(&app).await;
    app.restart(|_| {}).await;
    app.wait_pool(&key, &demo, 1).await;
    assert_eq!(
        members(&app).await,
        kept,
        "the started member is still good"
    );
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = body["id"].as_str().unwrap().to_string();
    assert!(kept.contains(&id));
    app.delete(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await;
    assert_no_objects(&id);
}
