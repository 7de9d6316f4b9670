//! `plan_repair` on every defect of the catalogue over several bases: the result of
//! `RepairLevel::All` validates clean, a clean image's plan is empty, the leaks level never loses
//! a guest byte or a bitmap, and repair inverts `corrupt` byte for byte except where the defect
//! destroyed what the original held (the list below says why for each).

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::{
    plan_repair, validate, Data, Error, Image, ImageBuilder, RepairError, RepairKind, RepairLevel, Rule, Variant,
    Verdict,
};

use crate::fixtures::bm;

const MIB: u64 = 1 << 20;

/// Bases with data and bitmaps: v2 of 64 KiB clusters, v1 of 512-byte clusters (bitmaps of
/// several chunks), v2 of 4 KiB clusters with a fine bitmap.
pub(crate) fn bases() -> Vec<(&'static str, Vec<u8>)> {
    let b = |name, builder: ImageBuilder| (name, builder.to_vec().unwrap().0);
    vec![
        b(
            "v2_64k",
            ImageBuilder::new(10 * MIB + 512)
                .cluster_size(64 << 10)
                .data(0, Data::Fill { len: 4096, byte: 0xaa })
                .data(
                    3 * MIB,
                    Data::Fill {
                        len: 200_000,
                        byte: 0xbb,
                    },
                )
                .data(
                    9 * MIB,
                    Data::Fill {
                        len: 70_000,
                        byte: 0xcc,
                    },
                )
                .bitmap(bm(1, 64 << 10, &[(0, 1), (5 * MIB, 300_000)]))
                .bitmap(bm(2, 512, &[(0, 10 * MIB + 512)])),
        ),
        b(
            "v1_512",
            ImageBuilder::new(5 * MIB + 1536)
                .variant(Variant::V1)
                .cluster_size(512)
                .data(MIB, Data::Fill { len: 2048, byte: 0x11 })
                .data(3 * MIB, Data::Fill { len: 1024, byte: 0x12 })
                .bitmap(bm(3, 512, &[(0, 512), (4 * MIB + 512, 1024)]))
                .bitmap(bm(4, 1024, &[(2 * MIB, 4096)])),
        ),
        b(
            "v2_4k",
            ImageBuilder::new(40 * MIB)
                .cluster_size(4096)
                .data(0, Data::Fill { len: 8192, byte: 0x31 })
                .data(20 * MIB, Data::Fill { len: 4096, byte: 0x32 })
                .bitmap(bm(5, 512, &[(MIB, 4096), (30 * MIB, 512)]))
                .bitmap(bm(6, 4096, &[(0, 40 * MIB)])),
        ),
        b("v2_empty", ImageBuilder::new(MIB).cluster_size(64 << 10)),
    ]
}

/// Every applicable (base, defect, damaged bytes).
pub(crate) fn damaged() -> Vec<(&'static str, DefectKind, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in bases() {
        let image = Image::parse(&bytes).unwrap();
        for &d in DefectKind::ALL {
            let Ok(patch) = corrupt::plan(&image, d, 1) else {
                continue;
            };
            let mut v = bytes.clone();
            patch.apply_to_vec(&mut v);
            out.push((name, d, v));
        }
    }
    out
}

