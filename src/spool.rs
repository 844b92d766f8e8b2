//! The upload spool: where a prospect's files wait, on disk, between the HTTP request and
//! their placement in the sandbox. Files are written as they stream in, hashed on the way, and
//! the demo's rules are enforced before each byte is written, so a too-large upload is cut
//! off at the limit rather than read to its end. A `Spool` deletes its directory when dropped
//! unless it was discarded explicitly, so a rejected or abandoned upload leaves nothing.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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
}

pub struct Spool {
    dir: PathBuf,
    rules: UploadRules,
    files: Vec<StagedFile>,
    records: Vec<FileRecord>,
    /// What each file looks like (for the vendor's report), worked out as it streamed in.
    profiles: Vec<ProfiledFile>,
    total: u64,
}

impl Spool {
    pub async fn create(root: &Path, id: SandboxId, rules: UploadRules) -> io::Result<Spool> {
        let dir = root.join(id.to_string());
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Spool {
            dir,
            rules,
            files: Vec::new(),
            records: Vec::new(),
            profiles: Vec::new(),
            total: 0,
        })
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
    pub async fn write<S>(&mut self, name: UploadName, mut chunks: S) -> Result<(), SpoolError>
    where
        S: Stream<Item = Result<Bytes, SpoolError>> + Unpin,
    {
        self.admit(&name)?;
        // Numbered on disk: the prospect's name is only ever used inside the tar archive.
        let path = self.dir.join(format!("{}.upload", self.files.len()));
        let mut out =
            tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(&path).await?);
        let mut hasher = Sha256::new();
        let mut profiler = Profiler::for_extension(name.extension().as_deref());
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if self.total + bytes + chunk.len() as u64 > self.rules.max_bytes {
                return Err(SpoolError::TooLarge {
                    limit: self.rules.max_bytes,
                });
            }
            hasher.update(&chunk);
            profiler.feed(&chunk);
            out.write_all(&chunk).await?;
            bytes += chunk.len() as u64;
        }
        out.flush().await?;
        if bytes == 0 {
            return Err(SpoolError::Empty(name.to_string()));
        }
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
        self.files.push(StagedFile { name, path, bytes });
        Ok(())
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
