//! Thread-per-connection HTTP server and routing.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{self, HttpError, Request, Response};
use crate::summary::{self, Cache};
use crate::{html, ws};

/// Concurrent connections (each is a thread; the sandbox allows 128 pids).
pub const MAX_CONNECTIONS: usize = 64;
/// Concurrent WebSocket sessions (each uses a second thread).
pub const MAX_WS: usize = 16;
/// An idle keep-alive connection is closed after this long. Kept well above
/// the idle timeout of testdrive's upstream connection pool (30 s) so the
/// proxy, not us, closes idle connections: no request races a close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct State {
    pub data_dir: PathBuf,
    pub cache: Cache,
    ws_sessions: AtomicUsize,
}

/// Decrements a counter when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn run(port: u16, data_dir: PathBuf) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    serve(listener, data_dir);
    Ok(())
}

/// Makes the process exit promptly on SIGTERM/SIGINT. As PID 1 in a
/// container it would otherwise ignore them and `docker stop` would wait for
/// its timeout. `_exit` is async-signal-safe; there is nothing to flush.
pub fn install_signal_handlers() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(status: i32) -> !;
    }
    extern "C" fn on_signal(_: i32) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
}

pub fn serve(listener: TcpListener, data_dir: PathBuf) {
    let state = Arc::new(State {
        data_dir,
        cache: Cache::default(),
        ws_sessions: AtomicUsize::new(0),
    });
    if let Ok(addr) = listener.local_addr() {
        eprintln!(
            "csv-explorer {} listening on http://{addr}/, files from {}",
            env!("CARGO_PKG_VERSION"),
            state.data_dir.display()
        );
    }
    // Summarise the files in the background so the first page view is fast.
    {
        let state = state.clone();
        let _ = thread::Builder::new().name("warm".into()).spawn(move || {
            if let Ok(files) = summary::list_files(&state.data_dir) {
                for f in &files {
                    state.cache.get(f);
                }
            }
        });
    }
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let resp = Response::text(503, "too many connections").header("Retry-After", "1");
            let _ = http::write_response(&mut stream, &resp, false, false);
            continue;
        }
        let slot = Slot(active.clone());
        let state = state.clone();
        let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
            let _slot = slot;
            handle_connection(stream, &state);
        });
        if let Err(e) = spawned {
            eprintln!("cannot start a thread: {e}");
        }
    }
}

enum Reply {
    Resp(Response),
    File {
        file: File,
        len: u64,
        content_type: &'static str,
    },
    Upgrade(String),
}

fn handle_connection(stream: TcpStream, state: &State) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(8 * 1024, read_half);
    let mut w = stream;
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(HttpError::Io) => return,
            Err(e) => {
                let resp = match e {
                    HttpError::TooLarge => Response::text(431, "request head too large"),
                    HttpError::Version => Response::text(505, "HTTP/1.x only"),
                    HttpError::Bad(what) => Response::text(400, &format!("bad request: {what}")),
                    HttpError::Io => return,
                };
                let _ = http::write_response(&mut w, &resp, false, false);
                linger_close(&w, &mut reader);
                return;
            }
        };
        let started = Instant::now();
        let is_head = req.method == "HEAD";
        let body_ok = http::discard_body(&mut reader, &req);
        let keep_alive = req.keep_alive() && body_ok;
        let reply = if matches!(req.method.as_str(), "GET" | "HEAD") {
            route(state, &req)
        } else {
            Reply::Resp(Response::text(405, "method not allowed").header("Allow", "GET, HEAD"))
        };
        let status = match &reply {
            Reply::Resp(r) => r.status,
            Reply::File { .. } => 200,
            Reply::Upgrade(_) => 101,
        };
        if req.path != "/healthz" || status != 200 {
            eprintln!(
                "{} {} {status} {}ms",
                req.method,
                req.path,
                started.elapsed().as_millis()
            );
        }
        let ok = match reply {
            Reply::Resp(resp) => {
                let resp = resp
                    .header("X-Content-Type-Options", "nosniff")
                    .header("Cache-Control", "no-store");
                http::write_response(&mut w, &resp, is_head, keep_alive).is_ok()
            }
            Reply::File {
                file,
                len,
                content_type,
            } => send_file(&mut w, file, len, content_type, is_head, keep_alive),
            Reply::Upgrade(accept) => {
                let slot = state.ws_sessions.fetch_add(1, Ordering::SeqCst);
                if slot >= MAX_WS || !body_ok {
                    state.ws_sessions.fetch_sub(1, Ordering::SeqCst);
                    let resp = if body_ok {
                        Response::text(503, "too many live-search sessions")
                    } else {
                        Response::text(400, "an upgrade request has no body")
                    };
                    let _ = http::write_response(&mut w, &resp, false, false);
                    linger_close(&w, &mut reader);
                    return;
                }
                let head = http::head(
                    101,
                    &[
                        ("Upgrade", "websocket".into()),
                        ("Connection", "Upgrade".into()),
                        ("Sec-WebSocket-Accept", accept),
                    ],
                    None,
                    false,
                );
                if w.write_all(&head).is_ok() {
                    ws::session(reader, w, state.data_dir.clone());
                }
                state.ws_sessions.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        if !ok {
            return;
        }
        if !keep_alive {
            if !body_ok {
                linger_close(&w, &mut reader);
            }
            return;
        }
    }
}

