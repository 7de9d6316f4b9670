//! Defects of placement and readers' limits (R43–R49): what lies between the BAT and the data
//! area, space nothing references, and header values QEMU or ploop read differently.

use super::bitmaps::header_in;
use super::edit::Work;
use super::pick;
use crate::error::{Requirement, Result};
use crate::header::Variant;
use crate::raw::bitmap::BITMAP_HEADER_SIZE;
use crate::raw::SECTOR_SIZE;
use crate::validate::referenced_end;

/// The 4-byte slots between the end of the BAT and the data area (in the file), by offset.
fn slack_slots(w: &Work<'_, '_>) -> Vec<u64> {
    let from = w.h.bat_end();
    let to = w.data_start().min(w.len);
    (from..to.saturating_sub(3)).step_by(4).collect()
}

/// R43: one more BAT entry, past the clusters of the disk, pointing at a new cluster at the end
/// of the file.
pub(super) fn entry_past_disk(w: &mut Work<'_, '_>) -> Result<()> {
    // The new index is past the disk: a valid BAT covers the disk (R11) and no more.
    w.require(!slack_slots(w).is_empty(), Requirement::RoomAfterBat)?;
    let at = w.append(vec![0xd5; SECTOR_SIZE as usize], 0);
    let entry = w.bat_value(at)?;
    w.bat.push(entry);
    w.head.bat_entries = (w.bat.len() as u32).into();
    Ok(())
}

/// R44: a copy of an allocated BAT entry (or 1 when none is) in a slot between the end of the BAT
/// and the data area.
pub(super) fn slack_nonzero(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let slots = slack_slots(w);
    if slots.is_empty() {
        return w.needs(Requirement::RoomAfterBat);
    }
    let at = pick(&slots, seed);
    let value = w.bat.iter().copied().find(|&e| e != 0).unwrap_or(1);
    w.blobs.push((at, value.to_le_bytes().to_vec()));
    Ok(())
}

/// R45 (with R44: the extension's bytes are in the slots ploop reads): the data area moves one
/// cluster up, the data clusters in the cluster it leaves move to the end of the file, and the
/// extension cluster moves into it.
pub(super) fn ext_before_data(w: &mut Work<'_, '_>) -> Result<()> {
    let cs = w.cs;
    let ext = w.ext_orig()?.file_offset;
    let ds = w.data_start();
    w.require(ds + cs <= w.len, Requirement::DataAreaInFile)?;
    // A bitmap cluster in the cluster the data area leaves would be before the data area too.
    let bitmap_there = w
        .bitmaps()
        .iter()
        .flat_map(|b| b.l1.clone())
        .any(|e| e.checked_mul(SECTOR_SIZE).is_some_and(|o| o >= ds && o < ds + cs));
    w.require(!bitmap_there, Requirement::PlainFirstDataCluster)?;
    w.set_data_start(ds + cs)?;
    for (i, off) in w.allocated() {
        if off < ds + cs {
            let bytes = w.image.source().read_at(off, cs)?.into_owned();
            let to = w.append(bytes, 0);
            w.bat[i] = w.bat_value(to)?;
        }
    }
    if ext != ds {
        w.ext()?.offset = ds;
        w.head.ext_off = (ds / SECTOR_SIZE).into();
    }
    Ok(())
}

/// R46: a data cluster with a referenced cluster after it loses its BAT entry.
pub(super) fn unreferenced_cluster(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let end = referenced_end(w.image);
    let cs = w.cs;
    let inner: Vec<usize> = w
        .allocated()
        .into_iter()
        .filter(|&(_, off)| w.on_grid(off) && off + cs < end)
        .map(|(i, _)| i)
        .collect();
    if inner.is_empty() {
        return w.needs(Requirement::InnerDataCluster);
    }
    let i = pick(&inner, seed);
    w.bat[i] = 0;
    Ok(())
}

/// R47: a v1 `data_off` of 0 (the end of the BAT) or 1, where the data area already starts.
pub(super) fn v1_data_off_unset(w: &mut Work<'_, '_>) -> Result<()> {
    w.require(w.h.variant == Variant::V1, Requirement::V1Magic)?;
    let ds = w.data_start();
    let value = if ds == w.h.min_data_start() {
        0
    } else if ds == SECTOR_SIZE {
        1
    } else {
        return w.needs(Requirement::DataRightAfterBat);
    };
    w.head.data_off = value.into();
    Ok(())
}

/// R48 (with R14: the data area is then inside the BAT): `bat_entries` one above what QEMU reads
/// in one request. Only on an image with nothing after its BAT, whose zeros then read as
/// unallocated entries.
pub(super) fn bat_too_large_to_read(w: &mut Work<'_, '_>) -> Result<()> {
    let empty = w.allocated().is_empty() && w.image.extension().is_none() && w.len <= w.data_start();
    w.require(empty && w.head.data_off.get() != 0, Requirement::NothingAfterBat)?;
    w.head.bat_entries = (crate::validate::MAX_READABLE_BAT + 1).into();
    Ok(())
}

/// R49: the disk shrinks to 0 sectors: every BAT entry is unallocated and every bitmap loses
/// its L1 table (size 0, `l1_size` 0).
pub(super) fn bitmap_on_empty_disk(w: &mut Work<'_, '_>) -> Result<()> {
    let bms = w.some_bitmaps()?;
    let mut recs = w.records()?;
    for bm in &bms {
        let data = &mut recs[bm.feature].data;
        let head = header_in(data);
        head.size = 0.into();
        head.l1_size = 0.into();
        data.truncate(BITMAP_HEADER_SIZE);
    }
    w.encode(recs, true)?;
    w.head.nb_sectors = 0.into();
    w.bat.iter_mut().for_each(|e| *e = 0);
    Ok(())
}
