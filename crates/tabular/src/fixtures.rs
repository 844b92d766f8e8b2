//! Files of each shape real prospects upload, made by code (never downloaded), each with
//! the reading both testdrive's report and the CSV Explorer must give it. Every value that
//! can hold one holds a unique marker (`mk<seed>n<i>` in text, `<seed><i:03>` in numbers), so
//! a test can look for any value of any file wherever it must not be.

use crate::cell::CellType;
use crate::sniff::Content;

/// A generated file, what it must read as, and the markers among its values.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// A file name as a prospect would have it (its extension matters).
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub reading: Reading,
    /// Strings that are values of the file and must never reach a vendor or an operator.
    pub markers: Vec<String>,
}

/// What a file reads as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A delimited table: its delimiter, whether its first line names the columns, the
    /// columns (named `column 1…n` without a header) and the rows below the header.
    Table {
        delimiter: u8,
        header: bool,
        columns: Vec<(String, CellType)>,
        rows: u64,
    },
    /// A JSON array of objects: the records and their keys, each with its type.
    Records {
        records: u64,
        columns: Vec<(String, CellType)>,
    },
    /// A JSON object: its keys.
    Object { keys: Vec<String> },
    /// Not text at all: what the sniffer must say it is.
    NotText(Content),
}

impl Fixture {
    /// Whether the file really holds `marker` (UTF-16 files hold it wide).
    pub fn holds(&self, marker: &str) -> bool {
        let wide: Vec<u8> = marker.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let has = |needle: &[u8]| self.bytes.windows(needle.len()).any(|w| w == needle);
        has(marker.as_bytes()) || has(&wide)
    }
}

/// Hands out markers: text `mk<seed>n<i>`, numbers `<seed><i:03>`.
struct Markers {
    seed: u32,
    next: u32,
    all: Vec<String>,
}

impl Markers {
    fn new(seed: u32) -> Markers {
        Markers {
            seed,
            next: 0,
            all: Vec::new(),
        }
    }

    fn text(&mut self) -> String {
        self.next += 1;
        let m = format!("mk{}n{}", self.seed, self.next);
        self.all.push(m.clone());
        m
    }

    /// An integer marker (at least 9 digits with a 6-digit seed).
    fn int(&mut self) -> String {
        self.next += 1;
        let m = format!("{}{:03}", self.seed, self.next % 1000);
        self.all.push(m.clone());
        m
    }
}

const ROWS: u64 = 20;

fn cols(list: &[(&str, CellType)]) -> Vec<(String, CellType)> {
    list.iter().map(|&(n, t)| (n.to_string(), t)).collect()
}

/// Every fixture, with markers made from `seed` (use six digits: 100000..=999999). Each
/// file gets its own seed (`seed` and its index), so no two files share a marker.
pub fn all(seed: u32) -> Vec<Fixture> {
    let makers: [fn(u32) -> Fixture; 10] = [
        european_excel_export,
        us_csv,
        headerless_csv,
        tab_file,
        windows_1252_csv,
        json_records,
        json_object,
        workbook_renamed_csv,
        utf16_csv,
        pdf_renamed_csv,
    ];
    makers
        .iter()
        .zip(0..)
        .map(|(make, k)| make(seed * 10 + k))
        .collect()
}

/// Excel's "CSV UTF-8" in Germany: BOM, `;`, decimal commas with thousands points,
/// `dd.mm.yyyy`, CRLF, an empty cell.
pub fn european_excel_export(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut text = String::from("\u{feff}Datum;Niederschlag;Temperatur;Station;Anzahl\r\n");
    for i in 1..=ROWS {
        let rain = if i == 5 {
            String::new()
        } else if i == 7 {
            // A thousands point; too short to hold a marker.
            "1.234,5".to_string()
        } else {
            format!("{},{i}", m.int())
        };
        text.push_str(&format!(
            "{i:02}.01.2012;{rain};-{},25;{};{}\r\n",
            m.int(),
            m.text(),
            m.int()
        ));
    }
    Fixture {
        name: "wetter-export.csv",
        bytes: text.into_bytes(),
        reading: Reading::Table {
            delimiter: b';',
            header: true,
            columns: cols(&[
                ("Datum", CellType::Date),
                ("Niederschlag", CellType::Number),
                ("Temperatur", CellType::Number),
                ("Station", CellType::Text),
                ("Anzahl", CellType::Integer),
            ]),
            rows: ROWS,
        },
        markers: m.all,
    }
}

