//! Integration tests of `parallels-image`, one module per concept.
//!
//! Rule tests are named after the rule of `spec/rules.md` they prove (`r17_…`); each builds a
//! valid image, breaks exactly one rule by patching bytes, and asserts the exact finding.

#[path = "../fixtures/mod.rs"]
mod fixtures;
mod helpers;

mod bat;
mod bitmap;
mod compact;
mod corrupt;
mod crafted;
mod extension;
mod fuzz_regressions;
mod header;
mod layers;
mod layout;
mod mutate;
mod outputs;
mod picture;
mod placement;
mod repair;
mod roundtrip;
mod samples;
mod spec;
mod threads;
