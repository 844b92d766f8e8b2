//! A streaming `multipart/form-data` reader with its limits built in. It holds at most one
//! part's header block (capped), or one chunk of the body plus a boundary's length, whatever
//! the request looks like: a part header that never ends, a huge preamble, a million tiny
//! parts, a body that stops arriving are each cut off at a limit, never buffered. (multer,
//! behind axum's `Multipart`, buffers a part's header until it ends, however long.)
//!
//! The body is read in order, as the caller asks: `next_part` gives the next part's name
//! (skipping what is left of the current one), `chunk` the part's content piece by piece.
//! The body limit can be raised as the form goes on (small until the form has said which
//! demo it is for, then that demo's upload limit). Whatever follows the closing boundary
//! is never read.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Put before the body so the first boundary reads like every later delimiter (`CRLF--b`).
const PRELUDE: &[u8] = b"\r\n";
/// Bytes that may wait in the buffer beyond the body limit: one large chunk's worth.
const UNREAD_MAX: u64 = 1024 * 1024;

/// What the reader lets through.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// One part's header block, the delimiter line's padding included.
    pub header_bytes: usize,
    /// Bytes before the first boundary (browsers send none).
    pub preamble_bytes: usize,
    /// Parts in the whole form.
    pub parts: usize,
    /// The whole body; raise it with `MultipartReader::allow_body_bytes`.
    pub body_bytes: u64,
    /// How long the body may send nothing.
    pub idle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("the multipart body is malformed: {0}")]
    Malformed(&'static str),
    #[error("a part's headers are over {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the body has over {limit} bytes before its first boundary")]
    PreambleTooLarge { limit: usize },
    #[error("the form has more than {limit} parts")]
    TooManyParts { limit: usize },
    #[error("the request body is over {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the upload stalled: nothing arrived for {seconds} seconds")]
    Stalled { seconds: u64 },
    #[error("the upload was interrupted: {0}")]
    Body(String),
}

impl MultipartError {
    /// Whether the request was refused for its size (`413`) rather than its shape.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            MultipartError::HeaderTooLarge { .. }
                | MultipartError::PreambleTooLarge { .. }
                | MultipartError::TooManyParts { .. }
                | MultipartError::BodyTooLarge { .. }
        )
    }
}

type Result<T> = std::result::Result<T, MultipartError>;

/// A part's name and, for a file, its file name, from its `Content-Disposition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartHead {
    pub name: String,
    pub file_name: Option<String>,
}

