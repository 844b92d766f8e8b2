//! The small parsers, each fed the same arbitrary text: `TrialWindow::parse` (the trial
//! length a prospect asks for), `DemoSlug::parse`, `Prospect::parse_email / parse_company /
//! parse_needs`, `VendorName::parse`, the ids (`SandboxId::parse`, `from_simple`, …),
//! `SandboxStatus::parse`, `EndReason::parse`, `token::Claim::of` and `TokenHash`.
//!
//! Nothing may panic; what is accepted obeys each type's rules and reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use testdrive::domain::manifest::TrialRules;
use testdrive::domain::token::{Claim, TokenHash};
use testdrive::domain::{
    DemoId, DemoSlug, EndReason, Policy, Prospect, SandboxId, SandboxStatus, TrialWindow,
    VendorId, VendorName,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let raw = text.as_ref();

    trial_window(raw);
    slug(raw);
    information_sheet(raw);
    vendor_name(raw);
    ids(raw);
    states(raw);
    token(raw);
});

fn trial_window(raw: &str) {
    let max = Policy::default().max_trial_seconds;
    let rule_sets = [
        TrialRules { seconds: 1800, max_seconds: 7200, idle_seconds: None },
        TrialRules { seconds: 1, max_seconds: 1, idle_seconds: Some(1) },
        TrialRules { seconds: max, max_seconds: max, idle_seconds: None },
        TrialRules { seconds: 1, max_seconds: u32::MAX, idle_seconds: None },
    ];
    for rules in &rule_sets {
        let default = TrialWindow::parse(None, rules).expect("no request takes the default");
        assert_eq!(default.seconds(), rules.seconds);

        let Ok(window) = TrialWindow::parse(Some(raw), rules) else {
            continue;
        };
        let seconds = window.seconds();
        assert!(
            (1..=rules.max_seconds).contains(&seconds),
            "{raw:?} gave {seconds} outside 1..={}",
            rules.max_seconds
        );
        match raw.trim() {
            "" => assert_eq!(seconds, rules.seconds, "blank takes the default"),
            given => assert_eq!(
                given.parse::<i64>().ok(),
                Some(i64::from(seconds)),
                "{raw:?} is the number it says"
            ),
        }
        let again = TrialWindow::parse(Some(&seconds.to_string()), rules);
        assert_eq!(again, Ok(window));
    }
}

fn slug(raw: &str) {
    let Ok(slug) = DemoSlug::parse(raw) else {
        return;
    };
    let s = slug.as_str();
    assert_eq!(s, raw, "a slug is kept as sent");
    assert!((1..=40).contains(&s.len()), "slug {s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "slug {s:?}"
    );
    assert_eq!(DemoSlug::parse(s), Ok(slug.clone()));
}

fn information_sheet(raw: &str) {
    let trimmed = raw.trim();
    let no_controls = |s: &str, multiline: bool| {
        !s.chars()
            .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r')))
    };

    match Prospect::parse_email(raw) {
        Ok(None) => assert!(trimmed.is_empty(), "{raw:?} read as no email"),
        Ok(Some(email)) => {
            assert_eq!(email, trimmed);
            assert!(email.chars().count() <= 254);
            assert!(no_controls(&email, false), "{email:?}");
            assert!(!email.contains(char::is_whitespace), "{email:?}");
            let (local, domain) = email.split_once('@').expect("an email has an @");
            assert!(!local.is_empty() && domain.contains('.') && !domain.starts_with('.'));
            assert_eq!(Prospect::parse_email(&email), Ok(Some(email.clone())));
        }
        Err(_) => {}
    }

    for (field, parse, max, multiline) in [
        ("company", Prospect::parse_company as fn(&str) -> _, 200, false),
        ("needs", Prospect::parse_needs, 4000, true),
    ] {
        match parse(raw) {
            Ok(None) => assert!(trimmed.is_empty(), "{field}: {raw:?} read as nothing"),
            Ok(Some(value)) => {
                assert_eq!(value, trimmed, "{field}");
                assert!(value.chars().count() <= max, "{field} too long");
                assert!(no_controls(&value, multiline), "{field} {value:?}");
                assert_eq!(parse(&value), Ok(Some(value.clone())), "{field}");
            }
            Err(_) => {}
        }
    }
}

