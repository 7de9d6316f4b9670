//! The defect catalogue: every defect breaks exactly its rule on every base image it suits, and
//! is refused with `PlanError::NotApplicable` on the ones it does not suit.

use parallels_image::corrupt::{plan, DefectKind, Patch};
use parallels_image::raw::{RawFeatureHeader, RawHeader};
use parallels_image::{
    BitmapSpec, Error, GuestData, Image, ImageBuilder, PlanError, Requirement, Rule, RuleMode, Severity, Threads,
    Variant,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const CS: u64 = 64 * KIB;

struct Base {
    name: &'static str,
    bytes: Vec<u8>,
    /// Defects this base does not suit (they must fail with `PlanError::NotApplicable`).
    unsuitable: &'static [DefectKind],
}

use DefectKind as D;

/// Bitmap and extension defects: nothing to break in an image without an extension.
const NEEDS_EXTENSION: [DefectKind; 30] = [
    D::ExtOffUnaligned,
    D::ExtPastEof,
    D::ExtOverlapData,
    D::ExtBadMagic,
    D::ExtBadChecksum,
    D::FeatureTruncated,
    D::FeatureFlagsNecessary,
    D::FeatureFlagsTransit,
    D::FeatureDataOverflow,
    D::UnknownFeature,
    D::MissingEndRecord,
    D::NonzeroPadding,
    D::BitmapDataTooShort,
    D::BitmapExtraData,
    D::BitmapSizeMismatch,
    D::GranularityZero,
    D::GranularityNotPowerOfTwo,
    D::GranularityOverflow,
    D::L1SizeWrong,
    D::L1SizeZero,
    D::L1EntryUnaligned,
    D::L1EntryPastEof,
    D::L1EntryOverlapBat,
    D::L1EntryOverlapExt,
    D::L1EntryOverlapData,
    D::L1EntryOverlapL1,
    D::DuplicateBitmapId,
    D::BitmapTrailingBits,
    D::ExtBeforeData,
    D::BitmapOnEmptyDisk,
];

/// The defects a base without an extension does not suit: [`NEEDS_EXTENSION`], then `extra`
/// (`N` is their count: a wrong one does not compile).
const fn without_extension<const N: usize>(extra: &[DefectKind]) -> [DefectKind; N] {
    assert!(N == NEEDS_EXTENSION.len() + extra.len());
    let mut out = [D::BadMagic; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < NEEDS_EXTENSION.len() {
            NEEDS_EXTENSION[i]
        } else {
            extra[i - NEEDS_EXTENSION.len()]
        };
        i += 1;
    }
    out
}

fn check(b: ImageBuilder) -> Vec<u8> {
    let (bytes, _) = b.to_vec().expect("builds");
    let image = Image::parse(&bytes).expect("parses");
    let report = parallels_image::validate(&image).expect("validates");
    assert!(
        report.findings.is_empty(),
        "base image not clean: {:?}",
        report.findings
    );
    bytes
}

/// v2, 64 KiB clusters, a BAT larger than one cluster (so data starts at 128 KiB), data in five
/// clusters, two bitmaps: A (512-byte granules, five chunks: mixed, all dirty, clean, mixed,
/// partial mixed) and B (64 KiB granules, one partial mixed chunk).
fn v2_rich() -> Base {
    let size = (1 << 30) + 100 * MIB + 1536;
    let bytes = check(
        ImageBuilder::new(size)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 4096, byte: 0x11 })
            .data(3 * CS + 100, GuestData::Bytes((0..=255).collect()))
            .data(
                200 * MIB,
                GuestData::Fill {
                    len: 2 * CS,
                    byte: 0x22,
                },
            )
            .data(size - 1000, GuestData::Fill { len: 1000, byte: 0x33 })
            .bitmap(BitmapSpec {
                id: [0xa1; 16],
                granularity: 512,
                extents: vec![
                    (4096, 8192),
                    (256 * MIB, 256 * MIB),
                    (800 * MIB, MIB),
                    ((1 << 30) + 5000, 70000),
                ],
            })
            .bitmap(BitmapSpec {
                id: [0xb2; 16],
                granularity: 64 * KIB,
                extents: vec![(0, 64 * KIB), (10 * MIB, MIB), (1 << 30, 64 * KIB)],
            }),
    );
    Base {
        name: "v2-rich",
        bytes,
        unsuitable: &[
            D::V1SizeHighBits,
            D::BatEntryUnaligned,
            D::V1DataOffUnset,
            D::BatTooLargeToRead,
        ],
    }
}

