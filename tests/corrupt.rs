//! The defect catalogue: every defect breaks exactly its rule on every base image it suits, and
//! is refused with `PlanError::NotApplicable` on the ones it does not suit.

use parallels_image::corrupt::{catalogue, plan, Patch};
use parallels_image::{BitmapSpec, Data, ImageBuilder, PlanError};
use parallels_image::{Error, Image, Severity, Threads, Variant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const CS: u64 = 64 * KIB;

/// Every rule of the spec, as written in `spec/` and `Violation::rule`.
const RULES: [&str; 42] = [
    "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "R16", "R17",
    "R18", "R19", "R20", "R21", "R22", "R23", "R24", "R25", "R26", "R27", "R28", "R29", "R30", "R31", "R32", "R33",
    "R34", "R35", "R36", "R37", "R38", "R39", "R40", "R41", "R42",
];

/// Rules whose violations are not corruption: non-canonical (R8, R9, R10, R21, R31, R33), a leak
/// (R20) or a note (R42).
const NOT_CORRUPTION: [&str; 8] = ["R8", "R9", "R10", "R20", "R21", "R31", "R33", "R42"];

/// Rules that `Image::parse` itself refuses.
const PARSE_RULES: [&str; 6] = ["R1", "R2", "R3", "R4", "R5", "R6"];

struct Base {
    name: &'static str,
    bytes: Vec<u8>,
    /// Defects this base does not suit (they must fail with `PlanError::NotApplicable`).
    unsuitable: &'static [&'static str],
}

/// Bitmap and extension defects: nothing to break in an image without an extension.
const NEEDS_EXTENSION: [&str; 28] = [
    "ext-off-unaligned",
    "ext-past-eof",
    "ext-overlap-data",
    "ext-bad-magic",
    "ext-bad-checksum",
    "feature-truncated",
    "feature-flags-necessary",
    "feature-flags-transit",
    "feature-data-overflow",
    "unknown-feature",
    "missing-end-record",
    "nonzero-padding",
    "bitmap-data-too-short",
    "bitmap-extra-data",
    "bitmap-size-mismatch",
    "granularity-zero",
    "granularity-not-power-of-two",
    "granularity-overflow",
    "l1-size-wrong",
    "l1-size-zero",
    "l1-entry-unaligned",
    "l1-entry-past-eof",
    "l1-entry-overlap-bat",
    "l1-entry-overlap-ext",
    "l1-entry-overlap-data",
    "l1-entry-overlap-l1",
    "duplicate-bitmap-id",
    "bitmap-trailing-bits",
];

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
            .data(0, Data::Fill { len: 4096, byte: 0x11 })
            .data(3 * CS + 100, Data::Bytes((0..=255).collect()))
            .data(
                200 * MIB,
                Data::Fill {
                    len: 2 * CS,
                    byte: 0x22,
                },
            )
            .data(size - 1000, Data::Fill { len: 1000, byte: 0x33 })
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
        unsuitable: &["v1-size-high-bits", "bat-entry-unaligned"],
    }
}

/// v1, 64 KiB clusters (data area at one cluster), two bitmaps: C (512-byte granules, a mixed
/// chunk and a partial mixed chunk) and D (4 KiB granules, one partial mixed chunk).
fn v1_rich() -> Base {
    let size = 300 * MIB + 512;
    let bytes = check(
        ImageBuilder::new(size)
            .variant(Variant::V1)
            .cluster_size(CS)
            .data(0, Data::Fill { len: 512, byte: 0x44 })
            .data(7 * CS, Data::Fill { len: CS, byte: 0x55 })
            .data(size - 512, Data::Fill { len: 512, byte: 0x66 })
            .bitmap(BitmapSpec {
                id: [0xc3; 16],
                granularity: 512,
                extents: vec![(MIB, 4096), (280 * MIB, 8192)],
            })
            .bitmap(BitmapSpec {
                id: [0xd4; 16],
                granularity: 4096,
                extents: vec![(0, 4096), (299 * MIB, MIB)],
            }),
    );
    Base {
        name: "v1-rich",
        bytes,
        unsuitable: &["data-off-zero", "data-off-unaligned", "l1-entry-overlap-bat"],
    }
}