/// A US export: `,`, `yyyy/mm/dd` dates, LF.
pub fn us_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut text = String::from("date,precipitation,temp_max,weather,wind\n");
    for i in 1..=ROWS {
        text.push_str(&format!(
            "2012/01/{i:02},{}.5,{}.25,{},{}\n",
            m.int(),
            m.int(),
            m.text(),
            m.int()
        ));
    }
    Fixture {
        name: "seattle-weather.csv",
        bytes: text.into_bytes(),
        reading: Reading::Table {
            delimiter: b',',
            header: true,
            columns: cols(&[
                ("date", CellType::Date),
                ("precipitation", CellType::Number),
                ("temp_max", CellType::Number),
                ("weather", CellType::Text),
                ("wind", CellType::Integer),
            ]),
            rows: ROWS,
        },
        markers: m.all,
    }
}

/// Airport-like rows with no header line: quoted codes and names, coordinates, a count.
pub fn headerless_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut text = String::new();
    for _ in 0..ROWS {
        text.push_str(&format!(
            "\"{}\",\"{}\",31.{},-89.{},{}\n",
            m.text(),
            m.text(),
            m.int(),
            m.int(),
            m.int()
        ));
    }
    Fixture {
        name: "airports.csv",
        bytes: text.into_bytes(),
        reading: Reading::Table {
            delimiter: b',',
            header: false,
            columns: cols(&[
                ("column 1", CellType::Text),
                ("column 2", CellType::Text),
                ("column 3", CellType::Number),
                ("column 4", CellType::Number),
                ("column 5", CellType::Integer),
            ]),
            rows: ROWS,
        },
        markers: m.all,
    }
}

/// Tab-separated, as copied out of a spreadsheet.
pub fn tab_file(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut text = String::from("id\tmake\tprice\tin_stock\n");
    for i in 0..ROWS {
        let stock = if i % 2 == 0 { "true" } else { "false" };
        text.push_str(&format!(
            "{}\t{}\t{}.99\t{stock}\n",
            m.int(),
            m.text(),
            m.int()
        ));
    }
    Fixture {
        name: "cars.tsv",
        bytes: text.into_bytes(),
        reading: Reading::Table {
            delimiter: b'\t',
            header: true,
            columns: cols(&[
                ("id", CellType::Integer),
                ("make", CellType::Text),
                ("price", CellType::Number),
                ("in_stock", CellType::Boolean),
            ]),
            rows: ROWS,
        },
        markers: m.all,
    }
}

/// A CSV saved in Windows-1252: its header is not UTF-8, so it names nothing.
pub fn windows_1252_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut bytes = b"Stra\xDFe;Menge\r\n".to_vec();
    for _ in 0..ROWS {
        bytes.extend(format!("{};{},5\r\n", m.text(), m.int()).bytes());
    }
    Fixture {
        name: "bestellungen.csv",
        bytes,
        reading: Reading::Table {
            delimiter: b';',
            header: false,
            columns: cols(&[("column 1", CellType::Text), ("column 2", CellType::Text)]),
            rows: ROWS + 1,
        },
        markers: m.all,
    }
}

/// A JSON array of records.
pub fn json_records(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let records: Vec<String> = (1..=ROWS)
        .map(|i| {
            format!(
                "{{\"id\": {}, \"name\": \"{}\", \"score\": {}.5, \"active\": {}, \"day\": \"2020-01-{i:02}\", \"note\": null}}",
                m.int(),
                m.text(),
                m.int(),
                i % 2 == 0
            )
        })
        .collect();
    Fixture {
        name: "records.json",
        bytes: format!("[\n  {}\n]\n", records.join(",\n  ")).into_bytes(),
        reading: Reading::Records {
            records: ROWS,
            columns: cols(&[
                ("id", CellType::Integer),
                ("name", CellType::Text),
                ("score", CellType::Number),
                ("active", CellType::Boolean),
                ("day", CellType::Date),
                ("note", CellType::Empty),
            ]),
        },
        markers: m.all,
    }
}

