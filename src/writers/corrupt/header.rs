//! Defects of the image header (R1–R15), edited through [`crate::raw::RawHeader`].

use super::edit::Work;
use super::pick;
use crate::error::Requirement;
use crate::error::Result;
use crate::header::Variant;
use crate::raw::bitmap::L1_DIRTY;
use crate::raw::header::{INUSE_CLOSED_V21, INUSE_OPEN, MAX_BAT_ENTRIES, MAX_EXT_OFF, MAX_TRACKS};
use crate::raw::SECTOR_SIZE;

pub(super) fn bad_magic(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.head.magic[(seed % 16) as usize] ^= 0x20;
    Ok(())
}

pub(super) fn bad_version(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.head.version = pick(&[3, 1, 0, 0x0200_0000], seed).into();
    Ok(())
}

pub(super) fn zero_tracks(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.tracks = 0.into();
    Ok(())
}

pub(super) fn too_big_cluster(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.tracks = (MAX_TRACKS + 1).into();
    Ok(())
}

pub(super) fn catalog_too_large(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.bat_entries = (MAX_BAT_ENTRIES + 1).into();
    Ok(())
}

pub(super) fn ext_off_too_big(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.ext_off = MAX_EXT_OFF.into();
    Ok(())
}

pub(super) fn inuse_set(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.inuse = INUSE_OPEN.into();
    Ok(())
}

pub(super) fn unknown_inuse(w: &mut Work<'_, '_>) -> Result<()> {
    w.head.inuse = INUSE_CLOSED_V21.swap_bytes().into();
    Ok(())
}

pub(super) fn unknown_flags(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.head.flags = (w.head.flags.get() | 1 << (2 + seed % 30)).into();
    Ok(())
}

pub(super) fn v1_size_high_bits(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.require(w.h.variant == Variant::V1, Requirement::V1Magic)?;
    w.head.nb_sectors = (w.head.nb_sectors.get() | 1 << (32 + seed % 32)).into();
    Ok(())
}

pub(super) fn size_beyond_bat(w: &mut Work<'_, '_>) -> Result<()> {
    let covered = u64::from(w.h.bat_entries) * u64::from(w.h.cluster_sectors);
    let n = covered + 1;
    if w.h.variant == Variant::V1 && n > u64::from(u32::MAX) {
        return w.needs(Requirement::SmallBat);
    }
    w.head.nb_sectors = n.into();
    for bm in w.bitmaps() {
        if bm.granularity != 0 {
            let l1 = n.div_ceil(u64::from(bm.granularity)).div_ceil(w.cs * 8);
            if l1 != bm.expected {
                return w.needs(Requirement::SteadyL1Size);
            }
        }
        w.bitmap_mut(&bm)?.size = n.into();
    }
    Ok(())
}

pub(super) fn data_off_zero(w: &mut Work<'_, '_>) -> Result<()> {
    w.require(w.h.variant == Variant::V2, Requirement::V2Magic)?;
    w.head.data_off = 0.into();
    Ok(())
}

pub(super) fn data_off_unaligned(w: &mut Work<'_, '_>) -> Result<()> {
    let cs = w.cs;
    w.require(w.h.variant == Variant::V2, Requirement::V2Magic)?;
    w.require(cs > SECTOR_SIZE, Requirement::LargeClusters)?;
    let ds = w.data_start() + SECTOR_SIZE;
    w.set_data_start(ds)?;
    // An empty data area grows with it, so that it does not start past the end.
    w.len = w.len.max(ds);
    // A cluster now below the data area moves to the end of the file.
    for (i, off) in w.allocated() {
        if off < ds {
            let bytes = w.image.source().read_at(off, cs)?.into_owned();
            let to = w.append(bytes, 0);
            w.bat[i] = w.bat_value(to)?;
        }
    }
    Ok(())
}

pub(super) fn data_off_inside_bat(w: &mut Work<'_, '_>) -> Result<()> {
    let cs = w.cs;
    let ds = w.data_start();
    let min = w.h.min_data_start();
    if ds >= cs + SECTOR_SIZE && ds - cs < min {
        return w.set_data_start(ds - cs);
    }
    w.require(ds >= 64 && ds <= w.len, Requirement::DataAreaInFile)?;
    // Grow the BAT by one entry into the first cluster of the data area. A v1 data_off of 0
    // (the end of the BAT) is made explicit first, so that the data area stays put.
    if w.head.data_off.get() == 0 {
        w.set_data_start(ds)?;
    }
    let entries = (ds - 64) / 4 + 1;
    w.require(
        ds.is_multiple_of(4) && entries <= u64::from(MAX_BAT_ENTRIES),
        Requirement::DataAreaAligned4,
    )?;
    let ext_there = w.image.extension().is_some_and(|e| e.file_offset == ds);
    let l1_there = w.bitmaps().iter().any(|b| {
        b.l1.iter()
            .any(|&e| e > L1_DIRTY && e.checked_mul(SECTOR_SIZE) == Some(ds))
    });
    w.require(!ext_there && !l1_there, Requirement::PlainFirstDataCluster)?;
    w.head.bat_entries = (entries as u32).into();
    w.bat.resize(entries as usize, 0);
    Ok(())
}

pub(super) fn data_off_past_eof(w: &mut Work<'_, '_>) -> Result<()> {
    // On the same grid, so that extension and bitmap clusters stay aligned.
    let ds = w.next_slot(w.len) + w.cs;
    w.set_data_start(ds)?;
    w.bat.iter_mut().for_each(|e| *e = 0);
    Ok(())
}
