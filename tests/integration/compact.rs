//! `Image::parse_compact`: the BAT read through a buffer, again at each walk (nothing of it held),
//! answers as the whole table does, from a slice and from a file, across the buffer's blocks.

use std::io::Write;

use parallels_image::{qemu, FileSource, Image, RuleMode, Violation};
use parallels_image::{GuestData, ImageBuilder};

use crate::helpers::{build, put_u32, CS};

/// The compact reader's buffer holds 32 768 entries (128 KiB); these guest clusters sit on both
/// sides of its first two block boundaries, and at both ends of the table.
const INDICES: [u32; 7] = [0, 1, 32_767, 32_768, 32_769, 65_535, 65_536];

/// A v2 image with 131 072 entries of 64 KiB clusters (8 GiB), data in `INDICES`.
fn spread_image() -> Vec<u8> {
    let mut b = ImageBuilder::new(131_072 * CS).cluster_size(CS);
    for (k, &i) in INDICES.iter().enumerate() {
        b = b.data(
            u64::from(i) * CS,
            GuestData::Fill {
                len: 512,
                byte: k as u8 + 1,
            },
        );
    }
    b = b.data(131_071 * CS, GuestData::Fill { len: 512, byte: 0xee });
    build(&b).0
}

fn tempfile_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write temp file");
    f
}

/// Asserts that `compact` answers as `whole` for every accessor that reads the BAT.
fn assert_same(whole: &Image<'_>, compact: &Image<'_>) {
    let want: Vec<(u32, u32)> = whole
        .bat()
        .iter()
        .enumerate()
        .filter(|(_, e)| *e != 0)
        .map(|(i, e)| (i as u32, e))
        .collect();
    assert_eq!(compact.allocated_entries().collect::<Vec<_>>(), want);
    assert_eq!(whole.allocated_entries().collect::<Vec<_>>(), want);
    assert_eq!(compact.allocated_clusters(), want.len() as u64);
    assert!(compact.bat().is_empty());
    assert!(compact.bat_held());
    assert_eq!(compact.bat_entries_in_file(), whole.bat().len() as u32);
    for i in 0..whole.header().bat_entries {
        assert_eq!(compact.bat_entry(i), whole.bat_entry(i), "entry {i}");
    }
    assert_eq!(
        parallels_image::validate(compact).unwrap(),
        parallels_image::validate(whole).unwrap()
    );
    assert_eq!(qemu::predict_image(compact), qemu::predict_image(whole));
    let end = compact.file_len();
    assert_eq!(compact.cluster_counts(end), whole.cluster_counts(end));
    let mut a = vec![0u8; 3 * CS as usize];
    let mut b = a.clone();
    for i in INDICES {
        let at = (u64::from(i) * CS).saturating_sub(CS);
        whole.read_guest(at, &mut a).unwrap();
        compact.read_guest(at, &mut b).unwrap();
        assert!(a == b, "guest bytes at {at}");
    }
}

#[test]
fn compact_bat_across_read_blocks() {
    let bytes = spread_image();
    let whole = Image::parse(&bytes).unwrap();
    // Header and BAT take 64 + 131072 * 4 bytes: data clusters start at cluster 9, in the order
    // the builder writes them (by guest offset).
    let want: Vec<(u32, u32)> = INDICES
        .iter()
        .chain(&[131_071])
        .zip(9..)
        .map(|(&i, e)| (i, e))
        .collect();
    let compact = Image::parse_compact(&bytes, RuleMode::Strict).unwrap();
    assert_eq!(compact.allocated_entries().collect::<Vec<_>>(), want);
    assert_same(&whole, &compact);
    assert!(parallels_image::validate(&whole).unwrap().is_clean());

    let file = tempfile_with(&bytes);
    let source = FileSource::open(file.path()).unwrap();
    let from_file = Image::parse_compact(&source, RuleMode::Strict).unwrap();
    assert_eq!(from_file.allocated_entries().collect::<Vec<_>>(), want);
    assert_same(&whole, &from_file);
}

#[test]
fn compact_bat_with_duplicates_and_entries_past_eof() {
    let mut bytes = spread_image();
    // Entry 32 768 points at entry 32 767's cluster (R19, the first owner named), entry 65 536
    // far past the end of the file (R18).
    put_u32(&mut bytes, 64 + 4 * 32_768, 11);
    put_u32(&mut bytes, 64 + 4 * 65_536, 1 << 30);
    let whole = Image::parse(&bytes).unwrap();
    let findings = parallels_image::validate(&whole).unwrap().findings;
    let violations: Vec<&Violation> = findings.iter().map(|f| &f.violation).collect();
    assert!(violations.contains(&&Violation::BatEntryDuplicate {
        index: 32_768,
        entry: 11,
        offset: 11 * CS,
        first: 32_767
    }));
    assert!(violations.contains(&&Violation::BatEntryPastEof {
        index: 65_536,
        entry: 1 << 30,
        offset: (1 << 30) * CS,
        end: ((1 << 30) + 1) * CS,
        file_len: bytes.len() as u64
    }));
    let file = tempfile_with(&bytes);
    let source = FileSource::open(file.path()).unwrap();
    assert_same(&whole, &Image::parse_compact(&source, RuleMode::Strict).unwrap());
    assert_same(&whole, &Image::parse_compact(&bytes, RuleMode::Strict).unwrap());
}

