//! `parallels_image.GuestReader`'s native half: a guest disk read from a position, as
//! `io.RawIOBase` reads.
//!
//! Reads of [`DIRECT`] bytes or more go straight into the caller's buffer (one `pread` per run
//! of contiguous clusters, without the GIL). Smaller reads, which forensic parsers make by the
//! thousand (sectors, 4 KiB pages), are served from a read-ahead block: without it each one is
//! a system call, which costs more than copying the bytes (BENCHMARKS.md, "The Python
//! package"). The block grows while the reads are sequential (from 4 KiB up to [`MAX_WINDOW`])
//! and falls back to the read's own size when they jump, so a random read fetches little more
//! than it asks for. Like `io.BufferedReader`, the block may hold bytes that another process
//! has since written over; the disk is opened read-only and read as it was when read.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use parallels_image as pi;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffer;

/// Reads of this size or more skip the read-ahead block.
pub const DIRECT: usize = 16 << 10;
/// The read-ahead block's largest size.
pub const MAX_WINDOW: usize = 1 << 20;
/// The smallest read-ahead block.
const MIN_WINDOW: usize = 4 << 10;
/// The alignment of the read-ahead block's bytes.
const ALIGN: usize = 64;
/// Bytes read between two looks at the signal handlers.
pub const PIECE: usize = 32 << 20;

/// The position and the read-ahead block.
struct State {
    pos: u64,
    /// Guest bytes `[start, start + len)`, at `block[skip..skip + len]`.
    start: u64,
    len: usize,
    skip: usize,
    block: Vec<u8>,
}

/// A guest disk: an image's or a bundle's bytes as the guest sees them.
#[pyclass(frozen, module = "parallels_image._native", name = "Guest")]
pub struct PyGuest {
    disk: pi::bundle::GuestDisk,
    state: Mutex<State>,
}

impl PyGuest {
    pub fn new(disk: pi::bundle::GuestDisk) -> PyGuest {
        PyGuest {
            disk,
            state: Mutex::new(State {
                pos: 0,
                start: 0,
                len: 0,
                skip: 0,
                block: Vec::new(),
            }),
        }
    }

    // The lock is never held while the GIL is let go or taken back: a thread that waits
    // for it with the GIL held would otherwise wait for a thread that waits for the GIL.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_err(&self, py: Python<'_>, e: &io::Error) -> PyErr {
        crate::os_error(py, self.disk.files().first().map(PathBuf::as_path), e)
    }

    /// The bytes that a read of `want` from `pos` gets (fewer at the end of the disk).
    fn clip(&self, pos: u64, want: usize) -> usize {
        let available = self.disk.size().saturating_sub(pos);
        want.min(usize::try_from(available).unwrap_or(usize::MAX))
    }

    /// Fills `out` with the guest's bytes from `offset`, without the GIL, in pieces of
    /// [`PIECE`] bytes with a look at the signal handlers before each.
    fn read_direct(&self, py: Python<'_>, offset: u64, out: &mut [u8]) -> PyResult<()> {
        let mut done = 0;
        while done < out.len() {
            py.check_signals()?;
            let piece = (out.len() - done).min(PIECE);
            let chunk = &mut out[done..done + piece];
            let at = offset + done as u64;
            py.detach(|| self.disk.read_at(at, chunk))
                .map_err(|e| self.io_err(py, &e))?;
            done += piece;
        }
        Ok(())
    }

    /// Refills the read-ahead block (`block`, taken out of the state) with `window` bytes or
    /// more from `pos`, and fills `out` (shorter than [`DIRECT`]) from its start.
    fn refill(&self, py: Python<'_>, pos: u64, out: &mut [u8], mut block: Vec<u8>, window: usize) -> PyResult<()> {
        let len = self.clip(pos, window.max(out.len()));
        // The kernel copies from the page cache at half speed into a buffer that is not
        // 32-byte aligned (malloc's large blocks start 16 bytes into a page): the block's
        // bytes start on a 64-byte boundary.
        block.resize(len + ALIGN, 0);
        let skip = block.as_ptr().align_offset(ALIGN).min(ALIGN);
        let read = py.detach(|| self.disk.read_at(pos, &mut block[skip..skip + len]));
        if let Err(e) = read {
            return Err(self.io_err(py, &e));
        }
        out.copy_from_slice(&block[skip..skip + out.len()]);
        let mut s = self.lock();
        s.start = pos;
        s.len = len;
        s.skip = skip;
        s.block = block;
        Ok(())
    }

    /// Reads into `out` from the position and moves it; the bytes read.
    fn read_here(&self, py: Python<'_>, out: &mut [u8]) -> PyResult<usize> {
        // One look under the lock: a read the block holds is served there and then (4 KiB
        // reads are mostly this); another small read takes the block out to refill it.
        let (pos, n, refill) = {
            let mut s = self.lock();
            let pos = s.pos;
            let n = self.clip(pos, out.len());
            if let Some(at) = s.holding(pos, n) {
                out[..n].copy_from_slice(&s.block[at..at + n]);
                s.pos = pos + n as u64;
                return Ok(n);
            }
            let refill = (n > 0 && n < DIRECT).then(|| s.take_block(pos));
            (pos, n, refill)
        };
        let out = &mut out[..n];
        if let Some((block, window)) = refill {
            self.refill(py, pos, out, block, window)?;
        } else if n > 0 {
            self.read_direct(py, pos, out)?;
        }
        self.lock().pos = pos + n as u64;
        Ok(n)
    }
}

