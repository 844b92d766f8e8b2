//! A small streaming CSV reader (RFC 4180 plus the usual real-world leniency).
//!
//! Memory is bounded no matter what the input looks like: every field keeps
//! at most `MAX_FIELD_BYTES`, a record at most `MAX_RECORD_BYTES` and
//! `MAX_FIELDS` fields; anything beyond is counted but dropped. UTF-8 is
//! validated on the full byte stream (not just the kept bytes), so
//! `csv-explorer check` can report the first bad line precisely.

use std::io::{self, BufRead};

pub const MAX_FIELD_BYTES: usize = 64 * 1024;
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
pub const MAX_FIELDS: usize = 4096;

/// One parsed record. Fields are stored back to back in `data`.
#[derive(Default, Debug)]
pub struct Record {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Number of fields in the input, including ones beyond `MAX_FIELDS`.
    pub n_fields: usize,
    /// Some field or the record was cut to stay within the limits.
    pub truncated: bool,
    /// 1-based physical line the record starts on.
    pub line: u64,
    /// Nothing but a line break so far (no data, delimiter or quote).
    blank: bool,
}

impl Record {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get_bytes(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// Field `i` as text; invalid UTF-8 (or a multi-byte character cut by
    /// truncation) is replaced with U+FFFD.
    pub fn get(&self, i: usize) -> Option<std::borrow::Cow<'_, str>> {
        self.get_bytes(i).map(String::from_utf8_lossy)
    }

    pub fn iter(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.n_fields = 0;
        self.truncated = false;
    }
}

/// Streaming UTF-8 validator, one byte at a time (Unicode Table 3-7).
#[derive(Default, Clone, Copy, Debug)]
struct Utf8 {
    need: u8,
    lo: u8,
    hi: u8,
}

