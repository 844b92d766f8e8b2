//! A JSON file's shape: what its top level is, an object's keys, an array's length and, for
//! records (the objects of a top-level array, or one a line in newline-delimited JSON), their
//! keys with a type each.
//!
//! A lenient scanner, not a validator: it follows strings and brackets only as deep as the
//! shape needs, so malformed JSON gives some shape, never a failure. Read one value a line,
//! a line that is not one whole value is set aside (`invalid_lines`), and cannot run into
//! the next.

use std::collections::HashMap;

use tabular::{CellType, Dialect, layout};

use super::{Column, FileProfile, MAX_NAME_BYTES, MAX_NAMES};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    Unknown,
    Object,
    Array,
    Scalar,
}

/// What the string being read is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    Nothing,
    /// A key of the top-level object, or of a record.
    Key,
    /// A record's value: only its type is kept.
    Value,
}

/// Follows nesting only as deep as the shape needs: the top level, and the records, at
/// depth 2 in a top-level array or at depth 1 when they are the top-level values.
pub(super) struct JsonProfiler {
    /// The kind of the first top-level value.
    top: Top,
    /// More than one top-level value (or `.ndjson`): reported as `lines`.
    lines: bool,
    /// A line break ends a value: in `.ndjson`, and in a `.json` whose first value fitted on
    /// its line and ended it (a pretty-printed stream of values is read by brackets).
    by_line: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    capture: Capture,
    /// The start of the string or scalar being captured.
    buf: [u8; MAX_NAME_BYTES],
    len: usize,
    /// The next string is a key (of a record, or of the top-level object).
    expect_key: bool,
    /// The top-level object's keys.
    keys: Vec<String>,
    /// In a top-level array: elements seen, whether one has started since the last comma,
    /// and whether every one so far is an object.
    elements: u64,
    element_open: bool,
    all_records: bool,
    /// Top-level values begun, and those counted (whole ones, when read by line).
    begun: u64,
    values: u64,
    all_objects: bool,
    /// A top-level scalar is being read.
    scalar_open: bool,
    /// Around the first value, to tell a stream of lines from pretty-printed values: a line
    /// break inside it, and one after it.
    first_spans_lines: bool,
    first_ends_line: bool,
    /// Read by line: the current line's value has begun (and whether it is an object), and
    /// whether the line is already known not to be one whole value.
    line_value: Option<bool>,
    line_bad: bool,
    invalid_lines: u64,
    /// Lines after the first value that began none and were not white space: invalid, if
    /// the file turns out to be read by line.
    stray_lines: u64,
    /// Inside a record.
    in_record: bool,
    columns: Vec<(String, CellType)>,
    column_index: HashMap<String, usize>,
    /// The column the value being read belongs to.
    value_of: Option<usize>,
    /// Read by line, what the current line adds, kept apart until the line proves whole:
    /// the types of its values by column, the columns they changed, and how many columns
    /// there were before it.
    line_types: Vec<CellType>,
    touched: Vec<usize>,
    committed: usize,
}

