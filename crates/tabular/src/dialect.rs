//! How a delimited text file is written: its delimiter, whether its numbers use a decimal
//! comma and whether its dates put the day first. Judged from the file's first bytes, the
//! way a person glancing at an Excel export would: `Datum;Menge` over `31.12.2020;1,5`.

use crate::sniff::UTF8_BOM;

/// Lines looked at to choose the delimiter and the date order.
const SNIFF_LINES: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    /// `,` `;` `\t` or `|`.
    pub delimiter: u8,
    /// Numbers may be written `1.234,5`. Only ever with a delimiter other than `,`: a comma
    /// inside an unquoted field of a comma-separated file is a delimiter.
    pub decimal_comma: bool,
    /// `03/04/2020` is the 3rd of April, not March the 4th.
    pub day_first: bool,
    /// The file starts with a UTF-8 byte-order mark (Excel's "CSV UTF-8").
    pub bom: bool,
    /// Lines end with CR LF.
    pub crlf: bool,
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect {
            delimiter: b',',
            decimal_comma: false,
            day_first: false,
            bom: false,
            crlf: false,
        }
    }
}

const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];

impl Dialect {
    /// Judges the dialect from the first bytes of a file (64 KiB are plenty; fewer work).
    pub fn sniff(head: &[u8]) -> Dialect {
        let bom = head.starts_with(UTF8_BOM);
        let body = head.strip_prefix(UTF8_BOM).unwrap_or(head);
        let crlf = body
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|i| i > 0 && body[i - 1] == b'\r');
        let delimiter = choose_delimiter(body);
        Dialect::for_delimiter(delimiter, body, bom, crlf)
    }

    /// The dialect of a file whose delimiter is known (a `.tsv` is tab-separated).
    pub fn sniff_with_delimiter(head: &[u8], delimiter: u8) -> Dialect {
        let sniffed = Dialect::sniff(head);
        let body = head.strip_prefix(UTF8_BOM).unwrap_or(head);
        Dialect::for_delimiter(delimiter, body, sniffed.bom, sniffed.crlf)
    }

    fn for_delimiter(delimiter: u8, body: &[u8], bom: bool, crlf: bool) -> Dialect {
        let decimal_comma = delimiter != b',';
        Dialect {
            delimiter,
            decimal_comma,
            day_first: day_first(body, delimiter),
            bom,
            crlf,
        }
    }

    /// The delimiter as text, for a report: `","`, `";"`, `"\t"`, `"|"`.
    pub fn delimiter_str(&self) -> &'static str {
        match self.delimiter {
            b';' => ";",
            b'\t' => "\t",
            b'|' => "|",
            _ => ",",
        }
    }
}

/// Complete lines of `body` (the last one only if the head ends there), split outside
/// quotes. A line longer than the head is simply not seen whole: it is left out.
fn lines(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                let line = &body[start..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(line);
                }
                start = i + 1;
                if out.len() == SNIFF_LINES {
                    return out;
                }
            }
            _ => {}
        }
    }
    let rest = &body[start..];
    // An unfinished last line is only trusted when it is the whole file.
    if out.is_empty() && !quoted && !rest.iter().all(u8::is_ascii_whitespace) {
        out.push(rest.strip_suffix(b"\r").unwrap_or(rest));
    }
    out
}

/// Fields of a line for a delimiter, outside quotes.
fn count_fields(line: &[u8], delimiter: u8) -> usize {
    let mut quoted = false;
    let mut n = 1;
    for &b in line {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            n += 1;
        }
    }
    n
}

/// The delimiter that splits the first lines into the same number (at least two) of
/// fields most consistently. On a tie a rarer delimiter wins: `01.02.2020;1,5;2,5` splits
/// evenly on both, and a comma file seldom has a semicolon on every line.
fn choose_delimiter(body: &[u8]) -> u8 {
    let lines = lines(body);
    let Some(first) = lines.first() else {
        return b',';
    };
    let mut best = (b',', 0usize, 0usize);
    for &d in [b'\t', b';', b'|', b','].iter() {
        let width = count_fields(first, d);
        if width < 2 {
            continue;
        }
        let same = lines.iter().filter(|l| count_fields(l, d) == width).count();
        if same > best.1 {
            best = (d, same, width);
        }
    }
    debug_assert!(CANDIDATES.contains(&best.0));
    best.0
}

