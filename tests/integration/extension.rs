//! Extension cluster and feature-list rules R21–R31, and lenient mode.

use parallels_image::raw::extension::EXT_MAGIC;
use parallels_image::raw::feature::{FEATURE_DIRTY_BITMAP, FEATURE_FLAG_NECESSARY, FEATURE_FLAG_TRANSIT};
use parallels_image::raw::FeatureRecord;
use parallels_image::Rule;
use parallels_image::{GuestData, ImageBuilder};
use parallels_image::{Image, Region, RuleMode, Severity, Violation};

use crate::helpers::*;

/// 1 MiB in 64 KiB clusters with one all-clean bitmap: the extension cluster is at 64 KiB (the
/// first data cluster), and it is the last cluster of the file.
fn base() -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[])),
    );
    assert_eq!(layout.ext_offset, Some(65536));
    assert_eq!(layout.l1, vec![vec![0]]);
    assert_eq!(img.len(), 131072);
    assert_clean(&img);
    img
}

const EXT: u64 = 65536;
/// The first feature record.
const F0: u64 = EXT + 24;
/// The second feature record, after a bitmap record with one L1 entry (40 bytes of data).
const F1: u64 = EXT + 88;

#[test]
fn r21_ext_off_unaligned() {
    let mut img = base();
    let cluster = img[EXT as usize..].to_vec();
    img.resize(66048 + 65536, 0);
    img[66048..].copy_from_slice(&cluster);
    img[EXT as usize..66048].fill(0);
    put_u64(&mut img, 56, 129);
    assert_only(
        &img,
        Violation::ExtOffUnaligned {
            ext_off: 129,
            offset: 66048,
            cluster_size: 65536,
        },
        Rule::R21,
        Severity::NonCanonical,
    );
    let image = parallels_image::open(&img).unwrap();
    assert_eq!(image.bitmaps().len(), 1);
}

#[test]
fn r22_ext_past_eof() {
    // Cut inside the cluster: the missing bytes read as zeros, so magic and MD5 still hold.
    let mut img = base();
    img.truncate((EXT + 4096) as usize);
    assert_only(
        &img,
        Violation::ExtPastEof {
            offset: EXT,
            end: EXT + 65536,
            file_len: EXT + 4096,
        },
        Rule::R22,
        Severity::Corruption,
    );
}

#[test]
fn r22_ext_wholly_past_eof_has_no_magic() {
    let mut img = base();
    img.truncate(EXT as usize);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::ExtPastEof {
                    offset: EXT,
                    end: EXT + 65536,
                    file_len: EXT,
                },
                Severity::Corruption,
            ),
            (Violation::ExtBadMagic { offset: EXT, found: 0 }, Severity::Corruption),
        ],
    );
}

#[test]
fn r23_ext_overlaps_data_cluster() {
    let (mut img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 100, byte: 7 })
            .bitmap(spec(ID_A, 65536, &[])),
    );
    assert_eq!(layout.bat[0], 1);
    assert_eq!(layout.ext_offset, Some(131072));
    assert_clean(&img);
    put_u32(&mut img, 68, 2);
    assert_only(
        &img,
        Violation::ExtOverlap {
            offset: 131072,
            with: Region::DataCluster { bat_index: 1 },
        },
        Rule::R23,
        Severity::Corruption,
    );
}

