//! Conformance of `parallels-image` with the real QEMU tools (QEMU 10.0.2 was used to write
//! `spec/qemu.md`). Every QEMU invocation is read-only and every image's bytes are checked
//! unchanged after it; only images QEMU itself created (without an extension) are written by
//! QEMU. Missing tools skip a test with a `SKIP:` line, or fail it under `CI=true`.

#[path = "../fixtures/mod.rs"]
mod fixtures;
mod harness;

mod bitmaps;
mod catalogue;
mod crash;
mod defects;
mod differential;
mod mutants;
mod ours_in_qemu;
mod props;
mod qemu_img_json;
mod qemu_in_ours;
mod refusals;
mod render;
mod repair;
mod samples;
mod verdicts;
mod versions;
