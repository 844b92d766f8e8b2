//! `csv-explorer check`: the demo's load command. Validates every file and
//! exits 0, or lists the problems on stderr and exits 1.

use std::path::Path;
use std::process::ExitCode;

use crate::csvparse::Record;
use crate::jsonscan;
use crate::summary::{self, Entry, Kind};

/// Problems listed per file before summarising the rest.
const MAX_PROBLEMS: usize = 10;

pub fn run(dir: &Path) -> ExitCode {
    let files = match summary::list_files(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("csv-explorer check: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut bad = 0;
    for f in &files {
        let result = match Kind::of(&f.name) {
            Kind::Csv => check_csv(f),
            Kind::Json => check_json(f),
            Kind::Other => {
                println!("skip {}: not a CSV or JSON file", f.name);
                continue;
            }
        };
        match result {
            Ok(msg) => println!("ok   {}: {msg}", f.name),
            Err(problems) => {
                bad += 1;
                for p in problems {
                    eprintln!("{}: {p}", f.name);
                }
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "csv-explorer check: {bad} of {} file(s) have problems",
            files.len()
        );
        ExitCode::FAILURE
    } else {
        println!(
            "csv-explorer check: {} file(s) OK in {}",
            files.len(),
            dir.display()
        );
        ExitCode::SUCCESS
    }
}

pub fn check_csv(f: &Entry) -> Result<String, Vec<String>> {
    let mut r =
        summary::open_csv(&f.path, &f.name).map_err(|e| vec![format!("cannot open: {e}")])?;
    let mut rec = Record::default();
    let mut problems = Vec::new();
    let io_err = |e: std::io::Error| vec![format!("read error: {e}")];
    if !r.read_record(&mut rec).map_err(io_err)? {
        return Ok("empty file".into());
    }
    let width = rec.n_fields;
    let (mut rows, mut ragged) = (0u64, 0u64);
    while r.read_record(&mut rec).map_err(io_err)? {
        rows += 1;
        if rec.n_fields != width {
            ragged += 1;
            if problems.len() < MAX_PROBLEMS {
                problems.push(format!(
                    "line {}: {} field(s), but the header has {width}",
                    rec.line, rec.n_fields
                ));
            }
        }
    }
    if ragged > problems.len() as u64 {
        problems.push(format!(
            "… {} more row(s) with the wrong number of fields",
            ragged - problems.len() as u64
        ));
    }
    if let Some(l) = r.unterminated_quote_line {
        problems.push(format!("line {l}: quoted field is never closed"));
    }
    if let Some(l) = r.invalid_utf8_line {
        problems.push(format!(
            "line {l}: not valid UTF-8 (save the file as UTF-8)"
        ));
    }
    if problems.is_empty() {
        Ok(format!("{rows} rows, {width} columns"))
    } else {
        Err(problems)
    }
}

pub fn check_json(f: &Entry) -> Result<String, Vec<String>> {
    let r = summary::open_buffered(&f.path).map_err(|e| vec![format!("cannot open: {e}")])?;
    match jsonscan::validate(r) {
        Ok(()) => Ok("valid JSON".into()),
        Err(e) if e.is_io() => Err(vec![format!("read error: {e}")]),
        Err(e) => Err(vec![format!("invalid JSON: {e}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(dir: &Path, name: &str, content: &[u8]) -> Entry {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        let meta = fs::metadata(&path).unwrap();
        Entry {
            name: name.into(),
            path,
            size: meta.len(),
            modified: meta.modified().unwrap(),
        }
    }

    #[test]
    fn checks_files() {
        let d = std::env::temp_dir().join(format!("csv-explorer-check-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let good = entry(&d, "good.csv", b"a,b\n\"x, y\",1\n\"multi\nline\",2\n");
        assert_eq!(check_csv(&good), Ok("2 rows, 2 columns".into()));
        let ragged = entry(&d, "ragged.csv", b"a,b\n1,2\n3\n4,5,6\n");
        let p = check_csv(&ragged).unwrap_err();
        assert_eq!(
            p,
            [
                "line 3: 1 field(s), but the header has 2",
                "line 4: 3 field(s), but the header has 2"
            ]
        );
        let latin1 = entry(&d, "latin1.csv", b"name\nJos\xe9\n");
        assert!(check_csv(&latin1).unwrap_err()[0].contains("UTF-8"));
        let open = entry(&d, "open.csv", b"a\n\"never closed\n");
        assert!(check_csv(&open).unwrap_err()[0].contains("never closed"));
        assert!(check_json(&entry(&d, "ok.json", b"{\"a\":[1,2]}")).is_ok());
        let bad = check_json(&entry(&d, "bad.json", b"{\"a\":[1,2}")).unwrap_err();
        assert!(bad[0].contains("line 1 column"), "{bad:?}");

        assert_eq!(run(&d), ExitCode::FAILURE);
        for n in ["ragged.csv", "latin1.csv", "open.csv", "bad.json"] {
            fs::remove_file(d.join(n)).unwrap();
        }
        assert_eq!(run(&d), ExitCode::SUCCESS);
        assert_eq!(run(&d.join("missing")), ExitCode::FAILURE);
        fs::remove_dir_all(&d).unwrap();
    }
}
