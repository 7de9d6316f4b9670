//! Images crafted byte by byte here, independently of the crate's writer and raw types: every
//! field is written as explicit little-endian bytes and the MD5 comes from the `md-5` crate
//! directly. Then hostile inputs, which must give the exact error without hanging or allocating
//! more than the input justifies.

use md5::{Digest, Md5};
use parallels_image::{Error, Image, Region, RuleMode, Severity, Violation};

use crate::helpers::assert_findings;

const V1: &[u8; 16] = b"WithoutFreeSpace";
const V2: &[u8; 16] = b"WithouFreSpacExt";
const EXT_MAGIC: u64 = 0xAB23_4CEF_23DC_EA87;
const BITMAP_MAGIC: u64 = 0x2038_5FAE_252C_B34A;

/// A file being written by hand.
struct Raw(Vec<u8>);

impl Raw {
    fn new(len: usize) -> Raw {
        Raw(vec![0; len])
    }
    fn le32(&mut self, at: usize, v: u32) -> &mut Self {
        for i in 0..4 {
            self.0[at + i] = (v >> (8 * i)) as u8;
        }
        self
    }
    fn le64(&mut self, at: usize, v: u64) -> &mut Self {
        for i in 0..8 {
            self.0[at + i] = (v >> (8 * i)) as u8;
        }
        self
    }
    fn put(&mut self, at: usize, b: &[u8]) -> &mut Self {
        self.0[at..at + b.len()].copy_from_slice(b);
        self
    }
    fn fill(&mut self, at: usize, len: usize, b: u8) -> &mut Self {
        self.0[at..at + len].fill(b);
        self
    }
    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        magic: &[u8; 16],
        tracks: u32,
        bat_entries: u32,
        nb_sectors: u64,
        data_off: u32,
        ext_off: u64,
    ) -> &mut Self {
        self.put(0, magic)
            .le32(16, 2)
            .le32(20, 16)
            .le32(24, (nb_sectors / 512) as u32)
            .le32(28, tracks)
            .le32(32, bat_entries)
            .le64(36, nb_sectors)
            .le32(44, 0)
            .le32(48, data_off)
            .le32(52, 0)
            .le64(56, ext_off)
    }
    /// A feature record header at `at`.
    fn feature(&mut self, at: usize, magic: u64, flags: u64, data_size: u32) -> &mut Self {
        self.le64(at, magic)
            .le64(at + 8, flags)
            .le32(at + 16, data_size)
            .le32(at + 20, 0)
    }
    /// Bitmap feature data at `at`: size, id, granularity, l1_size, L1.
    fn bitmap(&mut self, at: usize, size: u64, id: &[u8; 16], gran: u32, l1: &[u64]) -> &mut Self {
        self.le64(at, size)
            .put(at + 8, id)
            .le32(at + 24, gran)
            .le32(at + 28, l1.len() as u32);
        for (i, e) in l1.iter().enumerate() {
            self.le64(at + 32 + 8 * i, *e);
        }
        self
    }
    /// Extension magic and MD5 of bytes [24, cs) of the cluster at `at`.
    fn seal(&mut self, at: usize, cs: usize) -> &mut Self {
        let sum: [u8; 16] = Md5::digest(&self.0[at + 24..at + cs]).into();
        self.le64(at, EXT_MAGIC).put(at + 8, &sum)
    }
}

const ID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// v1, 1 MiB in 64 KiB clusters (BAT in sectors): guest cluster 0 at sector 128 (0xa1), guest
/// cluster 3 at sector 256 (0xa4), extension at sector 384, one bitmap of 64 KiB granules whose
/// bits (granules 0, 2 and 15) are in the cluster at sector 512.
fn v1_image() -> Raw {
    let mut r = Raw::new(5 * 65536);
    r.header(V1, 128, 16, 2048, 128, 384)
        .le32(64, 128)
        .le32(64 + 12, 256)
        .fill(65536, 65536, 0xa1)
        .fill(131072, 65536, 0xa4)
        .feature(196608 + 24, BITMAP_MAGIC, 0, 40)
        .bitmap(196608 + 48, 2048, &ID, 128, &[512])
        .put(262144, &[0b0000_0101, 0b1000_0000])
        .seal(196608, 65536);
    r
}

