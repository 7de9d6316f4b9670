//! The bulk data paths of `prlimg convert` (issue 18 item 2): images of every cluster shape,
//! dense, sparse, with stored clusters of zeros, and chains, into raw files (copied in the
//! kernel, or read with `--detect-zeros`) and back into `.hds` images. Every output is compared
//! byte for byte with the guest, its holes with what must be holes, and (when the QEMU tools
//! are there) with `qemu-img compare` and `qemu-img check`.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Output};

use parallels_image::{
    bundle::file_data_ranges, bundle::write_expanding, bundle::write_expanding_ranges, bundle::write_raw,
    bundle::GuestDisk, bundle::GuestReader, check, FileSource, GuestData, Image, ImageBuilder, RuleMode,
};

use crate::cli::prlimg;
use crate::common::*;
use crate::fixtures::needs;

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Deterministic bytes that are never zero.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8 | 1) ^ seed)
        .map(|b| if b == 0 { 1 } else { b })
        .collect()
}

/// One image to convert: its cluster size, its guest bytes, and the stored pieces.
struct Case {
    name: &'static str,
    cluster: u64,
    size: u64,
    /// (offset, bytes): stored in the image, zeros included.
    pieces: Vec<(u64, Vec<u8>)>,
    /// Whether `qemu-img check` is run on it: QEMU's check reports its own 1536-byte-cluster
    /// images (`qemu-img convert -O parallels -o cluster_size=1536`) as corrupt ("data_off
    /// field has incorrect value"), so for that shape only `qemu-img compare` is asked.
    qemu_checks: bool,
}

