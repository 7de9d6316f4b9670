//! BAT rules R16–R20, in v1 (sectors) and v2 (clusters) units.

use parallels_image::Rule;
use parallels_image::{BitmapSpec, GuestData, ImageBuilder};
use parallels_image::{RuleMode, Severity, Variant, Violation};

use crate::helpers::*;

/// An image of 1 MiB in 64 KiB clusters with guest clusters `0..n` written, each filled with
/// its index + 1.
fn with_clusters(variant: Variant, n: u64, compact: bool) -> Vec<u8> {
    let mut b = ImageBuilder::new(1 << 20)
        .cluster_size(CS)
        .variant(variant)
        .compact_v1(compact);
    for i in 0..n {
        b = b.data(
            i * CS,
            GuestData::Fill {
                len: CS,
                byte: i as u8 + 1,
            },
        );
    }
    let (img, _) = build(&b);
    if compact {
        // Data at sector 1: valid, but ploop refuses a v1 data_off of 1 (R47, a note).
        let note = (Violation::V1DataOffUnset { data_off: 1 }, Severity::Note);
        assert_findings(&img, RuleMode::Strict, &[note]);
    } else {
        assert_clean(&img);
    }
    img
}

fn bat(img: &[u8], n: u64) -> Vec<u32> {
    (0..n).map(|i| get_u32(img, 64 + 4 * i)).collect()
}

#[test]
fn v1_bat_is_in_sectors_v2_in_clusters() {
    let v1 = with_clusters(Variant::V1, 3, false);
    let v2 = with_clusters(Variant::V2, 3, false);
    let v1c = with_clusters(Variant::V1, 3, true);
    assert_eq!(bat(&v1, 4), [128, 256, 384, 0]);
    assert_eq!(bat(&v2, 4), [1, 2, 3, 0]);
    // Compact v1: the data area starts at sector 1, clusters are 128 sectors apart from there
    // (a data cluster may sit at sector 1; only an L1 entry of 1 would read as a marker).
    assert_eq!(bat(&v1c, 4), [1, 129, 257, 0]);
    for img in [&v1, &v2, &v1c] {
        let image = parallels_image::open(img).unwrap();
        for i in 0..3u32 {
            let mut buf = vec![0u8; CS as usize];
            image.read_guest(u64::from(i) * CS, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == i as u8 + 1), "cluster {i}");
        }
        assert_eq!(image.cluster_offset(3), None);
    }
    assert_eq!(parallels_image::open(&v1).unwrap().cluster_offset(1), Some(131072));
    assert_eq!(parallels_image::open(&v2).unwrap().cluster_offset(1), Some(131072));
    assert_eq!(parallels_image::open(&v1c).unwrap().cluster_offset(1), Some(129 * 512));
}

/// One BAT entry rewritten in an image of `clusters` written clusters: the one finding it
/// gives, in v1 units (sectors) and in v2 units (clusters).
#[test]
fn r16_to_r19_one_entry_in_either_unit() {
    struct Case {
        variant: Variant,
        clusters: u64,
        entry_at: u64,
        value: u32,
        want: Violation,
    }
    let cases = [
        Case {
            variant: Variant::V1,
            clusters: 1,
            entry_at: 68,
            value: 1,
            want: Violation::BatEntryBelowData {
                index: 1,
                entry: 1,
                offset: 512,
                data_start: 65536,
            },
        },
        Case {
            variant: Variant::V1,
            clusters: 2,
            entry_at: 64,
            value: 129,
            want: Violation::BatEntryUnaligned {
                index: 0,
                entry: 129,
                offset: 66048,
                data_start: 65536,
                cluster_size: 65536,
            },
        },
        Case {
            variant: Variant::V2,
            clusters: 2,
            entry_at: 64,
            value: 3,
            want: Violation::BatEntryPastEof {
                index: 0,
                entry: 3,
                offset: 196608,
                end: 262144,
                file_len: 196608,
            },
        },
        Case {
            variant: Variant::V1,
            clusters: 2,
            entry_at: 64,
            value: 384,
            want: Violation::BatEntryPastEof {
                index: 0,
                entry: 384,
                offset: 196608,
                end: 262144,
                file_len: 196608,
            },
        },
        Case {
            variant: Variant::V2,
            clusters: 3,
            entry_at: 68,
            value: 1,
            want: Violation::BatEntryDuplicate {
                index: 1,
                entry: 1,
                offset: 65536,
                first: 0,
            },
        },
        Case {
            variant: Variant::V1,
            clusters: 3,
            entry_at: 64,
            value: 256,
            want: Violation::BatEntryDuplicate {
                index: 1,
                entry: 256,
                offset: 131072,
                first: 0,
            },
        },
        // The largest v2 entry.
        Case {
            variant: Variant::V2,
            clusters: 2,
            entry_at: 64,
            value: u32::MAX,
            want: Violation::BatEntryPastEof {
                index: 0,
                entry: u32::MAX,
                offset: u64::from(u32::MAX) * 65536,
                end: (u64::from(u32::MAX) + 1) * 65536,
                file_len: 196608,
            },
        },
    ];
    for c in cases {
        let name = format!(
            "{:?} of {} clusters, u32 at {} = {}",
            c.variant, c.clusters, c.entry_at, c.value
        );
        let mut img = with_clusters(c.variant, c.clusters, false);
        put_u32(&mut img, c.entry_at, c.value);
        let rule = c.want.rule();
        assert!(
            matches!(rule, Rule::R16 | Rule::R17 | Rule::R18 | Rule::R19),
            "{name}: {:?}",
            c.want
        );
        assert_only_named(&name, &img, c.want, rule, Severity::Corruption);
    }
}

