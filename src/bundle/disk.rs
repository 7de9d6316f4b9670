//! The guest's bytes through a bundle: split storages stitched by `Start`/`End`, each read
//! through its snapshot chain (a cluster comes from the newest image whose BAT has it, else
//! from its parent, down to the root; a Plain image has every byte).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::descriptor::{format_guid, ImageType};
use super::violation::BundleViolation;
use super::{Bundle, BundleError};
use crate::image::{Image, RuleMode};
use crate::raw::Sectors;
use crate::source::{FileSource, Source};

/// Where an extent's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Index into [`GuestDisk::files`].
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
}

/// A run of guest bytes with one origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Guest byte offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// How far down the snapshot chain the bytes come from: 0 is the snapshot read, 1 its
    /// parent…; for zeros (nothing allocated), the depth of the root (as `qemu-img map`).
    pub depth: usize,
    /// Where the bytes are; `None` when no image in the chain has them (they read as zeros).
    pub data: Option<Mapping>,
}

enum Kind {
    /// A raw file of this many bytes (past its end the storage reads as zeros).
    Plain { len: u64 },
    Expanding {
        cluster_size: u64,
        /// Its BAT, read a block at a time as the guest offset moves.
        table: Table,
    },
}

/// Entries of the BAT read at once (128 KiB): the only memory a layer's table takes.
const TABLE_BLOCK: u64 = 32 << 10;

/// An image's BAT, resolved a block of entries at a time: the last block read is kept, and a
/// hole of the file in the table (entries known to be zeros) is passed over unread. Memory stays
/// one block per image, whatever the number of allocated clusters; walking the guest in order
/// reads each block of the table once.
struct Table {
    header: crate::header::Header,
    /// Entries in the file (the rest read as 0).
    entries: u64,
    window: std::sync::Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// The index of `block[0]`.
    first: u64,
    block: Vec<u32>,
    /// Entries `[hole.0, hole.1)` are known to be zeros (a hole of the file).
    hole: (u64, u64),
}

/// What a table says of one guest cluster.
enum Lookup {
    /// Allocated at this host byte offset, and `run` clusters from it are stored one after
    /// another from there.
    At { offset: u64, run: u64 },
    /// Unallocated, and so is every cluster before `next` (which may be allocated).
    Zeros { next: u64 },
}

impl Table {
    fn lookup(&self, source: &dyn Source, index: u64) -> io::Result<Lookup> {
        if index >= self.entries {
            return Ok(Lookup::Zeros { next: u64::MAX });
        }
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.hole.0 <= index && index < w.hole.1 {
            return Ok(Lookup::Zeros { next: w.hole.1 });
        }
        if !(w.first <= index && index < w.first + w.block.len() as u64) {
            // Where the file holds data from this entry on: a hole before it reads as zeros.
            let (start, _) = source.next_data(BAT_OFFSET + 4 * index)?;
            let data = (start.saturating_sub(BAT_OFFSET) / 4).min(self.entries);
            if data > index {
                w.hole = (index, data);
                return Ok(Lookup::Zeros {
                    next: if data >= self.entries { u64::MAX } else { data },
                });
            }
            let first = index / TABLE_BLOCK * TABLE_BLOCK;
            let n = (self.entries - first).min(TABLE_BLOCK) as usize;
            let mut bytes = vec![0u8; n * 4];
            let got = source.read_into(BAT_OFFSET + 4 * first, &mut bytes)?;
            // A table cut short (the file shrank) reads as zeros past its end.
            bytes[got..].fill(0);
            w.block = bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            w.first = first;
        }
        let at = (index - w.first) as usize;
        let h = &self.header;
        if let Some(off) = h.bat_entry_offset(w.block[at]) {
            // The clusters stored one after another from here (within the block).
            let cs = h.cluster_size();
            let run = 1 + w.block[at + 1..]
                .iter()
                .zip(1u64..)
                .take_while(|&(&e, k)| h.bat_entry_offset(e) == Some(off + k * cs))
                .count() as u64;
            return Ok(Lookup::At { offset: off, run });
        }
        let next = w.block[at..]
            .iter()
            .position(|&e| h.bat_entry_offset(e).is_some())
            .map_or(w.first + w.block.len() as u64, |k| index + k as u64);
        // Kept as a hole: the next lookups in this run are answered without a scan.
        w.hole = (index, next);
        Ok(Lookup::Zeros {
            next: if next >= self.entries { u64::MAX } else { next },
        })
    }
}

