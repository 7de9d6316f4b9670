//! The guest's bytes, from wherever they are: a Parallels image, a bundle (its folder or its
//! `DiskDescriptor.xml`, at its top or at a snapshot) or a raw file; copied into a raw file, an
//! expanding image or a new bundle (`prlimg convert`), or mapped as `qemu-img map` prints it
//! (`prlimg map`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::bundle::{
    file_data_ranges, is_bundle, read_some, write_expanding_ranges, write_raw, BundleBuilder, BundleError,
    BundleOptions, Extent, GuestDisk, GuestReader, Mapping,
};
use crate::error::{Error, Result};
use crate::outfile::write_file_atomically;

/// What a source holds (`prlimg convert -f`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// A bundle if the path is a folder or XML, a Parallels image if it has the magic, else raw.
    Auto,
    /// A raw disk image: the file is the guest's bytes (past its end, zeros).
    Raw,
    /// A Parallels image or bundle.
    Parallels,
}

/// What a guest's bytes are written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A raw file, sparse: holes where nothing is stored; with `detect_zeros`, also where
    /// stored blocks of 4 KiB are zeros (a raw source is always read so).
    Raw {
        /// Read every stored byte and leave blocks of zeros as holes.
        detect_zeros: bool,
    },
    /// An expanding Parallels image (`.hds`), all-zero clusters left unallocated.
    Parallels {
        /// Its cluster size in bytes.
        cluster_size: u64,
    },
    /// A bundle folder (`NAME.hdd`) holding one expanding image.
    Bundle {
        /// Its image's cluster size in bytes.
        cluster_size: u64,
    },
}

/// Why a guest could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Reading the source's magic or metadata failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The source.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// A snapshot was asked of a raw file.
    #[error("{}: a raw file has no snapshots (--snapshot needs a bundle)", path.display())]
    RawSnapshot {
        /// The source.
        path: PathBuf,
    },
    /// The image or bundle could not be opened.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// The guest's bytes, from wherever they are.
pub enum Guest {
    /// A Parallels image or a bundle's snapshot chain.
    Disk(GuestDisk),
    /// A raw file.
    Raw {
        /// The file.
        file: File,
        /// Its length: the guest's size.
        size: u64,
    },
}

fn has_parallels_magic(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 16];
    let n = read_some(&File::open(path)?, &mut magic, 0)?;
    Ok(n == 16 && (&magic == b"WithoutFreeSpace" || &magic == b"WithouFreSpacExt"))
}

impl Guest {
    /// Opens `source` as a guest disk: at `snapshot` for a bundle (else its top).
    pub fn open(
        source: &Path,
        format: SourceFormat,
        snapshot: Option<Uuid>,
        options: BundleOptions,
    ) -> std::result::Result<Guest, GuestError> {
        let io = |source_error| GuestError::Io {
            path: source.to_path_buf(),
            source: source_error,
        };
        let raw = match format {
            SourceFormat::Raw => true,
            SourceFormat::Parallels => false,
            SourceFormat::Auto => !is_bundle(source) && !has_parallels_magic(source).map_err(io)?,
        };
        if !raw {
            return Ok(Guest::Disk(GuestDisk::open(source, snapshot, options)?));
        }
        if snapshot.is_some() {
            return Err(GuestError::RawSnapshot {
                path: source.to_path_buf(),
            });
        }
        let file = File::open(source).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(Guest::Raw { file, size })
    }

