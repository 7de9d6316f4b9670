//! A catalogue of defects: planned damage to a valid image, one rule of `spec/` at a time.
//!
//! [`plan`] looks at a parsed image and returns a [`Patch`] (byte writes and a new file length)
//! that breaks exactly one rule. Where damage would break more than the intended rule, the plan
//! does what is needed to keep the others intact:
//!
//! - after any edit inside the extension cluster the MD5 is recomputed (except for
//!   `ext-bad-checksum`), so the checksum rule does not fire too;
//! - a cluster that has to move (a data cluster below a new `data_off`, an extension or bitmap
//!   cluster that must sit at an unaligned or cut-off place) is copied to the end of the file;
//! - when the damage leaves the end of the file unreferenced (a BAT or L1 entry redirected away
//!   from the last cluster, a bitmap that no longer counts as one), the file is cut back to the
//!   last referenced byte, so the leak rule does not fire too.
//!
//! The `seed` picks among the candidate places (which BAT entry, which feature, which L1 entry)
//! as `seed % candidates`, so the same image, name and seed always give the same patch.

use std::borrow::Cow;
use std::io;

use crate::error::{PlanError, Result};
use crate::extension::{Extension, ListEnd};
use crate::header::{Header, Variant};
use crate::image::Image;
use crate::raw::bitmap::{BITMAP_HEADER_SIZE, L1_CLEAN, L1_DIRTY};
use crate::raw::extension::{checksum, EXT_HEADER_SIZE};
use crate::raw::feature::{FEATURE_DIRTY_BITMAP, FEATURE_FLAG_NECESSARY, FEATURE_FLAG_TRANSIT, FEATURE_HEADER_SIZE};
use crate::raw::header::{RawHeader, INUSE_CLOSED_V21, INUSE_OPEN, MAX_BAT_ENTRIES, MAX_EXT_OFF, MAX_TRACKS};
use crate::raw::SECTOR_SIZE;
use crate::source::Source;

/// One kind of damage, the rule it breaks and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defect {
    /// The name `plan` and `prlimg corrupt --defect` take.
    pub name: &'static str,
    /// The code of the rule it breaks (`"R7"`).
    pub rule: &'static str,
    /// What it does to the image.
    pub summary: &'static str,
}

const fn d(name: &'static str, rule: &'static str, summary: &'static str) -> Defect {
    Defect { name, rule, summary }
}

