//! The custom mutator of the `_mutator` targets.

use libfuzzer_sys::fuzzer_mutate;
use parallels_image::{mutate::MutateOptions, mutate::Mutator};

/// Replaces `data[..size]` with a variant of at most `max_size` bytes and returns its length:
/// a structure-aware one (1–3 edits, checksum put right) three times in four when the input's
/// header passes R1–R6, otherwise libFuzzer's byte-level mutation.
pub fn mutate(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    if seed % 4 != 0 {
        let options = MutateOptions {
            max_len: Some(max_size as u64),
            ..MutateOptions::default()
        };
        if let Ok(m) = Mutator::new(&data[..size], options) {
            let v = m.mutant(u64::from(seed)).bytes;
            if v.len() <= max_size {
                data[..v.len()].copy_from_slice(&v);
                return v.len();
            }
        }
    }
    fuzzer_mutate(data, size, max_size)
}
