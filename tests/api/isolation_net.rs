//! What a sandbox can learn of, or reach in, the others and the host beyond IPv4 — the
//! Engine's DNS server, IPv6 — and what it can make the disk watch read, each tried from
//! inside real sandboxes.

use std::net::{Ipv6Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Where the volume mounted at `path` in the sandbox is on the host.
fn volume_of(id: &str, path: &str) -> String {
    inspect_container(
        id,
        &format!(
            "{{{{range .Mounts}}}}{{{{if eq .Destination \"{path}\"}}}}{{{{.Source}}}}{{{{end}}}}{{{{end}}}}"
        ),
    )
}

/// The host-side bridge of the app's sandbox network.
fn bridge(app: &TestApp) -> String {
    inspect_network(app, "{{index .Options \"com.docker.network.bridge.name\"}}")
}

async fn status(app: &TestApp, id: &str, token: &str) -> Value {
    app.get(&format!("/v1/sandboxes/{id}"), Some(token))
        .await
        .json::<Value>()
        .await
        .unwrap()["status"]
        .clone()
}

/// Both spellings of a sandbox id: hyphenated and 32 hex digits.
fn spellings(id: &str) -> [String; 2] {
    [id.to_string(), id.replace('-', "")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_dns_tells_a_sandbox_nothing_of_the_others() {
    let app = TestApp::spawn().await;
    let (a, a_token) = app.static_sandbox(json!({})).await;
    let (b, b_token) = app.static_sandbox(json!({})).await;
    let b_ip = container_ip(&b);
    assert!(!b_ip.is_empty());

    // Reverse: who is at the other sandbox's address (what a scan of the subnet asks).
    let (_, reverse) = sh_in(&a, &format!("nslookup {b_ip} 2>&1"));
    // Forward: the names a container is known by — the name it had, its id, the hostname
    // sandboxes shared — and whatever name the reverse answer gave.
    let mut names = vec![format!("testdrive-{b}"), b.clone(), "sandbox".to_string()];
    names.extend(
        reverse
            .split_whitespace()
            .skip_while(|w| *w != "name")
            .nth(2)
            .map(|n| n.trim_end_matches('.').to_string()),
    );
    let mut forward = String::new();
    for name in &names {
        let (_, out) = sh_in(&a, &format!("nslookup {name} 2>&1"));
        forward.push_str(&format!("== {name}\n{out}\n"));
    }
    for id in [&a, &b] {
        for spelling in spellings(id) {
            assert!(
                !reverse.contains(&spelling),
                "the reverse lookup of {b_ip} names sandbox {id}: {reverse}"
            );
        }
    }
    // Only the name the reverse answer gave (which says nothing) finds the address.
    for name in &names[..3] {
        let out = forward
            .split("== ")
            .find(|part| part.starts_with(&format!("{name}\n")))
            .unwrap();
        assert!(!out.contains(&b_ip), "{name} resolves to {b_ip}: {out}");
    }
    app.end_sandbox(&a, &a_token).await;
    app.end_sandbox(&b, &b_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_has_no_ipv6_to_reach_the_host_or_another_sandbox() {
    // testdrive on every address, IPv6 included: the worst case.
    let app = TestApp::spawn_with(|c| c.listen = "[::]:0".parse().unwrap()).await;
    let service_port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    let host_service = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    host_service.set_nonblocking(true).unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let bridge = bridge(&app);
    assert!(!bridge.is_empty());

    let (a, a_token) = app.static_sandbox(json!({})).await;
    let (b, b_token) = app.static_sandbox(json!({})).await;

    // No IPv6 address at all inside, link-local included, and no way to turn it on.
    for id in [&a, &b] {
        let (_, addresses) = sh_in(id, "cat /proc/net/if_inet6");
        assert!(addresses.trim().is_empty(), "IPv6 in {id}: {addresses}");
        let (_, off) = sh_in(id, "cat /proc/sys/net/ipv6/conf/all/disable_ipv6");
        assert_eq!(off.trim(), "1");
    }
    // The host's link-local address on the bridge (the bridge has one once a sandbox is
    // on it), and the host's services listening there: neither answers a sandbox.
    let out = Command::new("ip")
        .args(["-6", "-o", "addr", "show", "dev", &bridge, "scope", "link"])
        .output()
        .unwrap();
    let host_link_local = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .map(|a| a.split('/').next().unwrap().to_string());
    if let Some(host) = &host_link_local {
        for port in [host_port, service_port] {
            let (reached, out) = sh_in(&a, &format!("echo hello | nc -w 2 {host}%eth0 {port}"));
            assert!(!reached, "reached [{host}]:{port} over IPv6: {out}");
        }
        assert!(
            host_service.accept().is_err(),
            "the host service saw a connection from a sandbox"
        );
    }
    // Should an Engine give sandboxes IPv6 anyway, the host drops all of it from the
    // bridge: to the host, and to other sandboxes.
    for chain in ["INPUT", "FORWARD"] {
        let rule = Command::new("ip6tables")
            .args(["-w", "-C", chain, "-i", &bridge, "-j", "DROP"])
            .output()
            .unwrap();
        assert!(
            rule.status.success(),
            "no ip6tables {chain} rule for {bridge}: {}",
            String::from_utf8_lossy(&rule.stderr)
        );
    }
    app.end_sandbox(&a, &a_token).await;
    app.end_sandbox(&b, &b_token).await;
}

/// The demo command of a sandbox that tries to make the disk watch read what is not its
/// own: a link to the host's root, a link to `$TARGET`, and a directory it keeps swapping
/// for a link to `$TARGET` (several, and many entries to stat around them: the window
/// between seeing a directory and opening it), while it serves as usual.
const SWAPPING: &str = r#"
i=0; while [ $i -lt 3000 ]; do : > /data/f$i; i=$((i+1)); done
ln -s / /data/root
ln -s "$TARGET" /data/other
for d in d1 d2 d3 d4; do
  (while :; do mkdir /data/$d; usleep 300; rmdir /data/$d; ln -s "$TARGET" /data/$d; usleep 300; rm /data/$d; done) &
done
exec httpd -f -p 8080 -h /data
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_watch_follows_no_link_out_of_a_volume() {
    let app = TestApp::spawn_with(|c| c.disk_check_seconds = 1).await;
    // Another sandbox holding 20 MB, well within its own allowance.
    let (victim, victim_token) = app.static_sandbox(json!({})).await;
    assert!(sh_in(&victim, "head -c 20000000 /dev/urandom > /data/mine").0);
    let target = volume_of(&victim, "/data");
    assert!(target.starts_with('/'), "{target}");

    // 16 MB allowed, links to the host's root and to the 20 MB of the other.
    let (linker, linker_token) = app
        .static_sandbox(json!({
            "limits": {"disk_mb": 16}, "upload": {"max_bytes": 1048576},
            "command": ["sh", "-c", SWAPPING], "env": {"TARGET": target},
        }))
        .await;
    assert!(sh_in(&linker, "test -L /data/root && test -L /data/other").0);

    // Rounds go by (one a second): neither is ended, the other's data is not counted.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(status(&app, &linker, &linker_token).await, "ready");
    assert_eq!(status(&app, &victim, &victim_token).await, "ready");
    let events = app.events(&linker, &linker_token).await;
    assert!(!events.iter().any(|e| e["kind"] == "failed"), "{events:?}");
    app.end_sandbox(&linker, &linker_token).await;
    app.end_sandbox(&victim, &victim_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_over_its_allowance_is_ended_while_another_cannot_be_measured() {
    let app = TestApp::spawn_with(|c| c.disk_check_seconds = 1).await;
    let allowance = json!({"limits": {"disk_mb": 16}, "upload": {"max_bytes": 1048576}});
    // One whose volume cannot be read: on the host, its directory is a file now.
    let (broken, broken_token) = app.static_sandbox(allowance.clone()).await;
    let volume = volume_of(&broken, "/data");
    let moved = format!("{volume}.moved");
    std::fs::rename(&volume, &moved).unwrap();
    std::fs::write(&volume, b"not a directory").unwrap();

    let (over, over_token) = app.static_sandbox(allowance).await;
    // The watch may end it while this still writes: the outcome does not matter.
    let _ = sh_in(&over, "head -c 40000000 /dev/urandom > /data/big");
    let done = app
        .wait_for(&over, &over_token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(done["status"], "failed");
    let events = app.events(&over, &over_token).await;
    let failed = events.iter().find(|e| e["kind"] == "failed").unwrap();
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("over the demo's limit of 16 MB"),
        "{detail}"
    );
    assert_no_objects(&over);
    // The one that could not be measured is left alone.
    assert_eq!(status(&app, &broken, &broken_token).await, "ready");

    std::fs::remove_file(&volume).unwrap();
    std::fs::rename(&moved, &volume).unwrap();
    app.end_sandbox(&broken, &broken_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_named_before_names_were_keyed_is_still_reached_and_removed() {
    let app = TestApp::spawn().await;
    let (id, token) = app
        .static_sandbox(json!({"trial": {"idle_seconds": 60}}))
        .await;
    // As a testdrive before this one named it.
    let renamed = Command::new("docker")
        .args(["rename", &container_of(&id), &format!("testdrive-{id}")])
        .output()
        .unwrap();
    assert!(renamed.status.success(), "{renamed:?}");
    // Served, and its state read, through the labels.
    let res = app.get(&format!("/s/{id}/a.csv"), Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Ending it removes it.
    app.end_sandbox(&id, &token).await;
}
