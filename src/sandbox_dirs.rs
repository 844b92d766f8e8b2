//! Each sandbox's directory on the host, `<data dir>/sandboxes/<id>/`: `upload/`, where the
//! prospect's files stream in (the spool, which the demo never sees), and `data/`,
//! bind-mounted at the demo's `data_path`. Placing the files is a rename from one to the
//! other on the same filesystem: the upload is written once, with no copy, no archive and
//! no Engine call. A warm pool member has its empty `data/` mounted already, so a claim is
//! the same rename into a running container. Teardown removes the whole directory.
//!
//! `data/` is handed to the user the demo runs as (its owner, mode `0700`), and each file to
//! it as it is placed (`0600`): a non-root demo reads and writes its data, nobody else on
//! the host does. The directories above it stay the service's (`0700`); the container never
//! sees them.
//!
//! What is inside `data/` is the demo's: it may put links there, pointing anywhere, and swap
//! them while testdrive works. So testdrive never resolves a path inside it: a file is
//! placed by renaming onto its name (a rename replaces a link there, never follows it; a
//! directory there refuses it), the teardown's `remove_dir_all` never follows links, and the
//! disk watch walks by descriptors (`lifecycle::disk`).
//!
//! When testdrive runs in a container, the Engine sees this directory under another path:
//! `host_root` is where the Engine finds `sandboxes/` (the bind mount's source).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::domain::upload::NOTE_DIR;
use crate::domain::{SandboxId, StagedFile};

/// The user and group a demo runs as, who owns its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The demo made something other than a file where a prospect's file goes.
    #[error("the demo keeps a directory named {0} in its data directory, where your file goes")]
    Occupied(String),
    #[error(
        "testdrive cannot give the demo's user (uid {uid}) its data directory: it runs as \
         uid {ours} without the right to change owners (run it as root)"
    )]
    CannotChown { uid: u32, ours: u32 },
    #[error("placing the files failed: {0}")]
    Io(#[from] io::Error),
}

/// Where sandboxes' directories are, for testdrive and for the Engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SandboxDirs {
    root: PathBuf,
    host_root: PathBuf,
}

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Makes `dir` if missing, `0700` whatever the umask.
fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))
}

/// Hands `path` (not through a link) to `owner`. Root may give anything away; another user
/// only what is already its own.
fn give(path: &Path, owner: Owner) -> Result<(), PlaceError> {
    match std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(PlaceError::CannotChown {
            uid: owner.uid,
            ours: rustix::process::geteuid().as_raw(),
        }),
        other => Ok(other?),
    }
}

impl SandboxDirs {
    /// `root` as testdrive sees it; `host_root` as the Engine does (the same unless
    /// testdrive runs in a container).
    pub fn new(root: PathBuf, host_root: Option<PathBuf>) -> SandboxDirs {
        let host_root = host_root.unwrap_or_else(|| root.clone());
        SandboxDirs { root, host_root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sandbox's whole directory.
    pub fn dir(&self, id: SandboxId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Where its prospect's files stream in.
    pub fn upload(&self, id: SandboxId) -> PathBuf {
        self.dir(id).join("upload")
    }

    /// What the demo sees at its `data_path`.
    pub fn data(&self, id: SandboxId) -> PathBuf {
        self.dir(id).join("data")
    }

    /// `data` as the Engine finds it: the bind mount's source.
    pub fn host_data(&self, id: SandboxId) -> PathBuf {
        self.host_root.join(id.to_string()).join("data")
    }

    /// Makes the sandbox's directory with an empty `data/`, the service's until `hand_over`.
    pub async fn prepare(&self, id: SandboxId) -> io::Result<()> {
        let (root, dir, data) = (self.root.clone(), self.dir(id), self.data(id));
        blocking(move || {
            std::fs::create_dir_all(&root)?;
            private_dir(&root)?;
            private_dir(&dir)?;
            private_dir(&data)
        })
        .await
    }

    /// Gives `data/` to the user the demo runs as.
    pub async fn hand_over(&self, id: SandboxId, owner: Owner) -> Result<(), PlaceError> {
        let data = self.data(id);
        blocking(move || give(&data, owner)).await
    }

    /// Moves the spooled files into `data/` under their names, each given to `owner`.
    pub async fn place(
        &self,
        id: SandboxId,
        files: Vec<StagedFile>,
        owner: Owner,
    ) -> Result<(), PlaceError> {
        let data = self.data(id);
        blocking(move || {
            for file in &files {
                // The spooled file is in `upload/`, which only the service sees: its path
                // is safe to use. Its target is one name in `data/`, whatever is there.
                std::fs::set_permissions(
                    &file.path,
                    std::fs::Permissions::from_mode(PRIVATE_FILE),
                )?;
                give(&file.path, owner)?;
                let target = data.join(file.name.as_str());
                match std::fs::rename(&file.path, &target) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST)
                        ) =>
                    {
                        return Err(PlaceError::Occupied(file.name.to_string()));
                    }
                    other => other?,
                }
            }
            Ok(())
        })
        .await
    }