/// v1 with the data area right after the BAT (byte 19456, so the cluster grid is off the
/// multiples of the cluster size), data in three clusters, the bitmaps of [`v1_rich`].
fn v1_compact_bitmaps() -> Base {
    let size = 300 * MIB + 512;
    let bytes = check(
        ImageBuilder::new(size)
            .variant(Variant::V1)
            .cluster_size(CS)
            .compact_v1(true)
            .data(0, Data::Fill { len: 512, byte: 0x44 })
            .data(7 * CS, Data::Fill { len: CS, byte: 0x55 })
            .data(size - 512, Data::Fill { len: 512, byte: 0x66 })
            .bitmap(BitmapSpec {
                id: [0xc3; 16],
                granularity: 512,
                extents: vec![(MIB, 4096), (280 * MIB, 8192)],
            })
            .bitmap(BitmapSpec {
                id: [0xd4; 16],
                granularity: 4096,
                extents: vec![(0, 4096), (299 * MIB, MIB)],
            }),
    );
    assert_eq!(Image::parse(&bytes).unwrap().header().data_start(), 19456);
    Base {
        name: "v1-compact-bitmaps",
        bytes,
        // No cluster of the grid (19456 + k * 64 KiB) lies inside the BAT (which ends at 19268).
        unsuitable: &["data-off-zero", "data-off-unaligned", "l1-entry-overlap-bat"],
    }
}

/// v2 with 4 KiB clusters (a BAT of 11 clusters), data in four clusters, two bitmaps: one with
/// 512-byte granules in three chunks (mixed, all dirty, partial mixed), one with 64 KiB granules.
fn v2_small_clusters() -> Base {
    let size = 40 * MIB + 512;
    let bytes = check(
        ImageBuilder::new(size)
            .cluster_size(4 * KIB)
            .data(0, Data::Fill { len: 100, byte: 0x12 })
            .data(
                MIB,
                Data::Fill {
                    len: 8 * KIB,
                    byte: 0x34,
                },
            )
            .data(size - 512, Data::Fill { len: 512, byte: 0x56 })
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
        unsuitable: &["v1-size-high-bits", "bat-entry-unaligned"],
    }
}

/// v2, 16 MiB, data at one cluster, one bitmap with one partial chunk.
fn v2_small() -> Base {
    let bytes = check(
        ImageBuilder::new(16 * MIB)
            .cluster_size(CS)
            .data(0, Data::Fill { len: 4096, byte: 0x77 })
            .data(5 * MIB, Data::Fill { len: 4096, byte: 0x88 })
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
            "v1-size-high-bits",
            "bat-entry-unaligned",
            "duplicate-bitmap-id",
            "l1-entry-overlap-bat",
            "l1-entry-overlap-ext",
            "l1-entry-overlap-data",
            "l1-entry-overlap-l1",
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
            .data(0, Data::Fill { len: 4096, byte: 0x13 })
            .data(
                700 * MIB,
                Data::Fill {
                    len: 2 * MIB,
                    byte: 0x24,
                },
            )
            .data(size - 512, Data::Fill { len: 512, byte: 0x35 })
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
        unsuitable: &["v1-size-high-bits", "bat-entry-unaligned", "l1-entry-overlap-bat"],
    }
}

