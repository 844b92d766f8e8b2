//! Demo manifests: arbitrary bytes → `serde_json::from_slice::<DemoManifest>` (as the API
//! reads a `POST /v1/demos` body) → `DemoSpec::parse` under `Policy::default()`; and the same
//! bytes as a JSON merge patch (`PATCH /v1/demos/{id}`) → `DemoSpec::patch` of a fixed valid
//! spec (sandbox-images/csv-explorer/demo.json).
//!
//! Nothing may panic. Every accepted spec must obey the rules `DemoSpec` promises (see
//! `check_spec`), and must survive the trips the service puts it through: serialised and read
//! back as a manifest and parsed again (a stored spec is patched that way), read back as a
//! `DemoSpec` (what the store does), and patched with nothing — each time the same spec.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use testdrive::domain::{DemoManifest, DemoSpec, Policy};

static POLICY: LazyLock<Policy> = LazyLock::new(Policy::default);

static BASE: LazyLock<DemoSpec> = LazyLock::new(|| {
    let manifest: DemoManifest = serde_json::from_str(include_str!(
        "../../sandbox-images/csv-explorer/demo.json"
    ))
    .expect("the csv-explorer manifest reads");
    DemoSpec::parse(manifest, &POLICY).expect("the csv-explorer manifest is valid")
});

fuzz_target!(|data: &[u8]| {
    let policy = &*POLICY;

    if let Ok(manifest) = serde_json::from_slice::<DemoManifest>(data)
        && let Ok(spec) = DemoSpec::parse(manifest, policy)
    {
        check_spec(&spec, policy);
        check_round_trips(&spec, policy);
    }

    if let Ok(patch) = serde_json::from_slice::<Value>(data) {
        let base = &*BASE;
        if let Ok(spec) = base.patch(&patch, policy) {
            assert_eq!(spec.slug, base.slug, "a patch cannot change the slug");
            check_spec(&spec, policy);
            check_round_trips(&spec, policy);
        }
    }
});

/// Every rule of `DemoSpec::parse`, checked on its output.
fn check_spec(spec: &DemoSpec, policy: &Policy) {
    let slug = spec.slug.as_str();
    assert!(
        (1..=40).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "slug {slug:?}"
    );

    check_text("title", &spec.title, 120, false);
    assert!(!spec.title.is_empty(), "empty title");
    check_text("description", &spec.description, 2000, true);

    let image = &spec.image;
    assert!(
        !image.is_empty()
            && image.len() <= 255
            && !image.starts_with(['-', '.', ':', '/', '@'])
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b)),
        "image {image:?}"
    );

    assert!(spec.port >= 1, "port 0");

    check_mount_path("data_path", &spec.data_path);
    assert!(spec.writable_paths.len() <= 8, "{} writable paths", spec.writable_paths.len());
    let all_paths: Vec<&String> = std::iter::once(&spec.data_path)
        .chain(&spec.writable_paths)
        .collect();
    for path in &spec.writable_paths {
        check_mount_path("writable_paths", path);
    }
    for (i, a) in all_paths.iter().enumerate() {
        for b in &all_paths[i + 1..] {
            assert!(
                !within(a, b) && !within(b, a),
                "mounts {a:?} and {b:?} overlap"
            );
        }
    }

    for (field, argv) in [("command", &spec.command), ("load_command", &spec.load_command)] {
        if let Some(argv) = argv {
            assert!(!argv.is_empty() && !argv[0].trim().is_empty(), "{field} names no program");
            assert!(argv.len() <= 64, "{field} has {} items", argv.len());
            assert!(
                argv.iter().all(|a| a.len() <= 4096 && !a.contains('\0')),
                "{field} item too long or with NUL"
            );
        }
    }

    if let Some(user) = &spec.user {
        // `user[:group]`, each a number or a name of letters, digits, `_` and `-`.
        let part_ok = |p: &str| {
            (1..=32).contains(&p.len())
                && (p.bytes().all(|b| b.is_ascii_digit())
                    || (p.as_bytes()[0].is_ascii_alphabetic() || p.starts_with('_'))
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        };
        let parts: Vec<&str> = user.split(':').collect();
        assert!(
            parts.len() <= 2 && parts.iter().all(|p| part_ok(p)),
            "user {user:?}"
        );
    }

    assert!(spec.env.len() <= 64, "{} variables", spec.env.len());
    for (key, value) in &spec.env {
        let mut bytes = key.bytes();
        assert!(
            key.len() <= 128
                && bytes
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "env key {key:?}"
        );
        assert!(value.len() <= 4096 && !value.contains('\0'), "env {key}");
    }

    let probe = &spec.ready.http_path;
    assert!(
        probe.starts_with('/')
            && probe.len() <= 1024
            && !probe.chars().any(|c| c.is_control() || c == ' '),
        "ready.http_path {probe:?}"
    );
    assert!((1..=600).contains(&spec.ready.timeout_seconds));

    let limits = &spec.limits;
    assert!(
        (16..=policy.max_memory_mb).contains(&limits.memory_mb),
        "memory_mb {}",
        limits.memory_mb
    );
    assert!(
        limits.cpus.is_finite() && limits.cpus >= 0.01 && limits.cpus <= policy.max_cpus,
        "cpus {}",
        limits.cpus
    );
    assert_eq!(
        (limits.cpus * 1e9).round() / 1e9,
        limits.cpus,
        "cpus are whole nano-CPUs"
    );
    // What the Engine is given: at least 10 ms of CPU per second, never more than the policy.
    let nano_cpus = (limits.cpus * 1e9) as i64;
    assert!(nano_cpus >= 9_999_999 && nano_cpus as f64 <= policy.max_cpus * 1e9);
    assert!((8..=policy.max_pids).contains(&limits.pids), "pids {}", limits.pids);
    // The volumes hold at least the largest upload allowed.
    let upload_mb = spec.upload.max_bytes.div_ceil(1 << 20);
    assert!(
        u64::from(limits.disk_mb) >= upload_mb.max(16) && limits.disk_mb <= policy.max_disk_mb,
        "disk_mb {} for an upload of {upload_mb} MiB",
        limits.disk_mb
    );

    let trial = &spec.trial;
    assert!(trial.seconds >= 1, "trial.seconds 0");
    assert!(
        trial.seconds <= trial.max_seconds && trial.max_seconds <= policy.max_trial_seconds,
        "trial {} ≤ {} ≤ {}",
        trial.seconds,
        trial.max_seconds,
        policy.max_trial_seconds
    );
    if let Some(idle) = trial.idle_seconds {
        assert!((1..=policy.max_trial_seconds).contains(&idle), "idle {idle}");
    }

    let upload = &spec.upload;
    assert!((1..=policy.max_upload_bytes).contains(&upload.max_bytes));
    assert!((1..=policy.max_files).contains(&upload.max_files));
    for ext in &upload.extensions {
        assert!(
            (1..=16).contains(&ext.len())
                && ext
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "extension {ext:?}"
        );
    }
    assert!(
        upload.extensions.windows(2).all(|w| w[0] < w[1]),
        "extensions not sorted and unique: {:?}",
        upload.extensions
    );

    assert!(spec.warm_pool <= 50, "warm_pool {}", spec.warm_pool);
    if let Some(max) = spec.max_sandboxes {
        assert!((1..=100_000).contains(&max), "max_sandboxes {max}");
    }
}

