//! The live search over a WebSocket (`GET /ws`): each text message is a search term, each
//! answer `{"query", "matches", "rows": [{"file", "row"}]}`. A newer term cancels the search
//! in progress, whose answer is never sent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, interval_at};

use crate::search::{self, Outcome};
use crate::server::{Shared, text};

/// Sessions open at once; each may keep a blocking thread busy with its search.
pub const MAX_SESSIONS: usize = 16;
/// Largest message a client may send.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// An idle connection is pinged this often…
const PING_EVERY: Duration = Duration::from_secs(30);
/// …and dropped when nothing (not even a pong) arrived for this long.
const SILENCE: Duration = Duration::from_secs(95);

pub async fn upgrade(
    State(state): State<Shared>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // A plain request for the page's socket: say what it speaks.
        Err(
            WebSocketUpgradeRejection::InvalidConnectionHeader(_)
            | WebSocketUpgradeRejection::InvalidUpgradeHeader(_),
        ) => {
            let mut res = text(
                StatusCode::UPGRADE_REQUIRED,
                "this endpoint speaks WebSocket",
            );
            let headers = res.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return res;
        }
        Err(other) => return other.into_response(),
    };
    let Some(slot) = Slot::take(&state) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-search sessions",
        );
    };
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            session(socket, slot.0.data_dir.clone()).await;
            drop(slot);
        })
}

/// One of the `MAX_SESSIONS`, given back when dropped.
struct Slot(Shared);

impl Slot {
    fn take(state: &Shared) -> Option<Slot> {
        let open = &state.live_sessions;
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_SESSIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(state.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live_sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The search in progress, and how to cancel it.
struct Running {
    cancel: Arc<AtomicBool>,
    task: JoinHandle<Outcome>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

async fn finished(running: &mut Option<Running>) -> Result<Outcome, JoinError> {
    match running {
        Some(r) => (&mut r.task).await,
        None => std::future::pending().await,
    }
}

async fn session(mut socket: WebSocket, data_dir: PathBuf) {
    let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = Instant::now();
    let mut running: Option<Running> = None;
    loop {
        tokio::select! {
            message = socket.recv() => {
                heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(query))) => {
                        // Replacing it cancels the one before (see `Running`'s drop).
                        let cancel = Arc::new(AtomicBool::new(false));
                        let (flag, dir) = (cancel.clone(), data_dir.clone());
                        let query = search::clean_query(query.as_str());
                        let task = tokio::task::spawn_blocking(move || {
                            search::search(&dir, &query, &|| flag.load(Ordering::SeqCst))
                        });
                        running = Some(Running { cancel, task });
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let close = CloseFrame { code: 1003, reason: "send text".into() };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        break;
                    }
                    // A close is answered by the next `recv`, which then ends the stream.
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break,
                }
            }
            done = finished(&mut running) => {
                running = None;
                if let Ok(outcome) = done
                    && !outcome.cancelled
                    && socket.send(Message::text(outcome.to_json().to_string())).await.is_err()
                {
                    break;
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= SILENCE
                    || socket.send(Message::Ping(Default::default())).await.is_err()
                {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{BufReader, Read, Write};
    use std::net::TcpStream;

    use crate::server::tests::{CSV, connect, response, start};

    const OP_CONT: u8 = 0x0;
    const OP_TEXT: u8 = 0x1;
    const OP_BINARY: u8 = 0x2;
    const OP_CLOSE: u8 = 0x8;
    const OP_PING: u8 = 0x9;
    const OP_PONG: u8 = 0xA;

    /// A masked client frame, as a browser sends it.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(fin as u8) << 7 | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// One server frame: (opcode, payload).
    fn read_frame(r: &mut BufReader<TcpStream>) -> (u8, Vec<u8>) {
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
    }

    fn open(addr: std::net::SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let (mut s, mut r) = connect(addr);
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let (status, head, _) = response(&mut r, true);
        assert_eq!(status, 101);
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        (s, r)
    }

    #[test]
    fn searches_live() {
        let (addr, dir) = start(&[
            ("sales.csv", CSV),
            ("events.jsonl", b"{\"where\": \"north pole\"}\n"),
            (".testdrive/prospect.json", br#"{"needs": "north"}"#),
        ]);
        let (mut s, mut r) = open(addr);
        s.write_all(&frame(true, OP_PING, b"hi")).unwrap();
        assert_eq!(read_frame(&mut r), (OP_PONG, b"hi".to_vec()));

        // A fragmented text message: "NORTH" in two parts.
        s.write_all(&frame(false, OP_TEXT, b"NOR")).unwrap();
        s.write_all(&frame(true, OP_CONT, b"TH")).unwrap();
        let (op, p) = read_frame(&mut r);
        assert_eq!(op, OP_TEXT);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["query"], "NORTH");
        assert_eq!(v["matches"], 2, "{v}");
        assert_eq!(v["rows"][0]["file"], "events.jsonl");
        assert_eq!(v["rows"][1]["file"], "sales.csv");
        assert_eq!(
            v["rows"][1]["row"],
            serde_json::json!(["North, East", "10"])
        );

        s.write_all(&frame(true, OP_CLOSE, &1000u16.to_be_bytes()))
            .unwrap();
        assert_eq!(read_frame(&mut r).0, OP_CLOSE);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());

        // Binary is refused with a close.
        let (mut s, mut r) = open(addr);
        s.write_all(&frame(true, OP_BINARY, b"x")).unwrap();
        let (op, p) = read_frame(&mut r);
        assert_eq!((op, &p[..2]), (OP_CLOSE, &1003u16.to_be_bytes()[..]));
        fs::remove_dir_all(dir).unwrap();
    }
}
