//! What the host's operators do to the Engine does not break trials for long: the sandbox
//! network removed under a running service comes back (with its firewall rules) and the
//! trial that met the gap still becomes ready; objects labelled for this deployment whose
//! sandbox it does not know are removed whatever they are named; deployments sharing the
//! Engine never share a network. Each healing is named in the deployment's events.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Api, STATIC_FILES, TestApp, docker_ids, inspect_network, poll};
use crate::pages::{cookie_value, first_snapshot, login, page_key, set_cookies};

/// The deployment's events, newest first: (kind, detail).
async fn service_events(api: &Api) -> Vec<(String, String)> {
    let text = |e: &Value, k: &str| e[k].as_str().unwrap().to_string();
    api.service_events(&api.admin)
        .await
        .iter()
        .map(|e| (text(e, "kind"), text(e, "detail")))
        .collect()
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Whether the IPv4 firewall rule that keeps sandboxes off the host is in place.
fn host_rule_present(bridge: &str) -> bool {
    let rule = &testdrive::engine::firewall_rules(bridge)[0];
    Command::new(rule.program)
        .args(["-w", "-C"])
        .args(&rule.args)
        .status()
        .expect("iptables runs")
        .success()
}

fn remove_host_rules(bridge: &str) {
    crate::helpers::remove_firewall_rules(bridge);
    assert!(!host_rule_present(bridge));
}

#[tokio::test]
async fn a_trial_that_meets_a_removed_network_makes_it_again_and_becomes_ready() {
    // No reconciler pass after the first: only the trial can notice the gap.
    let app = TestApp::spawn_with(|c| c.reconcile_seconds = 3600).await;
    let (_, demo) = app.static_demo(json!({})).await;
    let subnet = inspect_network(&app, "{{range .IPAM.Config}}{{.Subnet}}{{end}}");
    // A quiet host cleaned: nothing runs, so the network goes; the firewall rules with it.
    let removed = docker(&["network", "rm", &app.network]);
    assert!(removed.status.success(), "{removed:?}");
    remove_host_rules(&app.bridge);

    let started = Instant::now();
    let body = app
        .ready_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
        .await;
    let healed_in = started.elapsed();
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    let page = app.open(id, token, "/a.csv").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.text().await.unwrap(), "x,y\n1,2\n");

    // The same network as before: isolated, on the subnet the addresses are handed out in.
    assert_eq!(
        inspect_network(
            &app,
            "{{.Internal}} {{index .Options \"com.docker.network.bridge.enable_icc\"}}"
        ),
        "true false"
    );
    assert_eq!(
        inspect_network(&app, "{{range .IPAM.Config}}{{.Subnet}}{{end}}"),
        subnet
    );
    assert!(host_rule_present(&app.bridge), "the firewall rule is back");
    let events = service_events(&app).await;
    assert!(
        events
            .iter()
            .any(|(kind, detail)| kind == "network_recreated"
                && detail.contains(&app.network)
                && detail.contains("while starting a new sandbox")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(kind, _)| kind == "firewall_restored"),
        "{events:?}"
    );
    // The operators' console names the healing among the events, as the deployment's own.
    let signed_in = login(&app, "/ops", &app.admin, "same-origin").await;
    let cookie = cookie_value(&set_cookies(&signed_in)[0]);
    let key = page_key(&app, "/ops", &cookie).await;
    let snapshot = first_snapshot(&app, "/ops", &cookie, &key).await;
    assert!(
        snapshot["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "network_recreated"
                && e["sandbox_id"].is_null()
                && e["detail"].as_str().unwrap().contains(&app.network)
        }),
        "{snapshot}"
    );
    // For the record: the same trial with the network in place.
    let started = Instant::now();
    let again = app
        .ready_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())])
        .await;
    eprintln!(
        "a trial across a removed network was ready in {healed_in:?}, the next one in {:?}",
        started.elapsed()
    );
    app.end_sandbox(
        again["id"].as_str().unwrap(),
        again["token"].as_str().unwrap(),
    )
    .await;
    app.end_sandbox(id, token).await;
}

