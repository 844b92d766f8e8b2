//! The testdrive side: the service running in this process, and its HTTP API as a prospect,
//! a vendor and an operator call it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::{Result, docker, ms, rfc3339_ms, unix_ms};

/// The demo image every part uses: busybox httpd serving the files of /data on 8080.
pub const IMAGE: &str = "testdrive/static-files:1";

/// A small CSV: sandboxes whose upload should cost next to nothing.
pub const TINY_CSV: &[u8] = b"id,amount\n1,2\n";

pub struct Service {
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub admin: String,
    pub vendor_key: String,
}

/// A sandbox as its prospect holds it.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub token: String,
}

/// What registering a demo answered.
pub enum Registered {
    Demo(String),
    /// Refused (e.g. 422 for a field the service does not support yet): status and body.
    Refused(StatusCode, String),
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn json(res: reqwest::Response, want: StatusCode, what: &str) -> Result<Value> {
        let status = res.status();
        let body = res.text().await?;
        if status != want {
            return Err(format!("{what}: HTTP {status}: {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Creates a vendor as the operator, and gives it `IMAGE`; its API key.
    pub async fn new_vendor(
        http: &reqwest::Client,
        addr: SocketAddr,
        admin: &str,
    ) -> Result<String> {
        let res = http
            .post(format!("http://{addr}/v1/vendors"))
            .bearer_auth(admin)
            .json(&json!({"name": "Bench Vendor"}))
            .send()
            .await?;
        let body = Self::json(res, StatusCode::CREATED, "creating the vendor").await?;
        let id = body["id"].as_str().ok_or("the vendor has no id")?;
        let res = http
            .post(format!("http://{addr}/v1/vendors/{id}/images"))
            .bearer_auth(admin)
            .json(&json!({"image": IMAGE}))
            .send()
            .await?;
        Self::json(res, StatusCode::CREATED, "giving the vendor its image").await?;
        Ok(body["api_key"]
            .as_str()
            .ok_or("the vendor has no api_key")?
            .to_string())
    }

    /// Registers a demo of `IMAGE` (256 MB, 0.5 CPU, 128 pids, CSV uploads, a 30-minute
    /// trial), with `extra` top-level manifest fields replacing or adding to those.
    pub async fn register_demo(&self, slug: &str, extra: Value) -> Result<Registered> {
        let mut manifest = json!({
            "slug": slug, "title": "Static files", "image": IMAGE,
            "port": 8080, "data_path": "/data",
            "ready": {"http_path": "/", "timeout_seconds": 20},
            "limits": {"memory_mb": 256, "cpus": 0.5, "pids": 128},
            "upload": {"extensions": ["csv"]},
            "trial": {"seconds": 1800, "max_seconds": 7200},
        });
        if let (Some(base), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
            base.extend(extra);
        }
        let res = self
            .http
            .post(self.url("/v1/demos"))
            .bearer_auth(&self.vendor_key)
            .json(&manifest)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if status != StatusCode::CREATED {
            return Ok(Registered::Refused(status, text));
        }
        let body: Value = serde_json::from_str(&text)?;
        Ok(Registered::Demo(
            body["id"].as_str().ok_or("the demo has no id")?.to_string(),
        ))
    }

    /// Registers a demo that must be accepted.
    pub async fn demo(&self, slug: &str, extra: Value) -> Result<String> {
        match self.register_demo(slug, extra).await? {
            Registered::Demo(id) => Ok(id),
            Registered::Refused(status, body) => {
                Err(format!("registering the demo {slug}: HTTP {status}: {body}").into())
            }
        }
    }

    /// `PATCH /v1/demos/{id}` with a merge patch, as the vendor.
    pub async fn patch_demo(&self, id: &str, patch: Value) -> Result<Value> {
        let res = self
            .http
            .patch(self.url(&format!("/v1/demos/{id}")))
            .bearer_auth(&self.vendor_key)
            .json(&patch)
            .send()
            .await?;
        Self::json(res, StatusCode::OK, "changing a demo").await
    }

    /// The trial form: the demo, then one file.
    pub fn form(demo: &str, file_name: &str, bytes: &[u8]) -> Result<Form> {
        Ok(Form::new().text("demo", demo.to_string()).part(
            "file",
            Part::bytes(bytes.to_vec())
                .file_name(file_name.to_string())
                .mime_str("text/csv")?,
        ))
    }

    /// `POST /v1/sandboxes?wait=60`; the creation body, which must say `ready`.
    pub async fn create_ready(&self, form: Form) -> Result<Value> {
        let res = self
            .http
            .post(self.url("/v1/sandboxes?wait=60"))
            .multipart(form)
            .send()
            .await?;
        let body = Self::json(res, StatusCode::CREATED, "creating a sandbox").await?;
        if body["status"] != "ready" {
            return Err(format!("the sandbox is not ready: {body}").into());
        }
        Ok(body)
    }

    /// A ready sandbox of `demo` holding one file.
    pub async fn sandbox(&self, demo: &str, file_name: &str, bytes: &[u8]) -> Result<Sandbox> {
        let body = self
            .create_ready(Self::form(demo, file_name, bytes)?)
            .await?;
        sandbox_of(&body)
    }

    pub async fn get(&self, path: &str, token: &str) -> Result<Value> {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await?;
        Self::json(res, StatusCode::OK, path).await
    }

    /// `DELETE /v1/sandboxes/{id}`, which answers once every object is gone.
    pub async fn delete(&self, sandbox: &Sandbox) -> Result<Value> {
        let res = self
            .http
            .delete(self.url(&format!("/v1/sandboxes/{}", sandbox.id)))
            .bearer_auth(&sandbox.token)
            .send()
            .await?;
        let body = Self::json(res, StatusCode::OK, "ending a sandbox").await?;
        if !body["data_deleted_at"].is_string() {
            return Err(format!("DELETE answered before the data was gone: {body}").into());
        }
        Ok(body)
    }

    /// Ends many sandboxes, `parallel` at a time (untimed clean-up between measurements).
    pub async fn delete_all(&self, sandboxes: &[Sandbox], parallel: usize) -> Result<()> {
        for chunk in sandboxes.chunks(parallel.max(1)) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|s| self.delete(s))).await;
            for r in results {
                r?;
            }
        }
        Ok(())
    }

    /// The address of a sandbox's container on the sandbox network (what the proxy calls).
    pub async fn container_ip(&self, sandbox: &Sandbox, network: &str) -> Result<String> {
        // The container's name is a keyed hash of the id: find it by its label.
        let container = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=testdrive.sandbox={}", sandbox.id),
        ])
        .await?;
        if container.is_empty() {
            return Err(format!("no container for sandbox {}", sandbox.id).into());
        }
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "--format", &format, &container]).await
    }

    /// The sandbox's lifecycle history: (kind, Unix ms, detail), oldest first.
    pub async fn events(&self, sandbox: &Sandbox) -> Result<Vec<(String, f64, String)>> {
        let body = self
            .get(
                &format!("/v1/sandboxes/{}/events", sandbox.id),
                &sandbox.token,
            )
            .await?;
        body["items"]
            .as_array()
            .ok_or("no event items")?
            .iter()
            .map(|e| {
                Ok((
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    rfc3339_ms(&e["at"])?,
                    e["detail"].as_str().unwrap_or_default().to_string(),
                ))
            })
            .collect()
    }
}

