//! Edits of the extension header and the feature list: a field of a record, records inserted,
//! dropped, swapped, duplicated or cut, the list written again through the one encoder
//! ([`crate::raw::editor::encode_list`]).

use rand::{Rng, RngCore};

use super::edits::{Edit, FeatureField, Inserted};
use super::view::{ExtAt, View};
use super::work::{pick, Work};
use crate::extension::FeatureEntry;
use crate::raw::bitmap::BITMAP_HEADER_SIZE;
use crate::raw::editor::{encode_records, ExtensionEditor, RecordBytes};
use zerocopy::FromBytes;

use crate::raw::extension::{RawExtHeader, EXT_HEADER_SIZE, EXT_MAGIC};
use crate::raw::feature::{
    RawFeatureHeader, FEATURE_DIRTY_BITMAP, FEATURE_FLAG_NECESSARY, FEATURE_FLAG_TRANSIT, FEATURE_HEADER_SIZE,
};

impl Work {
    pub(super) fn ext_magic(&mut self, view: &View) -> Option<Edit> {
        let off = view.ext.as_ref()?.off as usize;
        let from = RawExtHeader::read_from_prefix(&self.bytes[off..]).ok()?.0.magic.get();
        let to = self.other(
            from,
            &[
                0,
                EXT_MAGIC ^ 1,
                EXT_MAGIC.swap_bytes(),
                FEATURE_DIRTY_BITMAP,
                EXT_MAGIC,
            ],
        )?;
        self.touch(off, 8);
        ExtensionEditor::new(&mut self.bytes[off..]).header_mut()?.magic.set(to);
        Some(Edit::ExtensionMagic { from, to })
    }

    /// The feature header of `entry`, in the file, for editing.
    pub(super) fn feature_header(&mut self, ext: &ExtAt, entry: &FeatureEntry) -> Option<&mut RawFeatureHeader> {
        let at = (ext.off + entry.offset) as usize;
        self.touch(at, FEATURE_HEADER_SIZE);
        RawFeatureHeader::mut_at(&mut self.bytes, at)
    }

    pub(super) fn feature_field(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let entry = pick(&mut self.rng, &ext.features);
        let field = pick(
            &mut self.rng,
            &[
                FeatureField::Magic,
                FeatureField::Flags,
                FeatureField::DataSize,
                FeatureField::DataSize,
                FeatureField::Unused,
            ],
        );
        let h = entry.header;
        let left = ext.cs.saturating_sub(entry.offset + FEATURE_HEADER_SIZE as u64);
        let (from, candidates) = match field {
            FeatureField::Magic => (
                h.magic.get(),
                vec![
                    0,
                    FEATURE_DIRTY_BITMAP,
                    FEATURE_DIRTY_BITMAP + 1,
                    EXT_MAGIC,
                    self.rng.random::<u64>() | 1,
                ],
            ),
            FeatureField::Flags => (
                h.flags.get(),
                vec![
                    FEATURE_FLAG_NECESSARY,
                    FEATURE_FLAG_TRANSIT,
                    FEATURE_FLAG_NECESSARY | FEATURE_FLAG_TRANSIT,
                    1 << 63,
                    u64::MAX,
                ],
            ),
            FeatureField::DataSize => {
                let d = u64::from(h.data_size.get());
                (
                    d,
                    vec![
                        0,
                        1,
                        FEATURE_HEADER_SIZE as u64 - 1,
                        BITMAP_HEADER_SIZE as u64 - 1,
                        BITMAP_HEADER_SIZE as u64,
                        d + 1,
                        d.saturating_sub(1),
                        d + 8,
                        d.saturating_sub(8),
                        left,
                        left + 1,
                        left.saturating_sub(FEATURE_HEADER_SIZE as u64 - 8),
                        i32::MAX as u64,
                        u32::MAX.into(),
                    ],
                )
            }
            FeatureField::Unused => (h.unused.get().into(), vec![0, 1, u32::MAX.into()]),
        };
        let to = self.other(from, &candidates)?;
        let fh = self.feature_header(ext, &entry)?;
        match field {
            FeatureField::Magic => fh.magic.set(to),
            FeatureField::Flags => fh.flags.set(to),
            FeatureField::DataSize => fh.data_size.set(to.min(u32::MAX.into()) as u32),
            FeatureField::Unused => fh.unused.set(to as u32),
        }
        Some(Edit::Feature {
            feature: entry.index,
            field,
            from,
            to,
        })
    }

