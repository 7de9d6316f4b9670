//! The edit session every plan works in: the header, the BAT and the extension cluster as they
//! will be, clusters to write elsewhere, and the file's new length; [`Work::finish`] turns them
//! into a [`Patch`] of the bytes that differ from the input.

use std::borrow::Cow;
use std::io;

use zerocopy::IntoBytes;

use super::DefectKind;
use crate::error::{Error, PlanError, Requirement, Result};
use crate::extension::Extension;
use crate::header::{Header, Variant};
use crate::image::{Image, RuleMode};
use crate::raw::bitmap::L1_DIRTY;
use crate::raw::editor::{encode_records, list_layout, ExtensionEditor, RecordBytes};
use crate::raw::feature::{RawFeatureHeader, FEATURE_HEADER_SIZE};
use crate::raw::header::RawHeader;
use crate::raw::RawBitmapHeader;
use crate::raw::SECTOR_SIZE;
use crate::source::Source;
use crate::validate::referenced_end;

/// A patch: byte writes and an optional new file length, applied in order (writes first, then
/// set_len).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    /// `(file offset, bytes)` to write; a write past the end extends the file with zeros.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// The file's length after the writes, if it changes.
    pub set_len: Option<u64>,
}

impl Patch {
    /// Applies the patch to an image in memory.
    pub fn apply_to_vec(&self, v: &mut Vec<u8>) {
        for (off, bytes) in &self.writes {
            let start = *off as usize;
            let end = start + bytes.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[start..end].copy_from_slice(bytes);
        }
        if let Some(len) = self.set_len {
            v.resize(len as usize, 0);
        }
    }

    /// Applies the patch to a file opened for writing.
    pub fn apply_to_file(&self, f: &std::fs::File) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        for (off, bytes) in &self.writes {
            f.seek(SeekFrom::Start(*off))?;
            f.write_all(bytes)?;
        }
        if let Some(len) = self.set_len {
            f.set_len(len)?;
        }
        Ok(())
    }
}

/// The extension cluster being edited, and where it will be.
pub(super) struct ExtState {
    pub(super) offset: u64,
    pub(super) bytes: Vec<u8>,
}

/// A feature record of the extension, for re-encoding the list.
pub(super) type Rec = RecordBytes;

/// A dirty bitmap as found in the input.
#[derive(Clone)]
pub(super) struct Bm {
    pub(super) feature: usize,
    /// Offset of the record in the cluster.
    pub(super) rec: usize,
    pub(super) granularity: u32,
    pub(super) l1: Vec<u64>,
    /// Granules and the L1 size the image calls for.
    pub(super) granules: u64,
    pub(super) expected: u64,
}

impl Bm {
    /// Offset of the bitmap's data (its 32-byte header, then the L1 table) in the cluster.
    pub(super) fn data(&self) -> usize {
        self.rec + FEATURE_HEADER_SIZE
    }
}

pub(super) struct Work<'i, 's> {
    pub(super) image: &'i Image<'s>,
    pub(super) defect: DefectKind,
    pub(super) h: Header,
    pub(super) cs: u64,
    pub(super) len: u64,
    pub(super) head: RawHeader,
    /// The BAT entries in the file.
    pub(super) bat: Vec<u32>,
    /// The extension cluster, copied on the first edit.
    pub(super) ext: Option<ExtState>,
    /// Other regions to write, as their whole new contents.
    pub(super) blobs: Vec<(u64, Vec<u8>)>,
    pub(super) rehash: bool,
    pub(super) trim: bool,
}

impl<'i, 's> Work<'i, 's> {
    pub(super) fn new(image: &'i Image<'s>, defect: DefectKind) -> Self {
        let h = *image.header();
        // From the entries, not a view of the table, so that a compact image (which holds only
        // its allocated entries) plans the same as a whole one.
        let mut bat = vec![0u32; image.bat_entries_in_file() as usize];
        for (i, e) in image.allocated_entries() {
            bat[i as usize] = e;
        }
        Work {
            image,
            defect,
            h,
            cs: h.cluster_size(),
            len: image.file_len(),
            head: h.raw,
            bat,
            ext: None,
            blobs: Vec::new(),
            rehash: true,
            trim: true,
        }
    }

