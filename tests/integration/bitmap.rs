//! Dirty-bitmap rules R32–R42, L1 semantics and decoding.

use parallels_image::raw::bitmap::DirtyBitmapFeature;
use parallels_image::raw::feature::FEATURE_DIRTY_BITMAP;
use parallels_image::raw::FeatureRecord;
use parallels_image::Rule;
use parallels_image::{Error, Image, Region, RuleMode, Severity, Violation};
use parallels_image::{GuestData, ImageBuilder};

use crate::helpers::*;

const EXT: u64 = 65536;
/// The first feature record.
const F0: u64 = EXT + 24;
/// The first record's first L1 entry.
const F0_L1: u64 = F0 + 24 + 32;
/// The second record, after a bitmap with one L1 entry.
const F1: u64 = EXT + 88;

/// 1 MiB in 64 KiB clusters (2048 sectors), no data, one bitmap of 64 KiB granules (16 granules)
/// whose first granule is dirty: extension at 64 KiB, bitmap cluster at 128 KiB (sector 256).
fn partial() -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[(0, 65536)])),
    );
    assert_eq!(layout.ext_offset, Some(EXT));
    assert_eq!(layout.l1, vec![vec![256]]);
    assert_eq!(img.len(), 196608);
    assert_eq!(img[131072], 0x01);
    assert_clean(&img);
    img
}

/// The same with an all-clean bitmap of `granularity` bytes (L1 = [0]); the file ends with the
/// extension cluster.
fn clean(granularity: u64) -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, granularity, &[])),
    );
    assert_eq!(layout.ext_offset, Some(EXT));
    assert_eq!(layout.l1, vec![vec![0]]);
    assert_eq!(img.len(), 131072);
    assert_clean(&img);
    img
}

/// An image of 1 MiB in 64 KiB clusters whose only feature is `feature`.
fn with_feature(feature: DirtyBitmapFeature) -> Vec<u8> {
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .feature(FeatureRecord::dirty_bitmap(feature)),
    );
    assert_eq!(layout.ext_offset, Some(EXT));
    img
}

fn set_l1(img: &mut [u8], at: u64, entry: u64) {
    put_u64(img, at, entry);
    refresh_md5(img, EXT, CS);
}

#[test]
fn clean_report_with_data_and_several_bitmaps() {
    let pattern: Vec<u8> = (0..70000u32).map(|i| (i % 251) as u8).collect();
    let (img, layout) = build(
        &ImageBuilder::new(16 << 20)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
            .data(5 << 20, GuestData::Bytes(pattern.clone()))
            .bitmap(spec(ID_A, 65536, &[(131072, 65536)]))
            .bitmap(spec(ID_B, 512, &[(0, 1), (1 << 20, 1 << 20), ((16 << 20) - 512, 512)]))
            .bitmap(spec(ID_C, 1 << 20, &[(0, 16 << 20)]))
            .bitmap(spec([0xdd; 16], 65536, &[])),
    );
    assert_eq!(layout.bat[0], 1);
    assert_eq!(layout.bat[80], 2);
    assert_eq!(layout.bat[81], 3);
    assert_eq!(layout.l1[2], vec![1]);
    assert_eq!(layout.l1[3], vec![0]);
    let report = parallels_image::validate(&Image::parse(&img).unwrap()).unwrap();
    assert!(report.findings.is_empty(), "{report:?}");
    assert!(report.is_clean());
    let image = parallels_image::open(&img).unwrap();
    let b = image.bitmaps();
    assert_eq!(b.len(), 4);
    assert_eq!(b[0].name(), "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa");
    assert_eq!(b[1].name(), "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb");
    assert_eq!(
        [0, 1, 2, 3].map(|i| b[i].granularity_bytes()),
        [65536, 512, 1 << 20, 65536]
    );
    assert_eq!(b[0].dirty_extents().unwrap(), vec![(131072, 65536)]);
    assert_eq!(
        b[1].dirty_extents().unwrap(),
        vec![(0, 512), (1 << 20, 1 << 20), ((16 << 20) - 512, 512)]
    );
    assert_eq!(b[2].dirty_extents().unwrap(), vec![(0, 16 << 20)]);
    assert_eq!(b[3].dirty_extents().unwrap(), vec![]);
    assert_eq!(b[1].dirty_bytes().unwrap(), 1024 + (1 << 20));
    // 256 granules: 32 serialized bytes, granule 2 set.
    let mut ser = vec![0u8; 32];
    ser[0] = 0x04;
    assert_eq!(b[0].serialized().unwrap(), ser);
    assert_eq!(
        image
            .bitmap_named("cccccccc-cccc-cccc-cccc-cccccccccccc")
            .unwrap()
            .feature,
        2
    );
    let mut buf = vec![0u8; pattern.len()];
    image.read_guest(5 << 20, &mut buf).unwrap();
    assert_eq!(buf, pattern);
    let mut buf = vec![0u8; 8192];
    image.read_guest(0, &mut buf).unwrap();
    assert!(buf[..4096].iter().all(|&x| x == 0xaa) && buf[4096..].iter().all(|&x| x == 0));
}