#[test]
fn crafted_v1_with_bitmap_is_valid() {
    let r = v1_image();
    assert_findings(&r.0, RuleMode::Strict, &[]);
    let image = parallels_image::open(&r.0).unwrap();
    assert_eq!(image.cluster_offset(0), Some(65536));
    assert_eq!(image.cluster_offset(3), Some(131072));
    let mut buf = vec![0u8; 4 * 65536];
    image.read_guest(0, &mut buf).unwrap();
    assert!(buf[..65536].iter().all(|&b| b == 0xa1));
    assert!(buf[65536..196608].iter().all(|&b| b == 0));
    assert!(buf[196608..].iter().all(|&b| b == 0xa4));
    let b = image
        .bitmap_named("01020304-0506-0708-090a-0b0c0d0e0f10")
        .expect("the bitmap");
    assert_eq!(b.granularity_bytes(), 65536);
    assert_eq!(
        b.dirty_extents().unwrap(),
        vec![(0, 65536), (131072, 65536), (983040, 65536)]
    );
}

#[test]
fn crafted_v1_duplicate_bat_entry() {
    let mut r = v1_image();
    r.le32(64 + 12, 128);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(
            Violation::BatEntryDuplicate {
                index: 3,
                entry: 128,
                offset: 65536,
                first: 0,
            },
            Severity::Corruption,
        )],
    );
}

#[test]
fn crafted_v1_truncated_before_the_bitmap_cluster() {
    let mut r = v1_image();
    r.0.truncate(262144);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(
            Violation::L1EntryPastEof {
                feature: 0,
                index: 0,
                entry: 512,
                offset: 262144,
                file_len: 262144,
            },
            Severity::Corruption,
        )],
    );
    // Read as QEMU reads it: zeros, so no dirty granule.
    let image = Image::parse(&r.0).unwrap();
    assert_eq!(image.bitmaps()[0].dirty_extents().unwrap(), vec![]);
}

#[test]
fn crafted_v1_md5_over_the_wrong_range() {
    // A writer that hashes the whole cluster instead of bytes [24, cs).
    let mut r = v1_image();
    r.fill(196608 + 8, 16, 0);
    let wrong: [u8; 16] = Md5::digest(&r.0[196608..262144]).into();
    r.put(196608 + 8, &wrong);
    let right: [u8; 16] = Md5::digest(&r.0[196608 + 24..262144]).into();
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(
            Violation::ExtBadChecksum {
                offset: 196608,
                found: wrong,
                expected: right,
            },
            Severity::Corruption,
        )],
    );
}

const UNKNOWN: u64 = 0x0123_4567_89ab_cdef;

/// v2 with 1536-byte clusters (tracks 3, not a power of two, as QEMU allows): 24 clusters
/// (72 sectors), BAT ends at 160 so data starts at cluster 1. Guest cluster 2 at cluster 1
/// (0x5c). Extension at cluster 2 (sector 6): bitmap A (1 sector granules, 72 of them, L1 = [1]:
/// all dirty), bitmap B (4 sector granules, 18 of them; bits at cluster 3 = sector 9: granules
/// 1 and 17), then an unknown feature with 5 bytes of data.
fn v2_image() -> Raw {
    let e = 3072;
    let mut r = Raw::new(4 * 1536);
    r.header(V2, 3, 24, 72, 3, 6)
        .le32(64 + 8, 1)
        .fill(1536, 1536, 0x5c)
        .feature(e + 24, BITMAP_MAGIC, 0, 40)
        .bitmap(e + 48, 72, &[0xa0; 16], 1, &[1])
        .feature(e + 88, BITMAP_MAGIC, 0, 40)
        .bitmap(e + 112, 72, &[0xb0; 16], 4, &[9])
        .feature(e + 152, UNKNOWN, 0, 5)
        .put(e + 176, b"hello")
        .put(4608, &[0b0000_0010, 0, 0b0000_0010])
        .seal(e, 1536);
    r
}

