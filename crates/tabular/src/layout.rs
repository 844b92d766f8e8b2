//! Whether a table's first line names its columns or is already data. The report must
//! never show a value of the file as a column's name, so when in doubt the first line is
//! data and the columns are `column 1…n`.

use crate::cell::CellType;
use crate::dialect::Dialect;

/// Rows below the first line worth looking at to decide.
pub const HEADER_SAMPLE_ROWS: usize = 20;

/// What a table's first line is, judged against the rows below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstLine {
    /// It can only be names: no empty, repeated or non-text field, none that types like
    /// its column or repeats a value below it, and at least one text name over a column of
    /// numbers, dates or booleans.
    Names,
    /// It is data: a field is empty, repeated, not plain text, types like its column below
    /// (a number over numbers) or repeats a value of its column below.
    Data,
    /// Nothing tells: every column text, or no rows below.
    Unsure,
}

/// Judges `first` over `rows_below` (at most `HEADER_SAMPLE_ROWS` of them are needed).
pub fn first_line<S: AsRef<str>>(
    first: &[S],
    rows_below: &[Vec<S>],
    dialect: &Dialect,
) -> FirstLine {
    if first.is_empty() {
        return FirstLine::Data;
    }
    let names: Vec<&str> = first.iter().map(|f| f.as_ref().trim()).collect();
    if names.iter().any(|n| n.is_empty() || !is_plain_name(n)) {
        return FirstLine::Data;
    }
    for (i, a) in names.iter().enumerate() {
        if names[..i].iter().any(|b| a.eq_ignore_ascii_case(b)) {
            return FirstLine::Data;
        }
    }
    let mut set_apart = false;
    for (j, name) in names.iter().enumerate() {
        let below = rows_below
            .iter()
            .filter_map(|row| row.get(j).map(|c| c.as_ref().trim()));
        let mut column = CellType::Empty;
        for cell in below {
            if cell == *name {
                return FirstLine::Data;
            }
            column = column.merge(CellType::of(cell, dialect));
        }
        let own = CellType::of(name, dialect);
        if own.is_typed() && column.merge(own) == column {
            return FirstLine::Data;
        }
        set_apart |= own == CellType::Text && column.is_typed();
    }
    if set_apart {
        FirstLine::Names
    } else {
        FirstLine::Unsure
    }
}

/// Whether the vendor's report may take `first` as the columns' names: only when it can be
/// nothing else, as a value of the file must never become a name there (when in doubt, the
/// columns are `column 1…n`). The prospect's own view of their file (the CSV Explorer) may
/// take an `Unsure` line as names.
pub fn is_header<S: AsRef<str>>(first: &[S], rows_below: &[Vec<S>], dialect: &Dialect) -> bool {
    first_line(first, rows_below, dialect) == FirstLine::Names
}

/// A name a person could have typed: no control characters, no replacement characters
/// (bytes that were not UTF-8), a sane length.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\u{FFFD}' || c == '\u{FEFF}')
}

/// The name of a column whose file gives none: `column 1` for index 0.
pub fn column_name(index: usize) -> String {
    format!("column {}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first: &[&str], below: &[&[&str]]) -> bool {
        let below: Vec<Vec<&str>> = below.iter().map(|r| r.to_vec()).collect();
        is_header(first, &below, &Dialect::default())
    }

    #[test]
    fn a_header_is_text_over_typed_columns() {
        assert!(header(
            &["date", "precipitation", "weather"],
            &[
                &["2012-01-01", "0.0", "drizzle"],
                &["2012-01-02", "10.9", "rain"]
            ]
        ));
        assert!(header(&["id", "name"], &[&["1", "Ada"]]));
    }

    #[test]
    fn data_on_the_first_line_is_data() {
        // Airport rows: the first row's numbers type like the numbers below.
        assert!(!header(
            &[
                "00M",
                "Thigpen",
                "Bay Springs",
                "31.95376472",
                "-89.23450472"
            ],
            &[&[
                "00R",
                "Livingston",
                "Livingston",
                "30.68586111",
                "-95.01792778"
            ]]
        ));
        // Nothing sets an all-text first line apart.
        assert!(!header(&["Ada", "Paris"], &[&["Bob", "Rome"]]));
        let judge = |first: &[&str], below: &[&[&str]]| {
            let below: Vec<Vec<&str>> = below.iter().map(|r| r.to_vec()).collect();
            first_line(first, &below, &Dialect::default())
        };
        assert_eq!(
            judge(&["name", "city"], &[&["Ada", "Paris"]]),
            FirstLine::Unsure
        );
        assert_eq!(judge(&["a", "b"], &[]), FirstLine::Unsure);
        assert_eq!(judge(&["id", "name"], &[&["1", "Ada"]]), FirstLine::Names);
        assert_eq!(judge(&["1", "Ada"], &[&["2", "Bob"]]), FirstLine::Data);
        // Empty, repeated, or a value repeated below.
        assert!(!header(&["id", ""], &[&["1", "2"]]));
        assert!(!header(&["id", "ID"], &[&["1", "2"]]));
        assert!(!header(&["rain", "n"], &[&["sun", "1"], &["rain", "2"]]));
        // Bytes that were not text, a lone line, no line.
        assert!(!header(&["PK\u{3}\u{4}", "n"], &[&["a", "1"]]));
        assert!(!header(&["a\u{FFFD}", "n"], &[&["a", "1"]]));
        assert!(!header(&["a", "b"], &[]));
        assert!(!header(&[], &[&["1"]]));
    }

    #[test]
    fn names_are_plain_text() {
        assert!(is_plain_name("Niederschlag (mm)"));
        assert!(!is_plain_name("a\tb"));
        assert!(!is_plain_name(&"x".repeat(200)));
        assert_eq!(column_name(0), "column 1");
    }
}
