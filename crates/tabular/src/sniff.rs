//! What a file is, from its bytes rather than its name: a workbook renamed `.csv` is still a
//! workbook. `Content::sniff` reads the first bytes (a few KiB are plenty); `Utf8Check`
//! follows a text file to its end, because a single Windows-1252 `é` on line 90 000 makes it
//! something other than UTF-8.

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// No bytes at all, or only whitespace.
    Empty,
    /// Plausibly text: no NUL bytes and few control characters. (Whether it is UTF-8 is
    /// `Utf8Check`'s to say.)
    Text,
    /// An Office Open XML workbook (`.xlsx`, `.xlsm`).
    ExcelWorkbook,
    /// A pre-2007 Office file (`.xls`, `.doc`): the OLE2 compound format.
    LegacyOffice,
    /// A Word document (`.docx`).
    WordDocument,
    /// A PowerPoint deck (`.pptx`).
    Presentation,
    /// An OpenDocument file (`.ods`, `.odt`), LibreOffice's format.
    OpenDocument,
    /// Any other ZIP archive (an Excel workbook whose inner names lie beyond the head too).
    Zip,
    Pdf,
    /// A picture; the name of its format.
    Image(&'static str),
    /// A gzip, bzip2, xz, zstd or 7-Zip stream.
    Compressed,
    /// Text in UTF-16 or UTF-32 (Excel's "Unicode Text" writes UTF-16).
    WideText,
    /// Anything else that is not text.
    Binary,
}

impl Content {
    /// Judges a file by its first bytes. The more of the file's start it sees (up to about
    /// 4 KiB), the better it tells a workbook from another ZIP archive.
    pub fn sniff(head: &[u8]) -> Content {
        if head.iter().all(u8::is_ascii_whitespace) {
            return Content::Empty;
        }
        if let Some(kind) = by_magic(head) {
            return kind;
        }
        if head.starts_with(UTF8_BOM) {
            return Content::Text;
        }
        if looks_wide(head) {
            return Content::WideText;
        }
        if head.contains(&0) || control_share(head) > 0.05 {
            return Content::Binary;
        }
        Content::Text
    }

    pub fn is_text(self) -> bool {
        self == Content::Text
    }

    /// What the file is, in words a prospect knows: "an Excel workbook". `None` for text and
    /// for an empty file, which have nothing to name.
    pub fn describe(self) -> Option<&'static str> {
        Some(match self {
            Content::Empty | Content::Text => return None,
            Content::ExcelWorkbook => "an Excel workbook",
            Content::LegacyOffice => "an Excel 97–2003 workbook (or another old Office file)",
            Content::WordDocument => "a Word document",
            Content::Presentation => "a PowerPoint presentation",
            Content::OpenDocument => "an OpenDocument file (LibreOffice)",
            Content::Zip => "a ZIP archive (an Excel workbook is one)",
            Content::Pdf => "a PDF document",
            Content::Image(_) => "a picture",
            Content::Compressed => "a compressed archive",
            Content::WideText => "text in UTF-16 (Excel's \"Unicode Text\")",
            Content::Binary => "a binary file, not text",
        })
    }
}

pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How many of a file's first bytes `Content::sniff` needs to tell the kinds apart.
pub const HEAD_BYTES: usize = 4096;

/// The extensions of files that are text, which a file of another kind may be renamed to.
/// Only these are judged by their bytes: a demo that takes `.xlsx` gets workbooks.
pub fn expects_text(extension: &str) -> bool {
    matches!(
        extension.to_ascii_lowercase().as_str(),
        "csv" | "tsv" | "tab" | "txt" | "json" | "jsonl" | "ndjson"
    )
}

/// What a file named like `extension` should be, in a prospect's words.
fn expected(extension: &str) -> &'static str {
    match extension.to_ascii_lowercase().as_str() {
        "csv" => "a CSV file",
        "tsv" | "tab" => "a tab-separated text file",
        "json" | "jsonl" | "ndjson" => "a JSON file",
        _ => "a text file",
    }
}

