//! Watching what sandboxes write to disk. Neither a sandbox's data directory (a host
//! directory bound at its data path) nor Docker's local volumes have a quota, so every
//! `disk_check_seconds` the data directory and volumes of each live sandbox are measured
//! (allocated blocks, so a sparse file counts for what it really takes) against its demo's
//! `limits.disk_mb`; a sandbox over it ends, failed, and its data goes. Between two checks a
//! sandbox can still write at disk speed: docs/security.md says what remains.
//!
//! A data directory's or volume's contents belong to the sandbox, which may change them while they are read: it
//! can swap a directory for a link to `/` or to another sandbox's volume between the moment
//! the walk sees a directory and the moment it opens it. So the walk never resolves a path:
//! it opens each directory relative to its parent's descriptor, the last component only and
//! with `O_NOFOLLOW | O_DIRECTORY`, and stats entries without following them. A link counts
//! as itself; whatever vanished or changed kind meanwhile counts as what it was when
//! stat'ed; nothing on another filesystem is entered. A tree built so that it cannot be
//! measured (nested deeper than `MAX_DEPTH`, or more than `MAX_ENTRIES` entries) counts as
//! over the allowance.
//!
//! One round measures every sandbox: an error on one (an unreadable volume, a store or
//! Engine call that failed while ending it) is logged with its id and the round goes on.
//!
//! The volumes are read where the Engine keeps them on the host; when testdrive cannot see
//! that directory (in a container without it mounted) the watch says so once and measures
//! the data directories alone.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleError};
use crate::domain::{Ending, SandboxId};

/// Directories open at once during a walk, one per level: deeper is not measured.
const MAX_DEPTH: usize = 64;
/// Entries one sandbox's walk reads before giving up: a sandbox adding entries as fast as
/// they are read must not hold the watch for ever.
const MAX_ENTRIES: u64 = 10_000_000;

/// How a directory is opened: never through a link, never blocking (a FIFO put in its
/// place is refused by `O_DIRECTORY` before it could block).
fn directory_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK
}

/// What walking a sandbox's volumes found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Measured {
    /// Bytes allocated (the walk stops as soon as the count passes the limit).
    Bytes(u64),
    /// Built so that it cannot be measured; why.
    Unmeasurable(String),
}

/// One sandbox's walk over all its volumes: the running count against one limit.
struct Walk {
    limit: u64,
    used: u64,
    entries: u64,
}

impl Walk {
    fn new(limit: u64) -> Walk {
        Walk {
            limit,
            used: 0,
            entries: 0,
        }
    }

    /// Adds what `root` holds (its entries, not `root` itself). `Some` when the walk is
    /// over: past the limit, or unmeasurable.
    fn volume(&mut self, root: &Path) -> io::Result<Option<Measured>> {
        let root_fd = match rustix::fs::open(root, directory_flags(), Mode::empty()) {
            Ok(fd) => fd,
            // Removed meanwhile (a teardown racing the check): nothing there.
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(at(root, e)),
        };
        let device = rustix::fs::fstat(&root_fd).map_err(|e| at(root, e))?.st_dev;
        let mut open = vec![Dir::new(root_fd).map_err(|e| at(root, e))?];
        while let Some(dir) = open.last_mut() {
            let Some(entry) = dir.read() else {
                open.pop();
                continue;
            };
            let entry = entry.map_err(|e| at(root, e))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Ok(Some(Measured::Unmeasurable(format!(
                    "its volumes hold more than {MAX_ENTRIES} entries, more than the disk \
                     watch reads"
                ))));
            }
            let parent = dir.fd().map_err(|e| at(root, e))?;
            let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(at(root, e)),
            };
            // `st_blocks` is in 512-byte units whatever the filesystem's block size.
            self.used = self
                .used
                .saturating_add((stat.st_blocks as u64).saturating_mul(512));
            if self.used > self.limit {
                return Ok(Some(Measured::Bytes(self.used)));
            }
            if FileType::from_raw_mode(stat.st_mode) != FileType::Directory || stat.st_dev != device
            {
                continue;
            }
            let child = match rustix::fs::openat(parent, name, directory_flags(), Mode::empty()) {
                Ok(fd) => fd,
                // Removed, or swapped for a link or a file since the stat: counted as
                // what it was.
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                // A sandbox that hides a directory from the watch (possible when testdrive
                // is not root) would never be measured again: it counts as over.
                Err(Errno::ACCESS | Errno::PERM) => {
                    return Ok(Some(Measured::Unmeasurable(
                        "its volumes hold a directory the disk watch may not read".to_string(),
                    )));
                }
                Err(e) => return Err(at(root, e)),
            };
            // Whatever directory is there now, it is entered only on the same filesystem.
            if rustix::fs::fstat(&child).map_err(|e| at(root, e))?.st_dev != device {
                continue;
            }
            if open.len() >= MAX_DEPTH {
                return Ok(Some(Measured::Unmeasurable(format!(
                    "its volumes nest directories more than {MAX_DEPTH} deep, deeper than \
                     the disk watch reads"
                ))));
            }
            open.push(Dir::new(child).map_err(|e| at(root, e))?);
        }
        Ok(None)
    }
}

