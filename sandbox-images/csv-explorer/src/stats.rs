//! Per-column statistics, computed in one streaming pass with bounded memory.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use tabular::cell::{CellType, Date, Value};
use tabular::{Dialect, layout};

/// Most distinct values counted exactly per column.
pub const DISTINCT_CAP: usize = 10_000;
/// Distinct-value hashes kept across all columns of a file (~8 MB).
pub const DISTINCT_BUDGET: usize = 500_000;
/// Columns beyond this get no statistics (they are still counted).
pub const MAX_COLUMNS: usize = 512;
pub const PREVIEW_ROWS: usize = 50;
pub const PREVIEW_CELL_CHARS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Empty,
    Boolean,
    Integer,
    Number,
    Date,
    Text,
}

impl ColType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColType::Empty => "empty",
            ColType::Boolean => "boolean",
            ColType::Integer => "integer",
            ColType::Number => "number",
            ColType::Date => "date",
            ColType::Text => "text",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Num(f64),
    Str(String),
}

impl Scalar {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Int(i) => (*i).into(),
            Scalar::Num(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Scalar::Str(s) => s.clone().into(),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::Num(f) => format_number(*f),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// Human-friendly rendering of a float: at most 4 decimals, no trailing zeros.
pub fn format_number(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        return format!("{f:.4e}");
    }
    let s = format!("{f:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Final statistics of one column.
#[derive(Clone, Debug)]
pub struct ColumnReport {
    pub name: String,
    pub kind: ColType,
    pub non_empty: u64,
    pub empty: u64,
    pub distinct: u64,
    /// `distinct` is a lower bound: the exact count was not tracked further.
    pub distinct_capped: bool,
    pub min: Option<Scalar>,
    pub max: Option<Scalar>,
    pub mean: Option<f64>,
    /// Longest value, in characters.
    pub max_length: usize,
}

impl ColumnReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "type": self.kind.as_str(),
            "non_empty": self.non_empty,
            "empty": self.empty,
            "distinct": self.distinct,
            "distinct_capped": self.distinct_capped,
            "min": self.min.as_ref().map(Scalar::to_json),
            "max": self.max.as_ref().map(Scalar::to_json),
            "mean": self.mean,
            "max_length": self.max_length,
        })
    }
}

/// One column's running statistics. Values are typed by `tabular::cell` under the file's
/// dialect, the same rules testdrive's report uses: `1.234,5` in a `;` file is a number,
/// `31.12.2020` a date.
#[derive(Debug)]
pub struct ColumnStats {
    name: String,
    dialect: Dialect,
    non_empty: u64,
    empty: u64,
    kind: CellType,
    int_min: i64,
    int_max: i64,
    int_sum: i128,
    num_min: f64,
    num_max: f64,
    num_sum: f64,
    date_min: Option<Date>,
    date_max: Option<Date>,
    distinct: HashSet<u64>,
    distinct_overflow: bool,
    max_len: usize,
}

impl ColumnStats {
    pub fn new(name: String, dialect: Dialect) -> Self {
        ColumnStats {
            name,
            dialect,
            non_empty: 0,
            empty: 0,
            kind: CellType::Empty,
            int_min: i64::MAX,
            int_max: i64::MIN,
            int_sum: 0,
            num_min: f64::INFINITY,
            num_max: f64::NEG_INFINITY,
            num_sum: 0.0,
            date_min: None,
            date_max: None,
            distinct: HashSet::new(),
            distinct_overflow: false,
            max_len: 0,
        }
    }

