//! Listing the data directory and summarising each file (cached per
//! size + mtime).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::csvparse::{CsvReader, Record};
use crate::jsonscan::{self, ColumnMap, RowSink, Shape};
use crate::stats::{Table, TableBuilder};
use tabular::{Dialect, layout};

/// Most files listed from the data directory.
pub const MAX_FILES: usize = 500;
const READ_BUF: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Csv,
    Json,
    Other,
}

impl Kind {
    pub fn of(name: &str) -> Kind {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv" | "tsv" | "tab") => Kind::Csv,
            Some("json") => Kind::Json,
            _ => Kind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Json => "json",
            Kind::Other => "other",
        }
    }
}

pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("csv") => "text/csv; charset=utf-8",
        Some("tsv" | "tab") => "text/tab-separated-values; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "log" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file name that may be served: no path separators, no `..`, not hidden.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.contains("..")
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// Regular, non-hidden files of `dir`, sorted by name. Symlinks and
/// directories are skipped.
pub fn list_files(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if !valid_name(&name) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            path: e.path(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.truncate(MAX_FILES);
    Ok(out)
}

#[derive(Debug)]
pub struct FileSummary {
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
    pub kind: Kind,
    pub delimiter: Option<u8>,
    /// Whether the first line names the columns (delimited files).
    pub header: Option<bool>,
    pub table: Option<Table>,
    /// For JSON that is not an array.
    pub shape: Option<Shape>,
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl FileSummary {
    pub fn to_json(&self) -> serde_json::Value {
        let secs = self
            .modified
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut v = serde_json::json!({
            "name": self.name,
            "kind": self.kind.as_str(),
            "size": self.size,
            "modified": secs,
            "notes": self.notes,
            "error": self.error,
        });
        let o = v.as_object_mut().expect("object");
        if let Some(d) = self.delimiter {
            o.insert("delimiter".into(), (d as char).to_string().into());
        }
        if let Some(h) = self.header {
            o.insert("header".into(), h.into());
        }
        if let Some(t) = &self.table {
            o.insert("rows".into(), t.rows.into());
            o.insert(
                "columns".into(),
                t.columns
                    .iter()
                    .map(|c| c.to_json())
                    .collect::<Vec<_>>()
                    .into(),
            );
            if t.extra_columns > 0 {
                o.insert("columns_without_stats".into(), t.extra_columns.into());
            }
        }
        match &self.shape {
            Some(Shape::Object { keys, total }) => {
                let keys: Vec<_> = keys
                    .iter()
                    .map(|(k, d)| serde_json::json!({"key": k, "value": d}))
                    .collect();
                o.insert(
                    "json".into(),
                    serde_json::json!({"type": "object", "keys": keys, "key_count": total}),
                );
            }
            Some(Shape::Scalar(d)) => {
                o.insert(
                    "json".into(),
                    serde_json::json!({"type": "scalar", "value": d}),
                );
            }
            Some(Shape::Array { len, objects }) => {
                o.insert(
                    "json".into(),
                    serde_json::json!({"type": "array", "length": len, "objects": objects}),
                );
            }
            None => {}
        }
        v
    }
}

pub fn summarize(e: &Entry) -> FileSummary {
    let started = Instant::now();
    let mut s = FileSummary {
        name: e.name.clone(),
        size: e.size,
        modified: e.modified,
        kind: Kind::of(&e.name),
        delimiter: None,
        header: None,
        table: None,
        shape: None,
        notes: Vec::new(),
        error: None,
        elapsed: Duration::ZERO,
    };
    if s.kind != Kind::Other
        && let Some(what) = not_text(&e.path)
    {
        s.error = Some(format!("This file is {what}, not a CSV or JSON file."));
        s.elapsed = started.elapsed();
        return s;
    }
    let result = match s.kind {
        Kind::Csv => summarize_csv(&e.path, &e.name, &mut s),
        Kind::Json => summarize_json(&e.path, &mut s),
        Kind::Other => Ok(()),
    };
    if let Err(err) = result {
        s.error = Some(err.to_string());
    }
    s.elapsed = started.elapsed();
    s
}

/// What a file is when its bytes are not text (a workbook renamed `.csv`): never read as a
/// table.
fn not_text(path: &Path) -> Option<&'static str> {
    let mut r = open_buffered(path).ok()?;
    let head = r.fill_buf().ok()?;
    tabular::sniff::Content::sniff(&head[..head.len().min(SNIFF_BYTES)]).describe()
}

pub fn open_buffered(path: &Path) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(READ_BUF, File::open(path)?))
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