    pub(super) fn needs<T>(&self, needs: Requirement) -> Result<T> {
        Err(Error::Plan(PlanError::NotApplicable {
            defect: self.defect.name(),
            needs,
        }))
    }

    pub(super) fn require(&self, ok: bool, needs: Requirement) -> Result<()> {
        if ok {
            Ok(())
        } else {
            self.needs(needs)
        }
    }

    pub(super) fn data_start(&self) -> u64 {
        self.h.data_start()
    }

    /// Where the cluster grid starts: clusters sit at multiples of the cluster size from here
    /// (byte 0 for v2; for v1 the data area start, which may be any sector).
    pub(super) fn grid_base(&self) -> u64 {
        match self.h.variant {
            Variant::V1 => self.data_start() % self.cs,
            Variant::V2 => 0,
        }
    }

    pub(super) fn on_grid(&self, off: u64) -> bool {
        off >= self.grid_base() && (off - self.grid_base()).is_multiple_of(self.cs)
    }

    /// The first grid position at or after `at`.
    pub(super) fn next_slot(&self, at: u64) -> u64 {
        let base = self.grid_base();
        base + at.saturating_sub(base).next_multiple_of(self.cs)
    }

    /// BAT value for a cluster at byte `off`, if it fits.
    pub(super) fn bat_value(&self, off: u64) -> Result<u32> {
        let v = match self.h.variant {
            Variant::V1 => off / SECTOR_SIZE,
            Variant::V2 => off / self.cs,
        };
        match u32::try_from(v) {
            Ok(v) => Ok(v),
            Err(_) => self.needs(Requirement::SmallFile),
        }
    }

