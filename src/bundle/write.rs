//! Writing: an expanding image from guest data (all-zero clusters left unallocated), and whole
//! bundles (descriptor, marker, one image per snapshot and segment) from a description.

use super::pio::PositionedIo;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;
use zerocopy::IntoBytes;

use super::copy::GuestReader;
use super::descriptor::{
    format_guid, Descriptor, DiskParameters, ImageEntry, ImageType, SnapshotEntry, Snapshots, Storage,
    DEFAULT_TOP_GUID, NULL_GUID, VERSION,
};
use super::DESCRIPTOR_NAME;
use crate::builder::{BitmapSpec, GuestData, ImageBuilder};
use crate::error::{BuildError, Error, Result};
use crate::header::Variant;
use crate::outfile::{hold_folder, place_folder, release_folder};
use crate::raw::header::{RawHeader, MAGIC_V2, MAX_BAT_ENTRIES, MAX_TRACKS, VERSION as IMAGE_VERSION};
use crate::raw::{Bytes, Sectors};

/// What [`write_expanding`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStats {
    /// Guest clusters.
    pub clusters: u64,
    /// Clusters written (the others were all zeros and stay unallocated).
    pub allocated: u64,
    /// Length of the image file.
    pub file_len: u64,
}

/// Writes a v2 expanding image of `size` guest bytes into the empty file `out`, reading the
/// guest through `read(offset, buf)`. Clusters that read as all zeros are left unallocated;
/// the others are stored in guest order after the BAT. Memory: the BAT and a buffer of 256 KiB.
pub fn write_expanding(
    read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    size: u64,
    cluster_size: u64,
    out: &File,
) -> Result<WriteStats> {
    write_expanding_ranges(GuestReader::Local(read), &[(0, size)], size, cluster_size, out)
}

/// [`write_expanding`] reading only the guest byte ranges `(start, length)` of `ranges` (in
/// order, not overlapping; e.g. [`GuestDisk::data_ranges`](super::GuestDisk::data_ranges) or
/// [`file_data_ranges`](super::file_data_ranges)): the clusters they do not touch are zeros,
/// left unallocated without being read. The clusters they touch are read 256 KiB at a time (a
/// second thread reads while this one writes, with [`GuestReader::Shared`]); a cluster takes the
/// next free cluster of the file at its first non-zero 4 KiB block, only non-zero blocks are
/// written (the zeros of a stored cluster are holes of the file), blocks that land one after
/// another in the file are one write, and the header and BAT are written once at the end.
/// With [`GuestReader::RawFile`] and an output on XFS or Btrfs, those writes are copies from
/// that file by the kernel: the image's clusters share the raw file's blocks where the cluster
/// size is a multiple of the file system's block.
pub fn write_expanding_ranges(
    read: GuestReader<'_>,
    ranges: &[(u64, u64)],
    size: u64,
    cluster_size: u64,
    out: &File,
) -> Result<WriteStats> {
    let cs = cluster_size;
    let clusters = expanding_clusters(size, cs)?;
    let data_start = (64 + 4 * clusters).next_multiple_of(cs);
    let mut bat = vec![0u32; clusters as usize];
    let mut next = data_start / cs;
    let mut sink = super::copy::Sink::new(out);
    // A raw file's bytes are copied file to file (shared blocks where the file system can).
    let origin = read.origin(out);
    // The guest is read in pieces of up to CHUNK bytes that never cross a cluster boundary
    // (a cluster larger than CHUNK is several pieces), over the clusters the ranges touch.
    let step = if cs >= super::copy::CHUNK {
        super::copy::CHUNK
    } else {
        (super::copy::CHUNK / cs) * cs
    };
    let pieces = guest_pieces(ranges, size, cs, step);
    // A cluster gets the next free cluster of the file at its first non-zero 4 KiB block;
    // only non-zero blocks are written (the zeros of an allocated cluster are holes), and
    // blocks that land one after another in the file are one write.
    let buf_len = step as usize;
    // Zero blocks never straddle two clusters (a cluster of 1.5 KiB has 512-byte blocks).
    let grain = if cs.is_multiple_of(super::copy::ZERO_BLOCK) {
        super::copy::ZERO_BLOCK
    } else {
        512
    };
    // The write being gathered: (file offset, guest offset, length). Written from memory, it
    // ends with its piece; copied by the kernel from a raw source, it goes on across pieces
    // (one call for a long run of clusters, not one per piece).
    let mut pending: Option<(u64, u64, u64)> = None;
    let mut kernel = origin.is_some();
    let mut spare = Vec::new();
    super::copy::pump(pieces, buf_len, grain, read, &mut |pos, data, runs| {
        for &(at, len) in runs {
            let mut k = at;
            while k < at + len {
                let g = pos + k as u64;
                let c = (g / cs) as usize;
                if bat[c] == 0 {
                    bat[c] = u32::try_from(next).map_err(|_| {
                        Error::Build(BuildError::Unaddressable {
                            what: "cluster",
                            offset: next * cs,
                            field: "BAT entry",
                        })
                    })?;
                    next += 1;
                }
                let piece = ((cs - g % cs) as usize).min(at + len - k) as u64;
                let host = u64::from(bat[c]) * cs + g % cs;
                match &mut pending {
                    Some((h, pg, l)) if *h + *l == host && *pg + *l == g => *l += piece,
                    _ => {
                        if let Some(p) = pending.take() {
                            flush(&mut sink, origin, &mut kernel, &mut spare, p, pos, data)?;
                        }
                        pending = Some((host, g, piece));
                    }
                }
                k += piece as usize;
            }
        }
        if !kernel {
            if let Some(p) = pending.take() {
                flush(&mut sink, origin, &mut kernel, &mut spare, p, pos, data)?;
            }
        }
        Ok(())
    })?;
    if let Some(p) = pending {
        flush(&mut sink, origin, &mut kernel, &mut spare, p, 0, &[])?;
    }
    let header = expanding_header(size, cs, clusters, data_start)?;
    let mut head = Vec::with_capacity(64 + bat.len() * 4);
    head.extend_from_slice(header.as_bytes());
    head.extend(bat.iter().flat_map(|e| e.to_le_bytes()));
    out.write_all_at(&head, 0)?;
    let file_len = next * cs;
    out.set_len(file_len)?;
    let allocated = next - data_start / cs;
    Ok(WriteStats {
        clusters,
        allocated,
        file_len,
    })
}

