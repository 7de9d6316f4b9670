//! The `check` target with the structure-aware mutator (`parallels_image::mutate::Mutator`): most
//! mutations edit the image's structures and put the extension checksum right, so that runs
//! reach the feature walk and the bitmap loader; one in four is libFuzzer's own byte-level
//! mutation (which also turns non-images into images' neighbours). See `check_body.rs`.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target};

#[path = "check_body.rs"]
mod body;
#[path = "mutator.rs"]
mod mutator;

fuzz_target!(|data: &[u8]| body::run(data));

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    mutator::mutate(data, size, max_size, seed)
});
