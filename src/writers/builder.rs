//! Building whole images: header, BAT, data clusters, extension cluster and bitmap clusters.
//!
//! Layout: header and BAT at 0; the data area from `data_off`, one cluster per written guest
//! cluster in guest order; then the extension cluster; then the bitmap clusters. Nothing is
//! written for unallocated clusters or for the gap after the BAT, so a huge sparse image costs
//! only its metadata on disk.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{BuildError, Result};
use crate::header::Variant;
use crate::outfile::{write_atomically, OutputOptions};
use crate::raw::bat::BAT_OFFSET;
use crate::raw::bitmap::{DirtyBitmapFeature, L1_CLEAN, L1_DIRTY};
use crate::raw::extension::ExtensionCluster;
use crate::raw::feature::FeatureRecord;
use crate::raw::header::{RawHeader, MAX_BAT_ENTRIES, MAX_TRACKS, VERSION};
use crate::raw::SECTOR_SIZE;

/// The BAT is written in blocks of this many bytes, all-zero blocks skipped.
const BAT_BLOCK: usize = 64 << 10;

/// What to write at a guest offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestData {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` copies of one byte (without holding them in memory).
    Fill {
        /// Number of bytes.
        len: u64,
        /// The byte.
        byte: u8,
    },
}

impl GuestData {
    fn len(&self) -> u64 {
        match self {
            GuestData::Bytes(b) => b.len() as u64,
            GuestData::Fill { len, .. } => *len,
        }
    }
}

/// A bitmap to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapSpec {
    /// The 16 id bytes (shown as a UUID in stored order).
    pub id: [u8; 16],
    /// Granularity in bytes: a power of two, at least 512.
    pub granularity: u64,
    /// Dirty guest byte ranges `(offset, length)`; every granule they touch is dirty. Each must
    /// end within the disk (`nb_sectors * 512` bytes), or the builder refuses it.
    pub extents: Vec<(u64, u64)>,
}

/// Where the builder put things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltLayout {
    /// The header written.
    pub header: RawHeader,
    /// The BAT written.
    pub bat: Vec<u32>,
    /// Byte offset of the data area.
    pub data_start: u64,
    /// Byte offset of the extension cluster, if any.
    pub ext_offset: Option<u64>,
    /// L1 table of each bitmap, in the order given.
    pub l1: Vec<Vec<u64>>,
    /// Length of the file.
    pub file_len: u64,
}

/// Builds an image. See the module docs for the layout.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    variant: Variant,
    cluster_size: u64,
    virtual_size: u64,
    data: Vec<(u64, GuestData)>,
    bitmaps: Vec<BitmapSpec>,
    features: Vec<FeatureRecord>,
    inuse: u32,
    flags: u32,
    compact_v1: bool,
}

impl ImageBuilder {
    /// A v2 image of `virtual_size` bytes with 1 MiB clusters (QEMU's defaults).
    pub fn new(virtual_size: u64) -> Self {
        ImageBuilder {
            variant: Variant::V2,
            cluster_size: 1 << 20,
            virtual_size,
            data: Vec::new(),
            bitmaps: Vec::new(),
            features: Vec::new(),
            inuse: 0,
            flags: 0,
            compact_v1: false,
        }
    }

    /// Which magic (and BAT units) to use.
    pub fn variant(mut self, variant: Variant) -> Self {
        self.variant = variant;
        self
    }

    /// Cluster size in bytes: a non-zero multiple of 512 up to 4186127 sectors (not necessarily
    /// a power of two).
    pub fn cluster_size(mut self, bytes: u64) -> Self {
        self.cluster_size = bytes;
        self
    }

    /// The cluster size in bytes this builder will write.
    pub fn cluster_size_bytes(&self) -> u64 {
        self.cluster_size
    }

    /// The ids of the bitmaps this builder will write, in record order.
    pub fn bitmap_ids(&self) -> Vec<[u8; 16]> {
        self.bitmaps.iter().map(|b| b.id).collect()
    }