/// The `boundary` of a `multipart/form-data` content type; `None` for another type.
/// `Some(Err)` when it is multipart but names no usable boundary.
pub fn boundary(content_type: &str) -> Option<Result<String>> {
    let (kind, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let found = parameters(params)
        .ok()
        .and_then(|ps| ps.into_iter().find(|(name, _)| name == "boundary"))
        .map(|(_, value)| value);
    // RFC 2046 §5.1.1: 1 to 70 characters, not ending in a space.
    let valid = |b: &str| {
        (1..=70).contains(&b.len())
            && !b.ends_with(' ')
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
    };
    Some(match found {
        Some(b) if valid(&b) => Ok(b),
        Some(_) => Err(MultipartError::Malformed("the boundary is not a valid one")),
        None => Err(MultipartError::Malformed(
            "the content type names no boundary",
        )),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a boundary: the close (`--`) or a delimiter line's end.
    AfterBoundary,
    /// The delimiter line was good; its CRLF and the part's headers follow.
    Headers,
    /// Inside a part's content.
    Content,
    /// The closing boundary was read.
    Done,
}

pub struct MultipartReader<S> {
    body: S,
    /// `CRLF--boundary`: what ends a part's content.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    limits: Limits,
    parts: usize,
    /// Body bytes taken in so far.
    read: u64,
    /// Preamble bytes dropped so far.
    preamble: usize,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S, boundary: &str, limits: Limits) -> Self {
        let delimiter = [b"\r\n--".as_slice(), boundary.as_bytes()].concat();
        // A body may start with the boundary right away, without the CRLF that precedes
        // every later one: a CRLF in front lets one search find either.
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.extend_from_slice(PRELUDE);
        MultipartReader {
            body,
            delimiter,
            buf,
            state: State::Preamble,
            limits,
            parts: 0,
            read: 0,
            preamble: 0,
        }
    }

    /// Raises (or lowers) the limit on the whole body, counting what was read already.
    pub fn allow_body_bytes(&mut self, limit: u64) {
        self.limits.body_bytes = limit;
    }

    /// Whether the form has used more of the body than the limit in force allows. Checked
    /// before every step, so no step goes on from beyond the limit.
    fn within_limit(&self) -> Result<()> {
        let unread = self.buf.len() as u64;
        let used = (self.read + PRELUDE.len() as u64).saturating_sub(unread);
        if used > self.limits.body_bytes {
            return Err(MultipartError::BodyTooLarge {
                limit: self.limits.body_bytes,
            });
        }
        Ok(())
    }

    /// Reads one more chunk of the body into the buffer; false at its end.
    async fn fill(&mut self) -> Result<bool> {
        let next = tokio::time::timeout(self.limits.idle, self.body.next())
            .await
            .map_err(|_| MultipartError::Stalled {
                seconds: self.limits.idle.as_secs(),
            })?;
        match next {
            None => Ok(false),
            Some(Err(e)) => Err(MultipartError::Body(e.to_string())),
            Some(Ok(chunk)) => {
                // Judged by what the form has used up, not by what has arrived: a client may
                // send a form's start in one chunk larger than the limit in force while the
                // demo is not known yet, and that limit is about where the demo field ends.
                // What waits unread stays bounded by UNREAD_MAX over the limit.
                self.within_limit()?;
                self.read += chunk.len() as u64;
                let limit = self.limits.body_bytes;
                if self.read > limit.saturating_add(UNREAD_MAX) {
                    return Err(MultipartError::BodyTooLarge { limit });
                }
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
        }
    }

    async fn fill_or(&mut self, at_end: &'static str) -> Result<()> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(MultipartError::Malformed(at_end))
        }
    }

    /// The next part's head, after skipping what is left of the current part; `None` after
    /// the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>> {
        loop {
            self.within_limit()?;
            match self.state {
                State::Done => return Ok(None),
                State::Content => while self.chunk().await?.is_some() {},
                State::Preamble => self.skip_preamble().await?,
                State::AfterBoundary => self.after_boundary().await?,
                State::Headers => return self.headers().await.map(Some),
            }
        }
    }

    async fn skip_preamble(&mut self) -> Result<()> {
        loop {
            if let Some(at) = find(&self.buf, &self.delimiter) {
                self.count_preamble(at)?;
                self.buf.advance(at + self.delimiter.len());
                self.state = State::AfterBoundary;
                return Ok(());
            }
            // Keep what could be the start of the delimiter, drop the rest.
            let drop = self.buf.len().saturating_sub(self.delimiter.len() - 1);
            self.count_preamble(drop)?;
            self.buf.advance(drop);
            self.fill_or("the body has no boundary").await?;
        }
    }

    fn count_preamble(&mut self, dropped: usize) -> Result<()> {
        self.preamble += dropped;
        // The CRLF put in front is not the client's.
        if self.preamble > self.limits.preamble_bytes + 2 {
            return Err(MultipartError::PreambleTooLarge {
                limit: self.limits.preamble_bytes,
            });
        }
        Ok(())
    }

    /// After a boundary: `--` closes the body; otherwise optional blanks, then the CRLF
    /// that ends the delimiter line (left in the buffer: the headers begin with it).
    async fn after_boundary(&mut self) -> Result<()> {
        let junk =
            MultipartError::Malformed("a boundary is followed by something else than a line end");
        loop {
            match self.buf.first() {
                Some(b'-') if self.buf.len() >= 2 => {
                    if self.buf[1] != b'-' {
                        return Err(junk);
                    }
                    // The epilogue, if any, is never read.
                    self.state = State::Done;
                    return Ok(());
                }
                // Perhaps the start of `--`.
                Some(b'-') => {}
                _ => {
                    let padding = self
                        .buf
                        .iter()
                        .position(|b| *b != b' ' && *b != b'\t')
                        .unwrap_or(self.buf.len());
                    if padding > self.limits.header_bytes {
                        return Err(MultipartError::HeaderTooLarge {
                            limit: self.limits.header_bytes,
                        });
                    }
                    match &self.buf[padding..] {
                        [b'\r', b'\n', ..] => {
                            self.buf.advance(padding);
                            self.state = State::Headers;
                            return Ok(());
                        }
                        [] | [b'\r'] => {}
                        _ => return Err(junk),
                    }
                }
            }
            self.fill_or("the body ends right after a boundary").await?;
        }
    }

    /// The header block: from the delimiter line's CRLF to the blank line.
    async fn headers(&mut self) -> Result<PartHead> {
        let limit = self.limits.header_bytes;
        // Where the search goes on from: a header arriving in many small pieces is not
        // searched from its start again each time.
        let mut from = 0;
        let end = loop {
            if let Some(at) = find(&self.buf[from..], b"\r\n\r\n") {
                break from + at;
            }
            if self.buf.len() > limit + 4 {
                return Err(MultipartError::HeaderTooLarge { limit });
            }
            from = self.buf.len().saturating_sub(3);
            self.fill_or("the body ends inside a part's headers")
                .await?;
        };
        if end > limit + 2 {
            return Err(MultipartError::HeaderTooLarge { limit });
        }
        self.parts += 1;
        if self.parts > self.limits.parts {
            return Err(MultipartError::TooManyParts {
                limit: self.limits.parts,
            });
        }
        let head = if end == 0 {
            Err(MultipartError::Malformed(
                "a part has no Content-Disposition",
            ))
        } else {
            part_head(&self.buf[2..end])
        };
        self.buf.advance(end + 4);
        self.state = State::Content;
        head
    }

    /// The next piece of the current part's content; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if self.state != State::Content {
            return Ok(None);
        }
        self.within_limit()?;
        loop {
            match find(&self.buf, &self.delimiter) {
                Some(0) => {
                    self.buf.advance(self.delimiter.len());
                    self.state = State::AfterBoundary;
                    return Ok(None);
                }
                Some(at) => return Ok(Some(self.buf.split_to(at).freeze())),
                None => {
                    // All but what could be the start of the delimiter is content.
                    let safe = self.buf.len().saturating_sub(self.delimiter.len() - 1);
                    if safe > 0 {
                        return Ok(Some(self.buf.split_to(safe).freeze()));
                    }
                    self.fill_or("the body ends inside a part (no closing boundary)")
                        .await?;
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(haystack, needle)
}

/// The part's name and file name from its header block (lines `Name: value`, CRLF apart).
fn part_head(block: &[u8]) -> Result<PartHead> {
    let mut disposition = None;
    for line in split_lines(block) {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(MultipartError::Malformed("a part header is folded"));
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(MultipartError::Malformed("a part header has no colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return Err(MultipartError::Malformed(
                "a part header's name is not a token",
            ));
        }
        // RFC 9110 field-value: no control byte but TAB.
        if value
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err(MultipartError::Malformed(
                "a part header holds a control character",
            ));
        }
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.is_some() {
                return Err(MultipartError::Malformed(
                    "a part has two Content-Disposition headers",
                ));
            }
            let value = std::str::from_utf8(value)
                .map_err(|_| MultipartError::Malformed("a part header is not UTF-8"))?;
            disposition = Some(value.trim_matches([' ', '\t']).to_string());
        }
    }
    let disposition = disposition.ok_or(MultipartError::Malformed(
        "a part has no Content-Disposition",
    ))?;
    let (kind, params) = disposition
        .split_once(';')
        .unwrap_or((disposition.as_str(), ""));
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(MultipartError::Malformed("a part is not form-data"));
    }
    let mut name = None;
    let mut file_name = None;
    for (key, value) in parameters(params)? {
        match key.as_str() {
            "name" if name.is_none() => name = Some(value),
            "filename" if file_name.is_none() => file_name = Some(value),
            _ => {}
        }
    }
    let name = name.ok_or(MultipartError::Malformed("a part has no name"))?;
    Ok(PartHead { name, file_name })
}

