//! The upload spool: where a prospect's files stream in, on disk, in the `upload/` directory
//! of their sandbox's own directory (`sandbox_dirs`), until a rename places them in the
//! sandbox's `data/`. Files are written as they stream in, hashed on the way, and
//! the demo's rules are enforced before each byte is written, so a too-large upload is cut
//! off at the limit rather than read to its end. A `Spool` deletes its directory when dropped
//! unless it was discarded explicitly, so a rejected or abandoned upload leaves nothing.
//!
//! The spool's disk is shared by every upload: a `SpoolBudget` hands out room for each
//! (the demo's whole upload limit, reserved before a byte is written), so uploads that would
//! together overflow it are refused up front rather than failing halfway with the disk
//! full. A spool gives its room back when its files are deleted. Directories are `0700` and
//! files `0600`, whatever the umask: they hold a prospect's data.
//!
//! The budget is a figure; the disk is what it is, and others write to it too (the database
//! usually sits beside the spool, Docker's volumes often on the same filesystem). A
//! `SpoolDisk` keeps a floor of free space on it for them: an upload is refused before a
//! byte is written when the free space, less what the uploads in progress said they would
//! still write, would fall under the floor with what it says it will write (`DiskClaim`);
//! while it streams, the free space is looked at every `CHECK_EVERY` bytes and the upload
//! stops under the floor. The disk running out anyway (ENOSPC, EDQUOT) is the same refusal,
//! `DiskFull`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tabular::sniff::{NotUtf8, Utf8Check};

use crate::domain::profile::{ProfiledFile, Profiler};
use crate::domain::{FileRecord, SandboxId, StagedFile, UploadName, UploadRules};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the upload is over the demo's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the demo accepts at most {limit} files")]
    TooManyFiles { limit: u32 },
    #[error("{name} is not a type this demo accepts ({accepted})")]
    Unsupported { name: String, accepted: String },
    #[error("two files are named {0}")]
    Duplicate(String),
    #[error("{0} is empty")]
    Empty(String),
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("the request is over the service's size limit: {0}")]
    RequestTooLarge(String),
    #[error("the spool cannot be written: {0}")]
    Io(#[from] io::Error),
    #[error(
        "the upload spool has no room for another upload of up to {wanted} bytes now \
         ({free} of {budget} bytes free)"
    )]
    Full { wanted: u64, free: u64, budget: u64 },
    /// The spool's filesystem has no room for the upload above its floor (or none at all).
    #[error("the spool's disk has {free} bytes free, too few for this upload")]
    DiskFull { free: u64 },
}

/// Written bytes between two looks at the free space while an upload streams: a look is
/// one `statvfs` (about a microsecond), a MiB of upload takes milliseconds to arrive, and
/// the floor is meant to be far larger than this.
pub const CHECK_EVERY: u64 = 1 << 20;

/// Bytes free on the filesystem holding `path`, for an unprivileged writer (root's
/// reserved blocks are not counted: they are not the spool's to use).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// ENOSPC and EDQUOT: the disk (or the service's quota on it) is full.
fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// An I/O error of the spool at `at`, with a full disk told apart (and its free space
/// measured, for the operators).
fn io_error(err: io::Error, at: &Path) -> SpoolError {
    if is_no_space(&err) {
        SpoolError::DiskFull {
            free: free_space(at).unwrap_or(0),
        }
    } else {
        SpoolError::Io(err)
    }
}

/// The filesystem under the spool, with a floor of free space kept for everything else on
/// it. Cheap to clone.
#[derive(Clone)]
pub struct SpoolDisk(Arc<Disk>);

struct Disk {
    root: PathBuf,
    floor: u64,
    /// What the uploads in progress said they would write and have not written yet.
    promised: Mutex<u64>,
}

impl Disk {
    /// A spool directory someone removed is made again by the next upload: until then, its
    /// parent's filesystem is the one it will be on.
    fn free(&self) -> io::Result<u64> {
        let mut at = self.root.as_path();
        loop {
            match free_space(at) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                    Some(parent) => at = parent,
                    None => return Err(e),
                },
                measured => return measured,
            }
        }
    }
}

