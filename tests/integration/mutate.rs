//! The structure-aware mutator: determinism, every kind of edit, the checksum put right (or
//! not), hostile inputs, and the issue's measure of how far QEMU gets into its variants.

use std::collections::{BTreeMap, BTreeSet};

use parallels_image::qemu::{self, QemuOutcome, QemuReason};
use parallels_image::{
    mutate::ChecksumState, mutate::Edit, mutate::EditKind, mutate::FeatureField, mutate::MutateOptions,
    mutate::Mutator, open, validate, Error, HeaderField, Image, Rule, Violation,
};

use crate::fixtures::with_bitmaps;

#[test]
fn the_base_image_is_valid_and_has_what_the_edits_need() {
    let bytes = with_bitmaps();
    let image = open(&bytes).unwrap();
    assert_eq!(validate(&image).unwrap().findings, vec![]);
    let bitmaps = image.bitmaps();
    assert_eq!(bitmaps.len(), 2);
    assert_eq!(image.allocated_clusters(), 3);
}

#[test]
fn the_same_seed_gives_the_same_variant_and_seeds_differ() {
    let bytes = with_bitmaps();
    let m = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let (mut distinct, mut undone) = (BTreeSet::new(), 0);
    for seed in 0..200 {
        let a = m.mutant(seed);
        assert_eq!(a, m.mutant(seed), "seed {seed}");
        // A second mutator of the same input answers the same.
        assert_eq!(a, Mutator::new(&bytes, MutateOptions::default()).unwrap().mutant(seed));
        assert!((1..=3).contains(&a.edits.len()), "seed {seed}: {:?}", a.edits);
        if a.bytes == bytes {
            // Two edits that undo each other (a field set and set back).
            undone += 1;
        }
        distinct.insert(a.bytes);
    }
    assert!(undone <= 2, "{undone} variants equal the input");
    // Different seeds make different variants (a few may coincide: the same single edit).
    assert!(distinct.len() > 190, "{} distinct variants of 200", distinct.len());
}

#[test]
fn the_number_of_edits_follows_the_options() {
    let bytes = with_bitmaps();
    for (range, seeds) in [(1..=1, 50), (5..=5, 50), (0..=0, 5)] {
        let options = MutateOptions {
            edits: range.clone(),
            ..MutateOptions::default()
        };
        let m = Mutator::new(&bytes, options).unwrap();
        for seed in 0..seeds {
            let v = m.mutant(seed);
            assert_eq!(v.edits.len(), *range.start(), "seed {seed}: {:?}", v.edits);
        }
    }
    // No edit: the input as it is, its checksum already right.
    let m = Mutator::new(
        &bytes,
        MutateOptions {
            edits: 0..=0,
            ..MutateOptions::default()
        },
    )
    .unwrap();
    assert_eq!(m.mutant(3).bytes, bytes);
    assert_eq!(m.mutant(3).checksum, ChecksumState::Fixed);
}

#[test]
fn every_kind_of_edit_is_made() {
    let bytes = with_bitmaps();
    let m = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let mut seen = BTreeMap::new();
    for seed in 0..3000 {
        for e in m.mutant(seed).edits {
            *seen.entry(e.kind()).or_insert(0) += 1;
        }
    }
    let missing: Vec<_> = EditKind::ALL.iter().filter(|k| !seen.contains_key(k)).collect();
    assert_eq!(missing, Vec::<&EditKind>::new(), "{seen:?}");
}

#[test]
fn the_checksum_is_put_right_unless_asked_not_to() {
    let bytes = with_bitmaps();
    let fixed = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let broken = Mutator::new(
        &bytes,
        MutateOptions {
            fix_checksum: false,
            ..MutateOptions::default()
        },
    )
    .unwrap();
    let (mut checked, mut broke) = (0, 0);
    for seed in 0..500 {
        let v = fixed.mutant(seed);
        let Ok(image) = Image::parse(&v.bytes) else { continue };
        let report = validate(&image).unwrap();
        let has = |rule| report.findings.iter().any(|f| f.violation.rule() == rule);
        let (r24, r25) = (has(Rule::R24), has(Rule::R25));
        if v.checksum == ChecksumState::Fixed {
            assert!(!r25, "seed {seed}: {:?}", v.edits);
            checked += 1;
        }
        // The same edits without the fix: R25 whenever an edit changed the cluster's bytes (and
        // its magic is right: the checksum of a cluster without the magic is not checked).
        let w = broken.mutant(seed);
        assert_eq!(w.edits, v.edits);
        let want = match v.checksum {
            ChecksumState::NoExtension => ChecksumState::NoExtension,
            _ => ChecksumState::LeftAsIs,
        };
        assert_eq!(w.checksum, want);
        if v.checksum == ChecksumState::Fixed && !r24 && w.bytes != v.bytes {
            let image = Image::parse(&w.bytes).unwrap();
            let report = validate(&image).unwrap();
            assert!(
                report.findings.iter().any(|f| f.violation.rule() == Rule::R25),
                "seed {seed}: {:?}",
                v.edits
            );
            broke += 1;
        }
    }
    assert!(checked > 400, "{checked}");
    assert!(broke > 250, "{broke}");
}

