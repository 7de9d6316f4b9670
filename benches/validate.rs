//! Validation speed: the header and BAT of large images, and a full 1 MiB extension cluster of
//! bitmap records side by side with a bare MD5 of the same bytes.

mod common;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use md5::{Digest, Md5};
use parallels_image::builder::{BitmapSpec, ImageBuilder};
use parallels_image::extension::Extension;
use parallels_image::qemu;
use parallels_image::raw::bitmap::DirtyBitmapFeature;
use parallels_image::raw::feature::FeatureRecord;
use parallels_image::{Image, Source};

use common::{half_allocated, Rng, SparseImage};

/// `Image::parse` + `validate` for 1 M and 16 M BAT entries of 64 KiB clusters, half of them
/// allocated; and `qemu::predict_image` on the same parsed image (the rest of `prlimg check`).
fn header_bat(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_bat");
    g.sample_size(20);
    for entries in [1u64 << 20, 16 << 20] {
        // Built on first use, so that a filtered run does not pay for it.
        let img = OnceCell::new();
        let source = || -> &dyn Source {
            img.get_or_init(|| {
                let img = half_allocated(entries, 64 << 10);
                // Sanity: the image is clean, so the numbers are those of the common case.
                let report = Image::parse(&img).unwrap().validate().unwrap();
                assert!(report.findings.is_empty(), "{:?}", report.findings.first());
                img
            })
        };
        g.throughput(Throughput::Bytes(4 * entries));
        g.bench_function(BenchmarkId::new("parse_validate", entries), |b| {
            let src = source();
            b.iter(|| {
                let image = Image::parse(src).unwrap();
                black_box(image.validate().unwrap())
            })
        });
        g.bench_function(BenchmarkId::new("predict_image", entries), |b| {
            let image = Image::parse(source()).unwrap();
            b.iter(|| black_box(qemu::predict_image(&image)))
        });
    }
    g.finish();
}

/// Cluster size of the extension bench.
const EXT_CLUSTER: u64 = 1 << 20;

/// A 64 GiB disk (64 Ki BAT entries, none allocated) whose 1 MiB extension cluster is filled
/// with bitmap records: 512-byte granularity, so each L1 table has 16 entries, a mix of clean
/// and all-dirty markers (no bitmap clusters: the bench measures the extension alone).
fn full_extension() -> SparseImage {
    let virtual_size = 64u64 << 30;
    let nb_sectors = virtual_size / 512;
    let l1_size = nb_sectors.div_ceil(EXT_CLUSTER * 8) as usize;
    let record = 24 + 32 + 8 * l1_size as u64;
    // Header 24 bytes and end record 24 bytes around the records.
    let count = (EXT_CLUSTER - 48) / record;
    let mut rng = Rng::new(1);
    let mut b = ImageBuilder::new(virtual_size).cluster_size(EXT_CLUSTER);
    for i in 0..count {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_le_bytes());
        id[8..].copy_from_slice(&rng.next().to_le_bytes());
        let l1 = (0..l1_size).map(|_| u64::from(rng.next() % 5 == 0)).collect();
        b = b.feature(FeatureRecord::dirty_bitmap(DirtyBitmapFeature::new(
            nb_sectors, id, 1, l1,
        )));
    }
    let mut img = SparseImage::default();
    b.write_to(&mut img).unwrap();
    img
}

/// The common case, on the same disk: four bitmaps of 64 KiB granularity, two clean and two
/// all dirty (their L1 tables hold only the markers), and the rest of the 1 MiB cluster zeros.
fn four_bitmaps() -> SparseImage {
    let virtual_size = 64u64 << 30;
    let mut b = ImageBuilder::new(virtual_size).cluster_size(EXT_CLUSTER);
    for i in 0..4u8 {
        let extents = if i % 2 == 0 { vec![] } else { vec![(0, virtual_size)] };
        b = b.bitmap(BitmapSpec {
            id: [i + 1; 16],
            granularity: 64 << 10,
            extents,
        });
    }
    let mut img = SparseImage::default();
    b.write_to(&mut img).unwrap();
    img
}

fn extension(c: &mut Criterion) {
    let img = full_extension();
    let src: &dyn Source = &img;
    let image = Image::parse(src).unwrap();
    let report = image.validate().unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings.first());
    let ext = image.extension().unwrap();
    let off = ext.file_offset;
    let cluster = src.read_at(off, EXT_CLUSTER).unwrap().into_owned();
    assert_eq!(cluster.len() as u64, EXT_CLUSTER);
    // The same file without the extension: what the header and BAT cost on their own.
    let mut bare = SparseImage::default();
    let header = src.read_at(0, 64).unwrap();
    let mut header = header.into_owned();
    header[56..64].fill(0);
    bare.put(0, header);
    bare.set_len(src.size());

    let mut g = c.benchmark_group("extension_1MiB");
    g.throughput(Throughput::Bytes(EXT_CLUSTER));
    g.bench_function("md5", |b| b.iter(|| black_box(Md5::digest(black_box(&cluster[24..])))));
    g.bench_function("walk", |b| {
        b.iter(|| {
            black_box(Extension::walk(
                off,
                EXT_CLUSTER,
                Cow::Borrowed(black_box(&cluster[..])),
            ))
        })
    });
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let image = Image::parse(src).unwrap();
            black_box(image.validate().unwrap())
        })
    });
    let four = four_bitmaps();
    let four_src: &dyn Source = &four;
    let four_image = Image::parse(four_src).unwrap();
    assert_eq!(four_image.bitmaps().len(), 4);
    assert!(four_image.validate().unwrap().findings.is_empty());
    g.bench_function("parse_validate_4_bitmaps", |b| {
        b.iter(|| {
            let image = Image::parse(four_src).unwrap();
            black_box(image.validate().unwrap())
        })
    });
    let bare_src: &dyn Source = &bare;
    g.bench_function("parse_validate_without_extension", |b| {
        b.iter(|| {
            let image = Image::parse(bare_src).unwrap();
            black_box(image.validate().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, header_bat, extension);
criterion_main!(benches);
