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
    /// The file's unwritten extents, asked of the file system on first need.
    #[cfg(target_os = "linux")]
    unwritten: Unwritten,
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
            #[cfg(target_os = "linux")]
            unwritten: Unwritten::default(),
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
    ///
    /// `SEEK_DATA` calls data whatever the page cache holds, zeros included: an extent allocated
    /// but never written (`fallocate`, as `qemu-img create` leaves a table) that somebody has
    /// read is data to it. Such an extent of at least 4 MiB is passed over too when FIEMAP calls
    /// it unwritten after the file's pending writes are flushed (the flush only when one would
    /// be passed over).
    fn next_data(&self, offset: u64) -> io::Result<(u64, u64)> {
        #[allow(unused_mut)]
        let mut at = offset;
        #[cfg(target_os = "linux")]
        while let Some((start, end)) = self.seek_data(at) {
            if start >= self.size {
                return Ok((start, end));
            }
            match self.unwritten.run_at(&self.file, start) {
                // Zeros up to `zeros_end` (past `start`): ask again from there.
                Some(zeros_end) => at = zeros_end.min(self.size),
                None => return Ok((start, self.unwritten.clip(start, end))),
            }
        }
        Ok((at.min(self.size), self.size))
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

/// Extents of a file that FIEMAP reports unwritten (allocated, never written: they read as
/// zeros), of at least [`DATA_RUN`] bytes each, sorted, from the first [`MAX_EXTENTS`] extents
/// of the file (so a file of many small extents costs a bounded number of calls).
///
/// Two maps, each taken once: a `hint` without flushing anything, and, only when a run of zeros
/// would be taken from the hint, a `synced` one taken with `FIEMAP_FLAG_SYNC`. Data written but
/// not yet flushed may sit in the page cache over an extent still marked unwritten; the flush
/// writes it and marks the extent written, so only the synced map is trusted. A file with no
/// such extent (every image written in full, every file system without FIEMAP) is never flushed.
#[cfg(target_os = "linux")]
#[derive(Debug, Default)]
struct Unwritten {
    hint: std::sync::OnceLock<Vec<(u64, u64)>>,
    synced: std::sync::OnceLock<Vec<(u64, u64)>>,
}

/// How many extents of a file [`Unwritten`] looks at (a FIEMAP call returns 8).
#[cfg(target_os = "linux")]
const MAX_EXTENTS: usize = 1024;

#[cfg(target_os = "linux")]
impl Unwritten {
    /// Where the unwritten extent holding `at` ends, if the synced map has one there.
    fn run_at(&self, file: &File, at: u64) -> Option<u64> {
        let hint = self.hint.get_or_init(|| unwritten_extents(file, false));
        containing(hint, at)?;
        let synced = self.synced.get_or_init(|| unwritten_extents(file, true));
        containing(synced, at)
    }

    /// `end` cut at the first unwritten extent after `start` in the maps taken so far (a run of
    /// data reported to a caller then stops where zeros begin; the caller asks again there).
    fn clip(&self, start: u64, end: u64) -> u64 {
        let map = self.synced.get().or(self.hint.get());
        let next = map.and_then(|m| m.iter().map(|r| r.0).find(|&s| s > start));
        next.map_or(end, |s| end.min(s))
    }
}

/// The end of the range of `map` (sorted, disjoint) that holds `at`.
#[cfg(target_os = "linux")]
fn containing(map: &[(u64, u64)], at: u64) -> Option<u64> {
    let k = map.partition_point(|r| r.0 <= at).checked_sub(1)?;
    (at < map[k].1).then_some(map[k].1)
}

/// The unwritten extents of `file` (see [`Unwritten`]); empty where FIEMAP fails or is not
/// supported (a block device, tmpfs, NFS), so nothing is passed over there.
#[cfg(target_os = "linux")]
fn unwritten_extents(file: &File, sync: bool) -> Vec<(u64, u64)> {
    use fiemap::{Fiemap, FiemapExtentFlags as E, FiemapFlags};
    let flags = if sync { FiemapFlags::SYNC } else { FiemapFlags::empty() };
    // Flags that make "unwritten" mean less than "reads as zeros".
    let unsure = E::UNKNOWN | E::DELALLOC | E::ENCODED | E::DATA_ENCRYPTED | E::DATA_INLINE | E::DATA_TAIL;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for extent in Fiemap::with_flags(file, flags).take(MAX_EXTENTS) {
        let Ok(e) = extent else { break };
        let end = e.fe_logical.saturating_add(e.fe_length);
        if !e.fe_flags.contains(E::UNWRITTEN) || e.fe_flags.intersects(unsure) {
            continue;
        }
        // File systems cut long extents in pieces: adjacent ones make one run.
        match out.last_mut() {
            Some(last) if last.1 == e.fe_logical => last.1 = end,
            Some(last) if last.1 > e.fe_logical => break,
            _ => out.push((e.fe_logical, end)),
        }
    }
    out.retain(|r| r.1 - r.0 >= DATA_RUN);
    out
}
