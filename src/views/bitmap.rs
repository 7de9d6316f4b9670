//! Dirty bitmaps: views of the feature records and decoding of their bits.
//!
//! Granule `g` of a bitmap covers guest bytes `[g * granularity_bytes, (g + 1) * granularity_bytes)`.
//! L1 entry `k` covers granules `[k * cluster_size * 8, (k + 1) * cluster_size * 8)`; within a
//! bitmap cluster, granule `g` is bit `g % 8` of byte `g / 8` (least significant bit first).

use std::io::Write;

use zerocopy::little_endian::U64;
use zerocopy::FromBytes;

use crate::error::{Region, Result, Violation};
use crate::extension::{Extension, FeatureEntry};
use crate::raw::bitmap::{RawBitmapHeader, BITMAP_HEADER_SIZE, L1_CLEAN, L1_DIRTY, L1_ENTRY_SIZE};
use crate::raw::SECTOR_SIZE;
use crate::source::Source;

/// What a bitmap needs to know of the image it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapGeometry {
    /// The disk size in sectors (the header's `nb_sectors`, as readers use it).
    pub nb_sectors: u64,
    /// The cluster size in bytes: one bitmap cluster holds `8 * cluster_size` granules.
    pub cluster_size: u64,
    /// The length of the file in bytes: bitmap clusters past it read as zeros.
    pub file_len: u64,
}

/// The L1 table of a bitmap, viewed in place: one entry per chunk of `8 * cluster_size`
/// granules; 0 (all clean), 1 (all dirty) or the sector offset of the chunk's bits.
#[derive(Clone, Copy)]
pub struct L1Table<'a>(&'a [U64]);

impl<'a> L1Table<'a> {
    /// Number of entries present in the record.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entry `index`, if present.
    pub fn get(&self, index: usize) -> Option<u64> {
        self.0.get(index).map(|e| e.get())
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.0.iter().map(|e| e.get())
    }

    fn at(&self, index: u64) -> u64 {
        self.0[index as usize].get()
    }
}

impl std::fmt::Debug for L1Table<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A dirty-bitmap feature of an image, viewed in place.
#[derive(Clone, Copy)]
pub struct Bitmap<'a> {
    /// Feature number in the extension.
    pub feature: usize,
    /// File offset of the feature record.
    pub file_offset: u64,
    /// The bitmap header (copied: 32 bytes).
    pub header: RawBitmapHeader,
    l1: L1Table<'a>,
    nb_sectors: u64,
    cluster_size: u64,
    file_len: u64,
    source: &'a (dyn Source + 'a),
}

impl std::fmt::Debug for Bitmap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("feature", &self.feature)
            .field("name", &self.name())
            .field("granularity", &self.header.granularity.get())
            .field("l1_size", &self.header.l1_size.get())
            .finish()
    }
}

