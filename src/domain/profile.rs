//! What an uploaded file looks like, never what it says: computed while the file streams
//! into the spool, for the vendor's trial report. For CSV/TSV the delimiter, whether the
//! first line names the columns, the column names, each column's type and the row count; for
//! JSON the top-level keys, or an array's length and, for an array of records, their keys
//! with a type each. No cell or value is ever kept: a first line that is data is not taken
//! for names (the columns are `column 1…n`), names that are not plain text are dropped, and a
//! file that is not text is only named (`not_text`), never read as a table.
//!
//! The reading rules (dialect, header, cell types) are `tabular`'s, shared with the CSV
//! Explorer demo.
//!
//! Typing every cell costs far more than the disk write (a 1 GiB upload spent most of its
//! time there), so a CSV's column types come from its first `TYPED_BYTES`; past them, whole
//! records are only counted, by a quote-aware scan that jumps from quote to newline
//! (`memchr`) at the disk's speed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tabular::sniff::{Content, UTF8_BOM};
use tabular::{CellType, Dialect, layout};

/// Columns or keys kept at most, and the bytes kept of each name.
const MAX_NAMES: usize = 512;
const MAX_NAME_BYTES: usize = 128;
/// A CSV's bytes whose cells are typed; the rest is only counted in records.
const TYPED_BYTES: u64 = 16 << 20;
/// The start of a file looked at before reading it: what it is, and its dialect.
const HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum FileProfile {
    Csv {
        /// `,` `;` a tab or `|`.
        #[serde(default = "comma")]
        delimiter: String,
        /// Whether the first line names the columns. Without one they are `column 1…n`.
        #[serde(default = "yes")]
        header: bool,
        columns: Vec<Column>,
        /// Records after the header.
        rows: u64,
    },
    Json {
        /// `object`, `array` or `scalar`.
        top_level: String,
        /// An object's keys, in order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keys: Option<Vec<String>>,
        /// An array's number of elements.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<u64>,
        /// An array whose elements are all objects: how many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records: Option<u64>,
        /// The records' keys, in the order first met, with the type of their values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<Column>>,
    },
    /// Bytes that are not text (a workbook renamed `.csv`, a PDF, UTF-16): never read as a
    /// table, only named.
    #[serde(rename = "not_text")]
    NotText {
        /// What the file is, in words: "an Excel workbook".
        kind: String,
    },
}

fn comma() -> String {
    ",".into()
}

fn yes() -> bool {
    true
}

/// An uploaded file's name and profile (`None`: a format that is not profiled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfiledFile {
    pub name: String,
    pub profile: Option<FileProfile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// The narrowest type every non-empty field of a column fits (`tabular::CellType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// No non-empty field.
    Empty,
    Integer,
    Number,
    Boolean,
    /// A date, with or without a time of day.
    Date,
    Text,
}

impl From<CellType> for ColumnType {
    fn from(t: CellType) -> ColumnType {
        match t {
            CellType::Empty => ColumnType::Empty,
            CellType::Integer => ColumnType::Integer,
            CellType::Number => ColumnType::Number,
            CellType::Boolean => ColumnType::Boolean,
            CellType::Date => ColumnType::Date,
            CellType::Text => ColumnType::Text,
        }
    }
}

/// Which reader a file's extension asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `Some(b'\t')` for `.tsv`; `None`: sniffed.
    Csv(Option<u8>),
    Json,
}

/// Reads a file chunk by chunk as it streams past; memory stays bounded whatever its size.
/// It holds the first `HEAD_BYTES` back to judge what the file is and how it is written,
/// then reads on.
pub struct Profiler {
    format: Option<Format>,
    head: Vec<u8>,
    reader: Reader,
}

enum Reader {
    /// Still gathering the head.
    Head,
    Csv(Box<CsvProfiler>),
    Json(Box<JsonProfiler>),
    NotText(Content),
}