#[test]
fn l1_markers_and_multi_chunk_bitmap() {
    // 64 MiB, 4 KiB clusters, 512-byte granules: 131072 granules, 32768 per chunk, 4 chunks.
    let (img, layout) = build(&ImageBuilder::new(64 << 20).cluster_size(4096).bitmap(spec(
        ID_A,
        512,
        &[(0, 16 << 20), ((32 << 20) + 512, 1024)],
    )));
    let ext = layout.ext_offset.unwrap();
    assert_eq!(ext, 69632);
    // Chunk 0 all dirty (1), chunks 1 and 3 clean (0), chunk 2 in a cluster after the extension.
    assert_eq!(layout.l1, vec![vec![1, 0, (ext + 4096) / 512, 0]]);
    assert_clean(&img);
    let bits = &img[(ext + 4096) as usize..(ext + 8192) as usize];
    // Granules 65537 and 65538 of the disk: bits 1 and 2 of chunk 2, LSB first.
    assert_eq!(bits[0], 0b0000_0110);
    assert!(bits[1..].iter().all(|&b| b == 0));
    let image = parallels_image::open(&img).unwrap();
    let b = image.bitmap_named("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa").unwrap();
    assert_eq!(b.granules(), 131072);
    assert_eq!(b.expected_l1_size(), 4);
    assert_eq!(
        b.dirty_extents().unwrap(),
        vec![(0, 16 << 20), ((32 << 20) + 512, 1024)]
    );
}

#[test]
fn r32_bitmap_data_shorter_than_its_header() {
    let data = bitmap_data(2048, ID_A, 128, 1, &[0])[..16].to_vec();
    let (img, ext) = image_with_ext(1 << 20, CS, &[Rec::new(FEATURE_DIRTY_BITMAP, 0, data)]);
    assert_eq!(ext, EXT);
    assert_only(
        &img,
        Violation::BitmapDataTooShort {
            index: 0,
            offset: F0,
            data_size: 16,
            expected: 32,
        },
        Rule::R32,
        Severity::Corruption,
    );
    assert!(Image::parse(&img).unwrap().bitmaps().is_empty());
}

#[test]
fn r32_bitmap_data_shorter_than_its_l1_table() {
    let data = bitmap_data(2048, ID_A, 128, 1, &[]);
    let (img, _) = image_with_ext(1 << 20, CS, &[Rec::new(FEATURE_DIRTY_BITMAP, 0, data)]);
    assert_only(
        &img,
        Violation::BitmapDataTooShort {
            index: 0,
            offset: F0,
            data_size: 32,
            expected: 40,
        },
        Rule::R32,
        Severity::Corruption,
    );
}

#[test]
fn r33_bitmap_extra_data() {
    let mut f = DirtyBitmapFeature::new(2048, ID_A, 128, vec![0]);
    f.extra = vec![0; 8];
    let img = with_feature(f);
    assert_only(
        &img,
        Violation::BitmapExtraData {
            index: 0,
            offset: F0,
            data_size: 48,
            expected: 40,
        },
        Rule::R33,
        Severity::NonCanonical,
    );
}

#[test]
fn r34_bitmap_size_mismatch() {
    for found in [2047u64, 2049, 0, u64::MAX] {
        let img = with_feature(DirtyBitmapFeature::new(found, ID_A, 128, vec![0]));
        assert_only(
            &img,
            Violation::BitmapSizeMismatch {
                index: 0,
                offset: F0,
                found,
                expected: 2048,
            },
            Rule::R34,
            Severity::Corruption,
        );
    }
}