/// The builder of [`v1_rich`] (`compact`: false) and [`v1_compact_bitmaps`] (true).
fn v1_rich_builder(compact: bool) -> ImageBuilder {
    let size = 300 * MIB + 512;
    ImageBuilder::new(size)
        .variant(Variant::V1)
        .cluster_size(CS)
        .compact_v1(compact)
        .data(0, GuestData::Fill { len: 512, byte: 0x44 })
        .data(7 * CS, GuestData::Fill { len: CS, byte: 0x55 })
        .data(size - 512, GuestData::Fill { len: 512, byte: 0x66 })
        .bitmap(BitmapSpec {
            id: [0xc3; 16],
            granularity: 512,
            extents: vec![(MIB, 4096), (280 * MIB, 8192)],
        })
        .bitmap(BitmapSpec {
            id: [0xd4; 16],
            granularity: 4096,
            extents: vec![(0, 4096), (299 * MIB, MIB)],
        })
}

/// v1, 64 KiB clusters (data area at one cluster), two bitmaps: C (512-byte granules, a mixed
/// chunk and a partial mixed chunk) and D (4 KiB granules, one partial mixed chunk).
fn v1_rich() -> Base {
    let bytes = check(v1_rich_builder(false));
    Base {
        name: "v1-rich",
        bytes,
        unsuitable: &[
            D::DataOffZero,
            D::DataOffUnaligned,
            D::L1EntryOverlapBat,
            D::V1DataOffUnset,
            D::BatTooLargeToRead,
        ],
    }
}

/// v1 with the data area right after the BAT (byte 19456, so the cluster grid is off the
/// multiples of the cluster size), data in three clusters, the bitmaps of [`v1_rich`].
fn v1_compact_bitmaps() -> Base {
    let bytes = check(v1_rich_builder(true));
    assert_eq!(Image::parse(&bytes).unwrap().header().data_start(), 19456);
    Base {
        name: "v1-compact-bitmaps",
        bytes,
        // No cluster of the grid (19456 + k * 64 KiB) lies inside the BAT (which ends at 19268).
        unsuitable: &[
            D::DataOffZero,
            D::DataOffUnaligned,
            D::L1EntryOverlapBat,
            D::BatTooLargeToRead,
        ],
    }
}

/// v2 with 4 KiB clusters (a BAT of 11 clusters), data in four clusters, two bitmaps: one with
/// 512-byte granules in three chunks (mixed, all dirty, partial mixed), one with 64 KiB granules.
fn v2_small_clusters() -> Base {
    let size = 40 * MIB + 512;
    let bytes = check(
        ImageBuilder::new(size)
            .cluster_size(4 * KIB)
            .data(0, GuestData::Fill { len: 100, byte: 0x12 })
            .data(
                MIB,
                GuestData::Fill {
                    len: 8 * KIB,
                    byte: 0x34,
                },
            )
            .data(size - 512, GuestData::Fill { len: 512, byte: 0x56 })
            .bitmap(BitmapSpec {
                id: [0x0f; 16],
                granularity: 512,
                extents: vec![(4096, 4096), (16 * MIB, 16 * MIB), (40 * MIB, 512)],
            })
            .bitmap(BitmapSpec {
                id: [0xf0; 16],
                granularity: 64 * KIB,
                extents: vec![(MIB, MIB)],
            }),
    );
    Base {
        name: "v2-small-clusters",
        bytes,
        unsuitable: &[D::V1SizeHighBits, D::BatEntryUnaligned],
    }
}

/// v2, 16 MiB, data at one cluster, one bitmap with one partial chunk.
fn v2_small() -> Base {
    let bytes = check(
        ImageBuilder::new(16 * MIB)
            .cluster_size(CS)
            .data(0, GuestData::Fill { len: 4096, byte: 0x77 })
            .data(5 * MIB, GuestData::Fill { len: 4096, byte: 0x88 })
            .bitmap(BitmapSpec {
                id: [0xe5; 16],
                granularity: 64 * KIB,
                extents: vec![(0, 64 * KIB), (3 * MIB, 64 * KIB)],
            }),
    );
    Base {
        name: "v2-small",
        bytes,
        unsuitable: &[
            D::V1SizeHighBits,
            D::BatEntryUnaligned,
            D::DuplicateBitmapId,
            D::L1EntryOverlapBat,
            D::L1EntryOverlapExt,
            D::L1EntryOverlapData,
            D::L1EntryOverlapL1,
            D::V1DataOffUnset,
            D::BatTooLargeToRead,
        ],
    }
}

