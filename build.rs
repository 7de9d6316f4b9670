//! Marks the tests that need what this machine lacks as ignored, so that `cargo test` counts
//! them as "ignored" (with the reason) rather than as passed: the QEMU tools
//! (`prlimg_no_qemu_tools`), the sample images beside the checkout (`prlimg_no_samples`: QEMU's
//! and Parallels Desktop's),
//! Chromium for the HTML report's screenshot (`prlimg_no_chromium`), the ploop oracle's
//! drivers (`prlimg_no_ploop_oracle`, looked for where `PloopDrivers::default_dir` looks) and
//! the venv with libphdi and dissect.hypervisor (`prlimg_no_readers`).
//! Under `CI=true` nothing is ignored: the tests run and fail on what is missing (the run-time
//! half of this guard is tests/fixtures/needs.rs).
//! Nothing here affects the library itself.

use std::path::Path;

const TOOLS: [&str; 5] = ["qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo"];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The drivers the ploop tests run (`PloopDrivers::at` wants them all).
const PLOOP_DRIVERS: [&str; 2] = ["pcheck", "pmount_sim"];

/// Where `PloopDrivers::default_dir` looks: `$PLOOP_ORACLE_DIR/bin`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/ploop-oracle/bin`.
fn ploop_oracle_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    match std::env::var_os("PLOOP_ORACLE_DIR") {
        Some(d) => PathBuf::from(d).join("bin"),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"))
            .join("ploop-oracle/bin"),
    }
}

fn main() {
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_qemu_tools)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_samples)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_chromium)");
    println!("cargo:rustc-check-cfg=cfg(prlimg_no_ploop_oracle)");
    println!("cargo:rerun-if-env-changed=PLOOP_ORACLE_DIR");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
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
    let ploop = ploop_oracle_dir();
    if PLOOP_DRIVERS.iter().all(|d| ploop.join(d).is_file()) {
        for d in PLOOP_DRIVERS {
            println!("cargo:rerun-if-changed={}", ploop.join(d).display());
        }
    } else {
        println!("cargo:rustc-cfg=prlimg_no_ploop_oracle");
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
    // QEMU's test-suite samples and the Parallels Desktop ones.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    let dirs = ["qemu", "parallels-desktop"].map(|d| samples.join(d));
    if dirs.iter().all(|d| d.is_dir()) {
        for d in &dirs {
            println!("cargo:rerun-if-changed={}", d.display());
        }
    } else {
        println!("cargo:rustc-cfg=prlimg_no_samples");
    }
}
