//! The neighbour-table check at start, on the real binary, with its limits read from (and
//! written to) a directory of the test's own instead of the host's /proc.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::ChildService;

const LIMITS: [&str; 3] = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];

/// A stand-in for `/proc/sys/net/ipv4/neigh/default` holding the kernel's usual limits.
fn kernel_defaults() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, value) in LIMITS.iter().zip(["128", "512", "1024"]) {
        std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
    }
    dir
}

fn limits(dir: &Path) -> Vec<String> {
    LIMITS
        .iter()
        .map(|name| {
            std::fs::read_to_string(dir.join(name))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

async fn start(dir: &Path, raise: &str) -> ChildService {
    ChildService::start_with(&[
        ("TESTDRIVE_MAX_SANDBOXES", "1000"),
        (
            "TESTDRIVE_SANDBOX__NEIGHBOUR_LIMITS_DIR",
            dir.to_str().unwrap(),
        ),
        ("TESTDRIVE_SANDBOX__RAISE_NEIGHBOUR_LIMITS", raise),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_too_small_for_max_sandboxes_are_raised_at_start_and_said() {
    let dir = kernel_defaults();
    let svc = start(dir.path(), "true").await;
    assert_eq!(limits(dir.path()), ["4096", "8192", "16384"]);
    let log = svc.log_lines_with(&["gc_thresh", "neighbour table"]);
    assert!(
        log.contains(
            " INFO testdrive::engine::neighbours: raised gc_thresh1/2/3 from 128/512/1024 to \
             4096/8192/16384 for 1000 sandboxes"
        ),
        "{log}"
    );
    assert!(!log.contains("WARN"), "{log}");
}

/// Files even root cannot write (`chattr +i`), as a read-only /proc/sys refuses a service
/// in a container; made writable again when dropped, so the directory can go.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn make(dir: &Path) -> Immutable {
        let files: Vec<PathBuf> = LIMITS.iter().map(|name| dir.join(name)).collect();
        let made = Immutable(files);
        let out = Command::new("chattr")
            .arg("+i")
            .args(&made.0)
            .output()
            .expect("chattr runs");
        assert!(
            out.status.success(),
            "chattr +i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::write(&made.0[2], "1\n").is_err(),
            "an immutable file was written"
        );
        made
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_that_cannot_be_raised_get_a_warning_with_the_exact_command() {
    let dir = kernel_defaults();
    let _immutable = Immutable::make(dir.path());
    let svc = start(dir.path(), "true").await;
    assert_eq!(limits(dir.path()), ["128", "512", "1024"]);
    let log = svc.log_lines_with(&["gc_thresh", "neighbour table"]);
    let warning = log
        .lines()
        .find(|l| l.contains(" WARN testdrive::engine::neighbours: "))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    for said in [
        "gc_thresh1/2/3 = 128/512/1024 serve about 128 sandboxes, too few for 1000",
        &format!(
            "Not raised (cannot write {}: ",
            dir.path().join("gc_thresh3").display()
        ),
        "sysctl -w net.ipv4.neigh.default.gc_thresh1=4096 \
         net.ipv4.neigh.default.gc_thresh2=8192 net.ipv4.neigh.default.gc_thresh3=16384",
        "printf 'net.ipv4.neigh.default.gc_thresh1 = 4096\\n\
         net.ipv4.neigh.default.gc_thresh2 = 8192\\n\
         net.ipv4.neigh.default.gc_thresh3 = 16384\\n' > /etc/sysctl.d/60-testdrive.conf",
    ] {
        assert!(warning.contains(said), "{said:?} not in\n{warning}");
    }
    assert!(!log.contains("raised gc_thresh"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_raising_off_the_limits_are_left_and_the_command_given() {
    let dir = kernel_defaults();
    let svc = start(dir.path(), "false").await;
    assert_eq!(limits(dir.path()), ["128", "512", "1024"]);
    let log = svc.log_lines_with(&["gc_thresh", "neighbour table"]);
    assert!(
        log.contains("(sandbox.raise_neighbour_limits is off)")
            && log.contains("sysctl -w net.ipv4.neigh.default.gc_thresh1=4096 "),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_enough_for_max_sandboxes_are_left_and_said() {
    let dir = kernel_defaults();
    let svc = ChildService::start_with(&[
        ("TESTDRIVE_MAX_SANDBOXES", "128"),
        (
            "TESTDRIVE_SANDBOX__NEIGHBOUR_LIMITS_DIR",
            dir.path().to_str().unwrap(),
        ),
    ])
    .await;
    assert_eq!(limits(dir.path()), ["128", "512", "1024"]);
    let log = svc.log_lines_with(&["gc_thresh", "neighbour table"]);
    assert!(
        log.contains(
            " INFO testdrive::engine::neighbours: neighbour table holds 512 hosts (gc_thresh2; \
             gc_thresh3 = 1024), enough for 128 sandboxes"
        ),
        "{log}"
    );
    assert!(!log.contains("WARN"), "{log}");
}
