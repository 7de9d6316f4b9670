//! Bitmap decoding of a 64 TiB disk at 64 KiB granularity (2^30 granules, 128 MiB of bitmap,
//! 128 L1 entries of 1 MiB clusters): to runs, to extents, and to serialized bytes. Throughput
//! is in bytes of bitmap.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parallels_image::raw::bitmap::{L1_CLEAN, L1_DIRTY};
use parallels_image::ImageBuilder;
use parallels_image::{Image, Source};

use common::{realistic_extents, spec, SparseImage};

const DISK: u64 = 64 << 40;
const GRAN: u64 = 64 << 10;
const CLUSTER: u64 = 1 << 20;

fn bitmap(c: &mut Criterion) {
    let granules = DISK / GRAN;
    let extents = realistic_extents(granules, GRAN, CLUSTER * 8, 7);
    let mut img = SparseImage::default();
    let layout = ImageBuilder::new(DISK)
        .cluster_size(CLUSTER)
        .bitmap(spec(1, GRAN, extents.clone()))
        .write_to(&mut img)
        .unwrap();
    let l1 = &layout.l1[0];
    let count = |v: u64| l1.iter().filter(|&&e| e == v).count();
    let (clean, dirty) = (count(L1_CLEAN), count(L1_DIRTY));
    eprintln!(
        "bitmap: {} L1 entries: {clean} clean, {dirty} all dirty, {} clusters; {} dirty runs",
        l1.len(),
        l1.len() - clean - dirty,
        extents.len()
    );
    let src: &dyn Source = &img;
    let image = Image::parse(src).unwrap();
    let b = image.bitmaps()[0];
    let bytes = b.serialized_len();
    assert_eq!(bytes, 128 << 20);
    // Sanity: decoding gives back what was built.
    assert_eq!(b.dirty_extents().unwrap(), extents);

    let mut g = c.benchmark_group("bitmap_64TiB_64KiB");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("for_each_dirty_run", |bench| {
        bench.iter(|| {
            let mut n = 0u64;
            b.for_each_dirty_run(|s, l| n = n.wrapping_add(s ^ l)).unwrap();
            black_box(n)
        })
    });
    g.bench_function("dirty_extents", |bench| {
        bench.iter(|| black_box(b.dirty_extents().unwrap()))
    });
    g.bench_function("write_serialized", |bench| {
        bench.iter(|| {
            let mut sink = std::io::sink();
            b.write_serialized(&mut sink).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bitmap);
criterion_main!(benches);
