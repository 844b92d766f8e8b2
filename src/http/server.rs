//! The HTTP server loop (in place of `axum::serve`, which cannot bound a connection): at
//! most `max_connections` connections are served at once, each must send a request's
//! headers within `header_read_timeout` (a connection kept alive and idle that long is
//! closed too), and a connection's buffer is capped, so a client cannot hold memory by
//! sending headers slowly, or without end. A connection over the cap is answered `503`
//! with `Retry-After` and closed, and so is one over the places one client may hold
//! (`max_connections_per_client`, a trusted proxy aside), so that one client cannot take
//! them all. A request body that sends nothing for `body_idle_timeout` fails, on every
//! route. A connection upgraded to a WebSocket keeps its place until it closes. Handlers see the peer as `ConnectInfo<SocketAddr>`; responses go out
//! without Nagle's delay. Stopping: no new connections, and those open finish their
//! request in flight.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
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

use super::client::{ClientKey, TrustedProxies};

/// A connection's read (and write) buffer at most: also the largest request head, as
/// nginx's default (`large_client_header_buffers 4 8k`) is about half of.
const MAX_BUF: usize = 64 * 1024;

/// Connections over the cap being answered `503` at once; beyond these they are just
/// closed.
const REFUSING: usize = 64;

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub max_connections: usize,
    /// Connections one client (an IPv4 address or IPv6 /64) may hold; trusted proxies,
    /// which speak for many clients, are only held to `max_connections`.
    pub max_connections_per_client: usize,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub header_read_timeout: Duration,
    /// How long a request body may send nothing before the request fails.
    pub body_idle_timeout: Duration,
}

/// Connections open per client.
#[derive(Default)]
struct PerClient(Mutex<HashMap<ClientKey, usize>>);

impl PerClient {
    fn take(self: &Arc<Self>, key: ClientKey, most: usize) -> Option<ClientPlace> {
        let mut open = self.0.lock().expect("connection counts");
        let count = open.entry(key).or_insert(0);
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(ClientPlace {
            counts: self.clone(),
            key,
        })
    }
}

/// One of a client's places, given back when the connection closes.
struct ClientPlace {
    counts: Arc<PerClient>,
    key: ClientKey,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        if let Ok(mut open) = self.counts.0.lock()
            && let Some(count) = open.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
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
    let per_client = Arc::new(PerClient::default());
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
        let client_place = if settings.trusted_proxies.trusts(peer.ip()) {
            Some(None)
        } else {
            per_client
                .take(
                    ClientKey::of(peer.ip()),
                    settings.max_connections_per_client.max(1),
                )
                .map(Some)
        };
        match (client_place, places.clone().try_acquire_owned()) {
            (Some(client_place), Ok(place)) => {
                let io = Counted {
                    tcp,
                    _place: place,
                    _client_place: client_place,
                };
                connections.spawn(connection(
                    io,
                    peer,
                    router.clone(),
                    settings.clone(),
                    shutdown.clone(),
                ));
            }
            _ => {
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
    let idle = settings.body_idle_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(|body| Body::new(IdleBody::new(body, idle)));
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
    _client_place: Option<ClientPlace>,
}

/// A request body that fails when its client sends nothing for `idle`: a handler waiting
/// on a body (a form, JSON) is not held for ever by a client that announced bytes it never
/// sends.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    /// Set while the handler waits for bytes that have not come: the time runs from
    /// then, not from when the request began (a handler may read its body late).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: None,
        }
    }
}

/// The error an idle body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdle(Duration);

impl hyper::body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
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

    fn test_settings() -> ServerSettings {
        ServerSettings {
            max_connections: 8,
            max_connections_per_client: 8,
            trusted_proxies: Arc::default(),
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
        }
    }

    async fn start(
        settings: ServerSettings,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
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
            ..test_settings()
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
    async fn one_client_holds_at_most_its_share_of_connections() {
        let settings = ServerSettings {
            max_connections: 8,
            max_connections_per_client: 2,
            ..test_settings()
        };
        let (addr, shutdown, server) = start(settings).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut first).await.starts_with("HTTP/1.1 200"));
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(get_peer(&mut second).await.starts_with("HTTP/1.1 200"));
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(read_to_end(&mut third).await.starts_with("HTTP/1.1 503"));
        // A trusted proxy speaks for many clients.
        let trusting = ServerSettings {
            max_connections: 8,
            max_connections_per_client: 1,
            trusted_proxies: Arc::new(TrustedProxies::parse("127.0.0.1").unwrap()),
            ..test_settings()
        };
        let (proxied, stop_proxied, proxied_server) = start(trusting).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(proxied).await.unwrap();
            assert!(get_peer(&mut stream).await.starts_with("HTTP/1.1 200"));
            held.push(stream);
        }
        shutdown.cancel();
        stop_proxied.cancel();
        drop((first, second, held));
        server.await.unwrap().unwrap();
        proxied_server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_fails_the_request() {
        let settings = ServerSettings {
            body_idle_timeout: Duration::from_millis(200),
            ..test_settings()
        };
        let (addr, shutdown, server) = start(settings).await;
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf))
            .await
            .expect("answered once the body was idle")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        shutdown.cancel();
        drop(stalled);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn headers_must_arrive_in_time_and_not_without_end() {
        let settings = ServerSettings {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
            ..test_settings()
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