/// v1 with the data area right after the BAT (byte 512), two data clusters, no extension.
fn v1_compact() -> Base {
    let bytes = check(
        ImageBuilder::new(MIB)
            .variant(Variant::V1)
            .cluster_size(CS)
            .compact_v1(true)
            .data(0, Data::Fill { len: 4096, byte: 0x99 })
            .data(8 * CS, Data::Fill { len: 4096, byte: 0xaa }),
    );
    static UNSUITABLE: [&str; 30] = {
        let mut out = [""; 30];
        let mut i = 0;
        while i < NEEDS_EXTENSION.len() {
            out[i] = NEEDS_EXTENSION[i];
            i += 1;
        }
        out[28] = "data-off-zero";
        out[29] = "data-off-unaligned";
        out
    };
    Base {
        name: "v1-compact",
        bytes,
        unsuitable: &UNSUITABLE,
    }
}

/// v2, 1 MiB, nothing allocated, no extension.
fn v2_empty() -> Base {
    let bytes = check(ImageBuilder::new(MIB).cluster_size(CS));
    static UNSUITABLE: [&str; 32] = {
        let mut out = [""; 32];
        let mut i = 0;
        while i < NEEDS_EXTENSION.len() {
            out[i] = NEEDS_EXTENSION[i];
            i += 1;
        }
        out[28] = "v1-size-high-bits";
        out[29] = "bat-entry-unaligned";
        out[30] = "bat-entry-inside-header";
        out[31] = "bat-entry-duplicate";
        out
    };
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
fn verdict(bytes: &[u8]) -> (Vec<&'static str>, Vec<&'static str>) {
    match Image::parse(&bytes) {
        Err(Error::Invalid(v)) => (vec![v.rule().code()], vec![v.rule().code()]),
        Err(e) => panic!("parse failed with {e}"),
        Ok(image) => {
            let report = parallels_image::validate(&image).expect("validates");
            let alone = parallels_image::validate_with(&image, Threads::Caller).expect("validates");
            assert_eq!(report, alone, "the helper thread changed the findings");
            let mut corrupt: Vec<&'static str> = Vec::new();
            for f in &report.findings {
                if f.severity == Severity::Corruption && !corrupt.contains(&f.violation.rule().code()) {
                    corrupt.push(f.violation.rule().code());
                }
            }
            (report.rules().iter().map(|r| r.code()).collect(), corrupt)
        }
    }
}

/// What a defect must report in full: its rule, and for the two defects that grow the last
/// record (a bitmap in every base here) the non-canonical extra data that comes with it.
fn expected_rules(name: &str, rule: &'static str) -> Vec<&'static str> {
    match name {
        "feature-truncated" | "missing-end-record" => vec![rule, "R33"],
        _ => vec![rule],
    }
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
    for defect in catalogue() {
        let mut suited = 0;
        for base in &bases {
            let image = Image::parse(&base.bytes).unwrap();
            for seed in 0..4 {
                let what = format!("{} on {} (seed {seed})", defect.name, base.name);
                let result = plan(&image, defect.name, seed);
                if base.unsuitable.contains(&defect.name) {
                    match result {
                        Err(Error::Plan(PlanError::NotApplicable { defect: d, .. })) => {
                            assert_eq!(d, defect.name, "{what}")
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
                let (all, corrupt) = verdict(&bytes);
                if all != expected_rules(defect.name, defect.rule) {
                    failures.push(format!("{what}: {all:?}"));
                    continue;
                }
                if PARSE_RULES.contains(&defect.rule) {
                    assert!(Image::parse(&bytes).is_err(), "{what}");
                } else if NOT_CORRUPTION.contains(&defect.rule) {
                    assert_eq!(corrupt, Vec::<&str>::new(), "{what}");
                } else {
                    assert_eq!(corrupt, vec![defect.rule], "{what}");
                }
                suited += 1;
            }
        }
        assert!(suited > 0, "{} suits no base image", defect.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn catalogue_covers_every_rule() {
    let cat = catalogue();
    assert!(cat.len() >= 30, "only {} defects", cat.len());
    for rule in RULES {
        assert!(cat.iter().any(|d| d.rule == rule), "no defect for {rule}");
    }
    for (i, d) in cat.iter().enumerate() {
        assert!(RULES.contains(&d.rule), "{} has unknown rule {}", d.name, d.rule);
        assert!(!d.summary.is_empty(), "{} has no summary", d.name);
        assert!(cat[..i].iter().all(|e| e.name != d.name), "{} is listed twice", d.name);
    }
}

#[test]
fn plans_are_deterministic_and_the_seed_picks_the_place() {
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    for defect in catalogue().iter().filter(|d| !base.unsuitable.contains(&d.name)) {
        let a = plan(&image, defect.name, 7).unwrap();
        let b = plan(&image, defect.name, 7).unwrap();
        assert_eq!(a, b, "{}", defect.name);
    }
    // Five allocated clusters: seeds 0 and 1 redirect different BAT entries.
    let a = plan(&image, "bat-entry-past-eof", 0).unwrap();
    let b = plan(&image, "bat-entry-past-eof", 1).unwrap();
    assert_eq!((a.writes.len(), b.writes.len()), (1, 1));
    assert_eq!((a.writes[0].0, b.writes[0].0), (64, 64 + 4 * 3));
}

#[test]
fn simple_patches_are_exact() {
    let base = v2_rich();
    let image = Image::parse(&base.bytes).unwrap();
    let len = base.bytes.len() as u64;

    let p = plan(&image, "inuse-set", 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(44, b"Ynot".to_vec())],
            set_len: None
        }
    );

    let p = plan(&image, "zero-tracks", 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(28, vec![0])],
            set_len: None
        }
    );

    let p = plan(&image, "trailing-leak", 0).unwrap();
    assert_eq!(
        p,
        Patch {
            writes: vec![(len, vec![0xde; 512])],
            set_len: Some(len + CS)
        }
    );

    // BAT entry 0 is the first allocated one; it now points at cluster 1, inside the BAT.
    let p = plan(&image, "bat-entry-inside-header", 0).unwrap();
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
    for name in [
        "ext-past-eof",
        "l1-entry-unaligned",
        "feature-flags-transit",
        "trailing-leak",
    ] {
        for seed in 0..2 {
            let patch = plan(&image, name, seed).unwrap();
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&base.bytes).unwrap();
            patch.apply_to_file(&f).unwrap();
            let mut got = Vec::new();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut got).unwrap();
            assert_eq!(got, corrupted(&base.bytes, &patch), "{name} seed {seed}");
        }
    }
}

#[test]
fn unknown_defects_are_refused() {
    let base = v2_small();
    let image = Image::parse(&base.bytes).unwrap();
    match plan(&image, "no-such-defect", 0) {
        Err(Error::Plan(PlanError::UnknownDefect { name })) => assert_eq!(name, "no-such-defect"),
        other => panic!("expected PlanError::UnknownDefect, got {other:?}"),
    }
}

/// Planning on damaged images (every defect's output on two small bases) never panics, and never
/// writes past the end of the file it leaves.
#[test]
fn planning_on_damaged_images_does_not_panic() {
    for base in [v2_small_clusters(), v1_compact()] {
        let image = Image::parse(&base.bytes).unwrap();
        let damaged: Vec<Vec<u8>> = catalogue()
            .iter()
            .filter_map(|d| plan(&image, d.name, 1).ok())
            .map(|p| corrupted(&base.bytes, &p))
            .collect();
        for bytes in &damaged {
            let Ok(image) = Image::parse(bytes) else { continue };
            for defect in catalogue() {
                match plan(&image, defect.name, 2) {
                    Ok(p) => {
                        // Nothing is written past the final end of the file.
                        let len = p.set_len.unwrap_or(bytes.len() as u64);
                        assert!(
                            p.writes.iter().all(|w| w.0 + w.1.len() as u64 <= len),
                            "{}",
                            defect.name
                        );
                    }
                    Err(Error::Plan(PlanError::NotApplicable { .. })) => {}
                    Err(e) => panic!("{}: {e}", defect.name),
                }
            }
        }
    }
}