/// Where the BAT starts in an image file.
const BAT_OFFSET: u64 = 64;

struct Layer {
    file: usize,
    kind: Kind,
}

struct Segment {
    start: u64,
    end: u64,
    /// Newest first.
    layers: Vec<Layer>,
}

/// A guest disk: a lone image, or a bundle at one snapshot.
pub struct GuestDisk {
    size: u64,
    files: Vec<PathBuf>,
    /// One per file, same index.
    sources: Vec<FileSource>,
    segments: Vec<Segment>,
}

impl std::fmt::Debug for GuestDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestDisk")
            .field("size", &self.size)
            .field("files", &self.files)
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn open_layer(path: &Path, kind: ImageType) -> Result<(FileSource, Kind), BundleError> {
    let source = FileSource::open(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = match kind {
        ImageType::Plain => Kind::Plain { len: source.size() },
        ImageType::Compressed => {
            // Reading data needs the header and BAT only; unknown features do not matter.
            let image = Image::parse_compact(&source, RuleMode::Lenient).map_err(|source| BundleError::Image {
                path: path.to_path_buf(),
                source,
            })?;
            let h = image.header();
            Kind::Expanding {
                cluster_size: h.cluster_size(),
                table: Table {
                    header: *h,
                    entries: u64::from(image.bat_entries_in_file()),
                    window: Default::default(),
                },
            }
        }
    };
    Ok((source, kind))
}

/// Whether extent `e` continues `last` (the same depth, and zeros both or the next bytes of the
/// same file).
fn joins(last: &Extent, e: &Extent) -> bool {
    last.depth == e.depth
        && match (&last.data, &e.data) {
            (None, None) => true,
            (Some(a), Some(b)) => a.file == b.file && a.offset + last.length == b.offset,
            _ => false,
        }
}

/// The stored extents of `extents` as ranges, neighbours joined.
fn data_ranges_of(extents: impl Iterator<Item = io::Result<Extent>>) -> io::Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for e in extents {
        let e = e?;
        if e.data.is_none() {
            continue;
        }
        match out.last_mut() {
            Some((s, l)) if *s + *l == e.start => *l += e.length,
            _ => out.push((e.start, e.length)),
        }
    }
    Ok(out)
}

impl GuestDisk {
    /// A lone `.hds` image as a disk of one layer.
    pub fn open_image(path: impl AsRef<Path>) -> Result<GuestDisk, BundleError> {
        let path = path.as_ref();
        let (source, kind) = open_layer(path, ImageType::Compressed)?;
        let size = {
            let image = Image::parse_without_bat(&source, RuleMode::Lenient).map_err(|source| BundleError::Image {
                path: path.to_path_buf(),
                source,
            })?;
            image.header().virtual_size()
        };
        Ok(GuestDisk {
            size,
            files: vec![path.to_path_buf()],
            sources: vec![source],
            segments: vec![Segment {
                start: 0,
                end: size,
                layers: vec![Layer { file: 0, kind }],
            }],
        })
    }

    /// A bundle folder, its descriptor, or a lone image: at `snapshot` (the top if `None`; a
    /// lone image has no snapshots).
    pub fn open(
        path: impl AsRef<Path>,
        snapshot: Option<Uuid>,
        options: super::BundleOptions,
    ) -> Result<GuestDisk, BundleError> {
        let path = path.as_ref();
        if super::is_bundle(path) {
            Bundle::open_with(path, options)?.disk(snapshot)
        } else if snapshot.is_some() {
            Err(BundleError::NotABundle {
                path: path.to_path_buf(),
            })
        } else {
            Self::open_image(path)
        }
    }

