//! Whether a table's first line names its columns or is already data. The report must
//! never show a value of the file as a column's name, so when in doubt the first line is
//! data and the columns are `column 1…n`.

use crate::cell::CellType;
use crate::dialect::Dialect;

/// Rows below the first line worth looking at to decide.
pub const HEADER_SAMPLE_ROWS: usize = 20;

/// Is `first` a header over `rows_below`? It is data if any field is empty or repeated,
/// is not plain text, types like its column below (a number over numbers), repeats a value
/// of its column below, or if nothing sets it apart from the rows below (at least one of its
/// fields must be text over a column of numbers, dates or booleans).
pub fn is_header<S: AsRef<str>>(first: &[S], rows_below: &[Vec<S>], dialect: &Dialect) -> bool {
    if first.is_empty() {
        return false;
    }
    let names: Vec<&str> = first.iter().map(|f| f.as_ref().trim()).collect();
    if names.iter().any(|n| n.is_empty() || !is_plain_name(n)) {
        return false;
    }
    for (i, a) in names.iter().enumerate() {
        if names[..i].iter().any(|b| a.eq_ignore_ascii_case(b)) {
            return false;
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
                return false;
            }
            column = column.merge(CellType::of(cell, dialect));
        }
        let own = CellType::of(name, dialect);
        if own.is_typed() && column.merge(own) == column {
            return false;
        }
        set_apart |= own == CellType::Text && column.is_typed();
    }
    set_apart
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
