//! A small HTTP load generator: `clients` tasks, each with its own HTTP/1.1 connection kept
//! alive (hyper's client connection, no pool), sending GET one after the other for a fixed
//! time. A connection the server closes (busybox httpd answers `Connection: close`) is
//! reopened, and that connect counts in the request's latency.
//!
//! The tasks run on their own runtime (threads named `bench-load`), so the CPU time of the
//! client and of the service can be told apart (`common::thread_cpu`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::{Result, Stats, cpu_between, ms, stats, thread_cpu};

/// What to ask for.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Path and query.
    pub path: String,
    pub bearer: Option<String>,
}

/// What a load run saw.
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub connections: u64,
    pub seconds: f64,
    pub latencies_ms: Vec<f64>,
    /// CPU seconds by thread group during the run.
    pub cpu: BTreeMap<&'static str, f64>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1024.0 * 1024.0)
    }

    pub fn latency(&self) -> Option<Stats> {
        stats(&self.latencies_ms)
    }

    /// CPU microseconds per successful request spent by one thread group.
    pub fn cpu_us_per_request(&self, group: &str) -> f64 {
        self.cpu.get(group).copied().unwrap_or(0.0) * 1e6 / self.requests.max(1) as f64
    }
}

#[derive(Default)]
struct TaskResult {
    requests: u64,
    errors: u64,
    bytes: u64,
    connections: u64,
    latencies_ms: Vec<f64>,
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn client(target: Arc<Target>, end: Instant) -> TaskResult {
    let mut r = TaskResult::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let host = target.addr.to_string();
    while Instant::now() < end {
        let started = Instant::now();
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(target.addr).await {
                Ok(s) => {
                    sender = Some(s);
                    r.connections += 1;
                }
                Err(_) => {
                    r.errors += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let mut request = hyper::Request::get(target.path.as_str())
            .header(hyper::header::HOST, &host)
            .header(hyper::header::USER_AGENT, "testdrive-bench");
        if let Some(token) = &target.bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let Ok(request) = request.body(Empty::<Bytes>::new()) else {
            r.errors += 1;
            continue;
        };
        match s.send_request(request).await {
            Ok(response) => {
                let ok = response.status() == hyper::StatusCode::OK;
                let closing = response
                    .headers()
                    .get(hyper::header::CONNECTION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                let mut body = response.into_body();
                let mut bytes = 0u64;
                let mut failed = false;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => {
                            if let Some(data) = frame.data_ref() {
                                bytes += data.len() as u64;
                            }
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if ok && !failed {
                    r.requests += 1;
                    r.bytes += bytes;
                    r.latencies_ms.push(ms(started.elapsed()));
                } else {
                    r.errors += 1;
                }
                if closing || failed {
                    sender = None;
                }
            }
            Err(_) => {
                r.errors += 1;
                sender = None;
            }
        }
    }
    r
}

/// Runs `clients` clients against `target` for `duration` on the `load` runtime.
pub async fn run(
    load: &tokio::runtime::Handle,
    target: &Target,
    clients: usize,
    duration: Duration,
) -> Result<LoadResult> {
    let target = Arc::new(target.clone());
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let end = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| load.spawn(client(target.clone(), end)))
        .collect();
    let mut total = TaskResult::default();
    for task in tasks {
        let r = task.await?;
        total.requests += r.requests;
        total.errors += r.errors;
        total.bytes += r.bytes;
        total.connections += r.connections;
        total.latencies_ms.extend(r.latencies_ms);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_between(&cpu_before, &thread_cpu());
    Ok(LoadResult {
        requests: total.requests,
        errors: total.errors,
        bytes: total.bytes,
        connections: total.connections,
        seconds,
        latencies_ms: total.latencies_ms,
        cpu,
    })
}
