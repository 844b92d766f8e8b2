//! hostile-demo: a demo that does, on purpose, everything a vendor's app with a bug (or a
//! prospect's crafted file) could make it do to the testdrive that serves it. It answers
//! security-relevant headers, `Set-Cookie` in the spellings browsers forgive, open
//! redirects, a `101` carrying cookies, and a page that registers a service worker for `/`
//! and sets cookies for testdrive's own paths; it echoes every request head exactly as
//! received, so tests can see what testdrive forwarded. The routes are listed in
//! `README.md`.
//!
//! HTTP/1.1 with std only: one request per connection (`Connection: close`), responses
//! written as raw bytes so that any spelling can be sent. `PORT` (default 8080).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 64 * 1024;
/// A request body larger than this is refused (413).
const MAX_BODY: usize = 256 * 1024;
/// What `/steal` keeps, at most; later posts are dropped.
const MAX_STOLEN: usize = 4 * 1024 * 1024;
/// Connections served at once (threads count against the sandbox's pids limit).
const MAX_CONNECTIONS: usize = 48;

/// Every `Set-Cookie` of `/headers`, in the spellings a browser reads differently from a
/// naive filter: blanks or a tab before `=`, upper case, quotes, two `Path`s (the last
/// wins), `Domain` in every case, testdrive's own cookie names, a name with a byte that is
/// not ASCII, no name at all. The last two are benign and must survive.
const COOKIES: &[&[u8]] = &[
    b"c=1; Path =/; HttpOnly",
    b"d=1; Path\t=/ops",
    b"e=1; Domain=sandbox.localhost; Path=/",
    b"f=1; domain=.localhost",
    b"k=1; Domain =sandbox.localhost; Path=/",
    b"testdrive_sandbox=stolen; Path=/",
    b"testdrive_admin=x; Path=/ops",
    b"testdrive_trial=x; Path=/trials",
    b"g=1; Path=/ops",
    b"h=1; PATH=/trials",
    b"i=1; Path=\"/ops\"",
    b"caf\xe9=1; Path=/ops",
    b"=nameless; Path=/",
    b"j=1; Path=/; Path=/ops",
    b"ok=1; Path=/app; HttpOnly; SameSite=Lax",
    b"ok2=2",
];

/// The cookie the page's own requests must keep sending, so `/cookies` (the page's) leaves
/// it alone; `/headers` sends it like the rest.
const PROXY_COOKIE: &[u8] = b"testdrive_sandbox=";

/// Headers that let an answer act beyond the page that asked: none may reach a browser.
const HOSTILE_HEADERS: &[&[u8]] = &[
    b"Service-Worker-Allowed: /",
    b"Clear-Site-Data: \"cookies\"",
    b"Strict-Transport-Security: max-age=31536000; includeSubDomains",
    b"NEL: {\"report_to\":\"hostile\",\"max_age\":31536000,\"include_subdomains\":true}",
    b"Report-To: {\"group\":\"hostile\",\"max_age\":31536000,\"endpoints\":[{\"url\":\"https://evil.example/reports\"}],\"include_subdomains\":true}",
    b"Alt-Svc: h2=\":443\"",
    b"X-Accel-Redirect: /internal",
    b"Access-Control-Allow-Credentials: true",
];

/// Ordinary headers that must reach the client unchanged.
const HARMLESS_HEADERS: &[&[u8]] = &[
    b"Content-Type: text/html; charset=utf-8",
    b"Cache-Control: no-cache",
    b"ETag: \"hostile-1\"",
    b"X-Total-Count: 42",
];

const PAGE: &str = include_str!("page.html");
const SERVICE_WORKER: &str = include_str!("sw.js");

struct Request {
    /// The request line and headers exactly as received (each line with its own line
    /// break), without the blank line that ends them.
    head: Vec<u8>,
    method: String,
    /// The request target as received (lossily decoded, for routing only).
    target: String,
    /// Names in lower case, values as received.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self, key: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    fn is_upgrade(&self) -> bool {
        self.header("upgrade").is_some_and(|v| {
            String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("websocket")
        })
    }
}

enum ReadError {
    Closed,
    TooLarge(&'static str),
    Malformed,
}

fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listener = TcpListener::bind(("0.0.0.0", port))
        .unwrap_or_else(|e| panic!("cannot listen on port {port}: {e}"));
    eprintln!("hostile-demo listening on port {port}");
    let stolen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(&mut stream, "503 Service Unavailable", &[], b"busy\n");
            continue;
        }
        let (stolen, open) = (stolen.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                serve(stream, &stolen);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // No thread to be had (the pids limit): the connection closes.
            eprintln!("hostile-demo: cannot start a thread");
        }
    }
}