    /// Writes `data` at guest offset `offset`; later writes win where they overlap.
    pub fn data(mut self, offset: u64, data: GuestData) -> Self {
        self.data.push((offset, data));
        self
    }

    /// Adds a bitmap. Its id must differ from every other bitmap's (see
    /// [`BuildError::DuplicateBitmapId`]).
    pub fn bitmap(mut self, spec: BitmapSpec) -> Self {
        self.bitmaps.push(spec);
        self
    }

    /// Adds a feature record after the bitmaps, as is (for unknown features).
    pub fn feature(mut self, record: FeatureRecord) -> Self {
        self.features.push(record);
        self
    }

    /// The `inuse` value to write (default 0, closed).
    pub fn inuse(mut self, inuse: u32) -> Self {
        self.inuse = inuse;
        self
    }

    /// The `flags` value to write (default 0).
    pub fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// For a v1 image: start the data area right after the BAT, rounded up to a sector rather
    /// than a cluster (as old Parallels software did).
    pub fn compact_v1(mut self, yes: bool) -> Self {
        self.compact_v1 = yes;
        self
    }

    /// Writes the image to `out` and returns where everything went. `out` must be empty (or
    /// zeros): gaps, and blocks of the BAT that hold only unallocated entries, are skipped over
    /// rather than written, and the length is set at the end.
    pub fn write_to<W: Write + Seek>(&self, out: &mut W) -> Result<BuiltLayout> {
        let Geometry {
            cs,
            nb_sectors,
            bat_entries,
            data_start,
        } = self.geometry()?;
        // Guest clusters to allocate, in guest order.
        let mut touched: Vec<u64> = Vec::new();
        for (off, d) in &self.data {
            if d.len() == 0 {
                continue;
            }
            touched.extend(off / cs..=(off + d.len() - 1) / cs);
        }
        touched.sort_unstable();
        touched.dedup();

        let mut next = data_start;
        let mut bat = vec![0u32; bat_entries as usize];
        let mut placed: Vec<(u64, u64)> = Vec::with_capacity(touched.len());
        for &g in &touched {
            let host = alloc_cluster(&mut next, cs);
            bat[g as usize] = self.bat_value(host)?;
            placed.push((g, host));
        }

        // Bitmaps: L1 tables and the clusters of mixed chunks.
        let ext_offset = if self.bitmaps.is_empty() && self.features.is_empty() {
            None
        } else {
            Some(alloc_cluster(&mut next, cs))
        };
        let EncodedBitmaps {
            mut features,
            l1_tables,
            chunk_clusters,
        } = encode_bitmaps(&self.bitmaps, nb_sectors, cs, &mut next)?;
        features.extend(self.features.iter().cloned());
        let ext_cluster = match ext_offset {
            None => None,
            Some(_) => Some(
                ExtensionCluster::new(features)
                    .to_cluster(cs as usize)
                    .map_err(|e| BuildError::Extension(e.to_string()))?,
            ),
        };
        let file_len = next.max(data_start);

        let header = RawHeader {
            magic: self.variant.magic(),
            version: VERSION.into(),
            heads: 16.into(),
            cylinders: ((nb_sectors / (16 * 32)) as u32).into(),
            tracks: ((cs / SECTOR_SIZE) as u32).into(),
            bat_entries: (bat_entries as u32).into(),
            nb_sectors: nb_sectors.into(),
            inuse: self.inuse.into(),
            data_off: u32::try_from(data_start / SECTOR_SIZE)
                .map_err(|_| BuildError::Unaddressable {
                    what: "data area",
                    offset: data_start,
                    field: "data_off",
                })?
                .into(),
            flags: self.flags.into(),
            ext_off: ext_offset.map_or(0, |o| o / SECTOR_SIZE).into(),
        };

        self.emit(
            out,
            &header,
            &bat,
            &placed,
            ext_offset.zip(ext_cluster.as_deref()),
            &chunk_clusters,
            file_len,
        )?;
        Ok(BuiltLayout {
            header,
            bat,
            data_start,
            ext_offset,
            l1: l1_tables,
            file_len,
        })
    }

