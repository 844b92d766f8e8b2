//! A sandbox reaches nothing but itself, and its container is hardened as the contract says —
//! each claim tried from inside a real sandbox, not only read from `docker inspect`.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Tries a TCP connection from inside the sandbox; true if it was accepted.
fn connects(id: &str, host: &str, port: u16) -> bool {
    // busybox nc: -w bounds the connect; the echo is what reaches the peer.
    sh_in(id, &format!("echo hello | nc -w 2 {host} {port}")).0
}

/// The host's address on the app's sandbox network (the bridge's gateway).
fn gateway(app: &TestApp) -> String {
    inspect_network(app, "{{range .IPAM.Config}}{{.Gateway}}{{end}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_cannot_open_connections_to_the_host() {
    // testdrive itself listening on every address: the worst case the issue names.
    let app = TestApp::spawn_with(|c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    let service_port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();
    // A host service the test runs, also on every address.
    let host_service = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    host_service.set_nonblocking(true).unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let gateway = gateway(&app);
    assert!(!gateway.is_empty());

    // Both answer on the gateway address from the host itself: the address is live, so a
    // refusal from inside the sandbox is the firewall's doing.
    let from_host = reqwest::get(format!("http://{gateway}:{service_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(from_host.status(), StatusCode::OK);
    assert!(std::net::TcpStream::connect((gateway.as_str(), host_port)).is_ok());
    let _ = host_service.accept();

    let (id, token) = app.static_sandbox(json!({})).await;
    assert!(
        !connects(&id, &gateway, host_port),
        "reached the host's service"
    );
    assert!(
        !connects(&id, &gateway, service_port),
        "reached testdrive's API"
    );
    assert!(
        host_service.accept().is_err(),
        "the host service saw a connection from the sandbox"
    );
    // …while testdrive still reaches the sandbox.
    let res = app.get(&format!("/s/{id}/a.csv"), Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_has_no_route_out() {
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({})).await;
    for (host, port) in [("1.1.1.1", 80), ("8.8.8.8", 53), ("192.0.2.1", 443)] {
        assert!(!connects(&id, host, port), "reached {host}:{port}");
    }
    let (_, routes) = sh_in(&id, "ip route 2>/dev/null || route -n");
    assert!(!routes.contains("eth1"), "a second interface: {routes}");
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_as_root_a_sandbox_has_no_capabilities_and_cannot_gain_privileges() {
    let app = TestApp::spawn().await;
    // The demo asks to run as root: the capabilities are dropped all the same.
    let (id, token) = app.static_sandbox(json!({"user": "0:0"})).await;
    let (_, status) = sh_in(&id, "cat /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("Uid:").split_whitespace().next(), Some("0"));
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // What the capabilities would allow: owning others' files, binding a low port, raw
    // sockets, mounting.
    let (chowned, _) = sh_in(&id, "touch /tmp/f && chown 1234 /tmp/f");
    assert!(!chowned, "chown worked without CAP_CHOWN");
    let (bound, _) = sh_in(&id, "timeout 1 nc -l -p 80");
    assert!(!bound, "bound port 80 without CAP_NET_BIND_SERVICE");
    let (mounted, _) = sh_in(&id, "mount -t tmpfs none /tmp");
    assert!(!mounted, "mounted without CAP_SYS_ADMIN");
    let (pinged, _) = sh_in(&id, "ping -c 1 -W 1 127.0.0.1");
    assert!(!pinged, "raw socket without CAP_NET_RAW");
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_is_read_only_and_the_engine_socket_absent() {
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({})).await;
    for path in ["/probe", "/bin/probe", "/etc/probe"] {
        let (wrote, out) = sh_in(&id, &format!("echo x > {path}"));
        assert!(!wrote, "wrote {path}");
        assert!(
            out.contains("Read-only") || out.contains("Permission denied"),
            "{out}"
        );
    }
    let (tmp, _) = sh_in(&id, "echo x > /tmp/probe && cat /tmp/probe");
    assert!(tmp, "/tmp is writable");
    let (_, mounts) = sh_in(&id, "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" / ") && l.contains("ro,")),
        "{mounts}"
    );
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    for socket in ["/var/run/docker.sock", "/run/docker.sock", "/docker.sock"] {
        assert!(
            !sh_in(&id, &format!("test -e {socket}")).0,
            "{socket} exists"
        );
    }
    app.end_sandbox(&id, &token).await;
}

/// The number of processes in the sandbox's pids cgroup, read on the host (at the limit,
/// nothing more can start inside the sandbox to read it there).
fn pids_in(id: &str) -> u64 {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", &container_of(&id)])
        .output()
        .unwrap();
    let container = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let candidates = [
        format!("/sys/fs/cgroup/pids/docker/{container}/pids.current"),
        format!("/sys/fs/cgroup/system.slice/docker-{container}.scope/pids.current"),
    ];
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pids cgroup for {container} among {candidates:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stays_within_the_pids_limit_and_the_service_stays_healthy() {
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({"limits": {"pids": 32}})).await;
    // Detached: it never ends by itself.
    let bomb = std::process::Command::new("docker")
        .args(["exec", "-d", &container_of(&id)])
        // Forks sleepers for ever; at the limit each fork fails and it tries again.
        .args(["sh", "-c", "while :; do sleep 60 & done"])
        .output()
        .unwrap();
    assert!(bomb.status.success());
    // Sample until the bomb has clearly gone off (an exec can take a while to start on a
    // loaded machine), then a little longer; the limit must hold at every sample.
    let mut most = 0;
    let mut samples_after = 0;
    for _ in 0..400 {
        let now = pids_in(&id);
        assert!(now <= 32, "{now} processes under a limit of 32");
        most = most.max(now);
        if most >= 16 {
            samples_after += 1;
            if samples_after == 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most >= 16, "the bomb did not go off ({most} processes)");
    // The service answers, and ends the sandbox as usual.
    let res = app.get("/healthz", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.get(&format!("/v1/sandboxes/{id}"), Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_at_the_limit_and_the_sandbox_keeps_serving() {
    let app = TestApp::spawn().await;
    let (id, token) = app
        .static_sandbox(json!({"limits": {"memory_mb": 64}}))
        .await;
    // `sort` holds its whole input: one 300 MB line against a 64 MB limit.
    let (survived, out) = sh_in(
        &id,
        "head -c 300000000 /dev/zero | tr '\\0' a | sort >/dev/null",
    );
    assert!(!survived, "the hog finished: {out}");
    let (_, peak) = sh_in(
        &id,
        "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null \
         || cat /sys/fs/cgroup/memory.peak",
    );
    let peak: u64 = peak.trim().parse().unwrap();
    assert!(peak <= 64 << 20, "peak memory {peak} over the 64 MB limit");
    let (_, events) = sh_in(
        &id,
        "cat /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null \
         || cat /sys/fs/cgroup/memory.events",
    );
    let kills: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "no OOM kill recorded: {events}");
    // Only the hog died: the demo still serves, the service is healthy.
    let res = app.get(&format!("/s/{id}/a.csv"), Some(&token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.get("/healthz", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_asking_for_a_user_runs_as_that_user() {
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({"user": "4242:4242"})).await;
    let (_, ids) = sh_in(&id, "id -u; id -g");
    assert_eq!(ids.split_whitespace().collect::<Vec<_>>(), ["4242", "4242"]);
    // The prospect's files are readable to any user.
    let (read, _) = sh_in(&id, "cat /data/a.csv");
    assert!(read);
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_address_is_not_the_hosts() {
    // The proxy connects to the sandbox's own address on the sandbox network, never to a
    // published port on the host.
    let app = TestApp::spawn().await;
    let (id, token) = app.static_sandbox(json!({})).await;
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{json .NetworkSettings.Ports}} {{.HostConfig.NetworkMode}}",
            &container_of(&id),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("HostPort"), "a published port: {text}");
    assert!(text.trim().ends_with(&app.network), "{text}");
    let record: Value = app
        .get(&format!("/v1/sandboxes/{id}"), Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        record.get("container_addr").is_none(),
        "internal address leaked"
    );
    app.end_sandbox(&id, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_fills_its_disk_allowance_is_ended() {
    let app = TestApp::spawn_with(|c| c.disk_check_seconds = 1).await;
    let (id, token) = app
        .static_sandbox(json!({"limits": {"disk_mb": 16}, "upload": {"max_bytes": 1048576}}))
        .await;
    // Under the allowance: nothing happens.
    assert!(sh_in(&id, "head -c 4000000 /dev/urandom > /data/small").0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record: Value = app
        .get(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["status"], "ready", "{record}");
    // Over it (a sparse file does not count: only what is really written does).
    assert!(sh_in(&id, "truncate -s 10G /data/sparse 2>/dev/null; true").0);
    // The watch may end the sandbox while this still writes: its outcome does not matter.
    let _ = sh_in(&id, "head -c 40000000 /dev/urandom > /data/big");
    let done = app
        .wait_for(&id, &token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(done["status"], "failed");
    let events = app.events(&id, &token).await;
    let failed = events.iter().find(|e| e["kind"] == "failed").unwrap();
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("over the demo's limit of 16 MB"),
        "{detail}"
    );
    assert_no_objects(&id);
}