impl Case {
    fn guest(&self) -> Vec<u8> {
        let mut g = vec![0u8; self.size as usize];
        for (off, b) in &self.pieces {
            g[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
        g
    }

    fn build(&self, path: &Path) {
        let mut b = ImageBuilder::new(self.size).cluster_size(self.cluster);
        for (off, bytes) in &self.pieces {
            b = b.data(*off, GuestData::Bytes(bytes.clone()));
        }
        let mut f = File::create(path).unwrap();
        b.write_to(&mut f).unwrap();
    }
}

fn cases() -> Vec<Case> {
    let mib = MIB as usize;
    vec![
        // Every cluster stored, 1 MiB clusters (larger than one piece of the data path).
        Case {
            name: "dense-1M",
            cluster: MIB,
            size: 5 * MIB,
            pieces: vec![(0, pattern(5 * mib, 1))],
            qemu_checks: true,
        },
        // Data with gaps; a stored cluster of zeros; the disk ends inside a cluster.
        Case {
            name: "sparse-64K",
            cluster: 64 << 10,
            size: 3 * MIB + 4096 + 512,
            pieces: vec![
                (64 << 10, pattern(100_000, 2)),
                (MIB, vec![0u8; 64 << 10]), // stored, all zeros
                (MIB + (256 << 10), pattern(4096, 3)),
                (3 * MIB, pattern(4096 + 512, 4)), // the short last cluster
            ],
            qemu_checks: true,
        },
        // An odd cluster size (3 sectors): clusters straddle 4 KiB blocks.
        Case {
            name: "odd-1536",
            cluster: 1536,
            size: 300 * 1024,
            pieces: vec![
                (1536, pattern(1536, 5)),
                (3 * 1536, vec![0u8; 1536]), // stored, all zeros
                (10 * 1536 + 700, pattern(5000, 6)),
                (150 * 1024, pattern(512, 7)),
            ],
            qemu_checks: false,
        },
        // The smallest clusters, one sector.
        Case {
            name: "sector-512",
            cluster: 512,
            size: 64 * 1024,
            pieces: vec![
                (512, pattern(3 * 512, 8)),
                (8192, vec![0u8; 1024]),
                (60_000, pattern(100, 9)),
            ],
            qemu_checks: true,
        },
        // Clusters larger than the 256 KiB pieces and not a multiple of them.
        Case {
            name: "big-1.5M",
            cluster: 3 * MIB / 2,
            size: 6 * MIB,
            pieces: vec![
                ((3 * MIB / 2) + 300_000, pattern(10, 10)), // cluster 1, inside its second piece
                (3 * MIB, vec![0u8; 3 * mib / 2]),          // cluster 2 stored, all zeros
                (5 * MIB, pattern(mib, 11)),
            ],
            qemu_checks: true,
        },
    ]
}

/// The clusters of `guest` that are not all zeros.
fn nonzero_clusters(guest: &[u8], cluster: u64) -> Vec<u32> {
    guest
        .chunks(cluster as usize)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Byte ranges of `path` that hold data (not holes), in whole 4 KiB blocks.
fn data_blocks(path: &Path) -> Vec<(u64, u64)> {
    file_data_ranges(&File::open(path).unwrap()).unwrap()
}

fn qemu_agrees(raw: &Path, hds: &Path, check: bool) {
    let Some(qemu_img) = needs::tool("qemu_agrees", "qemu-img") else {
        return;
    };
    let o = Command::new(&qemu_img)
        .args(["compare", "-f", "raw", "-F", "parallels"])
        .arg(raw)
        .arg(hds)
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned()),
        (Some(0), "Images are identical.\n".to_string()),
        "qemu-img compare {} {}: {}",
        raw.display(),
        hds.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    if !check {
        return;
    }
    let o = Command::new(&qemu_img)
        .args(["check", "-f", "parallels"])
        .arg(hds)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "qemu-img check {}: {:?}", hds.display(), o);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("No errors were found on the image."),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn convert_every_cluster_shape_to_raw_and_back_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = case.name;
        let hds = tmp.path().join(format!("{name}.hds"));
        case.build(&hds);
        let guest = case.guest();

        // To raw, copied as stored: the same bytes; holes exactly where nothing is stored.
        let raw = tmp.path().join(format!("{name}.raw"));
        ok(&prlimg(&[&"convert", &hds, &raw]));
        assert!(fs::read(&raw).unwrap() == guest, "{name}: raw differs from the guest");
        let disk = GuestDisk::open_image(&hds).unwrap();
        let stored = disk.data_ranges();
        let blocks = data_blocks(&raw);
        // Every stored byte is data in the file (zeros included); nothing else is, beyond
        // the file system's 4 KiB blocks around it.
        for &(s, l) in &stored {
            assert!(
                blocks.iter().any(|&(bs, bl)| bs <= s && s + l <= bs + bl),
                "{name}: stored {s}+{l} is not data in {blocks:?}"
            );
        }
        let data_bytes: u64 = blocks.iter().map(|b| b.1).sum();
        let stored_blocks: u64 = stored.iter().map(|&(s, l)| (s + l).div_ceil(4096) - s / 4096).sum();
        assert!(data_bytes <= stored_blocks * 4096, "{name}: {blocks:?} vs {stored:?}");
        qemu_agrees(&raw, &hds, case.qemu_checks);

        // With --detect-zeros: the same bytes, and no block of the file that holds data is
        // all zeros.
        let raw_z = tmp.path().join(format!("{name}.z.raw"));
        ok(&prlimg(&[&"convert", &"--detect-zeros", &hds, &raw_z]));
        let bytes = fs::read(&raw_z).unwrap();
        assert!(bytes == guest, "{name}: --detect-zeros raw differs from the guest");
        for (s, l) in data_blocks(&raw_z) {
            for block in bytes[s as usize..(s + l) as usize].chunks(4096) {
                assert!(block.iter().any(|&b| b != 0), "{name}: a zero block at {s} is stored");
            }
        }

        // Back to .hds with the same cluster size: clean, the guest's bytes, and exactly the
        // clusters that are not all zeros stored, in guest order.
        let back = tmp.path().join(format!("{name}.back.hds"));
        let cs = case.cluster.to_string();
        ok(&prlimg(&[
            &"convert",
            &"-f",
            &"raw",
            &"--cluster-size",
            &cs,
            &raw,
            &back,
        ]));
        let src = FileSource::open(&back).unwrap();
        let conf = check(&src, RuleMode::Strict, "back.hds").unwrap();
        assert!(conf.report.findings.is_empty(), "{name}: {:?}", conf.report.findings);
        let image = Image::parse_compact(&src, RuleMode::Strict).unwrap();
        let allocated: Vec<u32> = image.allocated_entries().map(|(i, _)| i).collect();
        assert_eq!(allocated, nonzero_clusters(&guest, case.cluster), "{name}");
        let hosts: Vec<u64> = image
            .allocated_entries()
            .map(|(_, e)| image.header().bat_entry_offset(e).unwrap())
            .collect();
        assert!(
            hosts.windows(2).all(|w| w[1] == w[0] + case.cluster),
            "{name}: {hosts:?}"
        );
        let back_disk = GuestDisk::open_image(&back).unwrap();
        assert!(read_all(&back_disk) == guest, "{name}: .hds differs from the guest");
        qemu_agrees(&raw, &back, case.qemu_checks);
    }
}