impl Utf8 {
    #[inline]
    fn feed(&mut self, b: u8) -> bool {
        if self.need == 0 {
            let (need, lo, hi) = match b {
                0x00..=0x7F => return true,
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xF0 => (3, 0x90, 0xBF),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                _ => return false,
            };
            *self = Utf8 { need, lo, hi };
            true
        } else if b < self.lo || b > self.hi {
            self.need = 0;
            false
        } else {
            self.need -= 1;
            self.lo = 0x80;
            self.hi = 0xBF;
            true
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    StartField,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

pub struct CsvReader<R> {
    inner: R,
    delim: u8,
    line: u64,
    skip_lf: bool,
    at_start: bool,
    eof: bool,
    utf8: Utf8,
    /// Line of the first invalid UTF-8 byte sequence, if any.
    pub invalid_utf8_line: Option<u64>,
    /// Start line of a quoted field that never got its closing quote.
    pub unterminated_quote_line: Option<u64>,
}

impl<R: BufRead> CsvReader<R> {
    pub fn new(inner: R, delim: u8) -> Self {
        CsvReader {
            inner,
            delim,
            line: 1,
            skip_lf: false,
            at_start: true,
            eof: false,
            utf8: Utf8::default(),
            invalid_utf8_line: None,
            unterminated_quote_line: None,
        }
    }

    /// Reads the next record into `rec`. Returns `false` at end of input.
    /// Blank lines are skipped.
    pub fn read_record(&mut self, rec: &mut Record) -> io::Result<bool> {
        loop {
            if !self.read_one(rec)? {
                return Ok(false);
            }
            // A blank line parses as one empty, unquoted field: skip it.
            if !(rec.blank && rec.n_fields == 1) {
                return Ok(true);
            }
        }
    }

    fn read_one(&mut self, rec: &mut Record) -> io::Result<bool> {
        rec.clear();
        rec.blank = true;
        if self.eof {
            return Ok(false);
        }
        rec.line = self.line;
        let mut state = State::StartField;
        let mut field_len = 0usize; // bytes of the current field seen so far
        let mut quote_line = 0u64;
        let mut any = false; // saw any byte belonging to this record
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                self.eof = true;
                if self.utf8.need != 0 && self.invalid_utf8_line.is_none() {
                    self.invalid_utf8_line = Some(self.line);
                }
                if state == State::Quoted && self.unterminated_quote_line.is_none() {
                    self.unterminated_quote_line = Some(quote_line);
                }
                if !any {
                    return Ok(false);
                }
                rec.end_field();
                return Ok(true);
            }
            let mut start = 0;
            if self.at_start {
                self.at_start = false;
                if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                    start = 3;
                }
            }
            let mut consumed = buf.len();
            let mut done = false;
            for (i, &b) in buf.iter().enumerate().skip(start) {
                if self.skip_lf {
                    self.skip_lf = false;
                    if b == b'\n' {
                        continue;
                    }
                }
                if (b >= 0x80 || self.utf8.need != 0)
                    && !self.utf8.feed(b)
                    && self.invalid_utf8_line.is_none()
                {
                    self.invalid_utf8_line = Some(self.line);
                }
                any = true;
                match state {
                    State::StartField | State::Unquoted => {
                        if b == self.delim {
                            rec.end_field();
                            field_len = 0;
                            state = State::StartField;
                            rec.blank = false;
                        } else if b == b'\n' || b == b'\r' {
                            self.line += 1;
                            self.skip_lf = b == b'\r';
                            rec.end_field();
                            consumed = i + 1;
                            done = true;
                            break;
                        } else if b == b'"' && state == State::StartField {
                            state = State::Quoted;
                            quote_line = self.line;
                            rec.blank = false;
                        } else {
                            rec.push(b, field_len);
                            field_len += 1;
                            state = State::Unquoted;
                        }
                    }
                    State::Quoted => {
                        if b == b'"' {
                            state = State::QuoteInQuoted;
                        } else {
                            if b == b'\n' {
                                self.line += 1;
                            }
                            rec.push(b, field_len);
                            field_len += 1;
                        }
                    }
                    State::QuoteInQuoted => {
                        if b == b'"' {
                            rec.push(b, field_len);
                            field_len += 1;
                            state = State::Quoted;
                        } else if b == self.delim {
                            rec.end_field();
                            field_len = 0;
                            state = State::StartField;
                        } else if b == b'\n' || b == b'\r' {
                            self.line += 1;
                            self.skip_lf = b == b'\r';
                            rec.end_field();
                            consumed = i + 1;
                            done = true;
                            break;
                        } else {
                            // `"abc"def` — keep the stray text, like most tools.
                            rec.push(b, field_len);
                            field_len += 1;
                            state = State::Unquoted;
                        }
                    }
                }
            }
            self.inner.consume(consumed);
            if done {
                return Ok(true);
            }
        }
    }
}

impl Record {
    #[inline]
    fn push(&mut self, b: u8, field_len: usize) {
        self.blank = false;
        if field_len < MAX_FIELD_BYTES
            && self.data.len() < MAX_RECORD_BYTES
            && self.ends.len() < MAX_FIELDS
        {
            self.data.push(b);
        } else {
            self.truncated = true;
        }
    }

