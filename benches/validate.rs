//! Validation speed: the header and BAT of large images, and a full 1 MiB extension cluster of
//! bitmap records side by side with a bare MD5 of the same bytes.

mod common;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use md5::{Digest, Md5};
use parallels_image::qemu;
use parallels_image::Extension;
use parallels_image::{Image, Source};

use common::{four_bitmaps, full_extension, half_allocated, without_extension, EXT_CLUSTER};

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
                let report = parallels_image::validate(&Image::parse(&img).unwrap()).unwrap();
                assert!(report.findings.is_empty(), "{:?}", report.findings.first());
                img
            })
        };
        g.throughput(Throughput::Bytes(4 * entries));
        g.bench_function(BenchmarkId::new("parse_validate", entries), |b| {
            let src = source();
            b.iter(|| {
                let image = Image::parse(src).unwrap();
                black_box(parallels_image::validate(&image).unwrap())
            })
        });
        // What `prlimg check` does: the BAT read again at each walk, duplicates and overlaps
        // found with one bit per cluster of the file.
        g.bench_function(BenchmarkId::new("parse_compact_validate", entries), |b| {
            let src = source();
            b.iter(|| {
                let image = Image::parse_compact(src, parallels_image::RuleMode::Strict).unwrap();
                black_box(parallels_image::validate(&image).unwrap())
            })
        });
        g.bench_function(BenchmarkId::new("predict_image", entries), |b| {
            let image = Image::parse(source()).unwrap();
            b.iter(|| black_box(qemu::predict_image(&image)))
        });
    }
    g.finish();
}

fn extension(c: &mut Criterion) {
    let img = full_extension();
    let src: &dyn Source = &img;
    let image = Image::parse(src).unwrap();
    let report = parallels_image::validate(&image).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings.first());
    let ext = image.extension().unwrap();
    let off = ext.file_offset;
    let cluster = src.read_at(off, EXT_CLUSTER).unwrap().into_owned();
    assert_eq!(cluster.len() as u64, EXT_CLUSTER);
    // The same file without the extension: what the header and BAT cost on their own.
    let bare = without_extension(&img);

    let mut g = c.benchmark_group("extension_1MiB");
    g.throughput(Throughput::Bytes(EXT_CLUSTER));
    g.bench_function("md5", |b| b.iter(|| black_box(Md5::digest(black_box(&cluster[24..])))));
    g.bench_function("walk_and_hash", |b| {
        b.iter(|| {
            let ext = Extension::new(off, EXT_CLUSTER, Cow::Borrowed(black_box(&cluster[..])));
            black_box((ext.features().len(), ext.computed_checksum()))
        })
    });
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let image = Image::parse(src).unwrap();
            black_box(parallels_image::validate(&image).unwrap())
        })
    });
    let four = four_bitmaps();
    let four_src: &dyn Source = &four;
    let four_image = Image::parse(four_src).unwrap();
    assert_eq!(four_image.bitmaps().len(), 4);
    assert!(parallels_image::validate(&four_image).unwrap().findings.is_empty());
    g.bench_function("parse_validate_4_bitmaps", |b| {
        b.iter(|| {
            let image = Image::parse(four_src).unwrap();
            black_box(parallels_image::validate(&image).unwrap())
        })
    });
    let bare_src: &dyn Source = &bare;
    g.bench_function("parse_validate_without_extension", |b| {
        b.iter(|| {
            let image = Image::parse(bare_src).unwrap();
            black_box(parallels_image::validate(&image).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, header_bat, extension);
criterion_main!(benches);
