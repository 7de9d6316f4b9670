//! The on-disk types: sizes, alignment 1, every field offset, and agreement between the
//! zerocopy view and the binrw grammar.

use core::mem::{align_of, offset_of, size_of};
use std::io::Cursor;

use binrw::{BinRead, BinWrite};
use parallels_image::raw::{BatEntry, L1Entry, RawBitmapHeader, RawExtHeader, RawFeatureHeader, RawHeader};
use zerocopy::{FromBytes, IntoBytes};

#[test]
fn sizes_and_alignment() {
    assert_eq!(size_of::<RawHeader>(), 64);
    assert_eq!(size_of::<RawExtHeader>(), 24);
    assert_eq!(size_of::<RawFeatureHeader>(), 24);
    assert_eq!(size_of::<RawBitmapHeader>(), 32);
    assert_eq!(size_of::<BatEntry>(), 4);
    assert_eq!(size_of::<L1Entry>(), 8);
    assert_eq!(align_of::<RawHeader>(), 1);
    assert_eq!(align_of::<RawExtHeader>(), 1);
    assert_eq!(align_of::<RawFeatureHeader>(), 1);
    assert_eq!(align_of::<RawBitmapHeader>(), 1);
    assert_eq!(align_of::<BatEntry>(), 1);
    assert_eq!(align_of::<L1Entry>(), 1);
}

#[test]
fn header_field_offsets() {
    assert_eq!(offset_of!(RawHeader, magic), 0);
    assert_eq!(offset_of!(RawHeader, version), 16);
    assert_eq!(offset_of!(RawHeader, heads), 20);
    assert_eq!(offset_of!(RawHeader, cylinders), 24);
    assert_eq!(offset_of!(RawHeader, tracks), 28);
    assert_eq!(offset_of!(RawHeader, bat_entries), 32);
    assert_eq!(offset_of!(RawHeader, nb_sectors), 36);
    assert_eq!(offset_of!(RawHeader, inuse), 44);
    assert_eq!(offset_of!(RawHeader, data_off), 48);
    assert_eq!(offset_of!(RawHeader, flags), 52);
    assert_eq!(offset_of!(RawHeader, ext_off), 56);
}

#[test]
fn extension_feature_and_bitmap_field_offsets() {
    assert_eq!(offset_of!(RawExtHeader, magic), 0);
    assert_eq!(offset_of!(RawExtHeader, checksum), 8);
    assert_eq!(offset_of!(RawFeatureHeader, magic), 0);
    assert_eq!(offset_of!(RawFeatureHeader, flags), 8);
    assert_eq!(offset_of!(RawFeatureHeader, data_size), 16);
    assert_eq!(offset_of!(RawFeatureHeader, unused), 20);
    assert_eq!(offset_of!(RawBitmapHeader, size), 0);
    assert_eq!(offset_of!(RawBitmapHeader, id), 8);
    assert_eq!(offset_of!(RawBitmapHeader, granularity), 24);
    assert_eq!(offset_of!(RawBitmapHeader, l1_size), 28);
}