    #[inline]
    fn end_field(&mut self) {
        self.n_fields += 1;
        if self.ends.len() < MAX_FIELDS {
            self.ends.push(self.data.len());
        } else {
            self.truncated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> (Vec<Vec<String>>, CsvReader<&[u8]>) {
        let mut r = CsvReader::new(input, b',');
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.read_record(&mut rec).unwrap() {
            out.push(rec.iter().map(|c| c.into_owned()).collect());
        }
        (out, r)
    }

    fn rows(input: &str) -> Vec<Vec<String>> {
        parse(input.as_bytes()).0
    }

    fn v(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn simple_and_quoted() {
        assert_eq!(
            rows("name,city,amount\n\"Smith, John\",Paris,12.5\nAnn,\"Rome\",3\n"),
            vec![
                v(&["name", "city", "amount"]),
                v(&["Smith, John", "Paris", "12.5"]),
                v(&["Ann", "Rome", "3"]),
            ]
        );
    }

    #[test]
    fn escaped_quotes_and_embedded_newlines() {
        let (out, r) = parse(b"a,b\n\"say \"\"hi\"\"\",\"two\nlines\"\nx,y\n");
        assert_eq!(
            out,
            vec![
                v(&["a", "b"]),
                v(&["say \"hi\"", "two\nlines"]),
                v(&["x", "y"])
            ]
        );
        assert_eq!(r.line, 5);
    }

    #[test]
    fn crlf_no_trailing_newline_and_blank_lines() {
        assert_eq!(
            rows("a,b\r\n\r\n1,2\r\n3,4"),
            vec![v(&["a", "b"]), v(&["1", "2"]), v(&["3", "4"])]
        );
    }

    #[test]
    fn empty_fields_and_quoted_empty_line() {
        assert_eq!(rows(",\n\"\"\n"), vec![v(&["", ""]), v(&[""])]);
        assert_eq!(rows(""), Vec::<Vec<String>>::new());
    }

    #[test]
    fn bom_is_skipped() {
        assert_eq!(parse(b"\xEF\xBB\xBFid\n1\n").0, vec![v(&["id"]), v(&["1"])]);
    }

    #[test]
    fn line_numbers() {
        let mut r = CsvReader::new(&b"a\n\"x\ny\"\n\nz\n"[..], b',');
        let mut rec = Record::default();
        let mut lines = Vec::new();
        while r.read_record(&mut rec).unwrap() {
            lines.push(rec.line);
        }
        assert_eq!(lines, vec![1, 2, 5]);
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let (out, r) = parse(b"a,b\n1,\"oops\n2,3\n");
        assert_eq!(out.len(), 2);
        assert_eq!(r.unterminated_quote_line, Some(2));
    }

    #[test]
    fn invalid_utf8_is_reported_with_line() {
        let (out, r) = parse(b"a\nok\n\xff\xfe\n");
        assert_eq!(out[2], v(&["\u{fffd}\u{fffd}"]));
        assert_eq!(r.invalid_utf8_line, Some(3));
        let (_, r) = parse("a\né\n€\n𝄞\n".as_bytes());
        assert_eq!(r.invalid_utf8_line, None);
        // Overlong encoding and a truncated sequence at EOF.
        assert_eq!(parse(b"\xC0\xAF\n").1.invalid_utf8_line, Some(1));
        assert_eq!(parse(b"x\n\xE2\x82").1.invalid_utf8_line, Some(2));
    }

    #[test]
    fn huge_field_is_truncated_not_buffered() {
        let mut input = b"a,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_FIELD_BYTES * 3));
        input.extend(b",2\n");
        let mut r = CsvReader::new(&input[..], b',');
        let mut rec = Record::default();
        assert!(r.read_record(&mut rec).unwrap());
        assert!(r.read_record(&mut rec).unwrap());
        assert!(rec.truncated);
        assert_eq!(rec.len(), 2);
        assert_eq!(rec.get_bytes(0).unwrap().len(), MAX_FIELD_BYTES);
        assert_eq!(rec.get(1).unwrap(), "2");
    }

    #[test]
    fn small_buffers_give_same_result() {
        let input = b"a,\"b\r\nc\",d\r\n\"x\"\"\",y,z\r\n";
        let reader = io::BufReader::with_capacity(1, &input[..]);
        let mut r = CsvReader::new(reader, b',');
        let mut rec = Record::default();
        let mut out: Vec<Vec<String>> = Vec::new();
        while r.read_record(&mut rec).unwrap() {
            out.push(rec.iter().map(|c| c.into_owned()).collect());
        }
        assert_eq!(out, vec![v(&["a", "b\r\nc", "d"]), v(&["x\"", "y", "z"])]);
    }

    #[test]
    fn stray_quote_is_kept() {
        assert_eq!(
            rows("\"ab\"c,d\ne\"f,g\n"),
            vec![v(&["abc", "d"]), v(&["e\"f", "g"])]
        );
    }
}