#[tokio::test]
async fn the_reconciler_makes_a_removed_network_again_and_a_sleeping_sandbox_wakes_on_it() {
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({})).await;
    // The sandbox sleeps (its container stopped, as after an idle moment), so nothing holds
    // the network: a prune removes it.
    let stopped = docker(&["stop", "-t", "0", &crate::helpers::container_of(&id)]);
    assert!(stopped.status.success(), "{stopped:?}");
    poll(
        Duration::from_millis(200),
        async || app.sandbox(&id).await,
        |s| s["status"] == "sleeping",
    )
    .await;
    let removed = docker(&["network", "rm", &app.network]);
    assert!(removed.status.success(), "{removed:?}");
    let gone = Instant::now();

    let events = poll(
        Duration::from_millis(100),
        async || service_events(&app).await,
        |events| events.iter().any(|(kind, _)| kind == "network_recreated"),
    )
    .await;
    eprintln!(
        "the reconciler made the network again after {:?}",
        gone.elapsed()
    );
    assert!(
        events
            .iter()
            .any(|(kind, detail)| kind == "network_recreated"
                && (detail.contains("by the reconciler") || detail.contains("while waking"))),
        "{events:?}"
    );
    assert_eq!(inspect_network(&app, "{{.Name}}"), app.network);

    // The next request wakes the sandbox on the network made again, its data intact.
    let page = app.open(&id, &token, "/a.csv").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.text().await.unwrap(), "x,y\n1,2\n");
    assert_eq!(app.sandbox(&id).await["status"], "ready");
    app.end_sandbox(&id, &token).await;
}