    /// The image's shape from the settings, and the settings checked against each other.
    fn geometry(&self) -> Result<Geometry> {
        let cs = self.cluster_size;
        if cs == 0 || !cs.is_multiple_of(SECTOR_SIZE) || cs / SECTOR_SIZE > u64::from(MAX_TRACKS) {
            return Err(BuildError::ClusterSize {
                found: cs,
                max: u64::from(MAX_TRACKS) * 512,
            }
            .into());
        }
        let nb_sectors = self.virtual_size.div_ceil(SECTOR_SIZE);
        let bat_entries = self.virtual_size.div_ceil(cs);
        if bat_entries > u64::from(MAX_BAT_ENTRIES) {
            return Err(BuildError::TooManyClusters {
                clusters: bat_entries,
                cluster_size: cs,
                max: MAX_BAT_ENTRIES,
            }
            .into());
        }
        if self.variant == Variant::V1 && nb_sectors > u64::from(u32::MAX) {
            return Err(BuildError::V1TooLarge { sectors: nb_sectors }.into());
        }
        let bat_end = 64 + 4 * bat_entries;
        let data_start = if self.variant == Variant::V1 && self.compact_v1 {
            bat_end.next_multiple_of(SECTOR_SIZE)
        } else {
            bat_end.next_multiple_of(cs)
        };
        for (off, d) in &self.data {
            if off.checked_add(d.len()).is_none_or(|end| end > self.virtual_size) {
                return Err(BuildError::DataPastDisk {
                    offset: *off,
                    len: d.len(),
                    virtual_size: self.virtual_size,
                }
                .into());
            }
        }

        let disk_size = nb_sectors * SECTOR_SIZE;
        let mut seen = std::collections::HashMap::with_capacity(self.bitmaps.len());
        for (i, spec) in self.bitmaps.iter().enumerate() {
            if let Some(&first) = seen.get(&spec.id) {
                return Err(BuildError::DuplicateBitmapId {
                    id: spec.id,
                    first,
                    second: i,
                }
                .into());
            }
            seen.insert(spec.id, i);
            if let Some(&(offset, len)) = spec
                .extents
                .iter()
                .find(|&&(o, l)| l > 0 && o.checked_add(l).is_none_or(|end| end > disk_size))
            {
                return Err(BuildError::DirtyRangeOutsideDisk {
                    bitmap: i,
                    id: spec.id,
                    offset,
                    len,
                    disk_size,
                }
                .into());
            }
        }

        Ok(Geometry {
            cs,
            nb_sectors,
            bat_entries,
            data_start,
        })
    }