impl<'a> Bitmap<'a> {
    /// Views feature record `f` of `ext` (a bitmap record: [`FeatureEntry::is_bitmap`]), whose
    /// bits clusters `source` holds.
    pub(crate) fn new(
        geometry: BitmapGeometry,
        source: &'a (dyn Source + 'a),
        ext: &'a Extension<'_>,
        f: &FeatureEntry,
    ) -> Bitmap<'a> {
        let data = ext.slice(f.data_range());
        let header: RawBitmapHeader = zerocopy::transmute!(crate::raw::padded::<BITMAP_HEADER_SIZE>(data, 0));
        let table = data.get(BITMAP_HEADER_SIZE..).unwrap_or(&[]);
        let n = (table.len() / L1_ENTRY_SIZE).min(header.l1_size.get() as usize);
        let l1 = <[U64]>::ref_from_bytes(&table[..n * L1_ENTRY_SIZE]).expect("whole entries");
        Bitmap {
            feature: f.index,
            file_offset: ext.file_offset + f.offset,
            header,
            l1: L1Table(l1),
            nb_sectors: geometry.nb_sectors,
            cluster_size: geometry.cluster_size,
            file_len: geometry.file_len,
            source,
        }
    }

    /// The id bytes as stored.
    pub fn id(&self) -> [u8; 16] {
        self.header.id
    }

    /// The name as QEMU prints it: the 16 id bytes in stored order as a lower-case UUID.
    pub fn name(&self) -> String {
        uuid::Uuid::from_bytes(self.header.id).hyphenated().to_string()
    }

    /// Granularity in sectors, as stored.
    pub fn granularity_sectors(&self) -> u32 {
        self.header.granularity.get()
    }

    /// Granularity in bytes.
    pub fn granularity_bytes(&self) -> u64 {
        u64::from(self.granularity_sectors()) * SECTOR_SIZE
    }

    /// Number of granules: the disk size in sectors divided by the granularity, rounded up
    /// (0 for a granularity of 0).
    pub fn granules(&self) -> u64 {
        match u64::from(self.granularity_sectors()) {
            0 => 0,
            g => div_ceil(self.nb_sectors, g),
        }
    }

    /// Granules per L1 entry (bits in a cluster).
    pub fn chunk_bits(&self) -> u64 {
        self.cluster_size * 8
    }

    /// The `l1_size` the disk size, granularity and cluster size call for.
    pub fn expected_l1_size(&self) -> u64 {
        div_ceil(self.granules(), self.chunk_bits())
    }

    /// The L1 entries present in the record, viewed in place.
    pub fn l1(&self) -> L1Table<'a> {
        self.l1
    }

    /// Checks what decoding relies on: a non-zero granularity, and L1 clusters that do not
    /// overlap each other inside the file (so that decoding reads each byte of the file at most
    /// once, whatever the L1 table claims).
    pub fn decodable(&self) -> Result<(), Violation> {
        let g = self.granularity_sectors();
        if g == 0 {
            return Err(Violation::BitmapGranularityInvalid {
                index: self.feature,
                offset: self.file_offset,
                found: g,
            });
        }
        let mut offs: Vec<(u64, u32)> = self
            .l1
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let off = chunk_offset(e);
                (e > L1_DIRTY && off < self.file_len).then_some((off, i as u32))
            })
            .collect();
        offs.sort_unstable();
        for w in offs.windows(2) {
            if w[1].0 < w[0].0 + self.cluster_size {
                let (first, second) = if w[0].1 < w[1].1 { (w[0], w[1]) } else { (w[1], w[0]) };
                return Err(Violation::L1EntryOverlap {
                    feature: self.feature,
                    index: second.1,
                    entry: self.l1.at(u64::from(second.1)),
                    offset: second.0,
                    with: Region::BitmapCluster {
                        feature: self.feature,
                        l1_index: first.1,
                    },
                });
            }
        }
        Ok(())
    }

    /// Number of chunks decoded: the L1 entries present, at most the expected number.
    fn chunks(&self) -> u64 {
        (self.l1.len() as u64).min(self.expected_l1_size())
    }

    /// Calls `f(first_granule, count)` for each maximal run of dirty granules, in order.
    /// Granules past the L1 table read as clean; bitmap clusters past the end of the file read
    /// as zeros (as they do for QEMU).
    pub fn for_each_dirty_run(&self, mut f: impl FnMut(u64, u64)) -> Result<()> {
        self.decodable()?;
        let g = self.granules();
        let cb = self.chunk_bits();
        let mut pending: Option<(u64, u64)> = None;
        let mut emit = |start: u64, len: u64| match &mut pending {
            Some((s, l)) if *s + *l == start => *l += len,
            _ => {
                if let Some((s, l)) = pending.replace((start, len)) {
                    f(s, l);
                }
            }
        };
        for k in 0..self.chunks() {
            let base = k * cb;
            let n = cb.min(g - base);
            match self.l1.at(k) {
                L1_CLEAN => {}
                L1_DIRTY => emit(base, n),
                sector => {
                    let bits = self.source.read_at(chunk_offset(sector), n.div_ceil(8))?;
                    scan_runs(&bits, n, base, &mut emit);
                }
            }
        }
        if let Some((s, l)) = pending {
            f(s, l);
        }
        Ok(())
    }

    /// Calls `f(offset, length)` for each merged dirty byte range, clipped to the disk size, in
    /// order, without holding the extents in memory.
    pub fn for_each_dirty_extent(&self, mut f: impl FnMut(u64, u64)) -> Result<()> {
        let gb = self.granularity_bytes();
        let size = self.nb_sectors.saturating_mul(SECTOR_SIZE);
        self.for_each_dirty_run(|s, l| {
            let start = s.saturating_mul(gb).min(size);
            let end = s.saturating_add(l).saturating_mul(gb).min(size);
            if end > start {
                f(start, end - start);
            }
        })
    }

    /// The dirty extents as merged `(guest byte offset, length)` pairs, clipped to the disk size.
    pub fn dirty_extents(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        self.for_each_dirty_extent(|offset, len| out.push((offset, len)))?;
        Ok(out)
    }

    /// Total dirty bytes (clipped to the disk size).
    pub fn dirty_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        self.for_each_dirty_extent(|_, len| total += len)?;
        Ok(total)
    }

    /// Name, feature number, granularity, l1_size and dirty bytes (or why the bitmap cannot be
    /// decoded), as `prlimg info` and `prlimg bitmaps` list them. Reads the bitmap clusters.
    pub fn summary(&self) -> BitmapSummary {
        let (dirty_bytes, error) = match self.dirty_bytes() {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e.to_string())),
        };
        BitmapSummary {
            name: self.name(),
            feature: self.feature,
            granularity: self.granularity_bytes(),
            dirty_bytes,
            l1_size: self.header.l1_size.get(),
            error,
        }
    }

    /// Writes the whole disk, 0 to its size, as alternating clean (type 0) and dirty (type 1)
    /// extents in the layout of `nbdinfo --map` (text) or `nbdinfo --map --json`, as it prints
    /// the `qemu:dirty-bitmap:NAME` context of `qemu-nbd -B NAME`. Streams: a bitmap of
    /// millions of extents is never held in memory.
    pub fn write_map(&self, format: MapFormat, out: &mut dyn Write) -> Result<(), MapError> {
        let size = self.nb_sectors.saturating_mul(SECTOR_SIZE);
        let mut printer = MapPrinter {
            out,
            json: format == MapFormat::Json,
            first: true,
            error: None,
        };
        if printer.json {
            printer.raw("[\n");
        }
        let mut pos = 0u64;
        self.for_each_dirty_extent(|off, len| {
            if off > pos {
                printer.extent(pos, off - pos, false);
            }
            printer.extent(off, len, true);
            pos = off + len;
        })
        .map_err(MapError::Image)?;
        if size > pos {
            printer.extent(pos, size - pos, false);
        }
        if printer.json {
            printer.raw("\n]\n");
        }
        match printer.error {
            Some(e) => Err(MapError::Output(e)),
            None => Ok(()),
        }
    }

    /// Length of the serialized form: `ceil(granules / 64) * 8` bytes.
    pub fn serialized_len(&self) -> u64 {
        self.granules().div_ceil(64) * 8
    }

    /// Writes the serialized bitmap: one bit per granule, least significant bit first, in
    /// `ceil(granules / 64)` little-endian 64-bit words. The bits past the last granule in the
    /// last word are what the image holds there, as QEMU loads them: set for an all-dirty (1)
    /// L1 entry, the bitmap cluster's own bits otherwise (zeros past the end of the file). This
    /// is byte for byte what QEMU's `x-debug-block-dirty-bitmap-sha256` hashes.
    pub fn write_serialized(&self, out: &mut dyn Write) -> Result<()> {
        self.decodable()?;
        let total = self.serialized_len();
        let cs = self.cluster_size;
        let chunks = self.chunks();
        let mut buf = vec![0u8; cs.min(total).min(1 << 20) as usize];
        let mut pos = 0u64;
        let mut k = 0u64;
        while pos < total {
            let chunk_end = ((k + 1) * cs).min(total);
            let entry = if k < chunks { self.l1.at(k) } else { L1_CLEAN };
            let bits = match entry {
                L1_CLEAN | L1_DIRTY => None,
                sector => Some(self.source.read_at(chunk_offset(sector), chunk_end - pos)?),
            };
            let mut at = 0usize;
            while pos < chunk_end {
                let n = (chunk_end - pos).min(buf.len() as u64) as usize;
                let piece = &mut buf[..n];
                match (&bits, entry) {
                    (Some(b), _) => {
                        let avail = b.len().saturating_sub(at).min(n);
                        piece[..avail].copy_from_slice(&b[at..at + avail]);
                        piece[avail..].fill(0);
                    }
                    (None, L1_DIRTY) => piece.fill(0xff),
                    (None, _) => piece.fill(0),
                }
                out.write_all(piece)?;
                pos += n as u64;
                at += n;
            }
            k += 1;
        }
        Ok(())
    }

    /// The serialized bitmap in memory (see [`Bitmap::write_serialized`]).
    pub fn serialized(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_serialized(&mut out)?;
        Ok(out)
    }

    /// Set bits past the last granule in the last chunk (ploop may leave them); 0 if the last
    /// chunk is a marker or absent.
    pub fn trailing_bits(&self) -> Result<u64> {
        let g = self.granules();
        let cb = self.chunk_bits();
        let k = self.expected_l1_size();
        if k == 0 || (self.l1.len() as u64) < k {
            return Ok(0);
        }
        let used = g - (k - 1) * cb;
        match self.l1.at(k - 1) {
            L1_CLEAN | L1_DIRTY => Ok(0),
            sector => {
                let bits = self.source.read_at(chunk_offset(sector), self.cluster_size)?;
                let mut count = 0u64;
                let first_byte = (used / 8) as usize;
                if let Some(&b) = bits.get(first_byte) {
                    count += u64::from((b >> (used % 8)).count_ones());
                }
                if let Some(rest) = bits.get(first_byte + 1..) {
                    count += rest.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
                }
                Ok(count)
            }
        }
    }
}