/// A JSON object: its keys are its shape, its values are data.
pub fn json_object(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let text = format!(
        "{{\"station\": \"{}\", \"readings\": [{}, {}, \"{}\"], \"meta\": {{\"source\": \"{}\"}}, \"count\": {}}}",
        m.text(),
        m.int(),
        m.int(),
        m.text(),
        m.text(),
        m.int()
    );
    Fixture {
        name: "station.json",
        bytes: text.into_bytes(),
        reading: Reading::Object {
            keys: ["station", "readings", "meta", "count"]
                .map(String::from)
                .to_vec(),
        },
        markers: m.all,
    }
}

/// An Excel workbook renamed `.csv`: a ZIP whose entries are `[Content_Types].xml` and
/// `xl/…`. Its shared strings are stored uncompressed here, so the markers are in the bytes.
pub fn workbook_renamed_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut bytes = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00".to_vec();
    bytes.extend(b"[Content_Types].xml<Types/>");
    bytes.extend(b"PK\x03\x04\x14\x00\x00\x00\x00\x00xl/sharedStrings.xml<sst>");
    for _ in 0..ROWS {
        bytes.extend(format!("<si><t>{}</t></si>\n", m.text()).bytes());
        bytes.extend(format!("line 15: {},{}\n", m.text(), m.int()).bytes());
    }
    bytes.extend(b"</sst>PK\x01\x02\x14\x00xl/workbook.xml\x00\x00PK\x05\x06\x00\x00");
    Fixture {
        name: "weather-xlsx-renamed.csv",
        bytes,
        reading: Reading::NotText(Content::ExcelWorkbook),
        markers: m.all,
    }
}

/// Excel's "Unicode Text": UTF-16 LE with a BOM, tab-separated.
pub fn utf16_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut text = String::from("name\tamount\r\n");
    for _ in 0..ROWS {
        text.push_str(&format!("{}\t{}\r\n", m.text(), m.int()));
    }
    let mut bytes = b"\xFF\xFE".to_vec();
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    Fixture {
        name: "unicode-text.csv",
        bytes,
        reading: Reading::NotText(Content::WideText),
        markers: m.all,
    }
}

/// A PDF report renamed `.csv`, its text in plain sight.
pub fn pdf_renamed_csv(seed: u32) -> Fixture {
    let mut m = Markers::new(seed);
    let mut bytes =
        b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Length 99 >>\nstream\nBT\n".to_vec();
    for _ in 0..ROWS {
        bytes.extend(format!("({},{}) Tj\n", m.text(), m.int()).bytes());
    }
    bytes.extend(b"ET\nendstream\nendobj\n%%EOF\n");
    Fixture {
        name: "report.csv",
        bytes,
        reading: Reading::NotText(Content::Pdf),
        markers: m.all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    #[test]
    fn fixtures_hold_their_markers_and_sniff_as_expected() {
        let all = all(123456);
        let mut markers: Vec<&String> = all.iter().flat_map(|f| &f.markers).collect();
        let count = markers.len();
        markers.sort();
        markers.dedup();
        assert_eq!(markers.len(), count, "every marker is unique");
        for f in all {
            assert!(!f.markers.is_empty(), "{}", f.name);
            for marker in &f.markers {
                assert!(f.holds(marker), "{} lacks {marker}", f.name);
            }
            let content = Content::sniff(&f.bytes);
            match &f.reading {
                Reading::NotText(kind) => assert_eq!(content, *kind, "{}", f.name),
                Reading::Table { delimiter, .. } => {
                    assert_eq!(content, Content::Text, "{}", f.name);
                    assert_eq!(Dialect::sniff(&f.bytes).delimiter, *delimiter, "{}", f.name);
                }
                _ => assert_eq!(content, Content::Text, "{}", f.name),
            }
        }
    }
}