/// An upload's room on the disk: what it may still write (counted against the others'
/// claims), and the free space looked at as it writes. Given back when dropped.
pub struct DiskClaim {
    disk: Arc<Disk>,
    promised: u64,
    unchecked: u64,
}

impl SpoolDisk {
    pub fn new(root: PathBuf, floor: u64) -> SpoolDisk {
        SpoolDisk(Arc::new(Disk {
            root,
            floor,
            promised: Mutex::new(0),
        }))
    }

    /// Bytes free on the spool's filesystem now.
    pub fn free(&self) -> io::Result<u64> {
        self.0.free()
    }

    /// Room for an upload that says it will write at most `bytes` (0 when it does not say:
    /// it is then only measured as it streams). `DiskFull` when the free space, less what
    /// the uploads in progress may still write, would fall under the floor.
    pub fn claim(&self, bytes: u64) -> Result<DiskClaim, SpoolError> {
        let free = self.free().map_err(|e| io_error(e, &self.0.root))?;
        let mut promised = self.0.promised.lock().expect("spool disk lock");
        if free.saturating_sub(*promised) < self.0.floor.saturating_add(bytes) {
            return Err(SpoolError::DiskFull { free });
        }
        *promised += bytes;
        Ok(DiskClaim {
            disk: self.0.clone(),
            promised: bytes,
            unchecked: 0,
        })
    }
}

impl DiskClaim {
    /// At most `bytes` will be written after all (the demo's limit, once known, is under
    /// what the request said).
    pub fn limit_to(&mut self, bytes: u64) {
        self.give_back(self.promised.saturating_sub(bytes));
    }

    fn give_back(&mut self, bytes: u64) {
        let bytes = bytes.min(self.promised);
        if bytes > 0 {
            let mut promised = self.disk.promised.lock().expect("spool disk lock");
            *promised = promised.saturating_sub(bytes);
            self.promised -= bytes;
        }
    }

    /// `bytes` more were written (they are in the free space now, no longer a promise);
    /// every `CHECK_EVERY` bytes, `DiskFull` once the free space is under the floor.
    fn wrote(&mut self, bytes: u64) -> Result<(), SpoolError> {
        self.give_back(bytes);
        self.unchecked += bytes;
        if self.unchecked < CHECK_EVERY {
            return Ok(());
        }
        self.unchecked = 0;
        let free = self.disk.free().map_err(|e| io_error(e, &self.disk.root))?;
        if free < self.disk.floor {
            return Err(SpoolError::DiskFull { free });
        }
        Ok(())
    }
}

impl Drop for DiskClaim {
    fn drop(&mut self) {
        if let Ok(mut promised) = self.disk.promised.lock() {
            *promised = promised.saturating_sub(self.promised);
        }
    }
}

/// The bytes the spool may hold at once, for uploads being received and uploads waiting to
/// be placed in their sandbox.
#[derive(Clone)]
pub struct SpoolBudget(Arc<Budget>);

struct Budget {
    limit: u64,
    used: Mutex<u64>,
}

/// Room taken from a `SpoolBudget`, given back when dropped.
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl SpoolBudget {
    pub fn new(limit: u64) -> SpoolBudget {
        SpoolBudget(Arc::new(Budget {
            limit,
            used: Mutex::new(0),
        }))
    }

    /// Takes `bytes` of room, if that much is free.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, SpoolError> {
        let mut used = self.0.used.lock().expect("spool budget lock");
        let free = self.0.limit.saturating_sub(*used);
        if bytes > free {
            return Err(SpoolError::Full {
                wanted: bytes,
                free,
                budget: self.0.limit,
            });
        }
        *used += bytes;
        Ok(Reservation {
            budget: self.0.clone(),
            bytes,
        })
    }

    /// The room reserved right now.
    pub fn in_use(&self) -> u64 {
        *self.0.used.lock().expect("spool budget lock")
    }

    pub fn limit(&self) -> u64 {
        self.0.limit
    }
}

