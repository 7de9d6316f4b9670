//! Where the structures are in a variant's current bytes, found again before each edit.

use std::borrow::Cow;

use super::edits::EditKind;
use crate::extension::{Extension, FeatureEntry};
use crate::header::Header;
use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE};
use crate::raw::extension::EXT_HEADER_SIZE;
use crate::raw::feature::FEATURE_HEADER_SIZE;
use crate::raw::header::RawHeader;
use crate::raw::SECTOR_SIZE;

/// `(file offset, cluster size)` of the extension cluster, when the header passes R1–R6 and
/// points at a cluster whose 24-byte header is in the file.
pub(super) fn ext_place(bytes: &[u8]) -> Option<(u64, u64)> {
    let h = Header::decode(&RawHeader::read_padded(bytes)).ok()?;
    let off = h.ext_offset()?;
    let cs = h.cluster_size();
    (off + (EXT_HEADER_SIZE as u64) <= bytes.len() as u64 && cs >= EXT_HEADER_SIZE as u64).then_some((off, cs))
}

/// A bitmap record as found in the current bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct BitmapAt {
    pub(super) feature: usize,
    /// File offset of the bitmap header (the record's data).
    pub(super) data: u64,
    /// L1 entries whose 8 bytes are in the record's data, the cluster and the file.
    pub(super) l1_len: u32,
}

/// The extension cluster as found in the current bytes.
#[derive(Clone, Debug)]
pub(super) struct ExtAt {
    pub(super) off: u64,
    pub(super) cs: u64,
    pub(super) features: Vec<FeatureEntry>,
    pub(super) bitmaps: Vec<BitmapAt>,
}

/// Where the structures are in the current bytes.
#[derive(Clone, Debug)]
pub(super) struct View {
    pub(super) raw: RawHeader,
    pub(super) header: Option<Header>,
    pub(super) len: u64,
    /// BAT entries in the file (and in the table).
    pub(super) bat_len: u32,
    pub(super) ext: Option<ExtAt>,
    /// `(bitmap, L1 index, entry)` of the L1 entries that point at a cluster starting in the
    /// file.
    pub(super) l1_clusters: Vec<(BitmapAt, u32, u64)>,
}

impl View {
    pub(super) fn of(bytes: &[u8]) -> View {
        let raw = RawHeader::read_padded(bytes);
        let header = Header::decode(&raw).ok();
        let len = bytes.len() as u64;
        let bat_len = header.map_or(0, |h| {
            let room = len.saturating_sub(BAT_OFFSET) / BAT_ENTRY_SIZE;
            room.min(u64::from(h.bat_entries)) as u32
        });
        let ext = ext_place(bytes).map(|(off, cs)| {
            let end = (off + cs).min(len);
            let ext = Extension::new(off, cs, Cow::Borrowed(&bytes[off as usize..end as usize]));
            let features = ext.features().to_vec();
            let bitmaps = features
                .iter()
                .filter(|f| f.is_bitmap())
                .map(|f| {
                    let data = off + f.offset + FEATURE_HEADER_SIZE as u64;
                    let l1_size = u64::from(RawBitmapHeader::read_padded(bytes, data).l1_size.get());
                    let room_data = (u64::from(f.header.data_size.get()) - BITMAP_HEADER_SIZE as u64) / 8;
                    let room_file = end.saturating_sub(data + BITMAP_HEADER_SIZE as u64) / 8;
                    BitmapAt {
                        feature: f.index,
                        data,
                        l1_len: l1_size.min(room_data).min(room_file) as u32,
                    }
                })
                .collect();
            ExtAt {
                off,
                cs,
                features,
                bitmaps,
            }
        });
        let mut l1_clusters = Vec::new();
        for b in ext.iter().flat_map(|e| &e.bitmaps) {
            for i in 0..b.l1_len {
                let e = l1_get(bytes, b, i);
                if e > 1 && e.checked_mul(SECTOR_SIZE).is_some_and(|o| o < len) {
                    l1_clusters.push((*b, i, e));
                }
            }
        }
        View {
            raw,
            header,
            len,
            bat_len,
            ext,
            l1_clusters,
        }
    }

    pub(super) fn applies(&self, kind: EditKind) -> bool {
        let ext = self.ext.as_ref();
        let features = ext.map_or(0, |e| e.features.len());
        let bitmaps = ext.map_or(&[][..], |e| &e.bitmaps[..]);
        match kind {
            EditKind::Header | EditKind::Magic | EditKind::FileLength => true,
            EditKind::Bat => self.bat_len > 0 || self.header.is_some(),
            EditKind::ExtensionMagic | EditKind::FeatureInsert => ext.is_some(),
            EditKind::Feature | EditKind::FeatureDrop | EditKind::FeatureDuplicate | EditKind::FeatureTruncate => {
                features > 0
            }
            EditKind::FeatureSwap => features > 1,
            EditKind::Bitmap => !bitmaps.is_empty(),
            EditKind::L1 => bitmaps.iter().any(|b| b.l1_len > 0),
            EditKind::BitmapByte => !self.l1_clusters.is_empty(),
        }
    }
}

/// L1 entry `index` of bitmap `b` (whose entries are all in `bytes`).
pub(super) fn l1_get(bytes: &[u8], b: &BitmapAt, index: u32) -> u64 {
    RawBitmapHeader::l1_entry_padded(bytes, b.data, u64::from(index))
}