    /// Allocated BAT entries as (index, file offset).
    pub(super) fn allocated(&self) -> Vec<(usize, u64)> {
        self.bat
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| self.h.bat_entry_offset(e).map(|o| (i, o)))
            .collect()
    }

    /// Candidate BAT entries to redirect: allocated ones, or any if none is allocated.
    pub(super) fn redirect_candidates(&self) -> Result<Vec<usize>> {
        let alloc: Vec<usize> = self.allocated().iter().map(|a| a.0).collect();
        if !alloc.is_empty() {
            return Ok(alloc);
        }
        if self.bat.is_empty() {
            return self.needs(Requirement::BatEntry);
        }
        Ok((0..self.bat.len()).collect())
    }

    /// Appends a cluster at the next cluster boundary of the file, plus `skew` bytes.
    pub(super) fn append(&mut self, bytes: Vec<u8>, skew: u64) -> u64 {
        let off = self.next_slot(self.len) + skew;
        self.len = off + self.cs;
        self.blobs.push((off, bytes));
        off
    }

    /// Sets `data_off` to the sector of byte `ds`, if it fits.
    pub(super) fn set_data_start(&mut self, ds: u64) -> Result<()> {
        match u32::try_from(ds / SECTOR_SIZE) {
            Ok(v) => {
                self.head.data_off = v.into();
                Ok(())
            }
            Err(_) => self.needs(Requirement::LowDataArea),
        }
    }

    /// The extension cluster for editing. It is copied only when a defect edits it, and only if
    /// the whole cluster is in the file (so the copy is never larger than the input).
    pub(super) fn ext(&mut self) -> Result<&mut ExtState> {
        if self.ext.is_none() {
            let e = self.ext_orig()?;
            if (e.bytes().len() as u64) < self.cs {
                return self.needs(Requirement::ExtensionInFile);
            }
            self.ext = Some(ExtState {
                offset: e.file_offset,
                bytes: e.bytes().to_vec(),
            });
        }
        Ok(self.ext.as_mut().expect("set above"))
    }

    pub(super) fn ext_orig(&self) -> Result<&'i Extension<'s>> {
        match self.image.extension() {
            Some(e) => Ok(e),
            None => self.needs(Requirement::Extension),
        }
    }

    pub(super) fn ext_bytes(&mut self) -> Result<&mut Vec<u8>> {
        Ok(&mut self.ext()?.bytes)
    }

    /// The extension cluster, through the one editor.
    pub(super) fn editor(&mut self) -> Result<ExtensionEditor<'_>> {
        Ok(ExtensionEditor::new(self.ext_bytes()?))
    }

    /// The header of the feature record at byte `at` of the extension cluster, for editing.
    pub(super) fn feature_mut(&mut self, at: usize) -> Result<&mut RawFeatureHeader> {
        Ok(RawFeatureHeader::mut_at(self.ext_bytes()?, at).expect("a record of the input's walk"))
    }

    /// The header of a bitmap of the input, for editing.
    pub(super) fn bitmap_mut(&mut self, bm: &Bm) -> Result<&mut RawBitmapHeader> {
        let data = bm.data();
        Ok(RawBitmapHeader::mut_in(&mut self.ext_bytes()?[data..]).expect("a bitmap of the input"))
    }

    /// Sets L1 entry `index` of a bitmap of the input.
    pub(super) fn set_l1(&mut self, bm: &Bm, index: usize, value: u64) -> Result<()> {
        let rec = bm.rec;
        self.editor()?
            .l1_mut(rec, index)
            .expect("an entry of the input")
            .set(value);
        Ok(())
    }

    /// Moves the extension cluster to the end of the file (`skew` bytes past a cluster
    /// boundary) and points `ext_off` at the copy.
    pub(super) fn move_ext(&mut self, skew: u64) -> Result<()> {
        let bytes = self.ext()?.bytes.clone();
        let to = self.next_slot(self.len) + skew;
        self.len = to + self.cs;
        let ext = self.ext.as_mut().expect("checked");
        ext.offset = to;
        ext.bytes = bytes;
        self.head.ext_off = (to / SECTOR_SIZE).into();
        Ok(())
    }

    /// Feature records of the input (complete ones: before the end of the list).
    pub(super) fn records(&mut self) -> Result<Vec<Rec>> {
        let ext = self.ext_orig()?;
        let bytes = &self.ext()?.bytes;
        Ok(ext
            .features()
            .iter()
            .map(|f| {
                let r = f.data_range();
                Rec {
                    header: f.header,
                    data: bytes[r.start as usize..r.end as usize].to_vec(),
                }
            })
            .collect())
    }

    /// Start offsets of the records when encoded from byte 24.
    pub(super) fn positions(recs: &[Rec]) -> Vec<usize> {
        list_layout(recs.iter().map(|r| r.data.len() as u64))
            .0
            .into_iter()
            .map(|at| at as usize)
            .collect()
    }

    /// Rewrites the feature list (from byte 24) with these records, `data_size` set to each
    /// record's data length, and an end record if `end` (else the records may fill the cluster).
    pub(super) fn encode(&mut self, recs: Vec<Rec>, end: bool) -> Result<()> {
        let Some(recs) = recs.into_iter().map(Rec::sized).collect::<Option<Vec<_>>>() else {
            return self.needs(Requirement::ExtensionRoom);
        };
        let list = encode_records(&recs, end);
        match self.editor()?.put_list(&list) {
            Some(_) => Ok(()),
            None => self.needs(Requirement::ExtensionRoom),
        }
    }

    /// The input's dirty bitmaps.
    pub(super) fn bitmaps(&self) -> Vec<Bm> {
        let Some(ext) = self.image.extension() else {
            return Vec::new();
        };
        self.image
            .bitmaps()
            .iter()
            .map(|b| Bm {
                feature: b.feature,
                rec: (b.file_offset - ext.file_offset) as usize,
                granularity: b.granularity_sectors(),
                l1: b.l1().iter().collect(),
                granules: b.granules(),
                expected: b.expected_l1_size(),
            })
            .collect()
    }

    pub(super) fn some_bitmaps(&self) -> Result<Vec<Bm>> {
        let b = self.bitmaps();
        if b.is_empty() {
            return self.needs(Requirement::Bitmap);
        }
        Ok(b)
    }

    /// L1 entries `(bitmap, index)` whose chunk is not a partial last chunk: pointing them at
    /// foreign bytes cannot set bits past the last granule.
    pub(super) fn inner_l1(&self, bms: &[Bm]) -> Vec<(usize, usize)> {
        let cb = self.cs * 8;
        let mut out = Vec::new();
        for (b, bm) in bms.iter().enumerate() {
            for i in 0..bm.l1.len() {
                let last = i as u64 + 1 == bm.expected;
                if !last || bm.granules % cb == 0 {
                    out.push((b, i));
                }
            }
        }
        out
    }

    /// The regions as they will be: header, BAT, extension cluster, other clusters.
    fn regions(&self) -> Vec<(u64, Cow<'_, [u8]>)> {
        let mut regions: Vec<(u64, Cow<'_, [u8]>)> = vec![(0, Cow::Borrowed(self.head.as_bytes()))];
        regions.push((
            64,
            Cow::Owned(self.bat.as_slice().iter().flat_map(|e| e.to_le_bytes()).collect()),
        ));
        if let Some(ext) = &self.ext {
            regions.push((ext.offset, Cow::Borrowed(&ext.bytes[..])));
        }
        for (off, b) in &self.blobs {
            regions.push((*off, Cow::Borrowed(&b[..])));
        }
        regions
    }

    /// The writes that turn the input into the edited image cut at `len`.
    fn writes(&self, len: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut writes = Vec::new();
        for (at, want) in self.regions() {
            diff(self.image.source(), at, &want, len, &mut writes)?;
        }
        Ok(writes)
    }

    /// The end of the edited image's referenced data as the validator's leak rule measures it
    /// (`None` when the edited header does not parse).
    pub(super) fn referenced_end(&self) -> Result<Option<u64>> {
        let writes = self.writes(self.len)?;
        let edited = Edited {
            base: self.image.source(),
            writes: &writes,
            len: self.len,
        };
        let Ok(image) = Image::parse_compact(&edited, RuleMode::Strict) else {
            return Ok(None);
        };
        Ok(Some(referenced_end(&image)))
    }

    pub(super) fn finish(mut self) -> Result<Patch> {
        if let Some(ext) = self.ext.as_mut() {
            if self.rehash {
                ExtensionEditor::new(&mut ext.bytes).rehash();
            }
        }
        if self.trim {
            if let Some(high) = self.referenced_end()? {
                self.len = self.len.min(high);
            }
        }
        let writes = self.writes(self.len)?;
        let set_len = (self.len != self.image.file_len()).then_some(self.len);
        Ok(Patch { writes, set_len })
    }

    /// The bitmap clusters (file offsets) of the input's bitmap record at byte `rec` of the
    /// cluster.
    pub(super) fn bitmap_clusters_of(&self, rec: usize) -> Vec<u64> {
        self.bitmaps()
            .into_iter()
            .filter(|b| b.rec == rec)
            .flat_map(|b| b.l1)
            .filter(|&e| e > L1_DIRTY)
            .filter_map(|e| e.checked_mul(SECTOR_SIZE))
            .filter(|&o| o < self.len)
            .collect()
    }
}

