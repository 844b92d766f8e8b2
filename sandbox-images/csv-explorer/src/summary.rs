//! The data directory: which files it lists (never a dot-file or dot-directory such as
//! testdrive's `.testdrive/`), and each file's summary, cached per size + mtime.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tabular::Dialect;

use crate::delimited::{self, Reader};
use crate::records::{self, Columns, Element, Shape, Stop};
use crate::stats::{Table, TableBuilder};

/// Most files listed from the data directory.
pub const MAX_FILES: usize = 500;
const READ_BUF: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Csv,
    Json,
    /// One JSON value per line (`.ndjson`, `.jsonl`).
    Ndjson,
    Other,
}

impl Kind {
    pub fn of(name: &str) -> Kind {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv" | "tsv" | "tab") => Kind::Csv,
            Some("json") => Kind::Json,
            Some("ndjson" | "jsonl") => Kind::Ndjson,
            _ => Kind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Json => "json",
            Kind::Ndjson => "ndjson",
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
        Some("ndjson" | "jsonl") => "application/x-ndjson",
        Some("txt" | "log" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file name that may be listed and served: no path separators, no `..`, not hidden (a
/// dot-file, or a dot-directory such as `.testdrive/` where testdrive keeps what the
/// prospect told the vendor, is never data).
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
                let kind = if self.kind == Kind::Ndjson {
                    "lines"
                } else {
                    "array"
                };
                o.insert(
                    "json".into(),
                    serde_json::json!({"type": kind, "length": len, "objects": objects}),
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
        Kind::Json | Kind::Ndjson => summarize_json(&e.path, &mut s),
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
    let mut head = Vec::with_capacity(tabular::sniff::HEAD_BYTES);
    File::open(path)
        .ok()?
        .take(tabular::sniff::HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    tabular::sniff::Content::sniff(&head).describe()
}

pub fn open_buffered(path: &Path) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(READ_BUF, File::open(path)?))
}

fn summarize_csv(path: &Path, name: &str, s: &mut FileSummary) -> io::Result<()> {
    let layout = delimited::layout(path, name)?;
    s.delimiter = Some(layout.dialect.delimiter);
    s.header = Some(layout.header);
    if layout.names.is_empty() {
        s.notes.push("The file is empty.".into());
        s.table = Some(TableBuilder::new(Vec::new(), layout.dialect).finish());
        return Ok(());
    }
    let mut r = Reader::open(path, &layout.dialect)?;
    let mut width = None;
    if layout.header {
        r.read()?;
        width = Some(r.fields());
    } else {
        s.notes
            .push("The first line holds data, not column names: the columns are numbered.".into());
    }
    let mut t = TableBuilder::new(layout.names, layout.dialect);
    let (mut ragged, mut first_ragged, mut truncated) = (0u64, 0u64, 0u64);
    while r.read()? {
        for (i, cell) in r.cells().enumerate() {
            t.cell(i, &cell);
        }
        t.end_row(r.fields());
        // The first line sets the width, header or not.
        let width = *width.get_or_insert(r.fields());
        if r.fields() != width {
            if ragged == 0 {
                first_ragged = r.line();
            }
            ragged += 1;
        }
        truncated += u64::from(r.truncated());
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
    if let Some(l) = r.unclosed_quote_line()? {
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

/// A JSON array's elements (or an NDJSON file's values) as the rows of a table.
fn summarize_json(path: &Path, s: &mut FileSummary) -> io::Result<()> {
    let mut columns = Columns::default();
    let mut table = TableBuilder::new(Vec::new(), Dialect::default());
    let mut each = |element: Element| -> Result<(), Stop> {
        let known = columns.names.len();
        columns.fill(&element);
        for name in &columns.names[known..] {
            table.add_column(name.clone());
        }
        for (i, c) in columns.cells().iter().enumerate() {
            table.cell(i, c);
        }
        table.end_row(columns.cells().len());
        Ok(())
    };
    let r = open_buffered(path)?;
    let read = if s.kind == Kind::Ndjson {
        records::read_ndjson(r, &mut each)
    } else {
        records::read_json(r, &mut each)
    };
    match read {
        Ok(shape) => {
            if let Shape::Array { len, objects } = shape {
                if objects < len && objects > 0 {
                    s.notes.push(format!(
                        "{} of {len} elements are not objects; they are shown in the {} column.",
                        len - objects,
                        records::VALUE_COLUMN
                    ));
                }
                s.table = Some(table.finish());
            }
            s.shape = Some(shape);
        }
        Err(e) if e.is_io() => return Err(io::Error::other(e)),
        Err(e) => {
            s.error = Some(format!("Invalid JSON: {e}"));
            if table.rows() > 0 {
                s.notes
                    .push("The table shows the rows read before the error.".into());
                s.table = Some(table.finish());
            }
        }
    }
    if columns.overflow {
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
pub(crate) mod tests {
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
        assert_eq!(Kind::of("x.jsonl"), Kind::Ndjson);
        assert_eq!(Kind::of("x.NDJSON"), Kind::Ndjson);
        assert_eq!(content_type("x.jsonl"), "application/x-ndjson");
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
        // testdrive's own directory, with what the prospect told the vendor: never data.
        fs::create_dir(d.join(".testdrive")).unwrap();
        fs::write(d.join(".testdrive/prospect.json"), r#"{"company": "x"}"#).unwrap();

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

    #[test]
    fn ndjson_reads_as_a_table_of_records() {
        let d = temp_dir("ndjson");
        fs::write(
            d.join("events.ndjson"),
            "{\"id\": 1, \"when\": \"2024-01-02\", \"ok\": true}\n\
             {\"id\": 2, \"ok\": false, \"extra\": {\"a\": 1}}\n",
        )
        .unwrap();
        fs::write(d.join("cut.jsonl"), "{\"id\": 1}\n{\"id\": \n").unwrap();
        let files = list_files(&d).unwrap();
        let cut = summarize(&files[0]);
        assert!(cut.error.as_deref().unwrap().starts_with("Invalid JSON"));
        assert_eq!(cut.table.as_ref().unwrap().rows, 1);
        let s = summarize(&files[1]);
        assert_eq!(s.kind, Kind::Ndjson);
        assert_eq!(s.error, None);
        let t = s.table.as_ref().unwrap();
        assert_eq!(t.rows, 2);
        let columns: Vec<_> = t
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "integer"),
                ("when", "date"),
                ("ok", "boolean"),
                ("extra", "text")
            ]
        );
        assert_eq!(t.preview[1], ["2", "", "false", r#"{"a":1}"#]);
        let v = s.to_json();
        assert_eq!(v["json"]["type"], "lines");
        assert_eq!(v["kind"], "ndjson");
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
