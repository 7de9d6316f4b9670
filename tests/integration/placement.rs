//! Rules R43–R49: what QEMU or ploop read differently from the header, BAT and data area, and
//! space the image does not use.

use parallels_image::{GuestData, ImageBuilder};
use parallels_image::{Region, Rule, RuleMode, Severity, Violation};

use crate::helpers::*;

const MIB: u64 = 1 << 20;

/// v2, 1 MiB disk of 64 KiB clusters (16 entries), data in guest clusters 0, 1 and 2 (host
/// clusters 1, 2, 3).
fn three() -> Vec<u8> {
    let mut b = ImageBuilder::new(MIB).cluster_size(CS);
    for i in 0..3 {
        b = b.data(
            i * CS,
            GuestData::Fill {
                len: 512,
                byte: 0x10 + i as u8,
            },
        );
    }
    let (img, _) = build(&b);
    assert_clean(&img);
    img
}

#[test]
fn r43_bat_entry_past_disk() {
    let mut img = three();
    // The disk shrinks to two clusters: BAT[2] maps no guest byte.
    put_u64(&mut img, 36, 2 * 128);
    assert_only(
        &img,
        Violation::BatEntryPastDisk {
            index: 2,
            entry: 3,
            last: 2,
        },
        Rule::R43,
        Severity::Corruption,
    );
}

#[test]
fn r44_bat_slack_non_zero() {
    let mut img = three();
    // The first slot after the 16 entries, and one more further on.
    put_u32(&mut img, 64 + 4 * 16, 5);
    put_u32(&mut img, 1000, 0x0100_0000);
    assert_only(
        &img,
        Violation::BatSlackNonZero {
            offset: 128,
            found: 5,
            count: 2,
        },
        Rule::R44,
        Severity::Corruption,
    );
}

#[test]
fn r45_extension_before_the_data_area() {
    // An extension at cluster 1, then the data area moved to cluster 2: the extension is in
    // the slots ploop reads as BAT entries.
    let (mut img, _) = build(&ImageBuilder::new(MIB).cluster_size(CS).bitmap(spec(ID_A, 65536, &[])));
    assert_eq!((ext_at(&img), img.len() as u64), (CS, 2 * CS));
    put_u32(&mut img, 48, 256);
    let ext = &img[CS as usize..];
    let slots = ext.chunks(4).filter(|s| s.iter().any(|&b| b != 0)).count() as u64;
    assert_findings(
        &img,
        RuleMode::Strict,
        &[
            (
                Violation::BatSlackNonZero {
                    offset: CS,
                    found: 0x87,
                    count: slots,
                },
                Severity::Corruption,
            ),
            (
                Violation::MetadataBeforeData {
                    offset: CS,
                    what: Region::Extension,
                    bat_end: 128,
                    data_start: 2 * CS,
                },
                Severity::Corruption,
            ),
        ],
    );
}

#[test]
fn r46_unreferenced_cluster_in_the_middle() {
    let mut img = three();
    // Guest cluster 1 unallocated: host cluster 2 is referenced by nothing, and it is not at
    // the end (QEMU's check does not see it).
    put_u32(&mut img, 68, 0);
    assert_only(
        &img,
        Violation::Unreferenced {
            offset: 2 * CS,
            len: CS,
        },
        Rule::R46,
        Severity::Leak,
    );
}

#[test]
fn r48_bat_too_large_for_one_read() {
    // 536869873 entries make 2147479556 bytes of header and BAT, 2147483648 rounded up to a
    // page: over QEMU's largest request. One fewer is read.
    for (bat, found) in [(536_869_873u32, true), (536_869_872, false)] {
        let mut r = vec![0u8; 64];
        r[..16].copy_from_slice(b"WithouFreSpacExt");
        put_u32(&mut r, 16, 2);
        put_u32(&mut r, 28, 1);
        put_u32(&mut r, 32, bat);
        put_u32(&mut r, 48, 0x7fff_ffff);
        let got = findings(&r, RuleMode::Strict);
        let too_large = Violation::BatTooLargeToRead {
            bat_entries: bat,
            max: 536_869_872,
        };
        assert_eq!(got.iter().any(|f| f.violation == too_large), found, "{got:?}");
        assert_eq!(
            got.iter().filter(|f| f.violation.rule() == Rule::R48).count(),
            found as usize
        );
    }
}

#[test]
fn r49_bitmap_on_an_empty_disk() {
    let (img, ext) = image_with_ext(0, CS, &[bitmap_rec(0, ID_A, 128, &[])]);
    assert_only(
        &img,
        Violation::BitmapOnEmptyDisk {
            index: 0,
            offset: ext + 24,
        },
        Rule::R49,
        Severity::Corruption,
    );
}

#[test]
fn r46_not_raised_for_the_clusters_of_a_record_lenient_mode_skips() {
    // Both bitmaps of with_bitmaps() keep their bitmap clusters in the middle of the file; a
    // record with flags (R27) or an unknown magic (R29) is not read as a bitmap, so its cluster
    // is referenced by nothing that is interpreted. That hole is a symptom of R27/R29, in lenient
    // mode (where they are notes) as in strict mode (corruption): no R46 in either.
    use parallels_image::corrupt::{plan, DefectKind};
    for defect in [
        DefectKind::FeatureFlagsNecessary,
        DefectKind::FeatureFlagsTransit,
        DefectKind::UnknownFeature,
    ] {
        let mut img = crate::fixtures::with_bitmaps();
        let image = parallels_image::open(&img).unwrap();
        plan(&image, defect, 0).unwrap().apply_to_vec(&mut img);
        for mode in [RuleMode::Strict, RuleMode::Lenient] {
            let got = findings(&img, mode);
            let rules: Vec<Rule> = got.iter().map(|f| f.violation.rule()).collect();
            assert_eq!(rules, vec![defect.rule()], "{defect:?} {mode:?}: {got:?}");
        }
    }
}
