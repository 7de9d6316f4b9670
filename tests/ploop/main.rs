//! Conformance of `parallels-image`'s ploop prediction ([`parallels_image::ploop::predict_ploop`])
//! with the real ploop library, run through the oracle drivers that
//! `../shared/oracles/ploop/build.sh` builds (`pcheck`, `pmount_sim`): on built images of many
//! shapes and `inuse` values, on every defect of the corrupt catalogue over several bases, on
//! random field mutations, on QEMU-written images and on the shared samples. The read-only
//! drivers run on the image (its bytes checked unchanged), the mount driver on a copy.
//! A missing oracle skips each test with a `SKIP:` line, or fails it under `CI=true`.

#[path = "../fixtures/mod.rs"]
mod fixtures;
mod harness;

mod corpus;
mod defects;
mod edits;
mod loads;
mod mutations;
mod repair;
mod shapes;
mod shared;
mod short;
mod slack;
