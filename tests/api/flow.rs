//! The core loop end to end, against the real Engine: a vendor registers the CSV Explorer
//! demo, a prospect uploads a file and opens their sandbox through the proxy (HTTP and
//! WebSocket), extends it and ends it, and nothing of it remains.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

fn csv_explorer_manifest() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-images/csv-explorer/demo.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prospect_tries_the_demo_on_their_own_data_and_it_is_destroyed() {
    let app = TestApp::spawn().await;
    let (_, vendor_key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&vendor_key, csv_explorer_manifest()).await;

    // The prospect finds the demo in the public catalog.
    let catalog: Value = app.get("/v1/catalog", None).await.json().await.unwrap();
    let entry = &catalog["items"][0];
    assert_eq!(entry["id"], demo.as_str());
    assert_eq!(entry["vendor"], "Acme Analytics");
    assert_eq!(
        entry["upload"]["extensions"],
        json!(["csv", "json", "jsonl", "ndjson"])
    );

    // …uploads a 1 MB CSV with the information sheet and waits for the sandbox.
    let csv = csv_of_size(1 << 20);
    let res = app
        .create_sandbox(
            &demo,
            &[("sales.csv", csv.clone())],
            &[
                ("email", "ana@example.com"),
                ("company", "Initech"),
                ("needs", "Does it handle our regions?"),
                ("seconds", "900"),
            ],
            Some(60),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/sandboxes/{id}"));
    assert_eq!(created["status"], "ready", "{created}");
    assert!(token.starts_with("tds_"));
    // The sandbox has an origin of its own.
    let origin = app.sandbox_url(&id, "/");
    assert_eq!(created["url"], origin.as_str());
    assert_eq!(created["files"][0]["name"], "sales.csv");
    assert_eq!(created["files"][0]["bytes"], csv.len());
    assert_eq!(created["files"][0]["sha256"], sha256_hex(&csv));
    assert!(
        created.get("prospect").is_none(),
        "the prospect's own view has no sheet"
    );
    let remaining = created["remaining_seconds"].as_u64().unwrap();
    assert!((890..=900).contains(&remaining), "{remaining}");

    // The spooled copy is gone as soon as the data is in the sandbox.
    assert!(app.spool_entries().is_empty(), "{:?}", app.spool_entries());

    // A browser sent to `/s/{id}/?token=` on testdrive's origin goes on to the sandbox's.
    let res = app
        .http
        .get(app.url(&format!("/s/{id}/?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()["location"],
        app.sandbox_url(&id, &format!("/?token={token}")).as_str()
    );
    assert!(res.headers().get("set-cookie").is_none());
    // There, ?token= is traded for a cookie of that host only.
    let res = app
        .http
        .get(app.sandbox_url(&id, &format!("/?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], origin.as_str());
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/;"), "{cookie}");
    assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");
    let cookie_pair = cookie.split(';').next().unwrap().to_string();

    // With the cookie the prospect sees the vendor's product showing their own data.
    let page = app
        .http
        .get(&origin)
        .header("cookie", &cookie_pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("sales.csv"), "the page names the file");
    assert!(html.contains("region"), "the page shows the columns");

    // The bytes came through unchanged: fetched back through the proxy (bearer this time).
    let raw = app
        .get(&format!("/s/{id}/files/sales.csv"), Some(&token))
        .await;
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&raw.bytes().await.unwrap()), sha256_hex(&csv));

    // WebSocket through the proxy, the demo's live search: a script with the bearer token
    // on testdrive's origin, and a browser with its cookie on the sandbox's.
    let mut by_script = app
        .url(&format!("/s/{id}/ws"))
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    by_script
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut by_browser = app
        .sandbox_url(&id, "/ws")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    by_browser
        .headers_mut()
        .insert("cookie", cookie_pair.parse().unwrap());
    for request in [by_script, by_browser] {
        // glibc does not resolve `*.localhost`: connect to loopback, name the host.
        let tcp = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("west")).await.unwrap();
        let reply = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => break text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["query"], "west");
        assert!(reply["matches"].as_u64().unwrap() > 0, "{reply}");
        ws.close(None).await.unwrap();
    }

    // The vendor sees the sandbox with the information sheet and the prospect's activity.
    let seen: Value = app
        .get(&format!("/v1/sandboxes/{id}"), Some(&vendor_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["prospect"]["company"], "Initech");
    assert_eq!(seen["prospect"]["email"], "ana@example.com");
    assert!(seen["usage"]["requests"].as_u64().unwrap() >= 3, "{seen}");
    let listed: Value = app
        .get("/v1/sandboxes?status=ready", Some(&vendor_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());

    // Extending moves the deadline, within the demo's maximum.
    let before = created["expires_at"].as_str().unwrap().to_string();
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{id}/extend"),
            Some(&token),
            &json!({"seconds": 600}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let extended: Value = res.json().await.unwrap();
    assert!(extended["expires_at"].as_str().unwrap() > before.as_str());
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{id}/extend"),
            Some(&token),
            &json!({"seconds": 7000}),
        )
        .await;
    problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Ending answers only once every object and copy is gone.
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ended: Value = res.json().await.unwrap();
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["end_reason"], "ended_by_prospect");
    assert!(ended["data_deleted_at"].is_string(), "{ended}");
    assert_eq!(ended["remaining_seconds"], 0);
    assert_no_objects(&id);
    assert!(app.spool_entries().is_empty());

    // Afterwards: the proxy says gone, extending is a conflict, the record stays readable.
    let res = app.get(&format!("/s/{id}/"), Some(&token)).await;
    problem(res, StatusCode::GONE).await;
    let res = app
        .post_json(
            &format!("/v1/sandboxes/{id}/extend"),
            Some(&token),
            &json!({"seconds": 60}),
        )
        .await;
    problem(res, StatusCode::CONFLICT).await;
    let again = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(&token))
        .await;
    assert_eq!(again.status(), StatusCode::OK, "ending twice is harmless");

    // The history tells the whole story, in order.
    let kinds: Vec<String> = app
        .events(&id, &token)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "data_placed",
            "started",
            "loaded",
            "ready",
            "extended",
            "ended_by_prospect",
            "container_removed",
            "volumes_removed",
            "files_removed",
            "data_deleted"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_reach_the_container_byte_for_byte() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"upload": {"extensions": [], "max_files": 3}}))
        .await;
    // Every byte value, a name with spaces and non-ASCII characters, a larger random file.
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut random = vec![0u8; 3 << 20];
    rand::fill(&mut random[..]);
    let files = [
        ("all bytes.bin", all_bytes),
        ("données été.csv", b"a;b\n\xc3\xa9;1\n".to_vec()),
        ("random.bin", random),
    ];
    let sandbox = app.ready_sandbox(&demo, &files).await;
    let id = sandbox["id"].as_str().unwrap();
    for (name, bytes) in &files {
        let out = exec_in(id, &["sha256sum", &format!("/data/{name}")]);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            printed.split_whitespace().next(),
            Some(sha256_hex(bytes).as_str())
        );
    }
    // The files are the demo user's alone (the image runs as 65534), in the one place they
    // exist: the sandbox's data directory.
    let out = exec_in(id, &["ls", "-ln", "/data"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listed
            .lines()
            .filter(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.len() > 3 && fields[0] == "-rw-------" && fields[2..4] == ["65534", "65534"]
            })
            .count(),
        files.len(),
        "{listed}"
    );

    let token = sandbox["token"].as_str().unwrap();
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_objects(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_is_labelled_and_the_container_is_hardened() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({
            "writable_paths": ["/scratch", "/var/cache"],
            "limits": {"memory_mb": 96, "cpus": 0.25, "pids": 64}
        }))
        .await;
    let sandbox = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = sandbox["id"].as_str().unwrap();

    // One container and a volume per writable path, all labelled (the data path is the
    // sandbox's own host directory, bound: tests/api/placement.rs).
    let objects = objects_of(id);
    let count = |kind: &str| objects.iter().filter(|o| o.starts_with(kind)).count();
    assert_eq!((count("container"), count("volume")), (1, 2), "{objects:?}");

    let out = std::process::Command::new("docker")
        .args(["inspect", &container_of(&id)])
        .output()
        .unwrap();
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = &inspected[0]["HostConfig"];
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Memory"], 96 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], 96 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 250_000_000);
    assert_eq!(host["PidsLimit"], 64);
    assert!(host["Tmpfs"]["/tmp"].as_str().unwrap().contains("size=64m"));
    assert_eq!(host["Privileged"], false);
    // Volumes, and one bind mount: the sandbox's own data directory, nothing else of the
    // host (never the Docker socket).
    let mounts = inspected[0]["Mounts"].as_array().unwrap();
    let own = app.data_dir.join("sandboxes").join(id).join("data");
    assert!(
        mounts.iter().all(|m| {
            let source = m["Source"].as_str().unwrap();
            (m["Type"] == "volume" || source == own.to_str().unwrap())
                && !source.contains("docker.sock")
        }),
        "{mounts:?}"
    );
    let labels = &inspected[0]["Config"]["Labels"];
    assert_eq!(labels["testdrive.sandbox"], id);
    assert_eq!(labels["testdrive.instance"], app.instance.as_str());

    // Writable where the manifest says (the image gives /scratch to the demo's user; the
    // Engine copies that owner into the volume), read-only elsewhere.
    let write = |path: &str| exec_in(id, &["sh", "-c", &format!("echo x > {path}/probe")]);
    assert!(write("/scratch").status.success());
    assert!(write("/data").status.success());
    assert!(write("/tmp").status.success());
    assert!(
        !write("/bin").status.success(),
        "the root filesystem is read-only"
    );

    let token = sandbox["token"].as_str().unwrap();
    app.delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_no_objects(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_ends_by_itself_at_its_deadline() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"trial": {"seconds": 6, "max_seconds": 10}}))
        .await;
    let sandbox = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())])
        .await;
    let id = sandbox["id"].as_str().unwrap();
    let token = sandbox["token"].as_str().unwrap();
    let ended = app
        .wait_for(id, token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["end_reason"], "expired");
    assert_no_objects(id);

    // How long after its deadline the objects were gone (reported, not asserted: timing).
    let ms = |field: &str| {
        time::OffsetDateTime::parse(
            ended[field].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let lag = ms("data_deleted_at") - ms("expires_at");
    eprintln!(
        "expiry: objects gone {} ms after the deadline",
        lag.whole_milliseconds()
    );
    assert!(lag.is_positive(), "nothing may end before its deadline");

    let kinds: Vec<String> = app
        .events(id, token)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds[kinds.len() - 5..],
        [
            "expired",
            "container_removed",
            "volumes_removed",
            "files_removed",
            "data_deleted"
        ]
    );
    let res = app.get(&format!("/s/{id}/"), Some(token)).await;
    problem(res, StatusCode::GONE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_load_command_fails_the_sandbox_and_removes_everything() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({"load_command": ["sh", "-c", "echo 'bad rows in a.csv' >&2; exit 3"]}))
        .await;
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x\n1\n".to_vec())], &[], Some(60))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["end_reason"], "failed");
    let done = app
        .wait_for(id, token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_eq!(done["status"], "failed");
    assert_no_objects(id);
    let events = app.events(id, token).await;
    let failed = events.iter().find(|e| e["kind"] == "failed").unwrap();
    let detail = failed["detail"].as_str().unwrap();
    assert!(detail.contains("exited with code 3"), "{detail}");
    // What it printed is the prospect's to read, not the history's.
    assert!(!detail.contains("bad rows in a.csv"), "{detail}");
    assert!(
        done["load_output"]
            .as_str()
            .is_some_and(|o| o.contains("bad rows in a.csv")),
        "{done}"
    );
    let res = app.get(&format!("/s/{id}/"), Some(token)).await;
    problem(res, StatusCode::GONE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_that_never_answers_fails_at_its_ready_timeout() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({
            "command": ["sleep", "3600"],
            "ready": {"timeout_seconds": 2}
        }))
        .await;
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x\n".to_vec())], &[], Some(60))
        .await;
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    app.wait_for(id, token, |s| s["data_deleted_at"].is_string())
        .await;
    assert_no_objects(id);
    let events = app.events(id, token).await;
    let detail = events.iter().find(|e| e["kind"] == "failed").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("did not answer"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_demo_fails_without_waiting_for_the_timeout() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({
            "command": ["sh", "-c", "exit 7"],
            "ready": {"timeout_seconds": 60}
        }))
        .await;
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x\n".to_vec())], &[], Some(50))
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    app.wait_for(id, token, |s| s["data_deleted_at"].is_string())
        .await;
    let events = app.events(id, token).await;
    let detail = events.iter().find(|e| e["kind"] == "failed").unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("exit code 7"), "{detail}");
    assert_no_objects(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_503_while_provisioning_then_serves() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({
            "command": ["sh", "-c", "sleep 2; exec httpd -f -p 8080 -h /data"]
        }))
        .await;
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x,y\n1,2\n".to_vec())], &[], None)
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "provisioning");
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    let res = app.get(&format!("/s/{id}/a.csv"), Some(token)).await;
    assert_eq!(res.headers()["retry-after"], "1");
    problem(res, StatusCode::SERVICE_UNAVAILABLE).await;

    app.wait_for(id, token, |s| s["status"] == "ready").await;
    let res = app.get(&format!("/s/{id}/a.csv"), Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "x,y\n1,2\n");
    app.delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_no_objects(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_sandbox_while_it_provisions_leaves_nothing() {
    let app = TestApp::spawn().await;
    let (_, demo) = app
        .static_demo(json!({
            "command": ["sh", "-c", "sleep 30; exec httpd -f -p 8080 -h /data"]
        }))
        .await;
    let res = app
        .create_sandbox(&demo, &[("a.csv", b"x\n".to_vec())], &[], None)
        .await;
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let token = body["token"].as_str().unwrap();
    let res = app
        .delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let ended: Value = res.json().await.unwrap();
    assert_eq!(ended["status"], "ended");
    assert!(ended["data_deleted_at"].is_string());
    assert_no_objects(id);
    // And nothing appears later from the interrupted provisioning.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_no_objects(id);
    assert!(app.spool_entries().is_empty());
}

fn container_ip(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &container_of(&id),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_that_stops_answering_is_502() {
    let app = TestApp::spawn().await;
    // httpd in the background: killing it leaves the container running, deaf.
    let (_, demo) = app
        .static_demo(json!({"command": ["sh", "-c", "httpd -p 8080 -h /data; exec sleep 3600"]}))
        .await;
    let sandbox = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = sandbox["id"].as_str().unwrap();
    let token = sandbox["token"].as_str().unwrap();
    assert!(exec_in(id, &["killall", "httpd"]).status.success());
    let res = app.get(&format!("/s/{id}/a.csv"), Some(token)).await;
    problem(res, StatusCode::BAD_GATEWAY).await;
    app.delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_no_objects(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sandboxs_address_goes_to_nobody_else() {
    let app = TestApp::spawn_with(|c| c.reconcile_seconds = 3600).await;
    let (_, demo) = app.static_demo(json!({})).await;
    let a = app
        .ready_sandbox(&demo, &[("a.csv", b"data of a\n".to_vec())])
        .await;
    let id = a["id"].as_str().unwrap();
    let token = a["token"].as_str().unwrap();
    let a_ip = container_ip(id);
    let killed = std::process::Command::new("docker")
        .args(["kill", &container_of(&id)])
        .output()
        .unwrap();
    assert!(killed.status.success());

    // The Engine would give the dead container's address to the next container; testdrive
    // holds it for A until A's objects are gone, so B gets another and A's prospect never
    // reaches B's data.
    let b = app
        .ready_sandbox(&demo, &[("a.csv", b"data of b\n".to_vec())])
        .await;
    let b_id = b["id"].as_str().unwrap();
    assert_ne!(container_ip(b_id), a_ip);
    let res = app.get(&format!("/s/{id}/a.csv"), Some(token)).await;
    problem(res, StatusCode::BAD_GATEWAY).await;

    for sandbox in [&a, &b] {
        let id = sandbox["id"].as_str().unwrap();
        app.delete(&format!("/v1/sandboxes/{id}"), sandbox["token"].as_str())
            .await;
        assert_no_objects(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_cannot_reach_each_other() {
    let app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let a = app
        .ready_sandbox(&demo, &[("a.csv", b"secret of a\n".to_vec())])
        .await;
    let b = app
        .ready_sandbox(&demo, &[("b.csv", b"secret of b\n".to_vec())])
        .await;
    let a_id = a["id"].as_str().unwrap();
    let b_id = b["id"].as_str().unwrap();
    let b_ip = container_ip(b_id);
    assert!(!b_ip.is_empty());
    // B serves its file to the host (testdrive reaches it)…
    let fetched = app
        .get(&format!("/s/{b_id}/b.csv"), b["token"].as_str())
        .await;
    assert_eq!(fetched.text().await.unwrap(), "secret of b\n");
    // …but not to A.
    let out = exec_in(
        a_id,
        &[
            "sh",
            "-c",
            &format!("printf 'GET /b.csv HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {b_ip} 8080"),
        ],
    );
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(!seen.contains("secret of b"), "A read B's data: {seen}");
    assert!(!out.status.success(), "A connected to B: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_unknown_or_ended_sandboxes_are_removed_at_start() {
    let mut app = TestApp::spawn().await;
    let (_, demo) = app.static_demo(json!({})).await;
    let sandbox = app
        .ready_sandbox(&demo, &[("a.csv", b"x\n".to_vec())])
        .await;
    let id = sandbox["id"].as_str().unwrap().to_string();
    let orphan = uuid::Uuid::now_v7().to_string();
    let instance = app.instance.clone();
    app.restart(|_| {
        // While the service is down, an object appears for a sandbox it never made.
        let made = std::process::Command::new("docker")
            .args(["volume", "create", "--label"])
            .arg(format!("testdrive.sandbox={orphan}"))
            .arg("--label")
            .arg(format!("testdrive.instance={instance}"))
            .output()
            .unwrap();
        assert!(made.status.success());
    })
    .await;
    // The reconciler removes the orphan and leaves the live sandbox alone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !objects_of(&orphan).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the orphan stays");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token = sandbox["token"].as_str().unwrap();
    let res = app.get(&format!("/s/{id}/a.csv"), Some(token)).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the live sandbox survived the restart"
    );
    app.delete(&format!("/v1/sandboxes/{id}"), Some(token))
        .await;
    assert_no_objects(&id);
}
