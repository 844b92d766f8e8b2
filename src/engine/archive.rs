//! The tar stream that carries a prospect's files into a sandbox. The `tar` crate writes the
//! archive (long names, checksums, padding) on a blocking thread straight from the spool
//! files; a small bounded channel carries it to the Engine request, so memory use does not
//! depend on the upload's size and a slow Engine slows the reader instead of piling up bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::domain::StagedFile;

const CHUNK: usize = 256 * 1024;

/// A `Write` that hands each buffer to the async side.
struct ChannelWriter(mpsc::Sender<io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the Engine request ended"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_archive(files: &[StagedFile], out: ChannelWriter) -> io::Result<()> {
    let mut builder = tar::Builder::new(BufWriter::with_capacity(CHUNK, out));
    for file in files {
        let mut source = File::open(&file.path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(source.metadata()?.len());
        header.set_mode(0o644);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, file.name.as_str(), &mut source)?;
    }
    builder.into_inner()?.flush()
}

/// The archive of `files` as a byte stream for the Engine's archive endpoint.
pub fn stream(files: Vec<StagedFile>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        if let Err(err) = write_archive(&files, ChannelWriter(tx)) {
            // If the receiver is gone the request already failed; nothing to tell.
            let _ = errors.blocking_send(Err(err));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UploadName;
    use futures_util::StreamExt;
    use std::io::Read;

    #[tokio::test]
    async fn the_archive_holds_every_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let long_name = format!("{}.csv", "n".repeat(200));
        let mut files = Vec::new();
        for (name, content) in [
            ("a.csv", b"x,y\n1,2\n".to_vec()),
            (long_name.as_str(), vec![7u8; 300_000]),
            ("empty.json", vec![]),
        ] {
            let path = dir.path().join(format!("f{}", files.len()));
            std::fs::write(&path, &content).unwrap();
            files.push(StagedFile {
                name: UploadName::parse(name).unwrap(),
                path,
                bytes: content.len() as u64,
            });
        }
        let mut tarball = Vec::new();
        let mut s = Box::pin(stream(files.clone()));
        while let Some(chunk) = s.next().await {
            tarball.extend_from_slice(&chunk.unwrap());
        }
        let mut archive = tar::Archive::new(tarball.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().to_string();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            seen.push((name, content));
        }
        assert_eq!(seen.len(), 3);
        for (file, (name, content)) in files.iter().zip(seen) {
            assert_eq!(file.name.as_str(), name);
            assert_eq!(std::fs::read(&file.path).unwrap(), content);
        }
    }

    #[tokio::test]
    async fn a_missing_spool_file_ends_the_stream_with_an_error() {
        let files = vec![StagedFile {
            name: UploadName::parse("gone.csv").unwrap(),
            path: "/nonexistent/testdrive/gone.csv".into(),
            bytes: 1,
        }];
        let items: Vec<_> = stream(files).collect().await;
        assert!(items.last().unwrap().is_err());
    }
}