#[test]
fn r35_bitmap_granularity_zero() {
    let img = with_feature(DirtyBitmapFeature::new(2048, ID_A, 0, vec![0]));
    let v = Violation::BitmapGranularityInvalid {
        index: 0,
        offset: F0,
        found: 0,
    };
    assert_only(&img, v.clone(), Rule::R35, Severity::Corruption);
    // QEMU aborts on this; decoding refuses it.
    let image = Image::parse(&img).unwrap();
    match image.bitmaps()[0].dirty_extents() {
        Err(Error::Invalid(got)) => assert_eq!(got, v),
        other => panic!("{other:?}"),
    }
}

#[test]
fn r35_bitmap_granularity_not_a_power_of_two() {
    for found in [3u32, 96, 0x8000_0001] {
        let img = with_feature(DirtyBitmapFeature::new(2048, ID_A, found, vec![0]));
        assert_only(
            &img,
            Violation::BitmapGranularityInvalid {
                index: 0,
                offset: F0,
                found,
            },
            Rule::R35,
            Severity::Corruption,
        );
    }
}

#[test]
fn r36_bitmap_granularity_too_big() {
    let img = with_feature(DirtyBitmapFeature::new(2048, ID_A, 1 << 23, vec![0]));
    assert_only(
        &img,
        Violation::BitmapGranularityTooBig {
            index: 0,
            offset: F0,
            found: 1 << 23,
        },
        Rule::R36,
        Severity::Corruption,
    );
    // 2^22 sectors are 2^31 bytes: that fits in u32.
    let img = with_feature(DirtyBitmapFeature::new(2048, ID_A, 1 << 22, vec![0]));
    assert_clean(&img);
}

/// R37: an `l1_size` other than the one the size and granularity need (1 here), too big or
/// zero (ploop writes l1_size 0 for an empty bitmap; QEMU rejects it, and so do we).
#[test]
fn r37_bitmap_l1_size() {
    for (name, l1) in [("too big", vec![0, 0]), ("zero", vec![])] {
        let found = l1.len() as u32;
        let img = with_feature(DirtyBitmapFeature::new(2048, ID_A, 128, l1));
        let v = Violation::BitmapL1Size {
            index: 0,
            offset: F0,
            found,
            expected: 1,
            cluster_bits: 524288,
        };
        assert_only_named(name, &img, v, Rule::R37, Severity::Corruption);
    }
}

#[test]
fn r37_l1_size_follows_the_cluster_size() {
    // 512-byte clusters hold 4096 bits: 2049 sectors at 1 sector per granule need 1 entry,
    // 4097 need 2.
    for (sectors, l1) in [(4096u64, 1u64), (4097, 2)] {
        let (img, layout) = build(
            &ImageBuilder::new(sectors * 512)
                .cluster_size(512)
                .bitmap(spec(ID_A, 512, &[])),
        );
        assert_eq!(layout.l1[0].len() as u64, l1);
        assert_clean(&img);
    }
}

#[test]
fn r38_l1_entry_unaligned() {
    let mut img = partial();
    // Move the bitmap cluster one sector past the next cluster boundary.
    let bits = img[131072..196608].to_vec();
    img.resize(196608 + 512 + 65536, 0);
    img[197120..].copy_from_slice(&bits);
    set_l1(&mut img, F0_L1, 385);
    assert_only(
        &img,
        Violation::L1EntryUnaligned {
            feature: 0,
            index: 0,
            entry: 385,
            offset: 197120,
            cluster_size: 65536,
        },
        Rule::R38,
        Severity::NonCanonical,
    );
    // Decoding still reads the bits where the entry points.
    let image = Image::parse(&img).unwrap();
    assert_eq!(image.bitmaps()[0].dirty_extents().unwrap(), vec![(0, 65536)]);
}

