//! Guest data in bulk: large positioned reads and writes, holes for zeros, and an output whose
//! writeback starts behind the writer.
//!
//! - Reads cover only the ranges that may hold data ([`GuestDisk::data_ranges`],
//!   [`file_data_ranges`]), 256 KiB a call (or a cluster, if larger); a run of clusters stored one after another
//!   is one `pread` ([`GuestDisk::read_at`] joins them).
//! - Writes are one call per run of non-zero blocks; the output's length is set first, so the
//!   zeros between runs are holes and are never written.
//! - A stored extent is copied file to file by the kernel (`copy_file_range`, Linux): it does
//!   not pass through this process, and on a file system that shares blocks between files (XFS,
//!   Btrfs) it is not copied at all where the offsets are block-aligned. A raw source's bytes,
//!   which are read anyway to find the zeros, are copied that way only onto XFS and Btrfs.
//!   Where the kernel refuses, the bytes go through memory.
//! - On Linux the writer asks the kernel, every 16 MiB, to start writing what it has
//!   written so far to the disk (`posix_fadvise(POSIX_FADV_DONTNEED)` starts the writeback of a
//!   range's dirty pages without waiting for it). Without this the kernel leaves up to a tenth
//!   of the memory dirty before it starts, and the output's `fsync` then waits for all of it:
//!   the copy and the disk take turns instead of working side by side. Nothing about safety
//!   changes: the careful writer (`write_atomically`) still syncs the whole file before naming
//!   it.
//!
//! [`GuestDisk::data_ranges`]: super::GuestDisk::data_ranges
//! [`GuestDisk::read_at`]: super::GuestDisk::read_at

use std::fs::File;
use std::io;
use std::sync::mpsc;

use super::pio::PositionedIo;
use crate::error::Result;

/// Bytes read (and at most written) per call when the data passes through this process: large
/// enough that a call's fixed cost is small, small enough that the bytes read are still in the
/// CPU's cache when they are written (1 MiB cost 20-30 % more system time than 64-256 KiB).
pub(crate) const CHUNK: u64 = 256 << 10;

/// The writer starts the writeback of what it wrote every this many bytes (Linux).
pub(crate) const KICK: u64 = 16 << 20;

/// The granularity of holes in a raw output: a block of this many zeros is not written.
pub(crate) const ZERO_BLOCK: u64 = 4096;

/// An output filled front to back: positioned writes, with the writeback of each finished
/// stretch started early (see the module docs).
pub(crate) struct Sink<'a> {
    file: &'a File,
    /// Writeback was requested for `[.., kicked)`.
    kicked: u64,
    /// The end of the furthest write.
    end: u64,
}