pub fn sandbox_of(body: &Value) -> Result<Sandbox> {
    Ok(Sandbox {
        id: body["id"].as_str().ok_or("no sandbox id")?.to_string(),
        token: body["token"]
            .as_str()
            .ok_or("no sandbox token")?
            .to_string(),
    })
}

/// One timed creation through the API, then a timed `DELETE`.
pub struct ServiceRun {
    /// `POST …?wait=60` sent → `ready` answer received, ms.
    pub total: f64,
    /// `DELETE` sent → answered, ms.
    pub delete: f64,
    /// (label, ms) for each stretch between recorded instants, in order.
    pub stretches: Vec<(String, f64)>,
    /// The service's own "ready in N ms" (from the provisioning task's start).
    pub internal_ready: Option<f64>,
    /// Whether the `created` event says the sandbox was taken from the warm pool.
    pub from_pool: bool,
}

/// Creates a sandbox of `demo` with `csv` (timed), reads its event log (untimed), ends it
/// (timed separately).
pub async fn timed_sandbox(svc: &Service, demo: &str, csv: &[u8]) -> Result<ServiceRun> {
    let form = Service::form(demo, "sales.csv", csv)?;
    let sent_wall = SystemTime::now();
    let sent = Instant::now();
    let created = svc.create_ready(form).await?;
    let total = sent.elapsed();
    let answered_wall = unix_ms(sent_wall) + ms(total);
    let sandbox = sandbox_of(&created)?;
    // Outside the timed section: the event log.
    let log = event_stretches(svc, &sandbox, unix_ms(sent_wall), answered_wall).await?;

    let started = Instant::now();
    svc.delete(&sandbox).await?;
    let delete = started.elapsed();
    Ok(ServiceRun {
        total: ms(total),
        delete: ms(delete),
        stretches: log.stretches,
        internal_ready: log.internal_ready,
        from_pool: log.from_pool,
    })
}

/// What a sandbox's event log says about its creation.
pub struct EventLog {
    /// (label, ms) for each stretch between recorded instants, in order: from the request
    /// sent (the bench's clock) through each event kind's first instant up to `ready`, to
    /// the answer received.
    pub stretches: Vec<(String, f64)>,
    /// The service's own "ready in N ms" (from the provisioning task's start).
    pub internal_ready: Option<f64>,
    /// Whether the `created` event says the sandbox was taken from the warm pool.
    pub from_pool: bool,
}

/// Reads the event log of a sandbox created by a request sent at `sent` and answered at
/// `answered` (Unix ms).
pub async fn event_stretches(
    svc: &Service,
    sandbox: &Sandbox,
    sent: f64,
    answered: f64,
) -> Result<EventLog> {
    let mut stretches = Vec::new();
    let mut internal_ready = None;
    let mut from_pool = false;
    let mut previous = ("request sent".to_string(), sent);
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for (kind, at, detail) in svc.events(sandbox).await? {
        if seen.insert(kind.clone(), ()).is_some() {
            continue;
        }
        stretches.push((format!("{} → {kind}", previous.0), at - previous.1));
        previous = (kind.clone(), at);
        if kind == "created" {
            from_pool = detail.contains("warm pool");
        }
        if kind == "ready" {
            internal_ready = detail
                .strip_prefix("in ")
                .and_then(|d| d.strip_suffix(" ms"))
                .and_then(|d| d.parse::<f64>().ok());
            break;
        }
    }
    stretches.push((
        format!("{} → response received", previous.0),
        answered - previous.1,
    ));
    Ok(EventLog {
        stretches,
        internal_ready,
        from_pool,
    })
}

/// Polls `GET /v1/sandboxes/{id}` until `data_deleted_at` is set; the final record.
pub async fn wait_deleted(svc: &Service, sandbox: &Sandbox, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let body = svc
            .get(&format!("/v1/sandboxes/{}", sandbox.id), &sandbox.token)
            .await?;
        if body["data_deleted_at"].is_string() {
            return Ok(body);
        }
        if Instant::now() >= deadline {
            return Err(format!("the sandbox's data was not deleted in time: {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
