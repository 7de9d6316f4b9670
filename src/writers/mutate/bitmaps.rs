//! Edits of dirty bitmaps: a header field, an L1 entry, a byte of a bitmap cluster.

use rand::Rng;

use super::edits::{BitmapField, Edit, L1Target};
use super::view::{l1_get, BitmapAt, View};
use super::work::{pick, Work};
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE, L1_ENTRY_SIZE};
use crate::raw::SECTOR_SIZE;

impl Work {
    pub(super) fn bitmap_field(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let b = pick(&mut self.rng, &ext.bitmaps);
        let field = pick(
            &mut self.rng,
            &[BitmapField::Size, BitmapField::Granularity, BitmapField::L1Size],
        );
        let at = b.data as usize;
        let nb = view.header.map_or(0, |h| h.nb_sectors);
        self.touch(at, BITMAP_HEADER_SIZE);
        let h = RawBitmapHeader::mut_in(self.bytes.get_mut(at..)?)?;
        let (from, candidates) = match field {
            BitmapField::Size => {
                let s = h.size.get();
                (
                    s,
                    vec![
                        0,
                        1,
                        nb.wrapping_add(1),
                        nb.wrapping_sub(1),
                        nb.wrapping_mul(2),
                        1 << 54,
                        i64::MAX as u64,
                        u64::MAX,
                        nb | 1 << 63,
                    ],
                )
            }
            BitmapField::Granularity => {
                let g = u64::from(h.granularity.get());
                (
                    g,
                    vec![
                        0,
                        1,
                        3,
                        g * 2,
                        g / 2,
                        g * 3,
                        1 << 22,
                        1 << 23,
                        u32::MAX.into(),
                        1 << 31,
                        g + 1,
                    ],
                )
            }
            BitmapField::L1Size => {
                let l = u64::from(h.l1_size.get());
                (
                    l,
                    vec![0, 1, l + 1, l.saturating_sub(1), l * 2, u32::MAX.into(), 1 << 28],
                )
            }
        };
        let to = candidates.into_iter().filter(|&v| v != from).collect::<Vec<_>>();
        let to = pick(&mut self.rng, &to);
        match field {
            BitmapField::Size => h.size.set(to),
            BitmapField::Granularity => h.granularity.set(to as u32),
            BitmapField::L1Size => h.l1_size.set(to as u32),
        }
        let to = match field {
            BitmapField::Size => to,
            _ => u64::from(to as u32),
        };
        Some(Edit::Bitmap {
            feature: b.feature,
            field,
            from,
            to,
        })
    }

    pub(super) fn l1(&mut self, view: &View) -> Option<Edit> {
        let ext = view.ext.as_ref()?;
        let with: Vec<BitmapAt> = ext.bitmaps.iter().copied().filter(|b| b.l1_len > 0).collect();
        let b = pick(&mut self.rng, &with);
        let index = self.rng.random_range(0..b.l1_len);
        let from = l1_get(&self.bytes, &b, index);
        let h = view.header?;
        let cs_sectors = u64::from(h.cluster_sectors);
        let target = pick(
            &mut self.rng,
            &[
                L1Target::Clean,
                L1Target::Dirty,
                L1Target::Unaligned,
                L1Target::PastEof,
                L1Target::Bat,
                L1Target::Extension,
                L1Target::Data,
                L1Target::OtherL1,
                L1Target::Huge,
            ],
        );
        let to = match target {
            L1Target::Clean => 0,
            L1Target::Dirty => 1,
            L1Target::Unaligned => {
                if from > 1 {
                    from.wrapping_add(1)
                } else {
                    view.len.div_ceil(SECTOR_SIZE).saturating_sub(cs_sectors).max(2) | 1
                }
            }
            L1Target::PastEof => {
                view.len.div_ceil(SECTOR_SIZE).next_multiple_of(cs_sectors) + cs_sectors * self.rng.random_range(0..3)
            }
            // Sector 2 or the first cluster: inside the header and BAT.
            L1Target::Bat => pick(&mut self.rng, &[2, cs_sectors.max(2)]),
            L1Target::Extension => ext.off / SECTOR_SIZE,
            L1Target::Data => {
                let allocated: Vec<u64> = (0..view.bat_len)
                    .map(|i| self.bat_get(i))
                    .filter_map(|e| h.bat_entry_offset(e))
                    .collect();
                if allocated.is_empty() {
                    return None;
                }
                pick(&mut self.rng, &allocated) / SECTOR_SIZE
            }
            L1Target::OtherL1 => {
                let others: Vec<u64> = view
                    .l1_clusters
                    .iter()
                    .copied()
                    .filter(|&(o, i, _)| !(o.feature == b.feature && i == index))
                    .map(|(_, _, e)| e)
                    .collect();
                if others.is_empty() {
                    return None;
                }
                pick(&mut self.rng, &others)
            }
            L1Target::Huge => pick(&mut self.rng, &[u64::MAX, 1 << 55, (i64::MAX as u64 >> 9) + 1, 1 << 63]),
        };
        if to == from {
            return None;
        }
        let at = b.data as usize;
        self.touch(at + BITMAP_HEADER_SIZE + L1_ENTRY_SIZE * index as usize, L1_ENTRY_SIZE);
        RawBitmapHeader::l1_entry_mut(&mut self.bytes[at..], index as usize)?.set(to);
        Some(Edit::L1 {
            feature: b.feature,
            index,
            from,
            to,
            target,
        })
    }

    pub(super) fn bitmap_byte(&mut self, view: &View) -> Option<Edit> {
        let clusters = &view.l1_clusters;
        if clusters.is_empty() {
            return None;
        }
        let cs = view.header?.cluster_size();
        let (_, _, e) = pick(&mut self.rng, clusters);
        let start = e * SECTOR_SIZE;
        let end = (start + cs).min(view.len);
        let offset = self.rng.random_range(start..end);
        let from = self.bytes[offset as usize];
        let to = match self.rng.random_range(0..4) {
            0 => 0,
            1 => 0xff,
            2 => from ^ (1 << self.rng.random_range(0..8)),
            _ => self.rng.random::<u8>(),
        };
        if to == from {
            return None;
        }
        self.touch(offset as usize, 1);
        self.bytes[offset as usize] = to;
        Some(Edit::BitmapByte { offset, from, to })
    }
}