#[test]
fn r16_v2_bat_entry_below_data() {
    // 64 MiB in 4 KiB clusters: the BAT takes 17 clusters, data starts at cluster 17.
    let (mut img, layout) = build(
        &ImageBuilder::new(64 << 20)
            .cluster_size(4096)
            .data(0, GuestData::Fill { len: 4096, byte: 1 }),
    );
    assert_eq!(layout.bat[0], 17);
    assert_clean(&img);
    put_u32(&mut img, 68, 2);
    assert_only(
        &img,
        Violation::BatEntryBelowData {
            index: 1,
            entry: 2,
            offset: 8192,
            data_start: 69632,
        },
        Rule::R16,
        Severity::Corruption,
    );
}

#[test]
fn r17_v1_compact_alignment_is_relative_to_data_start() {
    let mut img = with_clusters(Variant::V1, 3, true);
    // 256 sectors is cluster-aligned in the file but not from the data area at sector 1.
    put_u32(&mut img, 68, 256);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            // data_off 1: valid, but ploop refuses it.
            (Violation::V1DataOffUnset { data_off: 1 }, Severity::Note),
            (
                Violation::BatEntryUnaligned {
                    index: 1,
                    entry: 256,
                    offset: 131072,
                    data_start: 512,
                    cluster_size: 65536,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn r17_v1_data_off_zero_moves_the_data_area() {
    // data_off 0 in v1 puts the data area right after the BAT (sector 1): the clusters the BAT
    // points at (from sector 128) are no longer whole clusters away from it.
    let mut img = with_clusters(Variant::V1, 1, false);
    put_u32(&mut img, 48, 0);
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (Violation::V1DataOffUnset { data_off: 0 }, Severity::Note),
            (
                Violation::BatEntryUnaligned {
                    index: 0,
                    entry: 128,
                    offset: 65536,
                    data_start: 512,
                    cluster_size: 65536,
                },
                Severity::Corruption,
            ),
            (
                Violation::Leak {
                    offset: 512,
                    len: 131072 - 512,
                },
                Severity::Leak,
            ),
        ],
    );
}

#[test]
fn r18_truncated_last_cluster() {
    let mut img = with_clusters(Variant::V2, 2, false);
    img.truncate(196608 - 512);
    assert_only(
        &img,
        Violation::BatEntryPastEof {
            index: 1,
            entry: 2,
            offset: 131072,
            end: 196608,
            file_len: 196096,
        },
        Rule::R18,
        Severity::Corruption,
    );
}

#[test]
fn r19_every_repeat_is_reported() {
    let mut img = with_clusters(Variant::V2, 3, false);
    for i in 4..16 {
        put_u32(&mut img, 64 + 4 * i, 3);
    }
    let f = findings(&img, RuleMode::Strict);
    let want: Vec<Violation> = (4..16)
        .map(|index| Violation::BatEntryDuplicate {
            index,
            entry: 3,
            offset: 196608,
            first: 2,
        })
        .collect();
    assert_eq!(f.into_iter().map(|f| f.violation).collect::<Vec<_>>(), want);
}

#[test]
fn r20_leak() {
    let mut img = with_clusters(Variant::V2, 1, false);
    img.extend_from_slice(&[0u8; 512]);
    assert_only(
        &img,
        Violation::Leak {
            offset: 131072,
            len: 512,
        },
        Rule::R20,
        Severity::Leak,
    );
}

#[test]
fn r20_unreferenced_last_cluster_leaks() {
    let mut img = with_clusters(Variant::V1, 2, false);
    put_u32(&mut img, 68, 0);
    assert_only(
        &img,
        Violation::Leak {
            offset: 131072,
            len: 65536,
        },
        Rule::R20,
        Severity::Leak,
    );
}

#[test]
fn r20_extension_and_bitmap_clusters_are_not_leaks() {
    // Unlike `qemu-img check`, which counts them as leaked.
    let (img, layout) = build(
        &ImageBuilder::new(1 << 20)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 10, byte: 9 })
            .bitmap(BitmapSpec {
                id: ID_A,
                granularity: 65536,
                extents: vec![(0, 65536)],
            }),
    );
    assert_eq!(layout.ext_offset, Some(131072));
    assert_eq!(layout.l1, vec![vec![384]]);
    assert_eq!(img.len(), 4 * 65536);
    assert_clean(&img);
}