/// A bitmap as `prlimg info` and `prlimg bitmaps` list it ([`Bitmap::summary`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BitmapSummary {
    /// The name as QEMU prints it.
    pub name: String,
    /// Feature number in the extension cluster.
    pub feature: usize,
    /// Granularity in bytes.
    pub granularity: u64,
    /// Dirty bytes within the disk; `None` when the bitmap cannot be decoded.
    pub dirty_bytes: Option<u64>,
    /// `l1_size` as stored.
    pub l1_size: u32,
    /// Why the bitmap cannot be decoded.
    pub error: Option<String>,
}

/// The layouts [`Bitmap::write_map`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapFormat {
    /// `nbdinfo --map`: `offset length type description`, right-aligned, one extent a line.
    Text,
    /// `nbdinfo --map --json`: an array of `{offset, length, type, description}` objects.
    Json,
}

/// Why [`Bitmap::write_map`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The bitmap could not be decoded or read.
    #[error("{0}")]
    Image(#[from] crate::error::Error),
    /// Writing the map failed.
    #[error("writing the map: {0}")]
    Output(std::io::Error),
}

struct MapPrinter<'a> {
    out: &'a mut dyn Write,
    json: bool,
    first: bool,
    /// The first write error; later writes are skipped.
    error: Option<std::io::Error>,
}