/// The number of clusters of a disk of `size` bytes in clusters of `cs` bytes, after checking
/// that QEMU accepts the cluster size and the BAT.
fn expanding_clusters(size: u64, cs: u64) -> Result<u64> {
    let max = Sectors::from(MAX_TRACKS);
    if cs == 0 || Bytes(cs).exact_sectors().is_none_or(|s| s > max) {
        return Err(Error::Build(BuildError::ClusterSize {
            found: cs,
            max: Sectors::bytes_of_u32(MAX_TRACKS).get(),
        }));
    }
    let clusters = size.div_ceil(cs);
    if clusters > u64::from(MAX_BAT_ENTRIES) {
        return Err(Error::Build(BuildError::TooManyClusters {
            clusters,
            cluster_size: cs,
            max: MAX_BAT_ENTRIES,
        }));
    }
    Ok(clusters)
}

/// The pieces `(guest offset, length, length)` the guest is read in: up to `step` bytes, never
/// crossing a cluster boundary (a cluster larger than `step` is several pieces), over the
/// clusters the `ranges` touch.
fn guest_pieces(ranges: &[(u64, u64)], size: u64, cs: u64, step: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &(start, len) in ranges {
        let end = start.saturating_add(len).min(size);
        if start >= end {
            continue;
        }
        let (first, last) = (start / cs * cs, end.div_ceil(cs).saturating_mul(cs).min(size));
        match spans.last_mut() {
            Some((_, e)) if *e >= first => *e = (*e).max(last),
            _ => spans.push((first, last)),
        }
    }
    spans.into_iter().flat_map(move |(first, last)| {
        let mut pos = first;
        std::iter::from_fn(move || {
            if pos >= last {
                return None;
            }
            // Up to `step` bytes, ending on a step boundary of the cluster or its end.
            let within = pos % cs;
            let n = (step - within % step).min(cs - within).min(last - pos) as usize;
            let piece = (pos, n, n);
            pos += n as u64;
            Some(piece)
        })
    })
}

/// The header of an expanding image of `size` bytes in `clusters` clusters of `cs` bytes, its
/// data area at `data_start`.
fn expanding_header(size: u64, cs: u64, clusters: u64, data_start: u64) -> Result<RawHeader> {
    let sectors = Bytes(size).sectors_ceil().get();
    Ok(RawHeader {
        magic: MAGIC_V2,
        version: IMAGE_VERSION.into(),
        heads: 16.into(),
        cylinders: ((sectors / 16 / 32) as u32).into(),
        tracks: (Bytes(cs).sectors_floor().get() as u32).into(),
        bat_entries: (clusters as u32).into(),
        nb_sectors: sectors.into(),
        inuse: 0.into(),
        data_off: u32::try_from(Bytes(data_start).sectors_floor().get())
            .map_err(|_| {
                Error::Build(BuildError::Unaddressable {
                    what: "data area",
                    offset: data_start,
                    field: "data_off",
                })
            })?
            .into(),
        flags: 0.into(),
        ext_off: 0.into(),
    })
}