    pub(super) fn from_bundle(bundle: &Bundle, snapshot: Option<Uuid>) -> Result<GuestDisk, BundleError> {
        let chain = bundle.chain(snapshot)?;
        let d = bundle.descriptor();
        let invalid = |violation| BundleError::Invalid {
            path: bundle.descriptor_path().to_path_buf(),
            violation,
        };
        let mut files = Vec::new();
        let mut sources = Vec::new();
        let mut segments = Vec::with_capacity(d.storages.len());
        let mut order: Vec<usize> = (0..d.storages.len()).collect();
        order.sort_by_key(|&i| (d.storages[i].start, d.storages[i].end));
        for s in order {
            let storage = &d.storages[s];
            if storage.start >= storage.end {
                continue; // an empty storage holds nothing (D6)
            }
            // The first image of a GUID counts (a second one is D15).
            let mut by_guid = std::collections::HashMap::with_capacity(storage.images.len());
            for (k, g) in bundle.guids().images[s].iter().enumerate() {
                if let Some(g) = *g {
                    by_guid.entry(g).or_insert(k);
                }
            }
            let mut layers = Vec::with_capacity(chain.len());
            for g in &chain {
                let Some(&k) = by_guid.get(g) else {
                    return Err(invalid(BundleViolation::NoImageForSnapshot {
                        storage: s,
                        snapshot: format_guid(*g),
                    }));
                };
                let path = bundle.image_path(s, k)?;
                let (source, kind) = open_layer(&path, storage.images[k].kind)?;
                files.push(path);
                sources.push(source);
                let plain = matches!(kind, Kind::Plain { .. });
                layers.push(Layer {
                    file: files.len() - 1,
                    kind,
                });
                if plain {
                    break; // a raw image has every byte: nothing below it is read
                }
            }
            segments.push(Segment {
                start: Sectors(storage.start).saturating_bytes().get(),
                end: Sectors(storage.end).saturating_bytes().get(),
                layers,
            });
        }
        Ok(GuestDisk {
            size: bundle.disk_size(),
            files,
            sources,
            segments,
        })
    }

    /// The guest's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every file read, in the order of the storages and then of the chain (newest first).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The number of layers in the chain (1 for a lone image).
    pub fn chain_len(&self) -> usize {
        self.segments.iter().map(|s| s.layers.len()).max().unwrap_or(1)
    }

    /// What guest byte `pos` comes from, and for how many bytes from there the answer holds.
    fn locate(&self, pos: u64) -> io::Result<Extent> {
        let zero_depth = self.chain_len().saturating_sub(1);
        // Segments overlap only in a broken bundle (D6); the first one holding `pos` wins.
        let seg = self.segments.iter().find(|s| s.start <= pos && pos < s.end);
        let Some(seg) = seg else {
            // Outside every storage (a gap, or past the last one: D6, D7): zeros up to the next.
            let next = self
                .segments
                .iter()
                .map(|s| s.start)
                .filter(|&s| s > pos)
                .min()
                .unwrap_or(self.size)
                .min(self.size);
            return Ok(Extent {
                start: pos,
                length: next.saturating_sub(pos).max(1),
                depth: zero_depth,
                data: None,
            });
        };
        let local = pos - seg.start;
        let mut limit = seg.end.min(self.size).saturating_sub(pos).max(1);
        for (depth, layer) in seg.layers.iter().enumerate() {
            match &layer.kind {
                Kind::Plain { len } => {
                    // Past the file's end (a short file, D10) the storage reads as zeros.
                    if local >= *len {
                        return Ok(Extent {
                            start: pos,
                            length: limit,
                            depth,
                            data: None,
                        });
                    }
                    return Ok(Extent {
                        start: pos,
                        length: limit.min(len - local),
                        depth,
                        data: Some(Mapping {
                            file: layer.file,
                            offset: local,
                        }),
                    });
                }
                Kind::Expanding { cluster_size, table } => {
                    let cs = *cluster_size;
                    let index = local / cs;
                    let within = local % cs;
                    match table.lookup(&self.sources[layer.file], index)? {
                        Lookup::At { offset, run } => {
                            return Ok(Extent {
                                start: pos,
                                length: limit.min(run * cs - within),
                                depth,
                                data: Some(Mapping {
                                    file: layer.file,
                                    offset: offset + within,
                                }),
                            })
                        }
                        Lookup::Zeros { next } => {
                            if let Some(end) = next.checked_mul(cs) {
                                limit = limit.min(end - local);
                            }
                        }
                    }
                }
            }
        }
        Ok(Extent {
            start: pos,
            length: limit,
            depth: zero_depth,
            data: None,
        })
    }

