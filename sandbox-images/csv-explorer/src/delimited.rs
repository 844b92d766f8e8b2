//! Delimited text files, read with the `csv` crate under `tabular`'s rules: the dialect
//! sniffed from the head of the file (tab for `.tsv`/`.tab`) and whether the first line
//! names the columns, so the Explorer reads a file as testdrive's report does. Also the
//! line numbers and problems the prospect is told about.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tabular::{Dialect, layout};

use crate::stats::{MAX_COLUMNS, truncate_chars};

/// A longer value is cut for the statistics and the preview.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// The head of a file looked at for its dialect.
const SNIFF_BYTES: usize = 64 * 1024;
/// Characters of a field kept to decide on the header.
const HEADER_FIELD_CHARS: usize = 200;
const READ_BUF: usize = 256 * 1024;

/// How a delimited file is written, judged from its first bytes.
pub fn dialect(path: &Path, name: &str) -> io::Result<Dialect> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    File::open(path)?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)?;
    let lower = name.to_ascii_lowercase();
    Ok(if lower.ends_with(".tsv") || lower.ends_with(".tab") {
        Dialect::sniff_with_delimiter(&head, b'\t')
    } else {
        Dialect::sniff(&head)
    })
}

/// How a delimited file is laid out: its dialect, and whether its first record names the
/// columns (by `tabular`'s rules, shared with testdrive's report).
#[derive(Clone, Debug)]
pub struct Layout {
    pub dialect: Dialect,
    pub header: bool,
    /// One per field of the first record: its names, or `column 1…n`.
    pub names: Vec<String>,
}

/// Reads the first records of a file to learn its layout. The caller opens it again to
/// read it through: nothing here is held beyond a few rows' short fields.
pub fn layout(path: &Path, name: &str) -> io::Result<Layout> {
    let dialect = dialect(path, name)?;
    let mut r = Reader::open(path, &dialect)?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    while rows.len() <= layout::HEADER_SAMPLE_ROWS && r.read()? {
        rows.push(
            r.cells()
                .take(MAX_COLUMNS)
                .map(|c| truncate_chars(&c, HEADER_FIELD_CHARS))
                .collect(),
        );
    }
    let Some((first, below)) = rows.split_first() else {
        return Ok(Layout {
            dialect,
            header: false,
            names: Vec::new(),
        });
    };
    // The prospect's own view of their file: a first line that could be names is taken as
    // names (testdrive's report, for the vendor, takes it only when it can be nothing else).
    let header = layout::first_line(first, below, &dialect) != layout::FirstLine::Data;
    let names = if header {
        first.iter().map(|n| n.trim().to_string()).collect()
    } else {
        (0..first.len()).map(layout::column_name).collect()
    };
    Ok(Layout {
        dialect,
        header,
        names,
    })
}

/// The records of a file, one at a time, each with the line it starts on.
pub struct Reader {
    csv: csv::Reader<File>,
    record: csv::ByteRecord,
    path: PathBuf,
    delimiter: u8,
    len: u64,
    ends_with_newline: bool,
    line: u64,
    /// Where the last record read starts, as the csv crate counts (before any blank line
    /// it skipped).
    last_start: Option<csv::Position>,
    /// The first line that is not UTF-8.
    pub invalid_utf8_line: Option<u64>,
}

impl Reader {
    pub fn open(path: &Path, dialect: &Dialect) -> io::Result<Reader> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut last = [0u8; 1];
        if len > 0 {
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            file.rewind()?;
        }
        // Records end at `\n` only, as `tabular` splits lines: with CR LF the csv crate
        // would leave the LF to the next record and misplace its line number.
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(dialect.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(READ_BUF)
            .from_reader(file);
        Ok(Reader {
            csv,
            record: csv::ByteRecord::new(),
            path: path.to_path_buf(),
            delimiter: dialect.delimiter,
            len,
            ends_with_newline: last[0] == b'\n',
            line: 0,
            last_start: None,
            invalid_utf8_line: None,
        })
    }

    /// Reads the next record; `false` at the end of the file. Blank lines are skipped.
    pub fn read(&mut self) -> io::Result<bool> {
        loop {
            if !self.csv.read_byte_record(&mut self.record)? {
                return Ok(false);
            }
            self.last_start = self.record.position().cloned();
            // The csv crate places a record after the blank lines it skipped: count back
            // from its end instead, a `\n` the crate has consumed already.
            let end = self.csv.position();
            let unterminated = end.byte() == self.len && !self.ends_with_newline;
            let inner = self.record.as_slice().iter().filter(|&&b| b == b'\n');
            let back = u64::from(!unterminated) + inner.count() as u64;
            self.line = end.line().saturating_sub(back).max(1);
            // A CR LF blank line (an LF one the crate skips itself).
            if self.record.len() == 1 && &self.record[0] == b"\r" {
                continue;
            }
            if self.invalid_utf8_line.is_none()
                && self.record.iter().any(|f| std::str::from_utf8(f).is_err())
            {
                self.invalid_utf8_line = Some(self.line);
            }
            return Ok(true);
        }
    }

    /// The line the last record read starts on (1-based).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Fields in the last record read.
    pub fn fields(&self) -> usize {
        self.record.len()
    }