/// How far [`Sink::copy_in_kernel`] got.
pub(crate) enum KernelCopy {
    /// It copied this many bytes: all of them, or fewer where the source ends.
    Done(u64),
    /// It copied this many bytes, and refuses to copy between these files.
    Refused(u64),
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a File) -> Sink<'a> {
        Sink {
            file,
            kicked: 0,
            end: 0,
        }
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.end = self.end.max(offset + buf.len() as u64);
        if self.end - self.kicked >= KICK {
            self.kick();
        }
        Ok(())
    }

    /// Copies `len` bytes of `src` from `src_offset` to `offset` of the output: on Linux in the
    /// kernel (`copy_file_range`: the bytes do not pass through this process), elsewhere, or
    /// where the kernel refuses, through `buf`. Bytes past the end of `src` are not copied
    /// (the output reads as zeros there). Calls `progress` with the bytes done so far.
    pub(crate) fn copy_from(
        &mut self,
        src: &File,
        src_offset: u64,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<()> {
        let mut done = match self.copy_in_kernel(src, src_offset, offset, len, progress)? {
            KernelCopy::Done(_) => return Ok(()),
            KernelCopy::Refused(done) => done,
        };
        if done < len && buf.is_empty() {
            buf.resize(CHUNK as usize, 0);
        }
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let got = read_some(src, &mut buf[..want], src_offset + done)?;
            if got == 0 {
                return Ok(());
            }
            self.write_at(&buf[..got], offset + done)?;
            done += got as u64;
            progress(done);
        }
        Ok(())
    }

    /// Copies up to `len` bytes of `src` from `src_offset` to `offset` of the output in the
    /// kernel (`copy_file_range`, Linux): on a file system that shares blocks between files
    /// (XFS, Btrfs) the output's blocks become the source's where the offsets allow, and
    /// nothing is copied. Calls `progress` with the bytes done so far. Elsewhere than Linux the
    /// kernel "refuses" at once.
    pub(crate) fn copy_in_kernel(
        &mut self,
        src: &File,
        src_offset: u64,
        offset: u64,
        len: u64,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<KernelCopy> {
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (src, src_offset, offset, progress);
            Ok(if len == 0 {
                KernelCopy::Done(0)
            } else {
                KernelCopy::Refused(0)
            })
        }
        #[cfg(target_os = "linux")]
        {
            use rustix::io::Errno;
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(KICK) as usize;
                let (mut from, mut to) = (src_offset + done, offset + done);
                match rustix::fs::copy_file_range(src, Some(&mut from), self.file, Some(&mut to), want) {
                    Ok(0) => break, // the end of the source
                    Ok(n) => {
                        done += n as u64;
                        self.end = self.end.max(offset + done);
                        if self.end - self.kicked >= KICK {
                            self.kick();
                        }
                        progress(done);
                    }
                    Err(Errno::INTR) => continue,
                    // Not between these files, or not at all.
                    Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM) => {
                        return Ok(KernelCopy::Refused(done));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(KernelCopy::Done(done))
        }
    }

    /// Writes `bytes`, which were read from `origin` at `origin_offset`, at `offset`: copied by
    /// the kernel from `origin` while it does that ([`Sink::copy_in_kernel`]), from memory
    /// otherwise. `origin` becomes `None` once the kernel refuses, so that the next writes go
    /// from memory straight away.
    pub(crate) fn put(
        &mut self,
        origin: &mut Option<&File>,
        bytes: &[u8],
        origin_offset: u64,
        offset: u64,
    ) -> io::Result<()> {
        let len = bytes.len() as u64;
        let done = match *origin {
            None => 0,
            Some(src) => match self.copy_in_kernel(src, origin_offset, offset, len, &mut |_| {})? {
                KernelCopy::Done(done) => done,
                KernelCopy::Refused(done) => {
                    *origin = None;
                    done
                }
            },
        };
        // The rest (all of it from memory; or the source was cut short since it was read).
        match bytes.get(done as usize..) {
            Some(rest) if !rest.is_empty() => self.write_at(rest, offset + done),
            _ => Ok(()),
        }
    }

    /// Starts the writeback of `[kicked, end)`.
    fn kick(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(len) = std::num::NonZeroU64::new(self.end.saturating_sub(self.kicked)) {
            // Advice only: an error (a file system without it) changes nothing but speed.
            let _ = rustix::fs::fadvise(self.file, self.kicked, Some(len), rustix::fs::Advice::DontNeed);
        }
        self.kicked = self.end;
    }
}

/// Reads what there is of `buf.len()` bytes at `offset` (fewer only at the end of the file).
/// Reads at `offset` until `buf` is full or the file ends; the count read.
pub(crate) fn read_some(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match pread(file, &mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(not(any(unix, windows)))]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read(buf)
}

/// The byte ranges `(start, length)` of a file that may hold data, in order: on Linux from
/// `SEEK_DATA`/`SEEK_HOLE` (holes read as zeros and need not be read), elsewhere, or where the
/// file system cannot tell, the whole file.
pub fn file_data_ranges(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let size = file.metadata()?.len();
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{seek, SeekFrom};
        use rustix::io::Errno;
        let mut ranges = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let start = match seek(file, SeekFrom::Data(pos)) {
                Ok(s) => s,
                Err(Errno::NXIO) => break, // no data past pos
                Err(Errno::INVAL | Errno::OPNOTSUPP) if ranges.is_empty() => return Ok(whole(size)),
                Err(e) => return Err(e.into()),
            };
            if start >= size {
                break;
            }
            let end = match seek(file, SeekFrom::Hole(start)) {
                Ok(e) => e.min(size),
                Err(e) => return Err(e.into()),
            };
            if end <= start {
                // A file system that contradicts itself: read the rest.
                ranges.push((start, size - start));
                break;
            }
            ranges.push((start, end - start));
            pos = end;
        }
        Ok(ranges)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(whole(size))
}