    /// Adds one value. `budget` is the file-wide allowance of distinct hashes.
    pub fn add(&mut self, raw: &str, budget: &mut usize) {
        let v = raw.trim();
        if v.is_empty() {
            self.empty += 1;
            return;
        }
        self.non_empty += 1;
        let len = if v.is_ascii() {
            v.len()
        } else {
            v.chars().count()
        };
        self.max_len = self.max_len.max(len);

        if !self.distinct_overflow {
            let mut h = DefaultHasher::new();
            v.hash(&mut h);
            let h = h.finish();
            if self.distinct.len() < DISTINCT_CAP && *budget > 0 {
                if self.distinct.insert(h) {
                    *budget -= 1;
                }
            } else if !self.distinct.contains(&h) {
                self.distinct_overflow = true;
            }
        }
        if self.kind == CellType::Text {
            return;
        }
        let value = Value::read(v, &self.dialect);
        self.kind = self.kind.merge(value.kind());
        match value {
            Value::Integer(i) => {
                self.int_min = self.int_min.min(i);
                self.int_max = self.int_max.max(i);
                self.int_sum += i as i128;
                self.add_number(i as f64);
            }
            Value::Number(f) => self.add_number(f),
            Value::Date(d) => {
                self.date_min = Some(self.date_min.map_or(d, |m| m.min(d)));
                self.date_max = Some(self.date_max.map_or(d, |m| m.max(d)));
            }
            _ => {}
        }
    }

    fn add_number(&mut self, f: f64) {
        self.num_min = self.num_min.min(f);
        self.num_max = self.num_max.max(f);
        self.num_sum += f;
    }

    pub fn add_empty(&mut self, n: u64) {
        self.empty += n;
    }

    pub fn kind(&self) -> ColType {
        match self.kind {
            _ if self.non_empty == 0 => ColType::Empty,
            CellType::Empty => ColType::Empty,
            CellType::Boolean => ColType::Boolean,
            CellType::Integer => ColType::Integer,
            CellType::Number => ColType::Number,
            CellType::Date => ColType::Date,
            CellType::Text => ColType::Text,
        }
    }

    pub fn report(&self) -> ColumnReport {
        let kind = self.kind();
        let n = self.non_empty as f64;
        let (min, max, mean) = match kind {
            ColType::Integer => (
                Some(Scalar::Int(self.int_min)),
                Some(Scalar::Int(self.int_max)),
                Some(self.int_sum as f64 / n),
            ),
            ColType::Number => (
                Some(Scalar::Num(self.num_min)),
                Some(Scalar::Num(self.num_max)),
                Some(self.num_sum / n),
            ),
            // Dates as ISO 8601, whatever order the file writes them in: they sort right.
            ColType::Date => (
                self.date_min.map(|d| Scalar::Str(d.iso())),
                self.date_max.map(|d| Scalar::Str(d.iso())),
                None,
            ),
            _ => (None, None, None),
        };
        ColumnReport {
            name: self.name.clone(),
            kind,
            non_empty: self.non_empty,
            empty: self.empty,
            distinct: self.distinct.len() as u64,
            distinct_capped: self.distinct_overflow,
            min,
            max,
            mean: mean.filter(|m| m.is_finite()),
            max_length: self.max_len,
        }
    }
}

/// Finalised table: statistics plus the first rows.
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<ColumnReport>,
    pub rows: u64,
    pub preview: Vec<Vec<String>>,
    /// Columns beyond `MAX_COLUMNS` (no statistics, not in the preview).
    pub extra_columns: u64,
    /// The file writes `2,5` for two and a half: its statistics are shown the same way.
    pub decimal_comma: bool,
}

/// Accumulates rows cell by cell: call `cell` for indexes 0.. in order,
/// then `end_row`.
#[derive(Debug)]
pub struct TableBuilder {
    dialect: Dialect,
    columns: Vec<ColumnStats>,
    rows: u64,
    preview: Vec<Vec<String>>,
    pending: Vec<String>,
    budget: usize,
    extra_columns: u64,
}

