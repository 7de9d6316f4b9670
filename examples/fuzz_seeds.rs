//! Writes the seed corpus of the fuzz targets in `fuzz/`:
//!
//! ```text
//! cargo run --example fuzz_seeds -- fuzz/corpus
//! ```
//!
//! One folder per target under the given folder: built images of both variants with bitmaps, the
//! QEMU sample images (decompressed from `../shared/samples/qemu/*.bz2` when that folder is
//! there), and every defect of `DefectKind::ALL` applied to the built images; the headers,
//! BATs and extension clusters of all of them for the targets that take those alone; and a few
//! fixed byte strings for the structure-aware `roundtrip` target. Files are named after what they
//! hold, so running it again rewrites the same files.

use std::io::Read;
use std::path::{Path, PathBuf};

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::raw::feature::FeatureRecord;
use parallels_image::raw::header::INUSE_CLOSED_V21;
use parallels_image::{BitmapSpec, GuestData, ImageBuilder};
use parallels_image::{Image, Variant};

/// Largest seed of the whole-image targets (`image`, `check` and their `_mutator` variants),
/// their `-max_len` in `fuzz/smoke.sh` and `fuzz/oss-fuzz/build.sh`. libFuzzer's own work per
/// run (copying, hashing and mutating the input) grows with the input, and so does the
/// checker's per-entry work on the BAT. 128 KiB keeps the mutator's corpus images of 4 KiB and
/// 64 KiB clusters (`seed_corpus`), which reach about 100 edges the smaller bases below do not;
/// 256 KiB (the limit before) held no seed more.
const MAX_WHOLE: usize = 128 << 10;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let mut images: Vec<(String, Vec<u8>)> = Vec::new();

    let bases = bases()?;
    for (name, bytes) in &bases {
        images.push((format!("built-{name}"), bytes.clone()));
    }
    images.extend(samples()?);
    // The mutator's seed corpus: 8 valid shapes, every defect, variants; clusters of 512 B to
    // 64 KiB.
    for e in parallels_image::mutate::seed_corpus(0)? {
        images.push((format!("corpus-{}", e.name), e.bytes));
    }
    // Every defect, on every base it suits.
    for (name, bytes) in &bases {
        // Defects are planned on valid images (the unknown-feature base is valid only in lenient
        // mode).
        let Ok(image) = parallels_image::open(bytes) else {
            continue;
        };
        for &defect in DefectKind::ALL {
            let Ok(patch) = corrupt::plan(&image, defect, 0) else {
                continue;
            };
            let mut damaged = bytes.clone();
            patch.apply_to_vec(&mut damaged);
            images.push((format!("{name}-{}-{}", defect.rule(), defect.name()), damaged));
        }
    }

    let dir = |t: &str| -> Result<PathBuf> {
        let d = out.join(t);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let (d_image, d_check, d_image_m, d_check_m, d_header, d_bat, d_ext, d_round) = (
        dir("image")?,
        dir("check")?,
        dir("image_mutator")?,
        dir("check_mutator")?,
        dir("header")?,
        dir("bat")?,
        dir("extension")?,
        dir("roundtrip")?,
    );
    for (name, bytes) in &images {
        // The whole-image targets get small images only: one run of a seed with 1 MiB clusters
        // hashes a megabyte, and their -max_len (fuzz/smoke.sh) is MAX_WHOLE (a longer seed
        // would be cut short, its extension cluster lost). The bases below have the shapes of
        // the larger ones with smaller clusters and tables.
        if bytes.len() <= MAX_WHOLE {
            for d in [&d_image, &d_check, &d_image_m, &d_check_m] {
                std::fs::write(d.join(name), bytes)?;
            }
        }
        std::fs::write(d_header.join(name), &bytes[..bytes.len().min(64)])?;
        if let Some(seed) = bat_seed(bytes) {
            std::fs::write(d_bat.join(name), seed)?;
        }
        if let Some(body) = extension_body(bytes) {
            std::fs::write(d_ext.join(name), body)?;
        }
    }
    // The roundtrip target reads its input through `arbitrary`: fixed pseudo-random strings.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in [8usize, 24, 48, 96, 160, 256, 512] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(d_round.join(format!("random-{len}")), bytes)?;
    }
    println!("{} images; seeds in {}", images.len(), out.display());
    Ok(())
}