    /// Puts `prospect.json` (`json`) into `data/.testdrive/`, both given to `owner`. The
    /// directory is made beside `data/`, where the demo cannot reach, and renamed into
    /// place: whatever the demo left under that name (a link, a file, a directory) is
    /// removed first, never followed.
    pub async fn place_note(
        &self,
        id: SandboxId,
        json: &[u8],
        owner: Owner,
    ) -> Result<(), PlaceError> {
        let (staged, target) = (self.dir(id).join("note"), self.data(id).join(NOTE_DIR));
        let json = json.to_vec();
        blocking(move || {
            remove_entry(&staged)?;
            private_dir(&staged)?;
            let file = staged.join("prospect.json");
            std::fs::write(&file, &json)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(PRIVATE_FILE))?;
            give(&file, owner)?;
            give(&staged, owner)?;
            if std::fs::rename(&staged, &target).is_ok() {
                return Ok(());
            }
            // Something of the demo's is there (a rename onto a link or a file, or onto a
            // directory that is not empty, fails): it goes, and the rename is tried once more.
            remove_entry(&target)?;
            std::fs::rename(&staged, &target)
                .map_err(|_| PlaceError::Occupied(NOTE_DIR.to_string()))
        })
        .await
    }

    /// Removes the sandbox's directory and everything in it (never through a link); whether
    /// there was one.
    pub async fn remove(&self, id: SandboxId) -> io::Result<bool> {
        let dir = self.dir(id);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// The sandboxes that have a directory here.
    pub async fn listed(&self) -> io::Result<Vec<SandboxId>> {
        let root = self.root.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&root) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                entries => entries?,
            };
            let mut ids = Vec::new();
            for entry in entries {
                let name = entry?.file_name();
                if let Some(id) = name.to_str().and_then(|n| SandboxId::parse(n).ok()) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
    }
}