/// R39 alone: an L1 entry past the end of the file, whichever way it gets there. Where the
/// bits can still be decoded, decoding reads them where the entry points (QEMU reads zeros past
/// the end of the file: a truncated image looks clean to it).
#[test]
fn r39_l1_entry_past_eof() {
    let cut = |len: usize| {
        let mut img = partial();
        img.truncate(len);
        img
    };
    let pointing = |entry: u64| {
        let mut img = clean(65536);
        set_l1(&mut img, F0_L1, entry);
        img
    };
    type Case = (&'static str, Vec<u8>, u64, u64, u64, Option<Vec<(u64, u64)>>);
    let cases: [Case; 4] = [
        ("truncated", cut(131072), 256, 131072, 131072, Some(vec![])),
        (
            "cut short",
            cut(131072 + 512),
            256,
            131072,
            131584,
            Some(vec![(0, 65536)]),
        ),
        ("far past eof", pointing(1 << 40), 1 << 40, 1 << 49, 131072, None),
        // u64::MAX sectors have no byte offset.
        ("offset overflows", pointing(u64::MAX), u64::MAX, u64::MAX, 131072, None),
    ];
    for (name, img, entry, offset, file_len, extents) in cases {
        let v = Violation::L1EntryPastEof {
            feature: 0,
            index: 0,
            entry,
            offset,
            file_len,
        };
        assert_only_named(name, &img, v, Rule::R39, Severity::Corruption);
        if let Some(extents) = extents {
            let image = Image::parse(&img).unwrap();
            assert_eq!(image.bitmaps()[0].dirty_extents().unwrap(), extents, "{name}");
        }
    }
}

/// The largest entry that has a byte offset (just below 2^64) is unaligned and past the end.
#[test]
fn r38_r39_largest_entry_with_a_byte_offset() {
    let mut img = clean(65536);
    let entry = u64::MAX / 512;
    set_l1(&mut img, F0_L1, entry);
    let offset = entry * 512;
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::L1EntryUnaligned {
                    feature: 0,
                    index: 0,
                    entry,
                    offset,
                    cluster_size: 65536,
                },
                Severity::NonCanonical,
            ),
            (
                Violation::L1EntryPastEof {
                    feature: 0,
                    index: 0,
                    entry,
                    offset,
                    file_len: 131072,
                },
                Severity::Corruption,
            ),
        ],
    );
}

/// The first bitmap's dirty extents and its serialized bits (as QEMU loads them).
fn first_bitmap_bits(image: &Image<'_>) -> (Vec<(u64, u64)>, Vec<u8>) {
    let b = image.bitmaps()[0];
    (b.dirty_extents().unwrap(), b.serialized().unwrap())
}