/// What to do with a file of this kind to get text the demo can read.
fn remedy(content: Content) -> &'static str {
    match content {
        Content::ExcelWorkbook | Content::LegacyOffice => {
            "open it in Excel and use File → Save As → CSV UTF-8 (comma delimited), then \
             upload that file"
        }
        Content::Zip => {
            "unpack it and upload the files inside (if it is an Excel workbook, open it in \
             Excel and use File → Save As → CSV UTF-8 (comma delimited), then upload that \
             file)"
        }
        Content::OpenDocument => {
            "open it in LibreOffice and use File → Save As → Text CSV with the character set \
             Unicode (UTF-8), then upload that file"
        }
        Content::WordDocument | Content::Presentation | Content::Pdf => {
            "export the table it shows as CSV UTF-8 from the program the data came from, then \
             upload that file"
        }
        Content::Image(_) => "upload the data the picture was made from, saved as CSV UTF-8",
        Content::Compressed => "unpack it and upload the files inside",
        Content::WideText | Content::Binary | Content::Text | Content::Empty => {
            "save it again as CSV UTF-8 (in Excel: File → Save As → CSV UTF-8 (comma \
             delimited)), then upload that file"
        }
    }
}

/// A file that cannot be what its name says: what it is, and why in a prospect's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongFile {
    pub content: Content,
    pub words: String,
}

/// Why a file named `name` cannot be what its extension says, in words a prospect can act
/// on: "weather.csv is an Excel workbook, not a CSV file: open it in Excel and use …".
/// `None` when the file is what its name says (or its extension is not one of text).
/// `whole` says whether `head` is the whole file (then an empty one is refused too).
pub fn wrong_file(name: &str, head: &[u8], whole: bool) -> Option<WrongFile> {
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    if !expects_text(extension) {
        return None;
    }
    let content = Content::sniff(head);
    let words = match content {
        Content::Text => return None,
        Content::Empty if !whole => return None,
        Content::Empty => {
            format!("{name} is empty (it holds no data): choose the file with your data in it")
        }
        Content::Image(format) => {
            format!(
                "{name} is a picture ({format}), not {}: {}.",
                expected(extension),
                remedy(content)
            )
        }
        other => format!(
            "{name} is {}, not {}: {}.",
            other.describe().unwrap_or("not text"),
            expected(extension),
            remedy(content)
        ),
    };
    Some(WrongFile { content, words })
}

/// Why a text file named `name` is refused when it is not UTF-8 from `at` on.
pub fn not_utf8(name: &str, at: NotUtf8) -> String {
    format!(
        "{name} is not UTF-8 text (line {} is in another encoding, perhaps Windows-1252): \
         {}.",
        at.line,
        remedy(Content::Text)
    )
}

fn by_magic(head: &[u8]) -> Option<Content> {
    const MAGIC: &[(&[u8], Content)] = &[
        (b"%PDF-", Content::Pdf),
        (b"\x89PNG\r\n\x1a\n", Content::Image("PNG")),
        (b"\xFF\xD8\xFF", Content::Image("JPEG")),
        (b"GIF87a", Content::Image("GIF")),
        (b"GIF89a", Content::Image("GIF")),
        (b"II*\0", Content::Image("TIFF")),
        (b"MM\0*", Content::Image("TIFF")),
        (b"BM", Content::Image("BMP")),
        (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", Content::LegacyOffice),
        (b"\x1F\x8B", Content::Compressed),
        (b"BZh", Content::Compressed),
        (b"\xFD7zXZ\0", Content::Compressed),
        (b"\x28\xB5\x2F\xFD", Content::Compressed),
        (b"7z\xBC\xAF\x27\x1C", Content::Compressed),
        (b"\x00\x00\xFE\xFF", Content::WideText),
        (b"\xFF\xFE\x00\x00", Content::WideText),
        (b"\xFF\xFE", Content::WideText),
        (b"\xFE\xFF", Content::WideText),
    ];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Some(zip_kind(head));
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        return Some(Content::Image("WebP"));
    }
    // "BM" alone is too weak: a CSV may start with those letters. A bitmap's header
    // follows with its size and a reserved zero word.
    MAGIC
        .iter()
        .find(|(magic, kind)| {
            head.starts_with(magic)
                && (*kind != Content::Image("BMP")
                    || head.len() >= 10 && head[6..10] == [0, 0, 0, 0])
        })
        .map(|&(_, kind)| kind)
}

/// The names of a ZIP's first entries are in plain text near its start.
fn zip_kind(head: &[u8]) -> Content {
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if has(b"application/vnd.oasis.opendocument") {
        Content::OpenDocument
    } else if has(b"xl/") {
        Content::ExcelWorkbook
    } else if has(b"word/") {
        Content::WordDocument
    } else if has(b"ppt/") {
        Content::Presentation
    } else {
        Content::Zip
    }
}