/// An error reading the volume at `root`, saying where.
fn at(root: &Path, err: Errno) -> io::Error {
    let err = io::Error::from(err);
    io::Error::new(err.kind(), format!("{}: {err}", root.display()))
}

/// What the volumes at `paths` hold together, against `limit` bytes.
fn measure(paths: &[PathBuf], limit: u64) -> io::Result<Measured> {
    let mut walk = Walk::new(limit);
    for path in paths {
        if let Some(done) = walk.volume(path)? {
            return Ok(done);
        }
    }
    Ok(Measured::Bytes(walk.used))
}

/// Whether the host directory holding these volumes is visible from here.
fn visible(paths: &[PathBuf]) -> bool {
    paths
        .first()
        .and_then(|p| p.parent()?.parent())
        .is_some_and(Path::exists)
}

/// One round over every sandbox with objects on the Engine: its data directory (always
/// visible: it is the service's) and its volumes. `Ok(false)` when the volumes cannot be
/// seen from here (the data directories are measured all the same); an error only when the
/// Engine cannot list them.
pub(super) async fn check(lifecycle: &Lifecycle) -> Result<bool, LifecycleError> {
    let on_engine = lifecycle.engine().labelled().await?;
    let dirs = &lifecycle.settings().dirs;
    let mut volumes_seen = true;
    for (id, found) in &on_engine.by_sandbox {
        let mut paths = vec![dirs.data(*id)];
        let volumes: Vec<PathBuf> = found.volumes.iter().map(|(_, p)| p.clone()).collect();
        if visible(&volumes) {
            paths.extend(volumes);
        } else if !volumes.is_empty() {
            volumes_seen = false;
        }
        if let Err(err) = check_one(lifecycle, *id, paths).await {
            tracing::warn!(sandbox = %id, %err, "could not check the sandbox's disk use; will retry");
        }
    }
    Ok(volumes_seen)
}

/// Measures one sandbox and ends it if it is over its allowance.
async fn check_one(
    lifecycle: &Lifecycle,
    id: SandboxId,
    paths: Vec<PathBuf>,
) -> Result<(), LifecycleError> {
    let Some(sandbox) = lifecycle.store().sandbox(id).await? else {
        return Ok(());
    };
    if !sandbox.status.is_live() {
        return Ok(());
    }
    let limit_mb = u64::from(sandbox.spec.limits.disk_mb);
    let measured = tokio::task::spawn_blocking(move || measure(&paths, limit_mb << 20))
        .await
        .map_err(io::Error::other)
        .and_then(|measured| measured)
        .map_err(LifecycleError::Disk)?;
    let why = match measured {
        Measured::Bytes(used) if used > limit_mb << 20 => format!(
            "its volumes hold {} MB, over the demo's limit of {limit_mb} MB",
            used >> 20
        ),
        Measured::Bytes(_) => return Ok(()),
        Measured::Unmeasurable(why) => why,
    };
    lifecycle.end(id, Ending::failed(why)).await?;
    Ok(())
}

