//! `Image::parse_compact`: the BAT read through a buffer, keeping only its allocated entries,
//! answers as the whole table does, from a slice and from a file, across the buffer's blocks.

use std::io::Write;

use parallels_image::{qemu, FileSource, Image, Mode, Violation};
use parallels_image::{Data, ImageBuilder};

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
            Data::Fill {
                len: 512,
                byte: k as u8 + 1,
            },
        );
    }
    b = b.data(131_071 * CS, Data::Fill { len: 512, byte: 0xee });
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
    let compact = Image::parse_compact(&bytes, Mode::Strict).unwrap();
    assert_eq!(compact.allocated_entries().collect::<Vec<_>>(), want);
    assert_same(&whole, &compact);
    assert!(parallels_image::validate(&whole).unwrap().is_clean());

    let file = tempfile_with(&bytes);
    let source = FileSource::open(file.path()).unwrap();
    let from_file = Image::parse_compact(&source, Mode::Strict).unwrap();
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
    assert_same(&whole, &Image::parse_compact(&source, Mode::Strict).unwrap());
    assert_same(&whole, &Image::parse_compact(&bytes, Mode::Strict).unwrap());
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
    let compact = Image::parse_compact(&source, Mode::Strict).unwrap();
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
    let compact = Image::parse_compact(&bytes, Mode::Strict).unwrap();
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