#[test]
fn crafted_v2_unknown_feature_strict_and_lenient() {
    let r = v2_image();
    let v = Violation::UnknownFeature {
        index: 2,
        offset: 3072 + 152,
        magic: UNKNOWN,
    };
    assert_findings(&r.0, RuleMode::Strict, &[(v.clone(), Severity::Corruption)]);
    assert_findings(&r.0, RuleMode::Lenient, &[(v, Severity::Note)]);
    let image = parallels_image::open_with(&r.0, RuleMode::Lenient).unwrap();
    assert_eq!(image.header().cluster_size(), 1536);
    let mut buf = vec![0u8; 1536 * 3];
    image.read_guest(0, &mut buf).unwrap();
    assert!(buf[..3072].iter().all(|&b| b == 0) && buf[3072..].iter().all(|&b| b == 0x5c));
    let a = image.bitmap_named("a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0").unwrap();
    let b = image.bitmap_named("b0b0b0b0-b0b0-b0b0-b0b0-b0b0b0b0b0b0").unwrap();
    assert_eq!(a.dirty_extents().unwrap(), vec![(0, 36864)]);
    assert_eq!(b.granules(), 18);
    assert_eq!(b.dirty_extents().unwrap(), vec![(2048, 2048), (34816, 2048)]);
}

#[test]
fn crafted_v2_without_the_unknown_feature_is_valid() {
    let mut r = v2_image();
    r.fill(3072 + 152, 24 + 5, 0).seal(3072, 1536);
    assert_findings(&r.0, RuleMode::Strict, &[]);
}

#[test]
fn crafted_v2_granularity_zero() {
    // QEMU aborts on this image.
    let mut r = v2_image();
    r.fill(3072 + 152, 24 + 5, 0).le32(3072 + 112 + 24, 0).seal(3072, 1536);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(
            Violation::BitmapGranularityInvalid {
                index: 1,
                offset: 3072 + 88,
                found: 0,
            },
            Severity::Corruption,
        )],
    );
}

#[test]
fn crafted_v2_feature_flags() {
    let mut r = v2_image();
    r.fill(3072 + 152, 24 + 5, 0).le64(3072 + 88 + 8, 2).seal(3072, 1536);
    let v = Violation::FeatureFlags {
        index: 1,
        offset: 3072 + 88,
        magic: BITMAP_MAGIC,
        flags: 2,
    };
    // A record with flags is not read as a bitmap, so B's bits cluster is not referenced.
    let leak = (
        Violation::Leak {
            offset: 4608,
            len: 1536,
        },
        Severity::Leak,
    );
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(v.clone(), Severity::Corruption), leak.clone()],
    );
    assert_findings(&r.0, RuleMode::Lenient, &[(v, Severity::Note), leak]);
    assert_eq!(
        parallels_image::open_with(&r.0, RuleMode::Lenient)
            .unwrap()
            .bitmaps()
            .len(),
        1
    );
}

// Hostile input.

#[test]
fn hostile_huge_bat_in_a_64_byte_file() {
    let mut r = Raw::new(64);
    r.header(V2, 1, 536_870_911, 0, 4_194_305, 0);
    let v = Violation::DataOffPastEof {
        data_start: 2_147_484_160,
        file_len: 64,
    };
    // The largest BAT R5 allows is more than QEMU reads in one request (R48).
    let too_large = Violation::BatTooLargeToRead {
        bat_entries: 536_870_911,
        max: 536_869_872,
    };
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[(too_large, Severity::Corruption), (v, Severity::Corruption)],
    );
    let image = Image::parse(&r.0).unwrap();
    assert!(image.bat().is_empty());
    assert_eq!(image.bat_entry(536_870_910), 0);
    let mut buf = [0xffu8; 1024];
    image.read_guest(1 << 30, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 1024]);
}