/// Removes whatever is at `path` without following it: a link or a file, or a directory
/// with everything in it. Nothing there is fine.
fn remove_entry(path: &Path) -> io::Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<io::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| E::from(io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UploadName;
    use std::os::unix::fs::MetadataExt;

    fn staged(dir: &Path, name: &str, content: &[u8]) -> StagedFile {
        let path = dir.join(format!("{name}.upload"));
        std::fs::write(&path, content).unwrap();
        StagedFile {
            name: UploadName::parse(name).unwrap(),
            path,
            bytes: content.len() as u64,
        }
    }

    #[tokio::test]
    async fn files_are_renamed_into_place_and_handed_to_the_demo_user() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = SandboxDirs::new(tmp.path().join("sandboxes"), None);
        let id = SandboxId::new();
        dirs.prepare(id).await.unwrap();
        std::fs::create_dir(dirs.upload(id)).unwrap();
        let owner = Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        dirs.hand_over(id, owner).await.unwrap();
        let file = staged(&dirs.upload(id), "a.csv", b"x,y\n");
        let inode = std::fs::metadata(&file.path).unwrap().ino();
        dirs.place(id, vec![file], owner).await.unwrap();
        let placed = std::fs::metadata(dirs.data(id).join("a.csv")).unwrap();
        assert_eq!(placed.ino(), inode, "moved, not copied");
        assert_eq!(placed.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dirs.data(id)).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(dirs.listed().await.unwrap(), vec![id]);
        assert!(dirs.remove(id).await.unwrap());
        assert!(!dirs.remove(id).await.unwrap());
        assert!(dirs.listed().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn links_the_demo_made_are_replaced_or_refused_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"keep").unwrap();
        let dirs = SandboxDirs::new(tmp.path().join("sandboxes"), None);
        let id = SandboxId::new();
        dirs.prepare(id).await.unwrap();
        std::fs::create_dir(dirs.upload(id)).unwrap();
        let data = dirs.data(id);
        // A link where the prospect's file goes, one to a directory outside, a directory
        // where another file goes.
        std::os::unix::fs::symlink(outside.join("secret"), data.join("a.csv")).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("out")).unwrap();
        std::fs::create_dir(data.join("b.csv")).unwrap();
        std::fs::write(data.join("b.csv").join("x"), b"").unwrap();
        let a = staged(&dirs.upload(id), "a.csv", b"prospect");
        dirs.place(id, vec![a], Owner::ROOT).await.unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
        assert!(
            !std::fs::symlink_metadata(data.join("a.csv"))
                .unwrap()
                .is_symlink()
        );
        let b = staged(&dirs.upload(id), "b.csv", b"prospect");
        assert!(matches!(
            dirs.place(id, vec![b], Owner::ROOT).await,
            Err(PlaceError::Occupied(name)) if name == "b.csv"
        ));
        // The teardown goes through neither link.
        dirs.remove(id).await.unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
        assert!(!dirs.dir(id).exists());
    }

    #[tokio::test]
    async fn the_note_replaces_whatever_the_demo_left_under_its_name_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let dirs = SandboxDirs::new(tmp.path().join("sandboxes"), None);
        let owner = Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        let note = |id| dirs.data(id).join(NOTE_DIR).join("prospect.json");
        // Nothing there; a link to a directory outside; a file; a full directory.
        let cases: [&dyn Fn(&Path); 4] = [
            &|_| {},
            &|data| std::os::unix::fs::symlink(&outside, data.join(NOTE_DIR)).unwrap(),
            &|data| std::fs::write(data.join(NOTE_DIR), b"demo's").unwrap(),
            &|data| {
                std::fs::create_dir(data.join(NOTE_DIR)).unwrap();
                std::fs::write(data.join(NOTE_DIR).join("prospect.json"), b"forged").unwrap();
            },
        ];
        for left in cases {
            let id = SandboxId::new();
            dirs.prepare(id).await.unwrap();
            left(&dirs.data(id));
            dirs.place_note(id, b"{}\n", owner).await.unwrap();
            assert_eq!(std::fs::read(note(id)).unwrap(), b"{}\n");
            let dir = std::fs::symlink_metadata(dirs.data(id).join(NOTE_DIR)).unwrap();
            assert!(dir.is_dir() && !dir.is_symlink());
            assert_eq!(dir.mode() & 0o777, 0o700);
            assert_eq!(std::fs::metadata(note(id)).unwrap().mode() & 0o777, 0o600);
            assert!(
                !dirs.dir(id).join("note").exists(),
                "nothing staged is left"
            );
            dirs.remove(id).await.unwrap();
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn the_engine_sees_the_host_path() {
        let dirs = SandboxDirs::new(
            "/var/lib/testdrive/sandboxes".into(),
            Some("/srv/td/sandboxes".into()),
        );
        let id = SandboxId::new();
        assert_eq!(
            dirs.data(id),
            Path::new(&format!("/var/lib/testdrive/sandboxes/{id}/data"))
        );
        assert_eq!(
            dirs.host_data(id),
            Path::new(&format!("/srv/td/sandboxes/{id}/data"))
        );
    }
}
