//! QEMU's SIGSEGV on bitmaps of clusters of 256 MiB and more (rule B10 of `spec/qemu.md`):
//! the guest bytes a bitmap cluster covers are computed in 32 bits and wrap, so chunk 1 and
//! later land far outside QEMU's bitmap. The images are sparse files built here (header, BAT,
//! one extension cluster holding one bitmap whose L1 entries are markers 0/1, and for some a
//! bitmap data cluster), valid in this crate's rules.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use parallels_image::qemu::{self, QemuCheck, QemuOutcome, QemuReason, SIGSEGV};
use parallels_image::raw::extension::checksum_padded;
use parallels_image::{FileSource, Image, RuleMode, Severity};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::fixtures::needs;
use crate::harness::run_on;

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const ID: [u8; 16] = [0x11; 16];

/// L1 entry kinds: clean (0), dirty (1), a cluster of bits (the cluster after the extension).
#[derive(Clone, Copy, Debug, PartialEq)]
enum L1 {
    Clean,
    Dirty,
    Cluster,
}

/// Writes a sparse v2 image: `cs`-byte clusters, a `disk`-byte disk, one bitmap of `gran`-byte
/// granules with this L1 table (its length is what the disk needs). Returns the file's length.
fn write_image(path: &Path, cs: u64, gran: u64, disk: u64, l1: &[L1]) -> u64 {
    let tracks = cs / 512;
    let nb = disk / 512;
    let bat = nb.div_ceil(tracks);
    let ext = (64 + 4 * bat).div_ceil(cs) * cs;
    let bits = ext + cs;
    let entries: Vec<u64> = l1
        .iter()
        .map(|e| match e {
            L1::Clean => 0,
            L1::Dirty => 1,
            L1::Cluster => bits / 512,
        })
        .collect();
    let mut h = Vec::new();
    h.extend_from_slice(b"WithouFreSpacExt");
    for v in [2u32, 16, (nb / 512) as u32, tracks as u32, bat as u32] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&nb.to_le_bytes());
    for v in [0u32, (ext / 512) as u32, 0] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(ext / 512).to_le_bytes());
    // The feature list: one bitmap record, then the end record.
    let mut rec = Vec::new();
    rec.extend_from_slice(&0x2038_5FAE_252C_B34Au64.to_le_bytes());
    rec.extend_from_slice(&0u64.to_le_bytes());
    rec.extend_from_slice(&(32 + 8 * entries.len() as u32).to_le_bytes());
    rec.extend_from_slice(&0u32.to_le_bytes());
    rec.extend_from_slice(&nb.to_le_bytes());
    rec.extend_from_slice(&ID);
    rec.extend_from_slice(&((gran / 512) as u32).to_le_bytes());
    rec.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in &entries {
        rec.extend_from_slice(&e.to_le_bytes());
    }
    rec.resize(rec.len() + 24, 0);
    let sum = checksum_padded(&rec, cs - 24 - rec.len() as u64);
    let len = if l1.contains(&L1::Cluster) { bits + cs } else { bits };
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&h).unwrap();
    f.seek(SeekFrom::Start(ext)).unwrap();
    f.write_all(&0xAB23_4CEF_23DC_EA87u64.to_le_bytes()).unwrap();
    f.write_all(&sum).unwrap();
    f.write_all(&rec).unwrap();
    if l1.contains(&L1::Cluster) {
        // A few dirty granules at the start of the chunk.
        f.seek(SeekFrom::Start(bits)).unwrap();
        f.write_all(&[0x0f; 64]).unwrap();
    }
    f.set_len(len).unwrap();
    len
}

/// What proves QEMU left a file alone: its length, modification time and the bytes written
/// (header, the start of the extension cluster and of the bits cluster; the rest are holes).
/// Hashing the whole sparse file would cost more than the test.
fn fingerprint(path: &Path, cs: u64) -> (u64, std::time::SystemTime, Vec<u8>) {
    let meta = std::fs::metadata(path).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let mut bytes = Vec::new();
    for at in [0, cs, 2 * cs] {
        let mut buf = vec![0u8; 64 << 10];
        f.seek(SeekFrom::Start(at)).unwrap();
        let n = f.read(&mut buf).unwrap();
        bytes.extend_from_slice(&buf[..n]);
    }
    (meta.len(), meta.modified().unwrap(), bytes)
}