/// The input with the edits so far, `len` bytes long, for asking the validator about it.
struct Edited<'a> {
    base: &'a dyn Source,
    writes: &'a [(u64, Vec<u8>)],
    len: u64,
}

impl Source for Edited<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let start = offset.min(self.len);
        let end = offset.saturating_add(len).min(self.len);
        let mut out = self.base.read_at(start, end - start)?.into_owned();
        out.resize((end - start) as usize, 0);
        for (at, bytes) in self.writes {
            let (s, e) = ((*at).max(start), (at + bytes.len() as u64).min(end));
            if s < e {
                out[(s - start) as usize..(e - start) as usize]
                    .copy_from_slice(&bytes[(s - at) as usize..(e - at) as usize]);
            }
        }
        Ok(Cow::Owned(out))
    }
}

/// Appends writes for the bytes of `want` (meant for `[at, ..)`) that differ from the source,
/// up to `limit` (the final file length). Bytes past the end of the source count as zeros.
fn diff(src: &dyn Source, at: u64, want: &[u8], limit: u64, out: &mut Vec<(u64, Vec<u8>)>) -> Result<()> {
    let n = (want.len() as u64).min(limit.saturating_sub(at)) as usize;
    let have = src.read_at(at, n as u64)?;
    let old = |k: usize| have.get(k).copied().unwrap_or(0);
    let mut i = 0;
    while i < n {
        if want[i] == old(i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut last = i;
        let mut j = i + 1;
        while j < n && j - last <= 8 {
            if want[j] != old(j) {
                last = j;
            }
            j += 1;
        }
        out.push((at + start as u64, want[start..=last].to_vec()));
        i = last + 1;
    }
    Ok(())
}