    /// The records as `(header, data)`, the data cut to what is in the cluster and the file.
    pub(super) fn records(&self, ext: &ExtAt) -> Vec<RecordBytes> {
        let end = (ext.off + ext.cs).min(self.bytes.len() as u64);
        ext.features
            .iter()
            .map(|f| {
                let r = f.data_range();
                let s = (ext.off + r.start).min(end) as usize;
                let e = (ext.off + r.end).min(end) as usize;
                RecordBytes {
                    header: f.header,
                    data: self.bytes[s..e].to_vec(),
                }
            })
            .collect()
    }

    /// Writes the feature list again from byte 24 of the cluster: each record at the next
    /// multiple of 8, an end record, zeros to the end of the cluster's part in the file. The
    /// file grows to hold the list if it must and may; `None` when the list does not fit.
    pub(super) fn write_records(&mut self, ext: &ExtAt, records: &[RecordBytes]) -> Option<()> {
        let list = encode_records(records, true);
        let end_record = (EXT_HEADER_SIZE + list.len()) as u64;
        if end_record > ext.cs {
            return None;
        }
        let need = ext.off + end_record;
        let len = self.bytes.len() as u64;
        if need > len {
            if need > self.max_len {
                return None;
            }
            self.resize(need as usize);
        }
        let (start, stop) = (
            ext.off as usize,
            (ext.off + ext.cs).min(self.bytes.len() as u64) as usize,
        );
        // The same list (a swap of equal records, an end record after the last): no edit.
        if !ExtensionEditor::new(&mut self.bytes[start..stop]).put_list(&list)? {
            return None;
        }
        self.touch(start + EXT_HEADER_SIZE, stop - start - EXT_HEADER_SIZE);
        Some(())
    }

    pub(super) fn insert(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let bitmaps: Vec<usize> = ext.bitmaps.iter().map(|b| b.feature).collect();
        let record = if bitmaps.is_empty() {
            pick(
                &mut self.rng,
                &[Inserted::EmptyBitmap, Inserted::Unknown, Inserted::End],
            )
        } else {
            pick(
                &mut self.rng,
                &[
                    Inserted::BitmapCopy,
                    Inserted::BitmapCopy,
                    Inserted::EmptyBitmap,
                    Inserted::Unknown,
                    Inserted::End,
                ],
            )
        };
        let nb_sectors = view.header.map_or(0, |h| h.nb_sectors);
        let new = match record {
            Inserted::BitmapCopy => {
                let f = pick(&mut self.rng, &bitmaps);
                let mut copy = records[f].clone();
                if copy.data.len() >= 24 {
                    self.rng.fill_bytes(&mut copy.data[8..24]);
                }
                copy
            }
            Inserted::EmptyBitmap => {
                let mut data = vec![0u8; BITMAP_HEADER_SIZE];
                data[..8].copy_from_slice(&nb_sectors.to_le_bytes());
                self.rng.fill_bytes(&mut data[8..24]);
                data[24..28].copy_from_slice(&128u32.to_le_bytes());
                RecordBytes {
                    header: RawFeatureHeader::new(FEATURE_DIRTY_BITMAP, BITMAP_HEADER_SIZE as u32),
                    data,
                }
            }
            Inserted::Unknown => {
                let n = pick(&mut self.rng, &[0usize, 8, 13, 64]);
                let mut data = vec![0u8; n];
                self.rng.fill_bytes(&mut data);
                RecordBytes {
                    header: RawFeatureHeader::new(self.rng.random::<u64>() | 2, n as u32),
                    data,
                }
            }
            Inserted::End => RecordBytes {
                header: RawFeatureHeader::new(0, 0),
                data: Vec::new(),
            },
        };
        let at = self.rng.random_range(0..=records.len());
        records.insert(at, new);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureInsert { at, record })
    }

    pub(super) fn drop_feature(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        records.remove(feature);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureDrop { feature })
    }

    pub(super) fn swap(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let n = records.len();
        let a = self.rng.random_range(0..n);
        let b = (a + self.rng.random_range(1..n)) % n;
        records.swap(a, b);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureSwap {
            a: a.min(b),
            b: a.max(b),
        })
    }

    pub(super) fn duplicate(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        records.insert(feature + 1, records[feature].clone());
        self.write_records(ext, &records)?;
        Some(Edit::FeatureDuplicate { feature })
    }

    pub(super) fn truncate(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let mut records = self.records(ext);
        let feature = self.rng.random_range(0..records.len());
        let from = records[feature].header.data_size.get();
        let len = records[feature].data.len();
        if len == 0 {
            return None;
        }
        let keep = pick(
            &mut self.rng,
            &[0, len / 2, len - 1, BITMAP_HEADER_SIZE.min(len - 1), (len - 1) / 8 * 8],
        );
        records[feature].data.truncate(keep);
        records[feature].header.data_size.set(keep as u32);
        self.write_records(ext, &records)?;
        Some(Edit::FeatureTruncate {
            feature,
            from,
            to: keep as u32,
        })
    }
}