    /// The allocation map: every guest byte once, adjacent extents of one origin merged (as
    /// `qemu-img map` merges them). The tables are read as the map goes; a read of one that
    /// fails ends the map there (see [`GuestDisk::try_extents`] for the error).
    pub fn extents(&self) -> Vec<Extent> {
        self.extent_iter().map_while(Result::ok).collect()
    }

    /// [`GuestDisk::extents`], or the failure to read a table.
    pub fn try_extents(&self) -> io::Result<Vec<Extent>> {
        self.extent_iter().collect()
    }

    /// The allocation map one extent at a time, as [`GuestDisk::extents`] gives it: memory
    /// stays one block of each table, whatever the number of extents.
    pub fn extent_iter(&self) -> impl Iterator<Item = io::Result<Extent>> + '_ {
        let mut pos = 0;
        let mut pending: Option<Extent> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            while pos < self.size {
                let mut e = match self.locate(pos) {
                    Ok(e) => e,
                    Err(err) => {
                        failed = true;
                        return Some(Err(err));
                    }
                };
                e.length = e.length.min(self.size - pos);
                pos += e.length;
                match &mut pending {
                    Some(last) if joins(last, &e) => last.length += e.length,
                    _ => {
                        if let Some(done) = pending.replace(e) {
                            return Some(Ok(done));
                        }
                    }
                }
            }
            pending.take().map(Ok)
        })
    }

    /// The guest byte ranges `(start, length)` that some image of the chain stores, in order,
    /// neighbours joined whatever their origin: every other byte reads as zeros without being
    /// stored anywhere. A table whose read fails ends the ranges there (see
    /// [`GuestDisk::try_data_ranges`]).
    pub fn data_ranges(&self) -> Vec<(u64, u64)> {
        data_ranges_of(self.extent_iter().map_while(Result::ok).map(Ok)).unwrap_or_default()
    }

    /// [`GuestDisk::data_ranges`], or the failure to read a table.
    pub fn try_data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        data_ranges_of(self.extent_iter())
    }

    /// Writes the guest as a raw file into the empty file `out`: its length is set first, then
    /// every stored extent is copied to its guest offset (on Linux by `copy_file_range`, in the
    /// kernel; elsewhere through a buffer), and everything else is left as holes. Stored data is
    /// copied as it is, zeros included (to leave those as holes too, read with
    /// [`GuestDisk::read_at`] and write with [`write_raw`](super::write_raw)). `progress` gets the
    /// guest offset reached. Returns the bytes copied.
    pub fn write_raw_to(&self, out: &File, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
        out.set_len(self.size)?;
        let mut sink = super::copy::Sink::new(out);
        let mut buf = Vec::new();
        let mut copied = 0;
        for e in self.extent_iter() {
            let e = e?;
            let Some(m) = e.data else { continue };
            let start = e.start;
            sink.copy_from(
                self.sources[m.file].file(),
                m.offset,
                start,
                e.length,
                &mut buf,
                &mut |done| progress(start + done),
            )?;
            copied += e.length;
        }
        Ok(copied)
    }

    /// Reads guest bytes `[offset, offset + buf.len())`; past the end of the disk, and where
    /// nothing is allocated, bytes read as zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            if pos >= self.size {
                buf[done..].fill(0);
                break;
            }
            let e = self.locate(pos)?;
            let mut len = e.length.min(self.size - pos);
            // Adjacent extents stored one after another in the same file (a run of clusters) are
            // read with one call.
            if let Some(m) = &e.data {
                while len < (buf.len() - done) as u64 && pos + len < self.size {
                    let next = self.locate(pos + len)?;
                    match next.data {
                        Some(nm) if nm.file == m.file && nm.offset == m.offset + len => {
                            len += next.length.min(self.size - pos - len);
                        }
                        _ => break,
                    }
                }
            }
            let n = (len.min((buf.len() - done) as u64)) as usize;
            let out = &mut buf[done..done + n];
            match e.data {
                None => out.fill(0),
                Some(m) => {
                    let got = self.sources[m.file].read_into(m.offset, out)?;
                    out[got..].fill(0);
                }
            }
            done += n;
        }
        Ok(())
    }
}