fn whole(size: u64) -> Vec<(u64, u64)> {
    if size == 0 {
        Vec::new()
    } else {
        vec![(0, size)]
    }
}

/// How the guest is read: from this thread only, or from a second one too.
pub enum GuestReader<'r> {
    /// Called on the calling thread only: reading and writing take turns.
    Local(&'r mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>),
    /// May be called on a second thread, which then reads (and looks for zeros) while the
    /// calling thread writes, when the machine has more than one CPU.
    Shared(&'r mut (dyn FnMut(u64, &mut [u8]) -> io::Result<()> + Send)),
    /// The guest is this raw file, byte for byte (past its end: zeros), read as with
    /// [`GuestReader::Shared`]; `progress` is told the offset of each read. When the output is
    /// on a file system that shares blocks between files (XFS, Btrfs), the bytes kept are then
    /// copied from the file by the kernel (`copy_file_range`), not written from memory: the
    /// output's data blocks become the source's wherever the offsets allow, and nothing is
    /// copied.
    RawFile(&'r File, &'r mut (dyn FnMut(u64) + Send)),
}

impl<'r> GuestReader<'r> {
    /// The file to copy the guest's bytes from into `out` in the kernel, if any: the raw file of
    /// a [`GuestReader::RawFile`], when `out` is on a file system that shares blocks. Elsewhere
    /// the kernel would copy bytes this process has just read (to find the zeros) and still
    /// has in the CPU's caches: writing them from memory costs less (measured on ext4: the
    /// kernel copy took 10 % more time).
    pub(crate) fn origin(&self, out: &File) -> Option<&'r File> {
        match self {
            GuestReader::RawFile(file, _) if shares_blocks(out) => Some(*file),
            _ => None,
        }
    }
}