impl MapPrinter<'_> {
    fn raw(&mut self, s: &str) {
        self.write(s.as_bytes());
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn extent(&mut self, offset: u64, length: u64, dirty: bool) {
        let (kind, desc) = if dirty { (1, "dirty") } else { (0, "clean") };
        if self.json {
            let sep = if self.first { "" } else { ",\n" };
            let line = format!(
                "{sep}{{ \"offset\": {offset}, \"length\": {length}, \"type\": {kind}, \"description\": \"{desc}\"}}"
            );
            self.first = false;
            self.raw(&line);
            return;
        }
        // `{offset:>10}  {length:>10}  {kind:>3}  {desc}\n`, without the formatting machinery
        // (a large bitmap has millions of extents).
        let mut line = [b' '; 64];
        let mut at = right_aligned(&mut line, 0, offset, 10);
        at = right_aligned(&mut line, at + 2, length, 10);
        line[at + 4] = b'0' + kind;
        at += 5;
        line[at + 2..at + 7].copy_from_slice(desc.as_bytes());
        line[at + 7] = b'\n';
        self.first = false;
        self.write(&line[..at + 8]);
    }
}

/// Writes `v` in decimal right-aligned in `width` columns (wider if it needs more) at `at`;
/// returns the index after it.
fn right_aligned(buf: &mut [u8], at: usize, mut v: u64, width: usize) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[19 - n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = at + width.saturating_sub(n);
    buf[start..start + n].copy_from_slice(&digits[20 - n..]);
    start + n
}