#[test]
fn edits_display_and_serialize_exactly() {
    let e = Edit::Header {
        field: HeaderField::Tracks,
        from: 8,
        to: 0,
    };
    assert_eq!(e.to_string(), "header tracks: 8 -> 0");
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"kind":"header","field":"tracks","from":8,"to":0}"#
    );
    let e = Edit::Feature {
        feature: 1,
        field: FeatureField::DataSize,
        from: 72,
        to: 23,
    };
    assert_eq!(e.to_string(), "feature 1 data_size: 0x48 -> 0x17");
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"kind":"feature","feature":1,"field":"data_size","from":72,"to":23}"#
    );
    let e = Edit::FeatureSwap { a: 0, b: 1 };
    assert_eq!(e.to_string(), "swap features 0 and 1");
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"kind":"feature-swap","a":0,"b":1}"#
    );
}

#[test]
fn a_file_that_is_not_an_image_is_a_typed_error() {
    let opts = MutateOptions::default;
    assert!(matches!(
        Mutator::new(b"hello", opts()),
        Err(Error::NotParallels { found, version: 0 }) if found[..5] == *b"hello"
    ));
    assert!(matches!(Mutator::new(&[], opts()), Err(Error::EmptyFile)));
    // One letter off a magic is a damaged Parallels image (R1), not another format.
    let mut bytes = with_bitmaps();
    bytes[3] ^= 1;
    assert!(matches!(
        Mutator::new(&bytes, opts()),
        Err(Error::Invalid(Violation::BadMagic { .. }))
    ));
    let mut bytes = with_bitmaps();
    bytes[28..32].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        Mutator::new(&bytes, opts()),
        Err(Error::Invalid(Violation::ZeroTracks))
    ));
}

#[test]
fn variants_of_variants_never_panic_and_stay_within_max_len() {
    // Chains of 40 mutations from several seeds, each variant the next one's input, as a fuzzer
    // does; a variant whose header no longer passes is where a chain ends.
    let bytes = with_bitmaps();
    let max_len = bytes.len() as u64 + 8192;
    let options = MutateOptions {
        max_len: Some(max_len),
        edits: 1..=4,
        ..MutateOptions::default()
    };
    let mut restarts = 0;
    for chain in 0..20u64 {
        let mut cur = bytes.clone();
        for step in 0..30 {
            let m = match Mutator::new(&cur, options.clone()) {
                Ok(m) => m,
                Err(Error::Invalid(_) | Error::NotParallels { .. } | Error::EmptyFile) => {
                    // A header edit broke R1-R6: start again from the base, as a fuzzer would.
                    restarts += 1;
                    cur = bytes.clone();
                    Mutator::new(&cur, options.clone()).unwrap()
                }
                Err(e) => panic!("{e}"),
            };
            let v = m.mutant(chain * 1000 + step);
            assert!(v.bytes.len() as u64 <= max_len, "{:?}", v.edits);
            // Whatever the variant is, the reader and the predictor answer without panicking.
            if let Ok(image) = Image::parse(&v.bytes) {
                let _ = validate(&image);
            }
            let _ = qemu::predict(&v.bytes);
            cur = v.bytes;
        }
    }
    // Most variants were made from variants.
    assert!(restarts < 150, "{restarts} restarts in 600 steps");
}