/// UTF-16 without a BOM: every other byte of ASCII text is zero.
fn looks_wide(head: &[u8]) -> bool {
    let n = head.len().min(512) & !1;
    if n < 8 {
        return false;
    }
    let zeros_at = |parity: usize| (parity..n).step_by(2).filter(|&i| head[i] == 0).count();
    let half = n / 2;
    zeros_at(0) * 10 >= half * 9 || zeros_at(1) * 10 >= half * 9
}

/// The share of bytes that are control characters text does not use.
fn control_share(head: &[u8]) -> f64 {
    let odd = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
        .count();
    odd as f64 / head.len().max(1) as f64
}

/// Follows a file chunk by chunk and remembers where it first stops being UTF-8. A
/// character split between two chunks is judged whole.
#[derive(Debug, Default)]
pub struct Utf8Check {
    /// The start of a character cut off at the end of the last chunk.
    carry: Vec<u8>,
    /// Whether lines are not counted (`offsets_only`).
    no_lines: bool,
    /// Line breaks seen so far (the current line is this plus one).
    newlines: u64,
    /// Bytes judged so far.
    offset: u64,
    first_bad: Option<NotUtf8>,
}

/// Where a file first stops being UTF-8, and what it probably is instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUtf8 {
    /// 1-based.
    pub line: u64,
    pub offset: u64,
}

impl Utf8Check {
    pub fn new() -> Utf8Check {
        Utf8Check::default()
    }

