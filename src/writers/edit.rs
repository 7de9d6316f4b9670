//! Rewriting the bitmaps of an existing image, as backup tools and `ploop-cbt` do: the header,
//! BAT and data clusters are copied as they are (all-zero clusters left as holes), and a new
//! extension cluster and bitmap clusters are placed after the last data cluster.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::builder::{encode_bitmaps, BitmapSpec};
use crate::error::{BuildError, Result};
use crate::header::Variant;
use crate::image::Image;
use crate::outfile::write_file_atomically;
use crate::raw::extension::ExtensionCluster;
use crate::raw::header::{RawHeader, HEADER_SIZE};
use crate::raw::SECTOR_SIZE;
use crate::rule::Severity;
use crate::source::FileSource;

/// A change to an image's bitmaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BitmapEdit {
    /// Adds a bitmap (refused if one with its id exists).
    Add(BitmapSpec),
    /// Removes the bitmap with this id (refused if there is none).
    Remove([u8; 16]),
    /// Removes every bitmap (and the extension with them).
    Clear,
}

/// What [`edit_bitmaps`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditedLayout {
    /// Byte offset of the new extension cluster (`None` when no bitmap is left).
    pub ext_offset: Option<u64>,
    /// The bitmaps written, in record order (ids).
    pub bitmaps: Vec<[u8; 16]>,
    /// Length of the new file.
    pub file_len: u64,
}

/// The bitmaps of `image` after `edit`, as specs (existing bitmaps decoded).
fn edited_specs(image: &Image<'_>, edit: &BitmapEdit) -> Result<Vec<BitmapSpec>> {
    let mut specs = Vec::new();
    for b in image.bitmaps() {
        specs.push(BitmapSpec {
            id: b.id(),
            granularity: b.granularity_bytes(),
            extents: b.dirty_extents()?,
        });
    }
    let name = |id: &[u8; 16]| uuid::Uuid::from_bytes(*id).to_string();
    match edit {
        BitmapEdit::Add(spec) => {
            if specs.iter().any(|s| s.id == spec.id) {
                return Err(BuildError::BitmapExists { name: name(&spec.id) }.into());
            }
            specs.push(spec.clone());
        }
        BitmapEdit::Remove(id) => {
            let before = specs.len();
            specs.retain(|s| s.id != *id);
            if specs.len() == before {
                return Err(BuildError::NoSuchBitmap { name: name(id) }.into());
            }
        }
        BitmapEdit::Clear => specs.clear(),
    }
    Ok(specs)
}

