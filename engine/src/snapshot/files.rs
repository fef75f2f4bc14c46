//! Snapshot file I/O in pooled buffers: a writer that checksums and counts
//! what it writes, a reader that serves Arrow's reads and seeks, a streaming
//! check of a file against its manifest entry, and the fsyncs that make a
//! rename durable.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ebb_leak::{ResourceKind, Tracked};
use ebb_pool::{BufferPool, PooledBuf};

use crate::error::{Error, Result};

/// Bytes written to (or read from) the file per system call.
pub(crate) const IO_CHUNK: usize = 1 << 20;

/// An I/O error as the engine's error, naming the path and the step.
pub(crate) fn io_error<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// fsync of a directory, so the renames in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync directory"))
}

/// Writes a file through a pooled buffer, keeping its length and crc32c.
/// `on_write` is called after every write that reached the file.
pub(crate) struct ChecksumWriter<'a> {
    file: File,
    /// The open file as a tracked resource (crate::leaks).
    _tracked: Tracked,
    path: PathBuf,
    buf: PooledBuf,
    crc: u32,
    len: u64,
    on_write: &'a mut dyn FnMut(u64),
}

impl<'a> ChecksumWriter<'a> {
    /// Creates `path` (which must not exist).
    #[track_caller]
    pub fn create(
        path: &Path,
        pool: &BufferPool,
        on_write: &'a mut dyn FnMut(u64),
    ) -> Result<ChecksumWriter<'a>> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_error(path, "create"))?;
        let mut buf = pool.try_get(IO_CHUNK)?;
        buf.clear();
        Ok(ChecksumWriter {
            file,
            _tracked: crate::leaks::tracker().track(ResourceKind::FileDescriptor, "snapshot_write"),
            path: path.to_path_buf(),
            buf,
            crc: 0,
            len: 0,
            on_write,
        })
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.len += self.buf.len() as u64;
        self.buf.clear();
        (self.on_write)(self.len);
        Ok(())
    }

    /// Writes out what is buffered and fsyncs the file; returns its length
    /// and crc32c.
    pub fn finish(mut self) -> Result<(u64, u32)> {
        self.flush_buf().map_err(io_error(&self.path, "write"))?;
        self.file
            .sync_all()
            .map_err(io_error(&self.path, "fsync"))?;
        Ok((self.len, self.crc))
    }
}

impl Write for ChecksumWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > IO_CHUNK {
            self.flush_buf()?;
        }
        if bytes.len() >= IO_CHUNK {
            // Large writes go straight through.
            self.file.write_all(bytes)?;
            self.crc = crc32c::crc32c_append(self.crc, bytes);
            self.len += bytes.len() as u64;
            (self.on_write)(self.len);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Arrow's writer flushes after every message: keep buffering, the
        // data reaches the file at the next full chunk or at `finish`.
        Ok(())
    }
}

/// Reads `path` whole in pooled chunks and checks it against the
/// manifest's length and crc32c.
pub(crate) fn verify(path: &Path, pool: &BufferPool, len: u64, crc: u32) -> Result<()> {
    let bad = |reason: String| Error::CorruptSnapshot {
        file: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(io_error(path, "open"))?;
    let mut buf = pool.try_get(IO_CHUNK)?;
    let (mut got_len, mut got_crc) = (0u64, 0u32);
    loop {
        let n = file.read(&mut buf).map_err(io_error(path, "read"))?;
        if n == 0 {
            break;
        }
        got_crc = crc32c::crc32c_append(got_crc, &buf[..n]);
        got_len += n as u64;
    }
    if got_len != len {
        return Err(bad(format!(
            "{got_len} bytes, the manifest says {len} (truncated?)"
        )));
    }
    if got_crc != crc {
        return Err(bad(format!(
            "crc32c {got_crc:#010x}, the manifest says {crc:#010x}"
        )));
    }
    Ok(())
}

/// A buffered reader over a pooled buffer, for Arrow's file reader (which
/// reads and seeks).
pub(crate) struct PooledReader {
    file: File,
    /// The open file as a tracked resource (crate::leaks).
    _tracked: Tracked,
    buf: PooledBuf,
    at: usize,
    filled: usize,
}

impl PooledReader {
    #[track_caller]
    pub fn open(path: &Path, pool: &BufferPool) -> Result<PooledReader> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        Ok(PooledReader {
            file,
            _tracked: crate::leaks::tracker().track(ResourceKind::FileDescriptor, "snapshot_read"),
            buf: pool.try_get(IO_CHUNK)?,
            at: 0,
            filled: 0,
        })
    }
}

impl Read for PooledReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.filled {
            if out.len() >= self.buf.len() {
                return self.file.read(out);
            }
            self.filled = self.file.read(&mut self.buf)?;
            self.at = 0;
        }
        let n = out.len().min(self.filled - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Seek for PooledReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let pos = match pos {
            // The file's position is past what is buffered.
            SeekFrom::Current(d) => SeekFrom::Current(d - (self.filled - self.at) as i64),
            other => other,
        };
        self.at = 0;
        self.filled = 0;
        self.file.seek(pos)
    }
}