/// `x.div_ceil(d)` for `d > 0`, by a shift when `d` is a power of two (granularities always are
/// when valid, cluster sizes nearly always; a 64-bit division costs tens of cycles).
#[inline]
fn div_ceil(x: u64, d: u64) -> u64 {
    if d.is_power_of_two() {
        (x >> d.trailing_zeros()) + u64::from(x & (d - 1) != 0)
    } else {
        x.div_ceil(d)
    }
}

/// Byte offset of a bits cluster: the L1 entry in sectors, wrapping at 2^64 as QEMU computes it
/// (an entry that wraps past the end of the file reads as zeros like any other).
fn chunk_offset(entry: u64) -> u64 {
    entry.wrapping_mul(SECTOR_SIZE)
}

/// Emits runs of set bits among the first `n` bits of `bits` (missing bytes are zeros), with
/// granule numbers offset by `base`.
fn scan_runs(bits: &[u8], n: u64, base: u64, emit: &mut impl FnMut(u64, u64)) {
    let avail = (bits.len() as u64 * 8).min(n);
    let mut words = bits.chunks_exact(8);
    let mut lo = 0u64;
    let mut handle = |mut word: u64, lo: u64| {
        if lo + 64 > avail {
            let keep = avail - lo;
            if keep < 64 {
                word &= (1u64 << keep) - 1;
            }
        }
        while word != 0 {
            let tz = word.trailing_zeros();
            let run = (!(word >> tz)).trailing_zeros().min(64 - tz);
            emit(base + lo + u64::from(tz), u64::from(run));
            if tz + run >= 64 {
                break;
            }
            word &= !(((1u64 << run) - 1) << tz);
        }
    };
    for w in words.by_ref() {
        if lo >= avail {
            return;
        }
        let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        if word != 0 {
            handle(word, lo);
        }
        lo += 64;
    }
    let rem = words.remainder();
    if !rem.is_empty() && lo < avail {
        let mut b = [0u8; 8];
        b[..rem.len()].copy_from_slice(rem);
        handle(u64::from_le_bytes(b), lo);
    }
}

#[cfg(test)]
mod tests {
    use super::div_ceil;

    #[test]
    fn div_ceil_by_shift_and_by_division() {
        assert_eq!(div_ceil(0, 8), 0);
        assert_eq!(div_ceil(1, 8), 1);
        assert_eq!(div_ceil(16, 8), 2);
        assert_eq!(div_ceil(17, 8), 3);
        assert_eq!(div_ceil(u64::MAX, 1), u64::MAX);
        assert_eq!(div_ceil(u64::MAX, 1 << 63), 2);
        assert_eq!(div_ceil(u64::MAX, 3), 6_148_914_691_236_517_205);
        assert_eq!(div_ceil(12_289, 12_288), 2);
    }
}