/// Trimmed, bounded in characters, and free of control characters (but newlines and tabs
/// where `multiline`) and of bidirectional embeddings, overrides and isolates.
fn check_text(field: &str, text: &str, max_chars: usize, multiline: bool) {
    assert_eq!(text.trim(), text, "{field} is not trimmed");
    assert!(text.chars().count() <= max_chars, "{field} is too long");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r'))),
        "{field} {text:?} has a control character"
    );
    assert!(
        !text
            .chars()
            .any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
        "{field} {text:?} has a bidirectional override"
    );
}

/// Absolute, normalised (no empty, `.` or `..` component, no trailing slash), not the root,
/// not under a place the runtime owns, and safe in a `-v` / bind specification.
fn check_mount_path(field: &str, path: &str) {
    assert!(path.starts_with('/') && path.len() > 1, "{field} {path:?}");
    assert!(path.len() <= 200, "{field} {path:?} is too long");
    let parts: Vec<&str> = path[1..].split('/').collect();
    assert!(
        parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."),
        "{field} {path:?} is not normalised"
    );
    assert!(
        !["proc", "sys", "dev", "tmp"].contains(&parts[0]),
        "{field} {path:?} is under a runtime directory"
    );
    assert!(
        !path.chars().any(|c| c.is_control() || c == ':' || c == ','),
        "{field} {path:?} has a control character, colon or comma"
    );
}

/// Whether `a` is `b` or below it.
fn within(a: &str, b: &str) -> bool {
    a == b || a.strip_prefix(b).is_some_and(|rest| rest.starts_with('/'))
}

fn check_round_trips(spec: &DemoSpec, policy: &Policy) {
    let json = serde_json::to_vec(spec).expect("a spec serialises");

    // What the store keeps and reads back.
    let stored: DemoSpec = serde_json::from_slice(&json).expect("a spec reads back as a spec");
    assert_eq!(&stored, spec, "a spec changes through the store's JSON");

    // What a later patch starts from: the spec as a manifest, checked again.
    let manifest: DemoManifest =
        serde_json::from_slice(&json).expect("a spec reads back as a manifest");
    let again = DemoSpec::parse(manifest, policy).expect("a spec, parsed again, is accepted");
    assert_eq!(&again, spec, "a spec changes when parsed again");

    // An empty patch, and a patch that restates the whole spec, change nothing.
    let empty = Value::Object(Default::default());
    assert_eq!(&spec.patch(&empty, policy).expect("an empty patch"), spec);
    let whole = serde_json::to_value(spec).expect("a spec serialises");
    assert_eq!(&spec.patch(&whole, policy).expect("restating the spec"), spec);
}
