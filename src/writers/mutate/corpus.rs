//! The seed corpus: valid images of many shapes, every defect, variants.

use super::{Edit, MutateOptions, Mutator};
use crate::error::Result;
use crate::header::Variant;
use crate::image::Image;

/// What a seed-corpus file is ([`seed_corpus`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "kebab-case")
)]
pub enum CorpusKind {
    /// A valid image of some shape.
    Valid {
        /// The shape, in words.
        shape: String,
    },
    /// A valid base with one defect of the catalogue ([`crate::corrupt`]).
    Defect {
        /// The defect's name.
        defect: &'static str,
        /// The base it was planned on (the name of a valid entry).
        base: String,
    },
    /// A variant of a valid base made by [`Mutator`].
    Mutant {
        /// The base (the name of a valid entry).
        base: String,
        /// The mutator's seed.
        seed: u64,
        /// Its edits.
        edits: Vec<Edit>,
    },
}

/// One file of a seed corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusEntry {
    /// A file name (`valid-v2-bitmaps.hds`, `defect-bat-entry-duplicate.hds`, `mutant-000007.hds`).
    pub name: String,
    /// What it is.
    pub kind: CorpusKind,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// How many mutants [`seed_corpus`] adds.
pub const CORPUS_MUTANTS: usize = 48;

/// A reproducible seed corpus for fuzzers of Parallels readers: valid images of many shapes
/// (both magics, cluster sizes from 512 bytes to 64 KiB, no extension, empty, clean, dirty and
/// all-dirty bitmaps, several L1 entries, `inuse` "v2.1", a compact v1 image), every defect of the catalogue
/// ([`crate::corrupt::DefectKind::ALL`]) on the first base it applies to, and
/// [`CORPUS_MUTANTS`] variants. Clusters are small so that a fuzzer's run stays cheap; no file
/// is larger than 1 MiB. The same `seed` gives the same files.
pub fn seed_corpus(seed: u64) -> Result<Vec<CorpusEntry>> {
    use crate::builder::{BitmapSpec, GuestData, ImageBuilder};
    use crate::corrupt::{plan, DefectKind};

    const MIB: u64 = 1 << 20;
    let random = |k: u64, size: u64, g: u64, d: f64| BitmapSpec::random(seed.wrapping_add(k), size, g, d);
    let fill = |len, byte| GuestData::Fill { len, byte };
    // 60 MiB of 4 KiB clusters, three data clusters, two bitmaps of several L1 entries each.
    let two_bitmaps = |variant| {
        ImageBuilder::new(60 * MIB)
            .variant(variant)
            .cluster_size(4096)
            .data(0, fill(8192, 0x11))
            .data(MIB, fill(4096, 0x22))
            .data(59 * MIB, fill(4096, 0x33))
            .bitmap(BitmapSpec {
                id: [0xa1; 16],
                granularity: 512,
                extents: vec![(0, 512), (16 * MIB, 512), (32 * MIB, 512), (48 * MIB, 512)],
            })
            .bitmap(BitmapSpec {
                id: [0xb2; 16],
                granularity: 65536,
                extents: vec![(65536, 65536), (10 * MIB, 65536)],
            })
    };
    let shapes: Vec<(&str, ImageBuilder)> = vec![
        ("v2-empty-512", ImageBuilder::new(MIB).cluster_size(512)),
        (
            "v2-data-4k",
            ImageBuilder::new(4 * MIB).cluster_size(4096).data(0, fill(4096, 0xaa)),
        ),
        (
            "v1-data-4k",
            ImageBuilder::new(4 * MIB)
                .variant(Variant::V1)
                .cluster_size(4096)
                .data(MIB, fill(8192, 0x5a)),
        ),
        (
            "v2-bitmap-4k",
            ImageBuilder::new(8 * MIB)
                .cluster_size(4096)
                .data(0, fill(4096, 0x11))
                .bitmap(random(1, 8 * MIB, 4096, 0.3)?),
        ),
        ("v2-two-bitmaps-multi-l1", two_bitmaps(Variant::V2)),
        ("v1-two-bitmaps-multi-l1", two_bitmaps(Variant::V1)),
        (
            "v2-clean-and-all-dirty-bitmaps-64k",
            ImageBuilder::new(16 * MIB)
                .cluster_size(65536)
                .bitmap(random(2, 16 * MIB, 65536, 0.0)?)
                .bitmap(random(3, 16 * MIB, 65536, 1.0)?),
        ),
        (
            "v2-bitmap-512-inuse-v21",
            ImageBuilder::new(2 * MIB)
                .cluster_size(512)
                .inuse(crate::raw::header::INUSE_CLOSED_V21)
                .data(512, fill(512, 0x77))
                .bitmap(random(4, 2 * MIB, 512, 0.5)?),
        ),
        // The two other bases the defect catalogue needs: a disk with nothing after the BAT, a
        // v1 image whose data area starts right after the BAT.
        ("v2-empty-1m-cluster", ImageBuilder::new(MIB)),
        (
            "v1-compact-64k",
            ImageBuilder::new(20 * MIB)
                .variant(Variant::V1)
                .cluster_size(65536)
                .compact_v1(true)
                .data(0, fill(4096, 0x99)),
        ),
    ];
    let mut valid = Vec::new();
    for (shape, builder) in shapes {
        let (bytes, _) = builder.to_vec()?;
        valid.push((format!("valid-{shape}.hds"), shape, bytes));
    }
    let mut out: Vec<CorpusEntry> = valid
        .iter()
        .map(|(name, shape, bytes)| CorpusEntry {
            name: name.clone(),
            kind: CorpusKind::Valid {
                shape: shape.to_string(),
            },
            bytes: bytes.clone(),
        })
        .collect();
    // Defects on the two catalogue bases (the shapes `prlimg corrupt`'s tests use).
    let bases: Vec<&(String, &str, Vec<u8>)> = valid
        .iter()
        .filter(|v| v.1.ends_with("multi-l1") || v.1 == "v2-empty-1m-cluster" || v.1 == "v1-compact-64k")
        .collect();
    for &defect in DefectKind::ALL.iter() {
        for (name, _, bytes) in &bases {
            let image = Image::parse(bytes)?;
            let Ok(patch) = plan(&image, defect, seed) else {
                continue;
            };
            let mut damaged = bytes.clone();
            patch.apply_to_vec(&mut damaged);
            out.push(CorpusEntry {
                name: format!("defect-{}.hds", defect.name()),
                kind: CorpusKind::Defect {
                    defect: defect.name(),
                    base: name.clone(),
                },
                bytes: damaged,
            });
            break;
        }
    }
    let mutable: Vec<&(String, &str, Vec<u8>)> = valid.iter().filter(|v| v.2.len() as u64 <= MIB / 2).collect();
    for k in 0..CORPUS_MUTANTS {
        let (name, _, bytes) = mutable[k % mutable.len()];
        let m = Mutator::new(bytes, MutateOptions::default())?;
        let s = seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
        let v = m.mutant(s);
        out.push(CorpusEntry {
            name: format!("mutant-{k:06}.hds"),
            kind: CorpusKind::Mutant {
                base: name.clone(),
                seed: s,
                edits: v.edits,
            },
            bytes: v.bytes,
        });
    }
    Ok(out)
}