/// Writes `image` with its bitmaps changed by `edit` to `out` (from offset 0; `out` should be
/// empty). The image must be valid (no corruption finding). `inuse`, when given, replaces the
/// header's value (ploop loads bitmaps only from "v2.1" images).
///
/// Errors: `Error::Build` ([`BuildError`]) when the image has corruptions or other features than bitmaps, when
/// an added id exists or a removed one does not, or when the bitmap is not encodable.
pub fn edit_bitmaps<W: Write + Seek>(
    image: &Image<'_>,
    edit: &BitmapEdit,
    inuse: Option<u32>,
    out: &mut W,
) -> Result<EditedLayout> {
    let report = crate::validate::validate(image)?;
    if let Some(f) = report.findings.iter().find(|f| f.severity == Severity::Corruption) {
        return Err(BuildError::InvalidImage {
            rule: f.violation.rule(),
            location: f.violation.location().to_string(),
            message: f.violation.to_string(),
        }
        .into());
    }
    if let Some(ext) = image.extension() {
        if ext.features().len() != image.bitmaps().len() {
            return Err(BuildError::OtherFeatures.into());
        }
    }
    let specs = edited_specs(image, edit)?;
    let h = image.header();
    if h.raw.nb_sectors.get() == 0 && !specs.is_empty() {
        // Refused before anything is written to `out`.
        return Err(BuildError::BitmapOnEmptyDisk { count: specs.len() }.into());
    }
    let cs = h.cluster_size();
    let source = image.source();

    // Clusters of the old extension and bitmaps are not copied.
    let mut dropped: Vec<u64> = Vec::new();
    if let Some(off) = h.ext_offset() {
        dropped.push(off);
    }
    for b in image.bitmaps() {
        for e in b.l1().iter() {
            if e > 1 {
                dropped.push(e.wrapping_mul(SECTOR_SIZE));
            }
        }
    }
    // The data area ends after the last data cluster (or at its start when there is none).
    let data_start = h.data_start();
    let mut data_end = data_start;
    for (index, _) in image.allocated_entries() {
        if let Some(off) = image.cluster_offset(index) {
            data_end = data_end.max(off + cs);
        }
    }
    // The new clusters sit on the data area's grid after it.
    let base = match h.variant {
        Variant::V1 => data_start % cs,
        Variant::V2 => 0,
    };
    let mut next = base + (data_end.max(base) - base).div_ceil(cs) * cs;

    let mut buf = vec![0u8; cs as usize];
    let mut at = 0u64;
    while at < data_end {
        let len = cs.min(data_end - at) as usize;
        let got = source.read_into(at, &mut buf[..len])?;
        buf[got..len].fill(0);
        for &d in &dropped {
            let (s, e) = (d.max(at), (d + cs).min(at + len as u64));
            if s < e {
                buf[(s - at) as usize..(e - at) as usize].fill(0);
            }
        }
        if at == 0 {
            // The header is written last, with the new ext_off.
            buf[..HEADER_SIZE.min(len)].fill(0);
        }
        if buf[..len].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(at))?;
            out.write_all(&buf[..len])?;
        }
        at += len as u64;
    }

    let ext_offset = (!specs.is_empty()).then(|| crate::builder::alloc_cluster(&mut next, cs));
    let nb_sectors = h.raw.nb_sectors.get();
    let encoded = encode_bitmaps(&specs, nb_sectors, cs, &mut next)?;
    if let Some(off) = ext_offset {
        let cluster = ExtensionCluster::new(encoded.features)
            .to_cluster(cs as usize)
            .map_err(|e| BuildError::Extension(e.to_string()))?;
        out.seek(SeekFrom::Start(off))?;
        out.write_all(&cluster)?;
    }
    for (off, bits) in &encoded.chunk_clusters {
        out.seek(SeekFrom::Start(*off))?;
        out.write_all(bits)?;
    }
    let file_len = next.max(data_end);
    let mut header: RawHeader = h.raw;
    header.ext_off = ext_offset.map_or(0, |o| o / SECTOR_SIZE).into();
    if let Some(v) = inuse {
        header.inuse = v.into();
    }
    out.seek(SeekFrom::Start(0))?;
    out.write_all(zerocopy::IntoBytes::as_bytes(&header))?;
    // The length: a last byte written where the file would otherwise end in a hole.
    let end = out.seek(SeekFrom::End(0))?;
    if end < file_len {
        out.seek(SeekFrom::Start(file_len - 1))?;
        out.write_all(&[0])?;
    }
    out.flush()?;
    Ok(EditedLayout {
        ext_offset,
        bitmaps: specs.iter().map(|s| s.id).collect(),
        file_len,
    })
}

/// [`edit_bitmaps`] from the file `input` to the file `output`, written aside and renamed into
/// place. `output` may be `input` (an in-place edit, atomic); otherwise an existing `output` is
/// replaced only if `overwrite`.
pub fn edit_bitmaps_file(
    input: &Path,
    output: &Path,
    edit: &BitmapEdit,
    inuse: Option<u32>,
    overwrite: bool,
) -> Result<EditedLayout> {
    let source = FileSource::open(input)?;
    let image = crate::validate::open(&source)?;
    let in_place = output == input || output.canonicalize().ok() == input.canonicalize().ok();
    write_file_atomically(output, overwrite || in_place, |f| edit_bitmaps(&image, edit, inuse, f))
}
