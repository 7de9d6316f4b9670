//! Edits of the header and the BAT.

use rand::Rng;
use zerocopy::FromBytes;

use super::edits::{BatTarget, Edit, HeaderField, MagicName};
use super::view::View;
use super::work::{pick, Work};
use crate::header::Variant;
use crate::raw::bat::{BatEntry, BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::header::{
    FLAG_EMPTY, FLAG_FORMAT_CONVERSION, INUSE_CLOSED_V21, INUSE_OPEN, MAX_BAT_ENTRIES, MAX_EXT_OFF, MAX_TRACKS,
};
use crate::raw::SECTOR_SIZE;

impl Work {
    pub(super) fn header(&mut self, view: &View) -> Option<Edit> {
        let field = pick(&mut self.rng, &HeaderField::ALL);
        let raw = view.raw;
        let cur = field.get(&raw);
        let tracks = u64::from(raw.tracks.get()).max(1);
        let len_sectors = view.len.div_ceil(SECTOR_SIZE);
        let mut c = vec![0, 1, field.max(), cur.wrapping_add(1), cur.wrapping_sub(1)];
        // The value the other fields call for, off by one, and values in the other magic's unit.
        let right = match field {
            HeaderField::BatEntries => raw.nb_sectors.get().div_ceil(tracks),
            HeaderField::NbSectors => u64::from(raw.bat_entries.get()).wrapping_mul(tracks),
            HeaderField::DataOff => {
                (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(raw.bat_entries.get())).div_ceil(SECTOR_SIZE)
            }
            HeaderField::ExtOff => len_sectors,
            _ => cur,
        };
        c.extend([
            right,
            right.wrapping_add(1),
            right.wrapping_sub(1),
            cur.wrapping_mul(2),
            cur / 2,
        ]);
        c.extend(match field {
            HeaderField::Version => vec![2, 3],
            HeaderField::Tracks => vec![u64::from(MAX_TRACKS), u64::from(MAX_TRACKS) + 1, 8, 128, 2048, 3],
            HeaderField::BatEntries => vec![u64::from(MAX_BAT_ENTRIES), u64::from(MAX_BAT_ENTRIES) + 1],
            HeaderField::NbSectors => vec![
                cur | 1 << 32,
                1 << 54,
                i64::MAX as u64,
                1 << 63,
                cur.wrapping_add(tracks),
            ],
            HeaderField::Inuse => vec![u64::from(INUSE_OPEN), u64::from(INUSE_CLOSED_V21), 0xdead_beef],
            HeaderField::DataOff => vec![
                cur.wrapping_mul(tracks),
                cur / tracks,
                len_sectors,
                len_sectors + 1,
                tracks,
            ],
            HeaderField::Flags => vec![
                FLAG_EMPTY.into(),
                FLAG_FORMAT_CONVERSION.into(),
                4,
                (FLAG_EMPTY | FLAG_FORMAT_CONVERSION).into(),
            ],
            HeaderField::ExtOff => vec![
                MAX_EXT_OFF,
                MAX_EXT_OFF - 1,
                cur / tracks,
                cur.wrapping_mul(tracks),
                cur.wrapping_add(tracks),
                1,
            ],
            _ => vec![],
        });
        let c: Vec<u64> = c.into_iter().map(|v| v & field.max()).collect();
        let to = self.other(cur, &c)?;
        let mut raw = raw;
        field.set(&mut raw, to);
        self.write_header(&raw);
        Some(Edit::Header {
            field,
            from: cur,
            to: field.get(&raw),
        })
    }

    pub(super) fn magic(&mut self, view: &View) -> Option<Edit> {
        let mut raw = view.raw;
        let to = if raw.magic == Variant::V1.magic() {
            raw.magic = Variant::V2.magic();
            MagicName::WithouFreSpacExt
        } else {
            raw.magic = Variant::V1.magic();
            MagicName::WithoutFreeSpace
        };
        self.write_header(&raw);
        Some(Edit::Magic { to })
    }

    pub(super) fn bat_get(&self, index: u32) -> u32 {
        let at = (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index)) as usize;
        BatEntry::read_from_bytes(&self.bytes[at..at + 4]).map_or(0, |e| e.get())
    }

    pub(super) fn bat(&mut self, view: &View) -> Option<Edit> {
        let h = view.header?;
        let unit = match h.variant {
            Variant::V1 => SECTOR_SIZE,
            Variant::V2 => h.cluster_size(),
        };
        let allocated: Vec<u32> = (0..view.bat_len).filter(|&i| self.bat_get(i) != 0).collect();
        let target = pick(
            &mut self.rng,
            &[
                BatTarget::Free,
                BatTarget::PastEof,
                BatTarget::IntoHeader,
                BatTarget::Duplicate,
                BatTarget::Extension,
                BatTarget::Unaligned,
                BatTarget::Huge,
                BatTarget::BeyondDisk,
            ],
        );
        let disk_clusters = h.nb_sectors.div_ceil(u64::from(h.cluster_sectors));
        let index = if target == BatTarget::BeyondDisk {
            // Past the guest disk, within the table; else the entry just past the table (in the
            // padding before the data area, if the file has it).
            let first = disk_clusters.min(u64::from(h.bat_entries));
            let index = if first < u64::from(view.bat_len) {
                self.rng.random_range(first..u64::from(view.bat_len))
            } else {
                u64::from(h.bat_entries)
            };
            let at = BAT_OFFSET + BAT_ENTRY_SIZE * index;
            if at + BAT_ENTRY_SIZE > view.len || index > u64::from(u32::MAX) {
                return None;
            }
            index as u32
        } else if !allocated.is_empty() && (view.bat_len == 0 || self.rng.random_bool(0.7)) {
            pick(&mut self.rng, &allocated)
        } else if view.bat_len > 0 {
            self.rng.random_range(0..view.bat_len)
        } else {
            return None;
        };
        let from = self.bat_get(index);
        let in_units = |off: u64| u32::try_from(off / unit).ok();
        let to = match target {
            BatTarget::Free => 0,
            BatTarget::PastEof => in_units(view.len.next_multiple_of(unit) + unit * self.rng.random_range(0..4))?,
            BatTarget::IntoHeader => match h.variant {
                Variant::V1 => self.rng.random_range(1..=h.data_start().div_ceil(SECTOR_SIZE).max(1)) as u32,
                Variant::V2 => 1,
            },
            BatTarget::Duplicate => {
                let others: Vec<u32> = allocated.iter().copied().filter(|&i| i != index).collect();
                if others.is_empty() {
                    return None;
                }
                let o = pick(&mut self.rng, &others);
                self.bat_get(o)
            }
            BatTarget::Extension => in_units(view.ext.as_ref()?.off)?,
            BatTarget::Unaligned => match h.variant {
                Variant::V1 => from.wrapping_add(1),
                Variant::V2 => u32::try_from(u64::from(from) * u64::from(h.cluster_sectors)).unwrap_or(from / 2),
            },
            BatTarget::Huge => pick(
                &mut self.rng,
                &[
                    u32::MAX,
                    1 << 31,
                    i32::MAX as u32,
                    (u64::from(u32::MAX) / u64::from(h.cluster_sectors)) as u32,
                ],
            ),
            BatTarget::BeyondDisk => match allocated.first() {
                Some(&i) => self.bat_get(i),
                None => in_units(h.data_start().next_multiple_of(unit))?.max(1),
            },
        };
        if to == from {
            return None;
        }
        let at = (BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index)) as usize;
        self.touch(at, 4);
        self.bytes[at..at + 4].copy_from_slice(&to.to_le_bytes());
        Some(Edit::Bat {
            index,
            from,
            to,
            target,
        })
    }
}
