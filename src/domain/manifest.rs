//! A demo manifest: the vendor's image plus how to run it for one prospect. `DemoManifest` is
//! the body as sent (every field optional, unknown fields refused); `DemoSpec::parse` turns it
//! into a `DemoSpec` with every rule checked and every default filled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conversation::{Question, QuestionManifest};
use super::upload::UploadRules;
use super::{ImageRef, Invalid, parse_text};

/// Ceilings the operator sets for all demos (the service configuration's `[policy]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Policy {
    pub max_memory_mb: u32,
    pub max_cpus: f64,
    pub max_pids: u32,
    pub max_upload_bytes: u64,
    pub max_files: u32,
    pub max_trial_seconds: u32,
    pub max_disk_mb: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_memory_mb: 4096,
            max_cpus: 2.0,
            max_pids: 4096,
            max_upload_bytes: 2 << 30,
            max_files: 100,
            max_trial_seconds: 30 * 24 * 3600,
            max_disk_mb: 10 * 1024,
        }
    }
}

/// `[a-z0-9-]{1,40}`, unique per vendor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DemoSlug(String);

impl DemoSlug {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=40).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(Invalid::new(
                "slug",
                "must be 1 to 40 characters of a-z, 0-9 and -",
            ));
        }
        Ok(DemoSlug(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The manifest as a vendor sends it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoManifest {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub image: Option<String>,
    pub port: Option<i64>,
    pub data_path: Option<String>,
    pub command: Option<Vec<String>>,
    /// The user the demo runs as (`uid[:gid]` or a name from the image); the image's own
    /// `USER` when absent.
    pub user: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub load_command: Option<Vec<String>>,
    pub ready: Option<ReadyManifest>,
    pub limits: Option<LimitsManifest>,
    pub writable_paths: Option<Vec<String>>,
    pub trial: Option<TrialManifest>,
    pub upload: Option<UploadManifest>,
    pub warm_pool: Option<i64>,
    /// At most this many live sandboxes of this demo at once (`null`: only the service's
    /// own limits apply).
    pub max_sandboxes: Option<i64>,
    /// Asked on the demo's page before the trial.
    pub questions: Option<Vec<QuestionManifest>>,
    /// Asked on the trial page once the trial ends, beside the deletion receipt.
    pub exit_questions: Option<Vec<QuestionManifest>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyManifest {
    pub http_path: Option<String>,
    pub timeout_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsManifest {
    pub memory_mb: Option<i64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub disk_mb: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialManifest {
    pub seconds: Option<i64>,
    pub max_seconds: Option<i64>,
    pub idle_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadManifest {
    pub max_bytes: Option<i64>,
    pub max_files: Option<i64>,
    pub extensions: Option<Vec<String>>,
}

/// A checked demo: what the service stores and what the lifecycle runs. It serialises to the
/// manifest's own shape, so a stored spec can be patched and parsed again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DemoSpec {
    #[schema(value_type = String, example = "csv-explorer")]
    pub slug: DemoSlug,
    pub title: String,
    pub description: String,
    pub image: String,
    pub port: u16,
    pub data_path: String,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    pub load_command: Option<Vec<String>>,
    pub ready: ReadyProbe,
    pub limits: Limits,
    pub writable_paths: Vec<String>,
    pub trial: TrialRules,
    pub upload: UploadRules,
    pub warm_pool: u32,
    #[serde(default)]
    pub max_sandboxes: Option<u32>,
    /// Changing them changes the spec, so warm pool members of the old one are replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<Question>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_questions: Vec<Question>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadyProbe {
    pub http_path: String,
    pub timeout_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    pub memory_mb: u32,
    pub cpus: f64,
    pub pids: u32,
    /// What the sandbox's volumes (data path and writable paths) may hold, uploads included.
    #[serde(default = "default_disk_mb")]
    pub disk_mb: u32,
}

fn default_disk_mb() -> u32 {
    1024
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrialRules {
    pub seconds: u32,
    pub max_seconds: u32,
    pub idle_seconds: Option<u32>,
}

const DEFAULT_UPLOAD_BYTES: u64 = 50 << 20;

fn required<T>(field: &str, value: Option<T>) -> Result<T, Invalid> {
    value.ok_or_else(|| Invalid::new(field, "is required"))
}

fn in_range(field: &str, value: i64, lo: i64, hi: i64) -> Result<i64, Invalid> {
    if value < lo || value > hi {
        return Err(Invalid::new(
            field,
            format!("must be between {lo} and {hi}, got {value}"),
        ));
    }
    Ok(value)
}

/// An absolute path inside the container for a volume: normalised, not the root, and not one
/// of the places the runtime owns.
fn parse_mount_path(field: &str, raw: &str) -> Result<String, Invalid> {
    let fail = |reason: &str| Err(Invalid::new(field, format!("{raw:?} {reason}")));
    if !raw.starts_with('/') {
        return fail("is not an absolute path");
    }
    if raw.len() > 200 {
        return fail("is longer than 200 bytes");
    }
    if raw.chars().any(|c| c.is_control() || c == ':' || c == ',') {
        return fail("contains a control character, a comma or a colon");
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return fail("is the root directory");
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return fail("contains a . or .. component");
    }
    if ["proc", "sys", "dev", "tmp"].contains(&parts[0]) {
        return fail("is inside /proc, /sys, /dev or /tmp");
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parse_argv(field: &str, raw: Vec<String>) -> Result<Vec<String>, Invalid> {
    if raw.is_empty() || raw[0].trim().is_empty() {
        return Err(Invalid::new(
            field,
            "must be a non-empty list whose first item names a program",
        ));
    }
    if raw.len() > 64 || raw.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        return Err(Invalid::new(
            field,
            "must have at most 64 items, each under 4096 bytes, without NUL",
        ));
    }
    Ok(raw)
}

/// `user[:group]`, each a number or a name of letters, digits, `_` and `-`.
fn parse_user(raw: &str) -> Result<String, Invalid> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && (p.bytes().all(|b| b.is_ascii_digit())
                || (p.as_bytes()[0].is_ascii_alphabetic() || p.starts_with('_'))
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    };
    let valid = match raw.split_once(':') {
        Some((user, group)) => part_ok(user) && part_ok(group),
        None => part_ok(raw),
    };
    if !valid {
        return Err(Invalid::new(
            "user",
            format!("{raw:?} is not a user (uid[:gid] or a name)"),
        ));
    }
    Ok(raw.to_string())
}

fn parse_env(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Invalid> {
    if raw.len() > 64 {
        return Err(Invalid::new("env", "must have at most 64 variables"));
    }
    for (key, value) in &raw {
        let mut bytes = key.bytes();
        let valid_key = key.len() <= 128
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(Invalid::new(
                "env",
                format!("{key:?} is not a variable name"),
            ));
        }
        if value.len() > 4096 || value.contains('\0') {
            return Err(Invalid::new(
                "env",
                format!("the value of {key} is over 4096 bytes or holds NUL"),
            ));
        }
    }
    Ok(raw)
}

/// An image reference as the Engine takes it: `[server/]name[:tag][@digest]`.
fn parse_image(raw: &str) -> Result<String, Invalid> {
    ImageRef::parse(raw).map(|_| raw.to_string())
}

impl DemoSpec {
    pub fn parse(manifest: DemoManifest, policy: &Policy) -> Result<DemoSpec, Invalid> {
        let slug = DemoSlug::parse(&required("slug", manifest.slug)?)?;
        let title = parse_text("title", &required("title", manifest.title)?, 120, false)?;
        if title.is_empty() {
            return Err(Invalid::new("title", "must not be empty"));
        }
        let description = parse_text(
            "description",
            manifest.description.as_deref().unwrap_or(""),
            2000,
            true,
        )?;
        let image = parse_image(&required("image", manifest.image)?)?;
        let port = in_range("port", required("port", manifest.port)?, 1, 65535)? as u16;
        let data_path = parse_mount_path("data_path", &required("data_path", manifest.data_path)?)?;
        let command = manifest
            .command
            .map(|c| parse_argv("command", c))
            .transpose()?;
        let user = manifest.user.as_deref().map(parse_user).transpose()?;
        let env = parse_env(manifest.env.unwrap_or_default())?;
        let load_command = manifest
            .load_command
            .map(|c| parse_argv("load_command", c))
            .transpose()?;

        let ready_in = manifest.ready.unwrap_or_default();
        let http_path = ready_in.http_path.unwrap_or_else(|| "/".to_string());
        if !http_path.starts_with('/')
            || http_path.len() > 1024
            || http_path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(Invalid::new(
                "ready.http_path",
                "must be a path starting with /, without spaces",
            ));
        }
        let ready = ReadyProbe {
            http_path,
            timeout_seconds: in_range(
                "ready.timeout_seconds",
                ready_in.timeout_seconds.unwrap_or(30),
                1,
                600,
            )? as u32,
        };

        let limits_in = manifest.limits.unwrap_or_default();
        // In whole nano-CPUs, the Engine's unit. Such a number also reads back from JSON as
        // itself (serde_json's default float parsing can be one ULP off on 17 digits), so the
        // spec does not change on its way through the store or a patch.
        let cpus = (limits_in.cpus.unwrap_or(0.5) * 1e9).round() / 1e9;
        if !(cpus.is_finite() && cpus >= 0.01 && cpus <= policy.max_cpus) {
            return Err(Invalid::new(
                "limits.cpus",
                format!("must be between 0.01 and {}", policy.max_cpus),
            ));
        }
        let limits = Limits {
            memory_mb: in_range(
                "limits.memory_mb",
                limits_in.memory_mb.unwrap_or(256),
                16,
                i64::from(policy.max_memory_mb),
            )? as u32,
            cpus,
            pids: in_range(
                "limits.pids",
                limits_in.pids.unwrap_or(128),
                8,
                i64::from(policy.max_pids),
            )? as u32,
            // Settled below, once the upload rules are known.
            disk_mb: 0,
        };

        let mut writable_paths = Vec::new();
        for raw in manifest.writable_paths.unwrap_or_default() {
            let path = parse_mount_path("writable_paths", &raw)?;
            let overlaps = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if overlaps(&path, &data_path)
                || overlaps(&data_path, &path)
                || writable_paths
                    .iter()
                    .any(|p: &String| overlaps(p, &path) || overlaps(&path, p))
            {
                return Err(Invalid::new(
                    "writable_paths",
                    format!("{path} overlaps data_path or another writable path"),
                ));
            }
            writable_paths.push(path);
        }
        if writable_paths.len() > 8 {
            return Err(Invalid::new("writable_paths", "must have at most 8 paths"));
        }

        let trial_in = manifest.trial.unwrap_or_default();
        let max_trial = i64::from(policy.max_trial_seconds);
        let seconds = in_range(
            "trial.seconds",
            trial_in.seconds.unwrap_or(1800),
            1,
            max_trial,
        )?;
        let max_seconds = in_range(
            "trial.max_seconds",
            trial_in
                .max_seconds
                .unwrap_or(seconds.max(7200).min(max_trial)),
            seconds,
            max_trial,
        )?;
        let idle_seconds = trial_in
            .idle_seconds
            .map(|idle| in_range("trial.idle_seconds", idle, 1, max_trial).map(|i| i as u32))
            .transpose()?;
        let trial = TrialRules {
            seconds: seconds as u32,
            max_seconds: max_seconds as u32,
            idle_seconds,
        };

        let upload_in = manifest.upload.unwrap_or_default();
        let max_upload = i64::try_from(policy.max_upload_bytes).unwrap_or(i64::MAX);
        let upload = UploadRules {
            max_bytes: in_range(
                "upload.max_bytes",
                upload_in
                    .max_bytes
                    .unwrap_or((DEFAULT_UPLOAD_BYTES as i64).min(max_upload)),
                1,
                max_upload,
            )? as u64,
            max_files: in_range(
                "upload.max_files",
                upload_in
                    .max_files
                    .unwrap_or(10.min(i64::from(policy.max_files))),
                1,
                i64::from(policy.max_files),
            )? as u32,
            extensions: {
                let mut exts = upload_in
                    .extensions
                    .unwrap_or_default()
                    .iter()
                    .map(|e| UploadRules::parse_extension(e))
                    .collect::<Result<Vec<_>, _>>()?;
                exts.sort();
                exts.dedup();
                exts
            },
        };

        // The volumes hold the upload first: by default room for it and 1 GiB besides.
        let upload_mb = upload.max_bytes.div_ceil(1 << 20) as i64;
        let mut limits = limits;
        limits.disk_mb = in_range(
            "limits.disk_mb",
            limits_in
                .disk_mb
                .unwrap_or((upload_mb + 1024).min(i64::from(policy.max_disk_mb))),
            upload_mb.max(16),
            i64::from(policy.max_disk_mb),
        )? as u32;

        let warm_pool = in_range("warm_pool", manifest.warm_pool.unwrap_or(0), 0, 50)? as u32;

        let max_sandboxes = manifest
            .max_sandboxes
            .map(|n| in_range("max_sandboxes", n, 1, 100_000).map(|n| n as u32))
            .transpose()?;

        let questions = Question::parse_list("questions", manifest.questions.unwrap_or_default())?;
        let exit_questions = Question::parse_list(
            "exit_questions",
            manifest.exit_questions.unwrap_or_default(),
        )?;

        Ok(DemoSpec {
            slug,
            title,
            description,
            image,
            port,
            data_path,
            command,
            user,
            env,
            load_command,
            ready,
            limits,
            writable_paths,
            trial,
            upload,
            warm_pool,
            max_sandboxes,
            questions,
            exit_questions,
        })
    }

    /// Apply a JSON merge patch (RFC 7396) to this spec and check the result like a new
    /// manifest. The slug cannot change.
    pub fn patch(&self, patch: &Value, policy: &Policy) -> Result<DemoSpec, Invalid> {
        let Value::Object(fields) = patch else {
            return Err(Invalid::new("body", "must be a JSON object"));
        };
        if let Some(slug) = fields.get("slug")
            && slug.as_str() != Some(self.slug.as_str())
        {
            return Err(Invalid::new("slug", "cannot be changed"));
        }
        let mut doc = serde_json::to_value(self).expect("a spec always serialises");
        merge_patch(&mut doc, patch);
        let manifest: DemoManifest =
            serde_json::from_value(doc).map_err(|e| Invalid::new("body", e.to_string()))?;
        DemoSpec::parse(manifest, policy)
    }
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("just made an object");
            for (key, value) in fields {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// How long a prospect asked their trial to last: `seconds` from the form, within the demo's
/// `max_seconds`; the demo's default when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialWindow(u32);

impl TrialWindow {
    pub fn parse(requested: Option<&str>, rules: &TrialRules) -> Result<TrialWindow, Invalid> {
        let Some(raw) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(TrialWindow(rules.seconds));
        };
        let seconds: i64 = raw
            .parse()
            .map_err(|_| Invalid::new("seconds", "must be a whole number of seconds"))?;
        Ok(TrialWindow(
            in_range("seconds", seconds, 1, i64::from(rules.max_seconds))? as u32,
        ))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(value: Value) -> DemoManifest {
        serde_json::from_value(value).unwrap()
    }

    fn minimal() -> Value {
        json!({"slug": "csv-explorer", "title": "CSV Explorer", "image": "testdrive/csv-explorer:1",
               "port": 8080, "data_path": "/data"})
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let spec = DemoSpec::parse(manifest(minimal()), &Policy::default()).unwrap();
        assert_eq!(spec.ready.http_path, "/");
        assert_eq!(spec.limits.memory_mb, 256);
        assert_eq!(spec.trial.seconds, 1800);
        assert_eq!(spec.trial.max_seconds, 7200);
        assert_eq!(spec.upload.max_bytes, 50 << 20);
        assert!(spec.upload.extensions.is_empty());
    }

    #[test]
    fn required_fields_are_named() {
        for field in ["slug", "title", "image", "port", "data_path"] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(field);
            let err = DemoSpec::parse(manifest(v), &Policy::default()).unwrap_err();
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = minimal();
        v["limits"] = json!({"memory": 3});
        assert!(serde_json::from_value::<DemoManifest>(v).is_err());
    }

    #[test]
    fn rule_breaking_values_are_refused() {
        let cases = [
            ("slug", json!("CSV")),
            ("slug", json!("a".repeat(41))),
            ("port", json!(0)),
            ("port", json!(70000)),
            ("data_path", json!("data")),
            ("data_path", json!("/")),
            ("data_path", json!("/tmp/x")),
            ("data_path", json!("/a/../b")),
            ("image", json!("bad image")),
            ("user", json!("root user")),
            ("user", json!("1000:")),
            ("user", json!("-x")),
            ("command", json!([])),
            ("env", json!({"1BAD": "x"})),
            ("limits", json!({"memory_mb": -1})),
            ("limits", json!({"cpus": 100.0})),
            ("limits", json!({"disk_mb": 1})),
            ("trial", json!({"seconds": -5})),
            ("trial", json!({"seconds": 100, "max_seconds": 50})),
            ("trial", json!({"idle_seconds": 0})),
            ("max_sandboxes", json!(0)),
            ("upload", json!({"max_bytes": 0})),
            ("upload", json!({"extensions": ["c s v"]})),
            ("writable_paths", json!(["/data/cache"])),
            ("ready", json!({"http_path": "health"})),
            ("warm_pool", json!(51)),
        ];
        for (field, value) in cases {
            let mut v = minimal();
            v[field] = value.clone();
            let result = DemoSpec::parse(manifest(v), &Policy::default());
            assert!(result.is_err(), "{field} = {value} passed");
        }
    }

    #[test]
    fn cpus_survive_a_round_trip_through_json() {
        // Found by fuzz/manifest: 17 significant digits, which serde_json's default float
        // parsing read back one ULP off once the spec was stored or patched.
        let body = r#"{"slug": "a", "title": "A", "image": "a", "port": 80, "data_path": "/data",
                       "limits": {"cpus": 0.0261987299722623578901448}}"#;
        let m: DemoManifest = serde_json::from_str(body).unwrap();
        let spec = DemoSpec::parse(m, &Policy::default()).unwrap();
        assert_eq!(spec.limits.cpus, 0.026_198_730);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<DemoSpec>(&json).unwrap(), spec);
        let again: DemoManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(DemoSpec::parse(again, &Policy::default()).unwrap(), spec);
        assert_eq!(spec.patch(&json!({}), &Policy::default()).unwrap(), spec);
    }

    #[test]
    fn paths_are_normalised() {
        let mut v = minimal();
        v["data_path"] = json!("//srv//data/");
        v["writable_paths"] = json!(["/var/cache/"]);
        let spec = DemoSpec::parse(manifest(v), &Policy::default()).unwrap();
        assert_eq!(spec.data_path, "/srv/data");
        assert_eq!(spec.writable_paths, vec!["/var/cache"]);
    }

    #[test]
    fn patch_merges_and_keeps_the_slug() {
        let spec = DemoSpec::parse(manifest(minimal()), &Policy::default()).unwrap();
        let patched = spec
            .patch(
                &json!({"trial": {"seconds": 600}, "title": "New"}),
                &Policy::default(),
            )
            .unwrap();
        assert_eq!(patched.trial.seconds, 600);
        assert_eq!(patched.trial.max_seconds, spec.trial.max_seconds);
        assert_eq!(patched.title, "New");
        assert!(
            spec.patch(&json!({"slug": "other"}), &Policy::default())
                .is_err()
        );
        assert!(
            spec.patch(&json!({"port": null}), &Policy::default())
                .is_err()
        );
        assert!(spec.patch(&json!([1]), &Policy::default()).is_err());
    }

    #[test]
    fn trial_window_stays_within_the_demo_maximum() {
        let rules = TrialRules {
            seconds: 600,
            max_seconds: 3600,
            idle_seconds: None,
        };
        assert_eq!(TrialWindow::parse(None, &rules).unwrap().seconds(), 600);
        assert_eq!(
            TrialWindow::parse(Some("900"), &rules).unwrap().seconds(),
            900
        );
        for bad in ["0", "-5", "3601", "1e3", "ten", "99999999999999999999"] {
            assert!(TrialWindow::parse(Some(bad), &rules).is_err(), "{bad}");
        }
    }
}