#[test]
fn a_reused_buffer_makes_exactly_the_variants_of_mutant() {
    // The buffer copies back only what the last variant's edits wrote: every kind of edit
    // (records rewritten, the file cut and regrown, the checksum) must be undone exactly, so a
    // buffer reused over many seeds gives, seed for seed, what a fresh copy gives.
    let mut bases = vec![with_bitmaps()];
    for e in parallels_image::mutate::seed_corpus(3).unwrap() {
        if e.bytes.len() <= 1 << 20 && Mutator::new(&e.bytes, MutateOptions::default()).is_ok() {
            bases.push(e.bytes);
        }
    }
    assert!(bases.len() > 50, "{} bases", bases.len());
    let mut kinds = BTreeSet::new();
    for (b, bytes) in bases.iter().enumerate() {
        for options in [
            MutateOptions {
                edits: 1..=5,
                ..MutateOptions::default()
            },
            MutateOptions {
                fix_checksum: false,
                max_len: Some(bytes.len() as u64 + 4096),
                ..MutateOptions::default()
            },
        ] {
            let m = Mutator::new(bytes, options).unwrap();
            let mut buffer = m.buffer();
            assert_eq!(buffer.bytes(), &[] as &[u8]);
            let seeds = if b == 0 { 400 } else { 25 };
            for seed in 0..seeds {
                let fresh = m.mutant(seed);
                assert_eq!(
                    buffer.mutate(seed),
                    &fresh.bytes[..],
                    "base {b} seed {seed}: {:?}",
                    fresh.edits
                );
                assert_eq!(buffer.edits(), &fresh.edits[..], "base {b} seed {seed}");
                assert_eq!(buffer.checksum(), fresh.checksum, "base {b} seed {seed}");
                kinds.extend(fresh.edits.iter().map(Edit::kind));
            }
        }
    }
    // Every kind of edit was undone at least once.
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), EditKind::ALL.to_vec());
}

/// Whether QEMU's open got past its header checks and the extension's magic and checksum: it
/// opens, or refuses at the feature walk or the bitmap loader, or aborts, or crashes, or reads
/// past its buffer.
pub fn past_header_and_checksum(o: &QemuOutcome) -> bool {
    use QemuReason::*;
    !matches!(
        o.reason(),
        Some(
            NotParallels
                | ZeroTracks
                | ClusterTooBig
                | CatalogTooLarge
                | OffsetTooBig
                | BatRead
                | ExtensionRead
                | ExtensionMagic
                | ExtensionChecksum
        )
    )
}

/// An outcome's class: its kind and the check of QEMU's that decided it (`QemuReason`).
pub fn outcome_class(o: &QemuOutcome) -> String {
    format!("{} {:?}", o.kind(), o.reason())
}

/// One random bit flipped in the header, the BAT or the extension cluster (one of the three
/// drawn first, then a byte in it), the extension's MD5 left as it is.
fn byte_flip(bytes: &[u8], seed: u64) -> Vec<u8> {
    let image = Image::parse(&bytes).unwrap();
    let h = image.header();
    let ext = h.ext_offset().unwrap();
    let regions = [(0, 64), (64, h.bat_end()), (ext, ext + h.cluster_size())];
    // A small generator of our own: the test depends on no RNG crate's stream.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (s, e) = regions[(next() % 3) as usize];
    let at = (s + next() % (e - s)) as usize;
    let mut v = bytes.to_vec();
    v[at] ^= 1 << (next() % 8);
    v
}

#[test]
fn most_variants_get_past_qemus_header_and_checksum_with_more_outcomes_than_byte_flips() {
    let bytes = with_bitmaps();
    let m = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let (mut past, mut classes) = (0, BTreeMap::new());
    let (mut flips_past, mut flip_classes) = (0, BTreeSet::new());
    for seed in 0..1000 {
        let o = qemu::predict(&m.mutant(seed).bytes).unwrap().info;
        past += usize::from(past_header_and_checksum(&o));
        *classes.entry(outcome_class(&o)).or_insert(0) += 1;
        let o = qemu::predict(&byte_flip(&bytes, seed)).unwrap().info;
        flips_past += usize::from(past_header_and_checksum(&o));
        flip_classes.insert(outcome_class(&o));
    }
    eprintln!(
        "variants: {past}/1000 past, {} outcomes; byte flips: {flips_past}/1000 past, {} outcomes\n{classes:#?}\n{flip_classes:#?}",
        classes.len(),
        flip_classes.len()
    );
    assert!(
        past >= 500,
        "{past} of 1000 variants got past QEMU's header and checksum: {classes:#?}"
    );
    assert!(
        classes.len() > flip_classes.len(),
        "{} outcomes from variants, {} from byte flips",
        classes.len(),
        flip_classes.len()
    );
    assert!(past > flips_past);
}