    /// Writes the planned image: the header, the BAT's allocated blocks, the data clusters, the
    /// extension cluster and the bitmap clusters; the length is set to `file_len`.
    #[allow(clippy::too_many_arguments)]
    fn emit<W: Write + Seek>(
        &self,
        out: &mut W,
        header: &RawHeader,
        bat: &[u32],
        placed: &[(u64, u64)],
        ext: Option<(u64, &[u8])>,
        chunk_clusters: &[(u64, Vec<u8>)],
        file_len: u64,
    ) -> Result<()> {
        let cs = self.cluster_size;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(zerocopy::IntoBytes::as_bytes(header))?;
        // The BAT a block at a time, skipping blocks of unallocated entries: like every gap
        // here they are left to read as zeros (a hole in a file), so a large BAT with little
        // allocated costs neither its size in memory nor in writes.
        // `end`: the end of what was written; the length is set to `file_len` at the end.
        let mut end = BAT_OFFSET;
        let mut block = Vec::with_capacity(BAT_BLOCK);
        for (k, entries) in bat.chunks(BAT_BLOCK / 4).enumerate() {
            if entries.iter().all(|&e| e == 0) {
                continue;
            }
            block.clear();
            block.extend(entries.iter().flat_map(|e| e.to_le_bytes()));
            let at = BAT_OFFSET + (k * BAT_BLOCK) as u64;
            out.seek(SeekFrom::Start(at))?;
            out.write_all(&block)?;
            end = at + block.len() as u64;
        }
        let mut buf = vec![0u8; cs as usize];
        for &(g, host) in placed {
            self.render(g * cs, &mut buf);
            out.seek(SeekFrom::Start(host))?;
            out.write_all(&buf)?;
            end = end.max(host + cs);
        }
        if let Some((off, c)) = ext {
            out.seek(SeekFrom::Start(off))?;
            out.write_all(c)?;
            end = end.max(off + cs);
        }
        for (host, bits) in chunk_clusters {
            out.seek(SeekFrom::Start(*host))?;
            out.write_all(bits)?;
            end = end.max(host + cs);
        }
        if end < file_len {
            out.seek(SeekFrom::Start(file_len - 1))?;
            out.write_all(&[0])?;
        }
        out.flush()?;
        Ok(())
    }

    fn bat_value(&self, host: u64) -> Result<u32> {
        let v = match self.variant {
            Variant::V1 => host / SECTOR_SIZE,
            Variant::V2 => host / self.cluster_size,
        };
        u32::try_from(v).map_err(|_| {
            BuildError::Unaddressable {
                what: "cluster",
                offset: host,
                field: "BAT entry",
            }
            .into()
        })
    }

    /// Fills `buf` with the guest bytes of the cluster starting at guest offset `at`.
    fn render(&self, at: u64, buf: &mut [u8]) {
        buf.fill(0);
        let end = at + buf.len() as u64;
        for (off, d) in &self.data {
            let (s, e) = ((*off).max(at), (off + d.len()).min(end));
            if s >= e {
                continue;
            }
            let dst = &mut buf[(s - at) as usize..(e - at) as usize];
            match d {
                GuestData::Bytes(b) => dst.copy_from_slice(&b[(s - off) as usize..(e - off) as usize]),
                GuestData::Fill { byte, .. } => dst.fill(*byte),
            }
        }
    }

    /// Builds the image in memory.
    pub fn to_vec(&self) -> Result<(Vec<u8>, BuiltLayout)> {
        let mut cur = std::io::Cursor::new(Vec::new());
        let layout = self.write_to(&mut cur)?;
        let mut v = cur.into_inner();
        v.resize(layout.file_len as usize, 0);
        Ok((v, layout))
    }

    /// Writes the image to `path` through [`write_atomically`](crate::outfile::write_atomically): aside,
    /// then put in place when complete. An existing regular file is replaced only if
    /// `overwrite` is true; nothing else is ever replaced.
    pub fn create_file(&self, path: &Path, overwrite: bool) -> Result<BuiltLayout> {
        let options = OutputOptions {
            overwrite,
            ..Default::default()
        };
        write_atomically(path, &options, |f| self.write_to(f))
    }
}

/// The next free cluster at `*next`, moving `*next` past it. Data and the extension may start at
/// sector 1, where a compact v1 data area does.
pub(crate) fn alloc_cluster(next: &mut u64, cs: u64) -> u64 {
    let at = *next;
    *next += cs;
    at
}

/// The next free cluster for a bitmap chunk: never sector 0 or 1, which as an L1 entry read as
/// markers. (The extension comes first, so a bitmap cluster is never that low in practice.)
fn alloc_bitmap_cluster(next: &mut u64, cs: u64) -> u64 {
    while *next < 2 * SECTOR_SIZE {
        *next += cs;
    }
    alloc_cluster(next, cs)
}

