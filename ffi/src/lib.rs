//! The structure-aware mutator of `parallels-image` for C fuzzers: libFuzzer's
//! `LLVMFuzzerCustomMutator` and AFL++'s custom-mutator entry points (`afl_custom_init`,
//! `afl_custom_fuzz`, `afl_custom_deinit`), built as a static and a shared library.
//!
//! ```text
//!  cc harness.c libparallels_image_mutator.a -lpthread -ldl -lm     # libFuzzer: -fsanitize=fuzzer
//!  AFL_CUSTOM_MUTATOR_LIBRARY=libparallels_image_mutator.so afl-fuzz ...
//! ```
//!
//! Everything is safe Rust ([`mutate`]) but the shim that turns C pointers into slices
//! (`shim`, the only module allowed `unsafe`).

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::sync::OnceLock;

use parallels_image::{mutate::MutateOptions, mutate::Mutator, BitmapSpec, GuestData, ImageBuilder};

mod shim;

/// A small valid image with a bitmap (1 MiB disk, 4 KiB clusters, 3 data clusters, a bitmap of
/// 512-byte granules with one dirty run and two L1 entries): what an input that is not a
/// Parallels image is replaced with, so that the fuzzer is led back to the format.
pub fn fallback() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        ImageBuilder::new(32 << 20)
            .cluster_size(4096)
            .data(0, GuestData::Fill { len: 8192, byte: 0xaa })
            .data(20 << 20, GuestData::Fill { len: 4096, byte: 0x55 })
            .bitmap(BitmapSpec {
                id: *b"prlimg-mutator\0\x01",
                granularity: 512,
                extents: vec![(0, 64 << 10), (17 << 20, 4096)],
            })
            .to_vec()
            .expect("the fallback image builds")
            .0
    })
}

/// The variant of `input` for `seed`, at most `max_size` bytes: the structure-aware mutator's
/// (1–3 edits, the extension checksum put right) when `input`'s header passes the checks every
/// reader makes first; otherwise a variant of [`fallback`]. When even that is longer than
/// `max_size`, `input` cut to `max_size`.
pub fn mutate(input: &[u8], seed: u64, max_size: usize) -> Vec<u8> {
    let options = MutateOptions {
        max_len: Some(max_size as u64),
        ..MutateOptions::default()
    };
    let base = if Mutator::new(input, options.clone()).is_ok() {
        input
    } else {
        fallback()
    };
    if base.len() > max_size {
        return input[..input.len().min(max_size)].to_vec();
    }
    let m = Mutator::new(base, options).expect("the base's header was checked");
    let v = m.mutant(seed).bytes;
    if v.len() > max_size {
        return base.to_vec();
    }
    v
}