/// v2 with 1 MiB clusters (the usual size, and large enough that validation hashes the extension
/// cluster while its helper thread runs the other rules), data in four clusters, two bitmaps: E
/// (512-byte granules, so 4 GiB a chunk: a mixed chunk and a partial mixed one) and F (64 KiB
/// granules, one partial mixed chunk).
fn v2_one_mib_clusters() -> Base {
    let size = 5 * (1 << 30) + 512;
    let bytes = check(
        ImageBuilder::new(size)
            .cluster_size(MIB)
            .data(0, GuestData::Fill { len: 4096, byte: 0x13 })
            .data(
                700 * MIB,
                GuestData::Fill {
                    len: 2 * MIB,
                    byte: 0x24,
                },
            )
            .data(size - 512, GuestData::Fill { len: 512, byte: 0x35 })
            .bitmap(BitmapSpec {
                id: [0xe6; 16],
                granularity: 512,
                extents: vec![(8192, 4096), (2 << 30, 2 << 30), (size - 512, 512)],
            })
            .bitmap(BitmapSpec {
                id: [0xf7; 16],
                granularity: 64 * KIB,
                extents: vec![(0, 64 * KIB), (5 << 30, 512)],
            }),
    );
    Base {
        name: "v2-1MiB-clusters",
        bytes,
        // The BAT fits in the first cluster, so no cluster of the grid lies inside it.
        unsuitable: &[
            D::V1SizeHighBits,
            D::BatEntryUnaligned,
            D::L1EntryOverlapBat,
            D::V1DataOffUnset,
            D::BatTooLargeToRead,
        ],
    }
}

/// v1 with the data area right after the BAT (byte 1536, a sector boundary that is no cluster
/// boundary), two data clusters, no extension.
fn v1_compact() -> Base {
    let bytes = check(
        ImageBuilder::new(20 * MIB)
            .variant(Variant::V1)
            .cluster_size(CS)
            .compact_v1(true)
            .data(0, GuestData::Fill { len: 4096, byte: 0x99 })
            .data(8 * CS, GuestData::Fill { len: 4096, byte: 0xaa }),
    );
    static UNSUITABLE: [DefectKind; 33] =
        without_extension(&[D::DataOffZero, D::DataOffUnaligned, D::BatTooLargeToRead]);
    Base {
        name: "v1-compact",
        bytes,
        unsuitable: &UNSUITABLE,
    }
}

/// v2, 1 MiB, nothing allocated, no extension.
fn v2_empty() -> Base {
    let bytes = check(ImageBuilder::new(MIB).cluster_size(CS));
    static UNSUITABLE: [DefectKind; 36] = without_extension(&[
        D::V1SizeHighBits,
        D::BatEntryUnaligned,
        D::BatEntryInsideHeader,
        D::BatEntryDuplicate,
        D::UnreferencedCluster,
        D::V1DataOffUnset,
    ]);
    Base {
        name: "v2-empty",
        bytes,
        unsuitable: &UNSUITABLE,
    }
}

fn bases() -> Vec<Base> {
    vec![
        v2_rich(),
        v1_rich(),
        v1_compact_bitmaps(),
        v2_small(),
        v2_one_mib_clusters(),
        v1_compact(),
        v2_empty(),
    ]
}

/// The rules the validator reports on `bytes`, all of them and the corruption ones.
fn verdict(bytes: &[u8]) -> (Vec<Rule>, Vec<Rule>) {
    match Image::parse(&bytes) {
        Err(Error::Invalid(v)) => (vec![v.rule()], vec![v.rule()]),
        Err(e) => panic!("parse failed with {e}"),
        Ok(image) => {
            let report = parallels_image::validate(&image).expect("validates");
            let alone = parallels_image::validate_with(&image, Threads::Caller).expect("validates");
            assert_eq!(report, alone, "the helper thread changed the findings");
            let mut corrupt: Vec<Rule> = Vec::new();
            for f in &report.findings {
                if f.severity == Severity::Corruption && !corrupt.contains(&f.violation.rule()) {
                    corrupt.push(f.violation.rule());
                }
            }
            (report.rules(), corrupt)
        }
    }
}

