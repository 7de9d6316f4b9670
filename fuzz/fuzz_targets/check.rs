//! The `check` target over libFuzzer's byte-level mutations; see `check_body.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "check_body.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