#[test]
fn hostile_huge_cluster_and_extension_past_eof() {
    let cs = 4_186_127u64 * 512;
    let mut r = Raw::new(64);
    r.header(V2, 4_186_127, 1, 4_186_127, 4_186_127, 2 * 4_186_127);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[
            (
                Violation::DataOffPastEof {
                    data_start: cs,
                    file_len: 64,
                },
                Severity::Corruption,
            ),
            (
                Violation::ExtPastEof {
                    offset: 2 * cs,
                    end: 3 * cs,
                    file_len: 64,
                },
                Severity::Corruption,
            ),
            (
                Violation::ExtBadMagic {
                    offset: 2 * cs,
                    found: 0,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn hostile_largest_ext_off() {
    let ext_off = (i64::MAX as u64 >> 9) - 1;
    let mut r = Raw::new(512);
    r.header(V2, 1, 0, 0, 1, ext_off);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[
            (
                Violation::ExtPastEof {
                    offset: ext_off * 512,
                    end: ext_off * 512 + 512,
                    file_len: 512,
                },
                Severity::Corruption,
            ),
            (
                Violation::ExtBadMagic {
                    offset: ext_off * 512,
                    found: 0,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn hostile_l1_entries_all_pointing_at_one_cluster() {
    // 512-byte clusters, 1-sector granules: 4096 granules per chunk, 50 chunks, 204800 sectors.
    // The BAT (204800 entries) ends at 819264; data at sector 1601; extension at sector 1601,
    // one bitmap cluster at sector 1602 that all 50 L1 entries point at.
    let mut r = Raw::new(820_736);
    r.header(V2, 1, 204_800, 204_800, 1601, 1601)
        .feature(819_712 + 24, BITMAP_MAGIC, 0, 32 + 400)
        .bitmap(819_712 + 48, 204_800, &ID, 1, &[1602; 50])
        .fill(820_224, 512, 0xff)
        .seal(819_712, 512);
    let want: Vec<(Violation, Severity)> = (1..50u32)
        .map(|i| {
            (
                Violation::L1EntryOverlap {
                    feature: 0,
                    index: i,
                    entry: 1602,
                    offset: 820_224,
                    with: Region::BitmapCluster {
                        feature: 0,
                        l1_index: i - 1,
                    },
                },
                Severity::Corruption,
            )
        })
        .collect();
    assert_findings(&r.0, RuleMode::Strict, &want);
    // Decoding refuses rather than reading the one cluster 50 times.
    let image = Image::parse(&r.0).unwrap();
    match image.bitmaps()[0].dirty_extents() {
        Err(Error::Invalid(v)) => assert_eq!(v, want[0].0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_l1_size_far_beyond_the_record() {
    let mut r = v1_image();
    r.le32(196608 + 48 + 28, u32::MAX).seal(196608, 65536);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[
            (
                Violation::BitmapDataTooShort {
                    index: 0,
                    offset: 196608 + 24,
                    data_size: 40,
                    expected: 32 + 8 * u64::from(u32::MAX),
                },
                Severity::Corruption,
            ),
            (
                Violation::BitmapL1Size {
                    index: 0,
                    offset: 196608 + 24,
                    found: u32::MAX,
                    expected: 1,
                    cluster_bits: 524288,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn hostile_cluster_full_of_empty_features() {
    // 2729 empty records of 24 bytes fill [24, 65520); 16 bytes are left for the next header.
    let mut r = v1_image();
    r.fill(196608, 65536, 0);
    for i in 0..2729 {
        r.feature(196608 + 24 + 24 * i, UNKNOWN, 0, 0);
    }
    r.seal(196608, 65536);
    let mut want: Vec<(Violation, Severity)> = (0..2729usize)
        .map(|i| {
            (
                Violation::UnknownFeature {
                    index: i,
                    offset: 196608 + 24 + 24 * i as u64,
                    magic: UNKNOWN,
                },
                Severity::Note,
            )
        })
        .collect();
    want.push((
        Violation::FeatureTruncated {
            index: 2729,
            offset: 196608 + 65520,
            remaining: 16,
        },
        Severity::Corruption,
    ));
    // The bitmap cluster at sector 512 is no longer referenced.
    want.push((
        Violation::Leak {
            offset: 262144,
            len: 65536,
        },
        Severity::Leak,
    ));
    assert_findings(&r.0, RuleMode::Lenient, &want);
}

#[test]
fn hostile_feature_data_size_max() {
    let mut r = v1_image();
    r.le32(196608 + 24 + 16, u32::MAX).seal(196608, 65536);
    assert_findings(
        &r.0,
        RuleMode::Strict,
        &[
            (
                Violation::FeatureDataOverflow {
                    index: 0,
                    offset: 196608 + 24,
                    data_size: u32::MAX,
                    remaining: 65536 - 48,
                },
                Severity::Corruption,
            ),
            (
                Violation::Leak {
                    offset: 262144,
                    len: 65536,
                },
                Severity::Leak,
            ),
        ],
    );
}
