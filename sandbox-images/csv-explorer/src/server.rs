//! The HTTP server on axum: the routes (page, files, their summary as JSON, health check,
//! live search), the headers every answer carries, and a prompt, graceful stop.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::summary::{self, Cache, FileSummary};
use crate::{html, live, prospect};

/// Threads for the blocking work (reading and summarising files, searches): what bounds
/// the process's threads, as the sandbox counts them against its pids limit (128).
/// Connections are tasks, not threads.
const BLOCKING_THREADS: usize = 24;
/// After SIGTERM, open requests (a download) get this long to finish.
const GRACE: Duration = Duration::from_secs(2);

pub struct AppState {
    pub data_dir: PathBuf,
    pub cache: Cache,
    /// Live-search sessions open.
    pub live_sessions: AtomicUsize,
}

pub type Shared = Arc<AppState>;

/// Serves on `0.0.0.0:port` until SIGTERM or SIGINT.
pub fn run(port: u16, data_dir: PathBuf) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?;
    let result = rt.block_on(async {
        let listener = TcpListener::bind(("0.0.0.0", port)).await?;
        serve(listener, data_dir, stop_signal()?).await
    });
    // A search still running in the blocking pool is abandoned, not waited for.
    rt.shutdown_background();
    result
}

/// SIGTERM (`docker stop`) or SIGINT. As PID 1 in a container the process would ignore
/// them without a handler, and `docker stop` would wait for its timeout.
fn stop_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Serves until `stop` completes, then lets open requests finish for at most `GRACE`.
pub async fn serve(
    listener: TcpListener,
    data_dir: PathBuf,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state = Arc::new(AppState {
        data_dir,
        cache: Cache::default(),
        live_sessions: AtomicUsize::new(0),
    });
    eprintln!(
        "csv-explorer {} listening on http://{}/, files from {}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?,
        state.data_dir.display()
    );
    // Summarise the files in the background so the first page view is fast.
    let warm = state.clone();
    drop(tokio::task::spawn_blocking(move || {
        if let Ok(files) = summary::list_files(&warm.data_dir) {
            for f in &files {
                warm.cache.get(f);
            }
        }
    }));
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let graceful = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        stop.await;
        eprintln!("csv-explorer: stopping");
        let _ = stopping.send(());
    });
    tokio::select! {
        served = graceful => served,
        _ = async {
            let _ = stopped.await;
            tokio::time::sleep(GRACE).await;
        } => Ok(()),
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/files", get(api_files))
        .route("/ws", get(live::upgrade))
        .route("/files/{*name}", get(file))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(log_and_mark))
        .with_state(state)
}

/// Every answer: never sniffed, never cached (the files change under the same name), and
/// logged (but for the readiness probe's).
async fn log_and_mark(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if path != "/healthz" || res.status() != StatusCode::OK {
        eprintln!(
            "{method} {path} {} {}ms",
            res.status().as_u16(),
            started.elapsed().as_millis()
        );
    }
    res
}

pub fn text(status: StatusCode, body: &str) -> Response {
    (status, format!("{body}\n")).into_response()
}

/// Runs file work off the async thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// Every listed file's summary (cached), or why the directory cannot be read.
fn summaries(state: &AppState) -> Result<Vec<Arc<FileSummary>>, String> {
    let files = summary::list_files(&state.data_dir).map_err(|e| {
        format!(
            "Cannot read the data directory {}: {e}",
            state.data_dir.display()
        )
    })?;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    state.cache.retain(&names);
    Ok(files.iter().map(|f| state.cache.get(f)).collect())
}

async fn index(State(state): State<Shared>) -> Response {
    let page = blocking(move || {
        // Read at every view: testdrive may write it after the server started.
        let prospect = prospect::load(&state.data_dir);
        let (files, problem) = match summaries(&state) {
            Ok(files) => (files, None),
            Err(problem) => (Vec::new(), Some(problem)),
        };
        html::index(
            &state.data_dir.display().to_string(),
            &files,
            problem.as_deref(),
            prospect.as_ref(),
        )
    })
    .await;
    match page {
        Ok(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, html::CSP),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            page,
        )
            .into_response(),
        Err(res) => res,
    }
}

async fn api_files(State(state): State<Shared>) -> Response {
    let body = blocking(move || {
        let data_dir = state.data_dir.display().to_string();
        match summaries(&state) {
            Ok(files) => {
                let files: Vec<_> = files.iter().map(|f| f.to_json()).collect();
                let v = serde_json::json!({ "data_dir": data_dir, "files": files });
                (StatusCode::OK, v)
            }
            Err(problem) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": problem }),
            ),
        }
    })
    .await;
    match body {
        Ok((status, v)) => {
            let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
            body.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(res) => res,
    }
}

