//! The layer map of `lib.rs`, checked: every `crate::…` path in `src/` may only name a
//! module its own module is allowed to use, so no import circle can form and no layer
//! reaches one above it. In `http`, the API, the pages and the proxy are siblings that
//! never import each other.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and what it may use (besides itself). A DAG, lowest first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("secrets", &[]),
    ("clock", &["domain"]),
    ("signing", &["domain", "secrets"]),
    ("store", &["domain"]),
    ("sandbox_dirs", &["domain"]),
    ("engine", &["domain", "sandbox_dirs"]),
    ("spool", &["domain"]),
    ("webhooks", &["domain", "store", "clock", "secrets"]),
    ("registry", &["domain", "store", "engine", "secrets"]),
    (
        "lifecycle",
        &[
            "domain",
            "store",
            "engine",
            "sandbox_dirs",
            "spool",
            "clock",
            "webhooks",
        ],
    ),
    (
        "cluster",
        &[
            "domain",
            "store",
            "clock",
            "engine",
            "lifecycle",
            "webhooks",
        ],
    ),
    (
        "http",
        &[
            "cluster",
            "domain",
            "store",
            "engine",
            "spool",
            "lifecycle",
            "registry",
            "webhooks",
            "signing",
        ],
    ),
    ("seed", &["domain", "registry", "store", "secrets"]),
    ("config", &["domain", "engine", "sandbox_dirs"]),
    (
        "app",
        &[
            "domain",
            "secrets",
            "clock",
            "signing",
            "store",
            "engine",
            "sandbox_dirs",
            "spool",
            "webhooks",
            "registry",
            "lifecycle",
            "cluster",
            "http",
            "seed",
            "config",
        ],
    ),
];

/// The siblings inside `http` that must not use each other.
const HTTP_SIBLINGS: &[&str] = &["api", "pages", "proxy"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `http/api/demos.rs` → `["http", "api", "demos"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path in the code (comments left out), as `[a, b]`.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: Vec<String> = rest
                .split("::")
                .take(2)
                .map(|p| {
                    p.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect()
                })
                .collect();
            paths.push(path);
        }
    }
    paths
}

/// The `super::x` an `http` sibling names, when it names another sibling.
fn sibling_via_super(module: &[String], text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // From `http/api/*.rs` (depth 3) `super::super::pages`; from `http/api/mod.rs` or
    // `http/proxy.rs` (depth 2) `super::pages`.
    let prefix = if module.len() >= 3 {
        "super::super::"
    } else {
        "super::"
    };
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for sibling in HTTP_SIBLINGS {
            if code.contains(&format!("{prefix}{sibling}")) {
                found.insert(sibling.to_string());
            }
        }
    }
    found
}

#[test]
fn the_layers_only_look_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let top = module[0].as_str();
        // The crate's root and this checker (whose strings name modules) are not layers.
        if ["lib", "main", "layers"].contains(&top) {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(name, _)| *name == top)
            .unwrap_or_else(|| panic!("src/{top} is not in the layer map: add it"))
            .1;
        let text = std::fs::read_to_string(file).expect("a readable file");
        for path in crate_paths(&text) {
            let used = path[0].as_str();
            if used != top && !allowed.contains(&used) {
                broken.push(format!("{}: uses crate::{used}", file.display()));
            }
            // Inside http: one sibling never names another.
            if top == "http"
                && module.len() >= 2
                && HTTP_SIBLINGS.contains(&module[1].as_str())
                && used == "http"
                && let Some(sibling) = path.get(1)
                && HTTP_SIBLINGS.contains(&sibling.as_str())
                && *sibling != module[1]
            {
                broken.push(format!("{}: uses crate::http::{sibling}", file.display()));
            }
        }
        if top == "http" && module.len() >= 2 && HTTP_SIBLINGS.contains(&module[1].as_str()) {
            for sibling in sibling_via_super(&module, &text) {
                if sibling != module[1] {
                    broken.push(format!("{}: uses the sibling {sibling}", file.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer violations:\n{}",
        broken.join("\n")
    );
    assert!(files.len() > 40, "read {} files", files.len());
}

#[test]
fn the_checker_sees_what_it_must() {
    let found = crate_paths(
        "use crate::store::Sandbox; // crate::http::x\nlet x = crate::engine::fake::Op;",
    );
    assert_eq!(found, [["store", "Sandbox"], ["engine", "fake"]]);
    let api = ["http".to_string(), "api".into(), "demos".into()];
    assert_eq!(
        sibling_via_super(&api, "use super::super::pages::x;"),
        BTreeSet::from(["pages".to_string()])
    );
    assert!(sibling_via_super(&api, "use super::Items; // super::super::proxy").is_empty());
}
