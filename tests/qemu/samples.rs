//! The three sample images from QEMU's test suite (`../shared/samples/qemu/*.bz2`): the
//! prediction equals `qemu-img info` / `check`, and the bitmap sample's extents and hash agree
//! with QEMU.

use std::io::Read;

use parallels_image::qemu::{self, QemuCheck, QemuOutcome};

use crate::bitmaps::bitmaps_agree_at;
use crate::fixtures::needs;
use crate::harness::{compare_with_qemu, Img};

/// Decompresses sample `name` into `dir`.
fn sample(dir: &std::path::Path, samples: &std::path::Path, name: &str) -> Img {
    let f = std::fs::File::open(samples.join(format!("{name}.bz2"))).unwrap();
    let mut bytes = Vec::new();
    bzip2::read::BzDecoder::new(f).read_to_end(&mut bytes).unwrap();
    Img::write(dir, &format!("{name}.hds"), bytes)
}

#[test]
#[cfg_attr(
    any(prlimg_no_qemu_tools, prlimg_no_samples),
    ignore = "needs the QEMU tools and the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn samples_predicted_exactly() {
    let Some(samples) = needs::qemu_samples("samples_predicted_exactly") else {
        return;
    };
    if !needs::tools("samples_predicted_exactly", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["parallels-v1", "parallels-v2", "parallels-with-bitmap"] {
        let img = sample(dir.path(), &samples, name);
        let problems = compare_with_qemu(&img);
        assert!(problems.is_empty(), "{name}: {problems:#?}");
        let p = qemu::predict(&img.bytes.as_slice()).unwrap();
        let QemuCheck::Completes(c) = &p.check else {
            panic!("{name}: {:?}", p.check)
        };
        if name == "parallels-with-bitmap" {
            // Only the extension and the one bitmap cluster follow the (empty) data area.
            assert_eq!(
                p.info,
                QemuOutcome::Opens {
                    bitmaps: vec!["e4f2eed0-37fe-4539-b50b-85d2e7fd235f".into()]
                }
            );
            assert_eq!((c.corruptions, c.leaks, c.allocated_clusters), (0, 2, 0));
        } else {
            assert_eq!(p.info, QemuOutcome::Opens { bitmaps: vec![] });
            assert_eq!((c.corruptions, c.leaks, c.allocated_clusters), (0, 0, 4));
        }
    }
}

#[test]
#[cfg_attr(
    any(prlimg_no_qemu_tools, prlimg_no_samples),
    ignore = "needs the QEMU tools and the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn sample_bitmap_in_qemu() {
    let Some(samples) = needs::qemu_samples("sample_bitmap_in_qemu") else {
        return;
    };
    if !needs::tools("sample_bitmap_in_qemu", &["qemu-nbd", "nbdinfo", "qemu-storage-daemon"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path(), &samples, "parallels-with-bitmap");
    let l1 = bitmaps_agree_at("parallels-with-bitmap", dir.path(), &img);
    assert_eq!(l1, vec![vec![2048]]);
    let src = img.bytes.as_slice();
    let image = parallels_image::open(&src).unwrap();
    let b = image.bitmap_named("e4f2eed0-37fe-4539-b50b-85d2e7fd235f").unwrap();
    let k = 64 << 10;
    assert_eq!(
        b.dirty_extents().unwrap(),
        vec![(5 * k, 2 * k), (10 * k, 3 * k), (30 * k, k)]
    );
}