    /// A check that does not count lines, for a caller that keeps the file and counts them
    /// only when there is something to report: `NotUtf8::line` is then 0.
    pub fn offsets_only() -> Utf8Check {
        Utf8Check {
            no_lines: true,
            ..Utf8Check::default()
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.first_bad.is_some() {
            return;
        }
        if self.carry.is_empty() {
            self.judge(chunk);
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            self.judge(&joined);
        }
    }

    fn judge(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(_) => self.advance(bytes),
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                self.advance(good);
                match e.error_len() {
                    // Cut off mid-character: the next chunk decides.
                    None => self.carry = bytes[e.valid_up_to()..].to_vec(),
                    Some(_) => {
                        self.first_bad = Some(NotUtf8 {
                            line: if self.no_lines { 0 } else { self.newlines + 1 },
                            offset: self.offset,
                        })
                    }
                }
            }
        }
    }

    fn advance(&mut self, good: &[u8]) {
        self.offset += good.len() as u64;
        if self.no_lines {
            return;
        }
        // Counted in runs of at most 255 into a byte, which the compiler turns into wide
        // compares: the count keeps up with the disk on a 1 GiB upload.
        self.newlines += good
            .chunks(255)
            .map(|run| u64::from(run.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n'))))
            .sum::<u64>();
    }

    /// Where the file first stopped being UTF-8, if it did (a character cut off by the end
    /// of the file counts).
    pub fn finish(self) -> Option<NotUtf8> {
        let line = if self.no_lines { 0 } else { self.newlines + 1 };
        self.first_bad.or_else(|| {
            (!self.carry.is_empty()).then_some(NotUtf8 {
                line,
                offset: self.offset,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_a_renamed_file_really_is() {
        let xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml\
                     \x00\x00garbage PK\x03\x04 xl/workbook.xml";
        assert_eq!(Content::sniff(xlsx), Content::ExcelWorkbook);
        assert_eq!(
            Content::sniff(b"PK\x03\x04 word/document.xml"),
            Content::WordDocument
        );
        assert_eq!(
            Content::sniff(b"PK\x03\x04mimetypeapplication/vnd.oasis.opendocument.spreadsheet"),
            Content::OpenDocument
        );
        assert_eq!(Content::sniff(b"PK\x03\x04 data.bin"), Content::Zip);
        assert_eq!(
            Content::sniff(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0"),
            Content::LegacyOffice
        );
        assert_eq!(Content::sniff(b"%PDF-1.7\n%\xE2\xE3"), Content::Pdf);
        assert_eq!(
            Content::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Content::Image("PNG")
        );
        assert_eq!(
            Content::sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"),
            Content::Image("JPEG")
        );
        assert_eq!(
            Content::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Content::Image("WebP")
        );
        assert_eq!(Content::sniff(b"\x1F\x8B\x08\0"), Content::Compressed);
        assert_eq!(Content::sniff(b"\xFF\xFEd\0a\0t\0e\0"), Content::WideText);
        assert_eq!(
            Content::sniff(b"d\0a\0t\0e\0;\0p\0r\0e\0"),
            Content::WideText
        );
        assert_eq!(
            Content::sniff(b"\x01\x02\x03\x04\x05abc\0"),
            Content::Binary
        );
    }

    #[test]
    fn text_is_text_whatever_it_starts_with() {
        for text in [
            &b"date,precipitation\n2012-01-01,0.0\n"[..],
            b"\xEF\xBB\xBFdate;precipitation\r\n01.01.2012;0,5\r\n",
            b"BMW,3er,2019\nAudi,A4,2020\n",
            b"PKG,qty\nbolts,4\n",
            b"[{\"a\": 1}]",
            b"caf\xE9;cr\xE8me\n",
            b"\x1b[1mcoloured\x1b[0m\tlog\n",
        ] {
            assert_eq!(Content::sniff(text), Content::Text, "{text:?}");
        }
        assert_eq!(Content::sniff(b""), Content::Empty);
        assert_eq!(Content::sniff(b" \r\n\t\n"), Content::Empty);
        assert_eq!(Content::Text.describe(), None);
        assert_eq!(Content::ExcelWorkbook.describe(), Some("an Excel workbook"));
    }

    #[test]
    fn a_wrong_file_is_named_with_what_to_do() {
        let xlsx = b"PK\x03\x04\x14\x00 [Content_Types].xml xl/workbook.xml";
        let said = wrong_file("weather.csv", xlsx, false).unwrap().words;
        assert!(
            said.starts_with("weather.csv is an Excel workbook, not a CSV file: open it in Excel"),
            "{said}"
        );
        assert!(said.contains("CSV UTF-8"), "{said}");
        let pdf = wrong_file("cars.json", b"%PDF-1.4\n", false).unwrap().words;
        assert!(
            pdf.starts_with("cars.json is a PDF document, not a JSON file"),
            "{pdf}"
        );
        let png = wrong_file("a.CSV", b"\x89PNG\r\n\x1a\n\0\0", false)
            .unwrap()
            .words;
        assert!(png.contains("a picture (PNG)"), "{png}");
        let wide = wrong_file("w.csv", b"\xFF\xFEd\0a\0t\0e\0", false)
            .unwrap()
            .words;
        assert!(wide.contains("UTF-16"), "{wide}");
        // Text is text; a workbook a demo asks for is what it asked for.
        assert_eq!(wrong_file("ok.csv", b"a,b\n1,2\n", true), None);
        assert_eq!(wrong_file("book.xlsx", xlsx, true), None);
        assert_eq!(wrong_file("noext", xlsx, true), None);
        // Empty only when the head is the whole file.
        assert!(
            wrong_file("e.csv", b" \r\n", true)
                .unwrap()
                .words
                .contains("is empty")
        );
        assert_eq!(wrong_file("e.csv", b" \r\n", false), None);
        let latin = not_utf8(
            "x.csv",
            NotUtf8 {
                line: 15,
                offset: 300,
            },
        );
        assert!(
            latin.starts_with("x.csv is not UTF-8 text (line 15"),
            "{latin}"
        );
    }

    fn check(chunks: &[&[u8]]) -> Option<NotUtf8> {
        let mut c = Utf8Check::new();
        for chunk in chunks {
            c.feed(chunk);
        }
        c.finish()
    }

    #[test]
    fn finds_the_first_line_that_is_not_utf8() {
        assert_eq!(check(&[b"a,b\n", "é,ü\n".as_bytes()]), None);
        // "é" is C3 A9: split across chunks it is still one character.
        assert_eq!(check(&[b"a,b\n\xC3", b"\xA9,x\n"]), None);
        assert_eq!(
            check(&[b"a,b\nok\n", b"caf\xE9\n"]),
            Some(NotUtf8 {
                line: 3,
                offset: 10
            })
        );
        // Cut off by the end of the file.
        assert_eq!(
            check(&[b"a\n\xE2\x82"]),
            Some(NotUtf8 { line: 2, offset: 2 })
        );
        // Once found, later chunks change nothing.
        assert_eq!(
            check(&[b"\xFF\n", b"fine\n"]),
            Some(NotUtf8 { line: 1, offset: 0 })
        );
    }
}
