//! The buffer protocol (PEP 3118) for the stable ABI of CPython 3.9 and 3.10.
//!
//! `PyObject_GetBuffer` and `Py_buffer` entered the limited API only in 3.11, so PyO3 leaves
//! `pyo3::buffer` out of an `abi3-py39` build. The function has been exported by every CPython 3
//! and `Py_buffer`'s layout has not changed since 3.3, so they are declared here: with them
//! `readinto` fills the caller's buffer (a `bytearray`, a `memoryview` such as the one
//! `io.BufferedReader` passes, an `mmap`, an array) in place, without a copy. This file is the
//! crate's only `unsafe` code.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi::{PyObject, Py_ssize_t};
use pyo3::prelude::*;

/// `Py_buffer` as CPython 3.3 and later lay it out.
#[repr(C)]
struct PyBufferRaw {
    buf: *mut c_void,
    obj: *mut PyObject,
    len: Py_ssize_t,
    itemsize: Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut Py_ssize_t,
    strides: *mut Py_ssize_t,
    suboffsets: *mut Py_ssize_t,
    internal: *mut c_void,
}

const PYBUF_SIMPLE: c_int = 0;
const PYBUF_WRITABLE: c_int = 0x0001;

extern "C" {
    fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut PyBufferRaw, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut PyBufferRaw);
}

/// A contiguous byte buffer exported by a Python object, held until dropped (the exporter
/// cannot resize or free it meanwhile). The view lives on the caller's stack: [`with_bytes`]
/// and [`with_bytes_mut`] lend it to a closure, so no call allocates.
struct Buffer<'v> {
    raw: &'v mut PyBufferRaw,
}

fn empty_view() -> PyBufferRaw {
    PyBufferRaw {
        buf: ptr::null_mut(),
        obj: ptr::null_mut(),
        len: 0,
        itemsize: 0,
        readonly: 0,
        ndim: 0,
        format: ptr::null_mut(),
        shape: ptr::null_mut(),
        strides: ptr::null_mut(),
        suboffsets: ptr::null_mut(),
        internal: ptr::null_mut(),
    }
}

impl<'v> Buffer<'v> {
    /// Asks `obj` for its bytes as one contiguous block (`PyBUF_SIMPLE`), writable if
    /// `writable`, into `raw`. Objects that cannot give that (a non-contiguous view, a
    /// read-only buffer when writing) raise the exporter's `BufferError`/`TypeError`.
    fn get(obj: &Bound<'_, PyAny>, raw: &'v mut PyBufferRaw, writable: bool) -> PyResult<Buffer<'v>> {
        let flags = PYBUF_SIMPLE | if writable { PYBUF_WRITABLE } else { 0 };
        // SAFETY: `obj` is a live object (we hold a reference and the GIL); `raw` is a
        // `Py_buffer`-sized, writable block that stays put (borrowed mutably for `'v`) until
        // `PyBuffer_Release` in `drop`.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *raw, flags) };
        if rc != 0 {
            return Err(
                PyErr::take(obj.py()).unwrap_or_else(|| PyTypeError::new_err("the object does not export a buffer"))
            );
        }
        let buffer = Buffer { raw };
        if writable && buffer.raw.readonly != 0 {
            return Err(PyBufferError::new_err("readinto needs a writable buffer"));
        }
        if buffer.raw.len < 0 || (buffer.raw.buf.is_null() && buffer.raw.len != 0) {
            return Err(PyBufferError::new_err("the exporter gave an invalid buffer"));
        }
        Ok(buffer)
    }

    fn len(&self) -> usize {
        self.raw.len as usize
    }

    /// The bytes.
    fn as_slice(&self) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: with PyBUF_SIMPLE the exporter gave `len` contiguous bytes at `buf`, valid
        // until the release in `drop`; the borrow of `self` keeps them alive.
        unsafe { std::slice::from_raw_parts(self.raw.buf.cast::<u8>(), self.len()) }
    }

    /// The bytes, to write (only for a buffer got `writable`, which `get` checked).
    fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and the exporter granted write access (PyBUF_WRITABLE, not
        // read-only); the exclusive borrow of `self` keeps this the only slice over them.
        unsafe { std::slice::from_raw_parts_mut(self.raw.buf.cast::<u8>(), self.len()) }
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once.
        // Buffers are dropped with the GIL held: they live only inside a call from Python.
        unsafe { PyBuffer_Release(&mut *self.raw) };
    }
}

/// Calls `f` with the bytes of `obj` (any object exporting a contiguous buffer).
pub fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> PyResult<R> {
    let mut raw = empty_view();
    let view = Buffer::get(obj, &mut raw, false)?;
    f(view.as_slice())
}

/// Calls `f` with the bytes of `obj` to write into (a writable contiguous buffer: a
/// `bytearray`, a `memoryview` such as the one `io.BufferedReader` passes, an `mmap`, an array).
pub fn with_bytes_mut<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&mut [u8]) -> PyResult<R>) -> PyResult<R> {
    let mut raw = empty_view();
    let mut view = Buffer::get(obj, &mut raw, true)?;
    f(view.as_mut_slice())
}
