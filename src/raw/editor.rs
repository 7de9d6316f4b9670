//! The one editor of an extension cluster: the feature list's only encoder ([`encode_list`]), and
//! in-place edits of the extension header, feature headers, bitmap headers and L1 entries through
//! the raw views ([`ExtensionEditor`]).
//!
//! Every writer of a feature list goes through [`encode_list`]: the declarative grammar's
//! [`super::ExtensionCluster`] (so the builder, `edit` and repair), the defect catalogue
//! (`corrupt`) and the mutator. The encoder writes what it is given: a header's `data_size` need
//! not match its data, a list need not end with an end record, so that test images can break the
//! rules on purpose. Callers that want a valid list set `data_size` from the data
//! ([`RecordBytes::sized`]) and ask for the end record.

use zerocopy::{FromBytes, IntoBytes};

use super::bitmap::{L1Entry, RawBitmapHeader};
use super::extension::{checksum, RawExtHeader, EXT_HEADER_SIZE};
use super::feature::{RawFeatureHeader, FEATURE_ALIGN, FEATURE_HEADER_SIZE};

/// A feature record to write: its header exactly as it will be stored and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBytes {
    /// The header, written as it is (its `data_size` is not checked against `data`).
    pub header: RawFeatureHeader,
    /// The bytes after the header; the next record starts at the next multiple of
    /// [`FEATURE_ALIGN`] after them.
    pub data: Vec<u8>,
}

impl RecordBytes {
    /// The record with `data_size` set to the length of its data; `None` when that does not fit
    /// in 32 bits.
    pub fn sized(mut self) -> Option<RecordBytes> {
        self.header.data_size = u32::try_from(self.data.len()).ok()?.into();
        Some(self)
    }
}

/// Where records of these data lengths start when encoded from byte 24 of the cluster, and where
/// the end record after them goes (cluster offsets).
pub fn list_layout(data_lens: impl IntoIterator<Item = u64>) -> (Vec<u64>, u64) {
    let mut pos = EXT_HEADER_SIZE as u64;
    let starts = data_lens
        .into_iter()
        .map(|len| {
            let at = pos.next_multiple_of(FEATURE_ALIGN);
            pos = at + FEATURE_HEADER_SIZE as u64 + len;
            at
        })
        .collect();
    (starts, pos.next_multiple_of(FEATURE_ALIGN))
}

/// The feature list's encoding: the bytes from byte 24 of the cluster on, each record at the next
/// multiple of [`FEATURE_ALIGN`] (counted from the start of the cluster, zeros between), its
/// header as given then its data, and, if `end`, the end record (24 zero bytes) after them.
pub fn encode_list<'r>(records: impl IntoIterator<Item = (&'r RawFeatureHeader, &'r [u8])>, end: bool) -> Vec<u8> {
    let base = EXT_HEADER_SIZE as u64;
    let mut list = Vec::new();
    let mut put = |header: &RawFeatureHeader, data: &[u8]| {
        let at = (base + list.len() as u64).next_multiple_of(FEATURE_ALIGN) - base;
        list.resize(at as usize, 0);
        list.extend_from_slice(header.as_bytes());
        list.extend_from_slice(data);
    };
    for (header, data) in records {
        put(header, data);
    }
    if end {
        put(&RawFeatureHeader::new(0, 0), &[]);
    }
    list
}

/// [`encode_list`] of [`RecordBytes`].
pub fn encode_records(records: &[RecordBytes], end: bool) -> Vec<u8> {
    encode_list(records.iter().map(|r| (&r.header, &r.data[..])), end)
}

/// The bytes of an extension cluster from its start (all of it, or the part in a file), edited in
/// place through the raw views. Every accessor returns `None` when the structure's bytes are not
/// all there.
#[derive(Debug)]
pub struct ExtensionEditor<'a> {
    cluster: &'a mut [u8],
}

impl<'a> ExtensionEditor<'a> {
    /// An editor of `cluster`, the cluster's bytes from its start.
    pub fn new(cluster: &'a mut [u8]) -> Self {
        ExtensionEditor { cluster }
    }

    /// The extension header (magic, checksum).
    pub fn header_mut(&mut self) -> Option<&mut RawExtHeader> {
        RawExtHeader::mut_from_prefix(self.cluster).ok().map(|(h, _)| h)
    }

    /// The feature header at byte `at` of the cluster.
    pub fn feature_mut(&mut self, at: usize) -> Option<&mut RawFeatureHeader> {
        RawFeatureHeader::mut_at(self.cluster, at)
    }

    /// The bitmap header of the dirty-bitmap record at byte `record` of the cluster.
    pub fn bitmap_mut(&mut self, record: usize) -> Option<&mut RawBitmapHeader> {
        RawBitmapHeader::mut_in(self.cluster.get_mut(record.checked_add(FEATURE_HEADER_SIZE)?..)?)
    }