static CATALOGUE: &[Defect] = &[
    d("bad-magic", "R1", "flips the case of one byte of the header magic"),
    d("bad-version", "R2", "sets the header version to 3, 1, 0 or a byte-swapped 2"),
    d("zero-tracks", "R3", "sets tracks (sectors per cluster) to 0"),
    d("too-big-cluster", "R4", "sets tracks to 4186128, one above QEMU's limit"),
    d("catalog-too-large", "R5", "sets bat_entries to 536870912, one above QEMU's limit"),
    d("ext-off-too-big", "R6", "sets ext_off to INT64_MAX >> 9"),
    d("inuse-set", "R7", "sets inuse to \"Ynot\": the image was not closed cleanly"),
    d("unknown-inuse", "R8", "sets inuse to 0x76322e31, a byte-swapped \"v2.1\""),
    d("unknown-flags", "R9", "sets one undefined bit (2..31) of the header flags"),
    d("v1-size-high-bits", "R10", "v1 images only: sets a bit above the low 32 bits of nb_sectors"),
    d(
        "size-beyond-bat",
        "R11",
        "sets nb_sectors one sector above what the BAT covers (and every bitmap's size with it)",
    ),
    d("data-off-zero", "R12", "v2 images only: sets data_off to 0"),
    d(
        "data-off-unaligned",
        "R13",
        "v2 images only: moves data_off one sector up; a data cluster at the old start moves to the end of the file",
    ),
    d(
        "data-off-inside-bat",
        "R14",
        "moves data_off one cluster down into the BAT or, if it cannot go lower, grows the BAT by one entry into the first data cluster (whose first 4 bytes are zeroed)",
    ),
    d(
        "data-off-past-eof",
        "R15",
        "moves data_off past the end of the file and unallocates every BAT entry (they would all be below the data area)",
    ),
    d(
        "bat-entry-inside-header",
        "R16",
        "points a BAT entry into the header and BAT area or, when no entry can point there, raises data_off above the first data cluster",
    ),
    d(
        "bat-entry-unaligned",
        "R17",
        "v1 images only: moves a BAT entry one sector off the cluster grid of the data area",
    ),
    d("bat-entry-past-eof", "R18", "points a BAT entry at a cluster past the end of the file"),
    d("bat-entry-duplicate", "R19", "points a BAT entry at the cluster of another one"),
    d("trailing-leak", "R20", "appends a cluster that nothing references"),
    d(
        "ext-off-unaligned",
        "R21",
        "copies the extension cluster to the end of the file, one sector off the cluster grid",
    ),
    d(
        "ext-past-eof",
        "R22",
        "copies the extension cluster to the end of the file and cuts the file inside its zero tail",
    ),
    d("ext-overlap-data", "R23", "points a BAT entry at the extension cluster"),
    d("ext-bad-magic", "R24", "changes one byte of the extension magic"),
    d("ext-bad-checksum", "R25", "flips one bit of the extension's stored MD5"),
    d(
        "feature-truncated",
        "R26",
        "grows the last feature's data so that only 8 or 16 bytes are left for the next header \
         (a bitmap record then also has extra data, R33, non-canonical)",
    ),
    d("feature-flags-necessary", "R27", "sets the NECESSARY flag of a feature record"),
    d("feature-flags-transit", "R27", "sets the TRANSIT flag of a feature record"),
    d(
        "feature-data-overflow",
        "R28",
        "sets a feature's data_size one byte beyond the end of the extension cluster",
    ),
    d("unknown-feature", "R29", "changes the magic of a dirty-bitmap record to an unknown one"),
    d(
        "missing-end-record",
        "R30",
        "grows the last feature's data to the end of the cluster, leaving no room for the end record \
         (a bitmap record then also has extra data, R33, non-canonical)",
    ),
    d("nonzero-padding", "R31", "sets a byte of the extension cluster after the end record"),
    d(
        "bitmap-data-too-short",
        "R32",
        "cuts a bitmap record's data_size by one byte, short of its L1 table",
    ),
    d("bitmap-extra-data", "R33", "appends 8 bytes of data after a bitmap's L1 table"),
    d("bitmap-size-mismatch", "R34", "sets a bitmap's size one sector above nb_sectors"),
    d("granularity-zero", "R35", "sets a bitmap's granularity to 0"),
    d(
        "granularity-not-power-of-two",
        "R35",
        "multiplies a bitmap's granularity by 3",
    ),
    d(
        "granularity-overflow",
        "R36",
        "sets a bitmap's granularity to 2^23 sectors (4 GiB, beyond u32 bytes), with the clean L1 table that size calls for",
    ),
    d("l1-size-wrong", "R37", "adds a clean entry to a bitmap's L1 table (and data_size)"),
    d(
        "l1-size-zero",
        "R37",
        "empties a bitmap's L1 table, as ploop does for an empty bitmap",
    ),
    d(
        "l1-entry-unaligned",
        "R38",
        "copies a bitmap cluster to the end of the file, one sector off the cluster grid",
    ),
    d("l1-entry-past-eof", "R39", "points an L1 entry at a cluster past the end of the file"),
    d(
        "l1-entry-overlap-bat",
        "R40",
        "points an L1 entry (not the last chunk) at a cluster inside the BAT",
    ),
    d(
        "l1-entry-overlap-ext",
        "R40",
        "points an L1 entry (not the last chunk) at the extension cluster",
    ),
    d(
        "l1-entry-overlap-data",
        "R40",
        "points an L1 entry (not the last chunk) at a data cluster",
    ),
    d(
        "l1-entry-overlap-l1",
        "R40",
        "points an L1 entry (not the last chunk) at the bitmap cluster of another L1 entry",
    ),
    d("duplicate-bitmap-id", "R41", "gives a bitmap the id of another one"),
    d(
        "bitmap-trailing-bits",
        "R42",
        "sets the first bit past the last granule in a bitmap's last chunk",
    ),
];

/// Every defect [`plan`] knows, in rule order.
pub fn catalogue() -> &'static [Defect] {
    CATALOGUE
}

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

/// Plans defect `name` on a parsed valid image. `seed` picks among candidate places (e.g. which
/// BAT entry) deterministically.
///
/// Errors: [`PlanError::UnknownDefect`], or [`PlanError::NotApplicable`] when the image lacks
/// the structure the defect needs; I/O errors from the source.
pub fn plan(image: &Image<'_>, name: &str, seed: u64) -> Result<Patch> {
    let defect = CATALOGUE
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| PlanError::UnknownDefect { name: name.to_string() })?;
    let mut w = Work::new(image, defect.name)?;
    w.apply(seed)?;
    w.finish()
}

// Header field offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 16;
const H_TRACKS: usize = 28;
const H_BAT_ENTRIES: usize = 32;
const H_NB_SECTORS: usize = 36;
const H_INUSE: usize = 44;
const H_DATA_OFF: usize = 48;
const H_FLAGS: usize = 52;
const H_EXT_OFF: usize = 56;

// Offsets inside a dirty-bitmap record, from the record's start.
const B_SIZE: usize = FEATURE_HEADER_SIZE;
const B_ID: usize = FEATURE_HEADER_SIZE + 8;
const B_GRAN: usize = FEATURE_HEADER_SIZE + 24;
const B_L1_SIZE: usize = FEATURE_HEADER_SIZE + 28;
const B_L1: usize = FEATURE_HEADER_SIZE + BITMAP_HEADER_SIZE;

/// The extension cluster being edited, and where it will be.
struct ExtState {
    offset: u64,
    bytes: Vec<u8>,
}

/// A feature record of the extension, for re-encoding the list.
#[derive(Clone)]
struct Rec {
    head: [u8; FEATURE_HEADER_SIZE],
    data: Vec<u8>,
}

