//! What the prospect chose to tell the vendor, which testdrive writes to
//! `{DATA_DIR}/.testdrive/prospect.json` before the demo counts as ready. Every key is
//! optional and unknown keys are ignored; an older testdrive writes no file at all. The
//! text is the prospect's, typed into a form: it is treated as hostile (cut, stripped of
//! control characters, and escaped by the page).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::stats::truncate_chars;

/// Where testdrive writes it, under the data directory.
pub const FILE: &str = ".testdrive/prospect.json";
/// A bigger file is not one testdrive wrote.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Characters kept of each text.
pub const MAX_CHARS: usize = 500;

/// The greeting's texts, each cleaned; `None` when not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prospect {
    pub company: Option<String>,
    /// Their question, from the information sheet.
    pub needs: Option<String>,
    pub invitation_note: Option<String>,
}

impl Prospect {
    pub fn is_empty(&self) -> bool {
        self.company.is_none() && self.needs.is_none() && self.invitation_note.is_none()
    }
}

/// Reads the file afresh (it can arrive after the server starts). No file: `None`, as
/// before testdrive wrote one. A file that cannot be read as one is logged in one line
/// (never its content) and greets nobody.
pub fn load(data_dir: &Path) -> Option<Prospect> {
    match read(data_dir) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("csv-explorer: ignoring {FILE}: {why}");
            None
        }
    }
}

fn read(data_dir: &Path) -> Result<Option<Prospect>, String> {
    let path = data_dir.join(FILE);
    // Only a regular file: a FIFO would block the page, a link could point anywhere.
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
        Ok(m) if !m.is_file() => return Err("not a regular file".into()),
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    parse(&bytes).map(Some)
}

/// The greeting in `bytes`, or what is wrong with them (in words of our own: serde_json's
/// messages say where, never what).
pub fn parse(bytes: &[u8]) -> Result<Prospect, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".into());
    };
    let text = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(clean(s)),
        Some(_) => Err(format!("\"{key}\" is not text")),
    };
    Ok(Prospect {
        company: text("company")?,
        needs: text("needs")?,
        invitation_note: text("invitation_note")?,
    })
}

/// Trimmed, without control characters (line breaks and tabs become spaces; bidi and other
/// format characters go) and at most `MAX_CHARS` long; `None` when nothing is left.
fn clean(s: &str) -> Option<String> {
    let kept: String = s
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() || is_format(c) => None,
            c => Some(c),
        })
        .collect();
    let kept = kept
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!kept.is_empty()).then(|| truncate_chars(&kept, MAX_CHARS))
}

/// Invisible characters that reorder or hide text (bidi controls, zero-width marks, BOM).
fn is_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_what_the_prospect_told() {
        let p = parse(
            br#"{"company": "  Initech ", "needs": "Does it\nhandle <our> regions?",
                 "answers": {"q1": "yes"}, "invitation_note": null, "later": [1]}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Prospect {
                company: Some("Initech".into()),
                needs: Some("Does it handle <our> regions?".into()),
                invitation_note: None,
            }
        );
        assert!(parse(b"{}").unwrap().is_empty());
        // Hostile text: cut, without controls or bidi overrides.
        let long = format!(r#"{{"company": "{}\u202e\u0007x"}}"#, "a".repeat(600));
        let company = parse(long.as_bytes()).unwrap().company.unwrap();
        assert_eq!(company.chars().count(), MAX_CHARS + 1);
        assert!(company.ends_with('…') && !company.contains('\u{202e}'));
        assert_eq!(parse(br#"{"needs": " \n\t "}"#).unwrap().needs, None);
    }

    #[test]
    fn a_bad_file_greets_nobody() {
        for bad in [
            &b"{not json"[..],
            b"[1]",
            b"\"x\"",
            br#"{"company": 5}"#,
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let d = crate::summary::tests::temp_dir("prospect");
        assert_eq!(load(&d), None, "no file: as before testdrive wrote one");
        fs::create_dir(d.join(".testdrive")).unwrap();
        fs::write(d.join(FILE), r#"{"company": "Initech"}"#).unwrap();
        assert_eq!(load(&d).unwrap().company.as_deref(), Some("Initech"));
        fs::write(d.join(FILE), r#"{"company": "#).unwrap();
        assert_eq!(load(&d), None);
        fs::write(d.join(FILE), vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(load(&d), None);
        fs::remove_file(d.join(FILE)).unwrap();
        fs::create_dir(d.join(FILE)).unwrap();
        assert_eq!(load(&d), None);
        fs::remove_dir_all(&d).unwrap();
    }
}
