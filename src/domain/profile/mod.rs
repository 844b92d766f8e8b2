//! What an uploaded file looks like, never what it says: computed while the file streams
//! into the spool, for the vendor's trial report. For CSV/TSV the delimiter, whether the
//! first line names the columns, the column names, each column's type and the row count; for
//! JSON the top-level keys, or an array's length and, for an array of records, their keys
//! with a type each; for newline-delimited JSON (`.ndjson`, `.jsonl`, or a `.json` holding
//! more than one top-level value) the same as for an array, one value a line. No cell or
//! value is ever kept: a first line that is data is not taken for names (the columns are
//! `column 1…n`), names that are not plain text are dropped, and a file that is not text is
//! only named (`not_text`), never read as a table.
//!
//! This module owns the report's `FileProfile` and the `Profiler` the spool feeds chunk by
//! chunk; `csv` and `json` read the two kinds of text. The reading rules (dialect, header,
//! cell types) are `tabular`'s, shared with the CSV Explorer demo.
//!
//! Memory stays bounded whatever the file: a few fixed buffers, at most `MAX_NAMES` names of
//! at most `MAX_NAME_BYTES` each, and the header's sample rows, however long a line, a field
//! or an unclosed quote runs.

mod csv;
mod json;

use serde::{Deserialize, Serialize};
use tabular::Dialect;
use tabular::sniff::{Content, UTF8_BOM};