    /// L1 entry `index` of the dirty-bitmap record at byte `record` of the cluster.
    pub fn l1_mut(&mut self, record: usize, index: usize) -> Option<&mut L1Entry> {
        RawBitmapHeader::l1_entry_mut(self.cluster.get_mut(record.checked_add(FEATURE_HEADER_SIZE)?..)?, index)
    }

    /// Puts `list` (an [`encode_list`] result) at byte 24 and zeros after it to the end of the
    /// bytes. `None` when it does not fit; `Some(false)` when the bytes already were so.
    pub fn put_list(&mut self, list: &[u8]) -> Option<bool> {
        let region = self.cluster.get_mut(EXT_HEADER_SIZE..)?;
        let (head, tail) = region.split_at_mut_checked(list.len())?;
        if head == list && super::first_nonzero(tail).is_none() {
            return Some(false);
        }
        head.copy_from_slice(list);
        tail.fill(0);
        Some(true)
    }

    /// Stores the MD5 of bytes `[24, ..)` in the header (the cluster must be whole).
    pub fn rehash(&mut self) {
        if self.cluster.len() < EXT_HEADER_SIZE {
            return;
        }
        let sum = checksum(&self.cluster[EXT_HEADER_SIZE..]);
        if let Some(h) = self.header_mut() {
            h.checksum = sum;
        }
    }
}

impl RawExtHeader {
    /// The extension header at byte `at` of `bytes`, zeros for what lies past their end.
    pub fn read_padded(bytes: &[u8], at: u64) -> RawExtHeader {
        zerocopy::transmute!(super::padded::<EXT_HEADER_SIZE>(bytes, at))
    }
}

impl RawFeatureHeader {
    /// The feature header at byte `at` of `bytes`, zeros for what lies past their end (as readers
    /// of the format read a cluster cut short by the end of the file).
    pub fn read_padded(bytes: &[u8], at: u64) -> RawFeatureHeader {
        zerocopy::transmute!(super::padded::<FEATURE_HEADER_SIZE>(bytes, at))
    }
}

impl RawBitmapHeader {
    /// The bitmap header at byte `at` of `bytes` (the start of a dirty-bitmap record's data),
    /// zeros for what lies past their end.
    pub fn read_padded(bytes: &[u8], at: u64) -> RawBitmapHeader {
        zerocopy::transmute!(super::padded::<{ super::bitmap::BITMAP_HEADER_SIZE }>(bytes, at))
    }

    /// L1 entry `index` of the bitmap whose header is at byte `at` of `bytes`, 0 for bytes past
    /// their end.
    pub fn l1_entry_padded(bytes: &[u8], at: u64, index: u64) -> u64 {
        let entry = super::bitmap::BITMAP_HEADER_SIZE as u64 + super::bitmap::L1_ENTRY_SIZE as u64 * index;
        L1Entry::read_from_bytes(&super::padded::<{ super::bitmap::L1_ENTRY_SIZE }>(
            bytes,
            at.saturating_add(entry),
        ))
        .map_or(0, |e| e.get())
    }
}

#[cfg(test)]
mod tests {
    use super::{encode_list, list_layout, ExtensionEditor, RecordBytes};
    use crate::raw::feature::RawFeatureHeader;

    #[test]
    fn records_start_on_eight_byte_boundaries_and_the_end_record_follows() {
        let a = RecordBytes {
            header: RawFeatureHeader::new(7, 0),
            data: vec![1, 2, 3],
        }
        .sized()
        .unwrap();
        let b = RecordBytes {
            header: RawFeatureHeader::new(9, 99),
            data: vec![4; 8],
        };
        let list = encode_list([(&a.header, &a.data[..]), (&b.header, &b.data[..])], true);
        // a at 24 (27 bytes: to 51), b at 56 (32 bytes: to 88), end record at 88.
        assert_eq!(list_layout([3, 8]), (vec![24, 56], 88));
        assert_eq!(list.len(), 88 + 24 - 24);
        assert_eq!(&list[0..8], &7u64.to_le_bytes());
        assert_eq!(&list[16..20], &3u32.to_le_bytes());
        assert_eq!(&list[24..27], &[1, 2, 3]);
        assert_eq!(&list[27..32], &[0; 5]);
        assert_eq!(&list[32..40], &9u64.to_le_bytes());
        // b's data_size is written as given, not as its data's length.
        assert_eq!(&list[48..52], &99u32.to_le_bytes());
        assert!(list[64..].iter().all(|&x| x == 0));
        assert_eq!(encode_list([(&a.header, &a.data[..])], false).len(), 27);
    }

    #[test]
    fn put_list_refuses_what_does_not_fit_and_reports_no_change() {
        let mut cluster = vec![0xffu8; 64];
        let list = encode_list([], true);
        let mut e = ExtensionEditor::new(&mut cluster);
        assert_eq!(e.put_list(&list), Some(true));
        assert_eq!(e.put_list(&list), Some(false));
        assert_eq!(e.put_list(&[0u8; 41]), None);
        assert_eq!(&cluster[..24], &[0xff; 24]);
        assert!(cluster[24..].iter().all(|&x| x == 0));
    }
}
