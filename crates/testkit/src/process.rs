//! Small process helpers the Engine and the PostgreSQL server share: whether a process
//! still runs, the removal of directories left by test processes that died, and the `ip`
//! command.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether a process with this id runs (or is a zombie not yet reaped).
pub(crate) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Calls `remove` on every entry of the temporary directory named `<prefix><pid>.…` whose
/// process `<pid>` is gone (killed before it could drop what it made).
pub(crate) fn remove_stale_dirs(prefix: &str, remove: impl Fn(&Path)) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
            remove(&entry.path());
        }
    }
}

/// The output of `ip args…` (whatever its exit status); an error only when it cannot run.
pub(crate) fn ip_output(args: &[&str]) -> io::Result<Output> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run `ip` (install iproute2; scripts/install-test-tools does): {e}"),
            )
        })
}
