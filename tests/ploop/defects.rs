//! Every defect of the corrupt catalogue over the bases: each shape with each `inuse` and one
//! bitmap; three bitmaps on the "v2.1" bases (whose extension ploop reads) and one other; a
//! second seed on the "v2.1" bases with 64 KiB clusters: 1157 damaged images.

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::open;

use parallels_image::raw::header::INUSE_CLOSED;

use crate::corpus::{bases_with_inuse, set_inuse, INUSE};
use crate::fixtures::needs;
use crate::harness::{compare_stream, scratch};

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn every_defect_over_every_base_agrees_with_ploop() {
    let Some(bin) = needs::ploop_drivers("every_defect_over_every_base_agrees_with_ploop") else {
        return;
    };
    let dir = scratch();
    // Planned first (patches are small), made one at a time as they are compared.
    let mut plans = Vec::new();
    let mut closed = Vec::new();
    let mut not_applicable = 0;
    for (b, (base_name, inuse, mut bytes)) in bases_with_inuse().into_iter().enumerate() {
        // Defects are planned on the image closed with inuse 0 (the only one the crate's parser
        // takes for every value), then inuse is set back unless the defect wrote it.
        set_inuse(&mut bytes, INUSE_CLOSED);
        let image = open(&bytes).unwrap();
        let v21 = base_name.contains(INUSE[1].0);
        if base_name.ends_with("_3bm") && !v21 && !base_name.starts_with("v2c64k_ynot") {
            continue;
        }
        for (d, &defect) in DefectKind::ALL.iter().enumerate() {
            let one = [(b + d) as u64 % 5];
            let seeds: &[u64] = if v21 && base_name.contains("c64k") {
                &[0, 1]
            } else {
                &one
            };
            for &seed in seeds {
                match corrupt::plan(&image, defect, seed) {
                    Ok(patch) => {
                        let keep = patch
                            .writes
                            .iter()
                            .any(|(off, w)| *off < 48 && off + w.len() as u64 > 44);
                        let restore = (!keep).then_some(inuse);
                        plans.push((format!("{base_name}_{}_s{seed}", defect.name()), b, patch, restore));
                    }
                    Err(_) => not_applicable += 1,
                }
            }
        }
        drop(image);
        closed.push((b, bytes));
    }
    // Some defects need a shape a base lacks (v1-only, v2-only, several bitmaps); most apply.
    assert_eq!((plans.len(), not_applicable), (1157, 218));
    let closed: &[(usize, Vec<u8>)] = &closed;
    let images = plans.into_iter().map(|(name, b, patch, restore)| {
        let base = &closed[closed.partition_point(|c| c.0 < b)];
        assert_eq!(base.0, b);
        let mut v = base.1.clone();
        patch.apply_to_vec(&mut v);
        if let Some(inuse) = restore {
            set_inuse(&mut v, inuse);
        }
        (name, v)
    });
    assert_eq!(compare_stream(&bin, dir.path(), images), 1157);
}