#[test]
fn compact_bat_cut_short_by_the_end_of_the_file() {
    let bytes = spread_image();
    // The file ends two bytes into entry 65 535: entries 0..65 535 are in it, the rest read as 0.
    let cut = &bytes[..64 + 4 * 65_535 + 2];
    let whole = Image::parse(&cut).unwrap();
    assert_eq!(whole.bat().len(), 65_535);
    let file = tempfile_with(cut);
    let source = FileSource::open(file.path()).unwrap();
    let compact = Image::parse_compact(&source, RuleMode::Strict).unwrap();
    assert_eq!(compact.bat_entries_in_file(), 65_535);
    assert_eq!(
        compact.allocated_entries().map(|p| p.0).collect::<Vec<_>>(),
        INDICES[..5]
    );
    assert_same(&whole, &compact);
}

#[test]
fn compact_bat_of_a_hostile_header_reads_only_the_file() {
    // 2^29 - 1 entries claimed, 64 bytes of file: nothing to read, nothing kept.
    let mut bytes = vec![0u8; 64];
    let (built, _) = build(&ImageBuilder::new(CS).cluster_size(CS));
    bytes.copy_from_slice(&built[..64]);
    put_u32(&mut bytes, 32, 536_870_911); // bat_entries
    let compact = Image::parse_compact(&bytes, RuleMode::Strict).unwrap();
    assert_eq!(compact.bat_entries_in_file(), 0);
    assert_eq!(compact.allocated_clusters(), 0);
    assert_eq!(compact.bat_entry(536_870_910), 0);
    let whole = Image::parse(&bytes).unwrap();
    assert_eq!(
        parallels_image::validate(&compact).unwrap(),
        parallels_image::validate(&whole).unwrap()
    );
    assert_eq!(qemu::predict_image(&compact), qemu::predict_image(&whole));
}

/// A source whose BAT reads fail once `fail` is set (the header and the extension still read).
struct FailingBat {
    bytes: Vec<u8>,
    fail: std::sync::atomic::AtomicBool,
}

impl parallels_image::Source for FailingBat {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        if offset >= 64 && self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the disk went away"));
        }
        self.bytes.as_slice().read_at(offset, len)
    }
}

#[test]
fn compact_bat_read_again_that_fails_is_an_error_not_a_short_walk() {
    use parallels_image::Source as _;
    let source = FailingBat {
        bytes: spread_image(),
        fail: false.into(),
    };
    let image = Image::parse_compact(&source, RuleMode::Strict).unwrap();
    assert_eq!(image.allocated_clusters(), 8);
    assert!(image.bat_status().is_ok());
    source.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    // The walk stops at the failed read; the failure is kept, reported once.
    assert_eq!(image.allocated_entries().count(), 0);
    let Err(parallels_image::Error::Io(e)) = image.bat_status() else {
        panic!("the failure is kept")
    };
    assert_eq!(e.to_string(), "the disk went away");
    assert!(image.bat_status().is_ok());
    assert_eq!(image.bat_entry(1), 0);
    assert!(image.bat_status().is_err());
    // Whoever walks the table reports it.
    let Err(parallels_image::Error::Io(e)) = parallels_image::validate(&image) else {
        panic!("validate fails")
    };
    assert_eq!(e.to_string(), "the disk went away");
    let Err(parallels_image::Error::Io(e)) = parallels_image::check(&source, RuleMode::Strict, "x.hds") else {
        panic!("check fails")
    };
    assert_eq!(e.to_string(), "the disk went away");
    assert_eq!(qemu::predict(&source).unwrap_err().to_string(), "the disk went away");
    let mut buf = [0u8; 1];
    assert!(image.read_guest(0, &mut buf).is_err());
    // The slice itself reads fine.
    assert_eq!(source.bytes.as_slice().size(), source.size());
}