impl Profiler {
    /// A profiler for a file of this extension (lower case, without the dot).
    pub fn for_extension(extension: Option<&str>) -> Profiler {
        let format = match extension {
            Some("csv") => Some(Format::Csv(None)),
            Some("tsv") => Some(Format::Csv(Some(b'\t'))),
            Some("json") => Some(Format::Json),
            _ => None,
        };
        Profiler {
            format,
            head: Vec::new(),
            reader: Reader::Head,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.format.is_none() {
            return;
        }
        let mut chunk = chunk;
        if matches!(self.reader, Reader::Head) {
            let take = chunk.len().min(HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.head.len() < HEAD_BYTES {
                return;
            }
            self.start();
        }
        match &mut self.reader {
            Reader::Csv(p) => p.feed(chunk),
            Reader::Json(p) => p.feed(chunk),
            Reader::Head | Reader::NotText(_) => {}
        }
    }

    /// Judges the head, then reads it.
    fn start(&mut self) {
        let Some(format) = self.format else { return };
        let head = std::mem::take(&mut self.head);
        let content = Content::sniff(&head);
        if !content.is_text() && content != Content::Empty {
            self.reader = Reader::NotText(content);
            return;
        }
        let body = head.strip_prefix(UTF8_BOM).unwrap_or(&head);
        self.reader = match format {
            Format::Csv(delimiter) => {
                let dialect = match delimiter {
                    Some(d) => Dialect::sniff_with_delimiter(&head, d),
                    None => Dialect::sniff(&head),
                };
                let mut p = CsvProfiler::new(dialect);
                p.feed(body);
                Reader::Csv(Box::new(p))
            }
            Format::Json => {
                let mut p = JsonProfiler::default();
                p.feed(body);
                Reader::Json(Box::new(p))
            }
        };
    }

    pub fn finish(mut self) -> Option<FileProfile> {
        if matches!(self.reader, Reader::Head) {
            self.start();
        }
        match self.reader {
            Reader::Head => None,
            Reader::Csv(p) => Some(p.finish()),
            Reader::Json(p) => p.finish(),
            Reader::NotText(content) => Some(FileProfile::NotText {
                kind: content.describe().unwrap_or("not text").to_string(),
            }),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the next byte says whether it was doubled.
    QuoteInQuoted,
}

/// Reads records; the first one and up to `HEADER_SAMPLE_ROWS` below it are held (each
/// field cut to `MAX_NAME_BYTES`, at most `MAX_NAMES` of them) until it is known whether the
/// first one is a header. After that, fields are only typed.
struct CsvProfiler {
    dialect: Dialect,
    state: CsvState,
    /// The current field, up to what is needed to name or type it.
    field: Vec<u8>,
    field_len: usize,
    column: usize,
    record_has_content: bool,
    /// Records held while the header is undecided (the first is the candidate).
    held: Vec<Vec<String>>,
    /// The current record, while records are held.
    record: Vec<String>,
    /// Decided: the column names (from the header, or `column 1…n`).
    names: Option<Vec<String>>,
    header: bool,
    types: Vec<CellType>,
    rows: u64,
    /// Bytes read cell by cell so far.
    typed: u64,
    /// Past `TYPED_BYTES` (at a record's end): records are only counted.
    counting: Option<Counter>,
}

/// Counts records without reading their cells: a newline ends one (if the line held
/// anything but a carriage return) unless it is inside quotes, and a quote opens a quoted
/// field only at a field's start, as the full reader has it.
#[derive(Default)]
struct Counter {
    quoted: bool,
    /// A quote was the last byte inside a quoted field: the next byte says whether it was
    /// doubled (still quoted) or closing.
    quote_pending: bool,
    /// The last byte ended a field (a delimiter or a newline).
    at_field_start: bool,
    line_has_content: bool,
}

impl Counter {
    /// Reads `chunk`; the records it ended.
    fn feed(&mut self, mut chunk: &[u8], delimiter: u8) -> u64 {
        let mut ended = 0;
        while !chunk.is_empty() {
            if self.quote_pending {
                self.quote_pending = false;
                if chunk[0] == b'"' {
                    chunk = &chunk[1..];
                    continue;
                }
                self.quoted = false;
            }
            if self.quoted {
                match memchr::memchr(b'"', chunk) {
                    Some(at) => {
                        self.quote_pending = true;
                        chunk = &chunk[at + 1..];
                    }
                    None => return ended,
                }
                continue;
            }
            let found = memchr::memchr2(b'"', b'\n', chunk);
            let span = &chunk[..found.unwrap_or(chunk.len())];
            if !self.line_has_content && span.iter().any(|&b| b != b'\r') {
                self.line_has_content = true;
            }
            if let Some(&last) = span.last() {
                self.at_field_start = last == delimiter;
            }
            let Some(at) = found else { return ended };
            if chunk[at] == b'\n' {
                if self.line_has_content {
                    ended += 1;
                }
                self.line_has_content = false;
                self.at_field_start = true;
            } else {
                self.line_has_content = true;
                self.quoted = self.at_field_start;
                self.at_field_start = false;
            }
            chunk = &chunk[at + 1..];
        }
        ended
    }
}

impl CsvProfiler {
    fn new(dialect: Dialect) -> CsvProfiler {
        CsvProfiler {
            dialect,
            state: CsvState::FieldStart,
            field: Vec::new(),
            field_len: 0,
            column: 0,
            record_has_content: false,
            held: Vec::new(),
            record: Vec::new(),
            names: None,
            header: false,
            types: Vec::new(),
            rows: 0,
            typed: 0,
            counting: None,
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.field_len += 1;
        self.record_has_content = true;
        let keep = if self.names.is_none() {
            MAX_NAME_BYTES
        } else {
            tabular::cell::MAX_TYPED_CELL + 1
        };
        if self.field.len() < keep {
            self.field.push(b);
        }
    }

    fn end_field(&mut self) {
        if self.names.is_none() {
            if self.record.len() < MAX_NAMES {
                self.record
                    .push(String::from_utf8_lossy(&self.field).into_owned());
            }
        } else if self.column < self.types.len() {
            let kind = if self.field_len > tabular::cell::MAX_TYPED_CELL {
                CellType::Text
            } else {
                CellType::of(&String::from_utf8_lossy(&self.field), &self.dialect)
            };
            self.types[self.column] = self.types[self.column].merge(kind);
        }
        self.field.clear();
        self.field_len = 0;
        self.column += 1;
        self.state = CsvState::FieldStart;
    }

    fn end_record(&mut self) {
        if self.record_has_content || self.column > 0 {
            self.end_field();
            if self.names.is_none() {
                self.held.push(std::mem::take(&mut self.record));
                if self.held.len() > layout::HEADER_SAMPLE_ROWS {
                    self.decide();
                }
            } else {
                self.rows += 1;
            }
        }
        self.column = 0;
        self.record_has_content = false;
        self.state = CsvState::FieldStart;
    }

    /// Decides on the header from the held records, then types them.
    fn decide(&mut self) {
        let held = std::mem::take(&mut self.held);
        let Some((first, below)) = held.split_first() else {
            self.names = Some(Vec::new());
            return;
        };
        self.header = layout::is_header(first, below, &self.dialect);
        let names: Vec<String> = if self.header {
            first.iter().map(|n| n.trim().to_string()).collect()
        } else {
            (0..first.len()).map(layout::column_name).collect()
        };
        self.types = vec![CellType::Empty; names.len()];
        let data = if self.header { below } else { &held[..] };
        for row in data {
            for (t, cell) in self.types.iter_mut().zip(row) {
                *t = t.merge(CellType::of(cell, &self.dialect));
            }
        }
        self.rows = data.len() as u64;
        self.names = Some(names);
    }

    fn feed(&mut self, chunk: &[u8]) {
        let delimiter = self.dialect.delimiter;
        if let Some(counter) = self.counting.as_mut() {
            self.rows += counter.feed(chunk, delimiter);
            return;
        }
        for (at, &b) in chunk.iter().enumerate() {
            match self.state {
                CsvState::FieldStart | CsvState::Unquoted => {
                    if b == delimiter {
                        self.record_has_content = true;
                        self.end_field();
                    } else if b == b'\n' {
                        self.end_record();
                        if self.names.is_some() && self.typed + at as u64 >= TYPED_BYTES {
                            let mut counter = Counter {
                                at_field_start: true,
                                ..Counter::default()
                            };
                            self.rows += counter.feed(&chunk[at + 1..], delimiter);
                            self.counting = Some(counter);
                            return;
                        }
                    } else if b == b'\r' {
                        // Part of a CRLF line ending.
                    } else if b == b'"' && self.state == CsvState::FieldStart {
                        self.record_has_content = true;
                        self.state = CsvState::Quoted;
                    } else {
                        self.push_byte(b);
                        self.state = CsvState::Unquoted;
                    }
                }
                CsvState::Quoted => {
                    if b == b'"' {
                        self.state = CsvState::QuoteInQuoted;
                    } else {
                        self.push_byte(b);
                    }
                }
                CsvState::QuoteInQuoted => {
                    if b == b'"' {
                        self.push_byte(b);
                        self.state = CsvState::Quoted;
                    } else if b == delimiter {
                        self.end_field();
                    } else if b == b'\n' {
                        self.end_record();
                    } else if b == b'\r' {
                    } else {
                        // A stray quote: read on as an unquoted field.
                        self.push_byte(b);
                        self.state = CsvState::Unquoted;
                    }
                }
            }
        }
        self.typed += chunk.len() as u64;
    }

    fn finish(mut self) -> FileProfile {
        if let Some(counter) = &self.counting {
            // The last record, without a newline after it.
            if counter.line_has_content || counter.quoted {
                self.rows += 1;
            }
        } else if self.record_has_content || self.column > 0 {
            self.end_record();
        }
        if self.names.is_none() {
            self.decide();
        }
        FileProfile::Csv {
            delimiter: self.dialect.delimiter_str().to_string(),
            header: self.header,
            columns: self
                .names
                .unwrap_or_default()
                .into_iter()
                .zip(self.types)
                .map(|(name, kind)| Column {
                    name,
                    kind: kind.into(),
                })
                .collect(),
            rows: self.rows,
        }
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Top {
    #[default]
    Unknown,
    Object,
    Array,
    Scalar,
}

/// What the string being read is.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Capture {
    #[default]
    Nothing,
    /// A key of the top-level object, or of a record in a top-level array.
    Key,
    /// A record's value: only its type is kept.
    Value,
}

/// A JSON reader that follows nesting only as deep as the shape needs: the top level, and
/// the records of a top-level array.
#[derive(Default)]
struct JsonProfiler {
    top: Top,
    depth: u32,
    in_string: bool,
    escaped: bool,
    capture: Capture,
    /// The string or scalar being captured (cut to `MAX_NAME_BYTES`).
    buf: Vec<u8>,
    /// The next string is a key (in the top object, or in a record).
    expect_key: bool,
    keys: Vec<String>,
    /// In an array at depth 1: elements seen, and whether one has started since the last comma.
    elements: u64,
    element_open: bool,
    /// Every element so far is an object.
    all_records: bool,
    /// Inside a record (an object at depth 2 of a top-level array).
    in_record: bool,
    columns: Vec<(String, CellType)>,
    column_index: HashMap<String, usize>,
    /// The column the value being read belongs to.
    value_of: Option<usize>,
}

impl JsonProfiler {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.in_string {
                if self.capture != Capture::Nothing
                    && self.buf.len() < MAX_NAME_BYTES
                    && (b != b'"' || self.escaped)
                {
                    self.buf.push(b);
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    self.end_string();
                }
                continue;
            }
            if b.is_ascii_whitespace() || (self.top == Top::Unknown && b >= 0x80) {
                self.end_scalar();
                continue; // white space, or a byte-order mark
            }
            if self.top == Top::Unknown {
                self.top = match b {
                    b'{' => Top::Object,
                    b'[' => Top::Array,
                    _ => Top::Scalar,
                };
                self.all_records = self.top == Top::Array;
            }
            if self.depth == 1 && self.top == Top::Array && !self.element_open && b != b']' {
                self.elements += 1;
                self.element_open = true;
                self.all_records &= b == b'{';
            }
            let record_level = self.in_record && self.depth == 2;
            match b {
                b'"' => {
                    self.in_string = true;
                    self.buf.clear();
                    let top_key = self.depth == 1 && self.top == Top::Object;
                    self.capture = if (top_key || record_level) && self.expect_key {
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
                    if self.depth == 1 {
                        self.expect_key = self.top == Top::Object;
                    }
                    if self.depth == 2 && self.top == Top::Array && b == b'{' {
                        self.in_record = true;
                        self.expect_key = true;
                    }
                }
                b'}' | b']' => {
                    self.end_scalar();
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth <= 1 {
                        self.in_record = false;
                    }
                }
                b',' => {
                    self.end_scalar();
                    if self.depth == 1 {
                        self.expect_key = self.top == Top::Object;
                        self.element_open = false;
                    } else if record_level {
                        self.expect_key = true;
                    }
                }
                b':' => {}
                _ => {
                    if record_level && self.value_of.is_some() && self.buf.len() < MAX_NAME_BYTES {
                        self.buf.push(b);
                    }
                }
            }
        }
    }

    fn end_string(&mut self) {
        match std::mem::take(&mut self.capture) {
            Capture::Nothing => {}
            Capture::Key => {
                let key = String::from_utf8_lossy(&self.buf).into_owned();
                let plain = layout::is_plain_name(&key);
                if self.in_record && self.depth == 2 {
                    self.value_of = if plain { self.column(key) } else { None };
                } else if plain && self.keys.len() < MAX_NAMES {
                    self.keys.push(key);
                }
            }
            Capture::Value => {
                let kind = CellType::of(&String::from_utf8_lossy(&self.buf), &Dialect::default());
                self.end_value(kind);
            }
        }
        self.buf.clear();
    }

    /// A number, `true`, `false` or `null` ends at white space, `,` or a bracket.
    fn end_scalar(&mut self) {
        if self.value_of.is_none() || self.buf.is_empty() || self.in_string {
            return;
        }
        let scalar = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        let kind = if scalar == "null" {
            CellType::Empty
        } else {
            CellType::of(&scalar, &Dialect::default())
        };
        self.end_value(kind);
    }

    fn end_value(&mut self, kind: CellType) {
        if let Some(i) = self.value_of.take() {
            self.columns[i].1 = self.columns[i].1.merge(kind);
        }
    }

    fn column(&mut self, key: String) -> Option<usize> {
        if let Some(&i) = self.column_index.get(&key) {
            return Some(i);
        }
        if self.columns.len() >= MAX_NAMES {
            return None;
        }
        self.column_index.insert(key.clone(), self.columns.len());
        self.columns.push((key, CellType::Empty));
        Some(self.columns.len() - 1)
    }

    fn finish(mut self) -> Option<FileProfile> {
        self.end_scalar();
        let records = self.top == Top::Array && self.all_records && self.elements > 0;
        let (top_level, keys, length) = match self.top {
            Top::Unknown => return None,
            Top::Object => ("object", Some(self.keys), None),
            Top::Array => ("array", None, Some(self.elements)),
            Top::Scalar => ("scalar", None, None),
        };
        let columns = self
            .columns
            .into_iter()
            .map(|(name, kind)| Column {
                name,
                kind: kind.into(),
            })
            .collect();
        Some(FileProfile::Json {
            top_level: top_level.to_string(),
            keys,
            length,
            records: records.then_some(self.elements),
            columns: records.then_some(columns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in chunks of every size from 1 to 7 bytes: the profile must not depend
    /// on where the chunks split.
    fn profile(extension: &str, data: &[u8]) -> Option<FileProfile> {
        let whole = {
            let mut p = Profiler::for_extension(Some(extension));
            p.feed(data);
            p.finish()
        };
        for size in 1..=7 {
            let mut p = Profiler::for_extension(Some(extension));
            for chunk in data.chunks(size) {
                p.feed(chunk);
            }
            assert_eq!(p.finish(), whole, "chunks of {size}");
        }
        whole
    }

    fn columns(p: &FileProfile) -> Vec<(&str, ColumnType)> {
        match p {
            FileProfile::Csv { columns, .. } => {
                columns.iter().map(|c| (c.name.as_str(), c.kind)).collect()
            }
            _ => panic!("not a CSV profile"),
        }
    }

    /// Records the counter finds in `body`, fed in chunks of `size`.
    fn counted(body: &[u8], size: usize) -> u64 {
        let mut counter = Counter {
            at_field_start: true,
            ..Counter::default()
        };
        let mut rows: u64 = body.chunks(size).map(|c| counter.feed(c, b',')).sum();
        if counter.line_has_content || counter.quoted {
            rows += 1;
        }
        rows
    }

    #[test]
    fn past_the_typed_bytes_records_are_counted_as_the_reader_reads_them() {
        let body =
            b"1,\"a\nb\",x\r\n\r\n2,\"say \"\"hi\"\"\n\",y\n3,un\"quoted\n,\n\"4\",\"\"\n5,last";
        let rows = |p: Option<FileProfile>| match p {
            Some(FileProfile::Csv { rows, .. }) => rows,
            other => panic!("{other:?}"),
        };
        let read = rows(profile("csv", &[b"id,v,w\n".as_slice(), body].concat()));
        assert_eq!(read, 6);
        for size in 1..=body.len() {
            assert_eq!(counted(body, size), read, "chunks of {size}");
        }
        // A file past TYPED_BYTES: typed up to a record's end, counted after, the same rows.
        let record = b"7,\"multi\nline\",z\n";
        let n = (TYPED_BYTES as usize / record.len()) * 2;
        let mut big = b"id,v,w\n".to_vec();
        for _ in 0..n {
            big.extend_from_slice(record);
        }
        let mut p = Profiler::for_extension(Some("csv"));
        for chunk in big.chunks(64 * 1024 + 3) {
            p.feed(chunk);
        }
        match p.finish() {
            Some(FileProfile::Csv { rows, columns, .. }) => {
                assert_eq!(rows, n as u64);
                assert_eq!(columns.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn csv_columns_types_and_rows() {
        let data = "\u{feff}id,name,score,active,joined,note\r\n\
                    1,Ada,3.5,true,2024-01-02,\"hello, world\"\r\n\
                    2,\"Bob \"\"B\"\"\",4,false,2024-02-03,\"two\nlines\"\r\n\
                    -3,,,,,\r\n";
        let p = profile("csv", data.as_bytes()).unwrap();
        assert_eq!(
            columns(&p),
            [
                ("id", ColumnType::Integer),
                ("name", ColumnType::Text),
                ("score", ColumnType::Number),
                ("active", ColumnType::Boolean),
                ("joined", ColumnType::Date),
                ("note", ColumnType::Text),
            ]
        );
        assert!(matches!(p, FileProfile::Csv { rows: 3, .. }));
        // Nothing of the values, only the shape.
        let json = serde_json::to_string(&p).unwrap();
        for value in ["Ada", "Bob", "hello", "2024-01-02", "3.5", "lines"] {
            assert!(!json.contains(value), "{value} leaked: {json}");
        }
    }

    #[test]
    fn csv_edge_cases() {
        let p = profile("csv", b"a,b\n1,2").unwrap();
        assert!(
            matches!(p, FileProfile::Csv { rows: 1, .. }),
            "no final newline"
        );
        let p = profile("csv", b"a,b\n\n1,2\n\n").unwrap();
        assert!(matches!(p, FileProfile::Csv { rows: 1, .. }), "blank lines");
        let p = profile("csv", b"").unwrap();
        assert_eq!(
            p,
            FileProfile::Csv {
                delimiter: ",".into(),
                header: false,
                columns: vec![],
                rows: 0
            }
        );
        let p = profile("tsv", b"x\ty\n1\tz\n").unwrap();
        assert_eq!(
            columns(&p),
            [("x", ColumnType::Integer), ("y", ColumnType::Text)]
        );
        let long = format!("n\n{}\n", "9".repeat(100));
        assert_eq!(
            columns(&profile("csv", long.as_bytes()).unwrap())[0].1,
            ColumnType::Text
        );
        assert_eq!(
            columns(&profile("csv", b"n\n1\n2.5\n").unwrap())[0].1,
            ColumnType::Number
        );
        assert_eq!(
            columns(&profile("csv", b"n\n1\nx\n").unwrap())[0].1,
            ColumnType::Text
        );
    }

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
        assert_eq!(Profiler::for_extension(Some("txt")).finish(), None);
    }

    fn typed(columns: &[Column]) -> Vec<(String, CellType)> {
        let back = |t: ColumnType| match t {
            ColumnType::Empty => CellType::Empty,
            ColumnType::Integer => CellType::Integer,
            ColumnType::Number => CellType::Number,
            ColumnType::Boolean => CellType::Boolean,
            ColumnType::Date => CellType::Date,
            ColumnType::Text => CellType::Text,
        };
        columns
            .iter()
            .map(|c| (c.name.clone(), back(c.kind)))
            .collect()
    }

    /// The report reads every real-world shape as `tabular::fixtures` says, the CSV
    /// Explorer's tests assert the same readings, and no value of any file is in a profile.
    #[test]
    fn every_fixture_reads_as_expected_and_keeps_no_value() {
        use tabular::fixtures::{Reading, all};
        for f in all(271828) {
            let extension = f.name.rsplit_once('.').map(|(_, e)| e);
            let p = profile(extension.unwrap(), &f.bytes).unwrap();
            match (&f.reading, &p) {
                (
                    Reading::Table {
                        delimiter,
                        header,
                        columns,
                        rows,
                    },
                    FileProfile::Csv {
                        delimiter: d,
                        header: h,
                        columns: c,
                        rows: r,
                    },
                ) => {
                    assert_eq!(d.as_bytes(), [*delimiter], "{}", f.name);
                    assert_eq!((h, r), (header, rows), "{}", f.name);
                    assert_eq!(&typed(c), columns, "{}", f.name);
                }
                (
                    Reading::Records { records, columns },
                    FileProfile::Json {
                        records: Some(n),
                        columns: Some(c),
                        length: Some(len),
                        ..
                    },
                ) => {
                    assert_eq!((n, len), (records, records), "{}", f.name);
                    assert_eq!(&typed(c), columns, "{}", f.name);
                }
                (Reading::Object { keys }, FileProfile::Json { keys: Some(k), .. }) => {
                    assert_eq!(k, keys, "{}", f.name)
                }
                (Reading::NotText(content), FileProfile::NotText { kind }) => {
                    assert_eq!(Some(kind.as_str()), content.describe(), "{}", f.name)
                }
                (reading, p) => panic!("{}: expected {reading:?}, got {p:?}", f.name),
            }
            let json = serde_json::to_string(&p).unwrap();
            for marker in &f.markers {
                assert!(
                    !json.contains(marker.as_str()),
                    "{marker} of {} in {json}",
                    f.name
                );
            }
        }
    }

    #[test]
    fn a_first_line_of_data_never_names_a_column() {
        let p = profile(
            "csv",
            b"\"00M\",\"Thigpen\",31.95,-89.23\n\"00R\",\"Livingston\",30.68,-95.01\n",
        )
        .unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("00M") && !json.contains("Thigpen"), "{json}");
        assert_eq!(
            columns(&p),
            [
                ("column 1", ColumnType::Text),
                ("column 2", ColumnType::Text),
                ("column 3", ColumnType::Number),
                ("column 4", ColumnType::Number),
            ]
        );
        assert!(matches!(
            p,
            FileProfile::Csv {
                rows: 2,
                header: false,
                ..
            }
        ));
        // Raw bytes in a header: not names.
        let p = profile("csv", b"ab\xFFc,n\n1,2\n").unwrap();
        assert!(matches!(p, FileProfile::Csv { header: false, .. }), "{p:?}");
        let p = profile("csv", b"ab\x01c\x02,n\n1,2\n").unwrap();
        assert!(matches!(p, FileProfile::NotText { .. }), "{p:?}");
        let p = profile("json", b"{\"ok\": 1, \"\x01bad\": 2}").unwrap();
        assert!(matches!(p, FileProfile::Json { keys: Some(ref k), .. } if k == &["ok"]));
    }

    #[test]
    fn bounded_on_hostile_files() {
        // A never-ending quote and a very wide line: the profile stays small.
        let mut data = b"a,b\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 10 << 20));
        let mut p = Profiler::for_extension(Some("csv"));
        p.feed(&data);
        assert!(matches!(p.finish(), Some(FileProfile::Csv { .. })));
        let wide = ",".repeat(1_000_000) + "\n" + &",".repeat(1_000_000);
        let mut p = Profiler::for_extension(Some("csv"));
        p.feed(wide.as_bytes());
        match p.finish() {
            Some(FileProfile::Csv { columns, .. }) => assert!(columns.len() <= MAX_NAMES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_longer_than_the_head_reads_the_same_in_any_chunks() {
        let mut data = "\u{feff}Datum;Menge;Ort\r\n".to_string();
        let mut rows = 0;
        while data.len() < 3 * HEAD_BYTES {
            rows += 1;
            data.push_str(&format!(
                "{:02}.03.2020;{rows},5;\"a;b\"\r\n",
                rows % 28 + 1
            ));
        }
        let expected = FileProfile::Csv {
            delimiter: ";".into(),
            header: true,
            columns: vec![
                Column {
                    name: "Datum".into(),
                    kind: ColumnType::Date,
                },
                Column {
                    name: "Menge".into(),
                    kind: ColumnType::Number,
                },
                Column {
                    name: "Ort".into(),
                    kind: ColumnType::Text,
                },
            ],
            rows,
        };
        for size in [1, 7, 4096, HEAD_BYTES - 1, HEAD_BYTES + 1, data.len()] {
            let mut p = Profiler::for_extension(Some("csv"));
            for chunk in data.as_bytes().chunks(size) {
                p.feed(chunk);
            }
            assert_eq!(p.finish().as_ref(), Some(&expected), "chunks of {size}");
        }
    }
}