    /// The guest's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Guest::Disk(d) => d.size(),
            Guest::Raw { size, .. } => *size,
        }
    }

    /// Fills `buf` with the guest's bytes at `offset` (zeros past a raw file's end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Guest::Disk(d) => d.read_at(offset, buf),
            Guest::Raw { file, size } => {
                let n = (size.saturating_sub(offset)).min(buf.len() as u64) as usize;
                if read_some(file, &mut buf[..n], offset)? < n {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf[n..].fill(0);
                Ok(())
            }
        }
    }

    /// Guest ranges that may hold data (the rest is known zeros): what the chain stores, or a
    /// raw file's data (not its holes).
    pub fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        match self {
            Guest::Disk(d) => d.try_data_ranges(),
            Guest::Raw { file, .. } => file_data_ranges(file),
        }
    }

    /// How the writers read the guest: a raw file as itself (its bytes are then copied file to
    /// file, shared where the file system can), a disk through `read`, on a second thread.
    fn reader<'r>(
        &'r self,
        read: &'r mut (dyn FnMut(u64, &mut [u8]) -> io::Result<()> + Send),
        progress: &'r mut (dyn FnMut(u64) + Send),
    ) -> GuestReader<'r> {
        match self {
            Guest::Raw { file, .. } => GuestReader::RawFile(file, progress),
            Guest::Disk(_) => GuestReader::Shared(read),
        }
    }

    /// Writes the guest's bytes to `out` as `target` (beside its name, then renamed; an existing
    /// `out` is replaced only with `force`). `ranges` are [`Guest::data_ranges`]; `progress` is
    /// told the guest offset reached.
    pub fn write(
        &self,
        target: Target,
        ranges: &[(u64, u64)],
        out: &Path,
        force: bool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let size = self.size();
        let mut read = |off: u64, buf: &mut [u8]| {
            progress(off);
            self.read_at(off, buf)
        };
        let mut moved = |off: u64| progress(off);
        match target {
            Target::Raw { detect_zeros } => write_file_atomically(out, force, |f| match self {
                Guest::Disk(d) if !detect_zeros => d
                    .write_raw_to(f, &mut |pos| progress(pos))
                    .map(|_| ())
                    .map_err(Error::Io),
                _ => write_raw(self.reader(&mut read, &mut moved), ranges, size, f).map(|_| ()),
            }),
            Target::Parallels { cluster_size } => write_file_atomically(out, force, |f| {
                write_expanding_ranges(self.reader(&mut read, &mut moved), ranges, size, cluster_size, f).map(|_| ())
            }),
            Target::Bundle { cluster_size } => BundleBuilder::new(size)
                .cluster_size(cluster_size)
                .create_from(out, force, &mut read)
                .map(|_| ()),
        }
    }
}

/// A raw file's extents: its data `ranges` map to themselves (file 0), the rest reads as zeros.
pub fn raw_extents(size: u64, ranges: &[(u64, u64)]) -> Vec<Extent> {
    let mut extents = Vec::new();
    let mut at = 0;
    let zeros = |start: u64, end: u64| Extent {
        start,
        length: end - start,
        depth: 0,
        data: None,
    };
    for &(start, len) in ranges {
        let (start, end) = (start.min(size), start.saturating_add(len).min(size));
        if start > at {
            extents.push(zeros(at, start));
        }
        if end > start {
            extents.push(Extent {
                start,
                length: end - start,
                depth: 0,
                data: Some(Mapping { file: 0, offset: start }),
            });
        }
        at = at.max(end);
    }
    if size > at {
        extents.push(zeros(at, size));
    }
    extents
}

/// `qemu-img map --output json`, byte for byte: one object per line, keys in its order,
/// `offset` only for data.
pub fn write_map_json(extents: &[Extent], w: &mut dyn Write) -> io::Result<()> {
    write_map_json_from(extents.iter().cloned().map(Ok), w)
}

/// [`write_map_json`] of extents as they come (e.g. [`GuestDisk::extent_iter`]): memory stays
/// the same whatever their number; the first error ends the output and is returned.
pub fn write_map_json_from(extents: impl Iterator<Item = io::Result<Extent>>, w: &mut dyn Write) -> io::Result<()> {
    w.write_all(b"[")?;
    for (i, e) in extents.enumerate() {
        let e = e?;
        if i > 0 {
            w.write_all(b",\n")?;
        }
        let data = e.data.is_some();
        write!(
            w,
            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {data}, \"zero\": {}, \"data\": {data}, \"compressed\": false",
            e.start, e.length, e.depth, !data
        )?;
        if let Some(m) = &e.data {
            write!(w, ", \"offset\": {}", m.offset)?;
        }
        w.write_all(b"}")?;
    }
    w.write_all(b"]\n")
}

/// Why a map could not be printed: its source could not be read, or its output not written.
#[derive(Debug)]
pub enum MapOutputError {
    /// Reading the source (an image's table) failed; the output ends where it failed.
    Read(io::Error),
    /// Writing or flushing the output failed.
    Write(io::Error),
}

/// Prints the map of extents as they come ([`write_map_json_from`] when `json`, else
/// [`write_map_human_from`]) and flushes `w`, telling a failure to read the source from one to
/// write `w`.
pub fn write_map(
    files: &[PathBuf],
    extents: impl Iterator<Item = io::Result<Extent>>,
    json: bool,
    w: &mut dyn Write,
) -> Result<(), MapOutputError> {
    let mut read_error = None;
    let extents = extents.map_while(|e| e.map_err(|e| read_error = Some(e)).ok().map(Ok));
    let written = if json {
        write_map_json_from(extents, w)
    } else {
        write_map_human_from(files, extents, w)
    };
    let written = written.and_then(|()| w.flush());
    match read_error {
        Some(e) => Err(MapOutputError::Read(e)),
        None => written.map_err(MapOutputError::Write),
    }
}