impl State {
    /// Where in `block` the guest bytes `[pos, pos + n)` are, if the block holds them all and
    /// `n` is a small read (from 1 to [`DIRECT`] bytes).
    fn holding(&self, pos: u64, n: usize) -> Option<usize> {
        let end = self.start + self.len as u64;
        (n > 0 && n < DIRECT && pos >= self.start && pos + n as u64 <= end)
            .then(|| self.skip + (pos - self.start) as usize)
    }

    /// The block, taken out to be refilled from `pos`, and the size to refill it with: twice
    /// the block when the read is sequential (it starts in or right after the block), else the
    /// smallest block.
    fn take_block(&mut self, pos: u64) -> (Vec<u8>, usize) {
        let end = self.start + self.len as u64;
        let window = if pos >= self.start && pos <= end && self.len > 0 {
            (self.len * 2).clamp(MIN_WINDOW, MAX_WINDOW)
        } else {
            MIN_WINDOW
        };
        self.len = 0;
        (std::mem::take(&mut self.block), window)
    }
}

#[pymethods]
impl PyGuest {
    #[staticmethod]
    #[pyo3(signature = (path, snapshot = None))]
    fn open(py: Python<'_>, path: PathBuf, snapshot: Option<&str>) -> PyResult<PyGuest> {
        let snapshot = snapshot.map(crate::parse_snapshot).transpose()?;
        pi::bundle::GuestDisk::open(&path, snapshot, pi::bundle::BundleOptions::default())
            .map(PyGuest::new)
            .map_err(|e| crate::bundle_error(py, &e))
    }

    #[getter]
    fn size(&self) -> u64 {
        self.disk.size()
    }

    /// The files read, top layer first.
    #[getter]
    fn files(&self) -> Vec<String> {
        self.disk.files().iter().map(|p| p.display().to_string()).collect()
    }

    /// Guest byte ranges `(offset, length)` that may hold data (the rest reads as zeros).
    fn data_ranges(&self) -> Vec<(u64, u64)> {
        self.disk.data_ranges()
    }

    /// Fills `buffer` (any writable contiguous buffer) with the guest's bytes from the
    /// position, in place, and moves the position; returns how many bytes it filled (fewer at
    /// the end of the disk, 0 there).
    fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        buffer::with_bytes_mut(buffer, |out| self.read_here(py, out))
    }

    /// Up to `size` bytes from the position (all to the end if `size` is negative or `None`),
    /// read into the new `bytes` object itself.
    #[pyo3(signature = (size = -1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let pos = self.lock().pos;
        let want = match size {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        let n = self.clip(pos, want);
        let mut got = 0;
        let bytes = PyBytes::new_with(py, n, |out| {
            got = self.read_here(py, out)?;
            Ok(())
        })?;
        debug_assert_eq!(got, n);
        Ok(bytes)
    }

    /// Everything from the position to the end.
    fn readall<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.read(py, None)
    }

    /// Moves the position as `io.IOBase.seek` does (`whence` 0, 1 or 2); returns it.
    #[pyo3(signature = (offset, whence = 0))]
    fn seek(&self, offset: i64, whence: i32) -> PyResult<u64> {
        let mut s = self.lock();
        let base: i128 = match whence {
            0 => 0,
            1 => s.pos.into(),
            2 => self.disk.size().into(),
            other => return Err(PyValueError::new_err(format!("invalid whence ({other})"))),
        };
        let pos = base + i128::from(offset);
        if pos < 0 {
            return Err(PyValueError::new_err(format!("negative seek position {pos}")));
        }
        s.pos = u64::try_from(pos).map_err(|_| PyValueError::new_err(format!("seek position {pos} too large")))?;
        Ok(s.pos)
    }

    fn tell(&self) -> u64 {
        self.lock().pos
    }

    /// Fills `buffer` with the guest's bytes from `offset`, in place, without moving the
    /// position or using the read-ahead block; returns how many bytes it filled.
    fn readinto_at(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, offset: u64) -> PyResult<usize> {
        buffer::with_bytes_mut(buffer, |out| {
            let n = self.clip(offset, out.len());
            self.read_direct(py, offset, &mut out[..n])?;
            Ok(n)
        })
    }
}