/// An L1 entry whose byte offset wraps at 2^64 (256 + 2^55 sectors is byte 131072 again): it is
/// past the end of the file for the rules, but decoding reads where QEMU does (it computes the
/// offset modulo 2^64), so both see the same dirty granule.
#[test]
fn r39_l1_entry_wraps_like_qemu() {
    let mut img = partial();
    let entry = 256 + (1u64 << 55);
    set_l1(&mut img, F0_L1, entry);
    // For the rules nothing references the bits cluster any more: it is leaked.
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::L1EntryPastEof {
                    feature: 0,
                    index: 0,
                    entry,
                    offset: u64::MAX,
                    file_len: 196608,
                },
                Severity::Corruption,
            ),
            (
                Violation::Leak {
                    offset: 131072,
                    len: 65536,
                },
                Severity::Leak,
            ),
        ],
    );
    assert_eq!(
        first_bitmap_bits(&Image::parse(&img).unwrap()),
        (vec![(0, 65536)], vec![1, 0, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn r40_l1_entry_overlaps_extension() {
    // 512-byte granules: 2048 granules (256 bytes) cover the whole feature list, so no bit
    // past the last granule is set.
    let mut img = clean(512);
    set_l1(&mut img, F0_L1, EXT / 512);
    assert_only(
        &img,
        Violation::L1EntryOverlap {
            feature: 0,
            index: 0,
            entry: 128,
            offset: EXT,
            with: Region::Extension,
        },
        Rule::R40,
        Severity::Corruption,
    );
}

#[test]
fn r40_l1_entry_overlaps_data_cluster() {
    let (mut img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .data(0, GuestData::Bytes(vec![0xff, 0xff]))
            .bitmap(spec(ID_A, 65536, &[])),
    );
    assert_eq!(layout.ext_offset, Some(131072));
    assert_eq!(layout.bat[0], 1);
    let l1 = 131072 + 24 + 24 + 32;
    put_u64(&mut img, l1, 128);
    refresh_md5(&mut img, 131072, CS);
    assert_only(
        &img,
        Violation::L1EntryOverlap {
            feature: 0,
            index: 0,
            entry: 128,
            offset: 65536,
            with: Region::DataCluster { bat_index: 0 },
        },
        Rule::R40,
        Severity::Corruption,
    );
    let image = Image::parse(&img).unwrap();
    assert_eq!(image.bitmaps()[0].dirty_extents().unwrap(), vec![(0, 1 << 20)]);
}

#[test]
fn r40_l1_entry_overlaps_header_and_bat() {
    // 512-byte clusters, 256 BAT entries ending at 1088: sector 2 is inside the BAT.
    let (mut img, layout) = build(
        &ImageBuilder::new(256 * 512)
            .cluster_size(512)
            .bitmap(spec(ID_A, 512, &[])),
    );
    let ext = layout.ext_offset.unwrap();
    assert_eq!(ext, 1536);
    put_u64(&mut img, ext + 80, 2);
    refresh_md5(&mut img, ext, 512);
    assert_only(
        &img,
        Violation::L1EntryOverlap {
            feature: 0,
            index: 0,
            entry: 2,
            offset: 1024,
            with: Region::HeaderAndBat,
        },
        Rule::R40,
        Severity::Corruption,
    );
}

#[test]
fn r40_l1_entry_overlaps_another_bitmaps_cluster() {
    let (mut img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[(0, 1)]))
            .bitmap(spec(ID_B, 65536, &[(0, 1)]))
            .bitmap(spec(ID_C, 65536, &[(0, 1)])),
    );
    assert_eq!(layout.l1, vec![vec![256], vec![384], vec![512]]);
    assert_clean(&img);
    set_l1(&mut img, F1 + 24 + 32, 256);
    assert_only(
        &img,
        Violation::L1EntryOverlap {
            feature: 1,
            index: 0,
            entry: 256,
            offset: 131072,
            with: Region::BitmapCluster {
                feature: 0,
                l1_index: 0,
            },
        },
        Rule::R40,
        Severity::Corruption,
    );
}

#[test]
fn r40_l1_entries_of_one_bitmap_share_a_cluster() {
    // 32 MiB, 4 KiB clusters, 512-byte granules: 2 chunks, both partly dirty.
    let (mut img, layout) = build(&ImageBuilder::new(32 << 20).cluster_size(4096).bitmap(spec(
        ID_A,
        512,
        &[(0, 512), (16 << 20, 512)],
    )));
    let ext = layout.ext_offset.unwrap();
    let (a, b) = (layout.l1[0][0], layout.l1[0][1]);
    assert_eq!((a, b), ((ext + 4096) / 512, (ext + 8192) / 512));
    assert_clean(&img);
    put_u64(&mut img, ext + 88, a);
    refresh_md5(&mut img, ext, 4096);
    let v = Violation::L1EntryOverlap {
        feature: 0,
        index: 1,
        entry: a,
        offset: a * 512,
        with: Region::BitmapCluster {
            feature: 0,
            l1_index: 0,
        },
    };
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (v.clone(), Severity::Corruption),
            (
                Violation::Leak {
                    offset: b * 512,
                    len: 4096,
                },
                Severity::Leak,
            ),
        ],
    );
    let image = Image::parse(&img).unwrap();
    match image.bitmaps()[0].dirty_extents() {
        Err(Error::Invalid(got)) => assert_eq!(got, v),
        other => panic!("{other:?}"),
    }
}

#[test]
fn r41_duplicate_bitmap_id() {
    let (img, _) = build(
        // The builder refuses a repeated id as a bitmap; as a raw feature record it writes it.
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .bitmap(spec(ID_A, 65536, &[]))
            .feature(FeatureRecord::dirty_bitmap(DirtyBitmapFeature::new(
                2048,
                ID_A,
                1,
                vec![0],
            ))),
    );
    assert_only(
        &img,
        Violation::DuplicateBitmapId {
            index: 1,
            offset: F1,
            first: 0,
            id: "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa".to_string(),
        },
        Rule::R41,
        Severity::Corruption,
    );
}