/// Defects whose repair cannot give the original back, and why.
pub(crate) fn not_invertible(d: DefectKind) -> Option<&'static str> {
    use DefectKind as D;
    Some(match d {
        D::ZeroTracks | D::TooBigCluster => "the cluster size is gone: nothing says what it was (refused)",
        D::ExtOffTooBig => "ext_off is gone: the extension is dropped (its bitmaps are lost)",
        D::UnknownInuse | D::UnknownFlags => "the original value is not known: the canonical one is written",
        D::DataOffPastEof | D::UnreferencedCluster => "corrupt unallocated BAT entries: their data is not referenced",
        D::BatEntryPastEof | D::BatEntryInsideHeader | D::BatEntryDuplicate | D::ExtOverlapData => {
            "the entry's own cluster is unreferenced: what it held is not known"
        }
        D::BatEntryPastDisk => "the entry past the disk is cleared, its cluster dropped",
        D::ExtBadMagic => "a magic byte changed and the checksum covers only bytes 24..: restored",
        D::FeatureDataOverflow | D::UnknownFeature | D::BitmapDataTooShort => {
            "the record cannot be read as the bitmap it was: dropped"
        }
        D::GranularityZero | D::GranularityNotPowerOfTwo | D::GranularityOverflow => {
            "the granularity is gone: the bitmap is dropped"
        }
        D::L1EntryPastEof
        | D::L1EntryOverlapBat
        | D::L1EntryOverlapExt
        | D::L1EntryOverlapData
        | D::L1EntryOverlapL1 => "a chunk's bits are not the bitmap's: the bitmap is dropped",
        D::DuplicateBitmapId => "one of two bitmaps of one id is dropped",
        D::BitmapOnEmptyDisk => "the disk size and bitmaps are gone",
        D::SizeBeyondBat => {
            "the size becomes what the BAT covers: the original, if it ended inside the last cluster, is not known"
        }
        D::BitmapTrailingBits => "a note only: the image is clean, and a clean image is left as it is",
        D::DataOffInsideBat => "the first data cluster's first bytes were overwritten by the grown BAT",
        D::L1SizeZero => "the bitmap's chunks are gone: it comes back empty",
        D::ExtPastEof | D::ExtOffUnaligned | D::L1EntryUnaligned | D::ExtBeforeData => {
            "the cluster is written back on the grid, the layout may differ"
        }
        D::V1DataOffUnset | D::V1SizeHighBits | D::BatEntryUnaligned | D::BatTooLargeToRead => {
            "v1 or shape-specific defect: layout may differ"
        }
        _ => return None,
    })
}

#[test]
fn clean_images_have_empty_plans() {
    for (name, bytes) in bases() {
        for level in [RepairLevel::Leaks, RepairLevel::All] {
            let plan = plan_repair(&bytes, level).unwrap();
            assert!(plan.is_empty(), "{name}: {:?}", plan.actions);
            assert!(plan.actions.is_empty(), "{name}");
            assert_eq!(plan.to_vec(&bytes).unwrap(), bytes, "{name}");
        }
    }
}

#[test]
fn repair_all_of_every_defect_is_clean() {
    let mut refused = Vec::new();
    for (name, d, bytes) in damaged() {
        let plan = match plan_repair(&bytes, RepairLevel::All) {
            Ok(p) => p,
            Err(Error::Repair(RepairError::Unrepairable { rule, .. })) => {
                refused.push((d, rule));
                continue;
            }
            Err(e) => panic!("{name}/{d}: {e}"),
        };
        let out = plan.to_vec(&bytes).unwrap();
        let image = Image::parse(&out).unwrap_or_else(|e| panic!("{name}/{d}: {e}"));
        let report = validate(&image).unwrap();
        assert_eq!(
            report.verdict(),
            Verdict::Clean,
            "{name}/{d}: {:?}\n{:#?}",
            report.findings,
            plan.actions
        );
        assert_eq!(out.len() as u64, plan.output_len, "{name}/{d}");
        // Every kept bitmap is in the output, and only those.
        let names: Vec<String> = image.bitmaps().iter().map(|b| b.name()).collect();
        assert_eq!(names, plan.kept_bitmaps, "{name}/{d}");
        // Repairing the repaired image does nothing.
        assert!(plan_repair(&out, RepairLevel::All).unwrap().is_empty(), "{name}/{d}");
    }
    refused.sort();
    refused.dedup();
    assert_eq!(
        refused,
        vec![
            (DefectKind::ZeroTracks, Rule::R3),
            (DefectKind::TooBigCluster, Rule::R4)
        ]
    );
}

