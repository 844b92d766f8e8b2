//! RFC 6455 WebSocket: handshake, frames, and the live-search session.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine as _;

use crate::http::{Request, Response};
use crate::search;

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest client message (after reassembly of fragments).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The server pings an idle connection this often…
const PING_EVERY: Duration = Duration::from_secs(30);
/// …and drops it when nothing (not even a pong) arrived for this long.
const READ_TIMEOUT: Duration = Duration::from_secs(95);

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

pub fn is_upgrade(req: &Request) -> bool {
    req.has_token("upgrade", "websocket")
}

/// Checks an upgrade request; returns the `Sec-WebSocket-Accept` value or
/// the error response to send.
pub fn check_handshake(req: &Request) -> Result<String, Response> {
    if !is_upgrade(req) || !req.has_token("connection", "upgrade") {
        return Err(Response::text(426, "this endpoint speaks WebSocket")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(Response::text(426, "unsupported WebSocket version")
            .header("Sec-WebSocket-Version", "13"));
    }
    let key = req.header("sec-websocket-key").unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(k) if k.len() == 16 => Ok(accept_key(key)),
        _ => Err(Response::text(400, "bad Sec-WebSocket-Key")),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub enum WsError {
    Io,
    /// Close with this status code.
    Close(u16, &'static str),
}

impl From<io::Error> for WsError {
    fn from(_: io::Error) -> Self {
        WsError::Io
    }
}

/// Reads one client frame (must be masked), at most `max` payload bytes.
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> Result<Frame, WsError> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let fin = h[0] & 0x80 != 0;
    if h[0] & 0x70 != 0 {
        return Err(WsError::Close(1002, "reserved bits set"));
    }
    let opcode = h[0] & 0x0F;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(WsError::Close(1002, "unknown opcode"));
    }
    let mut len = (h[1] & 0x7F) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
        if len >> 63 != 0 {
            return Err(WsError::Close(1002, "bad length"));
        }
    }
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(WsError::Close(1002, "bad control frame"));
    }
    if h[1] & 0x80 == 0 {
        return Err(WsError::Close(1002, "client frames must be masked"));
    }
    if len > max as u64 {
        return Err(WsError::Close(1009, "message too big"));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

/// Encodes an unmasked server frame.
pub fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn send(w: &Mutex<TcpStream>, opcode: u8, payload: &[u8]) -> io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
    s.write_all(&encode_frame(opcode, payload))?;
    s.flush()
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Runs a search session on an upgraded connection until it closes. Each
/// text message is a query; a newer query cancels the one running.
pub fn session(mut reader: BufReader<TcpStream>, stream: TcpStream, data_dir: PathBuf) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let writer = Arc::new(Mutex::new(stream));
    let latest = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<(u64, String)>();

    let worker = {
        let writer = writer.clone();
        let latest = latest.clone();
        thread::Builder::new()
            .name("ws-search".into())
            .spawn(move || {
                search_worker(rx, &writer, &latest, &data_dir);
                if let Ok(s) = writer.lock() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            })
    };
    let Ok(worker) = worker else {
        let _ = send(&writer, OP_CLOSE, &close_payload(1011, "busy"));
        return;
    };

    let mut message: Option<(u8, Vec<u8>)> = None;
    loop {
        let frame = match read_frame(&mut reader, MAX_MESSAGE) {
            Ok(f) => f,
            Err(WsError::Io) => break,
            Err(WsError::Close(code, why)) => {
                let _ = send(&writer, OP_CLOSE, &close_payload(code, why));
                break;
            }
        };
        match frame.opcode {
            OP_PING => {
                if send(&writer, OP_PONG, &frame.payload).is_err() {
                    break;
                }
                continue;
            }
            OP_PONG => continue,
            OP_CLOSE => {
                // Echo the status code (RFC 6455 §5.5.1).
                let reply = match frame.payload.len() {
                    0 => Vec::new(),
                    1 => close_payload(1002, "bad close frame"),
                    _ => frame.payload[..2].to_vec(),
                };
                let _ = send(&writer, OP_CLOSE, &reply);
                break;
            }
            _ => {}
        }
        // Data frames, possibly fragmented.
        let done = match (&mut message, frame.opcode) {
            (None, OP_CONT) | (Some(_), OP_TEXT | OP_BINARY) => {
                let _ = send(&writer, OP_CLOSE, &close_payload(1002, "bad fragmentation"));
                break;
            }
            (None, op) => {
                message = Some((op, frame.payload));
                frame.fin
            }
            (Some((_, buf)), _) => {
                if buf.len() + frame.payload.len() > MAX_MESSAGE {
                    let _ = send(&writer, OP_CLOSE, &close_payload(1009, "message too big"));
                    break;
                }
                buf.extend_from_slice(&frame.payload);
                frame.fin
            }
        };
        if !done {
            continue;
        }
        let Some((op, data)) = message.take() else {
            continue;
        };
        if op == OP_BINARY {
            let _ = send(&writer, OP_CLOSE, &close_payload(1003, "send text"));
            break;
        }
        let Ok(text) = String::from_utf8(data) else {
            let _ = send(&writer, OP_CLOSE, &close_payload(1007, "invalid UTF-8"));
            break;
        };
        let generation = latest.fetch_add(1, Ordering::SeqCst) + 1;
        if tx.send((generation, text)).is_err() {
            break;
        }
    }
    latest.store(u64::MAX, Ordering::SeqCst);
    drop(tx);
    if let Ok(s) = writer.lock() {
        let _ = s.shutdown(Shutdown::Both);
    }
    let _ = worker.join();
}

