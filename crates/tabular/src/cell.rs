//! What one cell holds: the type a value reads as, under the file's dialect. The report's
//! column types and the CSV Explorer's statistics both come from here.

use crate::dialect::Dialect;

/// A cell longer than this (in bytes) is text, whatever it holds.
pub const MAX_TYPED_CELL: usize = 64;

/// The narrowest type a value fits. A column's type is the `merge` of its cells' types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellType {
    /// Nothing but white space.
    Empty,
    Integer,
    Number,
    /// `true`, `false`, `yes`, `no`, in any case.
    Boolean,
    /// A date, possibly with a time of day.
    Date,
    Text,
}

impl CellType {
    pub fn of(cell: &str, dialect: &Dialect) -> CellType {
        Value::read(cell, dialect).kind()
    }

    /// The type of a column holding values of both types.
    pub fn merge(self, other: CellType) -> CellType {
        use CellType::*;
        match (self, other) {
            (Empty, t) | (t, Empty) => t,
            (a, b) if a == b => a,
            (Integer, Number) | (Number, Integer) => Number,
            _ => Text,
        }
    }

    /// Numbers, dates and booleans: a value of one of these is data, never a column's name.
    pub fn is_typed(self) -> bool {
        !matches!(self, CellType::Empty | CellType::Text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CellType::Empty => "empty",
            CellType::Integer => "integer",
            CellType::Number => "number",
            CellType::Boolean => "boolean",
            CellType::Date => "date",
            CellType::Text => "text",
        }
    }
}

/// A cell read as its type: one pass for the type and the value, for statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Empty,
    Integer(i64),
    Number(f64),
    Boolean(bool),
    Date(Date),
    Text,
}

impl Value {
    pub fn read(cell: &str, dialect: &Dialect) -> Value {
        let v = cell.trim();
        if v.is_empty() {
            return Value::Empty;
        }
        if v.len() > MAX_TYPED_CELL {
            return Value::Text;
        }
        if let Some(b) = parse_bool(v) {
            Value::Boolean(b)
        } else if let Some(i) = parse_int(v) {
            Value::Integer(i)
        } else if let Some(f) = parse_number(v, dialect) {
            Value::Number(f)
        } else if let Some(d) = parse_date(v, dialect) {
            Value::Date(d)
        } else {
            Value::Text
        }
    }

