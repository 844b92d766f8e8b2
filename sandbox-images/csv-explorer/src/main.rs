//! CSV Explorer: the testdrive demo product. Shows the CSV, JSON and NDJSON files of a
//! data directory as tables with per-column statistics, serves them raw, offers a live
//! search over a WebSocket, and greets the prospect with what they told the vendor.
//!
//! Usage:
//!   csv-explorer            serve on $PORT (8080) the files of $DATA_DIR (/data)
//!   csv-explorer check      validate every file of $DATA_DIR; exit 0 or 1

mod check;
mod delimited;
mod html;
mod live;
mod prospect;
mod records;
mod search;
mod server;
mod stats;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: csv-explorer [serve | check [DIR] | help]

  serve   (default) HTTP server on $PORT (default 8080) for the files in
          $DATA_DIR (default /data)
  check   validate every file in DIR or $DATA_DIR: CSV files must be UTF-8
          with the same number of fields on every row, JSON files must parse,
          NDJSON files (.ndjson, .jsonl) must hold one JSON value per line.
          Exit status 0 when all are fine, 1 otherwise (details on stderr).";

fn data_dir() -> PathBuf {
    std::env::var_os("DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/data"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => {
            let port = match std::env::var("PORT") {
                Err(_) => 8080,
                Ok(p) => match p.trim().parse::<u16>() {
                    Ok(p) => p,
                    Err(_) => {
                        eprintln!("csv-explorer: PORT must be a port number, got {p:?}");
                        return ExitCode::from(2);
                    }
                },
            };
            match server::run(port, data_dir()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("csv-explorer: cannot listen on port {port}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("check") if args.len() <= 2 => {
            let dir = args.get(1).map(PathBuf::from).unwrap_or_else(data_dir);
            check::run(&dir)
        }
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version" | "version") => {
            println!("csv-explorer {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