fn search_worker(
    rx: mpsc::Receiver<(u64, String)>,
    writer: &Mutex<TcpStream>,
    latest: &AtomicU64,
    data_dir: &std::path::Path,
) {
    loop {
        let (mut generation, mut text) = match rx.recv_timeout(PING_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if send(writer, OP_PING, b"").is_err() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Only the newest query matters.
        while let Ok((g, t)) = rx.try_recv() {
            generation = g;
            text = t;
        }
        let query = search::clean_query(&text);
        let outcome = search::search(data_dir, &query, &|| {
            latest.load(Ordering::SeqCst) != generation
        });
        if outcome.cancelled {
            continue;
        }
        if send(writer, OP_TEXT, outcome.to_json().to_string().as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(fin as u8) << 7 | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn reads_masked_frames() {
        let raw = client_frame(true, OP_TEXT, b"Hello");
        // RFC 6455 §5.7 example with mask 37 fa 21 3d.
        assert_eq!(
            raw,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let f = read_frame(&mut &raw[..], MAX_MESSAGE).unwrap();
        assert_eq!(
            f,
            Frame {
                fin: true,
                opcode: OP_TEXT,
                payload: b"Hello".to_vec()
            }
        );
        let long = vec![b'x'; 70_000];
        let f = read_frame(&mut &client_frame(true, OP_BINARY, &long)[..], 100_000).unwrap();
        assert_eq!(f.payload.len(), 70_000);
        let f = read_frame(&mut &client_frame(true, OP_TEXT, &long[..300])[..], 1000).unwrap();
        assert_eq!(f.payload.len(), 300);
    }

    #[test]
    fn rejects_bad_frames() {
        let code = |raw: Vec<u8>| match read_frame(&mut &raw[..], 1000) {
            Err(WsError::Close(c, _)) => c,
            other => panic!("{other:?}"),
        };
        // Unmasked.
        assert_eq!(code(vec![0x81, 0x01, b'a']), 1002);
        // Too big.
        assert_eq!(code(client_frame(true, OP_TEXT, &[b'a'; 1001])), 1009);
        // Fragmented control frame, oversized ping, reserved bits, bad opcode.
        assert_eq!(code(client_frame(false, OP_PING, b"")), 1002);
        assert_eq!(code(client_frame(true, OP_PING, &[0; 126])), 1002);
        assert_eq!(code(vec![0xC1, 0x80, 0, 0, 0, 0]), 1002);
        assert_eq!(code(vec![0x83, 0x80, 0, 0, 0, 0]), 1002);
        // Truncated input is an I/O error, not a panic.
        assert!(matches!(
            read_frame(&mut &[0x81u8][..], 10),
            Err(WsError::Io)
        ));
    }

    #[test]
    fn encodes_server_frames() {
        assert_eq!(encode_frame(OP_TEXT, b"Hi"), [0x81, 2, b'H', b'i']);
        let f = encode_frame(OP_TEXT, &[0; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        let f = encode_frame(OP_BINARY, &vec![0; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(f.len(), 70_000 + 10);
    }
}
