//! Shared by the benches: an in-memory sparse image (only the bytes written are held; the rest
//! reads as zeros), a sink that only counts, and the images the benches measure.

#![allow(dead_code)]

use std::borrow::Cow;
use std::io::{self, Seek, SeekFrom, Write};

use parallels_image::raw::bitmap::DirtyBitmapFeature;
use parallels_image::raw::feature::FeatureRecord;
use parallels_image::Source;
use parallels_image::{BitmapSpec, ImageBuilder};

/// A sparse file in memory: the non-zero pieces written, at their offsets, and a length.
#[derive(Default)]
pub struct SparseImage {
    /// `(offset, bytes)`, sorted by offset, not overlapping.
    pieces: Vec<(u64, Vec<u8>)>,
    len: u64,
    pos: u64,
}

impl SparseImage {
    /// Sets the apparent length (as `ftruncate` would).
    pub fn set_len(&mut self, len: u64) {
        self.len = len;
    }

    /// The bytes held (what the image costs in memory).
    pub fn held(&self) -> u64 {
        self.pieces.iter().map(|p| p.1.len() as u64).sum()
    }

    /// Writes `bytes` at `offset`, replacing a piece that starts there with the same length.
    pub fn put(&mut self, offset: u64, bytes: Vec<u8>) {
        let end = offset + bytes.len() as u64;
        self.len = self.len.max(end);
        if bytes.iter().all(|&b| b == 0) {
            return;
        }
        match self.pieces.binary_search_by_key(&offset, |p| p.0) {
            Ok(i) => {
                assert_eq!(self.pieces[i].1.len(), bytes.len(), "overlapping pieces");
                self.pieces[i].1 = bytes;
            }
            Err(i) => {
                if i > 0 {
                    let prev = &self.pieces[i - 1];
                    assert!(prev.0 + prev.1.len() as u64 <= offset, "overlapping pieces");
                }
                if let Some(next) = self.pieces.get(i) {
                    assert!(end <= next.0, "overlapping pieces");
                }
                self.pieces.insert(i, (offset, bytes));
            }
        }
    }

    /// The piece that holds all of `[offset, offset + len)`, as a slice, if one does.
    fn within(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let i = self.pieces.partition_point(|p| p.0 <= offset).checked_sub(1)?;
        let (start, bytes) = &self.pieces[i];
        let rel = (offset - start) as usize;
        (rel as u64 + len <= bytes.len() as u64).then(|| &bytes[rel..rel + len as usize])
    }
}

impl Write for SparseImage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(self.pos, buf.to_vec());
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a seek from `current` in a stream of `len` bytes lands.
fn seek_target(current: u64, len: u64, pos: SeekFrom) -> io::Result<u64> {
    let target = match pos {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => current.checked_add_signed(d),
    };
    target.ok_or_else(|| io::ErrorKind::InvalidInput.into())
}

impl Seek for SparseImage {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, pos)?;
        Ok(self.pos)
    }
}

impl Source for SparseImage {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let len = offset.saturating_add(len).min(self.len).saturating_sub(offset);
        if let Some(b) = self.within(offset, len) {
            return Ok(Cow::Borrowed(b));
        }
        let mut out = vec![0u8; len as usize];
        for (start, bytes) in &self.pieces {
            let (s, e) = ((*start).max(offset), (start + bytes.len() as u64).min(offset + len));
            if s < e {
                out[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&bytes[(s - start) as usize..(e - start) as usize]);
            }
        }
        Ok(Cow::Owned(out))
    }
}

/// A `Write + Seek` sink that keeps nothing: it tracks the position and the length only.
#[derive(Default)]
pub struct NullSink {
    pos: u64,
    /// Bytes written.
    pub written: u64,
    /// Largest end of a write.
    pub len: u64,
}

impl Write for NullSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pos += buf.len() as u64;
        self.written += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for NullSink {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, pos)?;
        Ok(self.pos)
    }
}

/// A small deterministic generator (xorshift64*), so that the benches need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `1..=max`.
    pub fn between_1_and(&mut self, max: u64) -> u64 {
        1 + self.next() % max
    }
}