    pub fn kind(&self) -> CellType {
        match self {
            Value::Empty => CellType::Empty,
            Value::Integer(_) => CellType::Integer,
            Value::Number(_) => CellType::Number,
            Value::Boolean(_) => CellType::Boolean,
            Value::Date(_) => CellType::Date,
            Value::Text => CellType::Text,
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    if ["true", "yes"].iter().any(|t| v.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if ["false", "no"].iter().any(|f| v.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// An integer that fits 64 bits, with an optional sign; no separators.
pub fn parse_int(v: &str) -> Option<i64> {
    let v = v.trim();
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A finite number: `-1.5`, `2e3`, and with a decimal comma also `1,5` and `1.234,5`.
/// `inf`, `NaN` and `1,234.5` are text.
pub fn parse_number(v: &str, dialect: &Dialect) -> Option<f64> {
    let v = v.trim();
    let b = v.as_bytes();
    let allowed = |c: &u8| {
        c.is_ascii_digit()
            || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')
            || (dialect.decimal_comma && *c == b',')
    };
    if !b.iter().any(u8::is_ascii_digit) || !b.iter().all(allowed) {
        return None;
    }
    // Rust reads ".5" and "5." too; a spreadsheet writes neither, but they are numbers.
    let number = if dialect.decimal_comma && v.contains(',') {
        let (int, frac) = v.rsplit_once(',')?;
        if int.contains(',') || frac.contains('.') || frac.is_empty() {
            return None;
        }
        format!("{}.{frac}", without_thousands(int)?).parse::<f64>()
    } else {
        v.parse::<f64>()
    };
    number.ok().filter(|f| f.is_finite())
}

/// `1.234.567` → `1234567`: points between groups of exactly three digits.
fn without_thousands(int: &str) -> Option<String> {
    if !int.contains('.') {
        return Some(int.to_string());
    }
    let digits = int.strip_prefix(['-', '+']).unwrap_or(int);
    let mut groups = digits.split('.');
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 || groups.clone().any(|g| g.len() != 3) {
        return None;
    }
    Some(int.replace('.', ""))
}

/// A calendar date, with its time of day when one is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    /// Hours, minutes, seconds.
    pub time: Option<(u8, u8, u8)>,
}

impl Date {
    /// `2020-01-31` or `2020-01-31T08:30:00`: sorts as it reads.
    pub fn iso(&self) -> String {
        let date = format!("{:04}-{:02}-{:02}", self.year, self.month, self.day);
        match self.time {
            None => date,
            Some((h, m, s)) => format!("{date}T{h:02}:{m:02}:{s:02}"),
        }
    }
}

/// Dates as spreadsheets write them: `yyyy-mm-dd`, `yyyy/mm/dd`, `dd.mm.yyyy`, and
/// `dd/mm/yyyy` or `mm/dd/yyyy` as the dialect says (the other order when only it makes a
/// date), each optionally followed by a time (`T` or a space, `hh:mm[:ss[.fff]]`, a zone).
pub fn parse_date(v: &str, dialect: &Dialect) -> Option<Date> {
    let b = v.trim().as_bytes();
    let (year, month, day, rest) = if b.len() >= 10 && matches!(b[4], b'-' | b'/' | b'.') {
        if b[7] != b[4] {
            return None;
        }
        (num(&b[..4])?, num(&b[5..7])?, num(&b[8..10])?, &b[10..])
    } else {
        let sep = *b.iter().find(|c| matches!(c, b'/' | b'.' | b'-'))?;
        let mut parts = b.splitn(3, |&c| c == sep);
        let (p1, p2, rest) = (parts.next()?, parts.next()?, parts.next()?);
        if !(1..=2).contains(&p1.len()) || !(1..=2).contains(&p2.len()) || rest.len() < 4 {
            return None;
        }
        let (x, y, year) = (num(p1)?, num(p2)?, num(&rest[..4])?);
        let day_first = dialect.day_first || sep == b'.';
        let (month, day) = match (day_first, valid(y, x), valid(x, y)) {
            (true, true, _) | (false, true, false) => (y, x),
            (false, _, true) | (true, false, true) => (x, y),
            _ => return None,
        };
        (year, month, day, &rest[4..])
    };
    if !(1000..=9999).contains(&year) || !valid(month, day) {
        return None;
    }
    Some(Date {
        year: year as u16,
        month: month as u8,
        day: day as u8,
        time: time_of_day(rest)?,
    })
}

fn valid(month: u32, day: u32) -> bool {
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

/// `None`: not a time. `Some(None)`: nothing follows the date.
#[allow(clippy::option_option)]
fn time_of_day(rest: &[u8]) -> Option<Option<(u8, u8, u8)>> {
    if rest.is_empty() {
        return Some(None);
    }
    if !matches!(rest[0], b'T' | b' ') {
        return None;
    }
    let t = &rest[1..];
    let colon = t
        .iter()
        .position(|&c| c == b':')
        .filter(|p| (1..=2).contains(p))?;
    let hour = num(&t[..colon]).filter(|&h| h <= 24)?;
    let minute = num(t.get(colon + 1..colon + 3)?).filter(|&m| m <= 59)?;
    let mut after = &t[colon + 3..];
    let mut second = 0;
    if let Some(s) = after.strip_prefix(b":") {
        second = num(s.get(..2)?).filter(|&s| s <= 60)?;
        after = &s[2..];
    }
    if !after
        .iter()
        .all(|c| c.is_ascii_digit() || b":.+-Z APMapm".contains(c))
    {
        return None;
    }
    Some(Some((hour as u8, minute as u8, second as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Dialect {
        Dialect::default()
    }

    fn eu() -> Dialect {
        Dialect {
            delimiter: b';',
            decimal_comma: true,
            day_first: true,
            ..Dialect::default()
        }
    }

    #[test]
    fn types_of_cells() {
        let t = |v: &str, d: &Dialect| CellType::of(v, d);
        assert_eq!(t("  ", &us()), CellType::Empty);
        assert_eq!(t("-42", &us()), CellType::Integer);
        assert_eq!(t("99999999999999999999", &us()), CellType::Number);
        assert_eq!(t("1.5", &us()), CellType::Number);
        assert_eq!(t("1e3", &us()), CellType::Number);
        assert_eq!(t("1,5", &us()), CellType::Text);
        assert_eq!(t("1,5", &eu()), CellType::Number);
        assert_eq!(t("Yes", &us()), CellType::Boolean);
        assert_eq!(t("2012/01/01", &us()), CellType::Date);
        assert_eq!(t("2012-01-01T10:00:00Z", &us()), CellType::Date);
        assert_eq!(t("31.12.2020", &us()), CellType::Date);
        assert_eq!(t("NaN", &us()), CellType::Text);
        assert_eq!(t("inf", &us()), CellType::Text);
        assert_eq!(t("00M", &us()), CellType::Text);
        assert_eq!(t(&"9".repeat(100), &us()), CellType::Text);
    }

    #[test]
    fn decimal_commas() {
        assert_eq!(parse_number("1.234,5", &eu()), Some(1234.5));
        assert_eq!(parse_number("-0,25", &eu()), Some(-0.25));
        assert_eq!(parse_number("1.234.567,0", &eu()), Some(1234567.0));
        assert_eq!(parse_number("2.5", &eu()), Some(2.5));
        assert_eq!(parse_number("1,2,3", &eu()), None);
        assert_eq!(parse_number("12.34,5", &eu()), None);
        assert_eq!(parse_number("1,", &eu()), None);
        assert_eq!(parse_number("1,234.5", &us()), None);
    }

    #[test]
    fn dates_by_the_dialect() {
        let d = |v: &str, dialect: &Dialect| parse_date(v, dialect).map(|d| d.iso());
        assert_eq!(d("03/04/2020", &us()).unwrap(), "2020-03-04");
        assert_eq!(d("03/04/2020", &eu()).unwrap(), "2020-04-03");
        // Only one order makes a date: that one.
        assert_eq!(d("13/04/2020", &us()).unwrap(), "2020-04-13");
        assert_eq!(d("04/13/2020", &eu()).unwrap(), "2020-04-13");
        assert_eq!(d("31.12.2020 23:59", &us()).unwrap(), "2020-12-31T23:59:00");
        assert_eq!(d("2012/01/01", &us()).unwrap(), "2012-01-01");
        assert_eq!(
            d("2024-01-15 17:45:30", &us()).unwrap(),
            "2024-01-15T17:45:30"
        );
        for bad in [
            "2024-13-01",
            "12/31/99",
            "2024-03-31x",
            "2024-03-31T25:00",
            "1.5",
        ] {
            assert_eq!(d(bad, &us()), None, "{bad}");
        }
    }

    #[test]
    fn merging() {
        use CellType::*;
        assert_eq!(Empty.merge(Integer), Integer);
        assert_eq!(Integer.merge(Number), Number);
        assert_eq!(Date.merge(Integer), Text);
        assert_eq!(Boolean.merge(Boolean), Boolean);
    }
}