/// What this crate and QEMU say of one image; panics on a disagreement.
fn compare(dir: &Path, cs: u64, gran: u64, disk: u64, l1: &[L1]) -> QemuOutcome {
    let path = dir.join("big.hds");
    write_image(&path, cs, gran, disk, l1);
    let src = FileSource::open(&path).unwrap();
    let image = Image::parse_compact(&src, RuleMode::Strict).unwrap();
    // Valid in this crate's rules: QEMU is the one that is wrong.
    let report = parallels_image::validate(&image).unwrap();
    assert_eq!(report.count(Severity::Corruption), 0, "{:?}", report.findings);
    let pred = qemu::predict_image(&image);
    drop(image);
    let before = fingerprint(&path, cs);
    let arg = path.to_str().unwrap();
    let case = format!("cs {cs} granularity {gran} disk {disk} L1 {l1:?}");
    let info = run_on(&[], "qemu-img", &["info", "-f", "parallels", "--output=json", arg]);
    let check = run_on(&[], "qemu-img", &["check", "-f", "parallels", "--output=json", arg]);
    assert!(fingerprint(&path, cs) == before, "{case}: QEMU changed the file");
    assert_eq!(
        (info.code, check.code),
        (pred.info.exit_code().unwrap(), pred.check.exit_code().unwrap()),
        "{case}: predicted {pred:?}; QEMU info {:?} check {:?}",
        info.stderr,
        check.stderr
    );
    if let QemuOutcome::Crashes { .. } = pred.info {
        assert!(info.stderr.is_empty() && check.stderr.is_empty(), "{case}");
        assert_eq!(pred.check, QemuCheck::OpenFails(pred.info.clone()));
    }
    pred.info
}

fn crashes() -> QemuOutcome {
    QemuOutcome::Crashes {
        reason: QemuReason::ChunkOffsetWraps,
        signal: SIGSEGV,
    }
}

/// The image of the report: 256 MiB clusters, 512-byte granules, a 2 TiB disk (two chunks).
/// Any non-zero L1 entry past the first kills QEMU; the first alone, or 128 MiB clusters, do
/// not.
#[test]
fn two_tib_bitmap_of_256_mib_clusters_crashes_qemu() {
    use L1::*;
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(u64, &[L1], bool)] = &[
        (256 * MIB, &[Clean, Dirty], true),
        (256 * MIB, &[Dirty, Cluster], true),
        (256 * MIB, &[Dirty, Clean], false),
        (256 * MIB, &[Cluster, Clean], false),
        (128 * MIB, &[Clean, Clean, Clean, Dirty], false),
    ];
    // The prediction needs no QEMU.
    for &(cs, l1, crash) in cases {
        let path = dir.path().join("p.hds");
        write_image(&path, cs, 512, 2 * TIB, l1);
        let p = qemu::predict(&FileSource::open(&path).unwrap()).unwrap();
        assert_eq!(p.info == crashes(), crash, "{cs} {l1:?}: {p:?}");
        assert_eq!(p.check.exit_code(), Some(if crash { 139 } else { 3 }), "{cs} {l1:?}");
    }
    if !needs::tools("two_tib_bitmap_of_256_mib_clusters_crashes_qemu", &["qemu-img"]) {
        return;
    }
    // QEMU runs on two of them, the crash and its 128 MiB relative (each run takes seconds: a
    // dirty marker makes QEMU fill up to 512 MiB of bitmap, a bits cluster makes it read 256 MiB).
    for &(cs, l1, crash) in [cases[0], cases[4]].iter() {
        let got = compare(dir.path(), cs, 512, 2 * TIB, l1);
        assert_eq!(got == crashes(), crash);
    }
}

/// Relatives: cluster sizes around the 32-bit wrap (256 MiB, 256 MiB + 512 bytes, 384 MiB),
/// granularities and disks of one or two chunks, L1 markers at random. Two cases: each makes
/// QEMU and this crate read and hash a cluster of up to 384 MiB (the seed gives one crash and
/// one open).
#[test]
fn large_cluster_bitmaps_predicted_exactly() {
    if !needs::tools("large_cluster_bitmaps_predicted_exactly", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 2,
        rng_seed: RngSeed::Fixed(0x0b10),
        failure_persistence: None,
        ..Config::default()
    });
    let cs = prop::sample::select(vec![256 * MIB, 256 * MIB + 512, 384 * MIB]);
    let gran = prop::sample::select(vec![512u64, 1024, 65536]);
    let strategy = (
        cs,
        gran,
        1u64..=2,
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 3),
    );
    let seen = std::cell::RefCell::new(Vec::new());
    runner
        .run(&strategy, |(cs, gran, chunks, short, dirty)| {
            // A disk of `chunks` chunks as the format counts them (8 * cs granules each), the
            // last one full or a sector short of it.
            let disk = chunks * 8 * cs * gran - if short { 512 } else { 0 };
            let n = (disk / gran).div_ceil(8 * cs) as usize;
            // The first chunk stays clean: filling it costs QEMU up to 512 MiB of memset and
            // decides nothing (chunk 0 never wraps).
            let l1: Vec<L1> = (0..n)
                .map(|i| if i > 0 && dirty[i] { L1::Dirty } else { L1::Clean })
                .collect();
            let got = compare(dir.path(), cs, gran, disk, &l1);
            eprintln!("cs {cs} granularity {gran} disk {disk} L1 {l1:?}: {}", got.kind());
            seen.borrow_mut().push(got.kind());
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    assert!(seen.contains(&"crashes") && seen.contains(&"opens"), "{seen:?}");
}
