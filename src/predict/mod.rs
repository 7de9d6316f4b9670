//! Predictions: what QEMU, ploop and the forensic readers (libphdi, dissect.hypervisor) do with
//! an image or a bundle, computed from the bytes without running them.

pub mod ploop;
pub mod qemu;
pub mod readers;