/// The head of a file looked at for its dialect.
const SNIFF_BYTES: usize = 64 * 1024;
/// Characters of a field kept to decide on the header.
const HEADER_FIELD_CHARS: usize = 200;

fn dialect_of(r: &mut BufReader<File>, name: &str) -> io::Result<Dialect> {
    let head = r.fill_buf()?;
    let head = &head[..head.len().min(SNIFF_BYTES)];
    let lower = name.to_ascii_lowercase();
    Ok(if lower.ends_with(".tsv") || lower.ends_with(".tab") {
        Dialect::sniff_with_delimiter(head, b'\t')
    } else {
        Dialect::sniff(head)
    })
}

/// Opens a CSV file with its sniffed delimiter (tab for .tsv/.tab), at its first record.
pub fn open_csv(path: &Path, name: &str) -> io::Result<CsvReader<BufReader<File>>> {
    let mut r = open_buffered(path)?;
    let dialect = dialect_of(&mut r, name)?;
    Ok(CsvReader::new(r, dialect.delimiter))
}

/// Reads the first records of a file to learn its layout. The caller opens it again to
/// read it through: nothing here is held beyond a few rows' short fields.
pub fn table_layout(path: &Path, name: &str) -> io::Result<Layout> {
    let mut r = open_buffered(path)?;
    let dialect = dialect_of(&mut r, name)?;
    let mut r = CsvReader::new(r, dialect.delimiter);
    let mut rec = Record::default();
    let mut rows: Vec<Vec<String>> = Vec::new();
    while rows.len() <= layout::HEADER_SAMPLE_ROWS && r.read_record(&mut rec)? {
        rows.push(
            rec.iter()
                .take(crate::stats::MAX_COLUMNS)
                .map(|c| crate::stats::truncate_chars(&c, HEADER_FIELD_CHARS))
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

fn summarize_csv(path: &Path, name: &str, s: &mut FileSummary) -> io::Result<()> {
    let layout = table_layout(path, name)?;
    let mut r = CsvReader::new(open_buffered(path)?, layout.dialect.delimiter);
    s.delimiter = Some(layout.dialect.delimiter);
    s.header = Some(layout.header);
    let mut rec = Record::default();
    if layout.names.is_empty() {
        s.notes.push("The file is empty.".into());
        s.table = Some(TableBuilder::new(Vec::new(), layout.dialect).finish());
        return Ok(());
    }
    let mut width = None;
    if layout.header {
        r.read_record(&mut rec)?;
        width = Some(rec.n_fields);
    } else {
        s.notes
            .push("The first line holds data, not column names: the columns are numbered.".into());
    }
    let mut t = TableBuilder::new(layout.names, layout.dialect);
    let (mut ragged, mut first_ragged, mut truncated) = (0u64, 0u64, 0u64);
    while r.read_record(&mut rec)? {
        for (i, cell) in rec.iter().enumerate() {
            t.cell(i, &cell);
        }
        t.end_row(rec.len());
        // The first line sets the width, header or not.
        let width = *width.get_or_insert(rec.n_fields);
        if rec.n_fields != width {
            if ragged == 0 {
                first_ragged = rec.line;
            }
            ragged += 1;
        }
        truncated += rec.truncated as u64;
    }
    if ragged > 0 {
        let width = width.unwrap_or_default();
        s.notes.push(format!(
            "{ragged} row(s) do not have {width} fields like the first line (first on line {first_ragged})."
        ));
    }
    if truncated > 0 {
        s.notes.push(format!(
            "{truncated} row(s) had very long values, cut for the statistics."
        ));
    }
    if let Some(l) = r.unterminated_quote_line {
        s.notes.push(format!(
            "A quoted value starting on line {l} is never closed."
        ));
    }
    if let Some(l) = r.invalid_utf8_line {
        s.notes.push(format!(
            "The file is not valid UTF-8 (first problem on line {l})."
        ));
    }
    s.table = Some(t.finish());
    Ok(())
}

struct StatsSink {
    map: ColumnMap,
    table: TableBuilder,
}

impl RowSink for StatsSink {
    fn column(&mut self, key: &str) -> Option<(usize, bool)> {
        let (i, new) = self.map.get_or_add(key)?;
        if new {
            self.table.add_column(key.to_string());
        }
        Some((i, new))
    }

    fn row(&mut self, cells: &[String]) -> Result<(), String> {
        for (i, c) in cells.iter().enumerate() {
            self.table.cell(i, c);
        }
        self.table.end_row(cells.len());
        Ok(())
    }
}

fn summarize_json(path: &Path, s: &mut FileSummary) -> io::Result<()> {
    let r = open_buffered(path)?;
    let mut sink = StatsSink {
        map: ColumnMap::default(),
        table: TableBuilder::new(Vec::new(), Dialect::default()),
    };
    match jsonscan::scan(r, &mut sink) {
        Ok(shape) => {
            if let Shape::Array { len, objects } = shape {
                if objects < len && objects > 0 {
                    s.notes.push(format!(
                        "{} of {len} elements are not objects; they are shown in the {} column.",
                        len - objects,
                        jsonscan::VALUE_COLUMN
                    ));
                }
                s.table = Some(
                    std::mem::replace(
                        &mut sink.table,
                        TableBuilder::new(Vec::new(), Dialect::default()),
                    )
                    .finish(),
                );
            }
            s.shape = Some(shape);
        }
        Err(e) => {
            if e.is_io() {
                return Err(io::Error::other(e));
            }
            s.error = Some(format!("Invalid JSON: {e}"));
            if sink.table.rows() > 0 {
                s.notes
                    .push("The table shows the rows read before the error.".into());
                s.table = Some(
                    std::mem::replace(
                        &mut sink.table,
                        TableBuilder::new(Vec::new(), Dialect::default()),
                    )
                    .finish(),
                );
            }
        }
    }
    if sink.map.overflow {
        s.notes.push(format!(
            "Only the first {} distinct keys are shown as columns.",
            crate::stats::MAX_COLUMNS
        ));
    }
    Ok(())
}

/// Summaries keyed by file name; recomputed when size or mtime change.
/// Concurrent requests for the same file wait for one computation.
/// One file's cached summary; its own lock so only one thread computes it.
type Slot = Arc<Mutex<Option<Arc<FileSummary>>>>;

#[derive(Default)]
pub struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn get(&self, e: &Entry) -> Arc<FileSummary> {
        let slot = lock(&self.slots).entry(e.name.clone()).or_default().clone();
        let mut g = lock(&slot);
        if let Some(s) = g.as_ref()
            && s.size == e.size
            && s.modified == e.modified
        {
            return s.clone();
        }
        let s = Arc::new(summarize(e));
        eprintln!(
            "summarised {} ({} bytes) in {} ms",
            e.name,
            e.size,
            s.elapsed.as_millis()
        );
        *g = Some(s.clone());
        s
    }

    /// Drops entries of files that no longer exist.
    pub fn retain(&self, names: &[&str]) {
        lock(&self.slots).retain(|k, _| names.contains(&k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ColType, Scalar};

    pub fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "csv-explorer-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names() {
        assert!(valid_name("sales 2024.csv"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("a/b.csv"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(""));
        assert_eq!(Kind::of("X.CSV"), Kind::Csv);
        assert_eq!(Kind::of("x.json"), Kind::Json);
        assert_eq!(Kind::of("x"), Kind::Other);
    }

    #[test]
    fn csv_summary_and_cache() {
        let d = temp_dir("summary");
        fs::write(
            d.join("sales.csv"),
            "region,amount,when\n\"North, East\",10,2024-01-02\nSouth,2.5,2024-02-03\nWest,,\n",
        )
        .unwrap();
        fs::write(d.join("ragged.csv"), "a;b\n1;2\n3\n").unwrap();
        fs::write(
            d.join("list.json"),
            r#"[{"id":1,"ok":true},{"id":2,"ok":false}]"#,
        )
        .unwrap();
        fs::write(d.join("bad.json"), r#"[{"id":1},"#).unwrap();
        fs::create_dir(d.join("subdir")).unwrap();
        fs::write(d.join(".hidden"), "x").unwrap();

        let files = list_files(&d).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bad.json", "list.json", "ragged.csv", "sales.csv"]);

        let cache = Cache::default();
        let s = cache.get(&files[3]);
        let t = s.table.as_ref().unwrap();
        assert_eq!(t.rows, 3);
        assert_eq!(t.preview[0][0], "North, East");
        let kinds: Vec<_> = t.columns.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["text", "number", "date"]);
        assert_eq!(t.columns[1].mean, Some(6.25));
        assert!(Arc::ptr_eq(&s, &cache.get(&files[3])));

        let r = cache.get(&files[2]);
        assert_eq!(r.delimiter, Some(b';'));
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);

        let j = cache.get(&files[1]);
        let t = j.table.as_ref().unwrap();
        assert_eq!(
            t.columns.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [
                crate::stats::ColType::Integer,
                crate::stats::ColType::Boolean
            ]
        );
        let v = j.to_json();
        assert_eq!(v["columns"][0]["max"], 2);
        assert_eq!(v["json"]["type"], "array");

        let b = cache.get(&files[0]);
        assert!(b.error.as_deref().unwrap().starts_with("Invalid JSON"));
        assert_eq!(b.table.as_ref().unwrap().rows, 1);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A file of text columns: nothing proves its first line names them, but it is the
    /// prospect's own view, so the line is taken as names (the report would number them).
    #[test]
    fn a_first_line_that_could_be_names_names_the_columns() {
        let d = temp_dir("unsure");
        fs::write(d.join("people.csv"), "name,city\nAda,Paris\nBob,Rome\n").unwrap();
        fs::write(d.join("rows.csv"), "1,Ada\n2,Bob\n").unwrap();
        let files = list_files(&d).unwrap();
        let names = |i: usize| -> (Vec<String>, u64) {
            let summary = summarize(&files[i]);
            let t = summary.table.as_ref().unwrap();
            (t.columns.iter().map(|c| c.name.clone()).collect(), t.rows)
        };
        assert_eq!(names(0), (vec!["name".into(), "city".into()], 2));
        assert_eq!(names(1), (vec!["column 1".into(), "column 2".into()], 2));
        fs::remove_dir_all(&d).unwrap();
    }

    /// The demo reads every real-world shape as `tabular::fixtures` says: the same
    /// expectations testdrive's report is tested against.
    #[test]
    fn every_fixture_reads_like_the_report_reads_it() {
        use tabular::CellType;
        use tabular::fixtures::{Reading, all};
        let d = temp_dir("fixtures");
        for f in all(314159) {
            let path = d.join(f.name);
            fs::write(&path, &f.bytes).unwrap();
            let entry = list_files(&d)
                .unwrap()
                .into_iter()
                .find(|e| e.name == f.name)
                .unwrap();
            let s = summarize(&entry);
            let typed = |t: &Table| -> Vec<(String, CellType)> {
                t.columns
                    .iter()
                    .map(|c| {
                        let kind = match c.kind {
                            ColType::Empty => CellType::Empty,
                            ColType::Boolean => CellType::Boolean,
                            ColType::Integer => CellType::Integer,
                            ColType::Number => CellType::Number,
                            ColType::Date => CellType::Date,
                            ColType::Text => CellType::Text,
                        };
                        (c.name.clone(), kind)
                    })
                    .collect()
            };
            match &f.reading {
                Reading::Table {
                    delimiter,
                    header,
                    columns,
                    rows,
                } => {
                    let t = s.table.as_ref().unwrap();
                    assert_eq!(s.delimiter, Some(*delimiter), "{}", f.name);
                    assert_eq!(s.header, Some(*header), "{}", f.name);
                    assert_eq!((&typed(t), t.rows), (columns, *rows), "{}", f.name);
                }
                Reading::Records { records, columns } => {
                    let t = s.table.as_ref().unwrap();
                    assert_eq!((&typed(t), t.rows), (columns, *records), "{}", f.name);
                }
                Reading::Object { keys } => match &s.shape {
                    Some(Shape::Object { keys: k, .. }) => {
                        let k: Vec<&String> = k.iter().map(|(k, _)| k).collect();
                        assert_eq!(k, keys.iter().collect::<Vec<_>>(), "{}", f.name);
                    }
                    other => panic!("{}: {other:?}", f.name),
                },
                Reading::NotText(content) => {
                    assert!(s.table.is_none(), "{}", f.name);
                    let error = s.error.as_deref().unwrap();
                    assert!(error.contains(content.describe().unwrap()), "{error}");
                }
            }
            fs::remove_file(&path).unwrap();
        }
        // The European export: numbers with statistics, dates in order.
        let f = tabular::fixtures::european_excel_export(314159);
        fs::write(d.join(f.name), &f.bytes).unwrap();
        let entry = list_files(&d).unwrap().remove(0);
        let t = summarize(&entry).table.unwrap();
        assert!(t.columns[1].mean.is_some() && t.columns[2].max.is_some());
        assert_eq!(t.columns[0].min, Some(Scalar::Str("2012-01-01".into())));
        assert_eq!(t.columns[0].max, Some(Scalar::Str("2012-01-20".into())));
        fs::remove_dir_all(&d).unwrap();
    }
}
