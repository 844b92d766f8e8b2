//! Case-insensitive search over every row of every file the Explorer lists (CSV, JSON,
//! NDJSON), streamed, and the answer the live search sends.

use std::path::Path;

use crate::delimited::{self, Reader};
use crate::records::{self, Columns, Element, Stop};
use crate::stats::truncate_chars;
use crate::summary::{self, Kind};

pub const MAX_RESULT_ROWS: usize = 50;
pub const MAX_QUERY_CHARS: usize = 200;
const RESULT_CELL_CHARS: usize = 200;
const RESULT_CELLS: usize = 100;
/// Rows between two checks of the cancel flag.
const CANCEL_EVERY: u64 = 1024;

/// Case-insensitive substring matcher (Unicode lowercase, ASCII fast path).
pub struct Matcher {
    needle: String,
    buf: String,
}

impl Matcher {
    pub fn new(query: &str) -> Self {
        Matcher {
            needle: query.to_lowercase(),
            buf: String::new(),
        }
    }

    pub fn is_match(&mut self, hay: &str) -> bool {
        if hay.is_ascii() {
            if hay.len() < self.needle.len() {
                return false;
            }
            self.buf.clear();
            self.buf.push_str(hay);
            self.buf.make_ascii_lowercase();
            self.buf.contains(&self.needle)
        } else {
            hay.to_lowercase().contains(&self.needle)
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub query: String,
    pub matches: u64,
    pub rows: Vec<(String, Vec<String>)>,
    pub cancelled: bool,
}

impl Outcome {
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|(f, r)| serde_json::json!({"file": f, "row": r}))
            .collect();
        serde_json::json!({"query": self.query, "matches": self.matches, "rows": rows})
    }

    fn hit<S: AsRef<str>>(&mut self, file: &str, cells: impl Iterator<Item = S>) {
        self.matches += 1;
        if self.rows.len() < MAX_RESULT_ROWS {
            let row = cells
                .take(RESULT_CELLS)
                .map(|c| truncate_chars(c.as_ref(), RESULT_CELL_CHARS))
                .collect();
            self.rows.push((file.to_string(), row));
        }
    }
}

/// Normalises a raw search message: trimmed, at most MAX_QUERY_CHARS.
pub fn clean_query(raw: &str) -> String {
    let q = raw.trim();
    match q.char_indices().nth(MAX_QUERY_CHARS) {
        Some((i, _)) => q[..i].to_string(),
        None => q.to_string(),
    }
}

/// Searches all files of `dir`. `cancelled` is polled regularly; when it
/// returns true the search stops and `Outcome::cancelled` is set.
pub fn search(dir: &Path, query: &str, cancelled: &dyn Fn() -> bool) -> Outcome {
    let mut out = Outcome {
        query: query.to_string(),
        ..Outcome::default()
    };
    if query.is_empty() {
        return out;
    }
    let mut m = Matcher::new(query);
    let Ok(files) = summary::list_files(dir) else {
        return out;
    };
    for f in files {
        if cancelled() {
            out.cancelled = true;
            return out;
        }
        let done = match Kind::of(&f.name) {
            Kind::Csv => search_csv(&f, &mut m, &mut out, cancelled),
            Kind::Json | Kind::Ndjson => search_json(&f, &mut m, &mut out, cancelled),
            Kind::Other => Ok(()),
        };
        if done.is_err() {
            out.cancelled = true;
            return out;
        }
    }
    out
}

fn search_csv(
    f: &summary::Entry,
    m: &mut Matcher,
    out: &mut Outcome,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), Stop> {
    let Ok(layout) = delimited::layout(&f.path, &f.name) else {
        return Ok(());
    };
    let Ok(mut r) = Reader::open(&f.path, &layout.dialect) else {
        return Ok(());
    };
    // A header names, it is not searched; a first line of data is.
    if layout.header && !matches!(r.read(), Ok(true)) {
        return Ok(());
    }
    let mut n = 0u64;
    while let Ok(true) = r.read() {
        n += 1;
        if n.is_multiple_of(CANCEL_EVERY) && cancelled() {
            return Err(Stop);
        }
        if r.cells().any(|c| m.is_match(&c)) {
            out.hit(&f.name, r.cells());
        }
    }
    Ok(())
}

