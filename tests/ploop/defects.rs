//! Every defect of the corrupt catalogue over the bases: each shape with each `inuse` and one
//! bitmap; three bitmaps on the "v2.1" bases (whose extension ploop reads) and one other; a
//! second seed on the "v2.1" bases with 64 KiB clusters: 1157 damaged images.

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::open;

use parallels_image::raw::header::INUSE_CLOSED;

use crate::corpus::{bases_with_inuse, set_inuse, INUSE};
use crate::harness::{compare_all, oracle, scratch};

#[test]
fn every_defect_over_every_base_agrees_with_ploop() {
    let Some(bin) = oracle("every_defect_over_every_base_agrees_with_ploop") else {
        return;
    };
    let dir = scratch();
    let mut images = Vec::new();
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
                        let mut v = bytes.clone();
                        patch.apply_to_vec(&mut v);
                        if !patch
                            .writes
                            .iter()
                            .any(|(off, w)| *off < 48 && off + w.len() as u64 > 44)
                        {
                            set_inuse(&mut v, inuse);
                        }
                        images.push((format!("{base_name}_{}_s{seed}", defect.name()), v));
                    }
                    Err(_) => not_applicable += 1,
                }
            }
        }
    }
    // Some defects need a shape a base lacks (v1-only, v2-only, several bitmaps); most apply.
    assert_eq!((images.len(), not_applicable), (1157, 218));
    compare_all(&bin, dir.path(), images);
}