/// Writes the gathered run `(host, guest, len)` of [`write_expanding_ranges`]: copied by the
/// kernel from `origin` while `kernel` holds (it is cleared when the kernel refuses, and the rest
/// is read from `origin`), else from `data`, the piece at guest offset `pos` that holds the run.
fn flush(
    sink: &mut super::copy::Sink<'_>,
    origin: Option<&File>,
    kernel: &mut bool,
    spare: &mut Vec<u8>,
    (host, guest, len): (u64, u64, u64),
    pos: u64,
    data: &[u8],
) -> io::Result<()> {
    if let (Some(src), true) = (origin, *kernel) {
        match sink.copy_in_kernel(src, guest, host, len, &mut |_| {})? {
            super::copy::KernelCopy::Done(_) => return Ok(()),
            super::copy::KernelCopy::Refused(done) => {
                *kernel = false;
                // The run may have begun in an earlier piece: its bytes are read again.
                return sink.copy_from(src, guest + done, host + done, len - done, spare, &mut |_| {});
            }
        }
    }
    let start = guest.checked_sub(pos).and_then(|s| usize::try_from(s).ok());
    match start.and_then(|s| data.get(s..s + len as usize)) {
        Some(bytes) => sink.write_at(bytes, host),
        None => Err(io::Error::other("a run of guest data outside the piece read")),
    }
}

/// One snapshot of a bundle to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSpec {
    /// Its GUID.
    pub guid: Uuid,
    /// Its parent, `None` for the root.
    pub parent: Option<Uuid>,
    /// Guest data this snapshot writes (over its parent's), at guest offsets.
    pub data: Vec<(u64, GuestData)>,
    /// Dirty bitmaps of its images, in guest offsets (each segment gets its part).
    pub bitmaps: Vec<BitmapSpec>,
}

/// Builds a bundle folder: `NAME.hdd/` with its descriptor, marker and images.
#[derive(Clone, Debug)]
pub struct BundleBuilder {
    size: u64,
    cluster_size: u64,
    splits: Vec<u64>,
    plain_root: bool,
    snapshots: Vec<SnapshotSpec>,
    top: Option<Uuid>,
    inuse: u32,
}

impl BundleBuilder {
    /// A bundle of `size` bytes (a multiple of 512) with 1 MiB clusters and one snapshot, the
    /// predefined top GUID, holding no data.
    pub fn new(size: u64) -> Self {
        BundleBuilder {
            size,
            cluster_size: 1 << 20,
            splits: Vec::new(),
            plain_root: false,
            snapshots: Vec::new(),
            top: None,
            inuse: 0,
        }
    }

    /// Cluster size in bytes (the storages' `Blocksize`).
    pub fn cluster_size(mut self, bytes: u64) -> Self {
        self.cluster_size = bytes;
        self
    }

    /// Splits the disk into segments at these guest byte offsets (multiples of 512).
    pub fn split_at(mut self, offsets: Vec<u64>) -> Self {
        self.splits = offsets;
        self
    }

    /// Stores the root snapshot as Plain (raw) files rather than expanding images.
    pub fn plain_root(mut self, yes: bool) -> Self {
        self.plain_root = yes;
        self
    }

    /// Adds a snapshot (the first one given without a parent is the root).
    pub fn snapshot(mut self, spec: SnapshotSpec) -> Self {
        self.snapshots.push(spec);
        self
    }

    /// The top snapshot (default: the last one added). Written as `TopGUID` unless it is the
    /// predefined top GUID.
    pub fn top(mut self, guid: Uuid) -> Self {
        self.top = Some(guid);
        self
    }

    /// The images' header `inuse` value (0 by default, as QEMU writes; ploop writes "v2.1").
    pub fn inuse(mut self, inuse: u32) -> Self {
        self.inuse = inuse;
        self
    }

    fn snapshots(&self) -> Vec<SnapshotSpec> {
        if self.snapshots.is_empty() {
            vec![SnapshotSpec {
                guid: DEFAULT_TOP_GUID,
                parent: None,
                data: Vec::new(),
                bitmaps: Vec::new(),
            }]
        } else {
            self.snapshots.clone()
        }
    }