/// An image's shape, from the builder's settings.
struct Geometry {
    /// The cluster size in bytes.
    cs: u64,
    nb_sectors: u64,
    bat_entries: u64,
    /// Where the data area starts, in bytes.
    data_start: u64,
}

/// Bitmaps encoded for an image: their feature records, L1 tables and the clusters of their
/// mixed chunks (`(byte offset, bits)`).
pub(crate) struct EncodedBitmaps {
    pub features: Vec<FeatureRecord>,
    pub l1_tables: Vec<Vec<u64>>,
    pub chunk_clusters: Vec<(u64, Vec<u8>)>,
}

/// Encodes `specs` for a disk of `nb_sectors` sectors with `cs`-byte clusters, placing the
/// clusters of mixed chunks from `*next` on.
pub(crate) fn encode_bitmaps(specs: &[BitmapSpec], nb_sectors: u64, cs: u64, next: &mut u64) -> Result<EncodedBitmaps> {
    let mut l1_tables = Vec::new();
    let mut chunk_clusters: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut features = Vec::new();
    if nb_sectors == 0 && !specs.is_empty() {
        return Err(BuildError::BitmapOnEmptyDisk { count: specs.len() }.into());
    }
    for spec in specs {
        let gb = spec.granularity;
        if gb < SECTOR_SIZE || !gb.is_power_of_two() || gb > 1 << 31 {
            return Err(BuildError::Granularity { found: gb }.into());
        }
        let gs = gb / SECTOR_SIZE;
        let granules = nb_sectors.div_ceil(gs);
        let chunk_bits = cs * 8;
        let l1_size = granules.div_ceil(chunk_bits);
        let mut runs: Vec<(u64, u64)> = spec
            .extents
            .iter()
            .filter(|e| e.1 > 0)
            .map(|&(o, l)| (o / gb, o.saturating_add(l).div_ceil(gb).min(granules)))
            .filter(|r| r.0 < r.1)
            .collect();
        runs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for r in runs {
            match merged.last_mut() {
                Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        let mut l1 = vec![L1_CLEAN; l1_size as usize];
        let mut ri = 0usize;
        for (k, slot) in l1.iter_mut().enumerate() {
            let lo = k as u64 * chunk_bits;
            let hi = (lo + chunk_bits).min(granules);
            while ri < merged.len() && merged[ri].1 <= lo {
                ri += 1;
            }
            let inside: Vec<(u64, u64)> = merged[ri..]
                .iter()
                .take_while(|r| r.0 < hi)
                .map(|r| (r.0.max(lo) - lo, r.1.min(hi) - lo))
                .collect();
            if inside.is_empty() {
                continue;
            }
            if inside.len() == 1 && inside[0] == (0, hi - lo) {
                *slot = L1_DIRTY;
                continue;
            }
            let mut bits = vec![0u8; cs as usize];
            for (s, e) in inside {
                set_bits(&mut bits, s, e);
            }
            let host = alloc_bitmap_cluster(next, cs);
            *slot = host / SECTOR_SIZE;
            chunk_clusters.push((host, bits));
        }
        features.push(FeatureRecord::dirty_bitmap(DirtyBitmapFeature::new(
            nb_sectors,
            spec.id,
            gs as u32,
            l1.clone(),
        )));
        l1_tables.push(l1);
    }
    Ok(EncodedBitmaps {
        features,
        l1_tables,
        chunk_clusters,
    })
}

/// Sets bits `[s, e)` of `bits` (least significant bit first).
fn set_bits(bits: &mut [u8], s: u64, e: u64) {
    let mut i = s;
    while i < e {
        if i.is_multiple_of(8) && i + 8 <= e {
            let bytes = ((e - i) / 8) as usize;
            bits[(i / 8) as usize..(i / 8) as usize + bytes].fill(0xff);
            i += bytes as u64 * 8;
        } else {
            bits[(i / 8) as usize] |= 1 << (i % 8);
            i += 1;
        }
    }
}
