//! A CSV or TSV file's shape: `csv-core` splits it into records and fields, `tabular` says
//! what the first line is and what each field holds.
//!
//! Typing every cell costs far more than the disk write (a 1 GiB upload spent most of its
//! time there), so the column types come from the first `TYPED_BYTES`; past them, whole
//! records are only counted. csv-core is the parser of record, but it walks a DFA byte by
//! byte: it counted records at 0.6 GB/s where jumping from quote to line break (`memchr`)
//! does 1.5 GB/s. So past `TYPED_BYTES` a `Counter` does that, by csv-core's rules: the
//! tests hold the two to the same count on every input of up to six of the bytes that
//! matter, split anywhere.

use csv_core::{ReadFieldResult, Reader, ReaderBuilder, Terminator};
use tabular::cell::MAX_TYPED_CELL;
use tabular::{CellType, Dialect, layout};

use super::{Column, FileProfile, MAX_NAME_BYTES, MAX_NAMES};

/// A CSV's bytes whose cells are typed; the rest is only counted in records.
pub(super) const TYPED_BYTES: u64 = 16 << 20;

/// What csv-core copies of a field past the bytes kept of it lands here, to be dropped.
const SPILL_BYTES: usize = 4096;

/// csv-core as the CSV Explorer reads a file: `"` quotes (doubled inside), a record ends at
/// CR, LF or CRLF, a line with nothing on it is no record, a quote that does not open a field
/// is an ordinary byte. Build one, never clone one: csv-core 0.1.13's `Clone` leaves the
/// copy's DFA without its byte classes, and at the end of the input it reports records forever.
pub(super) fn reader(delimiter: u8) -> Reader {
    ReaderBuilder::new()
        .delimiter(delimiter)
        .terminator(Terminator::CRLF)
        .quote(b'"')
        .double_quote(true)
        .build()
}

/// Reads records; the first one and up to `HEADER_SAMPLE_ROWS` below it are held (each
/// field cut to `MAX_NAME_BYTES`, at most `MAX_NAMES` of them) until it is known whether the
/// first one is a header. After that, fields are only typed, then, past `TYPED_BYTES`,
/// records only counted.
pub(super) struct CsvProfiler {
    dialect: Dialect,
    reader: Reader,
    /// The start of the current field: as much as naming or typing it needs.
    field: [u8; MAX_NAME_BYTES],
    kept: usize,
    /// The current field's length, kept or not.
    field_len: usize,
    spill: [u8; SPILL_BYTES],
    column: usize,
    /// Records held while the header is undecided (the first is the candidate).
    held: Vec<Vec<String>>,
    /// The current record, while records are held.
    record: Vec<String>,
    /// Decided: the column names (from the header, or `column 1…n`).
    names: Option<Vec<String>>,
    header: bool,
    types: Vec<CellType>,
    rows: u64,
    /// Bytes read field by field so far.
    typed: u64,
    /// Past `TYPED_BYTES` (at the end of a field): records are only counted.
    counting: Option<Counter>,
}

