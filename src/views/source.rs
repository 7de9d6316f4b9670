//! Where image bytes come from: a slice in memory (zero-copy) or a file read piecewise.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::path::Path;

/// Random-access, read-only image bytes. Sources are `Sync`: validation of a large extension
/// cluster reads the image from a second thread while the first one hashes the cluster.
pub trait Source: Sync {
    /// Length in bytes.
    fn size(&self) -> u64;

    /// Bytes `[offset, offset + len)`, cut short at the end of the source (so possibly shorter,
    /// or empty past the end). A slice source lends its own bytes; a file source reads them.
    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>>;

    /// Reads bytes from `offset` into `buf`, as many as fit or as the source has there, and
    /// returns how many (fewer than `buf.len()` only at the end of the source). For reading a
    /// large region through one reused buffer; the default copies what `read_at` returns.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.read_at(offset, buf.len() as u64)?;
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }

    /// The next run of bytes at or after `offset` that may hold something other than zeros,
    /// as `[start, end)`: the bytes from `offset` to `start` are known to read as zeros (a hole
    /// of a sparse file) without reading them. `start == end == size()` when nothing past
    /// `offset` may hold data. For walks of a large table that skip its holes. The default
    /// knows of no holes: `(offset, size())`.
    fn next_data(&self, offset: u64) -> io::Result<(u64, u64)> {
        let size = self.size();
        Ok((offset.min(size), size))
    }
}

/// Bytes in memory: `Vec<u8>`, `&[u8]`, arrays… Reads lend the bytes themselves (zero-copy).
/// Pass `&bytes` where a `&dyn Source` is wanted.
impl<T: AsRef<[u8]> + Sync + ?Sized> Source for T {
    fn size(&self) -> u64 {
        self.as_ref().len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let bytes = self.as_ref();
        let start = offset.min(bytes.len() as u64) as usize;
        let end = offset.saturating_add(len).min(bytes.len() as u64) as usize;
        Ok(Cow::Borrowed(&bytes[start..end]))
    }
}

/// The length of the data run [`FileSource::next_data`] reports from where the data starts.
#[cfg(target_os = "linux")]
const DATA_RUN: u64 = 4 << 20;

/// A file opened read-only, read only where metadata is: a regular file or a block device
/// (anything that can be read at an offset). For a pipe or a FIFO, see
/// [`StreamSource`](crate::StreamSource).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
    /// Serialises seek-and-read where there is no positional read.
    #[cfg(not(any(unix, windows)))]
    lock: std::sync::Mutex<()>,
}

impl FileSource {
    /// The file read.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Opens `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = File::open(path)?;
        Self::new(file)
    }

    /// Wraps an open file. The size of a regular file is its length; of anything else (a
    /// block device, whose length reads as 0), where a seek to its end lands. A file that
    /// cannot seek (a pipe, a FIFO, a terminal) fails here with the seek's error (`ESPIPE`).
    pub fn new(file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let size = if meta.is_file() {
            meta.len()
        } else {
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            let end = f.seek(SeekFrom::End(0))?;
            f.seek(SeekFrom::Start(0))?;
            end
        };
        Ok(FileSource {
            file,
            size,
            #[cfg(not(any(unix, windows)))]
            lock: std::sync::Mutex::new(()),
        })
    }

    /// The data run at or after `offset` by `SEEK_DATA` (taken to be [`DATA_RUN`] bytes),
    /// clipped to the size the source was opened with; `None` when the file system cannot tell. Only the file
    /// position moves, and reads here are positional (`pread`), so nothing else depends on it.
    #[cfg(target_os = "linux")]
    fn seek_data(&self, offset: u64) -> Option<(u64, u64)> {
        use rustix::fs::{seek, SeekFrom};
        if offset >= self.size {
            return Some((self.size, self.size));
        }
        let start = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // No data at or after `offset` (the rest is a hole, or the file shrank).
            Err(rustix::io::Errno::NXIO) => return Some((self.size, self.size)),
            Err(_) => return None,
        };
        // Where the data ends is not asked (`SEEK_HOLE` walks every cached page of a long
        // run to find it): the run is taken to be `DATA_RUN` bytes, and the caller asks again
        // after it.
        let start = start.max(offset).min(self.size);
        Some((start, start.saturating_add(DATA_RUN).min(self.size)))
    }

    #[cfg(unix)]
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
    }

    #[cfg(not(any(unix, windows)))]
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))?;
        f.read(buf)
    }
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        let got = self.read_into(offset, &mut buf)?;
        buf.truncate(got);
        Ok(Cow::Owned(buf))
    }

    /// On Linux, where the file system tells (`SEEK_DATA`); elsewhere, or where
    /// it cannot tell (a block device, an old file system), every byte may be data.
    fn next_data(&self, offset: u64) -> io::Result<(u64, u64)> {
        #[cfg(target_os = "linux")]
        if let Some(run) = self.seek_data(offset) {
            return Ok(run);
        }
        Ok((offset.min(self.size), self.size))
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.pread(&mut buf[done..], offset.saturating_add(done as u64)) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
