//! Building a 16 TiB sparse image (1 MiB clusters, 16 Mi BAT entries) with some data and four
//! bitmaps at 64 KiB granularity, into a sink that keeps nothing and into a temporary file.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use parallels_image::{GuestData, ImageBuilder};

use common::{realistic_extents, spec, NullSink};

const DISK: u64 = 16 << 40;
const GRAN: u64 = 64 << 10;
const CLUSTER: u64 = 1 << 20;

fn builder() -> ImageBuilder {
    let granules = DISK / GRAN;
    let mut b = ImageBuilder::new(DISK).cluster_size(CLUSTER);
    // 64 data clusters spread over the disk.
    for i in 0..64u64 {
        b = b.data(
            i * (DISK / 64),
            GuestData::Fill {
                len: CLUSTER,
                byte: 0xaa,
            },
        );
    }
    for n in 0..4u8 {
        b = b.bitmap(spec(
            n + 1,
            GRAN,
            realistic_extents(granules, GRAN, CLUSTER * 8, u64::from(n)),
        ));
    }
    b
}

fn build(c: &mut Criterion) {
    let b = builder();
    let mut sink = NullSink::default();
    let layout = b.write_to(&mut sink).unwrap();
    eprintln!(
        "build: {} bytes written, file {} bytes, {} bitmap clusters",
        sink.written,
        layout.file_len,
        layout.l1.iter().flatten().filter(|&&e| e > 1).count()
    );
    let mut g = c.benchmark_group("build_16TiB_4_bitmaps");
    g.sample_size(10);
    g.bench_function("write_to_null_sink", |bench| {
        bench.iter(|| {
            let mut sink = NullSink::default();
            black_box(b.write_to(&mut sink).unwrap())
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.hds");
    g.bench_function("write_to_tempfile", |bench| {
        bench.iter(|| {
            let mut f = std::fs::File::create(&path).unwrap();
            black_box(b.write_to(&mut f).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