#[test]
fn r23_ext_overlaps_header_and_bat() {
    // 512-byte clusters and 1000 BAT entries (ending at byte 4064): put the extension cluster at
    // sector 4, inside the BAT.
    let (mut img, layout) = build(
        &ImageBuilder::new(1000 * 512)
            .cluster_size(512)
            .bitmap(spec(ID_A, 512, &[])),
    );
    let ext = layout.ext_offset.unwrap();
    assert_eq!(ext, 4096);
    assert_clean(&img);
    let cluster = img[ext as usize..(ext + 512) as usize].to_vec();
    img[2048..2560].copy_from_slice(&cluster);
    put_u64(&mut img, 56, 4);
    let f = findings(&img, RuleMode::Strict);
    let overlap = Violation::ExtOverlap {
        offset: 2048,
        with: Region::HeaderAndBat,
    };
    assert_eq!(overlap.rule(), Rule::R23);
    assert!(
        f.iter()
            .any(|f| f.violation == overlap && f.severity == Severity::Corruption),
        "{f:?}"
    );
    // The cluster's bytes, read as BAT entries 496..624, point past the end of the file (R18)
    // or into the BAT (R16); the old extension cluster at 4096 is no longer referenced (R20).
    let report = parallels_image::validate(&Image::parse(&img).unwrap()).unwrap();
    assert_eq!(report.rules(), [Rule::R18, Rule::R16, Rule::R23, Rule::R20], "{f:?}");
    assert_eq!(f.last().unwrap().violation, Violation::Leak { offset: 4096, len: 512 });
}

