//! Reading guest data through a three-level snapshot chain (a bundle) against reading the same
//! bytes from a single image: `GuestDisk::read_at` over the whole 64 MiB disk in 1 MiB reads.
//! The chain's root writes every cluster, the middle one every fourth, the top every eighth;
//! the single image holds the result.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parallels_image::{
    bundle::BundleBuilder, bundle::BundleOptions, bundle::GuestDisk, bundle::SnapshotSpec, GuestData, ImageBuilder,
};
use uuid::Uuid;

const DISK: u64 = 64 << 20;
const CLUSTER: u64 = 64 << 10;

fn fills(every: u64, byte: u8) -> Vec<(u64, GuestData)> {
    (0..DISK / CLUSTER)
        .filter(|i| i % every == 0)
        .map(|i| (i * CLUSTER, GuestData::Fill { len: CLUSTER, byte }))
        .collect()
}

fn chain(dir: &Path) -> GuestDisk {
    let guid = |n: u128| Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 | n);
    let snap = |n, parent, data| SnapshotSpec {
        guid: guid(n),
        parent,
        data,
        bitmaps: Vec::new(),
    };
    let path = dir.join("chain.hdd");
    BundleBuilder::new(DISK)
        .cluster_size(CLUSTER)
        .snapshot(snap(1, None, fills(1, 0x11)))
        .snapshot(snap(2, Some(guid(1)), fills(4, 0x22)))
        .snapshot(snap(3, Some(guid(2)), fills(8, 0x33)))
        .create(&path, false)
        .expect("the chain is written");
    GuestDisk::open(&path, None, BundleOptions::default()).expect("the chain opens")
}

fn single(dir: &Path) -> GuestDisk {
    let path = dir.join("single.hds");
    let mut b = ImageBuilder::new(DISK).cluster_size(CLUSTER);
    for i in 0..DISK / CLUSTER {
        let byte = if i % 8 == 0 {
            0x33
        } else if i % 4 == 0 {
            0x22
        } else {
            0x11
        };
        b = b.data(i * CLUSTER, GuestData::Fill { len: CLUSTER, byte });
    }
    b.create_file(&path, false).expect("the image is written");
    GuestDisk::open_image(&path).expect("the image opens")
}

fn read_all(disk: &GuestDisk, buf: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    for off in (0..DISK).step_by(buf.len()) {
        disk.read_at(off, buf).unwrap();
        sum = sum.wrapping_add(u64::from(buf[0]));
    }
    sum
}

fn chain_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (chain, single) = (chain(dir.path()), single(dir.path()));
    assert_eq!(chain.chain_len(), 3);
    // Sanity: the two disks read the same bytes.
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for off in (0..DISK).step_by(1 << 20) {
        chain.read_at(off, &mut a).unwrap();
        single.read_at(off, &mut b).unwrap();
        assert!(a == b, "guest bytes at {off}");
    }
    let mut g = c.benchmark_group("chain_read_64MiB");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(DISK));
    g.bench_function("single_image", |bch| bch.iter(|| black_box(read_all(&single, &mut a))));
    g.bench_function("three_level_chain", |bch| {
        bch.iter(|| black_box(read_all(&chain, &mut a)))
    });
    g.finish();
}

criterion_group!(benches, chain_read);
criterion_main!(benches);