impl Reservation {
    /// Gives back all but `bytes` of the room.
    fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            let mut used = self.budget.used.lock().expect("spool budget lock");
            *used -= self.bytes - bytes;
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut used) = self.budget.used.lock() {
            *used = used.saturating_sub(self.bytes);
        }
    }
}

/// The line (1-based) of the byte at `offset` of the file at `path`.
async fn line_at(path: &Path, offset: u64) -> io::Result<u64> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut before = std::fs::File::open(path)?.take(offset);
        let mut buf = vec![0u8; 64 * 1024];
        let mut newlines = 0u64;
        loop {
            let n = before.read(&mut buf)?;
            if n == 0 {
                return Ok(newlines + 1);
            }
            newlines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Writes a file on a thread of its own, chunk by chunk as they come (no copy in between):
/// the task that receives the upload goes on parsing meanwhile.
struct FileWriter {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<io::Result<()>>,
}

impl FileWriter {
    fn start(mut file: std::fs::File) -> FileWriter {
        let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(8);
        let done = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            while let Some(chunk) = arriving.blocking_recv() {
                file.write_all(&chunk)?;
            }
            Ok(())
        });
        FileWriter { chunks, done }
    }

    /// Hands `chunk` to the thread; the thread's error once it stopped on one.
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.chunks.send(chunk).await.is_err() {
            return Err(self.stopped().await);
        }
        Ok(())
    }

    /// Waits until every chunk is written.
    async fn finish(mut self) -> io::Result<()> {
        drop(self.chunks);
        (&mut self.done).await.map_err(io::Error::other)?
    }

    async fn stopped(&mut self) -> io::Error {
        match (&mut self.done).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => io::Error::other("the file's writer stopped"),
            Err(e) => io::Error::other(e),
        }
    }
}

/// Hashing and profiling a file run on a thread of their own beside the task that receives,
/// parses and writes it: on two cores they take a 1 GiB upload from about 3 s to under 2.
/// A few chunks wait between the two at most (they share the bytes, nothing is copied).
struct Digester {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<Digested>,
}

/// What the digest thread worked out.
type Digested = (Sha256, Profiler, Option<NotUtf8>);

impl Digester {
    /// With `utf8`, the file is also followed to its end for UTF-8.
    fn start(extension: Option<&str>, utf8: bool) -> Digester {
        let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(8);
        let mut profiler = Profiler::for_extension(extension);
        let done = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            // Lines are counted only if there is something to report (`line_at`).
            let mut check = utf8.then(Utf8Check::offsets_only);
            while let Some(chunk) = arriving.blocking_recv() {
                hasher.update(&chunk);
                profiler.feed(&chunk);
                if let Some(check) = check.as_mut() {
                    check.feed(&chunk);
                }
            }
            (hasher, profiler, check.and_then(Utf8Check::finish))
        });
        Digester { chunks, done }
    }

    async fn feed(&self, chunk: Bytes) {
        // The thread ends only once this side is gone.
        let _ = self.chunks.send(chunk).await;
    }

    async fn finish(self) -> Result<Digested, SpoolError> {
        drop(self.chunks);
        self.done
            .await
            .map_err(|e| SpoolError::Io(io::Error::other(e)))
    }
}

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Makes `dir` (and any missing parent) and sets it to `0700`, whatever the umask and
/// whether it existed.
async fn private_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .await?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR)).await
}

pub struct Spool {
    dir: PathBuf,
    rules: UploadRules,
    files: Vec<StagedFile>,
    records: Vec<FileRecord>,
    /// What each file looks like (for the vendor's report), worked out as it streamed in.
    profiles: Vec<ProfiledFile>,
    total: u64,
    /// The room this upload holds in the spool's budget, if it was made within one.
    room: Option<Reservation>,
    /// Its room on the disk, while files are still coming.
    disk: Option<DiskClaim>,
}

