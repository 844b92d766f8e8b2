//! `csv-explorer check`: the demo's load command. Validates every file the Explorer lists
//! (dot-files and dot-directories such as `.testdrive/` are not data) and exits 0, or lists
//! the problems on stderr and exits 1. By testdrive's convention the last line on stderr is
//! shown to the prospect as the reason: it names the first bad file and its most useful
//! problem in plain words, never a value from the data.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use tabular::sniff;

use serde::de::IgnoredAny;

use crate::delimited::{self, Reader};
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
    let mut first: Option<String> = None;
    for f in &files {
        let result = match wrong_file(f) {
            Some(why) => Err(vec![why]),
            None => match Kind::of(&f.name) {
                Kind::Csv => check_csv(f),
                Kind::Json => check_json(f),
                Kind::Ndjson => check_ndjson(f),
                Kind::Other => {
                    println!("skip {}: not a CSV or JSON file", f.name);
                    continue;
                }
            },
        };
        match result {
            Ok(msg) => println!("ok   {}: {msg}", f.name),
            Err(problems) => {
                bad += 1;
                for p in &problems {
                    eprintln!("{}: {p}", f.name);
                }
                first.get_or_insert_with(|| format!("{}: {}", f.name, problems[0]));
            }
        }
    }
    if let Some(first) = first {
        eprintln!("{}", last_line(&first, bad, files.len()));
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

/// The prospect's line: the first bad file's most useful problem, and how many more.
fn last_line(first: &str, bad: usize, files: usize) -> String {
    match bad {
        0 | 1 => format!("{first}."),
        _ => format!(
            "{first}. {} more of the {files} files have problems too (listed above).",
            bad - 1
        ),
    }
}

/// A file that is not text at all (a workbook renamed `.csv`), in the words testdrive
/// uses for it.
fn wrong_file(f: &Entry) -> Option<String> {
    let mut head = Vec::with_capacity(sniff::HEAD_BYTES);
    let file = std::fs::File::open(&f.path).ok()?;
    file.take(sniff::HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    let whole = (head.len() as u64) == f.size;
    let wrong = sniff::wrong_file(&f.name, &head, whole)?;
    // An empty file is the explorer's to show as empty, not an error.
    if wrong.content == sniff::Content::Empty {
        return None;
    }
    // The words name the file themselves; the listing puts the name first already.
    let why = wrong.words;
    Some(
        why.strip_prefix(&format!("{} ", f.name))
            .map(|rest| format!("this {rest}"))
            .unwrap_or(why)
            .trim_end_matches('.')
            .to_string(),
    )
}

pub fn check_csv(f: &Entry) -> Result<String, Vec<String>> {
    let io_err = |e: std::io::Error| vec![format!("read error: {e}")];
    let dialect =
        delimited::dialect(&f.path, &f.name).map_err(|e| vec![format!("cannot open: {e}")])?;
    let mut r = Reader::open(&f.path, &dialect).map_err(|e| vec![format!("cannot open: {e}")])?;
    let mut problems = Vec::new();
    if !r.read().map_err(io_err)? {
        return Ok("empty file".into());
    }
    let width = r.fields();
    let (mut rows, mut ragged) = (0u64, 0u64);
    while r.read().map_err(io_err)? {
        rows += 1;
        if r.fields() != width {
            ragged += 1;
            if problems.len() < MAX_PROBLEMS {
                problems.push(format!(
                    "line {} has {}, but the header has {}; every row needs as many fields \
                     as the header",
                    r.line(),
                    fields(r.fields()),
                    fields(width)
                ));
            }
        }
    }
    if ragged > problems.len() as u64 {
        problems.push(format!(
            "{} more row(s) have the wrong number of fields",
            ragged - problems.len() as u64
        ));
    }
    // The encoding and an unclosed quote explain the rest: they come first.
    if let Some(l) = r.unclosed_quote_line().map_err(io_err)? {
        problems.insert(
            0,
            format!("the quoted field that starts on line {l} is never closed"),
        );
    }
    if let Some(l) = r.invalid_utf8_line {
        problems.insert(
            0,
            format!(
                "line {l} is not UTF-8 text; save the file as CSV UTF-8 (in Excel: File → \
                 Save As → CSV UTF-8)"
            ),
        );
    }
    if problems.is_empty() {
        Ok(format!("{rows} rows, {width} columns"))
    } else {
        Err(problems)
    }
}

fn fields(n: usize) -> String {
    match n {
        1 => "1 field".to_string(),
        n => format!("{n} fields"),
    }
}

pub fn check_json(f: &Entry) -> Result<String, Vec<String>> {
    let r = summary::open_buffered(&f.path).map_err(|e| vec![format!("cannot open: {e}")])?;
    match serde_json::from_reader::<_, IgnoredAny>(r) {
        Ok(_) => Ok("valid JSON".into()),
        Err(e) => Err(vec![json_problem(&e)]),
    }
}

/// One JSON value per line. Values are skipped, not kept: a line may be as big as the file.
pub fn check_ndjson(f: &Entry) -> Result<String, Vec<String>> {
    let r = summary::open_buffered(&f.path).map_err(|e| vec![format!("cannot open: {e}")])?;
    let mut values = 0u64;
    for value in serde_json::Deserializer::from_reader(r).into_iter::<IgnoredAny>() {
        value.map_err(|e| vec![json_problem(&e)])?;
        values += 1;
    }
    Ok(format!("{values} JSON values"))
}

fn json_problem(e: &serde_json::Error) -> String {
    if e.is_io() {
        format!("read error: {e}")
    } else if e.is_eof() {
        "the JSON ends too early (is the file cut off?)".to_string()
    } else {
        format!("not valid JSON at line {} column {}", e.line(), e.column())
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
                "line 3 has 1 field, but the header has 2 fields; every row needs as many \
                 fields as the header",
                "line 4 has 3 fields, but the header has 2 fields; every row needs as many \
                 fields as the header"
            ]
        );
        let latin1 = entry(&d, "latin1.csv", b"name\nJos\xe9\n");
        assert!(check_csv(&latin1).unwrap_err()[0].contains("UTF-8"));
        let open = entry(&d, "open.csv", b"a\n\"never closed\n");
        assert!(check_csv(&open).unwrap_err()[0].contains("never closed"));
        assert!(check_json(&entry(&d, "ok.json", b"{\"a\":[1,2]}")).is_ok());
        let bad = check_json(&entry(&d, "bad.json", b"{\"a\":[1,2}")).unwrap_err();
        assert_eq!(bad, ["not valid JSON at line 1 column 10"]);
        let cut = check_json(&entry(&d, "cut.json", b"[{\"a\": 1},")).unwrap_err();
        assert_eq!(cut, ["the JSON ends too early (is the file cut off?)"]);
        fs::remove_file(d.join("cut.json")).unwrap();
        let lines = entry(&d, "events.ndjson", b"{\"a\": 1}\n\n[2]\n\"three\"\n");
        assert_eq!(check_ndjson(&lines), Ok("3 JSON values".into()));
        let bad = check_ndjson(&entry(&d, "bad.jsonl", b"{\"a\": 1}\n{\"a\" 2}\n"));
        assert_eq!(bad.unwrap_err(), ["not valid JSON at line 2 column 6"]);
        fs::remove_file(d.join("bad.jsonl")).unwrap();
        let book = entry(&d, "book.csv", b"PK\x03\x04\x14\0\0\0 xl/workbook.xml\0\0");
        assert_eq!(
            wrong_file(&book).unwrap(),
            "this is an Excel workbook, not a CSV file: open it in Excel and use File → Save \
             As → CSV UTF-8 (comma delimited), then upload that file"
        );
        assert_eq!(wrong_file(&good), None);
        fs::remove_file(d.join("book.csv")).unwrap();
        assert_eq!(
            last_line("a.csv: line 3 has 1 field", 2, 5),
            "a.csv: line 3 has 1 field. 1 more of the 5 files have problems too (listed above)."
        );

        assert_eq!(run(&d), ExitCode::FAILURE);
        for n in ["ragged.csv", "latin1.csv", "open.csv", "bad.json"] {
            fs::remove_file(d.join(n)).unwrap();
        }
        // testdrive's directory and other dot-files are not the prospect's data: whatever
        // they hold, the check passes.
        fs::create_dir(d.join(".testdrive")).unwrap();
        fs::write(d.join(".testdrive/prospect.json"), "{not json").unwrap();
        fs::write(d.join(".testdrive/notes.csv"), "a,b\n1\n").unwrap();
        fs::write(d.join(".ragged.csv"), "a,b\n1\n").unwrap();
        assert_eq!(run(&d), ExitCode::SUCCESS);
        assert_eq!(run(&d.join("missing")), ExitCode::FAILURE);
        fs::remove_dir_all(&d).unwrap();
    }
}
