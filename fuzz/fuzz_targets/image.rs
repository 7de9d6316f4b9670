//! The `image` target over libFuzzer's byte-level mutations; see `image_body.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "image_body.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