    /// The storages as byte ranges.
    fn segments(&self) -> Result<Vec<(u64, u64)>> {
        if self.size == 0 || !Bytes(self.size).is_sector_aligned() {
            return Err(Error::Build(BuildError::BundleSize { size: self.size }));
        }
        let mut cuts = self.splits.clone();
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts {
            if c == 0 || c >= self.size || !Bytes(c).is_sector_aligned() {
                return Err(Error::Build(BuildError::SplitOffset {
                    offset: c,
                    size: self.size,
                }));
            }
            out.push((start, c));
            start = c;
        }
        out.push((start, self.size));
        Ok(out)
    }

    /// The descriptor this builder writes for a folder named `name` (`NAME.hdd`).
    pub fn descriptor(&self, name: &str) -> Result<Descriptor> {
        let snaps = self.snapshots();
        let sectors = Bytes(self.size).sectors_floor().get();
        let (cylinders, heads, per_track) = if sectors.is_multiple_of(512) {
            (sectors / 512, 16, 32)
        } else {
            (sectors, 1, 1)
        };
        let top = self.top.unwrap_or(snaps.last().expect("at least one snapshot").guid);
        let storages = self
            .segments()?
            .iter()
            .enumerate()
            .map(|(k, &(s, e))| Storage {
                start: Bytes(s).sectors_floor().get(),
                end: Bytes(e).sectors_floor().get(),
                blocksize: Bytes(self.cluster_size).sectors_floor().get(),
                images: snaps
                    .iter()
                    .map(|sp| ImageEntry {
                        guid: format_guid(sp.guid),
                        kind: if self.plain_root && sp.parent.is_none() {
                            ImageType::Plain
                        } else {
                            ImageType::Compressed
                        },
                        file: image_file_name(name, k, sp.guid),
                        extra: Vec::new(),
                    })
                    .collect(),
                extra: Vec::new(),
            })
            .collect();
        Ok(Descriptor {
            version: Some(VERSION.to_string()),
            attributes: Vec::new(),
            disk: DiskParameters {
                disk_size: sectors,
                cylinders,
                heads,
                sectors: per_track,
                padding: Some(0),
                physical_sector_size: None,
                logic_sector_size: None,
                extra: Vec::new(),
            },
            storages,
            storage_extra: Vec::new(),
            snapshots: Snapshots {
                top_guid: (top != DEFAULT_TOP_GUID).then(|| format_guid(top)),
                shots: snaps
                    .iter()
                    .map(|sp| SnapshotEntry {
                        guid: format_guid(sp.guid),
                        parent: format_guid(sp.parent.unwrap_or(NULL_GUID)),
                        extra: Vec::new(),
                    })
                    .collect(),
                extra: Vec::new(),
            },
            extra: Vec::new(),
        })
    }

    /// Writes the bundle to the folder `dir` (named `NAME.hdd` by convention): built in a
    /// temporary folder beside it and renamed into place. An existing `dir` is replaced only
    /// with `overwrite`.
    pub fn create(&self, dir: &Path, overwrite: bool) -> Result<Descriptor> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Build(BuildError::NotAFolder {
                    path: dir.to_path_buf(),
                })
            })?;
        let descriptor = self.descriptor(&name)?;
        write_bundle_dir(dir, overwrite, |tmp| {
            self.write_files(tmp, &name, &descriptor)?;
            Ok(())
        })?;
        Ok(descriptor)
    }

    fn write_files(&self, tmp: &Path, name: &str, descriptor: &Descriptor) -> Result<()> {
        let snaps = self.snapshots();
        for (k, &(s, e)) in self.segments()?.iter().enumerate() {
            for (sp, im) in snaps.iter().zip(&descriptor.storages[k].images) {
                let path = tmp.join(&im.file);
                let data = clip_data(&sp.data, s, e);
                if im.kind == ImageType::Plain {
                    let f = File::create(&path)?;
                    for (off, d) in &data {
                        match d {
                            GuestData::Bytes(b) => f.write_all_at(b, *off)?,
                            GuestData::Fill { len, byte } => {
                                let chunk = vec![*byte; (*len).min(1 << 20) as usize];
                                let mut done = 0;
                                while done < *len {
                                    let n = (len - done).min(chunk.len() as u64) as usize;
                                    if *byte != 0 {
                                        f.write_all_at(&chunk[..n], off + done)?;
                                    }
                                    done += n as u64;
                                }
                            }
                        }
                    }
                    f.set_len(e - s)?;
                    continue;
                }
                let mut b = ImageBuilder::new(e - s)
                    .variant(Variant::V2)
                    .cluster_size(self.cluster_size)
                    .inuse(self.inuse);
                for (off, d) in data {
                    b = b.data(off, d);
                }
                for bm in &sp.bitmaps {
                    let extents = bm
                        .extents
                        .iter()
                        .filter_map(|&(o, l)| {
                            let (a, z) = (o.max(s), o.saturating_add(l).min(e));
                            (a < z).then(|| (a - s, z - a))
                        })
                        .collect();
                    b = b.bitmap(BitmapSpec {
                        id: bm.id,
                        granularity: bm.granularity,
                        extents,
                    });
                }
                let mut f = File::create(&path)?;
                b.write_to(&mut f)?;
            }
        }
        fs::write(tmp.join(DESCRIPTOR_NAME), descriptor.to_xml())?;
        File::create(tmp.join(name))?;
        Ok(())
    }
}