/// Closes after an error without resetting the connection: unread request
/// bytes would make the kernel send RST, and the client could lose our
/// response. Shut down our side, then drain for a short while.
fn linger_close(w: &TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = w.shutdown(Shutdown::Write);
    let _ = w.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8192];
    let mut total = 0;
    while total < 1 << 20 {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn send_file(
    w: &mut TcpStream,
    file: File,
    len: u64,
    content_type: &str,
    is_head: bool,
    keep_alive: bool,
) -> bool {
    let headers = [
        ("Content-Type", content_type.to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        ("Cache-Control", "no-store".to_string()),
    ];
    if w.write_all(&http::head(200, &headers, Some(len), keep_alive))
        .is_err()
    {
        return false;
    }
    if is_head {
        return true;
    }
    // io::copy uses sendfile(2) for File -> TcpStream.
    matches!(io::copy(&mut file.take(len), w), Ok(n) if n == len)
}

fn route(state: &State, req: &Request) -> Reply {
    match req.path.as_str() {
        "/" | "/index.html" => Reply::Resp(index(state)),
        "/healthz" => Reply::Resp(Response::new(200, "text/plain; charset=utf-8", "ok")),
        "/api/files" => Reply::Resp(api_files(state)),
        "/ws" => match ws::check_handshake(req) {
            Ok(accept) if req.method == "GET" => Reply::Upgrade(accept),
            Ok(_) => Reply::Resp(Response::text(400, "WebSocket upgrade needs GET")),
            Err(resp) => Reply::Resp(resp),
        },
        p => match p.strip_prefix("/files/") {
            Some(name) => file(&state.data_dir, name),
            None => Reply::Resp(Response::text(404, "not found")),
        },
    }
}

fn file(dir: &Path, raw_name: &str) -> Reply {
    let Some(name) = http::percent_decode(raw_name) else {
        return Reply::Resp(Response::text(400, "bad file name"));
    };
    if !summary::valid_name(&name) {
        return Reply::Resp(Response::text(400, "bad file name"));
    }
    let path = dir.join(&name);
    let not_found = || Reply::Resp(Response::text(404, "no such file"));
    // Regular files only: no symlinks, no directories.
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        _ => return not_found(),
    }
    let Ok(file) = File::open(&path) else {
        return not_found();
    };
    let Ok(meta) = file.metadata() else {
        return not_found();
    };
    Reply::File {
        file,
        len: meta.len(),
        content_type: summary::content_type(&name),
    }
}

fn summaries(state: &State) -> (Vec<Arc<summary::FileSummary>>, Option<String>) {
    match summary::list_files(&state.data_dir) {
        Ok(files) => {
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            state.cache.retain(&names);
            (files.iter().map(|f| state.cache.get(f)).collect(), None)
        }
        Err(e) => (
            Vec::new(),
            Some(format!(
                "Cannot read the data directory {}: {e}",
                state.data_dir.display()
            )),
        ),
    }
}

fn index(state: &State) -> Response {
    let (files, problem) = summaries(state);
    let page = html::index(
        &state.data_dir.display().to_string(),
        &files,
        problem.as_deref(),
    );
    Response::new(200, "text/html; charset=utf-8", page)
        .header("Content-Security-Policy", html::CSP)
        .header("Referrer-Policy", "no-referrer")
}

fn api_files(state: &State) -> Response {
    let (files, problem) = summaries(state);
    if let Some(p) = problem {
        let mut r = Response::json(&serde_json::json!({ "error": p }));
        r.status = 500;
        return r;
    }
    let files: Vec<_> = files.iter().map(|f| f.to_json()).collect();
    Response::json(&serde_json::json!({
        "data_dir": state.data_dir.display().to_string(),
        "files": files,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read};
    use std::net::SocketAddr;

    fn start(files: &[(&str, &[u8])]) -> (SocketAddr, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "csv-explorer-server-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let d = dir.clone();
        thread::spawn(move || serve(listener, d));
        (addr, dir)
    }

    /// Reads one response: (status, headers, body).
    fn response(r: &mut BufReader<TcpStream>, head_only: bool) -> (u16, String, Vec<u8>) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.trim().parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; if head_only { 0 } else { len }];
        r.read_exact(&mut body).unwrap();
        (status, head, body)
    }

    fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    const CSV: &[u8] = b"region,amount\n\"North, East\",10\nSouth,2.5\n";

    #[test]
    fn http_end_to_end() {
        let (addr, dir) = start(&[
            ("sales.csv", CSV),
            ("people.json", br#"[{"name":"Ann","age":41}]"#),
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
        assert!(head.contains("text/html"));
        assert!(page.contains("North, East") && page.contains("people.json"));
        assert!(page.contains("href=\"files/sales.csv\""));

        s.write_all(b"GET /files/sales.csv HTTP/1.1\r\n\r\n")
            .unwrap();
        let (status, head, body) = response(&mut r, false);
        assert_eq!((status, body.as_slice()), (200, CSV));
        assert!(head.contains("text/csv"));

        s.write_all(b"HEAD /files/sales.csv HTTP/1.1\r\n\r\n")
            .unwrap();
        let (status, head, _) = response(&mut r, true);
        assert_eq!(status, 200);
        assert!(head.contains(&format!("Content-Length: {}", CSV.len())));

        s.write_all(b"GET /api/files HTTP/1.1\r\n\r\n").unwrap();
        let (_, _, body) = response(&mut r, false);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["files"][1]["name"], "sales.csv");
        assert_eq!(v["files"][1]["columns"][1]["type"], "number");
        assert_eq!(v["files"][0]["columns"][1]["max"], 41);

        for (req, want) in [
            (&b"GET /nope HTTP/1.1\r\n\r\n"[..], 404),
            (b"GET /files/missing.csv HTTP/1.1\r\n\r\n", 404),
            (b"GET /files/..%2Fsecret HTTP/1.1\r\n\r\n", 400),
            (b"GET /files/%2e%2e HTTP/1.1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
            (b"GET /ws HTTP/1.1\r\n\r\n", 426),
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
        s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (_, head, _) = response(&mut r, false);
        assert!(head.contains("Connection: close"));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());

        // Garbage and oversized heads get an error, then the connection closes.
        let (mut s, mut r) = connect(addr);
        s.write_all(b"\x16\x03\x01 garbage\r\n\r\n").unwrap();
        assert_eq!(response(&mut r, false).0, 400);
        let (mut s, mut r) = connect(addr);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; 20_000]);
        let _ = s.write_all(&big);
        assert_eq!(response(&mut r, false).0, 431);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn websocket_search() {
        let (addr, dir) = start(&[("sales.csv", CSV)]);
        let (mut s, mut r) = connect(addr);
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let (status, head, _) = response(&mut r, true);
        assert_eq!(status, 101);
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));

        let read_server_frame = |r: &mut BufReader<TcpStream>| {
            let mut h = [0u8; 2];
            r.read_exact(&mut h).unwrap();
            let mut len = (h[1] & 0x7f) as usize;
            if len == 126 {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).unwrap();
                len = u16::from_be_bytes(b) as usize;
            }
            let mut p = vec![0; len];
            r.read_exact(&mut p).unwrap();
            (h[0] & 0x0f, p)
        };
        let frame = |fin: bool, op: u8, p: &[u8]| crate::ws::tests::client_frame(fin, op, p);

        s.write_all(&frame(true, ws::OP_PING, b"hi")).unwrap();
        assert_eq!(read_server_frame(&mut r), (ws::OP_PONG, b"hi".to_vec()));

        // A fragmented text message: "NORTH" in two parts.
        s.write_all(&frame(false, ws::OP_TEXT, b"NOR")).unwrap();
        s.write_all(&frame(true, ws::OP_CONT, b"TH")).unwrap();
        let (op, p) = read_server_frame(&mut r);
        assert_eq!(op, ws::OP_TEXT);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["query"], "NORTH");
        assert_eq!(v["matches"], 1);
        assert_eq!(v["rows"][0]["file"], "sales.csv");
        assert_eq!(
            v["rows"][0]["row"],
            serde_json::json!(["North, East", "10"])
        );

        s.write_all(&frame(true, ws::OP_CLOSE, &1000u16.to_be_bytes()))
            .unwrap();
        assert_eq!(
            read_server_frame(&mut r),
            (ws::OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