/// Columns or keys kept at most, and the bytes kept of each name.
const MAX_NAMES: usize = 512;
const MAX_NAME_BYTES: usize = 128;
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
    /// A JSON document, or newline-delimited JSON: `{"top_level":"lines","length":N,
    /// "records":N,"columns":[…]}` reads like an array of N records.
    Json {
        /// `object`, `array` or `scalar`; `lines` for one value a line (`.ndjson`, `.jsonl`,
        /// or a `.json` file holding more than one top-level value).
        top_level: String,
        /// An object's keys, in order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keys: Option<Vec<String>>,
        /// An array's number of elements; for `lines`, the number of lines that hold one
        /// whole value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        length: Option<u64>,
        /// An array whose elements are all objects, or `lines` that all hold one: how many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records: Option<u64>,
        /// The records' keys, in the order first met, with the type of their values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<Column>>,
        /// `lines` only, when there are any: lines that do not hold one whole JSON value (cut
        /// off, unbalanced, two values), left out of `length` and `records`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invalid_lines: Option<u64>,
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

impl From<tabular::CellType> for ColumnType {
    fn from(t: tabular::CellType) -> ColumnType {
        use tabular::CellType;
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
    /// `lines`: `.ndjson` or `.jsonl`, one value a line.
    Json { lines: bool },
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
    Csv(Box<csv::CsvProfiler>),
    Json(Box<json::JsonProfiler>),
    NotText(Content),
}

impl Profiler {
    /// A profiler for a file of this extension (lower case, without the dot).
    pub fn for_extension(extension: Option<&str>) -> Profiler {
        let format = match extension {
            Some("csv") => Some(Format::Csv(None)),
            Some("tsv") => Some(Format::Csv(Some(b'\t'))),
            Some("json") => Some(Format::Json { lines: false }),
            Some("ndjson" | "jsonl") => Some(Format::Json { lines: true }),
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
                let mut p = csv::CsvProfiler::new(dialect);
                p.feed(body);
                Reader::Csv(Box::new(p))
            }
            Format::Json { lines } => {
                let mut p = json::JsonProfiler::new(lines);
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

    /// The heap this profiler holds now, in bytes: what the memory-bound tests watch.
    #[cfg(test)]
    fn footprint(&self) -> usize {
        self.head.capacity()
            + match &self.reader {
                Reader::Csv(p) => std::mem::size_of_val(&**p) + p.heap(),
                Reader::Json(p) => std::mem::size_of_val(&**p) + p.heap(),
                Reader::Head | Reader::NotText(_) => 0,
            }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tabular::CellType;

    /// Feeds `data` in chunks of every size from 1 to 7 bytes: the profile must not depend
    /// on where the chunks split.
    pub(super) fn profile(extension: &str, data: &[u8]) -> Option<FileProfile> {
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

    pub(super) fn columns(p: &FileProfile) -> Vec<(&str, ColumnType)> {
        match p {
            FileProfile::Csv { columns, .. } => {
                columns.iter().map(|c| (c.name.as_str(), c.kind)).collect()
            }
            FileProfile::Json {
                columns: Some(columns),
                ..
            } => columns.iter().map(|c| (c.name.as_str(), c.kind)).collect(),
            _ => panic!("no columns: {p:?}"),
        }
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
    fn extensions_choose_the_reader() {
        assert_eq!(Profiler::for_extension(Some("txt")).finish(), None);
        assert_eq!(Profiler::for_extension(None).finish(), None);
        for extension in ["ndjson", "jsonl"] {
            let p = profile(extension, b"{\"a\": 1}\n").unwrap();
            assert!(
                matches!(p, FileProfile::Json { ref top_level, records: Some(1), .. } if top_level == "lines"),
                "{p:?}"
            );
        }
    }

    /// Feeds `first`, then `chunk` until `total` bytes have gone in, in 256 KiB pieces as the
    /// spool does; the most heap the profiler held at any point after the head.
    fn peak_footprint(extension: &str, first: &[u8], chunk: &[u8], total: usize) -> usize {
        let mut p = Profiler::for_extension(Some(extension));
        p.feed(first);
        let (mut fed, mut peak) = (first.len(), 0);
        while fed < total {
            p.feed(chunk);
            fed += chunk.len();
            if fed > HEAD_BYTES {
                peak = peak.max(p.footprint());
            }
        }
        assert!(p.finish().is_some());
        peak
    }

    /// The heap a profiler may hold whatever it reads: the header's sample rows at their
    /// widest (`HEADER_SAMPLE_ROWS` + 1 records of `MAX_NAMES` names of `MAX_NAME_BYTES`),
    /// and fixed buffers.
    const BOUND: usize = 2 << 20;

    /// Hostile CSV, as (first bytes, a chunk fed again and again) of `piece` bytes: a line
    /// with no line break, a quote never closed, empty fields on one line, tiny fields on
    /// one line below a header.
    fn hostile_csv(piece: usize) -> [(Vec<u8>, Vec<u8>); 4] {
        let x = vec![b'x'; piece];
        let mut quote = b"a,b\n1,\"".to_vec();
        quote.extend_from_slice(&x);
        [
            (b"a,b\n".to_vec(), x.clone()),
            (quote, x),
            (Vec::new(), vec![b','; piece]),
            (b"a\n".to_vec(), b"1,".repeat(piece / 2)),
        ]
    }

    /// Hostile shapes, each fed twice as far the second time: the heap held must not grow
    /// with the input, and stays under `BOUND`.
    #[test]
    fn memory_is_bounded_whatever_the_file() {
        let piece = 256 * 1024;
        let [x, quote, commas, tiny] = hostile_csv(piece);
        let names: Vec<u8> = (0..piece / 8)
            .flat_map(|i| format!("n{i:06},").into_bytes())
            .collect();
        let record = br#"{"id": 12345, "name": "Ada", "score": 3.5, "ok": true, "at": "2024-01-02", "n": null}"#;
        let array = [record.as_slice(), b","]
            .concat()
            .repeat(piece / record.len());
        let lines = [record.as_slice(), b"\n"]
            .concat()
            .repeat(piece / record.len());
        let mut keys = Vec::new();
        for i in 0.. {
            keys.extend_from_slice(format!("\"key{i}\": [{i}, \"{i}\"], ").as_bytes());
            if keys.len() > piece {
                break;
            }
        }
        let cases: [(&str, &str, &[u8], &[u8]); 9] = [
            ("a line with no line break", "csv", &x.0, &x.1),
            ("a quote never closed", "csv", &quote.0, &quote.1),
            ("empty fields on one line", "csv", &commas.0, &commas.1),
            (
                "tiny fields on one line, below a header",
                "csv",
                &tiny.0,
                &tiny.1,
            ),
            ("a first line of endless names", "csv", b"", &names),
            ("a JSON array of records", "json", b"[", &array),
            ("NDJSON", "ndjson", b"", &lines),
            ("NDJSON in a .json file", "json", b"", &lines),
            ("a JSON object with endless keys", "json", b"{", &keys),
        ];
        for (what, extension, first, chunk) in cases {
            let short = peak_footprint(extension, first, chunk, 2 << 20);
            let long = peak_footprint(extension, first, chunk, 4 << 20);
            assert!(short < BOUND, "{what}: {short} bytes");
            assert_eq!(short, long, "{what}: grows with the input");
        }
    }

    /// At full size: a GiB on one line with no line break, behind an unclosed quote, and of
    /// empty fields, a GiB of tiny fields below a header, and a 200 MiB array of records.
    #[test]
    #[ignore = "reads 4 GiB: run in release (`cargo test --release --lib domain::profile -- --ignored`)"]
    fn a_gibibyte_of_hostile_csv_and_200_mib_of_records_in_bounded_memory() {
        for (first, chunk) in hostile_csv(256 * 1024) {
            assert!(peak_footprint("csv", &first, &chunk, 1 << 30) < BOUND);
        }
        let (n, p, footprints) = json::tests::large_array(200 << 20);
        assert!(
            footprints
                .iter()
                .all(|&f| f == footprints[0] && f < 64 * 1024)
        );
        assert!(matches!(p, FileProfile::Json { records: Some(r), .. } if r == n));
    }
}
