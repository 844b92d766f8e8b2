//! The HTTP server loop (in place of `axum::serve`, which cannot bound a connection): at
//! most `max_connections` connections are served at once, each must send a request's
//! headers within `header_read_timeout` (a connection kept alive and idle that long is
//! closed too), and a connection's buffer is capped, so a client cannot hold memory by
//! sending headers slowly, or without end. A connection over the cap is answered `503`
//! with `Retry-After` and closed. A connection upgraded to a WebSocket keeps its place
//! until it closes. Handlers see the peer as `ConnectInfo<SocketAddr>`; responses go out
//! without Nagle's delay. Stopping: no new connections, and those open finish their
//! request in flight.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A connection's read (and write) buffer at most: also the largest request head, as
/// nginx's default (`large_client_header_buffers 4 8k`) is about half of.
const MAX_BUF: usize = 64 * 1024;

/// Connections over the cap being answered `503` at once; beyond these they are just
/// closed.
const REFUSING: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct ServerSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then waits for the connections still
/// open (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let places = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                }
            }
        };
        // Without it a response streamed over a kept-alive connection (the proxy's) waits
        // ~40 ms on Nagle and the client's delayed ACK (docs/benchmarks.md).
        let _ = tcp.set_nodelay(true);
        match places.clone().try_acquire_owned() {
            Ok(place) => {
                let io = Counted { tcp, _place: place };
                connections.spawn(connection(
                    io,
                    peer,
                    router.clone(),
                    settings,
                    shutdown.clone(),
                ));
            }
            Err(_) => {
                metrics::counter!("testdrive_connections_refused_total").increment(1);
                if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                    connections.spawn(refuse(tcp, refusal));
                }
            }
        }
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection that do not stop the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(result),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "a connection ended with an error");
    }
}

/// The answer to a connection over the cap: a problem document, then the connection is
/// closed. What the client sent first is read (briefly) and dropped, since closing with
/// unread data resets the connection, which can discard the answer before the client reads
/// it. Quick, so that a flood of connections finds the refusers free.
async fn refuse(mut tcp: TcpStream, _refusal: OwnedSemaphorePermit) {
    const BODY: &str = "{\"type\":\"urn:testdrive:problem:unavailable\",\
        \"title\":\"Service Unavailable\",\"status\":503,\
        \"detail\":\"the service has as many connections open as it may; try again shortly\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 2\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut sink = [0u8; 4096];
    let first = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut sink)).await;
    let finish = async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        Ok::<_, io::Error>(())
    };
    if !matches!(first, Ok(Ok(0)) | Ok(Err(_)))
        && tokio::time::timeout(Duration::from_millis(500), finish)
            .await
            .is_ok_and(|written| written.is_ok())
    {
        // What else has arrived, without waiting for more.
        let mut drained = 0;
        while drained < 64 * 1024 {
            match tcp.try_read(&mut sink) {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// A connection that holds its place under the cap for as long as it is open: through an
/// upgrade too, since the upgraded stream is this same value.
struct Counted {
    tcp: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(
        settings: ServerSettings,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, settings, shutdown.clone()));
        (addr, shutdown, server)
    }

    async fn get_peer(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    async fn read_to_end(stream: &mut TcpStream) -> String {
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all).await;
        String::from_utf8_lossy(&all).to_string()
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_answered_503_and_places_come_back() {
        let settings = ServerSettings {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
        };
        let (addr, shutdown, server) = start(settings).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let answer = get_peer(&mut first).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The handler saw the client's own address.
        assert!(
            answer.ends_with(&first.local_addr().unwrap().to_string()),
            "{answer}"
        );
        let second = TcpStream::connect(addr).await.unwrap();
        // Two are open (one idle): a third is refused.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let refused = read_to_end(&mut third).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 2"), "{refused}");
        assert!(refused.contains("application/problem+json"), "{refused}");
        // A place freed is a place to take.
        drop(second);
        let mut fourth = loop {
            let mut candidate = TcpStream::connect(addr).await.unwrap();
            let answer = get_peer(&mut candidate).await;
            if answer.starts_with("HTTP/1.1 200") {
                break candidate;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        shutdown.cancel();
        // Kept-alive connections are closed on the way out.
        assert_eq!(read_to_end(&mut fourth).await, "");
        assert_eq!(read_to_end(&mut first).await, "");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn headers_must_arrive_in_time_and_not_without_end() {
        let settings = ServerSettings {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
        };
        let (addr, shutdown, server) = start(settings).await;
        // A request head that never ends is closed once the time is up.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nx-slow: 1\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), read_to_end(&mut slow))
            .await
            .expect("the connection was closed");
        assert!(!answer.contains("200 OK"), "{answer}");
        // A huge one is refused at the buffer's size.
        let mut huge = TcpStream::connect(addr).await.unwrap();
        let line = format!("GET /peer HTTP/1.1\r\nx-huge: {}\r\n", "h".repeat(MAX_BUF));
        let _ = huge.write_all(line.as_bytes()).await;
        let answer = read_to_end(&mut huge).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
