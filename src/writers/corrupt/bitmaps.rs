//! Defects of the dirty bitmaps (R32–R42), edited through [`crate::raw::RawBitmapHeader`] and
//! its L1 entries.

use super::edit::{Bm, Work};
use super::pick;
use crate::error::Requirement;
use crate::error::Result;
use crate::raw::bitmap::{BITMAP_HEADER_SIZE, L1_CLEAN, L1_DIRTY, L1_ENTRY_SIZE};
use crate::raw::{RawBitmapHeader, SECTOR_SIZE};

pub(super) fn data_too_short(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let size = w.feature_mut(bm.rec)?.data_size.get();
    // The cut byte becomes padding: it must be zero (the top byte of an L1 entry).
    if w.ext_bytes()?[bm.data() + size as usize - 1] != 0 {
        return w.needs(Requirement::RecordEndsInZero);
    }
    w.feature_mut(bm.rec)?.data_size = (size - 1).into();
    Ok(())
}

pub(super) fn extra_data(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let mut recs = w.records()?;
    recs[bm.feature].data.extend_from_slice(b"EXTRADAT");
    w.encode(recs, true)
}

pub(super) fn size_mismatch(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let n = w.h.nb_sectors + 1;
    w.bitmap_mut(&bm)?.size = n.into();
    Ok(())
}

pub(super) fn granularity_zero(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    w.bitmap_mut(&bm)?.granularity = 0.into();
    Ok(())
}

pub(super) fn granularity_not_power_of_two(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let g = bm.granularity.checked_mul(3).unwrap_or(3);
    w.bitmap_mut(&bm)?.granularity = g.into();
    Ok(())
}

pub(super) fn granularity_overflow(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let g: u32 = 1 << 23;
    let l1 = w.h.nb_sectors.div_ceil(u64::from(g)).div_ceil(w.cs * 8);
    let mut recs = w.records()?;
    let data = &mut recs[bm.feature].data;
    let head = header_in(data);
    head.granularity = g.into();
    head.l1_size = (l1 as u32).into();
    data.truncate(BITMAP_HEADER_SIZE);
    data.resize(BITMAP_HEADER_SIZE + L1_ENTRY_SIZE * l1 as usize, 0);
    w.encode(recs, true)
}

pub(super) fn l1_size_wrong(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let mut recs = w.records()?;
    let data = &mut recs[bm.feature].data;
    let l1 = header_in(data).l1_size.get();
    let end = BITMAP_HEADER_SIZE + L1_ENTRY_SIZE * l1 as usize;
    if l1 == u32::MAX || end > data.len() {
        return w.needs(Requirement::WholeL1Table);
    }
    header_in(data).l1_size = (l1 + 1).into();
    data.splice(end..end, [0u8; L1_ENTRY_SIZE]);
    w.encode(recs, true)
}

pub(super) fn l1_size_zero(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bm = pick(&w.some_bitmaps()?, seed);
    let mut recs = w.records()?;
    w.require(bm.expected > 0, Requirement::NonEmptyDisk)?;
    let data = &mut recs[bm.feature].data;
    header_in(data).l1_size = 0.into();
    data.truncate(BITMAP_HEADER_SIZE);
    w.encode(recs, true)
}

pub(super) fn l1_entry_unaligned(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let cs = w.cs;
    w.require(cs > SECTOR_SIZE, Requirement::LargeClusters)?;
    let bms = w.some_bitmaps()?;
    let ptrs: Vec<(usize, usize)> = bms
        .iter()
        .enumerate()
        .flat_map(|(b, bm)| {
            bm.l1
                .iter()
                .enumerate()
                .filter(|e| *e.1 > L1_DIRTY)
                .map(move |(i, _)| (b, i))
        })
        .collect();
    if ptrs.is_empty() {
        return w.needs(Requirement::BitmapCluster);
    }
    let (b, i) = pick(&ptrs, seed);
    let Some(off) = bms[b].l1[i].checked_mul(SECTOR_SIZE) else {
        return w.needs(Requirement::BitmapClusterInFile);
    };
    let bytes = w.image.source().read_at(off, cs)?.into_owned();
    let to = w.append(bytes, SECTOR_SIZE);
    w.set_l1(&bms[b], i, to / SECTOR_SIZE)
}

pub(super) fn l1_entry_past_eof(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bms = w.some_bitmaps()?;
    let all: Vec<(usize, usize)> = bms
        .iter()
        .enumerate()
        .flat_map(|(b, bm)| (0..bm.l1.len()).map(move |i| (b, i)))
        .collect();
    if all.is_empty() {
        return w.needs(Requirement::L1Entry);
    }
    let (b, i) = pick(&all, seed);
    let off = w.next_slot(w.len);
    w.set_l1(&bms[b], i, off / SECTOR_SIZE)
}

