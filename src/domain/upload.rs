//! What a prospect may upload: safe file names, and a demo's rules on size, count and type.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// The directory in `data_path` where testdrive puts `prospect.json`; no upload may take
/// its name.
pub const NOTE_DIR: &str = ".testdrive";

/// A file name that is safe to place at `{data_path}/{name}` inside a sandbox: one path
/// component, no separators, no `..`, no control or bidirectional-override characters, at most
/// 255 bytes (the usual file-system limit).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UploadName(String);

pub const MAX_NAME_BYTES: usize = 255;

impl UploadName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let fail = |reason: &str| Err(Invalid::new("file", format!("{raw:?} {reason}")));
        if raw.is_empty() {
            return Err(Invalid::new("file", "a file part has no file name"));
        }
        if raw.len() > MAX_NAME_BYTES {
            return Err(Invalid::new(
                "file",
                format!("a file name is over {MAX_NAME_BYTES} bytes"),
            ));
        }
        if raw.contains('/') || raw.contains('\\') {
            return fail("contains a path separator");
        }
        if raw == "." || raw == ".." {
            return fail("is not a file name");
        }
        if raw == NOTE_DIR {
            return fail("is the name testdrive keeps for what the demo is told about you");
        }
        if raw.chars().any(|c| c.is_control() || is_bidi_control(c)) {
            return Err(Invalid::new(
                "file",
                "a file name contains a control character",
            ));
        }
        if raw.trim() != raw {
            return fail("starts or ends with white space");
        }
        Ok(UploadName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased text after the last dot, if the name has one that is not its first
    /// character (`.env` has no extension, `a.CSV` has `csv`).
    pub fn extension(&self) -> Option<String> {
        match self.0.rfind('.') {
            Some(0) | None => None,
            Some(i) => Some(self.0[i + 1..].to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for UploadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that reorder displayed text, used to disguise `evil.exe` as `exe.live`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A file waiting on the service's disk (the spool), to be placed in a sandbox under `name`.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub name: UploadName,
    pub path: PathBuf,
    pub bytes: u64,
}

/// A demo's upload rules, already checked against the service's policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadRules {
    /// Total bytes over all files of one sandbox.
    pub max_bytes: u64,
    pub max_files: u32,
    /// Lower-case extensions without the dot; empty means any type.
    pub extensions: Vec<String>,
}

impl UploadRules {
    pub fn accepts(&self, name: &UploadName) -> bool {
        if self.extensions.is_empty() {
            return true;
        }
        name.extension()
            .is_some_and(|ext| self.extensions.contains(&ext))
    }

    /// A vendor-given extension, normalised: `".CSV"` → `"csv"`.
    pub fn parse_extension(raw: &str) -> Result<String, Invalid> {
        let ext = raw.strip_prefix('.').unwrap_or(raw).to_ascii_lowercase();
        if ext.is_empty() || ext.len() > 16 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Invalid::new(
                "upload.extensions",
                format!("{raw:?} is not a file extension (1 to 16 letters or digits)"),
            ));
        }
        Ok(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in [
            "sales.csv",
            "Q3 report (final).json",
            "données.csv",
            ".env",
            "a..b",
        ] {
            assert_eq!(UploadName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn unsafe_names_are_refused() {
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "/etc/passwd",
            "a/b.csv",
            "a\\b.csv",
            "C:\\x.csv",
            "a\0b",
            "a\nb",
            "a\u{7f}b",
            "evil\u{202e}vsc.exe",
            " lead.csv",
            "trail.csv ",
            long.as_str(),
        ] {
            assert!(UploadName::parse(bad).is_err(), "{bad:?} passed");
        }
        // 255 bytes is the limit, counted in bytes not characters.
        assert!(UploadName::parse(&"a".repeat(255)).is_ok());
        assert!(UploadName::parse(&"é".repeat(128)).is_err());
    }

    #[test]
    fn extensions_are_case_insensitive() {
        let rules = UploadRules {
            max_bytes: 1,
            max_files: 1,
            extensions: vec!["csv".into()],
        };
        assert!(rules.accepts(&UploadName::parse("a.CSV").unwrap()));
        assert!(!rules.accepts(&UploadName::parse("a.csv.exe").unwrap()));
        assert!(!rules.accepts(&UploadName::parse(".csv").unwrap()));
        assert!(!rules.accepts(&UploadName::parse("csv").unwrap()));
        let any = UploadRules {
            extensions: vec![],
            ..rules
        };
        assert!(any.accepts(&UploadName::parse("anything").unwrap()));
    }

    #[test]
    fn extensions_are_normalised() {
        assert_eq!(UploadRules::parse_extension(".CSV").unwrap(), "csv");
        assert!(UploadRules::parse_extension("").is_err());
        assert!(UploadRules::parse_extension("tar.gz").is_err());
        assert!(UploadRules::parse_extension("c sv").is_err());
    }
}