/// `qemu-img map`'s table: only extents with data, with the file (of `files`) holding them.
pub fn write_map_human(files: &[PathBuf], extents: &[Extent], w: &mut dyn Write) -> io::Result<()> {
    write_map_human_from(files, extents.iter().cloned().map(Ok), w)
}

/// [`write_map_human`] of extents as they come, as [`write_map_json_from`].
pub fn write_map_human_from(
    files: &[PathBuf],
    extents: impl Iterator<Item = io::Result<Extent>>,
    w: &mut dyn Write,
) -> io::Result<()> {
    let hex = |v: u64| if v == 0 { "0".into() } else { format!("{v:#x}") };
    writeln!(w, "{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to")?;
    for e in extents {
        let e = e?;
        if let Some(m) = &e.data {
            let file = files
                .get(m.file)
                .map_or_else(|| "?".into(), |f| f.display().to_string());
            writeln!(
                w,
                "{:<16}{:<16}{:<16}{file}",
                hex(e.start),
                hex(e.length),
                hex(m.offset)
            )?;
        }
    }
    Ok(())
}

/// Copies `len` bytes of `from` to the empty file `to`, leaving all-zero blocks (of 64 KiB) as
/// holes, so that a sparse file stays sparse; `progress` is told the offset reached.
pub fn copy_sparse(from: &File, to: &File, len: u64, progress: &dyn Fn(u64)) -> io::Result<()> {
    const BLOCK: usize = 64 << 10;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(BLOCK as u64) as usize;
        let piece = &mut buf[..n];
        if read_some(from, piece, pos)? < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        if piece.iter().any(|&b| b != 0) {
            write_all_at(to, piece, pos)?;
        }
        pos += n as u64;
        progress(pos);
    }
    to.set_len(len)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl Fn(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_raw_files_extents_are_its_data_ranges_and_holes_clipped_to_its_size() {
        let mib = 1u64 << 20;
        let extents = raw_extents(10 * mib, &[(mib, 65536), (9 * mib, 4 * mib)]);
        let seen: Vec<_> = extents
            .iter()
            .map(|e| (e.start, e.length, e.depth, e.data.as_ref().map(|m| (m.file, m.offset))))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, mib, 0, None),
                (mib, 65536, 0, Some((0, mib))),
                (mib + 65536, 8 * mib - 65536, 0, None),
                (9 * mib, mib, 0, Some((0, 9 * mib))),
            ]
        );
        assert_eq!(raw_extents(0, &[]).len(), 0);
    }

    #[test]
    fn a_sparse_copy_has_the_same_bytes_and_tells_each_block_reached() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 300 << 10];
        bytes[70_000] = 1;
        bytes[(300 << 10) - 1] = 2;
        std::fs::write(dir.path().join("from"), &bytes).unwrap();
        let from = File::open(dir.path().join("from")).unwrap();
        let to = File::create(dir.path().join("to")).unwrap();
        let reached = std::sync::Mutex::new(Vec::new());
        copy_sparse(&from, &to, bytes.len() as u64, &|p| reached.lock().unwrap().push(p)).unwrap();
        assert_eq!(std::fs::read(dir.path().join("to")).unwrap(), bytes);
        let blocks: Vec<u64> = (1..=5).map(|i| (i * 65536).min(300 << 10)).collect();
        assert_eq!(reached.into_inner().unwrap(), blocks);
    }

    #[test]
    fn maps_print_as_qemu_img_map_prints_them() {
        let extents = raw_extents(3 << 20, &[(1 << 20, 1 << 20)]);
        assert_eq!(
            text(|w| write_map_json(&extents, w)),
            "[{ \"start\": 0, \"length\": 1048576, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false},\n\
             { \"start\": 1048576, \"length\": 1048576, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 1048576},\n\
             { \"start\": 2097152, \"length\": 1048576, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false}]\n"
        );
        assert_eq!(
            text(|w| write_map_human(&[PathBuf::from("disk.raw")], &extents, w)),
            "Offset          Length          Mapped to       File\n\
             0x100000        0x100000        0x100000        disk.raw\n"
        );
        assert_eq!(text(|w| write_map_json(&[], w)), "[]\n");
    }
}
