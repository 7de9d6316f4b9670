//! Marks the tests that need what this machine lacks as ignored, so that `cargo test` counts
//! them as "ignored" (with the reason) rather than as passed: the QEMU tools
//! (`prlimg_no_qemu_tools`), the sample images beside the checkout (`prlimg_no_samples`) and
//! Chromium for the HTML report's screenshot (`prlimg_no_chromium`), and the venv with libphdi
//! and dissect.hypervisor (`prlimg_no_readers`).
//! Under `CI=true` nothing is ignored: the tests run and fail on what is missing.
//! Nothing here affects the library itself.

use std::path::Path;

const TOOLS: [&str; 5] = ["qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo"];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn main() {
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_qemu_tools)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_samples)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_chromium)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_readers)");
    println!("cargo:rerun-if-env-changed=PRLIMG_READERS_VENV");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return;
    }
    if !TOOLS.iter().all(|t| on_path(t)) {
        println!("cargo:rustc-cfg=prlimg_no_qemu_tools");
    }
    if !on_path("chromium") {
        println!("cargo:rustc-cfg=prlimg_no_chromium");
    }
    // libphdi and dissect.hypervisor in the venv `.ci/run` makes (tests/readers).
    let venv = std::env::var_os("PRLIMG_READERS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/prlimg-readers-venv"));
    if venv.join("bin/python").is_file() {
        println!("cargo:rerun-if-changed={}", venv.join("bin/python").display());
    } else {
        println!("cargo:rustc-cfg=prlimg_no_readers");
    }
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/qemu");
    if samples.is_dir() {
        println!("cargo:rerun-if-changed={}", samples.display());
    } else {
        println!("cargo:rustc-cfg=prlimg_no_samples");
    }
}
