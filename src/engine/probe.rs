//! One readiness attempt against a demo: connect to its address and `GET` the path.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The status code of `GET path`, or why there was none.
pub async fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
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