impl Spool {
    /// A spool outside any budget, in `upload/` of the sandbox's directory under `root`.
    pub async fn create(root: &Path, id: SandboxId, rules: UploadRules) -> io::Result<Spool> {
        private_dir(root).await?;
        private_dir(&root.join(id.to_string())).await?;
        let dir = root.join(id.to_string()).join("upload");
        private_dir(&dir).await?;
        Ok(Spool {
            dir,
            rules,
            files: Vec::new(),
            records: Vec::new(),
            profiles: Vec::new(),
            total: 0,
            room: None,
            disk: None,
        })
    }

    /// A spool holding `room` (the demo's whole upload limit, reserved in the budget before
    /// anything was made). With `disk`, its files stop under the disk's floor.
    pub async fn create_within(
        room: Reservation,
        disk: Option<DiskClaim>,
        root: &Path,
        id: SandboxId,
        rules: UploadRules,
    ) -> Result<Spool, SpoolError> {
        let mut spool = Spool::create(root, id, rules)
            .await
            .map_err(|e| io_error(e, root))?;
        spool.room = Some(room);
        spool.disk = disk;
        Ok(spool)
    }

    /// Once every file is in: gives back the room the upload did not use.
    pub fn release_unused(&mut self) {
        let total = self.total;
        if let Some(room) = self.room.as_mut() {
            room.shrink_to(total);
        }
        self.disk = None;
    }

    /// Refuses a file before any of its bytes are read: wrong type, a name used twice, one
    /// file too many.
    pub fn admit(&self, name: &UploadName) -> Result<(), SpoolError> {
        if !self.rules.accepts(name) {
            return Err(SpoolError::Unsupported {
                name: name.to_string(),
                accepted: self.rules.extensions.join(", "),
            });
        }
        if self.files.iter().any(|f| &f.name == name) {
            return Err(SpoolError::Duplicate(name.to_string()));
        }
        if self.files.len() >= self.rules.max_files as usize {
            return Err(SpoolError::TooManyFiles {
                limit: self.rules.max_files,
            });
        }
        Ok(())
    }

    /// Streams one file to disk. The caller has `admit`ted the name; the stream's errors
    /// say what went wrong with the request (`Body`, `RequestTooLarge`).
    pub async fn write<S>(&mut self, name: UploadName, chunks: S) -> Result<(), SpoolError>
    where
        S: Stream<Item = Result<Bytes, SpoolError>> + Unpin,
    {
        self.stream_in(name, chunks, false).await.map(drop)
    }

    /// Like `write`, for a file that should be text: also where it first stops being UTF-8,
    /// if it does (the caller refuses it; the file goes with the spool).
    pub async fn write_text<S>(
        &mut self,
        name: UploadName,
        chunks: S,
    ) -> Result<Option<NotUtf8>, SpoolError>
    where
        S: Stream<Item = Result<Bytes, SpoolError>> + Unpin,
    {
        self.stream_in(name, chunks, true).await
    }