/// What [`l1_overlap`] points an L1 entry at.
pub(super) enum Target {
    /// A cluster of the grid inside the BAT.
    Bat,
    /// The extension cluster.
    Extension,
    /// A data cluster.
    Data,
    /// The bitmap cluster of another L1 entry.
    OtherL1,
}

pub(super) fn l1_overlap(w: &mut Work<'_, '_>, seed: u64, target: Target) -> Result<()> {
    let cs = w.cs;
    let bms = w.some_bitmaps()?;
    let cands = w.inner_l1(&bms);
    if cands.is_empty() {
        return w.needs(Requirement::InnerL1Entry);
    }
    let (b, i) = pick(&cands, seed);
    let off = match target {
        Target::Bat => {
            // The last grid position inside the BAT that is not a marker (sector 0 or 1).
            let (base, end) = (w.grid_base(), w.h.bat_end());
            let off = (end > base).then(|| base + (end - 1 - base) / cs * cs);
            match off {
                Some(off) if off >= 2 * SECTOR_SIZE => off,
                _ => return w.needs(Requirement::GridClusterInBat),
            }
        }
        Target::Extension => {
            let off = w.ext_orig()?.file_offset;
            w.require(w.on_grid(off), Requirement::ExtensionOnGrid)?;
            off
        }
        Target::Data => {
            let data: Vec<u64> = w.allocated().iter().map(|a| a.1).filter(|&o| w.on_grid(o)).collect();
            if data.is_empty() {
                return w.needs(Requirement::DataClusterOnGrid);
            }
            pick(&data, seed)
        }
        Target::OtherL1 => {
            let others: Vec<u64> = bms
                .iter()
                .enumerate()
                .flat_map(|(x, bm)| {
                    bm.l1
                        .iter()
                        .enumerate()
                        .filter(move |&(y, &e)| e > L1_DIRTY && (x, y) != (b, i))
                        .map(|(_, &e)| e)
                })
                .filter(|&e| {
                    e.checked_mul(SECTOR_SIZE)
                        .is_some_and(|o| w.on_grid(o) && o + cs <= w.len)
                })
                .collect();
            if others.is_empty() {
                return w.needs(Requirement::OtherBitmapCluster);
            }
            pick(&others, seed) * SECTOR_SIZE
        }
    };
    w.set_l1(&bms[b], i, off / SECTOR_SIZE)
}

pub(super) fn duplicate_id(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bms = w.some_bitmaps()?;
    w.require(bms.len() >= 2, Requirement::TwoBitmaps)?;
    let k = (seed % bms.len() as u64) as usize;
    let id = w.bitmap_mut(&bms[(k + 1) % bms.len()])?.id;
    w.bitmap_mut(&bms[k])?.id = id;
    Ok(())
}

pub(super) fn trailing_bits(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let cs = w.cs;
    let cb = cs * 8;
    let bms: Vec<Bm> = w
        .some_bitmaps()?
        .into_iter()
        .filter(|b| b.granularity != 0 && b.expected > 0 && b.granules % cb != 0 && b.l1.len() as u64 >= b.expected)
        .collect();
    if bms.is_empty() {
        return w.needs(Requirement::PartialLastChunk);
    }
    let bm = pick(&bms, seed);
    let k = (bm.expected - 1) as usize;
    let used = bm.granules - k as u64 * cb;
    let (byte, bit) = ((used / 8) as usize, used % 8);
    match bm.l1[k] {
        e @ (L1_CLEAN | L1_DIRTY) => {
            let mut bits = vec![0u8; cs as usize];
            if e == L1_DIRTY {
                bits[..byte].fill(0xff);
                bits[byte] = (1u8 << bit) - 1;
            }
            bits[byte] |= 1 << bit;
            let to = w.append(bits, 0);
            w.set_l1(&bm, k, to / SECTOR_SIZE)?;
        }
        e => {
            let Some(off) = e.checked_mul(SECTOR_SIZE).filter(|o| o + cs <= w.len) else {
                return w.needs(Requirement::BitmapClusterInFile);
            };
            let at = off + byte as u64;
            let old = w.image.source().read_at(at, 1)?.first().copied().unwrap_or(0);
            w.blobs.push((at, vec![old | 1 << bit]));
        }
    }
    Ok(())
}

/// The bitmap header at the start of a bitmap record's data (the input's records have one).
pub(super) fn header_in(data: &mut [u8]) -> &mut RawBitmapHeader {
    RawBitmapHeader::mut_in(data).expect("a bitmap record of the input")
}