fn split_lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(block);
    std::iter::from_fn(move || {
        let text = rest?;
        match find(text, b"\r\n") {
            Some(at) => {
                rest = Some(&text[at + 2..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `; key=value; key="quoted value"` → (lower-case key, value). In a quoted value `\"` is
/// a quote; any other backslash stays what it is (browsers do not escape backslashes, and
/// an old one's `C:\path\file` must not turn into another, harmless-looking name).
fn parameters(text: &str) -> Result<Vec<(String, String)>> {
    let bad = || MultipartError::Malformed("a header parameter is malformed");
    let mut params = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Ok(params);
        }
        let key_end = rest.find(['=', ';', ' ', '\t']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || !key.bytes().all(is_token) {
            return Err(bad());
        }
        rest = rest[key_end..].trim_start_matches([' ', '\t']);
        let Some(after) = rest.strip_prefix('=') else {
            return Err(bad());
        };
        rest = after.trim_start_matches([' ', '\t']);
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(bad()),
                    Some((at, '"')) => break at,
                    Some((_, '\\')) if chars.as_str().starts_with('"') => {
                        chars.next();
                        value.push('"');
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            rest = &quoted[end + 1..];
            value
        } else {
            let end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
            let value = rest[..end].to_string();
            rest = &rest[end..];
            value
        };
        rest = rest.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(';')) {
            return Err(bad());
        }
        params.push((key.to_ascii_lowercase(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::convert::Infallible;

    const B: &str = "XyZ-boundary";

    fn limits() -> Limits {
        Limits {
            header_bytes: 1024,
            preamble_bytes: 1024,
            parts: 100,
            body_bytes: u64::MAX,
            idle: Duration::from_secs(5),
        }
    }

    type Chunks = stream::Iter<std::vec::IntoIter<std::result::Result<Bytes, Infallible>>>;

    fn reader_of(chunks: Vec<Vec<u8>>, limits: Limits) -> MultipartReader<Chunks> {
        let chunks: Vec<_> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        MultipartReader::new(stream::iter(chunks), B, limits)
    }

    /// Every part: (name, file name, content), or the error that stopped the read.
    async fn read_all<S, E>(
        reader: &mut MultipartReader<S>,
    ) -> Result<Vec<(String, Option<String>, Vec<u8>)>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut parts = Vec::new();
        while let Some(head) = reader.next_part().await? {
            let mut content = Vec::new();
            while let Some(chunk) = reader.chunk().await? {
                assert!(!chunk.is_empty(), "an empty chunk");
                content.extend_from_slice(&chunk);
            }
            parts.push((head.name, head.file_name, content));
        }
        Ok(parts)
    }

    fn form() -> Vec<u8> {
        format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"demo\"\r\n\r\n0190\r\n\
             --{B}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a b.csv\"\r\n\
             Content-Type: text/csv\r\n\r\nx,y\r\n1,2\r\n\r\n\
             --{B}--\r\n"
        )
        .into_bytes()
    }

    fn expected() -> Vec<(String, Option<String>, Vec<u8>)> {
        vec![
            ("demo".into(), None, b"0190".to_vec()),
            (
                "file".into(),
                Some("a b.csv".into()),
                b"x,y\r\n1,2\r\n".to_vec(),
            ),
        ]
    }

    #[tokio::test]
    async fn a_form_is_read_whole_however_it_is_cut_into_chunks() {
        let body = form();
        assert_eq!(
            read_all(&mut reader_of(vec![body.clone()], limits()))
                .await
                .unwrap(),
            expected()
        );
        // Every split into two chunks, and byte by byte: boundaries, CRLFs and header
        // ends cut across chunks.
        for at in 0..=body.len() {
            let chunks = vec![body[..at].to_vec(), body[at..].to_vec()];
            let parts = read_all(&mut reader_of(chunks, limits())).await;
            assert_eq!(parts.unwrap(), expected(), "split at {at}");
        }
        let bytes = body.iter().map(|b| vec![*b]).collect();
        assert_eq!(
            read_all(&mut reader_of(bytes, limits())).await.unwrap(),
            expected()
        );
    }

    #[tokio::test]
    async fn content_that_looks_almost_like_a_boundary_is_content() {
        let tricky = format!("a\r\n--{}\r\n-\r\n--XyZ\r\r\n\r\n--", &B[..B.len() - 1]);
        let body = format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"t\"\r\n\r\n\
             {tricky}\r\n--{B}--"
        );
        let body = body.into_bytes();
        for at in 0..=body.len() {
            let chunks = vec![body[..at].to_vec(), body[at..].to_vec()];
            let parts = read_all(&mut reader_of(chunks, limits())).await.unwrap();
            assert_eq!(parts[0].2, tricky.as_bytes(), "split at {at}");
        }
    }

    #[tokio::test]
    async fn a_preamble_and_an_epilogue_are_ignored_and_padding_is_allowed() {
        let body = format!(
            "this is a preamble\r\n--{B} \t\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
             --{B}--\r\nthe epilogue, never read"
        );
        let parts = read_all(&mut reader_of(vec![body.into_bytes()], limits()))
            .await
            .unwrap();
        assert_eq!(parts, vec![("a".into(), None, b"1".to_vec())]);
        // The epilogue is not even pulled from the body.
        let mut reader = reader_of(
            vec![format!("--{B}--").into_bytes(), b"not read".to_vec()],
            limits(),
        );
        assert!(reader.next_part().await.unwrap().is_none());
        assert!(reader.body.next().await.is_some());
    }

    #[tokio::test]
    async fn empty_parts_and_a_form_without_parts() {
        let body =
            format!("--{B}\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--{B}--\r\n");
        let parts = read_all(&mut reader_of(vec![body.into_bytes()], limits()))
            .await
            .unwrap();
        assert_eq!(parts, vec![("e".into(), None, Vec::new())]);
        let parts = read_all(&mut reader_of(
            vec![format!("--{B}--").into_bytes()],
            limits(),
        ))
        .await
        .unwrap();
        assert!(parts.is_empty());
    }

    #[tokio::test]
    async fn parts_can_be_skipped_unread() {
        let mut reader = reader_of(vec![form()], limits());
        assert_eq!(reader.next_part().await.unwrap().unwrap().name, "demo");
        let file = reader.next_part().await.unwrap().unwrap();
        assert_eq!(file.file_name.as_deref(), Some("a b.csv"));
        assert!(reader.next_part().await.unwrap().is_none());
        assert!(reader.next_part().await.unwrap().is_none());
        assert!(reader.chunk().await.unwrap().is_none());
    }

    async fn error_of(body: Vec<u8>, limits: Limits) -> MultipartError {
        read_all(&mut reader_of(vec![body], limits))
            .await
            .expect_err("the body is refused")
    }

    #[tokio::test]
    async fn malformed_bodies_are_refused() {
        let head = format!("--{B}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n");
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("no boundary at all", "just some text".to_string()),
            ("missing final boundary", format!("{head}content")),
            (
                "content ends at a delimiter",
                format!("{head}content\r\n--{B}"),
            ),
            ("ends inside the headers", format!("--{B}\r\nContent-Disp")),
            ("ends after a boundary", format!("--{B}")),
            ("junk after a boundary", format!("--{B}junk\r\n")),
            ("a lone CR after a boundary", format!("--{B}\rX")),
            (
                "no disposition",
                format!("--{B}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{B}--"),
            ),
            ("no headers", format!("--{B}\r\n\r\nx\r\n--{B}--")),
            (
                "not form-data",
                format!("--{B}\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--{B}--"),
            ),
            (
                "no name",
                format!(
                    "--{B}\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--{B}--"
                ),
            ),
            (
                "no colon",
                format!("--{B}\r\nContent-Disposition form-data\r\n\r\nx\r\n--{B}--"),
            ),
            (
                "folded",
                format!(
                    "--{B}\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\nx\r\n--{B}--"
                ),
            ),
            (
                "unterminated quote",
                format!("--{B}\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--{B}--"),
            ),
            (
                "twice",
                format!(
                    "--{B}\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\nx\r\n--{B}--"
                ),
            ),
            (
                "a bare LF in a value",
                format!(
                    "--{B}\r\nContent-Disposition: form-data; name=\"a\nb\"\r\n\r\nx\r\n--{B}--"
                ),
            ),
            (
                "NUL in a value",
                format!(
                    "--{B}\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\nx\r\n--{B}--"
                ),
            ),
        ];
        for (what, body) in cases {
            let err = error_of(body.into_bytes(), limits()).await;
            assert!(
                matches!(err, MultipartError::Malformed(_)),
                "{what}: {err:?}"
            );
            assert!(!err.is_too_large(), "{what}");
        }
        let not_utf8 = [
            format!("--{B}\r\nContent-Disposition: form-data; name=\"").into_bytes(),
            vec![0xff, b'"'],
            format!("\r\n\r\nx\r\n--{B}--").into_bytes(),
        ]
        .concat();
        assert!(matches!(
            error_of(not_utf8, limits()).await,
            MultipartError::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn header_parameters_are_read_as_browsers_write_them() {
        let cases = [
            (
                r#"form-data; name="file"; filename="a.csv""#,
                "file",
                Some("a.csv"),
            ),
            (r#"FORM-DATA;NAME=demo"#, "demo", None),
            (
                r#"form-data; name = "x" ; filename = "y z""#,
                "x",
                Some("y z"),
            ),
            (
                r#"form-data; name="f"; filename="say \"hi\".csv""#,
                "f",
                Some(r#"say "hi".csv"#),
            ),
            (
                r#"form-data; name="f"; filename="C:\x.csv""#,
                "f",
                Some(r"C:\x.csv"),
            ),
            (
                r#"form-data; name="f"; filename="a\\b.csv""#,
                "f",
                Some(r"a\\b.csv"),
            ),
            (
                "form-data; name=\"f\"; filename=\"données été.csv\"",
                "f",
                Some("données été.csv"),
            ),
            (
                "form-data; name=\"f\"; filename=\"tab\there\"",
                "f",
                Some("tab\there"),
            ),
            (
                r#"form-data; name="f"; filename="a;b=c.csv"; x=1"#,
                "f",
                Some("a;b=c.csv"),
            ),
            (r#"form-data; name="a"; name="b""#, "a", None),
            (r#"form-data; name="""#, "", None),
        ];
        for (disposition, name, file_name) in cases {
            let body = format!("--{B}\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--{B}--");
            let parts = read_all(&mut reader_of(vec![body.into_bytes()], limits()))
                .await
                .unwrap_or_else(|e| panic!("{disposition}: {e}"));
            assert_eq!(parts[0].0, name, "{disposition}");
            assert_eq!(parts[0].1.as_deref(), file_name, "{disposition}");
        }
        for bad in [
            r#"form-data; name"#,
            r#"form-data; name="a" junk"#,
            "form-data; =a",
        ] {
            let body = format!("--{B}\r\nContent-Disposition: {bad}\r\n\r\nx\r\n--{B}--");
            assert!(
                matches!(
                    error_of(body.into_bytes(), limits()).await,
                    MultipartError::Malformed(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert!(boundary("application/json").is_none());
        assert!(boundary("multipart/mixed; boundary=x").is_none());
        assert_eq!(
            boundary("multipart/form-data; boundary=abc")
                .unwrap()
                .unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("Multipart/Form-Data ; charset=utf-8; BOUNDARY=\"a b:c\"")
                .unwrap()
                .unwrap(),
            "a b:c"
        );
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"\"",
            "multipart/form-data; boundary=\"ends in space \"",
            "multipart/form-data; boundary=\"a\u{e9}\"",
            "multipart/form-data; boundary=\"unterminated",
        ] {
            assert!(boundary(bad).unwrap().is_err(), "{bad}");
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(boundary(&long).unwrap().is_err());
    }

    /// An endless stream of the same bytes, counting what was pulled.
    fn endless(
        unit: &'static [u8],
        pulled: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Unpin {
        let chunk = Bytes::from(unit.repeat((64 * 1024 / unit.len()).max(1)));
        stream::repeat(chunk).map(move |c| {
            pulled.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(c)
        })
    }

    #[tokio::test]
    async fn a_header_that_never_ends_is_cut_at_the_limit() {
        let pulled = std::sync::Arc::default();
        let start = format!("--{B}\r\nContent-Disposition: form-data; name=\"a\"; x=\"");
        let body = stream::iter([Ok(Bytes::from(start))]).chain(endless(b"a", pulled));
        let mut reader = MultipartReader::new(body, B, limits());
        let err = reader.next_part().await.unwrap_err();
        assert!(
            matches!(err, MultipartError::HeaderTooLarge { limit: 1024 }),
            "{err:?}"
        );
        assert!(err.is_too_large());
        assert!(
            reader.buf.len() < 1024 + 64 * 1024 + 64,
            "{}",
            reader.buf.len()
        );
        // A second part's header, too.
        let pulled = std::sync::Arc::default();
        let start = format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--{B}\r\nX-Long: "
        );
        let body = stream::iter([Ok(Bytes::from(start))]).chain(endless(b"x", pulled));
        let mut reader = MultipartReader::new(body, B, limits());
        let err = read_all(&mut reader).await.unwrap_err();
        assert!(
            matches!(err, MultipartError::HeaderTooLarge { .. }),
            "{err:?}"
        );
        // Padding after a boundary counts against it as well.
        let pulled = std::sync::Arc::default();
        let start = format!("--{B}");
        let body = stream::iter([Ok(Bytes::from(start))]).chain(endless(b" ", pulled));
        let err = read_all(&mut MultipartReader::new(body, B, limits()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, MultipartError::HeaderTooLarge { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_huge_preamble_is_cut_at_the_limit() {
        let pulled = std::sync::Arc::<std::sync::atomic::AtomicU64>::default();
        let body = endless(b"preamble\r\n", pulled.clone());
        let mut reader = MultipartReader::new(body, B, limits());
        let err = reader.next_part().await.unwrap_err();
        assert!(
            matches!(err, MultipartError::PreambleTooLarge { limit: 1024 }),
            "{err:?}"
        );
        assert!(pulled.load(std::sync::atomic::Ordering::Relaxed) <= 2 * 64 * 1024);
        // Just within it is fine.
        let body = [vec![b'p'; 1024], format!("\r\n--{B}--").into_bytes()].concat();
        assert!(
            read_all(&mut reader_of(vec![body], limits()))
                .await
                .unwrap()
                .is_empty()
        );
        let body = [vec![b'p'; 1025], format!("\r\n--{B}--").into_bytes()].concat();
        assert!(matches!(
            error_of(body, limits()).await,
            MultipartError::PreambleTooLarge { .. }
        ));
    }

    #[tokio::test]
    async fn a_million_tiny_parts_stop_at_the_part_limit_in_constant_memory() {
        let pulled = std::sync::Arc::<std::sync::atomic::AtomicU64>::default();
        let part: &'static [u8] =
            b"--XyZ-boundary\r\nContent-Disposition: form-data; name=\"s\"\r\n\r\n1\r\n";
        let body = endless(part, pulled.clone());
        let mut reader = MultipartReader::new(
            body,
            B,
            Limits {
                parts: 1_000_000,
                ..limits()
            },
        );
        let mut count = 0;
        let err = loop {
            match reader.next_part().await {
                Ok(Some(_)) => {
                    count += 1;
                    assert!(
                        reader.buf.capacity() <= 256 * 1024,
                        "{}",
                        reader.buf.capacity()
                    );
                }
                Ok(None) => panic!("an endless form ended"),
                Err(e) => break e,
            }
        };
        assert_eq!(count, 1_000_000);
        assert!(matches!(
            err,
            MultipartError::TooManyParts { limit: 1_000_000 }
        ));
    }

    #[tokio::test]
    async fn the_body_limit_can_be_raised_as_the_form_goes_on() {
        let body = form();
        // Exactly the first part's delimiter line and headers.
        let first_head = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let small = Limits {
            body_bytes: first_head as u64,
            ..limits()
        };
        let mut reader = reader_of(body.iter().map(|b| vec![*b]).collect(), small);
        let first = reader.next_part().await.unwrap().unwrap();
        assert_eq!(first.name, "demo");
        let err = read_all(&mut reader).await.unwrap_err();
        assert!(
            matches!(err, MultipartError::BodyTooLarge { limit } if limit == first_head as u64),
            "{err:?}"
        );

        let mut reader = reader_of(body.iter().map(|b| vec![*b]).collect(), small);
        reader.next_part().await.unwrap().unwrap();
        reader.allow_body_bytes(body.len() as u64);
        let rest = read_all(&mut reader).await.unwrap();
        assert_eq!(rest, expected()[1..]);
    }

    #[tokio::test]
    async fn a_form_whose_start_arrives_in_one_large_chunk_is_judged_by_what_it_used() {
        let body = form();
        let first_head = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // The demo field ends well within the limit, but the first chunk holds the whole
        // form: the limit is about where the demo field ends, not the chunk's size.
        let small = Limits {
            body_bytes: first_head as u64 + 64,
            ..limits()
        };
        assert!(body.len() > first_head + 64);
        let mut reader = reader_of(vec![body.clone()], small);
        let first = reader.next_part().await.unwrap().unwrap();
        assert_eq!(first.name, "demo");
        reader.allow_body_bytes(body.len() as u64);
        let rest = read_all(&mut reader).await.unwrap();
        assert_eq!(rest, expected()[1..]);

        // Not raised: the rest is still refused.
        let mut reader = reader_of(vec![body], small);
        reader.next_part().await.unwrap().unwrap();
        let err = read_all(&mut reader).await.unwrap_err();
        assert!(
            matches!(err, MultipartError::BodyTooLarge { .. }),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_cut_after_the_idle_time() {
        let start = Bytes::from(format!(
            "--{B}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nsome content, then nothing"
        ));
        let body = stream::iter([Ok::<_, Infallible>(start)]).chain(stream::pending());
        let mut reader = MultipartReader::new(body, B, limits());
        reader.next_part().await.unwrap().unwrap();
        // All but what could be the start of a delimiter.
        assert_eq!(&reader.chunk().await.unwrap().unwrap()[..], b"some conten");
        let err = reader.chunk().await.unwrap_err();
        assert!(
            matches!(err, MultipartError::Stalled { seconds: 5 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_body_is_an_interrupted_upload() {
        let body = stream::iter([
            Ok(Bytes::from(format!("--{B}\r\n"))),
            Err("connection reset"),
        ]);
        let err = read_all(&mut MultipartReader::new(body, B, limits()))
            .await
            .unwrap_err();
        assert!(matches!(&err, MultipartError::Body(e) if e == "connection reset"));
    }

    #[tokio::test]
    async fn large_content_streams_in_pieces_no_larger_than_the_chunks() {
        let content = vec![b'z'; 1 << 20];
        let body = [
            format!("--{B}\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n").into_bytes(),
            content.clone(),
            format!("\r\n--{B}--").into_bytes(),
        ]
        .concat();
        let chunks: Vec<Vec<u8>> = body.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
        let mut reader = reader_of(chunks, limits());
        reader.next_part().await.unwrap().unwrap();
        let mut got = 0;
        while let Some(chunk) = reader.chunk().await.unwrap() {
            assert!(chunk.len() <= 16 * 1024);
            assert!(reader.buf.len() < 16 * 1024 + 64);
            got += chunk.len();
        }
        assert_eq!(got, content.len());
    }

    #[test]
    fn find_finds_the_first_match() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"xyz", b"z"), Some(2));
    }
}