/// A dirty bitmap as found in the input.
#[derive(Clone)]
struct Bm {
    feature: usize,
    /// Offset of the record in the cluster.
    rec: usize,
    granularity: u32,
    l1: Vec<u64>,
    /// Granules and the L1 size the image calls for.
    granules: u64,
    expected: u64,
}

struct Work<'i, 's> {
    image: &'i Image<'s>,
    name: &'static str,
    h: Header,
    cs: u64,
    len: u64,
    head: [u8; 64],
    bat: Vec<u32>,
    /// The extension cluster, copied on the first edit.
    ext: Option<ExtState>,
    /// Other regions to write, as their whole new contents.
    blobs: Vec<(u64, Vec<u8>)>,
    rehash: bool,
    trim: bool,
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn pick<T: Clone>(v: &[T], seed: u64) -> T {
    v[(seed % v.len() as u64) as usize].clone()
}

impl<'i, 's> Work<'i, 's> {
    fn new(image: &'i Image<'s>, name: &'static str) -> Result<Self> {
        let h = *image.header();
        let cs = h.cluster_size();
        let mut head = [0u8; 64];
        head.copy_from_slice(zerocopy::IntoBytes::as_bytes(&h.raw));
        let bat = image.bat().iter().collect();
        Ok(Work {
            image,
            name,
            h,
            cs,
            len: image.file_len(),
            head,
            bat,
            ext: None,
            blobs: Vec::new(),
            rehash: true,
            trim: true,
        })
    }

    fn needs<T>(&self, what: &str) -> Result<T> {
        Err(PlanError::NotApplicable {
            defect: self.name,
            needs: what.to_string(),
        }
        .into())
    }

    fn require(&self, ok: bool, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            self.needs(what)
        }
    }

    fn data_start(&self) -> u64 {
        self.h.data_start()
    }

    /// Where the cluster grid starts: clusters sit at multiples of the cluster size from here
    /// (byte 0 for v2; for v1 the data area start, which may be any sector).
    fn grid_base(&self) -> u64 {
        match self.h.variant {
            Variant::V1 => self.data_start() % self.cs,
            Variant::V2 => 0,
        }
    }

    fn on_grid(&self, off: u64) -> bool {
        off >= self.grid_base() && (off - self.grid_base()).is_multiple_of(self.cs)
    }

    /// The first grid position at or after `at`.
    fn next_slot(&self, at: u64) -> u64 {
        let base = self.grid_base();
        base + at.saturating_sub(base).next_multiple_of(self.cs)
    }

    /// BAT value for a cluster at byte `off`, if it fits.
    fn bat_value(&self, off: u64) -> Result<u32> {
        let v = match self.h.variant {
            Variant::V1 => off / SECTOR_SIZE,
            Variant::V2 => off / self.cs,
        };
        match u32::try_from(v) {
            Ok(v) => Ok(v),
            Err(_) => self.needs("a file small enough for 32-bit BAT entries"),
        }
    }

