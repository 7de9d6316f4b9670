//! No image QEMU 10 refuses to open is graded clean (or non-canonical only) by this crate's
//! rules in strict mode. QEMU's verdict here is `qemu::predict`'s, which the other tests of this
//! binary compare with the real QEMU on the same images; this test needs no QEMU and runs
//! everywhere.

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::qemu::{self, QemuOutcome};
use parallels_image::{Error, Image, RuleMode, Severity};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::catalogue::cases;

/// Why QEMU refuses `bytes` and this crate grades it without a corruption, if it does.
fn contradiction(bytes: &[u8]) -> Option<String> {
    let pred = qemu::predict(&bytes).expect("predict on a slice");
    let refused = matches!(
        pred.info,
        QemuOutcome::Rejects { .. }
            | QemuOutcome::RejectsBatRead
            | QemuOutcome::NoImageSize { .. }
            | QemuOutcome::Aborts { .. }
            | QemuOutcome::Undefined { .. }
    );
    if !refused {
        return None;
    }
    let report = match Image::parse_with(&bytes, RuleMode::Strict) {
        // Refused by this crate too: a broken header, or not a Parallels image at all.
        Err(Error::Invalid(_) | Error::EmptyFile | Error::NotParallels { .. }) => return None,
        Err(e) => panic!("parse failed with {e}"),
        Ok(image) => parallels_image::validate(&image).expect("validates"),
    };
    (report.count(Severity::Corruption) == 0).then(|| format!("QEMU: {:?}; rules: {:?}", pred.info, report.findings))
}

#[test]
fn qemu_refusals_are_corruption() {
    let mut bad = Vec::new();
    // The oracle catalogue.
    for (_, name, bytes) in cases() {
        if let Some(why) = contradiction(&bytes) {
            bad.push(format!("catalogue {name}: {why}"));
        }
    }
    // Every defect on the defect test's bases.
    for (base, bytes) in crate::defects::bases() {
        let src = bytes.as_slice();
        let image = parallels_image::open(&src).unwrap();
        for &defect in DefectKind::ALL {
            for seed in [0u64, 1, 7] {
                let Ok(patch) = corrupt::plan(&image, defect, seed) else {
                    continue;
                };
                let mut damaged = bytes.clone();
                patch.apply_to_vec(&mut damaged);
                if let Some(why) = contradiction(&damaged) {
                    bad.push(format!("{defect} on {base} seed {seed}: {why}"));
                }
            }
        }
    }
    // Random mutations of the property test's bases (no QEMU run: many cases are cheap).
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        rng_seed: RngSeed::Fixed(0x00c1_ea11),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0usize..3,
        prop::collection::vec(crate::props::edit(), 1..4),
        any::<bool>(),
    );
    let mutated = std::cell::RefCell::new(Vec::new());
    runner
        .run(&strategy, |(which, edits, fix_md5)| {
            let bytes = crate::props::apply(&crate::props::bases()[which], &edits, fix_md5);
            if let Some(why) = contradiction(&bytes) {
                mutated
                    .borrow_mut()
                    .push(format!("mutation {edits:?} md5 {fix_md5}: {why}"));
            }
            Ok(())
        })
        .unwrap();
    bad.extend(mutated.into_inner());
    assert!(
        bad.is_empty(),
        "{} images QEMU refuses are not corrupt:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
