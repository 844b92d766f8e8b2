//! The readiness probe: a sandbox is ready when its port accepts a connection and
//! `GET ready.http_path` answers below 500. Attempts start fast (most demos are up within
//! tens of milliseconds) and back off; a container that exits stops the wait at once.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::engine::{ContainerState, Engine};

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often to ask the Engine whether the container still runs.
const STATE_EVERY: Duration = Duration::from_millis(500);

/// Why a sandbox never became ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the demo did not answer GET {path} on port {port} within {seconds} s{last}")]
    Timeout {
        path: String,
        port: u16,
        seconds: u32,
        last: String,
    },
    #[error("the demo's container stopped (exit code {code}{oom})")]
    Exited { code: i64, oom: &'static str },
}

impl NotReady {
    pub fn exited(state: ContainerState) -> NotReady {
        NotReady::Exited {
            code: state.exit_code.unwrap_or(-1),
            oom: if state.oom_killed {
                ", out of memory"
            } else {
                ""
            },
        }
    }
}

/// One attempt: the status code of `GET path`, or why there was none.
async fn attempt(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = tokio::time::timeout(ATTEMPT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "testdrive-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    Ok(response.status().as_u16())
}

pub async fn wait_ready(
    engine: &Engine,
    container: &str,
    addr: SocketAddr,
    path: &str,
    timeout_seconds: u32,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_seconds));
    let mut pause = FIRST_PAUSE;
    let mut last_state_check = Instant::now();
    loop {
        let last = match attempt(addr, path).await {
            Ok(status) if status < 500 => return Ok(()),
            Ok(status) => format!("HTTP {status}"),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(NotReady::Timeout {
                path: path.to_string(),
                port: addr.port(),
                seconds: timeout_seconds,
                last: format!(" (last: {last})"),
            });
        }
        if last_state_check.elapsed() >= STATE_EVERY {
            last_state_check = Instant::now();
            if let Ok(state) = engine.state(container).await
                && !state.running
            {
                return Err(NotReady::exited(state));
            }
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