fn search_json(
    f: &summary::Entry,
    m: &mut Matcher,
    out: &mut Outcome,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), Stop> {
    let Ok(r) = summary::open_buffered(&f.path) else {
        return Ok(());
    };
    let (mut columns, mut n, mut stopped) = (Columns::default(), 0u64, false);
    let mut each = |element: Element| {
        n += 1;
        if n.is_multiple_of(CANCEL_EVERY) && cancelled() {
            stopped = true;
            return Err(Stop);
        }
        columns.fill(&element);
        let cells = columns.cells();
        if cells.iter().any(|c| m.is_match(c)) {
            out.hit(&f.name, cells.iter());
        }
        Ok(())
    };
    // A file that is not valid JSON still had its rows up to the error searched.
    let _ = if Kind::of(&f.name) == Kind::Ndjson {
        records::read_ndjson(r, &mut each)
    } else {
        records::read_json(r, &mut each)
    };
    if stopped { Err(Stop) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn matcher_is_case_insensitive() {
        let mut m = Matcher::new("NoRTh");
        assert!(m.is_match("North, East"));
        assert!(m.is_match("far NORTH"));
        assert!(!m.is_match("South"));
        let mut m = Matcher::new("ÄPFEL");
        assert!(m.is_match("grüne äpfel"));
        assert!(!m.is_match("apfel"));
    }

    #[test]
    fn query_cleanup() {
        assert_eq!(clean_query("  north \n"), "north");
        assert_eq!(
            clean_query(&"é".repeat(500)).chars().count(),
            MAX_QUERY_CHARS
        );
    }

    #[test]
    fn searches_csv_and_json_rows() {
        let d = std::env::temp_dir().join(format!("csv-explorer-search-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("a.csv"),
            "region,amount\n\"North, East\",10\nSouth,20\nnorthwest,5\n",
        )
        .unwrap();
        fs::write(
            d.join("b.json"),
            r#"[{"name":"North Pole","n":1},{"name":"x"}]"#,
        )
        .unwrap();
        fs::write(d.join("c.txt"), "north").unwrap();
        fs::write(
            d.join("d.jsonl"),
            "{\"city\": \"Northampton\"}\n{\"city\": \"Leeds\"}\n",
        )
        .unwrap();
        // Never searched: testdrive's directory and dot-files.
        fs::create_dir(d.join(".testdrive")).unwrap();
        fs::write(d.join(".testdrive/prospect.json"), r#"{"needs": "north"}"#).unwrap();
        fs::write(d.join(".north.csv"), "north\nnorth\n").unwrap();

        let o = search(&d, "north", &|| false);
        assert_eq!(o.matches, 4);
        assert_eq!(
            o.rows[0],
            (
                "a.csv".to_string(),
                vec!["North, East".to_string(), "10".to_string()]
            )
        );
        assert_eq!(o.rows[2].0, "b.json");
        assert_eq!(o.to_json()["rows"][2]["row"][0], "North Pole");
        assert_eq!(
            o.rows[3],
            ("d.jsonl".to_string(), vec!["Northampton".to_string()])
        );
        // The header row is not a match.
        assert_eq!(search(&d, "region", &|| false).matches, 0);
        assert_eq!(search(&d, "", &|| false).matches, 0);
        // A first line of data is data: it is searched.
        fs::write(d.join("airports.csv"), "\"00M\",31.9\n\"00R\",30.6\n").unwrap();
        assert_eq!(search(&d, "00M", &|| false).matches, 1);
        fs::remove_file(d.join("airports.csv")).unwrap();

        let many = format!("id\n{}", "zz\n".repeat(5000));
        fs::write(d.join("many.csv"), many).unwrap();
        let o = search(&d, "Z", &|| false);
        assert_eq!((o.matches, o.rows.len()), (5000, MAX_RESULT_ROWS));
        assert!(search(&d, "z", &|| true).cancelled);
        fs::remove_dir_all(&d).unwrap();
    }
}
