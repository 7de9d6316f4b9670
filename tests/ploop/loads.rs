//! Images made for ploop (`inuse` "v2.1", clusters ploop accepts) load in ploop's CBT loader,
//! and the bitmap words it prints equal this crate's serialized bitmap, for several
//! granularities and L1 shapes: clean chunks (L1 entry 0, not printed), all-dirty chunks
//! (entry 1, printed as `1`) and chunks stored in a cluster (printed word by word).

use parallels_image::raw::header::INUSE_CLOSED_V21;
use parallels_image::{
    open, ploop::predict_ploop, ploop::CbtOutcome, BitmapSpec, GuestData, Image, ImageBuilder, Variant,
};

use crate::corpus::{bm, KIB, MIB};
use crate::fixtures::needs;
use crate::harness::{observe, scratch};

const GIB: u64 = 1 << 30;

/// ploop's dump walks the bitmap in 1 MiB steps whatever the cluster size, and prints whole
/// 64-bit words of each step.
const DUMP_STEP: u64 = MIB;

/// What the dump must print for `spec` (the last bitmap of the image): per L1 index, nothing
/// for a clean chunk, `[1]` for an all-dirty one, else the chunk's words.
pub fn expected_words(image: &Image<'_>) -> Vec<(u32, Vec<u64>)> {
    let bitmaps = image.bitmaps();
    let b = bitmaps.last().unwrap();
    let bytes = b.serialized().unwrap();
    let mut left = b.granules().div_ceil(8);
    let mut out = Vec::new();
    for (i, entry) in b.l1().iter().enumerate() {
        let step = DUMP_STEP.min(left);
        let start = i as u64 * DUMP_STEP;
        left -= step;
        match entry {
            0 => {}
            1 => out.push((i as u32, vec![1])),
            _ => {
                let words = (start..start + step / 8 * 8)
                    .step_by(8)
                    .map(|o| u64::from_le_bytes(bytes[o as usize..o as usize + 8].try_into().unwrap()))
                    .collect();
                out.push((i as u32, words));
            }
        }
    }
    out
}

fn case(
    name: &str,
    variant: Variant,
    cluster: u64,
    disk: u64,
    bitmaps: &[BitmapSpec],
    l1_shape: &[u64],
) -> (String, Vec<u8>, Vec<u64>) {
    let mut b = ImageBuilder::new(disk)
        .variant(variant)
        .cluster_size(cluster)
        .inuse(INUSE_CLOSED_V21)
        .data(disk / 3, GuestData::Fill { len: 3000, byte: 0x77 });
    for s in bitmaps {
        b = b.bitmap(s.clone());
    }
    let bytes = b.to_vec().unwrap().0;
    (name.to_string(), bytes, l1_shape.to_vec())
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn created_images_load_in_ploop_with_our_bits() {
    let Some(bin) = needs::ploop_drivers("created_images_load_in_ploop_with_our_bits") else {
        return;
    };
    let dir = scratch();
    // l1_shape: which L1 entries are 0, 1 or a cluster (2 stands for "a cluster offset").
    let cases = [
        // Three 4 GiB chunks at one-sector granularity: stored, all dirty, clean.
        case(
            "c1m_g512_three_chunks",
            Variant::V2,
            MIB,
            12 * GIB,
            &[bm(
                1,
                512,
                &[(0, 4096), (GIB + 512, 65536), (3 * GIB, 1), (4 * GIB, 4 * GIB)],
            )],
            &[2, 1, 0],
        ),
        // One chunk of 128 KiB at 64 KiB granularity, and a second bitmap kept instead of it.
        case(
            "c1m_g64k_two_bitmaps",
            Variant::V2,
            MIB,
            64 * GIB,
            &[
                bm(2, 64 * KIB, &[(0, 1)]),
                bm(
                    3,
                    64 * KIB,
                    &[
                        (5 * 65536, 2 * 65536),
                        (10 * 65536, 3 * 65536),
                        (30 * 65536, 1),
                        (63 * GIB, GIB),
                    ],
                ),
            ],
            &[2],
        ),
        // 64 KiB clusters, 4 KiB granularity, v1 magic: one stored chunk of 32 KiB.
        case(
            "v1_c64k_g4k",
            Variant::V1,
            64 * KIB,
            GIB,
            &[bm(4, 4 * KIB, &[(4096, 8192), (700 * MIB, 3 * MIB + 5)])],
            &[2],
        ),
        // An odd disk size: the last word is partly past the last granule.
        case(
            "c64k_g1m_odd_size",
            Variant::V2,
            64 * KIB,
            100 * MIB + 512,
            &[bm(5, MIB, &[(0, MIB), (37 * MIB, 1), (100 * MIB, 512)])],
            &[2],
        ),
        // Two 4 GiB chunks at 512-byte granularity: clean then stored.
        case(
            "c1m_g512_clean_then_stored",
            Variant::V2,
            MIB,
            8 * GIB,
            &[bm(6, 512, &[(7 * GIB + 12345, 99999)])],
            &[0, 2],
        ),
        // A whole bitmap dirty: every entry 1, no bitmap cluster.
        case(
            "c1m_all_dirty",
            Variant::V2,
            MIB,
            9 * GIB,
            &[bm(7, 512, &[(0, 9 * GIB)])],
            &[1, 1, 1],
        ),
    ];
    for (name, bytes, shape) in cases {
        let path = dir.path().join(format!("{name}.hds"));
        std::fs::write(&path, &bytes).unwrap();
        let image = open(&bytes).unwrap();
        let bitmaps = image.bitmaps();
        let last = bitmaps.last().unwrap();
        let got_shape: Vec<u64> = last.l1().iter().map(|e| e.min(2)).collect();
        assert_eq!(got_shape, shape, "{name}: the L1 shape the case is meant to have");

        let o = observe(&bin, &path);
        assert_eq!(o.cbt.outcome, CbtOutcome::Loads, "{name}: {o:?}");
        assert_eq!(o.cbt.bitmap, Some(last.name()), "{name}");
        assert_eq!(o.cbt_words, expected_words(&image), "{name}: the words ploop loaded");
        assert_eq!(o.check.rc, Some(0), "{name}: {:?}", o.check.messages);
        let p = predict_ploop(&bytes, &path.display().to_string()).unwrap();
        assert_eq!(p.cbt.bitmap, o.cbt.bitmap, "{name}");
    }
}
