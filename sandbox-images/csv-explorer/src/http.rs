//! Minimal HTTP/1.1: request head parsing with a size bound, responses with
//! Content-Length, keep-alive.

use std::io::{self, BufRead, Read, Write};

/// Request line plus headers, in bytes.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;
/// Bodies up to this size are read and discarded (we never need one).
pub const MAX_DISCARD_BODY: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query string, still percent-encoded.
    pub path: String,
    pub http10: bool,
    pub headers: Vec<(String, String)>,
    pub content_length: u64,
    pub chunked: bool,
}

#[derive(Debug)]
pub enum HttpError {
    /// Socket error, timeout, or EOF in the middle of a request.
    Io,
    TooLarge,
    Bad(&'static str),
    Version,
}

impl From<io::Error> for HttpError {
    fn from(_: io::Error) -> Self {
        HttpError::Io
    }
}

impl Request {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Does any `name` header contain `token` in its comma-separated list?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn keep_alive(&self) -> bool {
        if self.http10 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

fn read_line<R: BufRead>(
    r: &mut R,
    budget: &mut usize,
    line: &mut Vec<u8>,
) -> Result<bool, HttpError> {
    line.clear();
    let n = (&mut *r).take(*budget as u64 + 1).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(false);
    }
    if n > *budget {
        return Err(HttpError::TooLarge);
    }
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Io); // EOF mid-line
    }
    *budget -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(true)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, bool), HttpError> {
    let request_line = std::str::from_utf8(line).map_err(|_| HttpError::Bad("request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Bad("request line"));
    };
    if !is_token(method) || target.is_empty() {
        return Err(HttpError::Bad("request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(HttpError::Version),
        _ => return Err(HttpError::Bad("request line")),
    };
    // Origin form, or absolute form (http://host/path).
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    if !path.starts_with('/') {
        return Err(HttpError::Bad("request target"));
    }
    let path = path.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok((method.to_string(), path, http10))
}

/// Reads one request head. `Ok(None)` on a clean EOF before any byte.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD;
    let mut line = Vec::with_capacity(256);
    // Tolerate blank lines before the request line (RFC 9112 §2.2).
    loop {
        if !read_line(r, &mut budget, &mut line)? {
            return if budget == MAX_HEAD {
                Ok(None)
            } else {
                Err(HttpError::Io)
            };
        }
        if !line.is_empty() {
            break;
        }
    }
    let (method, path, http10) = parse_request_line(&line)?;

    let mut headers = Vec::new();
    loop {
        if !read_line(r, &mut budget, &mut line)? {
            return Err(HttpError::Io);
        }
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooLarge);
        }
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(HttpError::Bad("header line"));
        };
        if !is_token(name) {
            return Err(HttpError::Bad("header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    let mut req = Request {
        method,
        path,
        http10,
        headers,
        content_length: 0,
        chunked: false,
    };
    let mut lengths = req
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v);
    if let Some(first) = lengths.next() {
        let n: u64 = first
            .parse()
            .map_err(|_| HttpError::Bad("content-length"))?;
        if lengths.any(|v| v.parse() != Ok(n)) {
            return Err(HttpError::Bad("content-length"));
        }
        req.content_length = n;
    }
    req.chunked = req.header("transfer-encoding").is_some();
    Ok(Some(req))
}

/// Reads and drops a small request body. Returns false when the connection
/// cannot be reused (chunked or too large a body).
pub fn discard_body<R: BufRead>(r: &mut R, req: &Request) -> bool {
    if req.chunked || req.content_length > MAX_DISCARD_BODY {
        return false;
    }
    if req.content_length == 0 {
        return true;
    }
    matches!(io::copy(&mut (&mut *r).take(req.content_length), &mut io::sink()), Ok(n) if n == req.content_length)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn json(v: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Response::new(200, "application/json", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Serialises the status line and headers (Content-Length is `len`).
pub fn head(
    status: u16,
    headers: &[(&'static str, String)],
    len: Option<u64>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nServer: csv-explorer\r\n",
        reason(status)
    );
    for (k, v) in headers {
        h.push_str(k);
        h.push_str(": ");
        // Never let a value break the header block.
        h.extend(v.chars().filter(|c| *c != '\r' && *c != '\n'));
        h.push_str("\r\n");
    }
    if let Some(len) = len {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    if status != 101 {
        h.push_str(if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        });
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Writes a complete response; the body is skipped for HEAD.
pub fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    is_head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = head(
        resp.status,
        &resp.headers,
        Some(resp.body.len() as u64),
        keep_alive,
    );
    if !is_head {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

/// Decodes %XX escapes; `None` if malformed or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters (for URL paths).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut io::BufReader::new(raw))
    }

    #[test]
    fn parses_a_request() {
        let req = parse(b"GET /files/a%20b.csv?x=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/files/a%20b.csv");
        assert_eq!(req.header("host"), Some("x"));
        assert!(req.has_token("connection", "upgrade"));
        assert!(req.keep_alive());
        let req = parse(b"\r\nHEAD http://example.com/healthz HTTP/1.0\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.path, "/healthz");
        assert!(!req.keep_alive());
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(matches!(parse(b""), Ok(None)));
        assert!(matches!(parse(b"GET /\r\n\r\n"), Err(HttpError::Bad(_))));
        assert!(matches!(
            parse(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HttpError::Version)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HttpError::Bad(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(HttpError::Io)
        ));
        assert!(matches!(
            parse(b"G\xffT / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Bad(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Bad(_))
        ));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(vec![b'a'; MAX_HEAD]);
        big.extend(b"\r\n\r\n");
        assert!(matches!(parse(&big), Err(HttpError::TooLarge)));
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn percent_coding() {
        assert_eq!(
            percent_decode("a%20b%C3%A9.csv").as_deref(),
            Some("a bé.csv")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_encode("a bé/x.csv"), "a%20b%C3%A9%2Fx.csv");
    }

    #[test]
    fn response_head() {
        let h = head(
            200,
            &[("Content-Type", "text/plain\r\nX: y".into())],
            Some(3),
            true,
        );
        let h = String::from_utf8(h).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(h.contains("Content-Type: text/plainX: y\r\n"));
        assert!(h.contains("Content-Length: 3\r\n"));
        assert!(h.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}
