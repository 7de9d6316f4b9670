//! The structure-aware mutator's variants in the real `qemu-img`: on a sample of 100 variants
//! of a valid image with bitmaps, `qemu-img info` and `check` do what `qemu::predict` says.

use parallels_image::qemu;
use parallels_image::{mutate::MutateOptions, mutate::Mutator};

use crate::fixtures::needs;
use crate::fixtures::with_bitmaps;
use crate::harness::{compare_with_qemu, Img};

#[test]
fn qemu_does_what_is_predicted_for_mutator_variants() {
    if !needs::tools("qemu_does_what_is_predicted_for_mutator_variants", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = with_bitmaps();
    let m = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let (mut mismatches, mut compared) = (Vec::new(), 0);
    for seed in 0..100 {
        let v = m.mutant(seed);
        // Where QEMU reads past its buffer there is nothing exact to compare.
        compared += usize::from(qemu::predict(&v.bytes).unwrap().info.exit_code().is_some());
        let img = Img::write(dir.path(), &format!("m{seed}.hds"), v.bytes);
        for d in compare_with_qemu(&img) {
            mismatches.push(format!("seed {seed} {:?}: {d}", v.edits));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(
        compared >= 90,
        "only {compared} of 100 variants had an exact prediction"
    );
}