fn serve(mut stream: TcpStream, stolen: &Mutex<Vec<u8>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let request = match read_request(&mut reader) {
        Ok(request) => request,
        Err(ReadError::Closed) => return,
        Err(ReadError::TooLarge(status)) => {
            let _ = respond(&mut stream, status, &[], b"too large\n");
            return;
        }
        Err(ReadError::Malformed) => {
            let _ = respond(&mut stream, "400 Bad Request", &[], b"malformed request\n");
            return;
        }
    };
    if request.is_upgrade() {
        upgrade(stream, reader, &request);
        return;
    }
    let _ = route(&mut stream, &request, stolen);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn read_request(reader: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut head = Vec::new();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .take((MAX_HEAD + 1 - head.len().min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(if head.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Malformed
            });
        }
        if head.len() + line.len() > MAX_HEAD {
            return Err(ReadError::TooLarge("431 Request Header Fields Too Large"));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.ends_with(b"\n") {
            return Err(ReadError::Malformed);
        }
        head.extend_from_slice(&line);
        lines.push(trim_line_end(&line).to_vec());
    }
    let mut lines = lines.into_iter();
    let request_line =
        String::from_utf8_lossy(&lines.next().ok_or(ReadError::Malformed)?).to_string();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(ReadError::Malformed);
    };
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon])
                .trim()
                .to_ascii_lowercase();
            let value = trim_ascii(&line[colon + 1..]).to_vec();
            Some((name, value))
        })
        .collect();
    let mut request = Request {
        head,
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    request.body = read_body(reader, &request)?;
    Ok(request)
}