/// What a defect must report in full, sorted: its rule, and what comes with it
/// ([`DefectKind::also_breaks`]: for the two defects that grow the last record, a bitmap in every
/// base here, the non-canonical extra data).
fn expected_rules(defect: DefectKind) -> Vec<Rule> {
    let mut rules = vec![defect.rule()];
    rules.extend(defect.also_breaks());
    rules.sort_unstable();
    rules
}

fn corrupted(base: &[u8], patch: &Patch) -> Vec<u8> {
    let mut v = base.to_vec();
    patch.apply_to_vec(&mut v);
    v
}

#[test]
fn every_defect_breaks_exactly_its_rule() {
    let bases = bases();
    let mut failures = Vec::new();
    for &defect in DefectKind::ALL {
        let mut suited = 0;
        for base in &bases {
            let image = Image::parse(&base.bytes).unwrap();
            for seed in 0..4 {
                let what = format!("{defect} on {} (seed {seed})", base.name);
                let result = plan(&image, defect, seed);
                if base.unsuitable.contains(&defect) {
                    match result {
                        Err(Error::Plan(e @ PlanError::NotApplicable { defect: d, .. })) => {
                            assert_eq!(d, defect, "{what}");
                            let msg = e.to_string();
                            assert!(
                                msg.starts_with(&format!("defect {} needs an image with ", defect.name())),
                                "{what}: {msg}"
                            );
                        }
                        other => panic!("{what}: expected PlanError::NotApplicable, got {other:?}"),
                    }
                    continue;
                }
                let patch = result.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    !patch.writes.is_empty() || patch.set_len.is_some(),
                    "{what}: empty patch"
                );
                let bytes = corrupted(&base.bytes, &patch);
                let (mut all, mut corrupt) = verdict(&bytes);
                all.sort_unstable();
                corrupt.sort_unstable();
                if all != expected_rules(defect) {
                    failures.push(format!("{what}: {all:?}"));
                    continue;
                }
                let rule = defect.rule();
                if rule.checked_at_parse() {
                    assert!(Image::parse(&bytes).is_err(), "{what}");
                } else if rule.severity() != Severity::Corruption {
                    assert_eq!(corrupt, Vec::<Rule>::new(), "{what}");
                } else {
                    let mut want: Vec<Rule> = expected_rules(defect)
                        .into_iter()
                        .filter(|r| r.severity() == Severity::Corruption)
                        .collect();
                    want.dedup();
                    assert_eq!(corrupt, want, "{what}");
                }
                suited += 1;
            }
        }
        assert!(suited > 0, "{defect} suits no base image");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn catalogue_covers_every_rule() {
    let cat = DefectKind::ALL;
    assert!(cat.len() >= 30, "only {} defects", cat.len());
    for &rule in Rule::ALL {
        assert!(cat.iter().any(|d| d.rule() == rule), "no defect for {rule}");
    }
    for (i, d) in cat.iter().enumerate() {
        assert!(!d.summary().is_empty(), "{d} has no summary");
        assert!(cat[..i].iter().all(|e| e.name() != d.name()), "{d} is listed twice");
        assert_eq!(d.name().parse::<DefectKind>(), Ok(*d));
        // In rule order.
        assert!(
            cat[..i].iter().all(|e| e.rule() <= d.rule()),
            "{d} is out of rule order"
        );
    }
}

#[test]
fn plans_are_deterministic_and_the_seed_picks_the_place() {
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    for &defect in DefectKind::ALL.iter().filter(|d| !base.unsuitable.contains(d)) {
        let a = plan(&image, defect, 7).unwrap();
        let b = plan(&image, defect, 7).unwrap();
        assert_eq!(a, b, "{defect}");
    }
    // Five allocated clusters: seeds 0 and 1 redirect different BAT entries.
    let a = plan(&image, D::BatEntryPastEof, 0).unwrap();
    let b = plan(&image, D::BatEntryPastEof, 1).unwrap();
    assert_eq!((a.writes.len(), b.writes.len()), (1, 1));
    assert_eq!((a.writes[0].0, b.writes[0].0), (64, 64 + 4 * 3));
}

#[test]
fn simple_patches_are_exact() {
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    let len = base.bytes.len() as u64;

    let p = plan(&image, D::InuseSet, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(44, b"Ynot".to_vec())],
            set_len: None
        }
    );

    let p = plan(&image, D::ZeroTracks, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(28, vec![0])],
            set_len: None
        }
    );

    let p = plan(&image, D::TrailingLeak, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(len, vec![0xde; 512])],
            set_len: Some(len + CS)
        }
    );

    // BAT entry 0 is the first allocated one; it now points at cluster 1, inside the BAT.
    let p = plan(&image, D::BatEntryInsideHeader, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(64, vec![1])],
            set_len: None
        }
    );
}