/// A file exactly as uploaded, streamed. Regular files of the listing only: no
/// directories, no links, nothing hidden (such as `.testdrive/`).
async fn file(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    if !summary::valid_name(&name) {
        return text(StatusCode::BAD_REQUEST, "bad file name");
    }
    let path = state.data_dir.join(&name);
    let not_found = || text(StatusCode::NOT_FOUND, "no such file");
    match tokio::fs::symlink_metadata(&path).await {
        Ok(m) if m.is_file() => {}
        _ => return not_found(),
    }
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let Ok(meta) = file.metadata().await else {
        return not_found();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                summary::content_type(&name).to_string(),
            ),
            (header::CONTENT_LENGTH, meta.len().to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)),
    )
        .into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::thread;

    /// A server on a free port over a fresh directory holding `files`; it stops when
    /// `stop` ends. Returns its address and directory, and the thread it runs on.
    pub fn start_with(
        files: &[(&str, &[u8])],
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (SocketAddr, PathBuf, thread::JoinHandle<()>) {
        let dir = crate::summary::tests::temp_dir("server");
        for (name, content) in files {
            if let Some(parent) = std::path::Path::new(name).parent() {
                fs::create_dir_all(dir.join(parent)).unwrap();
            }
            fs::write(dir.join(name), content).unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let d = dir.clone();
        let server = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = TcpListener::from_std(listener).unwrap();
                serve(listener, d, stop).await.unwrap();
            });
            rt.shutdown_background();
        });
        (addr, dir, server)
    }

    pub fn start(files: &[(&str, &[u8])]) -> (SocketAddr, PathBuf) {
        let (addr, dir, _) = start_with(files, std::future::pending());
        (addr, dir)
    }

    /// Reads one response: (status, head, body).
    pub fn response(r: &mut BufReader<TcpStream>, head_only: bool) -> (u16, String, Vec<u8>) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let status = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let mut body = Vec::new();
        if !head_only {
            match len {
                Some(len) => {
                    body.resize(len, 0);
                    r.read_exact(&mut body).unwrap();
                }
                None if head.contains("transfer-encoding: chunked") => loop {
                    let mut size = String::new();
                    r.read_line(&mut size).unwrap();
                    let size = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; size + 2];
                    r.read_exact(&mut chunk).unwrap();
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                },
                None => {}
            }
        }
        (status, head, body)
    }

    pub fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    pub const CSV: &[u8] = b"region,amount\n\"North, East\",10\nSouth,2.5\n";

    #[test]
    fn http_end_to_end() {
        let (addr, dir) = start(&[
            ("sales.csv", CSV),
            ("people.json", br#"[{"name":"Ann","age":41}]"#),
            (
                "events.ndjson",
                b"{\"what\": \"launch\"}\n{\"what\": \"party\"}\n",
            ),
            (
                ".testdrive/prospect.json",
                br#"{"company": "Initech <Ltd>"}"#,
            ),
        ]);
        let (mut s, mut r) = connect(addr);
        // Keep-alive: several requests on one connection.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, _, body) = response(&mut r, false);
        assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (status, head, body) = response(&mut r, false);
        let page = String::from_utf8(body).unwrap();
        assert_eq!(status, 200);
        assert!(head.contains("text/html") && head.contains("content-security-policy"));
        assert!(head.contains("x-content-type-options: nosniff"));
        assert!(page.contains("North, East") && page.contains("people.json"));
        assert!(page.contains("href=\"files/sales.csv\""));
        assert!(page.contains("launch") && page.contains("NDJSON"));
        assert!(page.contains("Prepared for <strong id=\"prospect-company\">Initech &lt;Ltd&gt;"));
        assert!(
            !page.contains("prospect.json"),
            "testdrive's directory is not listed"
        );

        s.write_all(b"GET /files/sales.csv HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, head, body) = response(&mut r, false);
        assert_eq!((status, body.as_slice()), (200, CSV));
        assert!(head.contains("text/csv"));

        s.write_all(b"HEAD /files/sales.csv HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, head, _) = response(&mut r, true);
        assert_eq!(status, 200);
        assert!(
            head.contains(&format!("content-length: {}", CSV.len())),
            "{head}"
        );

        s.write_all(b"GET /api/files HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (_, _, body) = response(&mut r, false);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["files"][2]["name"], "sales.csv");
        assert_eq!(v["files"][2]["columns"][1]["type"], "number");
        assert_eq!(v["files"][1]["columns"][1]["max"], 41);
        assert_eq!(v["files"][0]["rows"], 2);

        for (req, want) in [
            (&b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"[..], 404),
            (b"GET /files/missing.csv HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (b"GET /files/..%2Fsecret HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /files/%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (
                b"GET /files/.testdrive/prospect.json HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
            ),
            (
                b"GET /files/.testdrive%2Fprospect.json HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
            ),
            (b"GET /files/.testdrive HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                405,
            ),
            (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        ] {
            s.write_all(req).unwrap();
            assert_eq!(
                response(&mut r, false).0,
                want,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        // Still the same connection after all that.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (status, _, _) = response(&mut r, false);
        assert_eq!(status, 200);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    /// The stop is graceful and prompt: an idle keep-alive connection does not hold it.
    #[test]
    fn stops_promptly() {
        let (addr, dir, server) = start_with(&[("a.csv", b"a\n1\n")], async {
            tokio::time::sleep(Duration::from_millis(300)).await
        });
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(response(&mut r, false).0, 200);
        let started = Instant::now();
        server.join().unwrap();
        assert!(started.elapsed() < GRACE, "{:?}", started.elapsed());
        fs::remove_dir_all(dir).unwrap();
    }
}