/// The library's writers: the pipelined reader (a second thread), the local one and a raw
/// file read as itself (its bytes copied file to file by the kernel) write the same files, and
/// reading only the data ranges equals reading everything.
#[test]
fn writers_agree_whichever_reader_and_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let guest = case.guest();
        let mut read = |off: u64, buf: &mut [u8]| {
            buf.copy_from_slice(&guest[off as usize..off as usize + buf.len()]);
            Ok(())
        };
        let source = tmp.path().join(format!("{}.guest", case.name));
        fs::write(&source, &guest).unwrap();
        let source = File::open(&source).unwrap();
        let mut offsets = Vec::new();
        let mut progress = |off: u64| offsets.push(off);
        let size = case.size;
        let all = [(0, size)];
        let mut outputs = Vec::new();
        for (k, how) in ["local", "shared", "file"].into_iter().enumerate() {
            let raw = tmp.path().join(format!("{}.{k}.raw", case.name));
            let f = File::create(&raw).unwrap();
            let reader = match how {
                "local" => GuestReader::Local(&mut read),
                "shared" => GuestReader::Shared(&mut read),
                _ => GuestReader::RawFile(&source, &mut progress),
            };
            let written = write_raw(reader, &all, size, &f).unwrap();
            drop(f);
            let bytes = fs::read(&raw).unwrap();
            assert!(bytes == guest, "{} {how}", case.name);
            // Only non-zero 4 KiB blocks were written.
            let nonzero: u64 = guest
                .chunks(4096)
                .filter(|c| c.iter().any(|&b| b != 0))
                .map(|c| c.len() as u64)
                .sum();
            assert_eq!(written, nonzero, "{} {how}", case.name);
            assert_eq!(
                data_blocks(&raw),
                data_blocks(&tmp.path().join(format!("{}.0.raw", case.name)))
            );

            let hds = tmp.path().join(format!("{}.{k}.hds", case.name));
            let f = File::create(&hds).unwrap();
            let reader = match how {
                "local" => GuestReader::Local(&mut read),
                "shared" => GuestReader::Shared(&mut read),
                _ => GuestReader::RawFile(&source, &mut progress),
            };
            let ranges = file_data_ranges(&File::open(&raw).unwrap()).unwrap();
            let stats = write_expanding_ranges(reader, &ranges, size, case.cluster, &f).unwrap();
            drop(f);
            assert_eq!(stats.allocated, nonzero_clusters(&guest, case.cluster).len() as u64);
            outputs.push(fs::read(&hds).unwrap());
        }
        // The raw file's reader told the progress of each of its reads, in order.
        assert!(
            !offsets.is_empty() && offsets.iter().all(|&o| o < size),
            "{}",
            case.name
        );
        // write_expanding (everything read, on this thread) writes the same image.
        let hds = tmp.path().join(format!("{}.all.hds", case.name));
        let f = File::create(&hds).unwrap();
        write_expanding(&mut read, size, case.cluster, &f).unwrap();
        drop(f);
        outputs.push(fs::read(&hds).unwrap());
        for (k, o) in outputs.iter().enumerate() {
            assert!(*o == outputs[0], "{}: output {k} differs", case.name);
        }
    }
}

/// A reading error stops both threads and is returned; nothing hangs.
#[test]
fn a_read_error_stops_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let f = File::create(tmp.path().join("x.raw")).unwrap();
    let mut read = |off: u64, buf: &mut [u8]| {
        if off >= 3 * MIB {
            return Err(std::io::Error::other("disk on fire"));
        }
        buf.fill(7);
        Ok(())
    };
    let e = write_raw(GuestReader::Shared(&mut read), &[(0, 8 * MIB)], 8 * MIB, &f).unwrap_err();
    assert_eq!(e.to_string(), "I/O error: disk on fire");
    let f = File::create(tmp.path().join("x.hds")).unwrap();
    let e = write_expanding_ranges(GuestReader::Shared(&mut read), &[(0, 8 * MIB)], 8 * MIB, 1 << 20, &f).unwrap_err();
    assert_eq!(e.to_string(), "I/O error: disk on fire");
}

/// A three-level chain to raw, both ways: the top's bytes, and holes only where no level
/// stores anything.
#[test]
fn chain_to_raw_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    for extra in [None, Some("--detect-zeros")] {
        let out = tmp.path().join("top.raw");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert", &"--force"];
        if let Some(e) = &extra {
            args.push(e);
        }
        args.push(&dir);
        args.push(&out);
        ok(&prlimg(&args));
        let expected = chain_expected(3);
        assert!(fs::read(&out).unwrap() == expected, "{extra:?}");
        let holes_for = if extra.is_some() {
            // Stored ranges less their 4 KiB blocks of zeros (the top's 64 KiB at 3 MiB + 32 KiB
            // sits in a stored 128 KiB whose other halves are zeros).
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for (i, block) in expected.chunks(4096).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    let at = i as u64 * 4096;
                    match runs.last_mut() {
                        Some((s, l)) if *s + *l == at => *l += 4096,
                        _ => runs.push((at, 4096)),
                    }
                }
            }
            runs
        } else {
            let disk = parallels_image::bundle::Bundle::open(&dir).unwrap().disk(None).unwrap();
            disk.data_ranges()
        };
        assert_eq!(data_blocks(&out), holes_for, "{extra:?}");
    }
}