fn vendor_name(raw: &str) {
    let Ok(name) = VendorName::parse(raw) else {
        return;
    };
    let s = name.as_str();
    assert_eq!(s, raw.trim());
    assert!(!s.is_empty() && s.chars().count() <= 100, "vendor name {s:?}");
    assert!(!s.chars().any(char::is_control), "vendor name {s:?}");
    assert_eq!(VendorName::parse(s), Ok(name.clone()));
}

macro_rules! check_id {
    ($ty:ty, $raw:expr) => {{
        let raw: &str = $raw;
        if let Ok(id) = <$ty>::parse(raw) {
            let text = id.to_string();
            assert_eq!(text.len(), 36, "hyphenated form {text:?}");
            assert_eq!(<$ty>::parse(&text), Ok(id));
            assert_eq!(text.parse::<$ty>(), Ok(id));
            assert_eq!(<$ty>::from_simple(&id.simple()), Some(id));
        }
        if let Some(id) = <$ty>::from_simple(raw) {
            assert_eq!(raw.len(), 32, "from_simple({raw:?})");
            assert_eq!(raw.to_ascii_lowercase(), id.simple());
            assert_eq!(<$ty>::parse(raw), Ok(id), "a simple id also parses");
        }
    }};
}

fn ids(raw: &str) {
    check_id!(VendorId, raw);
    check_id!(DemoId, raw);
    check_id!(SandboxId, raw);
}

fn states(raw: &str) {
    if let Ok(status) = SandboxStatus::parse(raw) {
        assert_eq!(status.as_str(), raw);
        assert_eq!(status.to_string(), raw);
    }
    if let Some(reason) = EndReason::parse(raw) {
        assert_eq!(reason.as_str(), raw);
        assert!(!reason.final_status().is_live());
    }
}

fn token(raw: &str) {
    // The claim is read from the shape alone: `tdv_<32 hex>_…` or `tds_<32 hex>_…`.
    let claimed = |prefix: &str, simple: String| {
        let bytes = raw.as_bytes();
        raw.starts_with(prefix)
            && bytes.len() > 36
            && bytes[4..36].eq_ignore_ascii_case(simple.as_bytes())
            && bytes[36] == b'_'
    };
    match Claim::of(raw) {
        Claim::Vendor(id) => assert!(claimed("tdv_", id.simple()), "{raw:?}"),
        Claim::Sandbox(id) => assert!(claimed("tds_", id.simple()), "{raw:?}"),
        Claim::Other => {
            // Whatever follows the prefix, a well-formed claim is recognised.
            if let Some((id, _)) = raw.get(4..).and_then(|rest| rest.split_once('_')) {
                if raw.starts_with("tdv_")
                    && let Some(vendor) = VendorId::from_simple(id)
                {
                    panic!("{raw:?} claims vendor {vendor} but was read as Other");
                }
                if raw.starts_with("tds_")
                    && let Some(sandbox) = SandboxId::from_simple(id)
                {
                    panic!("{raw:?} claims sandbox {sandbox} but was read as Other");
                }
            }
        }
    }

    // A token built around any id and any secret claims that id.
    let sandbox = SandboxId::from_simple(&format!("{:0>32}", hex_of(raw))).unwrap_or_default();
    assert_eq!(
        Claim::of(&format!("tds_{}_{raw}", sandbox.simple())),
        Claim::Sandbox(sandbox)
    );

    let hash = TokenHash::of(raw);
    assert!(hash.matches(raw));
    assert!(!hash.matches(&format!("{raw}x")));
    let hex = hash.to_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(TokenHash::from_hex(&hex), Some(hash));
    if let Some(parsed) = TokenHash::from_hex(raw) {
        assert_eq!(raw.len(), 64);
        assert_eq!(parsed.to_hex(), raw.to_ascii_lowercase());
    }
}

/// Up to 32 hex digits taken from the input, for an id that depends on it.
fn hex_of(raw: &str) -> String {
    raw.bytes()
        .filter(u8::is_ascii_hexdigit)
        .take(32)
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}