    /// Allocated BAT entries as (index, file offset).
    fn allocated(&self) -> Vec<(usize, u64)> {
        self.bat
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| self.h.bat_entry_offset(e).map(|o| (i, o)))
            .collect()
    }

    /// Candidate BAT entries to redirect: allocated ones, or any if none is allocated.
    fn redirect_candidates(&self) -> Result<Vec<usize>> {
        let alloc: Vec<usize> = self.allocated().iter().map(|a| a.0).collect();
        if !alloc.is_empty() {
            return Ok(alloc);
        }
        if self.bat.is_empty() {
            return self.needs("a BAT entry");
        }
        Ok((0..self.bat.len()).collect())
    }

    /// Appends a cluster at the next cluster boundary of the file, plus `skew` bytes.
    fn append(&mut self, bytes: Vec<u8>, skew: u64) -> u64 {
        let off = self.next_slot(self.len) + skew;
        self.len = off + self.cs;
        self.blobs.push((off, bytes));
        off
    }

    /// The extension cluster for editing. It is copied only when a defect edits it, and only if
    /// the whole cluster is in the file (so the copy is never larger than the input).
    fn ext(&mut self) -> Result<&mut ExtState> {
        if self.ext.is_none() {
            let e = self.ext_orig()?;
            if (e.bytes().len() as u64) < self.cs {
                return self.needs("an extension cluster inside the file");
            }
            self.ext = Some(ExtState {
                offset: e.file_offset,
                bytes: e.bytes().to_vec(),
            });
        }
        Ok(self.ext.as_mut().expect("set above"))
    }

    fn ext_orig(&self) -> Result<&'i Extension<'s>> {
        match self.image.extension() {
            Some(e) => Ok(e),
            None => self.needs("a Format Extension cluster"),
        }
    }

    /// Feature records of the input (complete ones: before the end of the list).
    fn records(&mut self) -> Result<Vec<Rec>> {
        let ext = self.ext_orig()?;
        let bytes = &self.ext()?.bytes;
        Ok(ext
            .features()
            .iter()
            .map(|f| {
                let s = f.offset as usize;
                let r = f.data_range();
                Rec {
                    head: bytes[s..s + FEATURE_HEADER_SIZE].try_into().expect("24 bytes"),
                    data: bytes[r.start as usize..r.end as usize].to_vec(),
                }
            })
            .collect())
    }

    /// Start offsets of the records when encoded from byte 24.
    fn positions(recs: &[Rec]) -> Vec<usize> {
        let mut pos = EXT_HEADER_SIZE;
        recs.iter()
            .map(|r| {
                let at = pos;
                pos = (at + FEATURE_HEADER_SIZE + r.data.len()).next_multiple_of(8);
                at
            })
            .collect()
    }

    /// Rewrites the feature list (from byte 24) with these records, `data_size` set to each
    /// record's data length, and an end record if `end`.
    fn encode(&mut self, mut recs: Vec<Rec>, end: bool) -> Result<()> {
        let cs = self.cs as usize;
        let mut out = vec![0u8; cs];
        let mut pos = EXT_HEADER_SIZE;
        for r in &mut recs {
            let Ok(size) = u32::try_from(r.data.len()) else {
                return self.needs("room in the extension cluster");
            };
            put32(&mut r.head, 16, size);
            let stop = pos + FEATURE_HEADER_SIZE + r.data.len();
            if stop > cs {
                return self.needs("room in the extension cluster");
            }
            out[pos..pos + FEATURE_HEADER_SIZE].copy_from_slice(&r.head);
            out[pos + FEATURE_HEADER_SIZE..stop].copy_from_slice(&r.data);
            pos = stop.next_multiple_of(8);
        }
        if end && pos + FEATURE_HEADER_SIZE > cs {
            return self.needs("room in the extension cluster");
        }
        let ext = self.ext()?;
        out[..EXT_HEADER_SIZE].copy_from_slice(&ext.bytes[..EXT_HEADER_SIZE]);
        ext.bytes = out;
        Ok(())
    }

    /// The input's dirty bitmaps.
    fn bitmaps(&self) -> Vec<Bm> {
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

    fn some_bitmaps(&self) -> Result<Vec<Bm>> {
        let b = self.bitmaps();
        if b.is_empty() {
            return self.needs("a dirty bitmap");
        }
        Ok(b)
    }

    fn ext_bytes(&mut self) -> Result<&mut Vec<u8>> {
        Ok(&mut self.ext()?.bytes)
    }

    fn set_l1(&mut self, bm: &Bm, index: usize, value: u64) -> Result<()> {
        let at = bm.rec + B_L1 + 8 * index;
        put64(self.ext_bytes()?, at, value);
        Ok(())
    }

    /// L1 entries `(bitmap, index)` whose chunk is not a partial last chunk: pointing them at
    /// foreign bytes cannot set bits past the last granule.
    fn inner_l1(&self, bms: &[Bm]) -> Vec<(usize, usize)> {
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

    fn apply(&mut self, seed: u64) -> Result<()> {
        let cs = self.cs;
        let v1 = self.h.variant == Variant::V1;
        match self.name {
            "bad-magic" => self.head[H_MAGIC + (seed % 16) as usize] ^= 0x20,
            "bad-version" => put32(&mut self.head, H_VERSION, pick(&[3, 1, 0, 0x0200_0000], seed)),
            "zero-tracks" => put32(&mut self.head, H_TRACKS, 0),
            "too-big-cluster" => put32(&mut self.head, H_TRACKS, MAX_TRACKS + 1),
            "catalog-too-large" => put32(&mut self.head, H_BAT_ENTRIES, MAX_BAT_ENTRIES + 1),
            "ext-off-too-big" => put64(&mut self.head, H_EXT_OFF, MAX_EXT_OFF),
            "inuse-set" => put32(&mut self.head, H_INUSE, INUSE_OPEN),
            "unknown-inuse" => put32(&mut self.head, H_INUSE, INUSE_CLOSED_V21.swap_bytes()),
            "unknown-flags" => {
                let f = get32(&self.head, H_FLAGS) | 1 << (2 + seed % 30);
                put32(&mut self.head, H_FLAGS, f);
            }
            "v1-size-high-bits" => {
                self.require(v1, "the v1 magic")?;
                let n = get64(&self.head, H_NB_SECTORS) | 1 << (32 + seed % 32);
                put64(&mut self.head, H_NB_SECTORS, n);
            }
            "size-beyond-bat" => self.size_beyond_bat()?,
            "data-off-zero" => {
                self.require(!v1, "the v2 magic")?;
                put32(&mut self.head, H_DATA_OFF, 0);
            }
            "data-off-unaligned" => {
                self.require(!v1, "the v2 magic")?;
                self.require(cs > SECTOR_SIZE, "clusters larger than one sector")?;
                let ds = self.data_start() + SECTOR_SIZE;
                self.set_data_start(ds)?;
                // An empty data area grows with it, so that it does not start past the end.
                self.len = self.len.max(ds);
                // A cluster now below the data area moves to the end of the file.
                for (i, off) in self.allocated() {
                    if off < ds {
                        let bytes = self.image.source().read_at(off, cs)?.into_owned();
                        let to = self.append(bytes, 0);
                        self.bat[i] = self.bat_value(to)?;
                    }
                }
            }
            "data-off-inside-bat" => self.data_off_inside_bat()?,
            "data-off-past-eof" => {
                // On the same grid, so that extension and bitmap clusters stay aligned.
                let ds = self.next_slot(self.len) + cs;
                self.set_data_start(ds)?;
                self.bat.iter_mut().for_each(|e| *e = 0);
            }
            "bat-entry-inside-header" => {
                let ds = self.data_start();
                let low = if v1 { SECTOR_SIZE } else { cs };
                if low < ds {
                    let i = pick(&self.redirect_candidates()?, seed);
                    self.bat[i] = self.bat_value(low)?;
                } else {
                    // No entry can point below the data area: raise it over the lowest data
                    // cluster (on the grid, so no other cluster falls below it).
                    let Some(lowest) = self.allocated().iter().map(|a| a.1).min() else {
                        return self.needs("a BAT larger than one cluster or an allocated cluster");
                    };
                    self.set_data_start(lowest + cs)?;
                }
            }
            "bat-entry-unaligned" => {
                self.require(v1, "the v1 magic")?;
                self.require(cs > SECTOR_SIZE, "clusters larger than one sector")?;
                let i = pick(&self.redirect_candidates()?, seed);
                let off = self.h.bat_entry_offset(self.bat[i]).unwrap_or(self.data_start());
                self.bat[i] = self.bat_value(off + SECTOR_SIZE)?;
            }
            "bat-entry-past-eof" => {
                let i = pick(&self.redirect_candidates()?, seed);
                let off = self.next_slot(self.len);
                self.bat[i] = self.bat_value(off)?;
            }
            "bat-entry-duplicate" => {
                let alloc = self.allocated();
                self.require(
                    !alloc.is_empty() && self.bat.len() >= 2,
                    "an allocated cluster and two BAT entries",
                )?;
                let k = (seed % alloc.len() as u64) as usize;
                let (i, _) = alloc[k];
                let j = if alloc.len() >= 2 {
                    alloc[(k + 1) % alloc.len()].0
                } else {
                    (0..self.bat.len()).find(|&j| j != i).expect("two entries")
                };
                self.bat[j] = self.bat[i];
            }
            "trailing-leak" => {
                self.trim = false;
                let at = self.len;
                self.blobs.push((at, vec![0xde; SECTOR_SIZE as usize]));
                self.len = at + cs;
            }
            "ext-off-unaligned" => {
                self.require(cs > SECTOR_SIZE, "clusters larger than one sector")?;
                self.move_ext(SECTOR_SIZE)?;
            }
            "ext-past-eof" => {
                self.move_ext(0)?;
                let ext = self.ext.as_mut().expect("moved");
                let sum = checksum(&ext.bytes[EXT_HEADER_SIZE..]);
                ext.bytes[8..EXT_HEADER_SIZE].copy_from_slice(&sum);
                let last = ext.bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
                let cut = (last as u64 + 1).next_multiple_of(SECTOR_SIZE);
                let off = ext.offset;
                self.require(cut < cs, "an extension cluster whose last sector is zero")?;
                self.len = off + cut;
                self.trim = false;
            }
            "ext-overlap-data" => {
                let off = self.ext_orig()?.file_offset;
                let ds = self.data_start();
                let fits = off >= ds && self.on_grid(off);
                self.require(fits, "an extension cluster on the grid of the data clusters")?;
                let i = pick(&self.redirect_candidates()?, seed);
                self.bat[i] = self.bat_value(off)?;
            }
            "ext-bad-magic" => self.ext_bytes()?[(seed % 8) as usize] ^= 0xff,
            "ext-bad-checksum" => {
                self.ext_bytes()?[8 + (seed % 16) as usize] ^= 0x01;
                self.rehash = false;
            }
            "feature-truncated" | "missing-end-record" => {
                let mut recs = self.records()?;
                if recs.is_empty() {
                    return self.needs("a feature record");
                }
                let target = if self.name == "missing-end-record" {
                    cs as usize
                } else {
                    cs as usize - 8 * (1 + (seed % 2) as usize)
                };
                let at = *Self::positions(&recs).last().expect("one record");
                let last = recs.last_mut().expect("one record");
                let Some(size) = target
                    .checked_sub(at + FEATURE_HEADER_SIZE)
                    .filter(|&n| n >= last.data.len())
                else {
                    return self.needs("room in the extension cluster");
                };
                last.data.resize(size, 0);
                self.encode(recs, false)?;
            }
            "feature-flags-necessary" | "feature-flags-transit" => {
                let ext = self.ext_orig()?;
                if ext.features().is_empty() {
                    return self.needs("a feature record");
                }
                let f = pick(ext.features(), seed);
                let flag = if self.name == "feature-flags-necessary" {
                    FEATURE_FLAG_NECESSARY
                } else {
                    FEATURE_FLAG_TRANSIT
                };
                let at = f.offset as usize + 8;
                let b = self.ext_bytes()?;
                let v = get64(b, at) | flag;
                put64(b, at, v);
            }
            "feature-data-overflow" => {
                let ext = self.ext_orig()?;
                if ext.features().is_empty() {
                    return self.needs("a feature record");
                }
                let f = pick(ext.features(), seed);
                let left = cs - f.offset - FEATURE_HEADER_SIZE as u64;
                let Ok(size) = u32::try_from(left + 1) else {
                    return self.needs("an extension cluster below 4 GiB");
                };
                put32(self.ext_bytes()?, f.offset as usize + 16, size);
            }
            "unknown-feature" => {
                let bms = self.some_bitmaps()?;
                let rec = pick(&bms, seed).rec;
                let b = self.ext_bytes()?;
                let v = get64(b, rec) ^ 0xff00_0000_0000_0000;
                put64(b, rec, v);
            }
            "nonzero-padding" => {
                let ext = self.ext_orig()?;
                let ListEnd::EndRecord { .. } = ext.end() else {
                    return self.needs("an end record in the extension cluster");
                };
                let from = ext.list_end();
                self.require(from < cs, "room after the end record")?;
                let at = from + seed % (cs - from);
                self.ext_bytes()?[at as usize] = 0x5a;
            }
            "bitmap-data-too-short" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let at = bm.rec + 16;
                let b = self.ext_bytes()?;
                let size = get32(b, at);
                // The cut byte becomes padding: it must be zero (the top byte of an L1 entry).
                if b[bm.rec + FEATURE_HEADER_SIZE + size as usize - 1] != 0 {
                    return self.needs("a bitmap record that ends in a zero byte");
                }
                put32(b, at, size - 1);
            }
            "bitmap-extra-data" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let mut recs = self.records()?;
                recs[bm.feature].data.extend_from_slice(b"EXTRADAT");
                self.encode(recs, true)?;
            }
            "bitmap-size-mismatch" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let n = self.h.nb_sectors + 1;
                put64(self.ext_bytes()?, bm.rec + B_SIZE, n);
            }
            "granularity-zero" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                put32(self.ext_bytes()?, bm.rec + B_GRAN, 0);
            }
            "granularity-not-power-of-two" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let g = bm.granularity.checked_mul(3).unwrap_or(3);
                put32(self.ext_bytes()?, bm.rec + B_GRAN, g);
            }
            "granularity-overflow" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let g: u32 = 1 << 23;
                let l1 = self.h.nb_sectors.div_ceil(u64::from(g)).div_ceil(cs * 8);
                let mut recs = self.records()?;
                let data = &mut recs[bm.feature].data;
                put32(data, B_GRAN - FEATURE_HEADER_SIZE, g);
                put32(data, B_L1_SIZE - FEATURE_HEADER_SIZE, l1 as u32);
                data.truncate(BITMAP_HEADER_SIZE);
                data.resize(BITMAP_HEADER_SIZE + 8 * l1 as usize, 0);
                self.encode(recs, true)?;
            }
            "l1-size-wrong" | "l1-size-zero" => {
                let bm = pick(&self.some_bitmaps()?, seed);
                let mut recs = self.records()?;
                let data = &mut recs[bm.feature].data;
                let at = B_L1_SIZE - FEATURE_HEADER_SIZE;
                let l1 = get32(data, at);
                if self.name == "l1-size-zero" {
                    self.require(bm.expected > 0, "a non-empty disk")?;
                    put32(data, at, 0);
                    data.truncate(BITMAP_HEADER_SIZE);
                } else {
                    let end = BITMAP_HEADER_SIZE + 8 * l1 as usize;
                    if l1 == u32::MAX || end > data.len() {
                        return self.needs("a bitmap record that holds its whole L1 table");
                    }
                    put32(data, at, l1 + 1);
                    data.splice(end..end, [0u8; 8]);
                }
                self.encode(recs, true)?;
            }
            "l1-entry-unaligned" => {
                self.require(cs > SECTOR_SIZE, "clusters larger than one sector")?;
                let bms = self.some_bitmaps()?;
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
                    return self.needs("a bitmap cluster");
                }
                let (b, i) = pick(&ptrs, seed);
                let Some(off) = bms[b].l1[i].checked_mul(SECTOR_SIZE) else {
                    return self.needs("a bitmap cluster in the file");
                };
                let bytes = self.image.source().read_at(off, cs)?.into_owned();
                let to = self.append(bytes, SECTOR_SIZE);
                self.set_l1(&bms[b], i, to / SECTOR_SIZE)?;
            }
            "l1-entry-past-eof" => {
                let bms = self.some_bitmaps()?;
                let all: Vec<(usize, usize)> = bms
                    .iter()
                    .enumerate()
                    .flat_map(|(b, bm)| (0..bm.l1.len()).map(move |i| (b, i)))
                    .collect();
                if all.is_empty() {
                    return self.needs("an L1 entry");
                }
                let (b, i) = pick(&all, seed);
                let off = self.next_slot(self.len);
                self.set_l1(&bms[b], i, off / SECTOR_SIZE)?;
            }
            "l1-entry-overlap-bat" | "l1-entry-overlap-ext" | "l1-entry-overlap-data" | "l1-entry-overlap-l1" => {
                self.l1_overlap(seed)?;
            }
            "duplicate-bitmap-id" => {
                let bms = self.some_bitmaps()?;
                self.require(bms.len() >= 2, "two dirty bitmaps")?;
                let k = (seed % bms.len() as u64) as usize;
                let from = bms[(k + 1) % bms.len()].rec + B_ID;
                let to = bms[k].rec + B_ID;
                let b = self.ext_bytes()?;
                b.copy_within(from..from + 16, to);
            }
            "bitmap-trailing-bits" => self.trailing_bits(seed)?,
            other => unreachable!("defect {other} is in the catalogue but has no plan"),
        }
        Ok(())
    }

    fn set_data_start(&mut self, ds: u64) -> Result<()> {
        match u32::try_from(ds / SECTOR_SIZE) {
            Ok(v) => {
                put32(&mut self.head, H_DATA_OFF, v);
                Ok(())
            }
            Err(_) => self.needs("a data area below 2^32 sectors"),
        }
    }

    fn size_beyond_bat(&mut self) -> Result<()> {
        let covered = u64::from(self.h.bat_entries) * u64::from(self.h.cluster_sectors);
        let n = covered + 1;
        if self.h.variant == Variant::V1 && n > u64::from(u32::MAX) {
            return self.needs("a BAT that covers fewer than 2^32-1 sectors");
        }
        put64(&mut self.head, H_NB_SECTORS, n);
        for bm in self.bitmaps() {
            if bm.granularity != 0 {
                let l1 = n.div_ceil(u64::from(bm.granularity)).div_ceil(self.cs * 8);
                if l1 != bm.expected {
                    return self.needs("bitmaps whose L1 size stays the same one sector further");
                }
            }
            put64(self.ext_bytes()?, bm.rec + B_SIZE, n);
        }
        Ok(())
    }

    fn data_off_inside_bat(&mut self) -> Result<()> {
        let cs = self.cs;
        let ds = self.data_start();
        let min = self.h.min_data_start();
        if ds >= cs + SECTOR_SIZE && ds - cs < min {
            return self.set_data_start(ds - cs);
        }
        self.require(ds >= 64 && ds <= self.len, "a data area inside the file")?;
        // Grow the BAT by one entry into the first cluster of the data area. A v1 data_off of 0
        // (the end of the BAT) is made explicit first, so that the data area stays put.
        if get32(&self.head, H_DATA_OFF) == 0 {
            self.set_data_start(ds)?;
        }
        let entries = (ds - 64) / 4 + 1;
        self.require(
            ds.is_multiple_of(4) && entries <= u64::from(MAX_BAT_ENTRIES),
            "a data area that starts on a 4-byte boundary",
        )?;
        let ext_there = self.image.extension().is_some_and(|e| e.file_offset == ds);
        let l1_there = self.bitmaps().iter().any(|b| {
            b.l1.iter()
                .any(|&e| e > L1_DIRTY && e.checked_mul(SECTOR_SIZE) == Some(ds))
        });
        self.require(
            !ext_there && !l1_there,
            "a data cluster (not the extension or a bitmap cluster) at the start of the data area",
        )?;
        put32(&mut self.head, H_BAT_ENTRIES, entries as u32);
        self.bat.resize(entries as usize, 0);
        Ok(())
    }

    /// Copies the extension cluster to the end of the file (`skew` bytes past a cluster boundary)
    /// and points `ext_off` at the copy.
    fn move_ext(&mut self, skew: u64) -> Result<()> {
        let bytes = self.ext()?.bytes.clone();
        let to = self.next_slot(self.len) + skew;
        self.len = to + self.cs;
        let ext = self.ext.as_mut().expect("checked");
        ext.offset = to;
        ext.bytes = bytes;
        put64(&mut self.head, H_EXT_OFF, to / SECTOR_SIZE);
        Ok(())
    }

    fn l1_overlap(&mut self, seed: u64) -> Result<()> {
        let cs = self.cs;
        let bms = self.some_bitmaps()?;
        let cands = self.inner_l1(&bms);
        if cands.is_empty() {
            return self.needs("an L1 entry that is not a partial last chunk");
        }
        let (b, i) = pick(&cands, seed);
        let target = match self.name {
            "l1-entry-overlap-bat" => {
                // The last grid position inside the BAT that is not a marker (sector 0 or 1).
                let (base, end) = (self.grid_base(), self.h.bat_end());
                let off = (end > base).then(|| base + (end - 1 - base) / cs * cs);
                match off {
                    Some(off) if off >= 2 * SECTOR_SIZE => off,
                    _ => return self.needs("a cluster of the grid inside the BAT (a BAT longer than a cluster)"),
                }
            }
            "l1-entry-overlap-ext" => {
                let off = self.ext_orig()?.file_offset;
                self.require(self.on_grid(off), "an extension cluster on the cluster grid")?;
                off
            }
            "l1-entry-overlap-data" => {
                let data: Vec<u64> = self
                    .allocated()
                    .iter()
                    .map(|a| a.1)
                    .filter(|&o| self.on_grid(o))
                    .collect();
                if data.is_empty() {
                    return self.needs("a data cluster on the cluster grid");
                }
                pick(&data, seed)
            }
            _ => {
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
                            .is_some_and(|o| self.on_grid(o) && o + cs <= self.len)
                    })
                    .collect();
                if others.is_empty() {
                    return self.needs("a bitmap cluster of another L1 entry");
                }
                pick(&others, seed) * SECTOR_SIZE
            }
        };
        self.set_l1(&bms[b], i, target / SECTOR_SIZE)
    }

    fn trailing_bits(&mut self, seed: u64) -> Result<()> {
        let cs = self.cs;
        let cb = cs * 8;
        let bms: Vec<Bm> = self
            .some_bitmaps()?
            .into_iter()
            .filter(|b| b.granularity != 0 && b.expected > 0 && b.granules % cb != 0 && b.l1.len() as u64 >= b.expected)
            .collect();
        if bms.is_empty() {
            return self.needs("a bitmap whose last chunk is partial");
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
                let to = self.append(bits, 0);
                self.set_l1(&bm, k, to / SECTOR_SIZE)?;
            }
            e => {
                let Some(off) = e.checked_mul(SECTOR_SIZE).filter(|o| o + cs <= self.len) else {
                    return self.needs("a bitmap cluster in the file");
                };
                let at = off + byte as u64;
                let old = self.image.source().read_at(at, 1)?.first().copied().unwrap_or(0);
                self.blobs.push((at, vec![old | 1 << bit]));
            }
        }
        Ok(())
    }

    /// The end of the last referenced byte, as the leak rule computes it, for the edited image.
    fn high(&self) -> Option<u64> {
        let h = Header::decode(&RawHeader::read_padded(&self.head)).ok()?;
        let cs = h.cluster_size();
        let len = self.len;
        let ds = h.data_start();
        let base = match h.variant {
            Variant::V1 => ds % cs,
            Variant::V2 => 0,
        };
        let mut high = ds.min(len).max(h.bat_end().min(len));
        for &e in self.bat.iter().take(h.bat_entries as usize) {
            if let Some(off) = h.bat_entry_offset(e) {
                // A cluster cut short by the end of the file still counts (R18 flags it).
                if off < len && off >= base && (off - base) % cs == 0 {
                    high = high.max((off + cs).min(len));
                }
            }
        }
        if let Some(off) = h.ext_offset() {
            high = high.max((off + cs).min(len));
            let bytes = match (&self.ext, self.image.extension()) {
                (Some(e), _) => &e.bytes[..],
                (None, Some(e)) => e.bytes(),
                (None, None) => &[],
            };
            let walk = Extension::new(off, cs, Cow::Borrowed(bytes));
            for f in walk.features() {
                let size = f.header.data_size.get() as usize;
                if f.header.magic.get() != FEATURE_DIRTY_BITMAP
                    || f.header.flags.get() != 0
                    || size < BITMAP_HEADER_SIZE
                {
                    continue;
                }
                let data = walk.slice(f.data_range());
                let l1_size = get32(data, 28) as usize;
                let n = ((data.len() - BITMAP_HEADER_SIZE) / 8).min(l1_size);
                for i in 0..n {
                    let e = get64(data, BITMAP_HEADER_SIZE + 8 * i);
                    if let Some(o) = e.checked_mul(SECTOR_SIZE).filter(|_| e > L1_DIRTY) {
                        if o < len {
                            high = high.max(o.saturating_add(cs).min(len));
                        }
                    }
                }
            }
        }
        Some(high)
    }

    fn finish(mut self) -> Result<Patch> {
        if let Some(ext) = self.ext.as_mut() {
            if self.rehash {
                let sum = checksum(&ext.bytes[EXT_HEADER_SIZE..]);
                ext.bytes[8..EXT_HEADER_SIZE].copy_from_slice(&sum);
            }
        }
        if self.trim {
            if let Some(high) = self.high() {
                self.len = self.len.min(high);
            }
        }
        let src = self.image.source();
        let mut regions: Vec<(u64, Cow<'_, [u8]>)> = vec![(0, Cow::Borrowed(&self.head[..]))];
        let bat: Vec<u8> = self.bat.iter().flat_map(|e| e.to_le_bytes()).collect();
        regions.push((64, Cow::Owned(bat)));
        if let Some(ext) = &self.ext {
            regions.push((ext.offset, Cow::Borrowed(&ext.bytes[..])));
        }
        for (off, b) in &self.blobs {
            regions.push((*off, Cow::Borrowed(&b[..])));
        }
        let mut writes = Vec::new();
        for (at, want) in regions {
            diff(src, at, &want, self.len, &mut writes)?;
        }
        let set_len = (self.len != self.image.file_len()).then_some(self.len);
        Ok(Patch { writes, set_len })
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