#[test]
fn duplicates_in_a_file_too_sparse_for_a_bit_set_are_found_as_in_a_dense_one() {
    // 4 KiB clusters, 256 entries. In a 64 GiB sparse file a bit per cluster would be 2 MiB,
    // more than the 1 KiB BAT justifies: the slots go to a sorted list instead. In a 16 MiB
    // file they are bits. Entries 3, 5 and 9 share one cluster near the end of the file, 7 and
    // 8 another; the findings are the same apart from the offsets.
    const CS4: u64 = 4096;
    let findings_for = |file_len: u64| {
        let (built, _) = build(&ImageBuilder::new(256 * CS4).cluster_size(CS4));
        let last = (file_len / CS4 - 1) as u32;
        let mut f = tempfile_with(&built);
        for (i, e) in [(3, last), (5, last), (9, last), (7, last - 1), (8, last - 1)] {
            f.as_file_mut()
                .write_all_at_offset(64 + 4 * i, &u32::to_le_bytes(e))
                .unwrap();
        }
        f.as_file().set_len(file_len).unwrap();
        let source = FileSource::open(f.path()).unwrap();
        let image = Image::parse_compact(&source, RuleMode::Strict).unwrap();
        let dups: Vec<Violation> = parallels_image::validate(&image)
            .unwrap()
            .findings
            .into_iter()
            .map(|f| f.violation)
            .filter(|v| matches!(v, Violation::BatEntryDuplicate { .. }))
            .collect();
        let whole = Image::parse(&source).unwrap();
        assert_eq!(
            parallels_image::validate(&whole).unwrap(),
            parallels_image::validate(&image).unwrap()
        );
        (last, dups)
    };
    for file_len in [16 << 20, 64 << 30] {
        let (last, dups) = findings_for(file_len);
        let dup = |index, entry: u32, first| Violation::BatEntryDuplicate {
            index,
            entry,
            offset: u64::from(entry) * CS4,
            first,
        };
        assert_eq!(
            dups,
            [dup(5, last, 3), dup(8, last - 1, 7), dup(9, last, 3)],
            "file of {file_len} bytes"
        );
    }
}

/// Positioned writes for the tests above.
trait WriteAt {
    fn write_all_at_offset(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteAt for std::fs::File {
    fn write_all_at_offset(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(bytes)
    }
}

/// Writes `bytes` to a new file leaving every 4 KiB block of zeros as a hole.
fn sparse_tempfile_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    use std::io::{Seek, SeekFrom};
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    for (k, block) in bytes.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start(k as u64 * 4096)).unwrap();
            f.write_all(block).unwrap();
        }
    }
    f.as_file().set_len(bytes.len() as u64).unwrap();
    f
}

#[test]
fn holes_of_the_table_are_skipped_and_answer_as_zeros() {
    let bytes = spread_image();
    let f = sparse_tempfile_with(&bytes);
    let file = FileSource::open(f.path()).unwrap();
    use parallels_image::Source;
    // Entries 2 to 32 766 are zeros: on Linux the file system says so (SEEK_DATA) and the next
    // data is the block that holds entry 32 767; elsewhere every byte may be data.
    let at = 64 + 4 * 2000;
    let (start, end) = file.next_data(at).unwrap();
    assert!(start >= at && end <= file.size());
    if cfg!(target_os = "linux") {
        assert_eq!(start, (64 + 4 * 32_767) / 4096 * 4096, "a hole from byte {at}");
        assert!(end > start);
    } else {
        assert_eq!((start, end), (at, file.size()));
    }
    assert_eq!(bytes.as_slice().next_data(at).unwrap(), (at, bytes.len() as u64));
    let whole = Image::parse(&bytes).unwrap();
    let compact = Image::parse_compact(&file, RuleMode::Strict).unwrap();
    assert_same(&whole, &compact);
    // The whole check (rules, QEMU's and ploop's predictions on one read of the table) says
    // the same of the sparse file as of the bytes in memory.
    let from_file = parallels_image::check(&file, RuleMode::Strict, "x.hds").unwrap();
    let from_bytes = parallels_image::check(&bytes, RuleMode::Strict, "x.hds").unwrap();
    assert_eq!(from_file, from_bytes);
    assert_eq!(from_file.statistics.unwrap().allocated, INDICES.len() as u64 + 1);
}

/// 2 Mi entries of 4 KiB clusters: an 8 MiB table, data in guest clusters 0 and 2 Mi - 1, so
/// the table's blocks between its first and its last are zeros.
#[cfg(target_os = "linux")]
const BIG_TABLE: u64 = 2 << 20;