/// Whether dates like `03/04/2020` read day first: a first part above 12 says so, a
/// second part above 12 says not; points (`03.04.2020`) or, failing any sign, a `;` or tab
/// file (Europe's Excel) say day first.
fn day_first(body: &[u8], delimiter: u8) -> bool {
    let (mut day_first_seen, mut month_first_seen, mut points) = (false, false, false);
    for line in lines(body) {
        for field in line.split(|&b| b == delimiter) {
            let field = field.trim_ascii();
            let field = field.strip_prefix(b"\"").unwrap_or(field);
            let Some((a, b, sep)) = short_date_parts(field) else {
                continue;
            };
            points |= sep == b'.';
            if a > 12 && b <= 12 {
                day_first_seen = true;
            } else if b > 12 && a <= 12 {
                month_first_seen = true;
            }
        }
    }
    if day_first_seen != month_first_seen {
        return day_first_seen;
    }
    points || delimiter != b','
}

/// The first two numbers of `d/m/yyyy`, `d.m.yyyy` or `d-m-yyyy`, and the separator.
fn short_date_parts(field: &[u8]) -> Option<(u32, u32, u8)> {
    let sep = *field.iter().find(|b| matches!(b, b'/' | b'.' | b'-'))?;
    let mut parts = field.splitn(3, |&b| b == sep);
    let (a, b, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if !(1..=2).contains(&a.len())
        || !(1..=2).contains(&b.len())
        || rest.len() < 4
        || !rest[..4].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let n = |s: &[u8]| {
        s.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    Some((n(a)?, n(b)?, sep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn european_excel_export() {
        let d = Dialect::sniff(
            b"\xEF\xBB\xBFDatum;Niederschlag;Temp\r\n01.02.2012;0,5;-3,2\r\n02.02.2012;1,25;4\r\n",
        );
        assert_eq!(
            d,
            Dialect {
                delimiter: b';',
                decimal_comma: true,
                day_first: true,
                bom: true,
                crlf: true
            }
        );
        // Without a header the decimal commas tie with the semicolons: `;` wins.
        assert_eq!(Dialect::sniff(b"01.02.2012;0,5;1,2\n").delimiter, b';');
    }

    #[test]
    fn comma_tab_and_pipe() {
        let d = Dialect::sniff(b"date,precipitation\n2012/01/01,0.0\n\"a;b\",1\n");
        assert_eq!(
            (d.delimiter, d.decimal_comma, d.day_first),
            (b',', false, false)
        );
        assert_eq!(Dialect::sniff(b"a\tb\tc\n1\t2\t3\n").delimiter, b'\t');
        assert_eq!(Dialect::sniff(b"a|b\n1|2\n").delimiter, b'|');
        assert_eq!(Dialect::sniff(b"single\n1\n").delimiter, b',');
        assert_eq!(Dialect::sniff(b"").delimiter, b',');
        // Quotes hide delimiters, even across lines.
        assert_eq!(
            Dialect::sniff(b"\"x;y\",b,c\n\"1;\n2\",3,4\n").delimiter,
            b','
        );
    }

    #[test]
    fn day_first_from_the_data() {
        assert!(Dialect::sniff(b"d,n\n13/01/2020,1\n").day_first);
        assert!(!Dialect::sniff(b"d,n\n01/13/2020,1\n").day_first);
        assert!(!Dialect::sniff(b"d,n\n01/02/2020,1\n").day_first);
        assert!(Dialect::sniff(b"d,n\n01.02.2020,1\n").day_first);
        assert!(Dialect::sniff(b"d;n\n01/02/2020;1\n").day_first);
        assert!(!Dialect::sniff(b"d;n\n02/13/2020;1\n").day_first);
    }

    #[test]
    fn bounded_on_hostile_heads() {
        // A never-ending quote, a huge line: the sniffer answers from what it has.
        let mut head = b"a,b\n\"".to_vec();
        head.extend(std::iter::repeat_n(b'x', 1 << 20));
        assert_eq!(Dialect::sniff(&head).delimiter, b',');
        let wide = vec![b';'; 1 << 20];
        assert_eq!(Dialect::sniff(&wide).delimiter, b';');
    }
}
