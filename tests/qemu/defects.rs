//! Every defect of `DefectKind::ALL` applied to built images: `qemu::predict` says what
//! `qemu-img info` and `check` do with the damaged image.

use crate::fixtures::{bm, v2_plain, v2_two_bitmaps};
use parallels_image::corrupt::{self, DefectKind};
use parallels_image::{GuestData, ImageBuilder, Variant};

use crate::fixtures::needs;
use crate::harness::{compare_with_qemu, Img};

const MIB: u64 = 1 << 20;

pub(crate) fn bases() -> Vec<(&'static str, Vec<u8>)> {
    let b = |name, builder: ImageBuilder| (name, builder.to_vec().unwrap().0);
    vec![
        b("v2_ext", v2_two_bitmaps(&[])),
        b(
            "v1_ext_small_clusters",
            ImageBuilder::new(5 * MIB + 1536)
                .variant(Variant::V1)
                .cluster_size(512)
                .data(MIB, GuestData::Fill { len: 2048, byte: 0x11 })
                .bitmap(bm(3, 512, &[(0, 512), (4 * MIB + 512, 1024)])),
        ),
        b("v2_plain", v2_plain()),
        // Nothing after the BAT (the one shape bat-too-large-to-read takes).
        b("v2_empty", ImageBuilder::new(MIB).cluster_size(64 << 10)),
        b(
            "v1_plain",
            ImageBuilder::new(2 * MIB).variant(Variant::V1).cluster_size(4096).data(
                8192,
                GuestData::Fill {
                    len: 10_000,
                    byte: 0x22,
                },
            ),
        ),
    ]
}

#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn every_defect_predicted_exactly() {
    if !needs::tools("every_defect_predicted_exactly", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let mut untested = Vec::new();
    let bases = bases();
    for &defect in DefectKind::ALL {
        let mut planned = 0;
        for (base, bytes) in &bases {
            let src = bytes.as_slice();
            let image = parallels_image::open(&src).unwrap();
            for seed in [0u64, 1, 7] {
                let Ok(patch) = corrupt::plan(&image, defect, seed) else {
                    continue;
                };
                planned += 1;
                let mut damaged = bytes.clone();
                patch.apply_to_vec(&mut damaged);
                let img = Img::write(dir.path(), &format!("{defect}.{base}.{seed}.hds"), damaged);
                for p in compare_with_qemu(&img) {
                    problems.push(format!("{defect} on {base} seed {seed}: {p}"));
                }
            }
        }
        if planned == 0 {
            untested.push(defect);
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(untested.is_empty(), "defects no base image could take: {untested:?}");
}