    /// Its fields as text (not UTF-8: U+FFFD), each cut at `MAX_FIELD_BYTES`.
    pub fn cells(&self) -> impl Iterator<Item = Cow<'_, str>> {
        let last = self.record.len().saturating_sub(1);
        self.record.iter().enumerate().map(move |(i, f)| {
            let f = if i == last {
                f.strip_suffix(b"\r").unwrap_or(f)
            } else {
                f
            };
            String::from_utf8_lossy(&f[..f.len().min(MAX_FIELD_BYTES)])
        })
    }

    /// Whether a field of the last record was cut.
    pub fn truncated(&self) -> bool {
        self.record.iter().any(|f| f.len() > MAX_FIELD_BYTES)
    }

    /// Once the file is read: the line where a quoted value opens that the file never
    /// closes. The csv crate reads such a value to the end of the file without a word, so
    /// the last record is looked at again, byte by byte.
    pub fn unclosed_quote_line(&self) -> io::Result<Option<u64>> {
        let Some(start) = &self.last_start else {
            return Ok(None);
        };
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start.byte()))?;
        let mut r = BufReader::new(file);
        if start.byte() == 0 && r.fill_buf()?.starts_with(tabular::sniff::UTF8_BOM) {
            r.consume(tabular::sniff::UTF8_BOM.len());
        }
        open_quote(r.bytes(), self.delimiter, start.line())
    }
}

/// Follows one record from its start (`line`, maybe behind blank lines): the line of a
/// quote that opens a field and is still open at the end.
fn open_quote(
    bytes: impl Iterator<Item = io::Result<u8>>,
    delimiter: u8,
    mut line: u64,
) -> io::Result<Option<u64>> {
    #[derive(PartialEq)]
    enum S {
        Blank,
        FieldStart,
        Plain,
        Quoted,
        QuoteInQuoted,
    }
    let (mut s, mut opened) = (S::Blank, 0);
    for b in bytes {
        let b = b?;
        s = match (s, b) {
            (S::Blank, b'\r') => S::Blank,
            (S::Blank, b'\n') => {
                line += 1;
                S::Blank
            }
            (S::Blank | S::FieldStart, b'"') => {
                opened = line;
                S::Quoted
            }
            (S::Quoted, b'"') => S::QuoteInQuoted,
            (S::QuoteInQuoted, b'"') => S::Quoted,
            (S::Quoted, b) => {
                line += u64::from(b == b'\n');
                S::Quoted
            }
            (_, b'\n') => return Ok(None),
            (_, b) if b == delimiter => S::FieldStart,
            _ => S::Plain,
        };
    }
    Ok((s == S::Quoted).then_some(opened))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    type Row = (u64, Vec<String>);

    /// Every record of `input` as (line, cells), then the lines of an unclosed quote and of
    /// the first bytes that are not UTF-8.
    fn read(input: &[u8]) -> (Vec<Row>, Option<u64>, Option<u64>) {
        let dir = crate::summary::tests::temp_dir("delimited");
        let path = dir.join("t.csv");
        fs::write(&path, input).unwrap();
        let mut r = Reader::open(&path, &Dialect::sniff(input)).unwrap();
        let mut out = Vec::new();
        while r.read().unwrap() {
            out.push((r.line(), r.cells().map(Cow::into_owned).collect()));
        }
        let quote = r.unclosed_quote_line().unwrap();
        let utf8 = r.invalid_utf8_line;
        fs::remove_dir_all(&dir).unwrap();
        (out, quote, utf8)
    }

    fn row(line: u64, cells: &[&str]) -> Row {
        (line, cells.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn quoted_fields_line_ends_and_blank_lines() {
        let (rows, quote, utf8) =
            read(b"name,city\r\n\"Smith, John\",\"Rome\"\r\n\r\n\"say \"\"hi\"\"\",\"two\r\nlines\"\r\nx,y");
        assert_eq!(
            rows,
            [
                row(1, &["name", "city"]),
                row(2, &["Smith, John", "Rome"]),
                row(4, &["say \"hi\"", "two\r\nlines"]),
                row(6, &["x", "y"]),
            ]
        );
        assert_eq!((quote, utf8), (None, None));
        let (rows, _, _) = read(b"\xEF\xBB\xBFid\n\n\n1\n\"a\nb\"\n2\n");
        assert_eq!(
            rows,
            [
                row(1, &["id"]),
                row(4, &["1"]),
                row(5, &["a\nb"]),
                row(7, &["2"])
            ]
        );
        // A stray quote is kept, like most tools do.
        assert_eq!(read(b"\"ab\"c,d\ne\"f,g\n").0[1], row(2, &["e\"f", "g"]));
    }

    #[test]
    fn problems_have_their_line() {
        let (rows, quote, _) = read(b"a,b\n1,\"oops\n2,3\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(quote, Some(2));
        assert_eq!(read(b"a\n\n\"never closed").1, Some(3));
        assert_eq!(read(b"a\n\"closed\"\n").1, None);
        let (rows, _, utf8) = read(b"a\nok\n\xff\xfe\n");
        assert_eq!(rows[2], row(3, &["\u{fffd}\u{fffd}"]));
        assert_eq!(utf8, Some(3));
        assert_eq!(read("a\né\n€\n𝄞\n".as_bytes()).2, None);
        assert_eq!(read(b"x\n\xE2\x82").2, Some(2));
    }

    #[test]
    fn huge_fields_are_cut() {
        let mut input = b"a,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_FIELD_BYTES * 3));
        input.extend(b",2\n");
        let (rows, _, _) = read(&input);
        assert_eq!(rows[1].1[0].len(), MAX_FIELD_BYTES);
        assert_eq!(rows[1].1[1], "2");
    }
}