/// The image of [`BIG_TABLE`] entries and a file holding it whose zero blocks of the table are
/// one extent allocated but never written (`fallocate`, as `qemu-img create` leaves a table),
/// read once so that the page cache holds them: `SEEK_DATA` then calls them data. `None` (after
/// [`crate::fixtures::needs::missing`]) where the file system has no unwritten extents.
#[cfg(target_os = "linux")]
fn fallocated_table(test: &str) -> Option<(Vec<u8>, tempfile::NamedTempFile, std::ops::Range<u64>)> {
    use rustix::fs::{fallocate, seek, FallocateFlags, SeekFrom};
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let cs = 4096;
    let b = ImageBuilder::new(BIG_TABLE * cs)
        .cluster_size(cs)
        .data(0, GuestData::Fill { len: 512, byte: 1 })
        .data((BIG_TABLE - 1) * cs, GuestData::Fill { len: 512, byte: 2 });
    let bytes = build(&b).0;
    // The zero blocks of the table: from the second block to the one holding the last entry.
    let zeros = 4096..(64 + 4 * (BIG_TABLE - 1)) / 4096 * 4096;
    assert!(bytes[zeros.start as usize..zeros.end as usize].iter().all(|&b| b == 0));
    let f = tempfile::NamedTempFile::new().expect("temp file");
    let file = f.as_file();
    file.write_all_at(&bytes[..zeros.start as usize], 0).unwrap();
    file.write_all_at(&bytes[zeros.end as usize..], zeros.end).unwrap();
    if let Err(e) = fallocate(file, FallocateFlags::empty(), zeros.start, zeros.end - zeros.start) {
        return crate::fixtures::needs::missing(test, &format!("fallocate of the temp folder's file system: {e}"));
    }
    let unwritten = fiemap::Fiemap::new(file)
        .filter_map(Result::ok)
        .any(|e| e.fe_flags.contains(fiemap::FiemapExtentFlags::UNWRITTEN) && e.fe_logical <= zeros.start);
    if !unwritten {
        return crate::fixtures::needs::missing(test, "FIEMAP reports no unwritten extent for a fallocated range");
    }
    let mut all = Vec::new();
    f.reopen().unwrap().read_to_end(&mut all).unwrap();
    assert_eq!(all, bytes);
    // Cached, the zeros are data to SEEK_DATA (the case next_data must see past).
    let at = seek(file, SeekFrom::Data(zeros.start)).unwrap();
    assert_eq!(at, zeros.start, "SEEK_DATA over cached unwritten pages");
    Some((bytes, f, zeros))
}

#[test]
#[cfg(target_os = "linux")]
fn a_table_allocated_but_never_written_is_passed_over_even_in_the_page_cache() {
    use parallels_image::Source;
    let test = "a_table_allocated_but_never_written_is_passed_over_even_in_the_page_cache";
    let Some((bytes, f, zeros)) = fallocated_table(test) else {
        return;
    };
    let file = FileSource::open(f.path()).unwrap();
    // From the first entry of the zeros on, the next data is the table's last block.
    let (start, end) = file.next_data(zeros.start + 64).unwrap();
    assert_eq!(start, zeros.end);
    assert_eq!(end, (zeros.end + (4 << 20)).min(file.size()));
    // And the whole check says of the file what it says of the bytes.
    let from_file = parallels_image::check(&file, RuleMode::Strict, "x.hds").unwrap();
    let from_bytes = parallels_image::check(&bytes, RuleMode::Strict, "x.hds").unwrap();
    assert_eq!(from_file, from_bytes);
    assert_eq!(from_file.statistics.unwrap().allocated, 2);
}

#[test]
#[cfg(target_os = "linux")]
fn an_entry_written_into_the_unwritten_table_and_not_yet_flushed_is_read() {
    use parallels_image::Source;
    use std::os::unix::fs::FileExt;
    let test = "an_entry_written_into_the_unwritten_table_and_not_yet_flushed_is_read";
    let Some((mut bytes, f, zeros)) = fallocated_table(test) else {
        return;
    };
    // Entry 1.5 Mi (byte 6 MiB + 64), in the unwritten extent, names the cluster entry 0 names:
    // a duplicate (R19). Written, not flushed: the extent is still marked unwritten on disk.
    // Flushed, it splits the extent; the 6 MiB before it are long enough to be passed over.
    let index = 3u32 << 19;
    let at = 64 + 4 * u64::from(index);
    let entry = bytes[64..68].to_vec();
    bytes[at as usize..at as usize + 4].copy_from_slice(&entry);
    f.as_file().write_all_at(&entry, at).unwrap();
    let file = FileSource::open(f.path()).unwrap();
    let (start, _) = file.next_data(zeros.start + 64).unwrap();
    assert_eq!(start, at / 4096 * 4096, "the written block is data");
    let from_file = parallels_image::check(&file, RuleMode::Strict, "x.hds").unwrap();
    let from_bytes = parallels_image::check(&bytes, RuleMode::Strict, "x.hds").unwrap();
    assert_eq!(from_file, from_bytes);
    let dup = from_file.report.findings.iter().find_map(|f| match f.violation {
        Violation::BatEntryDuplicate { index, .. } => Some(index),
        _ => None,
    });
    assert_eq!(dup, Some(index));
}