impl BundleBuilder {
    /// Writes a bundle of one snapshot (the predefined top GUID), each segment an expanding
    /// image of the guest bytes `read(offset, buf)` gives, all-zero clusters unallocated; the
    /// snapshots and data given to the builder are ignored. Built beside `dir` and renamed.
    pub fn create_from(
        &self,
        dir: &Path,
        overwrite: bool,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<Descriptor> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::Build(BuildError::NotAFolder {
                    path: dir.to_path_buf(),
                })
            })?;
        let mut one = self.clone();
        one.snapshots.clear();
        one.plain_root = false;
        let descriptor = one.descriptor(&name)?;
        let segments = one.segments()?;
        write_bundle_dir(dir, overwrite, |tmp| {
            for (k, &(s, e)) in segments.iter().enumerate() {
                let f = File::create(tmp.join(&descriptor.storages[k].images[0].file))?;
                write_expanding(&mut |off, buf| read(s + off, buf), e - s, self.cluster_size, &f)?;
                f.sync_all()?;
            }
            fs::write(tmp.join(DESCRIPTOR_NAME), descriptor.to_xml())?;
            File::create(tmp.join(&name))?;
            Ok(())
        })?;
        Ok(descriptor)
    }
}

/// The usual storage file name: `NAME.hdd.SEGMENT.{GUID}.hds`.
pub fn image_file_name(name: &str, segment: usize, guid: Uuid) -> String {
    format!("{name}.{segment}.{}.hds", format_guid(guid))
}

/// The parts of `data` inside guest bytes `[s, e)`, shifted to start at 0.
fn clip_data(data: &[(u64, GuestData)], s: u64, e: u64) -> Vec<(u64, GuestData)> {
    let mut out = Vec::new();
    for (off, d) in data {
        let len = match d {
            GuestData::Bytes(b) => b.len() as u64,
            GuestData::Fill { len, .. } => *len,
        };
        let (a, z) = ((*off).max(s), off.saturating_add(len).min(e));
        if a >= z {
            continue;
        }
        let piece = match d {
            GuestData::Bytes(b) => GuestData::Bytes(b[(a - off) as usize..(z - off) as usize].to_vec()),
            GuestData::Fill { byte, .. } => GuestData::Fill {
                len: z - a,
                byte: *byte,
            },
        };
        out.push((a - s, piece));
    }
    out
}

/// Builds a folder through `fill` in a temporary folder beside `dir`, then renames it to
/// `dir`. Without `overwrite`, an existing `dir` is refused (`AlreadyExists`); with it, the old
/// folder is moved aside, replaced, then removed.
pub fn write_bundle_dir(dir: &Path, overwrite: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let exists = fs::symlink_metadata(dir).is_ok();
    if exists && !overwrite {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", dir.display()),
        )));
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".prlimg-")
        .suffix(".tmp")
        .tempdir_in(&parent)?;
    // Held until renamed: a signal handler calling `abandon_outputs` removes it.
    let tmp = tmp.keep();
    if let Err(e) = hold_folder(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let filled = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        }
        fill(&tmp)
    })();
    if let Err(e) = filled {
        release_folder(&tmp);
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let placed = place_folder(&tmp, dir, || {
        if exists {
            let old = tempfile::Builder::new()
                .prefix(".prlimg-old-")
                .tempdir_in(&parent)?
                .keep();
            fs::remove_dir(&old)?;
            fs::rename(dir, &old)?;
            if let Err(e) = fs::rename(&tmp, dir) {
                let _ = fs::rename(&old, dir);
                return Err(e.into());
            }
            if old.is_dir() {
                fs::remove_dir_all(&old)?;
            } else {
                fs::remove_file(&old)?;
            }
            Ok(())
        } else {
            Ok(rename_noclobber(&tmp, dir)?)
        }
    });
    if placed.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    placed
}

/// Renames `from` to `to` unless `to` appeared meanwhile (a folder is renamed over an empty
/// folder by `rename(2)`, so check first; the window is as small as the standard library
/// allows).
fn rename_noclobber(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        ));
    }
    fs::rename(from, to)
}