impl JsonProfiler {
    /// `lines`: `.ndjson` or `.jsonl`, one value a line.
    pub(super) fn new(lines: bool) -> JsonProfiler {
        JsonProfiler {
            top: Top::Unknown,
            lines,
            by_line: lines,
            depth: 0,
            in_string: false,
            escaped: false,
            capture: Capture::Nothing,
            buf: [0; MAX_NAME_BYTES],
            len: 0,
            expect_key: false,
            keys: Vec::new(),
            elements: 0,
            element_open: false,
            all_records: false,
            begun: 0,
            values: 0,
            all_objects: true,
            scalar_open: false,
            first_spans_lines: false,
            first_ends_line: false,
            line_value: None,
            line_bad: false,
            invalid_lines: 0,
            stray_lines: 0,
            in_record: false,
            columns: Vec::new(),
            column_index: HashMap::new(),
            value_of: None,
            line_types: Vec::new(),
            touched: Vec::new(),
            committed: 0,
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string && self.capture == Capture::Nothing && !self.escaped {
                // Nothing of this string is kept: on to what could end it.
                let rest = &chunk[i..];
                let next = if self.by_line {
                    memchr::memchr3(b'"', b'\\', b'\n', rest)
                } else {
                    memchr::memchr2(b'"', b'\\', rest)
                };
                match next {
                    Some(at) => i += at,
                    None => return,
                }
            }
            let b = chunk[i];
            i += 1;
            if self.in_string {
                self.string_byte(b);
            } else {
                self.byte(b);
            }
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
            self.keep(b);
            return;
        }
        match b {
            b'"' => {
                self.in_string = false;
                self.end_string();
            }
            // JSON has no line break inside a string: this line was cut off.
            b'\n' if self.by_line => self.end_line(),
            _ => {
                self.escaped = b == b'\\';
                self.keep(b);
            }
        }
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' && self.by_line {
            self.end_line();
            return;
        }
        if b.is_ascii_whitespace() || (self.top == Top::Unknown && b >= 0x80) {
            self.end_scalar();
            if b == b'\n' && self.begun == 1 {
                if self.depth == 0 {
                    self.first_ends_line = true;
                    self.stray_lines += u64::from(self.line_bad);
                    self.line_bad = false;
                } else {
                    self.first_spans_lines = true;
                }
            }
            return; // white space, or a byte-order mark
        }
        if self.depth == 0 && !self.top_level(b) {
            return;
        }
        if self.depth == 1
            && self.top == Top::Array
            && !self.lines
            && !self.element_open
            && b != b']'
        {
            self.elements += 1;
            self.element_open = true;
            self.all_records &= b == b'{';
        }
        let record_level = self.in_record && self.depth == self.record_depth();
        match b {
            b'"' => {
                self.in_string = true;
                self.len = 0;
                self.capture = if record_level && self.expect_key {
                    self.expect_key = false;
                    Capture::Key
                } else if record_level && self.value_of.is_some() {
                    Capture::Value
                } else {
                    Capture::Nothing
                };
            }
            b'{' | b'[' => {
                if record_level {
                    self.end_value(CellType::Text);
                }
                self.depth += 1;
                let record = b == b'{'
                    && (self.depth == 1
                        || (self.depth == 2 && self.top == Top::Array && !self.lines));
                if record {
                    self.in_record = true;
                    self.expect_key = true;
                }
            }
            b'}' | b']' => {
                self.end_scalar();
                self.depth -= 1;
                if self.depth < self.record_depth() {
                    self.in_record = false;
                }
            }
            b',' => {
                self.end_scalar();
                if self.depth == 1 && self.top == Top::Array && !self.lines {
                    self.element_open = false;
                }
                if record_level {
                    self.expect_key = true;
                }
            }
            b':' => {}
            _ => {
                if record_level && self.value_of.is_some() {
                    self.keep(b);
                }
            }
        }
    }

    /// The depth of a record's keys: in a top-level array, or a top-level value.
    fn record_depth(&self) -> u32 {
        if self.top == Top::Array && !self.lines {
            2
        } else {
            1
        }
    }

    /// A byte outside any value: a value begins, a top-level scalar goes on, or (a bracket
    /// closing nothing, a stray comma or colon) nothing that counts. Whether to read it on.
    fn top_level(&mut self, b: u8) -> bool {
        if matches!(b, b'}' | b']' | b',' | b':') {
            self.line_bad = true;
            return false;
        }
        let scalar = !matches!(b, b'{' | b'[' | b'"');
        if scalar && self.scalar_open {
            return true;
        }
        if self.top == Top::Unknown {
            self.top = match b {
                b'{' => Top::Object,
                b'[' => Top::Array,
                _ => Top::Scalar,
            };
            self.all_records = self.top == Top::Array;
        }
        self.begun += 1;
        if self.begun == 2 && !self.lines {
            self.lines = true;
            self.by_line = self.first_ends_line && !self.first_spans_lines;
            if self.by_line {
                self.invalid_lines = self.stray_lines;
            }
            self.committed = self.columns.len();
        }
        if self.by_line {
            // Two values on one line make it no line of NDJSON.
            self.line_bad |= self.line_value.is_some();
            self.line_value = Some(b == b'{');
        } else {
            self.values += 1;
            self.all_objects &= b == b'{';
        }
        self.scalar_open = scalar;
        true
    }

    fn keep(&mut self, b: u8) {
        if (self.capture != Capture::Nothing || !self.in_string)
            && let Some(slot) = self.buf.get_mut(self.len)
        {
            *slot = b;
            self.len += 1;
        }
    }

    fn end_string(&mut self) {
        let capture = std::mem::replace(&mut self.capture, Capture::Nothing);
        if capture == Capture::Nothing {
            return;
        }
        let buf = self.buf;
        let text = String::from_utf8_lossy(&buf[..self.len]);
        match capture {
            Capture::Nothing => {}
            Capture::Key => {
                let plain = layout::is_plain_name(&text);
                let top_key = self.top == Top::Object && !self.lines && self.depth == 1;
                if plain && top_key && self.keys.len() < MAX_NAMES {
                    self.keys.push(text.to_string());
                }
                self.value_of = if plain { self.column(&text) } else { None };
            }
            Capture::Value => self.end_value(CellType::of(&text, &Dialect::default())),
        }
        self.len = 0;
    }

    /// A number, `true`, `false` or `null` ends at white space, `,` or a bracket.
    fn end_scalar(&mut self) {
        self.scalar_open = false;
        if self.value_of.is_none() || self.len == 0 || self.in_string {
            return;
        }
        let scalar = String::from_utf8_lossy(&self.buf[..self.len]);
        let kind = if scalar == "null" {
            CellType::Empty
        } else {
            CellType::of(&scalar, &Dialect::default())
        };
        self.len = 0;
        self.end_value(kind);
    }

    fn end_value(&mut self, kind: CellType) {
        let Some(i) = self.value_of.take() else {
            return;
        };
        if !self.by_line {
            self.columns[i].1 = self.columns[i].1.merge(kind);
            return;
        }
        let t = &mut self.line_types[i];
        if *t == CellType::Empty && kind != CellType::Empty {
            self.touched.push(i);
        }
        *t = t.merge(kind);
    }

    /// Read by line: the line's value is whole, or is set aside.
    fn end_line(&mut self) {
        let whole = !self.line_bad && self.depth == 0 && !self.in_string;
        if whole {
            self.end_scalar();
        }
        match self.line_value.take() {
            Some(object) if whole => {
                self.values += 1;
                self.all_objects &= object;
            }
            Some(_) => self.invalid_lines += 1,
            None => self.invalid_lines += u64::from(self.line_bad),
        }
        for i in self.touched.drain(..) {
            let t = std::mem::replace(&mut self.line_types[i], CellType::Empty);
            if whole {
                self.columns[i].1 = self.columns[i].1.merge(t);
            }
        }
        if !whole {
            // Nothing of a line set aside stays, not even its new keys.
            for (key, _) in self.columns.drain(self.committed..) {
                self.column_index.remove(&key);
            }
            self.line_types.truncate(self.committed);
        }
        self.committed = self.columns.len();
        self.value_of = None;
        self.len = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.capture = Capture::Nothing;
        self.in_record = false;
        self.expect_key = false;
        self.scalar_open = false;
        self.line_bad = false;
    }

    fn column(&mut self, key: &str) -> Option<usize> {
        if let Some(&i) = self.column_index.get(key) {
            return Some(i);
        }
        if self.columns.len() >= MAX_NAMES {
            return None;
        }
        self.column_index
            .insert(key.to_string(), self.columns.len());
        self.columns.push((key.to_string(), CellType::Empty));
        self.line_types.push(CellType::Empty);
        Some(self.columns.len() - 1)
    }

    pub(super) fn finish(mut self) -> Option<FileProfile> {
        if self.by_line {
            self.end_line();
        } else {
            self.end_scalar();
        }
        let columns = |columns: Vec<(String, CellType)>| {
            columns
                .into_iter()
                .map(|(name, kind)| Column {
                    name,
                    kind: kind.into(),
                })
                .collect()
        };
        if self.lines {
            let records = self.all_objects && self.values > 0;
            return Some(FileProfile::Json {
                top_level: "lines".to_string(),
                keys: None,
                length: Some(self.values),
                records: records.then_some(self.values),
                columns: records.then(|| columns(self.columns)),
                invalid_lines: (self.invalid_lines > 0).then_some(self.invalid_lines),
            });
        }
        let records = self.top == Top::Array && self.all_records && self.elements > 0;
        let (top_level, keys, length) = match self.top {
            Top::Unknown => return None,
            Top::Object => ("object", Some(self.keys), None),
            Top::Array => ("array", None, Some(self.elements)),
            Top::Scalar => ("scalar", None, None),
        };
        Some(FileProfile::Json {
            top_level: top_level.to_string(),
            keys,
            length,
            records: records.then_some(self.elements),
            columns: records.then(|| columns(self.columns)),
            invalid_lines: None,
        })
    }

    /// The heap held beside the struct itself.
    #[cfg(test)]
    pub(super) fn heap(&self) -> usize {
        let names = self.keys.iter().chain(self.column_index.keys());
        self.keys.capacity() * std::mem::size_of::<String>()
            + self.columns.capacity() * std::mem::size_of::<(String, CellType)>()
            + self.column_index.capacity() * std::mem::size_of::<(String, usize)>()
            + self.line_types.capacity() * std::mem::size_of::<CellType>()
            + self.touched.capacity() * std::mem::size_of::<usize>()
            + names
                .chain(self.columns.iter().map(|c| &c.0))
                .map(String::capacity)
                .sum::<usize>()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::tests::{columns, profile};
    use super::super::{ColumnType, Profiler};
    use super::*;

    #[test]
    fn json_keys_or_length() {
        let p = profile(
            "json",
            br#" {"name": "Ada", "tags": ["a", {"x": 1}], "esc\"aped": {"inner": 2}, "n": null} "#,
        )
        .unwrap();
        assert_eq!(
            p,
            FileProfile::Json {
                top_level: "object".into(),
                keys: Some(vec![
                    "name".into(),
                    "tags".into(),
                    "esc\\\"aped".into(),
                    "n".into()
                ]),
                length: None,
                records: None,
                columns: None,
                invalid_lines: None,
            }
        );
        let p = profile("json", br#"[{"a": 1}, [2, 3], "x,y", 4]"#).unwrap();
        assert_eq!(
            p,
            FileProfile::Json {
                top_level: "array".into(),
                keys: None,
                length: Some(4),
                records: None,
                columns: None,
                invalid_lines: None,
            }
        );
        let p = profile("json", b"[ ]").unwrap();
        assert!(matches!(
            p,
            FileProfile::Json {
                length: Some(0),
                ..
            }
        ));
        let p = profile("json", b"42").unwrap();
        assert!(matches!(p, FileProfile::Json { ref top_level, .. } if top_level == "scalar"));
        assert_eq!(profile("json", b"  "), None);
        // Keys that are not plain text are not names.
        let p = profile("json", b"{\"ok\": 1, \"\x01bad\": 2}").unwrap();
        assert!(matches!(p, FileProfile::Json { keys: Some(ref k), .. } if k == &["ok"]));
        // A pretty-printed object, then a line break: still one value.
        let p = profile("json", b"{\n  \"a\": 1,\n  \"b\": [1,\n 2]\n}\n").unwrap();
        assert!(matches!(p, FileProfile::Json { keys: Some(ref k), .. } if k == &["a", "b"]));
    }

    const NDJSON: &[u8] = b"{\"id\": 7, \"name\": \"Ada Marker\", \"score\": 3, \"at\": \"2024-01-02\", \"tags\": [\"x\"]}\n\
        \r\n\
        {\"id\": 8, \"score\": 4.5, \"ok\": true, \"at\": \"2024-02-03\", \"name\": null, \"tags\": {\"a\": \"Nested Marker\"}}\r\n\
        \n\
        {\"id\": -9, \"name\": \"Bob Marker\", \"ok\": false, \"note\": \"line\\nbreak \\\"quoted\\\" Marker\"}";

    fn lines(p: &FileProfile) -> (u64, Option<u64>, Option<u64>) {
        match p {
            FileProfile::Json {
                top_level,
                length: Some(length),
                records,
                invalid_lines,
                keys: None,
                ..
            } if top_level == "lines" => (*length, *records, *invalid_lines),
            other => panic!("not lines: {other:?}"),
        }
    }

    #[test]
    fn ndjson_reads_like_an_array_of_records() {
        let expected = [
            ("id", ColumnType::Integer),
            ("name", ColumnType::Text),
            ("score", ColumnType::Number),
            ("at", ColumnType::Date),
            ("tags", ColumnType::Text),
            ("ok", ColumnType::Boolean),
            ("note", ColumnType::Text),
        ];
        for extension in ["ndjson", "jsonl", "json"] {
            let p = profile(extension, NDJSON).unwrap();
            assert_eq!(lines(&p), (3, Some(3), None), "{extension}");
            assert_eq!(columns(&p), expected, "{extension}");
            let json = serde_json::to_string(&p).unwrap();
            assert!(!json.contains("Marker") && !json.contains("7"), "{json}");
            assert!(json.starts_with(r#"{"format":"json","top_level":"lines","length":3,"records":3,"columns":[{"name":"id","type":"integer"}"#), "{json}");
        }
        // The same records as an array read the same.
        let array = format!(
            "[{}]",
            String::from_utf8_lossy(NDJSON)
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(",")
        );
        let p = profile("json", array.as_bytes()).unwrap();
        assert_eq!(columns(&p), expected);
        // Values that are not all objects: a length, no records.
        let p = profile("ndjson", b"{\"a\": 1}\n[1, 2]\n\"text\"\n3\n").unwrap();
        assert_eq!(lines(&p), (4, None, None));
        assert!(matches!(p, FileProfile::Json { columns: None, .. }));
        let p = profile("json", b"1\n2\n").unwrap();
        assert_eq!(lines(&p), (2, None, None));
        // Nothing but blank lines: no values.
        let p = profile("ndjson", b"\n \r\n").unwrap();
        assert_eq!(lines(&p), (0, None, None));
        // Pretty-printed values one after another are read by their brackets.
        let p = profile(
            "json",
            b"{\n \"a\": 1\n}\n{\n \"a\": 2.5,\n \"b\": \"x\"\n}\n",
        )
        .unwrap();
        assert_eq!(lines(&p), (2, Some(2), None));
        assert_eq!(
            columns(&p),
            [("a", ColumnType::Number), ("b", ColumnType::Text)]
        );
    }

    #[test]
    fn a_malformed_line_is_set_aside_and_the_rest_read() {
        let good = b"{\"a\": 1, \"b\": true}\n";
        let bad: [&[u8]; 8] = [
            b"{\"a\": 1, \"b\": tr",
            b"{\"a\": 1, \"b\": \"cut off",
            b"{\"a\": [1, 2, {\"b\": 3}",
            b"{\"a\": 1}}",
            b"{\"a\": 1} {\"a\": 2}",
            b"]",
            b"{\"a\": 1,, \"b\": true}}",
            b"\"unclosed",
        ];
        for (i, line) in bad.iter().enumerate() {
            for extension in ["ndjson", "json"] {
                // Bad lines in the middle, and cut off at the very end.
                let data = [good, *line, b"\n", good, good, *line].concat();
                let p = profile(extension, &data).unwrap();
                assert_eq!(lines(&p), (3, Some(3), Some(2)), "line {i} in .{extension}");
                assert_eq!(
                    columns(&p),
                    [("a", ColumnType::Integer), ("b", ColumnType::Boolean)],
                    "line {i} in .{extension}"
                );
            }
        }
        // Not JSON at all: no crash, and nothing taken for a record.
        let p = profile("ndjson", b"\x7f{{{]]]\"\n:::,,\n").unwrap();
        assert!(
            matches!(p, FileProfile::Json { records: None, .. }),
            "{p:?}"
        );
    }

    /// Streams a top-level array of about `total` bytes of records through a profiler, in
    /// 256 KiB chunks: its profile, and the heap it held after each chunk.
    pub(in super::super) fn large_array(total: usize) -> (u64, FileProfile, Vec<usize>) {
        let record = |i: u64| {
            format!(
                "{{\"id\": {i}, \"price\": {}, \"paid\": {}, \"day\": \"2024-{:02}-{:02}\", \
                 \"name\": \"customer {i}\", \"empty\": null, \"extra\": {{\"k\": [{i}]}}{}}},\n",
                if i.is_multiple_of(3) {
                    format!("{i}.25")
                } else {
                    i.to_string()
                },
                i.is_multiple_of(2),
                i % 12 + 1,
                i % 28 + 1,
                if i == 5 { ", \"late\": \"\"" } else { "" },
            )
        };
        // One chunk of distinct records, then the same records again to the end.
        let mut chunk = String::new();
        let mut n = 0;
        while chunk.len() < 256 * 1024 {
            n += 1;
            chunk.push_str(&record(n));
        }
        let mut p = Profiler::for_extension(Some("json"));
        p.feed(b"[\n");
        let (mut fed, mut records, mut footprints) = (2, 0, Vec::new());
        while fed + chunk.len() < total {
            p.feed(chunk.as_bytes());
            fed += chunk.len();
            records += n;
            footprints.push(p.footprint());
        }
        p.feed(&chunk.as_bytes()[..chunk.len() - 2]);
        p.feed(b"\n]\n");
        records += n;
        (records, p.finish().unwrap(), footprints)
    }

    /// An array of records far longer than any buffer: its records counted and typed to the
    /// last, in the memory of a small one (200 MiB: `a_200_mib_array_…` in `super::tests`).
    #[test]
    fn a_large_array_of_records_streams_in_bounded_memory() {
        let (n, p, footprints) = large_array(8 << 20);
        assert!(
            footprints
                .iter()
                .all(|&f| f == footprints[0] && f < 64 * 1024),
            "{footprints:?}"
        );
        assert!(
            matches!(p, FileProfile::Json { length: Some(l), records: Some(r), .. } if l == n && r == n),
            "{n} records: {p:?}"
        );
        assert_eq!(
            columns(&p),
            [
                ("id", ColumnType::Integer),
                ("price", ColumnType::Number),
                ("paid", ColumnType::Boolean),
                ("day", ColumnType::Date),
                ("name", ColumnType::Text),
                ("empty", ColumnType::Empty),
                ("extra", ColumnType::Text),
                ("late", ColumnType::Empty),
            ]
        );
    }
}
