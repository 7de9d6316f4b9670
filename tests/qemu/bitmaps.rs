//! The crate's bitmaps as QEMU loads them: extents over NBD (`qemu-nbd -r -B` + `nbdinfo`),
//! names, granularity, dirty count and the SHA-256 of the serialized bits over QMP
//! (`qemu-storage-daemon`, read-only nodes).

use crate::fixtures::bm;
use parallels_image::qemu::{self, QemuOutcome};
use parallels_image::raw::bitmap::{L1_CLEAN, L1_DIRTY};
use parallels_image::Variant;
use parallels_image::{GuestData, ImageBuilder};
use sha2::{Digest, Sha256};

use crate::fixtures::needs;
use crate::harness::{hex, nbd_dirty_map, nbd_server, with_gaps, Img, Qsd};

const MIB: u64 = 1 << 20;

/// Checks every bitmap of `bytes` against qemu-nbd/nbdinfo and qemu-storage-daemon, and
/// returns the L1 tables seen (so callers can assert which entry kinds were covered).
pub fn bitmaps_agree(name: &str, bytes: Vec<u8>) -> Vec<Vec<u64>> {
    let dir = tempfile::tempdir().unwrap();
    let img = Img::write(dir.path(), &format!("{name}.hds"), bytes);
    bitmaps_agree_at(name, dir.path(), &img)
}

