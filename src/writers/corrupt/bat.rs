//! Defects of the BAT and the data area (R16–R20).

use super::edit::Work;
use super::pick;
use crate::error::Requirement;
use crate::error::Result;
use crate::header::Variant;
use crate::raw::SECTOR_SIZE;

pub(super) fn entry_inside_header(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let cs = w.cs;
    let ds = w.data_start();
    let low = if w.h.variant == Variant::V1 { SECTOR_SIZE } else { cs };
    if low < ds {
        let i = pick(&w.redirect_candidates()?, seed);
        w.bat[i] = w.bat_value(low)?;
    } else {
        // No entry can point below the data area: raise it over the lowest data cluster (on
        // the grid, so no other cluster falls below it).
        let Some(lowest) = w.allocated().iter().map(|a| a.1).min() else {
            return w.needs(Requirement::LowSlotOrCluster);
        };
        w.set_data_start(lowest + cs)?;
    }
    Ok(())
}

pub(super) fn entry_unaligned(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.require(w.h.variant == Variant::V1, Requirement::V1Magic)?;
    w.require(w.cs > SECTOR_SIZE, Requirement::LargeClusters)?;
    let i = pick(&w.redirect_candidates()?, seed);
    let off = w.h.bat_entry_offset(w.bat[i]).unwrap_or(w.data_start());
    w.bat[i] = w.bat_value(off + SECTOR_SIZE)?;
    Ok(())
}

pub(super) fn entry_past_eof(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let i = pick(&w.redirect_candidates()?, seed);
    let off = w.next_slot(w.len);
    w.bat[i] = w.bat_value(off)?;
    Ok(())
}

pub(super) fn entry_duplicate(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let alloc = w.allocated();
    w.require(!alloc.is_empty() && w.bat.len() >= 2, Requirement::TwoBatEntries)?;
    let k = (seed % alloc.len() as u64) as usize;
    let (i, _) = alloc[k];
    let j = if alloc.len() >= 2 {
        alloc[(k + 1) % alloc.len()].0
    } else {
        (0..w.bat.len()).find(|&j| j != i).expect("two entries")
    };
    w.bat[j] = w.bat[i];
    Ok(())
}

pub(super) fn trailing_leak(w: &mut Work<'_, '_>) -> Result<()> {
    w.trim = false;
    let at = w.len;
    w.blobs.push((at, vec![0xde; SECTOR_SIZE as usize]));
    w.len = at + w.cs;
    Ok(())
}