impl TableBuilder {
    pub fn new(header: impl IntoIterator<Item = String>, dialect: Dialect) -> Self {
        let mut t = TableBuilder {
            dialect,
            columns: Vec::new(),
            rows: 0,
            preview: Vec::new(),
            pending: Vec::new(),
            budget: DISTINCT_BUDGET,
            extra_columns: 0,
        };
        for name in header {
            t.add_column(name);
        }
        t
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds a column (earlier rows count as empty in it). `None` when full.
    pub fn add_column(&mut self, name: String) -> Option<usize> {
        if self.columns.len() >= MAX_COLUMNS {
            self.extra_columns += 1;
            return None;
        }
        let mut c = ColumnStats::new(name, self.dialect);
        c.add_empty(self.rows);
        self.columns.push(c);
        Some(self.columns.len() - 1)
    }

    pub fn cell(&mut self, i: usize, v: &str) {
        if i >= MAX_COLUMNS {
            // Counted once per column, however many rows reach it.
            self.extra_columns = self.extra_columns.max((i + 1 - MAX_COLUMNS) as u64);
            return;
        }
        while i >= self.columns.len() {
            self.add_column(layout::column_name(self.columns.len()));
        }
        self.columns[i].add(v, &mut self.budget);
        if self.rows < PREVIEW_ROWS as u64 {
            while self.pending.len() < i {
                self.pending.push(String::new());
            }
            self.pending.push(truncate_chars(v, PREVIEW_CELL_CHARS));
        }
    }

    /// Ends the row; columns past `n_cells` count it as empty.
    pub fn end_row(&mut self, n_cells: usize) {
        for c in self.columns.iter_mut().skip(n_cells) {
            c.add_empty(1);
        }
        if self.rows < PREVIEW_ROWS as u64 {
            self.preview.push(std::mem::take(&mut self.pending));
        }
        self.rows += 1;
    }

    pub fn finish(self) -> Table {
        Table {
            columns: self.columns.iter().map(ColumnStats::report).collect(),
            rows: self.rows,
            preview: self.preview,
            extra_columns: self.extra_columns,
            decimal_comma: self.dialect.decimal_comma,
        }
    }
}

pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(values: &[&str]) -> ColumnReport {
        let mut c = ColumnStats::new("c".into(), Dialect::default());
        let mut budget = DISTINCT_BUDGET;
        for v in values {
            c.add(v, &mut budget);
        }
        c.report()
    }

    #[test]
    fn integer_column() {
        let r = column(&["3", " -7", "", "10", "3"]);
        assert_eq!(r.kind, ColType::Integer);
        assert_eq!((r.non_empty, r.empty, r.distinct), (4, 1, 3));
        assert_eq!(r.min, Some(Scalar::Int(-7)));
        assert_eq!(r.max, Some(Scalar::Int(10)));
        assert_eq!(r.mean, Some(2.25));
    }

    #[test]
    fn number_column() {
        let r = column(&["1.5", "2", "-0.5", "1e3"]);
        assert_eq!(r.kind, ColType::Number);
        assert_eq!(r.min, Some(Scalar::Num(-0.5)));
        assert_eq!(r.max, Some(Scalar::Num(1000.0)));
        assert_eq!(r.mean, Some(250.75));
    }

    #[test]
    fn special_floats_are_text() {
        assert_eq!(column(&["1", "NaN"]).kind, ColType::Text);
        assert_eq!(column(&["inf"]).kind, ColType::Text);
        assert_eq!(column(&["1,234.5"]).kind, ColType::Text);
        let d = Dialect::default();
        assert_eq!(tabular::cell::parse_number(".", &d), None);
        assert_eq!(tabular::cell::parse_number("1.2.3", &d), None);
        assert_eq!(tabular::cell::parse_int("99999999999999999999"), None);
        assert_eq!(column(&["99999999999999999999", "1"]).kind, ColType::Number);
    }

    #[test]
    fn boolean_column() {
        assert_eq!(
            column(&["true", "FALSE", "Yes", "no"]).kind,
            ColType::Boolean
        );
        // 0/1 are numbers, not booleans.
        assert_eq!(column(&["0", "1"]).kind, ColType::Integer);
        assert_eq!(column(&["true", "maybe"]).kind, ColType::Text);
    }