/// As [`bitmaps_agree`] for an image already on disk in `dir`.
pub fn bitmaps_agree_at(name: &str, dir: &std::path::Path, img: &Img) -> Vec<Vec<u64>> {
    let src = img.bytes.as_slice();
    let image = parallels_image::open(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bitmaps = image.bitmaps();
    let names: Vec<String> = bitmaps.iter().map(|b| b.name()).collect();
    assert!(!names.is_empty(), "{name}: no bitmaps");
    let disk = image.header().nb_sectors * 512;

    // The prediction: the image opens with these bitmaps, in record order.
    let pred = qemu::predict(&src).unwrap();
    assert_eq!(pred.info, QemuOutcome::Opens { bitmaps: names.clone() }, "{name}");

    // QMP: names (newest first), granularity, count of dirty bytes (whole granules), SHA-256.
    let mut qsd = Qsd::start(dir, img).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut want = Vec::new();
    for b in bitmaps.iter().rev() {
        let mut granules = 0u64;
        b.for_each_dirty_run(|_, n| granules += n).unwrap();
        want.push((b.name(), b.granularity_bytes(), granules * b.granularity_bytes()));
    }
    assert_eq!(qsd.bitmaps(), want, "{name}: query-named-block-nodes");
    for b in &bitmaps {
        let ours = hex(&Sha256::digest(b.serialized().unwrap()));
        assert_eq!(qsd.sha256(&b.name()), ours, "{name}: sha256 of {}", b.name());
    }
    qsd.finish(img);

    // NBD: the dirty extents with the clean gaps.
    let server = nbd_server(dir, img, &names);
    for b in &bitmaps {
        let ours = with_gaps(&b.dirty_extents().unwrap(), disk);
        assert_eq!(
            nbd_dirty_map(&server, img, &b.name()),
            ours,
            "{name}: extents of {}",
            b.name()
        );
    }
    drop(server);
    img.assert_unchanged("qemu-nbd");
    bitmaps.iter().map(|b| b.l1().iter().collect()).collect()
}

fn kinds(l1: &[u64]) -> (bool, bool, bool) {
    (
        l1.contains(&L1_CLEAN),
        l1.contains(&L1_DIRTY),
        l1.iter().any(|&e| e > L1_DIRTY),
    )
}

fn tools(test: &str) -> bool {
    needs::tools(test, &["qemu-nbd", "nbdinfo", "qemu-storage-daemon"])
}

/// A labelled case: the image, and what its L1 tables hold (the entry kinds the case covers).
struct Case {
    name: &'static str,
    image: fn() -> Vec<u8>,
    l1: fn(&str, &[Vec<u64>]),
}

fn cases() -> [Case; 5] {
    [
        Case {
            name: "one_bitmap_64k_granules",
            image: one_bitmap_64k_granules,
            l1: |name, l1| {
                assert_eq!(l1.len(), 1, "{name}");
                assert!(l1[0][0] > L1_DIRTY, "{name}: a bitmap cluster");
            },
        },
        Case {
            name: "several_bitmaps_several_chunks",
            image: several_bitmaps_several_chunks,
            l1: |name, l1| {
                assert_eq!(l1[0].len(), 4, "{name}: four chunks");
                assert_eq!(
                    kinds(&l1[0]),
                    (true, true, true),
                    "{name}: L1 0, 1 and clusters: {:?}",
                    l1[0]
                );
                assert_eq!(l1[2], vec![L1_DIRTY], "{name}");
            },
        },
        Case {
            name: "last_partial_chunk",
            image: last_partial_chunk,
            l1: |name, l1| {
                assert_eq!(l1[0].len(), 3, "{name}");
                assert_eq!(l1[0][2], L1_DIRTY, "{name}: last partial chunk all dirty");
                assert_eq!(l1[0][..2], [L1_CLEAN, L1_CLEAN], "{name}");
                assert!(
                    l1[1][2] > L1_DIRTY && l1[1][0] > L1_DIRTY && l1[1][1] == L1_CLEAN,
                    "{name}: {:?}",
                    l1[1]
                );
            },
        },
        Case {
            name: "cluster_1536_bitmap",
            image: cluster_1536_bitmap,
            l1: |name, l1| assert_eq!(l1[0].len(), 2, "{name}"),
        },
        Case {
            name: "garbage_tail_bits_in_last_chunk",
            image: garbage_tail_bits_in_last_chunk,
            l1: |_, _| {},
        },
    ]
}

/// Every case's bitmaps as QEMU loads them ([`bitmaps_agree`]), then its L1 tables.
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn bitmaps_agree_with_qemu() {
    if !tools("bitmaps_agree_with_qemu") {
        return;
    }
    for case in cases() {
        let l1 = bitmaps_agree(case.name, (case.image)());
        (case.l1)(case.name, &l1);
    }
}

/// One bitmap, 64 KiB granules, one L1 entry pointing at a bitmap cluster.
fn one_bitmap_64k_granules() -> Vec<u8> {
    ImageBuilder::new(10 * MIB)
        .cluster_size(64 << 10)
        .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
        .bitmap(bm(0x01, 64 << 10, &[(0, 1), (327_680, 131_072), (983_040, 65_536)]))
        .to_vec()
        .unwrap()
        .0
}

/// Several bitmaps in one image with 4 KiB clusters (a chunk covers 32768 granules): 512-byte
/// granules spread over four chunks holding all three L1 kinds (0, 1, a cluster), and
/// bitmaps of 4 KiB, 64 KiB and 1 MiB granules.
fn several_bitmaps_several_chunks() -> Vec<u8> {
    let chunk = 32_768 * 512; // bytes covered by one L1 entry at 512-byte granules
    ImageBuilder::new(64 * MIB)
        .variant(Variant::V2)
        .cluster_size(4096)
        .data(MIB, GuestData::Fill { len: 8192, byte: 0x42 })
        .bitmap(bm(
            0xa1,
            512,
            &[
                (4096, 10_000),
                (chunk, chunk),
                (3 * chunk + 512, 1),
                (4 * chunk - 512, 512),
            ],
        ))
        .bitmap(bm(0xa2, 4096, &[(0, 4096), (40 * MIB, 3 * MIB + 1)]))
        .bitmap(bm(0xa3, 64 << 10, &[(0, 64 * MIB)]))
        .bitmap(bm(0xa4, MIB, &[(MIB - 1, 2), (63 * MIB, MIB)]))
        .to_vec()
        .unwrap()
        .0
}

/// 512-byte clusters (4096 granules per chunk) on an odd-sized v1 disk: the last chunk is
/// partial, once all dirty (L1 = 1) and once mixed.
fn last_partial_chunk() -> Vec<u8> {
    let size = 5 * MIB + 1536; // 10243 sectors: chunks of 4096, 4096, 2051 granules
    let tail = 2 * 4096 * 512;
    ImageBuilder::new(size)
        .variant(Variant::V1)
        .cluster_size(512)
        .data(0, GuestData::Fill { len: 512, byte: 1 })
        .bitmap(bm(0xb1, 512, &[(tail, size - tail)]))
        .bitmap(bm(0xb2, 512, &[(0, 512), (tail + 512, 1024), (size - 512, 512)]))
        .bitmap(bm(0xb3, 4096, &[(size - 1, 1)]))
        .to_vec()
        .unwrap()
        .0
}

/// A non-power-of-two cluster size (1536 bytes) with a bitmap whose chunks are 12288 granules.
fn cluster_1536_bitmap() -> Vec<u8> {
    ImageBuilder::new(8 * MIB)
        .variant(Variant::V2)
        .cluster_size(1536)
        .bitmap(bm(0xc1, 512, &[(0, 3 * MIB), (6 * MIB + 7, 1000)]))
        .to_vec()
        .unwrap()
        .0
}

/// Bits past the last granule in a bitmap cluster (ploop may leave them): QEMU's dirty count
/// and extents ignore them; its debug hash, like `Bitmap::serialized`, includes the rest of
/// their 64-bit word. The image is asserted to hold them before QEMU sees it.
fn garbage_tail_bits_in_last_chunk() -> Vec<u8> {
    let size = 5 * MIB + 1536; // 10243 granules of 512 bytes: the last chunk holds 2051
    let (mut bytes, layout) = ImageBuilder::new(size)
        .variant(Variant::V2)
        .cluster_size(512)
        .bitmap(bm(0xd1, 512, &[(2 * 4096 * 512 + 512, 512)]))
        .to_vec()
        .unwrap();
    let last = layout.l1[0][2];
    assert!(last > L1_DIRTY);
    let at = (last * 512) as usize + 2051 / 8; // byte holding granules 2048..2055
    bytes[at] |= 0xf8;
    bytes[at + 1..at + 8].fill(0xff);
    let src = bytes.as_slice();
    let image = parallels_image::open(&src).unwrap();
    let b = &image.bitmaps()[0];
    assert_eq!(b.trailing_bits().unwrap(), 5 + 7 * 8);
    // The serialized last word (granules 10240..10303) keeps those bits: 10240..10242 clean,
    // 10243..10247 garbage, the next 7 bytes all set.
    let ser = b.serialized().unwrap();
    assert_eq!(ser.len() as u64, 10243u64.div_ceil(64) * 8);
    assert_eq!(&ser[ser.len() - 8..], &[0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    bytes
}
