//! What an uploaded file looks like, never what it says: computed while the file streams
//! into the spool, for the vendor's trial report. For CSV/TSV the column names, each
//! column's inferred type and the row count; for JSON the top-level keys or the array's
//! length. No cell or value is ever kept (column names and keys describe the shape).

use serde::{Deserialize, Serialize};

/// Columns or keys kept at most, and the characters kept of each name.
const MAX_NAMES: usize = 512;
const MAX_NAME_BYTES: usize = 128;
/// A field longer than this is text, whatever it holds; shorter ones are classified.
const MAX_TYPED_FIELD: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum FileProfile {
    Csv {
        columns: Vec<Column>,
        /// Records after the header.
        rows: u64,
    },
    Json {
        /// `object`, `array` or `scalar`.
        top_level: String,
        /// An object's keys, in order.
        #[serde(skip_serializing_if = "Option::is_none")]
        keys: Option<Vec<String>>,
        /// An array's number of elements.
        #[serde(skip_serializing_if = "Option::is_none")]
        length: Option<u64>,
    },
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

/// The narrowest type every non-empty field of a column fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// No non-empty field.
    Empty,
    Integer,
    Number,
    Boolean,
    Date,
    Text,
}

impl ColumnType {
    fn of(field: &[u8]) -> ColumnType {
        let text = String::from_utf8_lossy(field);
        let t = text.trim();
        if t.is_empty() {
            return ColumnType::Empty;
        }
        if ["true", "false", "yes", "no"]
            .iter()
            .any(|b| t.eq_ignore_ascii_case(b))
        {
            return ColumnType::Boolean;
        }
        let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return ColumnType::Integer;
        }
        if t.bytes().any(|b| b.is_ascii_digit()) && t.parse::<f64>().is_ok_and(f64::is_finite) {
            return ColumnType::Number;
        }
        let b = t.as_bytes();
        if b.len() >= 10
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'-'
            && b[8..10].iter().all(u8::is_ascii_digit)
        {
            return ColumnType::Date;
        }
        ColumnType::Text
    }

    fn merge(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (Empty, t) | (t, Empty) => t,
            (a, b) if a == b => a,
            (Integer, Number) | (Number, Integer) => Number,
            _ => Text,
        }
    }
}

/// Reads a file chunk by chunk as it streams past; memory stays bounded whatever its size.
pub enum Profiler {
    Csv(CsvProfiler),
    Json(JsonProfiler),
    /// Not a format that is profiled.
    None,
}

impl Profiler {
    /// A profiler for a file of this extension (lower case, without the dot).
    pub fn for_extension(extension: Option<&str>) -> Profiler {
        match extension {
            Some("csv") => Profiler::Csv(CsvProfiler::new(b',')),
            Some("tsv") => Profiler::Csv(CsvProfiler::new(b'\t')),
            Some("json") => Profiler::Json(JsonProfiler::default()),
            _ => Profiler::None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Profiler::Csv(p) => p.feed(chunk),
            Profiler::Json(p) => p.feed(chunk),
            Profiler::None => {}
        }
    }

    pub fn finish(self) -> Option<FileProfile> {
        match self {
            Profiler::Csv(p) => Some(p.finish()),
            Profiler::Json(p) => p.finish(),
            Profiler::None => None,
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

pub struct CsvProfiler {
    delimiter: u8,
    state: CsvState,
    /// The current field, up to what is needed to name or type it.
    field: Vec<u8>,
    field_len: usize,
    column: usize,
    header_done: bool,
    record_has_content: bool,
    names: Vec<String>,
    types: Vec<ColumnType>,
    rows: u64,
}

impl CsvProfiler {
    fn new(delimiter: u8) -> CsvProfiler {
        CsvProfiler {
            delimiter,
            state: CsvState::FieldStart,
            field: Vec::new(),
            field_len: 0,
            column: 0,
            header_done: false,
            record_has_content: false,
            names: Vec::new(),
            types: Vec::new(),
            rows: 0,
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.field_len += 1;
        self.record_has_content = true;
        let keep = if self.header_done {
            MAX_TYPED_FIELD + 1
        } else {
            MAX_NAME_BYTES
        };
        if self.field.len() < keep {
            self.field.push(b);
        }
    }

    fn end_field(&mut self) {
        if !self.header_done {
            if self.names.len() < MAX_NAMES {
                // A byte-order mark is not part of the first name (it may come split over
                // chunks, so it is removed here rather than from the first chunk).
                let name = String::from_utf8_lossy(&self.field)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string();
                self.names.push(name);
                self.types.push(ColumnType::Empty);
            }
        } else if self.column < self.types.len() {
            let kind = if self.field_len > MAX_TYPED_FIELD {
                ColumnType::Text
            } else {
                ColumnType::of(&self.field)
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
            if self.header_done {
                self.rows += 1;
            }
            self.header_done = true;
        }
        self.column = 0;
        self.record_has_content = false;
        self.state = CsvState::FieldStart;
    }

    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match self.state {
                CsvState::FieldStart | CsvState::Unquoted => {
                    if b == self.delimiter {
                        self.record_has_content = true;
                        self.end_field();
                    } else if b == b'\n' {
                        self.end_record();
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
                    } else if b == self.delimiter {
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
    }

    fn finish(mut self) -> FileProfile {
        if self.record_has_content || self.column > 0 {
            self.end_record();
        }
        FileProfile::Csv {
            columns: self
                .names
                .into_iter()
                .zip(self.types)
                .map(|(name, kind)| Column { name, kind })
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

#[derive(Default)]
pub struct JsonProfiler {
    top: Top,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// In an object at depth 1: the next string is a key.
    expect_key: bool,
    key: Option<Vec<u8>>,
    keys: Vec<String>,
    /// In an array at depth 1: elements seen, and whether one has started since the last comma.
    elements: u64,
    element_open: bool,
}

impl JsonProfiler {
    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.in_string {
                if let Some(key) = &mut self.key
                    && key.len() < MAX_NAME_BYTES
                    && (b != b'"' || self.escaped)
                {
                    key.push(b);
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if let Some(key) = self.key.take()
                        && self.keys.len() < MAX_NAMES
                    {
                        self.keys.push(String::from_utf8_lossy(&key).into_owned());
                    }
                }
                continue;
            }
            if b.is_ascii_whitespace() || (self.top == Top::Unknown && b >= 0x80) {
                continue; // white space, or a byte-order mark
            }
            if self.top == Top::Unknown {
                self.top = match b {
                    b'{' => Top::Object,
                    b'[' => Top::Array,
                    _ => Top::Scalar,
                };
            }
            if self.depth == 1 && self.top == Top::Array && !self.element_open && b != b']' {
                self.elements += 1;
                self.element_open = true;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.top == Top::Object && self.expect_key {
                        self.key = Some(Vec::new());
                        self.expect_key = false;
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 1 {
                        self.expect_key = self.top == Top::Object;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 1 => {
                    self.expect_key = self.top == Top::Object;
                    self.element_open = false;
                }
                _ => {}
            }
        }
    }

    fn finish(self) -> Option<FileProfile> {
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
                length: None
            }
        );
        let p = profile("json", br#"[{"a": 1}, [2, 3], "x,y", 4]"#).unwrap();
        assert_eq!(
            p,
            FileProfile::Json {
                top_level: "array".into(),
                keys: None,
                length: Some(4)
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
}
