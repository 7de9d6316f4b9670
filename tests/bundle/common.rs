//! Shared fixtures: the Parallels Desktop samples unpacked into a temporary folder, and bundles
//! built by the crate.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use parallels_image::{bundle::BundleBuilder, bundle::SnapshotSpec, GuestData};
use uuid::Uuid;

use crate::fixtures::needs;

pub const MIB: u64 = 1 << 20;

/// Copies the Parallels Desktop sample `name` (`expanding.hdd`, `plain.hdd`) into `into`,
/// decompressing its `.hds.gz`; returns the bundle folder, or `None` when the samples are absent.
pub fn pd_sample(test: &str, name: &str, into: &Path) -> Option<PathBuf> {
    let src = needs::pd_samples(test)?.join(name);
    let dst = into.join(name);
    fs::create_dir_all(&dst).unwrap();
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(".gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(fs::File::open(entry.path()).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            fs::write(dst.join(stem), out).unwrap();
        } else {
            fs::copy(entry.path(), dst.join(&file)).unwrap();
        }
    }
    Some(dst)
}

/// The Parallels Desktop samples' contents: MiB i holds byte i, 100 MiB.
pub fn pd_expected() -> Vec<u8> {
    let mut v = vec![0u8; 100 * MIB as usize];
    for (i, chunk) in v.chunks_mut(MIB as usize).enumerate() {
        chunk.fill(i as u8);
    }
    v
}

pub fn guid(n: u128) -> Uuid {
    Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 | n)
}

pub fn fill(off: u64, len: u64, byte: u8) -> (u64, GuestData) {
    (off, GuestData::Fill { len, byte })
}

pub fn snap(g: Uuid, parent: Option<Uuid>, data: Vec<(u64, GuestData)>) -> SnapshotSpec {
    SnapshotSpec {
        guid: g,
        parent,
        data,
        bitmaps: Vec::new(),
    }
}

/// A three-level chain over a 4 MiB disk with 64 KiB clusters:
/// root writes 0x11 over [0, 1M) and 0x12 over [2M, 3M); the middle writes 0x22 over
/// [512K, 1M+64K); the top writes 0x33 over [64K, 128K) and 0x34 over [3M+32K, 3M+96K).
pub fn chain_builder() -> BundleBuilder {
    BundleBuilder::new(4 * MIB)
        .cluster_size(64 << 10)
        .snapshot(snap(guid(1), None, vec![fill(0, MIB, 0x11), fill(2 * MIB, MIB, 0x12)]))
        .snapshot(snap(
            guid(2),
            Some(guid(1)),
            vec![fill(512 << 10, (512 << 10) + (64 << 10), 0x22)],
        ))
        .snapshot(snap(
            guid(3),
            Some(guid(2)),
            vec![
                fill(64 << 10, 64 << 10, 0x33),
                fill(3 * MIB + (32 << 10), 64 << 10, 0x34),
            ],
        ))
}

/// What `chain_builder` reads as at the top (`upto` = 3), the middle (2) or the root (1).
pub fn chain_expected(upto: u32) -> Vec<u8> {
    let mut v = vec![0u8; 4 * MIB as usize];
    let mut put = |off: u64, len: u64, b: u8| v[off as usize..(off + len) as usize].fill(b);
    put(0, MIB, 0x11);
    put(2 * MIB, MIB, 0x12);
    if upto >= 2 {
        put(512 << 10, (512 << 10) + (64 << 10), 0x22);
    }
    if upto >= 3 {
        put(64 << 10, 64 << 10, 0x33);
        put(3 * MIB + (32 << 10), 64 << 10, 0x34);
    }
    v
}

/// Reads a whole guest disk.
pub fn read_all(disk: &parallels_image::bundle::GuestDisk) -> Vec<u8> {
    let mut v = vec![0u8; disk.size() as usize];
    disk.read_at(0, &mut v).unwrap();
    v
}
