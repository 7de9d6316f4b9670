//! Defects of the extension cluster and its feature list (R21–R31), edited through
//! [`crate::raw::RawExtHeader`] and [`crate::raw::RawFeatureHeader`].

use super::edit::Work;
use super::pick;
use crate::error::Requirement;
use crate::error::Result;
use crate::extension::ListEnd;
use crate::raw::feature::FEATURE_HEADER_SIZE;
use crate::raw::ExtensionEditor;
use crate::raw::SECTOR_SIZE;

pub(super) fn off_unaligned(w: &mut Work<'_, '_>) -> Result<()> {
    w.require(w.cs > SECTOR_SIZE, Requirement::LargeClusters)?;
    w.move_ext(SECTOR_SIZE)
}

pub(super) fn past_eof(w: &mut Work<'_, '_>) -> Result<()> {
    w.move_ext(0)?;
    let cs = w.cs;
    let ext = w.ext.as_mut().expect("moved");
    ExtensionEditor::new(&mut ext.bytes).rehash();
    let last = ext.bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
    let cut = (last as u64 + 1).next_multiple_of(SECTOR_SIZE);
    let off = ext.offset;
    w.require(cut < cs, Requirement::ExtensionZeroTail)?;
    w.len = off + cut;
    w.trim = false;
    Ok(())
}

pub(super) fn overlap_data(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let off = w.ext_orig()?.file_offset;
    let fits = off >= w.data_start() && w.on_grid(off);
    w.require(fits, Requirement::ExtensionOnDataGrid)?;
    let i = pick(&w.redirect_candidates()?, seed);
    w.bat[i] = w.bat_value(off)?;
    Ok(())
}

pub(super) fn bad_magic(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let mut editor = w.editor()?;
    let ext = editor.header_mut().expect("a whole cluster");
    let mut magic = ext.magic.get().to_le_bytes();
    magic[(seed % 8) as usize] ^= 0xff;
    ext.magic = u64::from_le_bytes(magic).into();
    Ok(())
}

pub(super) fn bad_checksum(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    w.editor()?.header_mut().expect("a whole cluster").checksum[(seed % 16) as usize] ^= 0x01;
    w.rehash = false;
    Ok(())
}

/// How far [`grow_last_record`] grows the last record.
pub(super) enum Grow {
    /// Until 8 or 16 bytes are left after it: too few for the next record's header.
    LeaveAShortHeader,
    /// To the end of the cluster: no room for the end record.
    ToTheEnd,
}

pub(super) fn grow_last_record(w: &mut Work<'_, '_>, seed: u64, grow: Grow) -> Result<()> {
    let cs = w.cs as usize;
    let mut recs = w.records()?;
    if recs.is_empty() {
        return w.needs(Requirement::FeatureRecord);
    }
    let target = match grow {
        Grow::ToTheEnd => cs,
        Grow::LeaveAShortHeader => cs - 8 * (1 + (seed % 2) as usize),
    };
    let at = *Work::positions(&recs).last().expect("one record");
    let last = recs.last_mut().expect("one record");
    let Some(size) = target
        .checked_sub(at + FEATURE_HEADER_SIZE)
        .filter(|&n| n >= last.data.len())
    else {
        return w.needs(Requirement::ExtensionRoom);
    };
    last.data.resize(size, 0);
    w.encode(recs, false)
}

/// Sets `flag` on a feature record. A flagged record is no longer a dirty bitmap for the
/// validator, so its bitmap clusters no longer count as referenced; when some of them lie past
/// the end of what still is, the extension cluster moves to the end of the file, so that the
/// file keeps them (with no leaked tail) rather than losing them to the cut that keeps the leak
/// rule quiet.
pub(super) fn flag_feature(w: &mut Work<'_, '_>, seed: u64, flag: u64) -> Result<()> {
    let ext = w.ext_orig()?;
    if ext.features().is_empty() {
        return w.needs(Requirement::FeatureRecord);
    }
    let f = pick(ext.features(), seed);
    let head = w.feature_mut(f.offset as usize)?;
    head.flags = (head.flags.get() | flag).into();
    let flagged_end = w
        .bitmap_clusters_of(f.offset as usize)
        .into_iter()
        .map(|off| (off + w.cs).min(w.len))
        .max();
    if let (Some(flagged_end), Some(end)) = (flagged_end, w.referenced_end()?) {
        if end < flagged_end {
            w.move_ext(0)?;
        }
    }
    Ok(())
}

pub(super) fn data_overflow(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let ext = w.ext_orig()?;
    if ext.features().is_empty() {
        return w.needs(Requirement::FeatureRecord);
    }
    let f = pick(ext.features(), seed);
    let left = w.cs - f.offset - FEATURE_HEADER_SIZE as u64;
    let Ok(size) = u32::try_from(left + 1) else {
        return w.needs(Requirement::SmallExtension);
    };
    w.feature_mut(f.offset as usize)?.data_size = size.into();
    Ok(())
}

pub(super) fn unknown_feature(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let bms = w.some_bitmaps()?;
    let rec = pick(&bms, seed).rec;
    let head = w.feature_mut(rec)?;
    head.magic = (head.magic.get() ^ 0xff00_0000_0000_0000).into();
    Ok(())
}

pub(super) fn nonzero_padding(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    let ext = w.ext_orig()?;
    let ListEnd::EndRecord { .. } = ext.end() else {
        return w.needs(Requirement::EndRecord);
    };
    let from = ext.list_end();
    w.require(from < w.cs, Requirement::RoomAfterEndRecord)?;
    let at = from + seed % (w.cs - from);
    w.ext_bytes()?[at as usize] = 0x5a;
    Ok(())
}
