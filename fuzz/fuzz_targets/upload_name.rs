//! Upload file names: arbitrary bytes → `UploadName::parse`, `UploadRules::parse_extension`
//! and `UploadRules::accepts`.
//!
//! For every name that is accepted, the promises of `UploadName` must hold: one path
//! component that is safe to place at `{data_path}/{name}` (non-empty, at most 255 bytes, no
//! `/` or `\`, not `.` or `..`, no control or bidirectional-override characters, no white
//! space at either end), kept exactly as sent. Extensions the vendor gives are normalised to
//! 1–16 lower-case ASCII letters or digits, and `accepts` agrees with a plain reading of the
//! rules. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use testdrive::domain::upload::MAX_NAME_BYTES;
use testdrive::domain::{UploadName, UploadRules};

fuzz_target!(|data: &[u8]| {
    let lossy = String::from_utf8_lossy(data);
    check_name(&lossy);
    if let Ok(exact) = std::str::from_utf8(data) {
        // Lossy decoding of valid UTF-8 is the text itself; nothing more to try.
        debug_assert_eq!(exact, lossy);
    } else {
        // The raw bytes as a prospect's client might send them, once they reach text: every
        // invalid sequence dropped rather than replaced.
        let dropped: String = data
            .utf8_chunks()
            .map(|chunk| chunk.valid())
            .collect();
        check_name(&dropped);
    }

    // A rule set derived from the same input: the pieces between separators, each read as a
    // vendor-given extension the way `DemoSpec::parse` reads them (sorted, deduplicated).
    let mut extensions: Vec<String> = lossy
        .split([',', ' ', '|', '\n'])
        .filter_map(|piece| check_extension(piece))
        .collect();
    extensions.sort();
    extensions.dedup();
    let rules = UploadRules {
        max_bytes: 1,
        max_files: 1,
        extensions,
    };
    let any = UploadRules {
        extensions: Vec::new(),
        ..rules.clone()
    };

    let candidates = [lossy.as_ref(), lossy.split([',', ' ', '|', '\n']).next().unwrap_or("")];
    for raw in candidates {
        if let Ok(name) = UploadName::parse(raw) {
            assert!(any.accepts(&name), "no extension rule means any type");
            assert_eq!(
                rules.accepts(&name),
                accepts_by_hand(&rules, name.as_str()),
                "accepts({raw:?}) under {:?}",
                rules.extensions
            );
        }
    }

    // Every extension in the rules is accepted on any plain name, whatever its case.
    for ext in &rules.extensions {
        for raw in [format!("x.{ext}"), format!("x.{}", ext.to_ascii_uppercase())] {
            let name = UploadName::parse(&raw).expect("x.<extension> is a valid file name");
            assert!(rules.accepts(&name), "{raw:?} refused under {:?}", rules.extensions);
        }
        // …but never as a whole name (`.csv` has no extension).
        let bare = UploadName::parse(&format!(".{ext}")).expect(".<extension> is a valid name");
        assert!(!rules.accepts(&bare), "{bare} accepted under {:?}", rules.extensions);
    }
});

fn check_name(raw: &str) {
    let Ok(name) = UploadName::parse(raw) else {
        return;
    };
    let s = name.as_str();
    assert_eq!(s, raw, "an accepted name is kept exactly as sent");
    assert!(!s.is_empty());
    assert!(s.len() <= MAX_NAME_BYTES, "{} bytes", s.len());
    assert!(!s.contains('/') && !s.contains('\\'), "{s:?} has a separator");
    assert!(s != "." && s != "..", "{s:?} is not a file name");
    assert!(
        !s.chars().any(|c| c.is_control() || is_bidi_control(c)),
        "{s:?} has a control character"
    );
    assert_eq!(s.trim(), s, "{s:?} has white space at an end");
    assert_eq!(name.to_string(), s);
    assert_eq!(UploadName::parse(s).as_ref(), Ok(&name), "parse is idempotent");

    match name.extension() {
        Some(ext) => {
            let dot = s.rfind('.').expect("an extension follows a dot");
            assert!(dot > 0, "{s:?}: a leading dot is not an extension");
            assert_eq!(ext, s[dot + 1..].to_ascii_lowercase());
            assert!(!ext.contains('.'));
        }
        None => assert!(s.rfind('.').is_none_or(|dot| dot == 0), "{s:?}"),
    }
}

fn check_extension(raw: &str) -> Option<String> {
    let ext = UploadRules::parse_extension(raw).ok()?;
    assert!((1..=16).contains(&ext.len()), "{ext:?}");
    assert!(
        ext.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{ext:?} is not lower-case alphanumeric"
    );
    assert_eq!(
        ext,
        raw.strip_prefix('.').unwrap_or(raw).to_ascii_lowercase(),
        "{raw:?} is only stripped of one dot and lower-cased"
    );
    assert_eq!(
        UploadRules::parse_extension(&ext).as_ref(),
        Ok(&ext),
        "idempotent"
    );
    Some(ext)
}

/// The rule read plainly: a name is accepted when it ends, case aside, in `.` plus one of the
/// extensions, with something before that dot.
fn accepts_by_hand(rules: &UploadRules, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    rules.extensions.is_empty()
        || rules
            .extensions
            .iter()
            .any(|ext| lower.len() >= ext.len() + 2 && lower.ends_with(&format!(".{ext}")))
}

/// The characters `UploadName` refuses besides controls: bidirectional overrides and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