#[test]
fn r42_bitmap_trailing_bits() {
    let mut img = partial();
    // 16 granules: bits from byte 2 on are past the last one.
    img[131072 + 2] = 0x01;
    img[131072 + 100] = 0xff;
    assert_only(
        &img,
        Violation::BitmapTrailingBits {
            feature: 0,
            index: 0,
            count: 9,
        },
        Rule::R42,
        Severity::Note,
    );
    // They are don't-care: the extents ignore them; the serialized form keeps those inside the
    // last 64-bit word (byte 2 here, not byte 100), as QEMU loads them.
    assert_eq!(
        first_bitmap_bits(&parallels_image::open(&img).unwrap()),
        (vec![(0, 65536)], vec![1, 0, 1, 0, 0, 0, 0, 0])
    );
}

#[test]
fn r42_trailing_bits_inside_a_byte() {
    // 640 KiB: 10 granules of 64 KiB; bits 10..16 of byte 1 are past the last granule.
    let (mut img, layout) = build(&ImageBuilder::new(640 << 10).cluster_size(CS).bitmap(spec(
        ID_A,
        65536,
        &[(0, 65536)],
    )));
    let bits = layout.l1[0][0] * 512;
    img[bits as usize + 1] = 0xff;
    assert_only(
        &img,
        Violation::BitmapTrailingBits {
            feature: 0,
            index: 0,
            count: 6,
        },
        Rule::R42,
        Severity::Note,
    );
    // Granules 8 and 9 are dirty; bits 10..16 stay as stored in the serialized last word.
    assert_eq!(
        first_bitmap_bits(&parallels_image::open(&img).unwrap()),
        (vec![(0, 65536), (524288, 131072)], vec![0x01, 0xff, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn builder_refuses_repeated_ids_and_dirty_ranges_past_the_disk() {
    use parallels_image::{BitmapSpec, BuildError};
    let spec = |id: u8, extents: Vec<(u64, u64)>| BitmapSpec {
        id: [id; 16],
        granularity: 65536,
        extents,
    };
    let e = ImageBuilder::new(1 << 20)
        .bitmap(spec(1, vec![]))
        .bitmap(spec(2, vec![]))
        .bitmap(spec(1, vec![]))
        .to_vec()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Build(BuildError::DuplicateBitmapId {
                id,
                first: 0,
                second: 2
            }) if id == [1; 16]
        ),
        "{e:?}"
    );
    // 1000 bytes: 2 sectors, the disk ends at 1024.
    let e = ImageBuilder::new(1000)
        .bitmap(spec(1, vec![(0, 1024), (1000, 25)]))
        .to_vec()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Build(BuildError::DirtyRangeOutsideDisk {
                bitmap: 0,
                id,
                offset: 1000,
                len: 25,
                disk_size: 1024
            }) if id == [1; 16]
        ),
        "{e:?}"
    );
    let e = ImageBuilder::new(1 << 20)
        .bitmap(spec(1, vec![(u64::MAX, 2)]))
        .to_vec()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Build(BuildError::DirtyRangeOutsideDisk {
                offset: u64::MAX,
                len: 2,
                ..
            })
        ),
        "{e:?}"
    );
    // A disk of 0 sectors has nothing to track (R49): refused before anything is written,
    // whatever the bitmaps' ranges; the same disk without bitmaps builds.
    let e = ImageBuilder::new(0)
        .bitmap(spec(1, vec![]))
        .bitmap(spec(2, vec![(0, 0)]))
        .to_vec()
        .unwrap_err();
    assert!(
        matches!(e, Error::Build(BuildError::BitmapOnEmptyDisk { count: 2 })),
        "{e:?}"
    );
    let (empty, _) = ImageBuilder::new(0).to_vec().unwrap();
    let image = parallels_image::open(&empty).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    let e = parallels_image::edit::edit_bitmaps(
        &image,
        &parallels_image::edit::BitmapEdit::Add(spec(3, vec![])),
        None,
        &mut out,
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Build(BuildError::BitmapOnEmptyDisk { count: 1 })),
        "{e:?}"
    );
    assert!(out.get_ref().is_empty(), "nothing is written");
    // Empty ranges anywhere and ranges up to the end are fine.
    assert!(ImageBuilder::new(1000)
        .bitmap(spec(1, vec![(0, 1024), (5000, 0)]))
        .to_vec()
        .is_ok());
}