/// Small valid images of both variants, with data and bitmaps, clusters of 512 bytes to 16 KiB
/// (1536: not a power of two), none longer than 64 KiB.
fn bases() -> Result<Vec<(String, Vec<u8>)>> {
    let bm = |id: u8, granularity: u64, extents: Vec<(u64, u64)>| BitmapSpec {
        id: [id; 16],
        granularity,
        extents,
    };
    let data = |b: ImageBuilder| {
        b.data(0, GuestData::Fill { len: 4096, byte: 0x11 })
            .data(40 << 10, GuestData::Bytes((0..3000u32).map(|i| i as u8).collect()))
            .data(100 << 10, GuestData::Fill { len: 512, byte: 0x44 })
    };
    let two_bitmaps_4k = |b: ImageBuilder| {
        b.data(0, GuestData::Fill { len: 8192, byte: 0x11 })
            .data(1 << 20, GuestData::Fill { len: 4096, byte: 0x22 })
            .data(19 << 20, GuestData::Fill { len: 4096, byte: 0x33 })
            .bitmap(bm(
                13,
                512,
                vec![(0, 512), (8 << 20, 512), (16 << 20, 512), (19 << 20, 512)],
            ))
            .bitmap(bm(14, 65536, vec![(65536, 65536), (10 << 20, 65536)]))
    };
    let list: Vec<(&str, ImageBuilder)> = vec![
        (
            "v2-4k-bitmaps",
            data(ImageBuilder::new(256 << 10).cluster_size(4096))
                .bitmap(bm(1, 512, vec![(0, 4096), (65536, 1000), (200 << 10, 3)]))
                .bitmap(bm(2, 65536, vec![(0, 256 << 10)])),
        ),
        (
            "v1-1536-bitmaps",
            data(ImageBuilder::new(192 << 10).variant(Variant::V1).cluster_size(1536))
                .inuse(INUSE_CLOSED_V21)
                .bitmap(bm(3, 1024, vec![(3000, 70000)])),
        ),
        (
            "v1-compact-4k-bitmap",
            data(
                ImageBuilder::new(128 << 10)
                    .variant(Variant::V1)
                    .cluster_size(4096)
                    .compact_v1(true),
            )
            .bitmap(bm(4, 512, vec![(512, 512), (8192, 8192)])),
        ),
        (
            "v2-512-multichunk",
            ImageBuilder::new(3 << 20)
                .cluster_size(512)
                .data(1 << 20, GuestData::Fill { len: 1024, byte: 0x22 })
                .bitmap(bm(5, 512, vec![(0, 2 << 20), (2 << 20, 4096), (3 << 20, 0)])),
        ),
        ("v2-4k-data", data(ImageBuilder::new(256 << 10).cluster_size(4096))),
        (
            "v1-512-empty",
            ImageBuilder::new(64 << 10).variant(Variant::V1).cluster_size(512),
        ),
        // The shapes of the mutator's larger corpus images (`seed_corpus`: 60 MiB of 4 KiB
        // clusters, 64 KiB clusters) with clusters small enough for MAX_WHOLE: two bitmaps of
        // two L1 entries each (one cluster of 1 KiB holds the bits of 4 MiB at 512 B), clean
        // and all-dirty bitmaps, a compact v1 image.
        (
            "v2-1k-two-bitmaps-multi-l1",
            ImageBuilder::new(7 << 20)
                .cluster_size(1024)
                .data(0, GuestData::Fill { len: 2048, byte: 0x11 })
                .data(5 << 20, GuestData::Fill { len: 1024, byte: 0x33 })
                .bitmap(bm(
                    7,
                    512,
                    vec![(0, 512), (2 << 20, 512), (4 << 20, 512), (6 << 20, 4096)],
                ))
                .bitmap(bm(8, 65536, vec![(65536, 65536), (6 << 20, 65536)])),
        ),
        (
            "v1-1k-two-bitmaps-multi-l1",
            ImageBuilder::new(7 << 20)
                .variant(Variant::V1)
                .cluster_size(1024)
                .data(1 << 20, GuestData::Fill { len: 1024, byte: 0x22 })
                .bitmap(bm(9, 512, vec![(512, 512), (5 << 20, 1024)]))
                .bitmap(bm(10, 2048, vec![(0, 7 << 20)])),
        ),
        // The corpus's two-bitmap shape itself (4 KiB clusters, a chunk of 16 MiB at 512 B),
        // on 20 MiB instead of 60: two L1 entries, a BAT of 20 KiB.
        (
            "v2-4k-two-bitmaps-multi-l1",
            two_bitmaps_4k(ImageBuilder::new(20 << 20).cluster_size(4096)),
        ),
        (
            "v1-4k-two-bitmaps-multi-l1",
            two_bitmaps_4k(ImageBuilder::new(20 << 20).variant(Variant::V1).cluster_size(4096)),
        ),
        (
            "v2-16k-clean-and-all-dirty-bitmaps",
            ImageBuilder::new(2 << 20)
                .cluster_size(16384)
                .bitmap(bm(11, 16384, vec![]))
                .bitmap(bm(12, 16384, vec![(0, 2 << 20)])),
        ),
        (
            "v1-compact-8k",
            ImageBuilder::new(1 << 20)
                .variant(Variant::V1)
                .cluster_size(8192)
                .compact_v1(true)
                .data(0, GuestData::Fill { len: 4096, byte: 0x99 }),
        ),
        (
            "v2-4k-unknown-feature",
            ImageBuilder::new(64 << 10)
                .cluster_size(4096)
                .bitmap(bm(6, 4096, vec![(4096, 4096)]))
                .feature(FeatureRecord::opaque(0x1234_5678_9abc_def0, 0, vec![7; 20])),
        ),
    ];
    let mut out = Vec::new();
    for (name, b) in list {
        out.push((name.to_string(), b.to_vec()?.0));
    }
    Ok(out)
}