fn read_body(reader: &mut impl BufRead, request: &Request) -> Result<Vec<u8>, ReadError> {
    let chunked = request.header("transfer-encoding").is_some_and(|v| {
        String::from_utf8_lossy(v)
            .to_ascii_lowercase()
            .contains("chunked")
    });
    if chunked {
        let mut body = Vec::new();
        loop {
            let mut size_line = Vec::new();
            reader
                .take(1024)
                .read_until(b'\n', &mut size_line)
                .map_err(|_| ReadError::Malformed)?;
            let size_text = String::from_utf8_lossy(trim_line_end(&size_line)).to_string();
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| ReadError::Malformed)?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let mut line = Vec::new();
                    let n = reader
                        .take(MAX_HEAD as u64)
                        .read_until(b'\n', &mut line)
                        .map_err(|_| ReadError::Malformed)?;
                    if n == 0 || line == b"\r\n" || line == b"\n" {
                        return Ok(body);
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(ReadError::TooLarge("413 Content Too Large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|_| ReadError::Malformed)?;
            let mut crlf = Vec::new();
            reader
                .take(2)
                .read_until(b'\n', &mut crlf)
                .map_err(|_| ReadError::Malformed)?;
        }
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(v) => String::from_utf8_lossy(v)
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Malformed)?,
    };
    if length > MAX_BODY {
        return Err(ReadError::TooLarge("413 Content Too Large"));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|_| ReadError::Malformed)?;
    Ok(body)
}

fn route(
    stream: &mut TcpStream,
    request: &Request,
    stolen: &Mutex<Vec<u8>>,
) -> std::io::Result<()> {
    let path = request.path();
    match (request.method.as_str(), path) {
        (_, p) if p == "/echo" || p.starts_with("/echo/") => respond(
            stream,
            "200 OK",
            &[b"Content-Type: text/plain; charset=utf-8"],
            &request.head,
        ),
        ("GET" | "HEAD", "/") => respond(
            stream,
            "200 OK",
            &[
                b"Content-Type: text/html; charset=utf-8",
                b"Cache-Control: no-store",
            ],
            PAGE.as_bytes(),
        ),
        ("GET", "/sw.js") => respond(
            stream,
            "200 OK",
            &[
                b"Content-Type: text/javascript; charset=utf-8",
                b"Cache-Control: no-store",
                b"Service-Worker-Allowed: /",
            ],
            SERVICE_WORKER.as_bytes(),
        ),
        ("GET", "/headers") => {
            let mut headers: Vec<Vec<u8>> = HARMLESS_HEADERS.iter().map(|h| h.to_vec()).collect();
            headers.extend(HOSTILE_HEADERS.iter().map(|h| h.to_vec()));
            headers.extend(COOKIES.iter().map(|c| set_cookie(c)));
            let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            respond(
                stream,
                "200 OK",
                &headers,
                b"<!doctype html><p>hostile-demo: headers</p>\n",
            )
        }
        ("GET", "/cookies") => {
            let headers: Vec<Vec<u8>> = COOKIES
                .iter()
                .filter(|c| !c.starts_with(PROXY_COOKIE))
                .map(|c| set_cookie(c))
                .collect();
            let mut headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
            headers.push(b"Cache-Control: no-store");
            respond(stream, "204 No Content", &headers, b"")
        }
        ("GET", "/redirect") => match request.query("to") {
            Some(to) => {
                let mut location = b"Location: ".to_vec();
                location.extend_from_slice(to.as_bytes());
                respond(stream, "302 Found", &[&location], b"")
            }
            None => respond(stream, "400 Bad Request", &[], b"/redirect?to=<location>\n"),
        },
        ("POST", "/steal") => {
            let mut log = stolen.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() + request.body.len() < MAX_STOLEN {
                log.extend_from_slice(&request.body);
                log.push(b'\n');
            }
            drop(log);
            respond(stream, "204 No Content", &[b"Cache-Control: no-store"], b"")
        }
        ("GET", "/steal-log") => {
            let log = stolen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            respond(
                stream,
                "200 OK",
                &[
                    b"Content-Type: text/plain; charset=utf-8",
                    b"Cache-Control: no-store",
                ],
                &log,
            )
        }
        _ => {
            let body = format!("hostile-demo: no such route: {} {}\n", request.method, path);
            respond(
                stream,
                "404 Not Found",
                &[b"Content-Type: text/plain; charset=utf-8"],
                body.as_bytes(),
            )
        }
    }
}

fn set_cookie(cookie: &[u8]) -> Vec<u8> {
    let mut header = b"Set-Cookie: ".to_vec();
    header.extend_from_slice(cookie);
    header
}

/// Writes a whole response; `headers` are complete raw header lines.
fn respond(
    stream: &mut impl Write,
    status: &str,
    headers: &[&[u8]],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for header in headers {
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
    }
    if !status.starts_with("204") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    stream.write_all(&out)
}

/// A WebSocket-style upgrade: a `101` with a cookie for the whole `localhost` and headers
/// no answer may carry, then every byte read is sent back.
fn upgrade(mut stream: TcpStream, mut reader: BufReader<TcpStream>, request: &Request) {
    let mut headers: Vec<Vec<u8>> = vec![
        b"Upgrade: websocket".to_vec(),
        b"Connection: Upgrade".to_vec(),
    ];
    if let Some(key) = request.header("sec-websocket-key") {
        let mut accept = b"Sec-WebSocket-Accept: ".to_vec();
        accept.extend_from_slice(websocket_accept(key).as_bytes());
        headers.push(accept);
    }
    headers.push(b"Set-Cookie: ws=1; Domain=localhost; Path=/ops".to_vec());
    headers.push(b"Set-Cookie: ws2=1; Path =/".to_vec());
    headers.push(b"Service-Worker-Allowed: /".to_vec());
    headers.push(b"Clear-Site-Data: \"cookies\"".to_vec());
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    for header in headers {
        out.extend_from_slice(&header);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if stream.write_all(&out).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// `%XX` and `+` decoded; invalid escapes kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455: base64 of SHA-1 of key + GUID).
fn websocket_accept(key: &[u8]) -> String {
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_accept_is_rfc_6455s_example() {
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(percent_decode("%2F%2Fevil.example%2F"), "//evil.example/");
        assert_eq!(percent_decode("a+b%5C"), "a b\\");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn requests_are_read_with_their_head_as_received() {
        let raw =
            b"GET /echo/a%2Fb%20c?x=%41 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
        let request = read_request(&mut &raw[..]).ok().unwrap();
        assert_eq!(
            request.head,
            b"GET /echo/a%2Fb%20c?x=%41 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n"
        );
        assert_eq!(request.path(), "/echo/a%2Fb%20c");
        assert_eq!(request.header("x-forwarded-for"), Some(&b"6.6.6.6"[..]));

        let chunked = b"POST /steal HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let request = read_request(&mut &chunked[..]).ok().unwrap();
        assert_eq!(request.body, b"abcde");
    }
}
