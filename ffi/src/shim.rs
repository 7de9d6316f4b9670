//! The C entry points: pointers to slices and back, nothing else.

#![allow(unsafe_code)]

use std::ffi::{c_uint, c_void};

/// AFL++'s mutator state: its seed stream and the buffer the last variant is in (AFL++ reads it
/// until the next call).
struct AflState {
    seed: u64,
    out: Vec<u8>,
}

/// libFuzzer's custom mutator: replaces `data[..size]` by a variant of at most `max_size` bytes
/// and returns its length.
///
/// # Safety
/// `data` must be valid for reads of `size` bytes and writes of `max_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn LLVMFuzzerCustomMutator(data: *mut u8, size: usize, max_size: usize, seed: c_uint) -> usize {
    if data.is_null() {
        return 0;
    }
    // SAFETY: the caller gives `size` readable bytes at `data`.
    let input = unsafe { std::slice::from_raw_parts(data, size) };
    let v = crate::mutate(input, u64::from(seed), max_size);
    // SAFETY: the caller gives `max_size` writable bytes at `data`; `v` is at most that long and
    // no longer borrows `data`.
    let out = unsafe { std::slice::from_raw_parts_mut(data, max_size) };
    out[..v.len()].copy_from_slice(&v);
    v.len()
}

/// AFL++: makes the mutator's state.
#[no_mangle]
pub extern "C" fn afl_custom_init(_afl: *mut c_void, seed: c_uint) -> *mut c_void {
    Box::into_raw(Box::new(AflState {
        seed: u64::from(seed),
        out: Vec::new(),
    }))
    .cast()
}

/// AFL++: a variant of `buf[..buf_size]` of at most `max_size` bytes, left in the state's buffer
/// (`*out_buf` points at it until the next call); returns its length. `add_buf` is not used.
///
/// # Safety
/// `data` must come from [`afl_custom_init`]; `buf` must be valid for reads of `buf_size` bytes;
/// `out_buf` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn afl_custom_fuzz(
    data: *mut c_void,
    buf: *mut u8,
    buf_size: usize,
    out_buf: *mut *mut u8,
    _add_buf: *mut u8,
    _add_buf_size: usize,
    max_size: usize,
) -> usize {
    if data.is_null() || out_buf.is_null() || (buf.is_null() && buf_size > 0) {
        return 0;
    }
    // SAFETY: `data` is the state `afl_custom_init` made, used by one thread at a time.
    let state = unsafe { &mut *data.cast::<AflState>() };
    let input: &[u8] = if buf_size == 0 {
        &[]
    } else {
        // SAFETY: the caller gives `buf_size` readable bytes at `buf`.
        unsafe { std::slice::from_raw_parts(buf, buf_size) }
    };
    state.out = crate::mutate(input, state.seed, max_size);
    state.seed = state.seed.wrapping_add(1);
    // SAFETY: the caller gives a writable `out_buf`.
    unsafe { *out_buf = state.out.as_mut_ptr() };
    state.out.len()
}

/// AFL++: frees the state.
///
/// # Safety
/// `data` must come from [`afl_custom_init`] and not be used again.
#[no_mangle]
pub unsafe extern "C" fn afl_custom_deinit(data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` is the box `afl_custom_init` leaked, freed once.
        drop(unsafe { Box::from_raw(data.cast::<AflState>()) });
    }
}