/// The QEMU samples, decompressed; none (with a message) when the folder is missing.
fn samples() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/qemu");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("fuzz_seeds: no samples at {}; seeding without them", dir.display());
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "bz2")) {
        let mut bytes = Vec::new();
        bzip2::read::BzDecoder::new(std::fs::File::open(&p)?).read_to_end(&mut bytes)?;
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        out.push((format!("sample-{stem}"), bytes));
    }
    Ok(out)
}

/// Input of the `bat` target: its six control bytes (variant, a cluster size of 1, 2, 3 or 8
/// sectors, 63 data clusters) and the image's BAT.
fn bat_seed(bytes: &[u8]) -> Option<Vec<u8>> {
    let image = Image::parse(&bytes).ok()?;
    let h = image.header();
    let variant = u8::from(h.variant == Variant::V1);
    let cluster = match h.cluster_sectors {
        1 => 0,
        2 => 1,
        3 => 2,
        _ => 3,
    };
    let mut seed = vec![variant, cluster, 63, 0, 0, 0];
    for e in image.bat().iter().take(8192) {
        seed.extend_from_slice(&e.to_le_bytes());
    }
    Some(seed)
}

/// Input of the `extension` target: the extension cluster after its 24-byte header, without its
/// trailing zeros.
fn extension_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let image = Image::parse(&bytes).ok()?;
    let ext = image.extension()?;
    let body = ext.bytes().get(24..)?;
    let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Some(body[..end].to_vec())
}