/// Docker objects a test made by hand, removed even if the test fails.
struct Made(Vec<(&'static str, String)>);

impl Drop for Made {
    fn drop(&mut self) {
        for (kind, name) in self.0.iter().rev() {
            let args: &[&str] = match *kind {
                "container" => &["rm", "-fv"],
                "volume" => &["volume", "rm", "-f"],
                _ => &["network", "rm"],
            };
            let _ = Command::new("docker").args(args).arg(name).output();
        }
    }
}

#[tokio::test]
async fn objects_of_an_unknown_sandbox_are_removed_by_id_whatever_their_names() {
    let app = TestApp::spawn().await;
    let stray = uuid::Uuid::now_v7().to_string();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ours = [
        format!("testdrive.sandbox={stray}"),
        format!("testdrive.instance={}", app.instance),
    ];
    let labels: Vec<&str> = ours.iter().flat_map(|l| ["--label", l.as_str()]).collect();
    let (net, vol, ctr) = (
        format!("odd-net-{tag}"),
        format!("odd-vol-{tag}"),
        format!("odd-{tag}"),
    );
    // Another deployment's volume for the same id: not this deployment's to remove.
    let theirs = format!("other-vol-{tag}");
    let mut made = Made(Vec::new());
    let mut make = |kind: &'static str, args: Vec<&str>| {
        let out = docker(&args);
        assert!(out.status.success(), "{kind}: {out:?}");
        made.0.push((kind, args.last().unwrap().to_string()));
    };
    make(
        "network",
        [&["network", "create", "--internal"][..], &labels, &[&net]].concat(),
    );
    make(
        "volume",
        [&["volume", "create"][..], &labels, &[&vol]].concat(),
    );
    let other = format!("testdrive.sandbox={stray}");
    make(
        "volume",
        vec![
            "volume",
            "create",
            "--label",
            &other,
            "--label",
            "testdrive.instance=someone-else",
            &theirs,
        ],
    );
    let mount = format!("{vol}:/data");
    make(
        "container",
        [
            &["run", "-d", "--network", &net, "-v", &mount][..],
            &labels,
            &["--name", &ctr, STATIC_FILES],
        ]
        .concat(),
    );
    // The image's argument list ends with the image, not the name: record the name.
    made.0.last_mut().unwrap().1 = ctr.clone();

    let started = Instant::now();
    let left = poll(
        Duration::from_millis(200),
        async || {
            let label = format!("testdrive.sandbox={stray}");
            ["container", "volume", "network"]
                .iter()
                .flat_map(|kind| docker_ids(kind, &label))
                .collect::<Vec<_>>()
        },
        // Only the other deployment's volume is left.
        |left| left.len() == 1,
    )
    .await;
    eprintln!(
        "the reaper removed a stray container, volume and network in {:?}",
        started.elapsed()
    );
    assert_eq!(
        left,
        [theirs.as_str()],
        "only the other deployment's volume"
    );
    // Named once the objects are gone.
    poll(
        Duration::from_millis(100),
        async || service_events(&app).await,
        |events| {
            events.iter().any(|(kind, detail)| {
                kind == "orphans_removed"
                    && detail.contains(&stray)
                    && detail.contains("1 container(s), 1 volume(s) and 1 network(s)")
            })
        },
    )
    .await;
    // And the reaper does not keep failing on them: nothing of them is met again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = service_events(&app).await;
    let reaped = |events: &[(String, String)]| {
        events
            .iter()
            .filter(|(kind, detail)| kind == "orphans_removed" && detail.contains(&stray))
            .count()
    };
    assert_eq!(reaped(&again), 1, "{again:?}");
}

/// The subnet of a network, `a.b.c.d/p`, as (first address, last address).
fn range_of(subnet: &str) -> (u32, u32) {
    let (addr, prefix) = subnet.split_once('/').unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    let first = u32::from(addr);
    (first, first | (u32::MAX >> prefix))
}

#[tokio::test]
async fn deployments_with_default_settings_get_networks_of_their_own() {
    let first = TestApp::spawn_with_own_network(|_| {}).await;
    let second = TestApp::spawn_with_own_network(|_| {}).await;
    assert_ne!(first.network, second.network);
    assert_ne!(first.bridge, second.bridge);
    assert!(first.bridge.len() <= 15, "{}", first.bridge);
    let subnet = |app: &TestApp| inspect_network(app, "{{range .IPAM.Config}}{{.Subnet}}{{end}}");
    let (a, b) = (range_of(&subnet(&first)), range_of(&subnet(&second)));
    assert!(a.1 < b.0 || b.1 < a.0, "{a:?} and {b:?} overlap");
    for app in [&first, &second] {
        let owner = inspect_network(app, "{{index .Labels \"testdrive.instance\"}}");
        assert_eq!(owner, app.instance);
    }

    // Both take trials at once, each on its own addresses.
    let ((id1, token1), (id2, token2)) = tokio::join!(
        first.static_sandbox(json!({})),
        second.static_sandbox(json!({}))
    );
    for (app, id, token) in [(&first, &id1, &token1), (&second, &id2, &token2)] {
        let page = app.open(id, token, "/a.csv").await;
        assert_eq!(page.status(), StatusCode::OK);
    }

    // A restart keeps the network the first start picked (its sandboxes' addresses are in it).
    let (network, before) = (first.network.clone(), subnet(&first));
    let mut first = first;
    first.restart(|_| {}).await;
    assert_eq!(first.network, network);
    assert_eq!(subnet(&first), before);
    let page = first.open(&id1, &token1, "/a.csv").await;
    assert_eq!(page.status(), StatusCode::OK);
    first.end_sandbox(&id1, &token1).await;
    second.end_sandbox(&id2, &token2).await;
}

#[tokio::test]
async fn a_deployment_refuses_a_network_that_is_another_deployments() {
    // One deployment picked its own network; another one on its own database is configured
    // with that network's name, bridge and subnet.
    let owner = TestApp::spawn_with_own_network(|_| {}).await;
    let subnet = inspect_network(&owner, "{{range .IPAM.Config}}{{.Subnet}}{{end}}");
    let refused = |network: String, bridge: String, subnet: String| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = testdrive::config::Config::defaults();
        config.data_dir = dir.path().to_path_buf();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_token = Some("x".into());
        config.sandbox.network = network;
        config.sandbox.bridge = bridge;
        config.sandbox.subnet = subnet;
        match testdrive::app::start(config).await {
            Ok(running) => {
                running.stop().await;
                panic!("the service started on another deployment's network");
            }
            Err(err) => err.to_string(),
        }
    };
    let why = refused(owner.network.clone(), owner.bridge.clone(), subnet).await;
    assert!(why.contains("another testdrive deployment"), "{why}");
    for setting in [
        "sandbox.network",
        "TESTDRIVE_SANDBOX__NETWORK",
        "sandbox.subnet",
    ] {
        assert!(why.contains(setting), "{why}");
    }

    // A network nobody labelled (made by hand, or by an older testdrive) that another
    // deployment's sandbox is on: refused as well.
    let other = TestApp::spawn().await;
    let (id, token) = other.static_sandbox(json!({})).await;
    let subnet = inspect_network(&other, "{{range .IPAM.Config}}{{.Subnet}}{{end}}");
    let why = refused(other.network.clone(), other.bridge.clone(), subnet).await;
    assert!(why.contains("another deployment"), "{why}");
    assert!(why.contains("sandbox.network"), "{why}");
    // The other deployment's sandbox was not disturbed.
    let page = other.open(&id, &token, "/a.csv").await;
    assert_eq!(page.status(), StatusCode::OK);
    other.end_sandbox(&id, &token).await;
}