/// A v2 image with `entries` BAT entries of `cluster` bytes each, every other one allocated
/// (guest order = file order), as a sparse file: only the header and BAT are held in memory.
pub fn half_allocated(entries: u64, cluster: u64) -> SparseImage {
    let mut img = SparseImage::default();
    let layout = ImageBuilder::new(entries * cluster)
        .cluster_size(cluster)
        .write_to(&mut img)
        .expect("build");
    let first = layout.data_start / cluster;
    let mut bat = Vec::with_capacity(4 * entries as usize);
    for i in 0..entries {
        let e = if i % 2 == 0 { (first + i / 2) as u32 } else { 0 };
        bat.extend_from_slice(&e.to_le_bytes());
    }
    img.put(64, bat);
    img.set_len(layout.data_start + entries.div_ceil(2) * cluster);
    img
}

/// Dirty guest byte ranges for a bitmap of `granules` granules of `gran` bytes, `chunk` granules
/// per L1 entry: most chunks clean, every 16th (from 3) all dirty, every 8th a mix of runs
/// of 1 to 512 granules, dirty and clean alternating. Returns the ranges.
pub fn realistic_extents(granules: u64, gran: u64, chunk: u64, seed: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let chunks = granules.div_ceil(chunk);
    for k in 0..chunks {
        let lo = k * chunk;
        let hi = (lo + chunk).min(granules);
        if k % 16 == 3 {
            out.push((lo * gran, (hi - lo) * gran));
        } else if k % 8 == 0 {
            let mut g = lo + rng.between_1_and(512);
            while g < hi {
                let run = rng.between_1_and(512).min(hi - g);
                out.push((g * gran, run * gran));
                g += run + rng.between_1_and(512);
            }
        }
    }
    out
}

/// Bitmap spec with id `[n; 16]`.
pub fn spec(n: u8, gran: u64, extents: Vec<(u64, u64)>) -> BitmapSpec {
    BitmapSpec {
        id: [n; 16],
        granularity: gran,
        extents,
    }
}

/// Cluster size of the extension bench.
pub const EXT_CLUSTER: u64 = 1 << 20;

/// A 64 GiB disk (64 Ki BAT entries, none allocated) whose 1 MiB extension cluster is filled
/// with bitmap records: 512-byte granularity, so each L1 table has 16 entries, a mix of clean
/// and all-dirty markers (no bitmap clusters: the bench measures the extension alone).
pub fn full_extension() -> SparseImage {
    let mut img = SparseImage::default();
    full_extension_builder().write_to(&mut img).unwrap();
    img
}

/// The builder of [`full_extension`] (`examples/bench_image worst` writes it to a file).
pub fn full_extension_builder() -> ImageBuilder {
    let virtual_size = 64u64 << 30;
    let nb_sectors = virtual_size / 512;
    let l1_size = nb_sectors.div_ceil(EXT_CLUSTER * 8) as usize;
    let record = 24 + 32 + 8 * l1_size as u64;
    // Header 24 bytes and end record 24 bytes around the records.
    let count = (EXT_CLUSTER - 48) / record;
    let mut rng = Rng::new(1);
    let mut b = ImageBuilder::new(virtual_size).cluster_size(EXT_CLUSTER);
    for i in 0..count {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_le_bytes());
        id[8..].copy_from_slice(&rng.next().to_le_bytes());
        let l1 = (0..l1_size).map(|_| u64::from(rng.next().is_multiple_of(5))).collect();
        b = b.feature(FeatureRecord::dirty_bitmap(DirtyBitmapFeature::new(
            nb_sectors, id, 1, l1,
        )));
    }
    b
}

/// The common case, on the same disk: four bitmaps of 64 KiB granularity, two clean and two
/// all dirty (their L1 tables hold only the markers), and the rest of the 1 MiB cluster zeros.
pub fn four_bitmaps() -> SparseImage {
    let virtual_size = 64u64 << 30;
    let mut b = ImageBuilder::new(virtual_size).cluster_size(EXT_CLUSTER);
    for i in 0..4u8 {
        let extents = if i % 2 == 0 { vec![] } else { vec![(0, virtual_size)] };
        b = b.bitmap(BitmapSpec {
            id: [i + 1; 16],
            granularity: 64 << 10,
            extents,
        });
    }
    let mut img = SparseImage::default();
    b.write_to(&mut img).unwrap();
    img
}

/// `img` without its extension (the header's `ext_off` zeroed, same length): what the header and
/// the BAT cost on their own.
pub fn without_extension(img: &SparseImage) -> SparseImage {
    let mut bare = SparseImage::default();
    let mut header = img.read_at(0, 64).unwrap().into_owned();
    header[56..64].fill(0);
    bare.put(0, header);
    bare.set_len(img.size());
    bare
}
