//! Tests of disk bundles (`spec/bundles.md`): reading descriptors, the `D` rules, guest data
//! through chains and split storages, writing bundles, and the real readers (ploop, QEMU).

mod common;
#[path = "../fixtures/mod.rs"]
mod fixtures;

mod chains;
mod cli;
mod convert;
mod hostile;
mod oracles;
mod picture;
mod repair;
mod rules;
mod samples;