pub(super) async fn run(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let Some(every) = lifecycle.settings().disk_check_every else {
        return;
    };
    let mut said_volumes_unseen = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match check(&lifecycle).await {
            Ok(true) => {}
            Ok(false) => {
                if !said_volumes_unseen {
                    tracing::warn!(
                        "the Engine's volume directory is not visible from here: what \
                         sandboxes write to their writable_paths is not watched, only their \
                         data directories (mount it read-only at the same path)"
                    );
                    said_volumes_unseen = true;
                }
            }
            Err(err) => tracing::warn!(%err, "the disk check failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Bytes under `root`, with no limit.
    fn allocated(root: &Path) -> u64 {
        match measure(&[root.to_path_buf()], u64::MAX).unwrap() {
            Measured::Bytes(used) => used,
            other => panic!("{other:?}"),
        }
    }

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
        let used = allocated(dir.path());
        assert!((150_000..400_000).contains(&used), "{used}");
        assert_eq!(allocated(&dir.path().join("gone")), 0);
    }

    #[test]
    fn a_link_counts_as_itself_not_as_what_it_points_to() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 8 << 20]).unwrap();
        let volume = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), volume.path().join("dir-link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), volume.path().join("file-link"))
            .unwrap();
        assert!(allocated(volume.path()) < 1 << 20);
    }

    /// Flips `link` between an empty directory and `other` (made by `make`) until `stop`.
    fn flipper(
        link: PathBuf,
        make: impl Fn(&Path) + Send + 'static,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            // Each state held a moment, as long as a walk takes to reach its next step.
            let pause = || std::thread::sleep(std::time::Duration::from_micros(200));
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::create_dir(&link);
                pause();
                let _ = std::fs::remove_dir(&link);
                make(&link);
                pause();
                let _ = std::fs::remove_file(&link);
                let _ = std::fs::remove_dir_all(&link);
            }
        })
    }

    /// A volume with enough entries to stat between finding `d` a directory and opening it
    /// (the window a swap needs), and `d` flipping as `make` says while `walk` runs.
    fn while_flipping<T>(make: impl Fn(&Path) + Send + 'static, walk: impl Fn(&Path) -> T) -> T {
        let volume = tempfile::tempdir().unwrap();
        for i in 0..200 {
            std::fs::write(volume.path().join(format!("f{i}")), b"x").unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flipping = flipper(volume.path().join("d"), make, stop.clone());
        let result = walk(volume.path());
        stop.store(true, Ordering::Relaxed);
        flipping.join().unwrap();
        result
    }

    #[test]
    fn a_directory_swapped_for_a_link_is_never_followed() {
        // What a sandbox does to read the host's tree, or another sandbox's volume.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 8 << 20]).unwrap();
        let target = outside.path().to_path_buf();
        let most = while_flipping(
            move |link| {
                let _ = std::os::unix::fs::symlink(&target, link);
            },
            |volume| (0..3000).map(|_| allocated(volume)).max().unwrap(),
        );
        assert!(most < 2 << 20, "counted {most} bytes outside the volume");
    }

    #[test]
    fn a_tree_that_vanishes_or_changes_kind_during_the_walk_is_no_error() {
        let errors = while_flipping(
            |d| {
                // A tree in its place, or a file.
                if std::fs::create_dir_all(d.join("e/f/g")).is_ok() {
                    let _ = std::fs::write(d.join("e/f/g/h"), b"x");
                } else {
                    let _ = std::fs::write(d, b"x");
                }
            },
            |volume| {
                (0..3000)
                    .filter_map(|_| measure(&[volume.to_path_buf()], u64::MAX).err())
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_tree_too_deep_to_measure_counts_as_over() {
        let volume = tempfile::tempdir().unwrap();
        let mut deep = volume.path().to_path_buf();
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let measured = measure(&[volume.path().to_path_buf()], u64::MAX).unwrap();
        assert!(
            matches!(&measured, Measured::Unmeasurable(why) if why.contains("deep")),
            "{measured:?}"
        );
    }

    #[test]
    fn the_walk_adds_up_every_volume_and_stops_once_past_the_limit() {
        let volumes: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        for v in &volumes {
            std::fs::write(v.path().join("x"), vec![1u8; 3 << 20]).unwrap();
        }
        let paths: Vec<_> = volumes.iter().map(|v| v.path().to_path_buf()).collect();
        let Measured::Bytes(all) = measure(&paths, 16 << 20).unwrap() else {
            panic!("measurable")
        };
        assert!(((9 << 20)..(10 << 20)).contains(&all), "{all}");
        // Past 4 MB in the second volume: the third is not read.
        let Measured::Bytes(over) = measure(&paths, 4 << 20).unwrap() else {
            panic!("measurable")
        };
        assert!(((6 << 20)..(7 << 20)).contains(&over), "{over}");
    }
}