    #[test]
    fn date_columns() {
        let r = column(&["2024-03-31", "2023-12-01T08:30:00Z", "2024-01-15 17:45"]);
        assert_eq!(r.kind, ColType::Date);
        assert_eq!(r.min, Some(Scalar::Str("2023-12-01T08:30:00".into())));
        assert_eq!(r.max, Some(Scalar::Str("2024-03-31".into())));
        let r = column(&["31/03/2024", "3/4/2024", "01.02.2023"]);
        assert_eq!(r.kind, ColType::Date);
        assert_eq!(r.min, Some(Scalar::Str("2023-02-01".into())));
        assert_eq!(r.max, Some(Scalar::Str("2024-03-31".into())));
        assert_eq!(column(&["2024-13-01"]).kind, ColType::Text);
        assert_eq!(column(&["12/31/99"]).kind, ColType::Text);
        assert_eq!(column(&["2024-03-31x"]).kind, ColType::Text);
        assert_eq!(column(&["2024-03-31T25:00"]).kind, ColType::Text);
    }

    #[test]
    fn text_and_empty_columns() {
        let r = column(&["apple", "Äpfel", "", "  "]);
        assert_eq!(r.kind, ColType::Text);
        assert_eq!((r.non_empty, r.empty, r.max_length), (2, 2, 5));
        assert_eq!(r.min, None);
        assert_eq!(column(&["", ""]).kind, ColType::Empty);
    }

    #[test]
    fn distinct_is_capped() {
        let mut c = ColumnStats::new("id".into(), Dialect::default());
        let mut budget = DISTINCT_BUDGET;
        for i in 0..(DISTINCT_CAP + 5) {
            c.add(&i.to_string(), &mut budget);
        }
        let r = c.report();
        assert_eq!(r.distinct, DISTINCT_CAP as u64);
        assert!(r.distinct_capped);
        // Repeats of known values do not flip the cap.
        let mut c = ColumnStats::new("x".into(), Dialect::default());
        for _ in 0..3 {
            for i in 0..DISTINCT_CAP {
                c.add(&i.to_string(), &mut budget);
            }
        }
        assert!(!c.report().distinct_capped);
    }

    #[test]
    fn table_builder_handles_ragged_rows() {
        let mut t = TableBuilder::new(["a".to_string(), "b".to_string()], Dialect::default());
        t.cell(0, "1");
        t.cell(1, "x");
        t.end_row(2);
        t.cell(0, "2");
        t.end_row(1);
        t.cell(0, "3");
        t.cell(1, "y");
        t.cell(2, "extra");
        t.end_row(3);
        let t = t.finish();
        assert_eq!(t.rows, 3);
        let names: Vec<_> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "column 3"]);
        assert_eq!((t.columns[1].non_empty, t.columns[1].empty), (2, 1));
        assert_eq!((t.columns[2].non_empty, t.columns[2].empty), (1, 2));
        assert_eq!(t.preview[2], ["3", "y", "extra"]);
        let mut t = TableBuilder::new(Vec::new(), Dialect::default());
        for _ in 0..3 {
            for i in 0..MAX_COLUMNS + 2 {
                t.cell(i, "x");
            }
            t.end_row(MAX_COLUMNS + 2);
        }
        let t = t.finish();
        assert_eq!((t.columns.len(), t.extra_columns), (MAX_COLUMNS, 2));
    }

    #[test]
    fn decimal_commas_are_numbers_in_a_european_file() {
        let d = Dialect::sniff(b"a;b\r\n1,5;31.12.2020\r\n");
        let mut c = ColumnStats::new("n".into(), d);
        let mut budget = DISTINCT_BUDGET;
        for v in ["1,5", "1.234,5", "-0,5"] {
            c.add(v, &mut budget);
        }
        let r = c.report();
        assert_eq!(r.kind, ColType::Number);
        assert_eq!(r.min, Some(Scalar::Num(-0.5)));
        assert_eq!(r.max, Some(Scalar::Num(1234.5)));
        assert_eq!(r.mean, Some(1235.5 / 3.0));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(1.0 / 3.0), "0.3333");
        assert_eq!(format_number(-0.00001), "-1.0000e-5");
        assert_eq!(format_number(100.0), "100");
        assert_eq!(truncate_chars("héllo", 2), "hé…");
    }
}