impl CsvProfiler {
    pub(super) fn new(dialect: Dialect) -> CsvProfiler {
        CsvProfiler {
            reader: reader(dialect.delimiter),
            dialect,
            field: [0; MAX_NAME_BYTES],
            kept: 0,
            field_len: 0,
            spill: [0; SPILL_BYTES],
            column: 0,
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

    pub(super) fn feed(&mut self, mut chunk: &[u8]) {
        if let Some(counter) = self.counting.as_mut() {
            self.rows += counter.feed(chunk);
            return;
        }
        // An empty input tells csv-core the file has ended.
        while !chunk.is_empty() {
            let (result, read) = self.read_field(chunk);
            chunk = &chunk[read..];
            self.typed += read as u64;
            if let ReadFieldResult::Field { record_end } = result {
                self.end_field();
                if record_end {
                    self.end_record();
                }
                // Between two fields csv-core is outside any quote, so the counter can take
                // over there, even inside a record (a line of a million fields).
                if self.names.is_some() && self.typed >= TYPED_BYTES {
                    let mut counter = Counter::at_field_start(self.dialect.delimiter, !record_end);
                    self.rows += counter.feed(chunk);
                    self.counting = Some(counter);
                    return;
                }
            }
        }
    }

    /// Reads on in the current field (`input` empty: to the end of the file), keeping its
    /// start; returns what csv-core found and the bytes it read.
    fn read_field(&mut self, input: &[u8]) -> (ReadFieldResult, usize) {
        let keep = if self.names.is_none() {
            MAX_NAME_BYTES
        } else {
            MAX_TYPED_CELL + 1
        };
        let (result, read, written) = if self.kept < keep {
            let (result, read, written) = self
                .reader
                .read_field(input, &mut self.field[self.kept..keep]);
            self.kept += written;
            (result, read, written)
        } else {
            self.reader.read_field(input, &mut self.spill)
        };
        self.field_len += written;
        (result, read)
    }

    fn end_field(&mut self) {
        let field = String::from_utf8_lossy(&self.field[..self.kept]);
        if self.names.is_none() {
            if self.record.len() < MAX_NAMES {
                self.record.push(field.into_owned());
            }
        } else if let Some(t) = self.types.get_mut(self.column) {
            let kind = if self.field_len > MAX_TYPED_CELL {
                CellType::Text
            } else {
                CellType::of(&field, &self.dialect)
            };
            *t = t.merge(kind);
        }
        self.kept = 0;
        self.field_len = 0;
        self.column += 1;
    }

    fn end_record(&mut self) {
        self.column = 0;
        if self.names.is_none() {
            self.held.push(std::mem::take(&mut self.record));
            if self.held.len() > layout::HEADER_SAMPLE_ROWS {
                self.decide();
            }
        } else {
            self.rows += 1;
        }
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

    pub(super) fn finish(mut self) -> FileProfile {
        match &self.counting {
            // The last record, without a line break after it.
            Some(counter) => self.rows += u64::from(counter.in_record),
            // An empty input: the end of the file, and of its last field and record if the
            // file did not end them.
            None => {
                while let ReadFieldResult::Field { record_end } = self.read_field(&[]).0 {
                    self.end_field();
                    if record_end {
                        self.end_record();
                    }
                }
            }
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

    /// The heap held beside the struct itself.
    #[cfg(test)]
    pub(super) fn heap(&self) -> usize {
        let strings = |r: &Vec<String>| {
            r.capacity() * std::mem::size_of::<String>()
                + r.iter().map(String::capacity).sum::<usize>()
        };
        self.held.capacity() * std::mem::size_of::<Vec<String>>()
            + self.held.iter().map(strings).sum::<usize>()
            + strings(&self.record)
            + self.names.as_ref().map_or(0, strings)
            + self.types.capacity() * std::mem::size_of::<CellType>()
    }
}

/// Counts records where csv-core would end them, without reading their fields: a CR, LF or
/// CRLF ends one unless it is inside quotes, a line with nothing on it is none, and a quote
/// opens a quoted field only at a field's start.
#[derive(Clone, Copy)]
struct Counter {
    delimiter: u8,
    quoted: bool,
    /// A quote was the last byte inside a quoted field: the next byte says whether it was
    /// doubled (still quoted) or closing.
    quote_pending: bool,
    /// The last byte ended a field (a delimiter or a line break).
    at_field_start: bool,
    /// A record has begun and not ended.
    in_record: bool,
}

impl Counter {
    /// Where csv-core is after reporting a field's end: inside a record unless it was the
    /// record's last.
    fn at_field_start(delimiter: u8, in_record: bool) -> Counter {
        Counter {
            delimiter,
            quoted: false,
            quote_pending: false,
            at_field_start: true,
            in_record,
        }
    }

    /// Reads `chunk`; the records it ended.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
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
                let Some(at) = memchr::memchr(b'"', chunk) else {
                    return ended;
                };
                self.quote_pending = true;
                chunk = &chunk[at + 1..];
                continue;
            }
            let found = memchr::memchr3(b'"', b'\n', b'\r', chunk);
            let span = &chunk[..found.unwrap_or(chunk.len())];
            if let Some(&last) = span.last() {
                self.in_record = true;
                self.at_field_start = last == self.delimiter;
            }
            let Some(at) = found else { return ended };
            let mut next = at + 1;
            if chunk[at] == b'"' {
                self.in_record = true;
                self.quoted = self.at_field_start;
                self.at_field_start = false;
            } else {
                ended += u64::from(self.in_record);
                self.in_record = false;
                self.at_field_start = true;
                // A CRLF's LF ends nothing more: one search a line, not two.
                if chunk[at] == b'\r' && chunk.get(next) == Some(&b'\n') {
                    next += 1;
                }
            }
            chunk = &chunk[next..];
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{columns, profile};
    use super::super::{ColumnType, Profiler};
    use super::*;
    use std::cell::RefCell;

    /// The records csv-core finds in `body`, fed in chunks of `size`.
    fn read(body: &[u8], size: usize) -> u64 {
        use csv_core::ReadRecordResult;
        // Building the reader's DFA costs more than reading a short input: one a thread,
        // reset for each input.
        thread_local!(static READER: RefCell<Reader> = RefCell::new(reader(b',')));
        READER.with_borrow_mut(|reader| {
            reader.reset();
            let (mut out, mut ends) = ([0; 4], [0; 2]);
            let mut records = 0;
            for mut chunk in body.chunks(size) {
                while !chunk.is_empty() {
                    let (result, read, _, _) = reader.read_record(chunk, &mut out, &mut ends);
                    chunk = &chunk[read..];
                    records += u64::from(result == ReadRecordResult::Record);
                }
            }
            // An empty input: the end of the file.
            while reader.read_record(&[], &mut out, &mut ends).0 == ReadRecordResult::Record {
                records += 1;
            }
            records
        })
    }

    /// The records the counter finds in `body`, fed in chunks of `size`.
    fn counted(body: &[u8], size: usize) -> u64 {
        let mut counter = Counter::at_field_start(b',', false);
        let rows: u64 = body.chunks(size).map(|c| counter.feed(c)).sum();
        rows + u64::from(counter.in_record)
    }

    #[test]
    fn past_the_typed_bytes_records_are_counted_as_the_reader_reads_them() {
        let body =
            b"1,\"a\nb\",x\r\n\r\n2,\"say \"\"hi\"\"\n\",y\n3,un\"quoted\n,\n\"4\",\"\"\n5,last";
        let rows = |p: Option<FileProfile>| match p {
            Some(FileProfile::Csv { rows, .. }) => rows,
            other => panic!("{other:?}"),
        };
        let read_rows = rows(profile("csv", &[b"id,v,w\n".as_slice(), body].concat()));
        assert_eq!(read_rows, 6);
        for size in 1..=body.len() {
            assert_eq!(counted(body, size), read_rows, "chunks of {size}");
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
        // A line of fields past TYPED_BYTES: the counter takes over between two of them, and
        // a quoted line break after that is no record's end.
        let mut wide = b"a,b\n".to_vec();
        wide.extend(b"1,2\n".repeat(30));
        wide.extend(b"12345678,".repeat(TYPED_BYTES as usize / 9 + 1));
        wide.extend(b"\"x\ny\"\r\n3,4\n");
        let mut p = Profiler::for_extension(Some("csv"));
        for chunk in wide.chunks(256 * 1024) {
            p.feed(chunk);
        }
        assert_eq!(rows(p.finish()), 32);
    }

    /// The counter is a shortcut, csv-core the parser of record: on every input made of the
    /// bytes that matter, split anywhere, they count the same records.
    #[test]
    fn the_counter_counts_what_csv_core_reads() {
        let mut tricky: Vec<Vec<u8>> = [
            &b"a,b\r\n\"c\r\nd\",e\r"[..],
            b"\"\"\"\",\"a\"b,\"\n\r\n\r\r\n,",
            b"x\"y\",\"z\"\"\"\r\n\"",
            b"\"open\n,\n",
            b"\r\r\n\n ",
            b",\"\"",
            b"\"a\"\r",
            b"\"a\"\"",
        ]
        .map(<[u8]>::to_vec)
        .to_vec();
        // Every string of up to 6 bytes over the alphabet that matters.
        let alphabet = b"a,\"\r\n";
        for len in 1..=6u32 {
            for mut k in 0..alphabet.len().pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                tricky.push(s);
            }
        }
        for s in &tricky {
            let expected = read(s, s.len());
            for size in 1..=s.len() {
                assert_eq!(counted(s, size), expected, "{:?} in chunks of {size}", s);
                assert_eq!(read(s, size), expected, "{:?} in chunks of {size}", s);
            }
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
        // Old Mac line ends (CR alone) end records, as in the CSV Explorer.
        let p = profile("csv", b"n,m\r1,2\r3,4\r").unwrap();
        assert!(
            matches!(
                p,
                FileProfile::Csv {
                    rows: 2,
                    header: true,
                    ..
                }
            ),
            "{p:?}"
        );
        // An unclosed quote runs to the end of the file: one last record.
        let p = profile("csv", b"n,m\n1,\"open\n2,3\n").unwrap();
        assert!(matches!(p, FileProfile::Csv { rows: 1, .. }), "{p:?}");
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
    }

    #[test]
    fn a_file_longer_than_the_head_reads_the_same_in_any_chunks() {
        use super::super::HEAD_BYTES;
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