/// Bytes 0, 1, 2, … so that every field has a distinct value.
fn counting<const N: usize>() -> [u8; N] {
    core::array::from_fn(|i| i as u8 + 1)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// binrw reads (in either byte order: the types are byte arrays underneath) what zerocopy views,
/// and writes back what zerocopy's `as_bytes` gives.
fn round_trip<T>(bytes: &[u8]) -> T
where
    T: FromBytes + IntoBytes + zerocopy::Immutable + zerocopy::KnownLayout + Copy + PartialEq + core::fmt::Debug,
    for<'a> T: BinRead<Args<'a> = ()> + BinWrite<Args<'a> = ()>,
{
    let view = *T::ref_from_bytes(bytes).expect("exact size");
    let le = T::read_le(&mut Cursor::new(bytes)).expect("binrw reads it");
    let be = T::read_be(&mut Cursor::new(bytes)).expect("binrw reads it");
    assert_eq!(le, view);
    assert_eq!(be, view);
    let mut out = Cursor::new(Vec::new());
    view.write_le(&mut out).expect("binrw writes it");
    assert_eq!(out.get_ref().as_slice(), view.as_bytes());
    assert_eq!(out.get_ref().as_slice(), bytes);
    let mut out = Cursor::new(Vec::new());
    view.write_be(&mut out).expect("binrw writes it");
    assert_eq!(out.get_ref().as_slice(), bytes);
    view
}

#[test]
fn header_binrw_equals_zerocopy() {
    let b: [u8; 64] = counting();
    let h: RawHeader = round_trip(&b);
    assert_eq!(h.magic, b[0..16]);
    assert_eq!(h.version.get(), le32(&b, 16));
    assert_eq!(h.heads.get(), le32(&b, 20));
    assert_eq!(h.cylinders.get(), le32(&b, 24));
    assert_eq!(h.tracks.get(), le32(&b, 28));
    assert_eq!(h.bat_entries.get(), le32(&b, 32));
    assert_eq!(h.nb_sectors.get(), le64(&b, 36));
    assert_eq!(h.inuse.get(), le32(&b, 44));
    assert_eq!(h.data_off.get(), le32(&b, 48));
    assert_eq!(h.flags.get(), le32(&b, 52));
    assert_eq!(h.ext_off.get(), le64(&b, 56));
    assert_eq!(h.version.get(), 0x1413_1211);
}

#[test]
fn ext_header_binrw_equals_zerocopy() {
    let b: [u8; 24] = counting();
    let h: RawExtHeader = round_trip(&b);
    assert_eq!(h.magic.get(), 0x0807_0605_0403_0201);
    assert_eq!(h.checksum, b[8..24]);
}

#[test]
fn feature_header_binrw_equals_zerocopy() {
    let b: [u8; 24] = counting();
    let h: RawFeatureHeader = round_trip(&b);
    assert_eq!(h.magic.get(), le64(&b, 0));
    assert_eq!(h.flags.get(), le64(&b, 8));
    assert_eq!(h.data_size.get(), le32(&b, 16));
    assert_eq!(h.unused.get(), le32(&b, 20));
}

#[test]
fn bitmap_header_binrw_equals_zerocopy() {
    let b: [u8; 32] = counting();
    let h: RawBitmapHeader = round_trip(&b);
    assert_eq!(h.size.get(), le64(&b, 0));
    assert_eq!(h.id, b[8..24]);
    assert_eq!(h.granularity.get(), le32(&b, 24));
    assert_eq!(h.l1_size.get(), le32(&b, 28));
    assert_eq!(h.l1_size.get(), 0x201f_1e1d);
}

#[test]
fn bat_and_l1_entries_are_little_endian() {
    let b = [0x78, 0x56, 0x34, 0x12];
    assert_eq!(BatEntry::ref_from_bytes(&b).unwrap().get(), 0x1234_5678);
    assert_eq!(BatEntry::new(0x1234_5678).as_bytes(), &b);
    let b = [1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(L1Entry::ref_from_bytes(&b).unwrap().get(), 0x0807_0605_0403_0201);
    assert_eq!(L1Entry::new(0x0807_0605_0403_0201).as_bytes(), &b);
}

#[test]
fn editing_views_reach_the_right_bytes_and_refuse_short_input() {
    // A feature header at byte 8 of a 40-byte buffer.
    let mut bytes = counting::<40>();
    let head = RawFeatureHeader::mut_at(&mut bytes, 8).unwrap();
    assert_eq!(head.data_size.get(), le32(&counting::<40>(), 8 + 16));
    head.flags = 0x0102.into();
    assert_eq!(le64(&bytes, 8 + 8), 0x0102);
    assert!(RawFeatureHeader::mut_at(&mut bytes, 17).is_none());
    assert!(RawFeatureHeader::mut_at(&mut bytes, 41).is_none());

    // A bitmap record's data: the 32-byte header, then two L1 entries.
    let mut data = counting::<48>();
    let bitmap = RawBitmapHeader::mut_in(&mut data).unwrap();
    assert_eq!(bitmap.l1_size.get(), le32(&counting::<48>(), 28));
    bitmap.granularity = 7.into();
    assert_eq!(le32(&data, 24), 7);
    RawBitmapHeader::l1_entry_mut(&mut data, 1).unwrap().set(0x0a0b);
    assert_eq!(le64(&data, 40), 0x0a0b);
    assert!(RawBitmapHeader::l1_entry_mut(&mut data, 2).is_none());
    assert!(RawBitmapHeader::l1_entry_mut(&mut data, usize::MAX).is_none());
    assert!(RawBitmapHeader::mut_in(&mut data[..31]).is_none());
}
