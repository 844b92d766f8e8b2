//! Watching what sandboxes write to disk. Docker's local volumes have no quota, so every
//! `disk_check_seconds` the volumes of each live sandbox are measured (allocated blocks, so a
//! sparse file counts for what it really takes) against its demo's `limits.disk_mb`; a sandbox
//! over it ends, failed, and its volumes go. Between two checks a sandbox can still write at
//! disk speed: docs/security.md says what remains.
//!
//! The volumes are read where the Engine keeps them on the host; when testdrive cannot see
//! that directory (in a container without it mounted) the watch says so once and stops.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::Ending;

/// Bytes allocated under `root`, without following symbolic links.
fn allocated(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed meanwhile (a teardown racing the check): nothing there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.path().symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// Whether the host directory holding these volumes is visible from here.
fn visible(paths: &[PathBuf]) -> bool {
    paths
        .first()
        .and_then(|p| p.parent()?.parent())
        .is_some_and(Path::exists)
}

/// One round. `Ok(false)` when the volumes cannot be seen from here.
async fn check(lifecycle: &Lifecycle) -> Result<bool, LifecycleError> {
    let on_engine = lifecycle.engine().labelled().await?;
    for (id, paths) in on_engine.volumes {
        if !visible(&paths) {
            return Ok(false);
        }
        let Some(sandbox) = lifecycle.store().sandbox(id).await? else {
            continue;
        };
        if !sandbox.status.is_live() {
            continue;
        }
        let used = tokio::task::spawn_blocking(move || {
            paths.iter().map(|p| allocated(p)).sum::<io::Result<u64>>()
        })
        .await
        .map_err(io::Error::other)
        .and_then(|measured| measured)
        .map_err(LifecycleError::Disk)?;
        let limit_mb = u64::from(sandbox.spec.limits.disk_mb);
        if used > limit_mb << 20 {
            let why = format!(
                "its volumes hold {} MB, over the demo's limit of {limit_mb} MB",
                used >> 20
            );
            lifecycle.end(id, Ending::failed(why)).await?;
        }
    }
    Ok(true)
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let Some(every) = lifecycle.settings().disk_check_every else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match check(&lifecycle).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the Engine's volume directory is not visible from here: sandboxes' disk \
                     use is not watched (mount it read-only at the same path, or set \
                     disk_check_seconds = 0 to silence this)"
                );
                return;
            }
            Err(err) => tracing::warn!(%err, "the disk check failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_bytes_not_apparent_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![1u8; 50_000]).unwrap();
        // A sparse file claims a gigabyte and takes nothing.
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("root-link")).unwrap();
        let used = allocated(dir.path()).unwrap();
        assert!((150_000..400_000).contains(&used), "{used}");
        assert_eq!(allocated(&dir.path().join("gone")).unwrap(), 0);
    }
}