/// Whether `file` is on a file system that answers `copy_file_range` by sharing blocks between
/// files (a reflink) where the offsets allow: XFS and Btrfs.
pub(crate) fn shares_blocks(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        const XFS: u64 = 0x5846_5342;
        const BTRFS: u64 = 0x9123_683e;
        rustix::fs::fstatfs(file).is_ok_and(|s| matches!(s.f_type as u64 & 0xffff_ffff, XFS | BTRFS))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// One piece of guest data: `(offset, bytes to read, bytes it spans)`; the bytes past those
/// read are zeros (the short last cluster of a disk).
pub(crate) type Piece = (u64, usize, usize);

/// What takes each piece read: its guest offset, its bytes, its runs of non-zero blocks.
pub(crate) type PieceWriter<'w> = dyn FnMut(u64, &[u8], &[(usize, usize)]) -> Result<()> + 'w;

/// Buffers in flight between the reading and the writing thread.
const BUFFERS: usize = 4;

/// Reads each piece, finds its runs of non-zero `grain`-byte blocks (aligned in the guest),
/// and hands the piece (its offset, its bytes) and the runs to `write`, in order. With
/// [`GuestReader::Shared`] on a machine of more than one CPU, a second thread reads and scans
/// while this one writes; at most [`BUFFERS`] buffers of `buf_len` bytes exist at once.
pub(crate) fn pump(
    pieces: impl Iterator<Item = Piece> + Send,
    buf_len: usize,
    grain: u64,
    read: GuestReader<'_>,
    write: &mut PieceWriter<'_>,
) -> Result<()> {
    fn fill(
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
        (pos, n, span): Piece,
        buf: &mut [u8],
        grain: u64,
    ) -> io::Result<Vec<(usize, usize)>> {
        read(pos, &mut buf[..n])?;
        buf[n..span].fill(0);
        Ok(nonzero_runs(&buf[..span], pos, grain))
    }
    /// Reading and writing in turns, with one buffer.
    fn in_turns(
        pieces: impl Iterator<Item = Piece>,
        buf_len: usize,
        grain: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
        write: &mut PieceWriter<'_>,
    ) -> Result<()> {
        let mut buf = vec![0u8; buf_len];
        for piece in pieces {
            let runs = fill(read, piece, &mut buf, grain)?;
            write(piece.0, &buf[..piece.2], &runs)?;
        }
        Ok(())
    }
    let mut from_file;
    let read: &mut (dyn FnMut(u64, &mut [u8]) -> io::Result<()> + Send) = match read {
        GuestReader::Local(r) => return in_turns(pieces, buf_len, grain, r, write),
        GuestReader::Shared(r) => r,
        GuestReader::RawFile(file, progress) => {
            from_file = move |off: u64, buf: &mut [u8]| -> io::Result<()> {
                progress(off);
                let got = read_some(file, buf, off)?;
                buf[got..].fill(0);
                Ok(())
            };
            &mut from_file
        }
    };
    if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        return in_turns(pieces, buf_len, grain, read, write);
    }
    type Filled = io::Result<(Piece, Vec<u8>, Vec<(usize, usize)>)>;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Filled>(BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            let _ = free_tx.send(vec![0u8; buf_len]);
        }
        scope.spawn(move || {
            for piece in pieces {
                // Both channels close when the writer stops (done or failed): so does this.
                let Ok(mut buf) = free_rx.recv() else { return };
                let filled = fill(read, piece, &mut buf, grain).map(|runs| (piece, buf, runs));
                let failed = filled.is_err();
                if full_tx.send(filled).is_err() || failed {
                    return;
                }
            }
        });
        for filled in full_rx {
            let ((pos, _, span), buf, runs) = filled?;
            write(pos, &buf[..span], &runs)?;
            let _ = free_tx.send(buf);
        }
        Ok(())
    })
}

/// Writes `size` guest bytes as a raw file into the empty file `out`, reading them through
/// `read` (which fills the buffer it is given). `ranges` are the guest byte ranges `(start,
/// length)` that may hold non-zero bytes, in order and not overlapping; everything else is
/// zeros and is not read. The file's length is set first; then each range is read 256 KiB
/// at a time and each run of 4 KiB blocks (aligned in the file) that are not all zeros is
/// written with one call: zeros are holes. With [`GuestReader::RawFile`] and an output on XFS or
/// Btrfs the runs are copied from that file by the kernel (shared blocks). Returns the bytes
/// written.
pub fn write_raw(read: GuestReader<'_>, ranges: &[(u64, u64)], size: u64, out: &File) -> Result<u64> {
    out.set_len(size)?;
    let mut sink = Sink::new(out);
    let mut origin = read.origin(out);
    let mut written = 0;
    let pieces = ranges.iter().flat_map(move |&(start, len)| {
        let end = start.saturating_add(len).min(size);
        let mut pos = start;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            // Pieces end on CHUNK boundaries of the guest.
            let n = (CHUNK - pos % CHUNK).min(end - pos) as usize;
            let piece = (pos, n, n);
            pos += n as u64;
            Some(piece)
        })
    });
    pump(pieces, CHUNK as usize, ZERO_BLOCK, read, &mut |pos, data, runs| {
        for &(at, run) in runs {
            let at_guest = pos + at as u64;
            sink.put(&mut origin, &data[at..at + run], at_guest, at_guest)?;
            written += run as u64;
        }
        Ok(())
    })?;
    Ok(written)
}