/// Bytes of [`base`]'s extension cluster overwritten, each case alone: one finding of its rule
/// and severity. The MD5 is made right again after every case but the magic's (which it does not
/// cover).
#[test]
fn r24_r28_r31_extension_bytes_flagged_alone() {
    type Case = (&'static str, Vec<(u64, Vec<u8>)>, Violation, Rule, Severity);
    let mut cases: Vec<Case> = vec![(
        "r24 bad magic",
        vec![(EXT, vec![(EXT_MAGIC as u8) ^ 1])],
        Violation::ExtBadMagic {
            offset: EXT,
            found: EXT_MAGIC ^ 1,
        },
        Rule::R24,
        Severity::Corruption,
    )];
    for (name, data_size) in [("r28 data_size 65489", 65489u32), ("r28 data_size u32::MAX", u32::MAX)] {
        let v = Violation::FeatureDataOverflow {
            index: 0,
            offset: F0,
            data_size,
            remaining: 65536 - 48,
        };
        let at = vec![(F0 + 16, data_size.to_le_bytes().to_vec())];
        cases.push((name, at, v, Rule::R28, Severity::Corruption));
    }
    let padding = |offset, found| Violation::NonZeroPadding { offset, found };
    cases.extend([
        (
            "r31 non-zero tail",
            vec![(EXT + 65535, vec![0x5a])],
            padding(EXT + 65535, 0x5a),
            Rule::R31,
            Severity::NonCanonical,
        ),
        // The validator reads the tail only up to the last non-zero piece the hash saw: the
        // first of two bytes, 20 KiB apart, is the one reported.
        (
            "r31 first of two non-zero bytes in the tail",
            vec![(EXT + 20_000, vec![0x11]), (EXT + 40_000, vec![0x22])],
            padding(EXT + 20_000, 0x11),
            Rule::R31,
            Severity::NonCanonical,
        ),
        // The end record follows the bitmap record; its unused field is not zero.
        (
            "r31 non-zero end record",
            vec![(F1 + 20, vec![1])],
            padding(F1 + 20, 1),
            Rule::R31,
            Severity::NonCanonical,
        ),
    ]);
    assert_eq!(cases.len(), 6);
    for (name, pokes, v, rule, severity) in cases {
        let mut img = base();
        for (at, bytes) in pokes {
            img[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        if rule != Rule::R24 {
            refresh_md5(&mut img, EXT, CS);
        }
        assert_only_named(name, &img, v, rule, severity);
    }
}

#[test]
fn r25_ext_bad_checksum() {
    let mut img = base();
    let expected: [u8; 16] = img[(EXT + 8) as usize..(EXT + 24) as usize].try_into().unwrap();
    img[(EXT + 8) as usize] ^= 0xff;
    let mut found = expected;
    found[0] ^= 0xff;
    assert_only(
        &img,
        Violation::ExtBadChecksum {
            offset: EXT,
            found,
            expected,
        },
        Rule::R25,
        Severity::Corruption,
    );
}

#[test]
fn r25_checksum_covers_the_padding() {
    let mut img = base();
    let expected: [u8; 16] = img[(EXT + 8) as usize..(EXT + 24) as usize].try_into().unwrap();
    img[(EXT + 65535) as usize] = 1;
    let f = findings(&img, RuleMode::Strict);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(matches!(
        f[0].violation,
        Violation::ExtBadChecksum { offset: EXT, found, expected: e } if found == expected && e != expected
    ));
    assert_eq!(
        f[1].violation,
        Violation::NonZeroPadding {
            offset: EXT + 65535,
            found: 1
        }
    );
}

/// 512-byte clusters, a disk of `chunks * 4096` sectors and a bitmap of granularity 1 sector:
/// the bitmap needs `chunks` L1 entries (4096 bits per cluster).
fn small_cluster_bitmap(chunks: u32) -> (Vec<u8>, u64) {
    let sectors = u64::from(chunks) * 4096;
    let l1 = vec![0u64; chunks as usize];
    image_with_ext(sectors * 512, 512, &[bitmap_rec(sectors, ID_A, 1, &l1)])
}

#[test]
fn r26_feature_truncated() {
    // 24 + 24 + (32 + 52 * 8) = 496: 16 bytes are left, too few for a feature header.
    let (img, ext) = small_cluster_bitmap(52);
    assert_only(
        &img,
        Violation::FeatureTruncated {
            index: 1,
            offset: ext + 496,
            remaining: 16,
        },
        Rule::R26,
        Severity::Corruption,
    );
}

#[test]
fn r26_end_record_that_fits_is_fine() {
    // 24 + 24 + (32 + 51 * 8) = 488: the end record fills the cluster exactly.
    let (img, _) = small_cluster_bitmap(51);
    assert_clean(&img);
}

#[test]
fn r27_feature_flags() {
    for flags in [FEATURE_FLAG_NECESSARY, FEATURE_FLAG_TRANSIT, 1 << 63] {
        let data = bitmap_data(2048, ID_A, 128, 1, &[0]);
        let (img, layout) = build(
            &ImageBuilder::new(1 << 20)
                .cluster_size(CS)
                .feature(FeatureRecord::opaque(FEATURE_DIRTY_BITMAP, flags, data)),
        );
        assert_eq!(layout.ext_offset, Some(EXT));
        let v = Violation::FeatureFlags {
            index: 0,
            offset: F0,
            magic: FEATURE_DIRTY_BITMAP,
            flags,
        };
        assert_only(&img, v.clone(), Rule::R27, Severity::Corruption);
        // Lenient mode keeps the record as opaque; a feature with flags is not a bitmap.
        assert_findings(&img, RuleMode::Lenient, &[(v, Severity::Note)]);
        let image = parallels_image::open_with(&img, RuleMode::Lenient).unwrap();
        assert!(image.bitmaps().is_empty());
    }
}

#[test]
fn r28_data_that_ends_at_the_cluster_end_fits() {
    // 65488 bytes fill the cluster: no overflow, but then there is no room for an end record.
    let rec = Rec {
        magic: 0x77,
        flags: 0,
        data_size: 65488,
        data: Vec::new(),
    };
    let (img, ext) = image_with_ext(1 << 20, CS, &[rec]);
    assert_eq!(ext, EXT);
    assert_findings(
        &img,
        RuleMode::Lenient,
        &[
            (
                Violation::UnknownFeature {
                    index: 0,
                    offset: F0,
                    magic: 0x77,
                },
                Severity::Note,
            ),
            (
                Violation::MissingEndRecord {
                    offset: EXT + 65536,
                    count: 1,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn r28_flags_are_reported_before_the_overflow() {
    let rec = Rec {
        magic: FEATURE_DIRTY_BITMAP,
        flags: 1,
        data_size: 70000,
        data: Vec::new(),
    };
    let (img, _) = image_with_ext(1 << 20, CS, &[rec]);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::FeatureFlags {
                    index: 0,
                    offset: F0,
                    magic: FEATURE_DIRTY_BITMAP,
                    flags: 1,
                },
                Severity::Corruption,
            ),
            (
                Violation::FeatureDataOverflow {
                    index: 0,
                    offset: F0,
                    data_size: 70000,
                    remaining: 65488,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn r29_unknown_feature() {
    let magic = 0x1234_5678_9abc_def0;
    let (img, _) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[(0, 1)]))
            .feature(FeatureRecord::opaque(magic, 0, vec![1, 2, 3])),
    );
    let v = Violation::UnknownFeature {
        index: 1,
        offset: F1,
        magic,
    };
    assert_only(&img, v.clone(), Rule::R29, Severity::Corruption);
    // Lenient: a note, the image opens and its bitmap is still there.
    assert_findings(&img, RuleMode::Lenient, &[(v, Severity::Note)]);
    let image = parallels_image::open_with(&img, RuleMode::Lenient).unwrap();
    let b = image.bitmaps();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].dirty_extents().unwrap(), vec![(0, 65536)]);
}

#[test]
fn r29_unknown_feature_with_flags_lenient() {
    let (img, _) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .feature(FeatureRecord::opaque(0x42, FEATURE_FLAG_NECESSARY, vec![])),
    );
    let flags = Violation::FeatureFlags {
        index: 0,
        offset: F0,
        magic: 0x42,
        flags: 1,
    };
    let unknown = Violation::UnknownFeature {
        index: 0,
        offset: F0,
        magic: 0x42,
    };
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (flags.clone(), Severity::Corruption),
            (unknown.clone(), Severity::Corruption),
        ],
    );
    assert_findings(
        &img,
        RuleMode::Lenient,
        &[(flags, Severity::Note), (unknown, Severity::Note)],
    );
}

#[test]
fn r30_missing_end_record() {
    // 24 + 24 + (32 + 54 * 8) = 512: the bitmap record fills the cluster.
    let (img, ext) = small_cluster_bitmap(54);
    assert_only(
        &img,
        Violation::MissingEndRecord {
            offset: ext + 512,
            count: 1,
        },
        Rule::R30,
        Severity::Corruption,
    );
}

#[test]
fn r27_r28_end_record_is_a_feature_header() {
    // QEMU refuses an end record with flags, or with a data_size past the cluster: so do R27
    // and R28 (R31 names the first non-zero byte as well).
    let mut img = base();
    img[(F1 + 8) as usize] = 1;
    refresh_md5(&mut img, EXT, CS);
    let flags = Violation::FeatureFlags {
        index: 1,
        offset: F1,
        magic: 0,
        flags: 1,
    };
    let padding = |at| Violation::NonZeroPadding {
        offset: at,
        found: 0xff,
    };
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::NonZeroPadding {
                    offset: F1 + 8,
                    found: 1,
                },
                Severity::NonCanonical,
            ),
            (flags, Severity::Corruption),
        ],
    );
    let mut img = base();
    img[(F1 + 16) as usize..(F1 + 20) as usize].fill(0xff);
    refresh_md5(&mut img, EXT, CS);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (padding(F1 + 16), Severity::NonCanonical),
            (
                Violation::FeatureDataOverflow {
                    index: 1,
                    offset: F1,
                    data_size: u32::MAX,
                    remaining: EXT + CS - F1 - 24,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn r31_non_zero_alignment_gap() {
    let (mut img, _) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .feature(FeatureRecord::opaque(0x42, 0, vec![1, 2, 3])),
    );
    // The record's 3 bytes end at 51; the next record starts at 56.
    img[(EXT + 53) as usize] = 0xee;
    refresh_md5(&mut img, EXT, CS);
    assert_findings(
        &img,
        RuleMode::Lenient,
        &[
            (
                Violation::UnknownFeature {
                    index: 0,
                    offset: F0,
                    magic: 0x42,
                },
                Severity::Note,
            ),
            (
                Violation::NonZeroPadding {
                    offset: EXT + 53,
                    found: 0xee,
                },
                Severity::NonCanonical,
            ),
        ],
    );
}

#[test]
fn lenient_mode_changes_only_feature_findings() {
    // Header problems keep their severity in lenient mode.
    let mut img = base();
    put_u32(&mut img, 44, 0x746f_6e59);
    assert_findings(&img, RuleMode::Lenient, &[(Violation::Unclean, Severity::Corruption)]);
}