#[test]
fn repair_leaks_loses_nothing() {
    for (name, d, bytes) in damaged() {
        let Ok(plan) = plan_repair(&bytes, RepairLevel::Leaks) else {
            continue;
        };
        assert!(plan.lost_guest().is_empty(), "{name}/{d}: {:?}", plan.actions);
        assert!(plan.lost_bitmaps().is_empty(), "{name}/{d}: {:?}", plan.actions);
        let before: Vec<String> = Image::parse(&bytes)
            .map(|i| i.bitmaps().iter().map(|b| b.name()).collect())
            .unwrap_or_default();
        let out = plan.to_vec(&bytes).unwrap();
        if let Ok(image) = Image::parse(&out) {
            let after: Vec<String> = image.bitmaps().iter().map(|b| b.name()).collect();
            assert_eq!(after, before, "{name}/{d}");
            let mut a = vec![0u8; 1 << 16];
            let mut b = vec![0u8; 1 << 16];
            let input = Image::parse(&bytes).unwrap();
            let size = image.header().virtual_size();
            let mut at = 0;
            while at < size {
                let n = (size - at).min(a.len() as u64) as usize;
                input.read_guest(at, &mut a[..n]).unwrap();
                image.read_guest(at, &mut b[..n]).unwrap();
                assert!(a[..n] == b[..n], "{name}/{d}: guest bytes at {at} differ");
                at += n as u64;
            }
        }
        if plan.before == Verdict::Leaks || d == DefectKind::InuseSet {
            let report = validate(&Image::parse(&out).unwrap()).unwrap();
            assert_eq!(report.verdict(), Verdict::Clean, "{name}/{d}");
        }
    }
}

#[test]
fn repair_inverts_corrupt_where_the_original_is_known() {
    let originals = bases();
    let mut exact = Vec::new();
    let mut wrong = Vec::new();
    for (name, d, bytes) in damaged() {
        let original = &originals.iter().find(|(n, _)| *n == name).unwrap().1;
        let Ok(plan) = plan_repair(&bytes, RepairLevel::All) else {
            continue;
        };
        let out = plan.to_vec(&bytes).unwrap();
        if out == *original {
            exact.push(d);
        } else if not_invertible(d).is_none() {
            wrong.push(format!("{name}/{d}"));
        }
    }
    assert!(wrong.is_empty(), "repair does not give the original back: {wrong:?}");
    // The defects repaired back to the original byte for byte on every base they apply to.
    for d in [
        DefectKind::BadMagic,
        DefectKind::BadVersion,
        DefectKind::InuseSet,
        DefectKind::SizeBeyondBat,
        DefectKind::DataOffZero,
        DefectKind::DataOffUnaligned,
        DefectKind::TrailingLeak,
        DefectKind::ExtBadChecksum,
        DefectKind::FeatureTruncated,
        DefectKind::FeatureFlagsNecessary,
        DefectKind::FeatureFlagsTransit,
        DefectKind::MissingEndRecord,
        DefectKind::BitmapSizeMismatch,
        DefectKind::L1SizeWrong,
        DefectKind::BatSlackNonzero,
    ] {
        assert!(exact.contains(&d), "{d} is not inverted");
    }
}

#[test]
fn plan_names_rules_and_losses() {
    let (_, bytes) = &bases()[0];
    let image = Image::parse(bytes).unwrap();
    let mut v = bytes.clone();
    corrupt::plan(&image, DefectKind::BatEntryPastEof, 0)
        .unwrap()
        .apply_to_vec(&mut v);
    let plan = plan_repair(&v, RepairLevel::All).unwrap();
    let clear: Vec<_> = plan.actions.iter().filter(|a| a.rule == Rule::R18).collect();
    assert_eq!(clear.len(), 1, "{:?}", plan.actions);
    assert!(
        matches!(clear[0].kind, RepairKind::ClearBatEntry { index: 0, .. }),
        "{:?}",
        clear[0]
    );
    assert_eq!(clear[0].lost_guest, vec![(0, 64 << 10)]);
    // The leaks level leaves the corruption and says so.
    let leaks = plan_repair(&v, RepairLevel::Leaks).unwrap();
    assert!(leaks.unrepaired.contains(&Rule::R18), "{:?}", leaks.unrepaired);
}