/// The runs `(start, length)` of `data` (which sits at byte `base` of its file) that are not
/// all zeros, in blocks of `grain` bytes aligned in the file (the first and last block may be
/// shorter); adjacent non-zero blocks are one run.
pub(crate) fn nonzero_runs(data: &[u8], base: u64, grain: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let to_boundary = grain - (base + at as u64) % grain;
        let n = (to_boundary.min((data.len() - at) as u64)) as usize;
        if crate::raw::first_nonzero(&data[at..at + n]).is_some() {
            match runs.last_mut() {
                Some((s, l)) if *s + *l == at => *l += n,
                _ => runs.push((at, n)),
            }
        }
        at += n;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::nonzero_runs;

    /// A new file, open to read and write.
    #[cfg(target_os = "linux")]
    fn new_file(path: std::path::PathBuf) -> std::fs::File {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true).open(path).unwrap()
    }

    /// The bytes handed to `put` are what was read; the kernel copies the origin's current
    /// bytes. Making them differ shows which one the output got.
    #[cfg(target_os = "linux")]
    #[test]
    fn put_copies_from_the_origin_in_the_kernel() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let origin = new_file(dir.path().join("origin"));
        origin.write_all_at(&[5u8; 8192], 0).unwrap();
        let out = new_file(dir.path().join("out"));
        let mut sink = super::Sink::new(&out);
        let mut from = Some(&origin);
        sink.put(&mut from, &[9u8; 4096], 4096, 0).unwrap();
        assert!(from.is_some(), "the kernel copies between two files of one folder");
        let mut got = vec![0u8; 4097];
        assert_eq!(out.read_at(&mut got, 0).unwrap(), 4096);
        assert_eq!(&got[..4096], &[5u8; 4096][..]);
    }

    /// tmpfs copies on `copy_file_range`: a raw source's bytes are written from memory there.
    #[cfg(target_os = "linux")]
    #[test]
    fn tmpfs_does_not_share_blocks() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        assert!(!super::shares_blocks(&new_file(dir.path().join("f"))));
    }

    /// Where the kernel refuses (here: a file onto itself over overlapping ranges, EINVAL), the
    /// bytes read are written, and the kernel is not asked again.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_kernel_copy_writes_from_memory_and_stops_asking() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = new_file(dir.path().join("f"));
        file.write_all_at(&[1u8; 8192], 0).unwrap();
        let mut sink = super::Sink::new(&file);
        let mut from = Some(&file);
        sink.put(&mut from, &[2u8; 4096], 0, 2048).unwrap();
        assert!(from.is_none());
        let mut got = vec![0u8; 8192];
        file.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(&got[..2048], &[1u8; 2048][..]);
        assert_eq!(&got[2048..6144], &[2u8; 4096][..]);
        assert_eq!(&got[6144..], &[1u8; 2048][..]);
    }

    #[test]
    fn nonzero_runs_skip_zero_blocks_and_join_neighbours() {
        let mut data = vec![0u8; 5 * 4096 + 100];
        data[4096 + 7] = 1; // block 1
        data[2 * 4096] = 2; // block 2, joins block 1
        data[5 * 4096 + 99] = 3; // the short last block
        assert_eq!(nonzero_runs(&data, 0, 4096), vec![(4096, 2 * 4096), (5 * 4096, 100)]);
        assert_eq!(
            nonzero_runs(&vec![0u8; 3 * 4096], 0, 4096),
            Vec::<(usize, usize)>::new()
        );
        assert_eq!(nonzero_runs(&[9u8; 10], 0, 4096), vec![(0, 10)]);
        assert_eq!(nonzero_runs(&[], 0, 4096), Vec::<(usize, usize)>::new());
    }

    #[test]
    fn nonzero_runs_align_blocks_to_the_file_not_the_buffer() {
        // The buffer starts 512 bytes before a 4 KiB boundary of its file: its first block is
        // 512 bytes long, then whole blocks.
        let mut data = vec![0u8; 512 + 2 * 4096];
        data[511] = 1; // the short first block
        data[512 + 4096] = 2; // the second whole block
        assert_eq!(
            nonzero_runs(&data, 3 * 4096 + 3584, 4096),
            vec![(0, 512), (512 + 4096, 4096)]
        );
        data[600] = 3; // now the first whole block too: one run of everything
        assert_eq!(nonzero_runs(&data, 3 * 4096 + 3584, 4096), vec![(0, data.len())]);
    }
}