#[test]
fn patches_apply_the_same_to_files() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    for defect in [
        D::ExtPastEof,
        D::L1EntryUnaligned,
        D::FeatureFlagsTransit,
        D::TrailingLeak,
    ] {
        for seed in 0..2 {
            let patch = plan(&image, defect, seed).unwrap();
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&base.bytes).unwrap();
            patch.apply_to_file(&f).unwrap();
            let mut got = Vec::new();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut got).unwrap();
            assert_eq!(got, corrupted(&base.bytes, &patch), "{defect} seed {seed}");
        }
    }
}

#[test]
fn unknown_defects_are_refused() {
    let err = "no-such-defect".parse::<DefectKind>().unwrap_err();
    assert_eq!(
        err,
        PlanError::UnknownDefect {
            name: "no-such-defect".into()
        }
    );
    assert_eq!(err.to_string(), "unknown defect no-such-defect");
}

#[test]
fn unsuitable_images_are_refused_with_what_they_lack() {
    let base = v1_compact();
    let image = Image::parse(&base.bytes).unwrap();
    match plan(&image, D::GranularityZero, 0) {
        Err(Error::Plan(e)) => {
            assert_eq!(
                e,
                PlanError::NotApplicable {
                    defect: D::GranularityZero,
                    needs: Requirement::Bitmap
                }
            );
            assert_eq!(
                e.to_string(),
                "defect granularity-zero needs an image with a dirty bitmap"
            );
        }
        other => panic!("expected PlanError::NotApplicable, got {other:?}"),
    }
    match plan(&image, D::DataOffZero, 0) {
        Err(Error::Plan(PlanError::NotApplicable { defect, needs })) => {
            assert_eq!((defect, needs), (D::DataOffZero, Requirement::V2Magic));
        }
        other => panic!("expected PlanError::NotApplicable, got {other:?}"),
    }
}

/// An image parsed compact (its BAT read again at each walk) plans every defect exactly as
/// the whole parse does: the plan reads BAT entries, not a view of the table.
#[test]
fn compact_images_plan_the_same_patches() {
    for base in bases() {
        let whole = Image::parse(&base.bytes).unwrap();
        let compact = Image::parse_compact(&base.bytes, RuleMode::Strict).unwrap();
        for &defect in DefectKind::ALL {
            for seed in 0..4 {
                let what = format!("{defect} on {} (seed {seed})", base.name);
                match (plan(&whole, defect, seed), plan(&compact, defect, seed)) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
                    (Err(Error::Plan(a)), Err(Error::Plan(b))) => assert_eq!(a, b, "{what}"),
                    (a, b) => panic!("{what}: {a:?} and {b:?}"),
                }
            }
        }
    }
    // Once, a compact image's plan started from an empty BAT: marking it open also cut off its
    // data clusters.
    let base = v2_rich();
    let compact = Image::parse_compact(&base.bytes, RuleMode::Strict).unwrap();
    assert_eq!(
        plan(&compact, D::InuseSet, 0).unwrap(),
        Patch {
            writes: vec![(44, b"Ynot".to_vec())],
            set_len: None
        }
    );
}