    async fn stream_in<S>(
        &mut self,
        name: UploadName,
        mut chunks: S,
        utf8: bool,
    ) -> Result<Option<NotUtf8>, SpoolError>
    where
        S: Stream<Item = Result<Bytes, SpoolError>> + Unpin,
    {
        self.admit(&name)?;
        // Numbered on disk: the prospect's name is given to the file only where it is placed.
        let path = self.dir.join(format!("{}.upload", self.files.len()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(&path)
            .await
            .map_err(|e| io_error(e, &self.dir))?;
        // The mode given at creation is masked by the umask, which can only take bits away.
        let out = FileWriter::start(file.into_std().await);
        let rules = &self.rules;
        let mut disk = self.disk.as_mut();
        let before = self.total;
        let streamed = async move {
            let mut out = out;
            let digest = Digester::start(name.extension().as_deref(), utf8);
            let mut bytes = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                if before + bytes + chunk.len() as u64 > rules.max_bytes {
                    return Err(SpoolError::TooLarge {
                        limit: rules.max_bytes,
                    });
                }
                let len = chunk.len() as u64;
                digest.feed(chunk.clone()).await;
                out.write(chunk).await?;
                bytes += len;
                if let Some(disk) = disk.as_mut() {
                    disk.wrote(len)?;
                }
            }
            out.finish().await?;
            if bytes == 0 {
                return Err(SpoolError::Empty(name.to_string()));
            }
            let (hasher, profiler, not_utf8) = digest.finish().await?;
            Ok((name, bytes, hasher, profiler, not_utf8))
        };
        let (name, bytes, hasher, profiler, not_utf8) = match streamed.await {
            Ok(done) => done,
            Err(e) => {
                // Measured before the file goes, for the operators' record of a full disk.
                let e = match e {
                    SpoolError::Io(e) => io_error(e, &self.dir),
                    other => other,
                };
                // A refused file leaves nothing, and its number is free for the next.
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        self.total += bytes;
        self.records.push(FileRecord {
            name: name.to_string(),
            bytes,
            sha256: hex::encode(hasher.finalize()),
        });
        self.profiles.push(ProfiledFile {
            name: name.to_string(),
            profile: profiler.finish(),
        });
        let not_utf8 = match not_utf8 {
            Some(bad) => Some(NotUtf8 {
                line: line_at(&path, bad.offset).await?,
                ..bad
            }),
            None => None,
        };
        self.files.push(StagedFile { name, path, bytes });
        Ok(not_utf8)
    }

    pub fn records(&self) -> &[FileRecord] {
        &self.records
    }

    pub fn profiles(&self) -> &[ProfiledFile] {
        &self.profiles
    }

    pub fn files(&self) -> &[StagedFile] {
        &self.files
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the spooled files now (they are in the sandbox, or no longer wanted).
    pub async fn discard(mut self) -> io::Result<()> {
        let dir = std::mem::take(&mut self.dir);
        remove_dir(&dir).await
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes a spool directory; one already gone is fine.
pub async fn remove_dir(dir: &Path) -> io::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn rules(max_bytes: u64, max_files: u32, exts: &[&str]) -> UploadRules {
        UploadRules {
            max_bytes,
            max_files,
            extensions: exts.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, SpoolError>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    /// A spool under a temporary root (kept alive by the returned guard).
    async fn spool(rules: UploadRules) -> (tempfile::TempDir, Spool) {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::create(root.path(), SandboxId::new(), rules)
            .await
            .unwrap();
        (root, spool)
    }

    fn name(n: &str) -> UploadName {
        UploadName::parse(n).unwrap()
    }

    #[tokio::test]
    async fn files_are_hashed_and_counted_as_they_stream() {
        let (_root, mut spool) = spool(rules(100, 2, &["csv"])).await;
        spool
            .write(name("a.csv"), chunks(&[b"x,y\n", b"1,2\n"]))
            .await
            .unwrap();
        let record = &spool.records()[0];
        assert_eq!(record.bytes, 8);
        assert_eq!(record.sha256, hex::encode(Sha256::digest(b"x,y\n1,2\n")));
        assert_eq!(
            std::fs::read(&spool.files()[0].path).unwrap(),
            b"x,y\n1,2\n"
        );
    }

    #[tokio::test]
    async fn rules_are_enforced_and_the_directory_goes_with_the_spool() {
        let (_root, mut spool) = spool(rules(10, 2, &["csv"])).await;
        let dir = spool.dir().to_path_buf();
        assert!(matches!(
            spool.write(name("a.txt"), chunks(&[b"1"])).await,
            Err(SpoolError::Unsupported { .. })
        ));
        assert!(matches!(
            spool.write(name("e.csv"), chunks(&[])).await,
            Err(SpoolError::Empty(_))
        ));
        spool
            .write(name("a.csv"), chunks(&[b"12345"]))
            .await
            .unwrap();
        assert!(matches!(
            spool.write(name("a.csv"), chunks(&[b"1"])).await,
            Err(SpoolError::Duplicate(_))
        ));
        assert!(matches!(
            spool.write(name("b.csv"), chunks(&[b"123", b"456"])).await,
            Err(SpoolError::TooLarge { limit: 10 })
        ));
        assert!(dir.exists());
        drop(spool);
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn directories_and_files_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let spool_root = root.path().join("spool");
        // Made by someone else, open to all.
        std::fs::create_dir(&spool_root).unwrap();
        std::fs::set_permissions(&spool_root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut spool = Spool::create(&spool_root, SandboxId::new(), rules(100, 2, &[]))
            .await
            .unwrap();
        spool.write(name("a"), chunks(&[b"1"])).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_root), 0o700);
        assert_eq!(mode(spool.dir()), 0o700);
        assert_eq!(mode(&spool.files()[0].path), 0o600);
    }

    #[tokio::test]
    async fn uploads_take_room_from_the_budget_and_give_it_back() {
        let root = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(250);
        let mut first = Spool::create_within(
            budget.reserve(100).unwrap(),
            None,
            root.path(),
            SandboxId::new(),
            rules(100, 2, &[]),
        )
        .await
        .unwrap();
        let second = Spool::create_within(
            budget.reserve(100).unwrap(),
            None,
            root.path(),
            SandboxId::new(),
            rules(100, 2, &[]),
        )
        .await
        .unwrap();
        assert_eq!(budget.in_use(), 200);
        // No room for a third.
        let refused = budget.reserve(100);
        assert!(
            matches!(
                refused,
                Err(SpoolError::Full {
                    wanted: 100,
                    free: 50,
                    budget: 250
                })
            ),
            "{:?}",
            refused.err()
        );
        // What an upload did not use comes back once it is in.
        first.write(name("a"), chunks(&[b"12345"])).await.unwrap();
        first.release_unused();
        assert_eq!(budget.in_use(), 105);
        drop(second);
        assert_eq!(budget.in_use(), 5);
        first.discard().await.unwrap();
        assert_eq!(budget.in_use(), 0);
        // A demo whose limit is over the whole budget never fits.
        assert!(matches!(budget.reserve(251), Err(SpoolError::Full { .. })));
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let root = tempfile::tempdir().unwrap();
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let err = io_error(io::Error::from_raw_os_error(errno), root.path());
            assert!(matches!(err, SpoolError::DiskFull { .. }), "{err:?}");
        }
        let err = io_error(io::Error::from_raw_os_error(libc::EACCES), root.path());
        assert!(matches!(err, SpoolError::Io(_)), "{err:?}");
    }

    #[test]
    fn uploads_claim_room_on_the_disk_above_its_floor() {
        let root = tempfile::tempdir().unwrap();
        let free = free_space(root.path()).unwrap();
        assert!(free > 0);
        // No disk has room above an impossible floor, not even for an upload of nothing.
        let full = SpoolDisk::new(root.path().to_path_buf(), u64::MAX);
        assert!(matches!(full.claim(0), Err(SpoolError::DiskFull { .. })));
        // A spool directory not there (yet, or again) is measured where it will be.
        let gone = SpoolDisk::new(root.path().join("spool"), 0);
        assert!(gone.free().unwrap() > 0);
        // Each claim counts what the others may still write (with room to spare for what
        // others on this disk write meanwhile).
        let disk = SpoolDisk::new(root.path().to_path_buf(), 0);
        // Six tenths, a multiple of 4 so that halves and quarters add up.
        let share = free / 40 * 24;
        let mut first = disk.claim(share).unwrap();
        assert!(matches!(
            disk.claim(share),
            Err(SpoolError::DiskFull { .. })
        ));
        // What it writes, or will not write after all, is no longer its to hold.
        first.limit_to(share / 2);
        first.wrote(share / 4).unwrap();
        let second = disk.claim(share).unwrap();
        assert_eq!(*disk.0.promised.lock().unwrap(), share / 4 + share);
        drop((first, second));
        assert_eq!(*disk.0.promised.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn too_many_files_are_refused_before_reading() {
        let (_root, mut spool) = spool(rules(100, 1, &[])).await;
        spool.write(name("a"), chunks(&[b"1"])).await.unwrap();
        assert!(matches!(
            spool.admit(&name("b")),
            Err(SpoolError::TooManyFiles { limit: 1 })
        ));
        let dir = spool.dir().to_path_buf();
        spool.discard().await.unwrap();
        assert!(!dir.exists());
    }
}
