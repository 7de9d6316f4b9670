//! The base images the suite damages and mutates.

use parallels_image::raw::header::{INUSE_CLOSED, INUSE_CLOSED_V21, INUSE_OPEN};
use parallels_image::{BitmapSpec, GuestData, ImageBuilder, Variant};

pub const MIB: u64 = 1 << 20;
pub const KIB: u64 = 1 << 10;
/// `inuse` as Parallels Desktop 17 writes it.
pub const INUSE_PD17: u32 = u32::from_le_bytes(*b"pd17");

/// The `inuse` values ploop tells apart, with a name each.
pub const INUSE: [(&str, u32); 4] = [
    ("inuse0", INUSE_CLOSED),
    ("v21", INUSE_CLOSED_V21),
    ("ynot", INUSE_OPEN),
    ("pd17", INUSE_PD17),
];

pub fn bm(id: u8, granularity: u64, extents: &[(u64, u64)]) -> BitmapSpec {
    let mut uuid = [id; 16];
    uuid[0] = 0xa0 ^ id;
    uuid[15] = id.wrapping_mul(7);
    BitmapSpec {
        id: uuid,
        granularity,
        extents: extents.to_vec(),
    }
}

/// One base shape: magic, cluster size, disk size.
pub const SHAPES: [(&str, Variant, u64, u64); 4] = [
    ("v2c1m", Variant::V2, MIB, 16 * MIB),
    ("v2c64k", Variant::V2, 64 * KIB, 4 * MIB),
    ("v1c64k", Variant::V1, 64 * KIB, 4 * MIB),
    ("v1c1m", Variant::V1, MIB, 8 * MIB),
];

/// A base image: `shape` with data at the start and the middle, `bitmaps` bitmaps (1 or 3, the
/// last with its own granularity) and `inuse`.
pub fn base(shape: usize, inuse: u32, bitmaps: usize) -> Vec<u8> {
    let (_, variant, cluster, disk) = SHAPES[shape];
    let mut b = ImageBuilder::new(disk)
        .variant(variant)
        .cluster_size(cluster)
        .inuse(inuse)
        .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
        .data(
            disk / 2,
            GuestData::Fill {
                len: 70_000,
                byte: 0xbb,
            },
        );
    let specs = [
        bm(1, 64 * KIB, &[(0, 1), (disk / 4, 300_000)]),
        bm(2, 512, &[(0, disk)]),
        bm(3, 128 * KIB, &[(disk - 1, 1)]),
    ];
    for s in &specs[3 - bitmaps..] {
        b = b.bitmap(s.clone());
    }
    b.to_vec().unwrap().0
}

/// Every base: each shape x each `inuse` x one or three bitmaps, with its name and `inuse`.
pub fn bases_with_inuse() -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (s, shape) in SHAPES.iter().enumerate() {
        for (iname, inuse) in INUSE {
            for n in [1, 3] {
                out.push((format!("{}_{iname}_{n}bm", shape.0), inuse, base(s, inuse, n)));
            }
        }
    }
    out
}

/// Every base with its name.
pub fn bases() -> Vec<(String, Vec<u8>)> {
    bases_with_inuse().into_iter().map(|(n, _, b)| (n, b)).collect()
}

/// Sets the header's `inuse`.
pub fn set_inuse(bytes: &mut [u8], inuse: u32) {
    bytes[44..48].copy_from_slice(&inuse.to_le_bytes());
}