/// Flagging a bitmap record makes it opaque, so its bitmap clusters no longer count as
/// referenced; they stay in the file (the extension cluster moves to the end of the file when
/// they were last), so the record's L1 entries never point past the end.
#[test]
fn flagged_bitmap_records_keep_their_clusters() {
    let mut moved = 0;
    for base in bases() {
        let image = Image::parse(&base.bytes).unwrap();
        let Some(ext) = image.extension() else { continue };
        let cs = image.header().cluster_size();
        for defect in [D::FeatureFlagsNecessary, D::FeatureFlagsTransit] {
            for seed in 0..4 {
                let what = format!("{defect} on {} (seed {seed})", base.name);
                let feature = ext.features()[(seed % ext.features().len() as u64) as usize];
                let bytes = corrupted(&base.bytes, &plan(&image, defect, seed).unwrap());
                let len = bytes.len() as u64;
                let head = RawHeader::read_padded(&bytes);
                let ext_at = head.ext_off.get() * 512;
                if ext_at != ext.file_offset {
                    // Copied to the first cluster slot after the end of the input, which it ends.
                    let old_len = base.bytes.len() as u64;
                    assert!(ext_at >= old_len && ext_at - old_len < cs, "{what}: copy at {ext_at}");
                    assert_eq!(ext_at + cs, len, "{what}");
                    moved += 1;
                }
                let rec = (ext_at + feature.offset) as usize;
                let flagged = RawFeatureHeader::mut_at(&mut bytes.clone(), rec).map(|h| *h).unwrap();
                assert_ne!(flagged.flags.get(), 0, "{what}");
                let data = &bytes[rec + 24..rec + 24 + flagged.data_size.get() as usize];
                for entry in data[32..]
                    .chunks_exact(8)
                    .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
                {
                    assert!(
                        entry <= 1 || entry * 512 + cs <= len,
                        "{what}: L1 entry {entry} past the end {len}"
                    );
                }
            }
        }
    }
    assert!(moved > 0, "no base put a flagged record's clusters last");
}

/// Planning on damaged images (every defect's output on two small bases) never panics, and never
/// writes past the end of the file it leaves.
#[test]
fn planning_on_damaged_images_does_not_panic() {
    for base in [v2_small_clusters(), v1_compact()] {
        let image = Image::parse(&base.bytes).unwrap();
        let damaged: Vec<Vec<u8>> = DefectKind::ALL
            .iter()
            .filter_map(|&d| plan(&image, d, 1).ok())
            .map(|p| corrupted(&base.bytes, &p))
            .collect();
        for bytes in &damaged {
            let Ok(image) = Image::parse(bytes) else { continue };
            for &defect in DefectKind::ALL {
                match plan(&image, defect, 2) {
                    Ok(p) => {
                        // Nothing is written past the final end of the file.
                        let len = p.set_len.unwrap_or(bytes.len() as u64);
                        assert!(p.writes.iter().all(|w| w.0 + w.1.len() as u64 <= len), "{defect}");
                    }
                    Err(Error::Plan(PlanError::NotApplicable { .. })) => {}
                    Err(e) => panic!("{defect}: {e}"),
                }
            }
        }
    }
}

/// R43–R48's defects, byte for byte.
#[test]
fn placement_patches_are_exact() {
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    let len = base.bytes.len() as u64;
    assert_eq!(
        (image.header().bat_entries, image.header().data_start()),
        (17985, 2 * CS)
    );
    let bat_end = 64 + 4 * 17985;

    // R43: bat_entries 17985 -> 17986; the new entry points at cluster 12, a new one.
    let p = plan(&image, D::BatEntryPastDisk, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(32, vec![0x42]), (bat_end, vec![12]), (len, vec![0xd5; 512])],
            set_len: Some(len + CS)
        }
    );
    // R44: the first slot after the BAT holds a copy of BAT[0] (2); seed 1 takes the next slot.
    let p = plan(&image, D::BatSlackNonzero, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(bat_end, vec![2])],
            set_len: None
        }
    );
    let p = plan(&image, D::BatSlackNonzero, 1).unwrap();
    assert_eq!(p.writes, vec![(bat_end + 4, vec![2])]);
    // R46: BAT[0] (cluster 2, the first of five) is unallocated.
    let p = plan(&image, D::UnreferencedCluster, 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(64, vec![0])],
            set_len: None
        }
    );

    // R47: the compact v1 image's data_off 3 becomes 0 (the end of the BAT, rounded up).
    let base = v1_compact();
    let image = Image::parse(&base.bytes).unwrap();
    assert_eq!(image.header().raw.data_off.get(), 3);
    let p = plan(&image, D::V1DataOffUnset, 0).unwrap();
    assert_eq!(p.writes, vec![(48, vec![0])]);

    // R48: bat_entries 536869873 = 0x1ffffbf1.
    let base = v2_empty();
    let image = Image::parse(&base.bytes).unwrap();
    let p = plan(&image, D::BatTooLargeToRead, 0).unwrap();
    assert_eq!(p.writes, vec![(32, vec![0xf1, 0xfb, 0xff, 0x1f])]);
}
