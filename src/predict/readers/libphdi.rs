//! libyal's libphdi 20260902 (PyPI `libphdi-python`, module `pyphdi`), modelled from its C
//! source and from runs of the real library (`scripts/readers/libphdi_driver.py`).
//!
//! What it does, in order (`spec/readers.md` has a reproducer for each):
//! 1. Reads the descriptor; refuses a `Padding` other than 0, a `Blocksize` other than 2048, a
//!    child of `StorageData` other than `Storage` and a child of `Snapshots` other than `Shot`
//!    (so every descriptor with a `TopGUID`). The media size is `Disk_size` × 512.
//! 2. Opens every image's file in the descriptor's folder, by the `File`'s last path component
//!    cut to one byte less than the part before it (`../x.hds` opens `x`).
//!    Each image's slot in its file pool is its index inside its storage, so a second storage
//!    collides with the first ("value already set"): no split disk opens.
//! 3. The disk's type is the type of the first image; an image of the other type is refused.
//! 4. The top is the first `Shot`, whatever `TopGUID` says; parents are found by GUID (a missing
//!    parent ends the chain). A cycle of parents recurses without end on a block no image of the
//!    cycle holds: the process dies (SIGSEGV).
//! 5. Reading: only the v1 magic `WithoutFreeSpace` is accepted (at the first read of an
//!    image); a cluster not in the BAT comes from the parent, else zeros.
//!
//! The message kept is the cause libyal puts first in its chain (`function: text`, without the
//! final period), the one after pyphdi's own.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{classify, read_all, Failure, Input, Opened, ReaderPrediction, ReaderRun, Truth};
use crate::raw::Sectors;

/// The version modelled.
pub const LIBPHDI_VERSION: &str = "20260902";

const F_PARAMS: &str = "libphdi_disk_descriptor_xml_file_get_disk_parameters";
const F_STORAGE: &str = "libphdi_disk_descriptor_xml_file_get_storage_data";
const F_SNAPSHOTS: &str = "libphdi_disk_descriptor_xml_file_get_snapshots";

/// What libphdi does with the disk at `path` (a bundle or a lone image), compared with the
/// guest's bytes.
pub fn predict_libphdi(path: &Path) -> ReaderPrediction {
    predict_libphdi_with(path, Truth::of(path).as_ref(), super::READ_SIZE)
}

/// [`predict_libphdi`] with the guest's bytes already read, and a read size.
pub fn predict_libphdi_with(path: &Path, truth: Option<&Truth>, read_size: u64) -> ReaderPrediction {
    classify(&run(path, read_size), truth, read_size)
}

fn refuse(function: &str, text: impl std::fmt::Display) -> Failure {
    Failure::Refuses(format!("{function}: {text}"))
}

struct Image {
    guid: Option<[u8; 16]>,
    kind: Kind,
    file: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Compressed,
    Unknown,
}

struct Storage {
    start: u64,
    end: u64,
    images: Vec<Image>,
}

struct Shot {
    guid: Option<[u8; 16]>,
    parent: Option<[u8; 16]>,
}

fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    crate::bundle::parse_guid_loose(text.trim()).map(|u| *u.as_bytes())
}

fn number(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
        .map(|c| c.text().unwrap_or(""))
}

/// A v1 header as libphdi keeps it: (block size in bytes, unused, the BAT), or its refusal.
type Header = Result<(u64, u64, Vec<u32>), Failure>;

/// A storage image opened for reading: its header read lazily, at the first read.
struct Layer {
    file: File,
    /// Its slot in libphdi's file pool (its index inside its storage).
    entry: usize,
    header: Option<Header>,
}

impl Layer {
    /// (block size, data offset unused, BAT) or the refusal.
    fn header(&mut self) -> Result<&(u64, u64, Vec<u32>), Failure> {
        if self.header.is_none() {
            self.header = Some(read_header(&self.file, self.entry));
        }
        match self.header.as_ref().unwrap() {
            Ok(h) => Ok(h),
            Err(f) => Err(f.clone()),
        }
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    crate::bundle::read_some(file, buf, offset)
}

fn read_header(file: &File, entry: usize) -> Header {
    const F_HEADER: &str = "libphdi_sparse_image_header_read_data";
    const F_BAT: &str = "libphdi_storage_image_read_block_allocation_table";
    let mut head = [0u8; 64];
    let n = read_exact_at(file, &mut head, 0).map_err(|e| refuse("libbfio_file_io_handle_read_buffer", e))?;
    if n < 64 {
        return Err(refuse(
            "libphdi_sparse_image_header_read_file_io_handle",
            "unable to read file header data",
        ));
    }
    if &head[..16] != b"WithoutFreeSpace" {
        return Err(refuse(F_HEADER, "unsupported signature"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap());
    let version = u32_at(16);
    if version != 2 {
        return Err(refuse(F_HEADER, format!("unsupported format version: {version}")));
    }
    let tracks = u64::from(u32_at(28));
    if tracks == 0 {
        return Err(refuse(F_HEADER, "invalid block size value out of bounds"));
    }
    let entries = u64::from(u32_at(32));
    if entries == 0 || entries > (128 << 20) / 4 {
        return Err(refuse(
            F_BAT,
            "invalid storage image - invalid sparse image header value - number of allocation table entries value out of bounds",
        ));
    }
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < 64 + entries * 4 {
        return Err(refuse(
            F_BAT,
            format!("unable to read block allocation table data from file IO pool entry: {entry}"),
        ));
    }
    let mut raw = vec![0u8; entries as usize * 4];
    read_exact_at(file, &mut raw, 64).map_err(|e| refuse("libbfio_file_io_handle_read_buffer", e))?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // Each allocated entry goes into a tree that covers the header's sectors only.
    let sectors = u64::from_le_bytes(head[36..44].try_into().unwrap());
    let block = Sectors(tracks).saturating_bytes().get();
    if bat
        .iter()
        .enumerate()
        .any(|(i, &e)| e != 0 && (i as u64).saturating_mul(block) >= Sectors(sectors).saturating_bytes().get())
    {
        return Err(refuse(
            "libphdi_block_tree_node_get_leaf_value_at_offset",
            "invalid offset value out of bounds",
        ));
    }
    Ok((block, 0, bat))
}

struct Model {
    shots: Vec<Shot>,
    /// Per shot: its parent's index.
    parents: Vec<Option<usize>>,
    /// Per shot: its image in the (single) storage: a file index or plain.
    layer_of: Vec<Option<(usize, Kind)>>,
    layers: Vec<Layer>,
    storage_start: u64,
}

fn run(path: &Path, read_size: u64) -> ReaderRun {
    let mut out = ReaderRun::default();
    let opened = Opened::of(&Input::of(path));
    let model = match open(&opened, &mut out) {
        Ok(m) => m,
        Err(f) => {
            out.failure = Some(f);
            return out;
        }
    };
    let Some(mut model) = model else { return out };
    let size = out.media_size.unwrap_or(0);
    let top = if model.shots.is_empty() { None } else { Some(0) };
    read_all(size, read_size, &mut out, |offset, len| {
        let Some(top) = top else {
            return Err(refuse(
                "libphdi_internal_handle_read_buffer_from_file_io_pool",
                "invalid handle - missing current snapshot values",
            ));
        };
        let mut buf = Vec::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let chunk = model.read_block(top, at, offset + len - at)?;
            if chunk.is_empty() {
                // Its read loop asks again at the same offset, for ever.
                return Err(Failure::Hangs(format!(
                    "a read at offset {at} returns no bytes (past the end of a file) and is retried without end"
                )));
            }
            at += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    });
    out
}

impl Model {
    /// One block's worth (at most `want` bytes) at `at`, from `shot` or the first ancestor that
    /// holds it; a cycle of parents that holds it nowhere recurses until the stack overflows.
    fn read_block(&mut self, shot: usize, at: u64, want: u64) -> Result<Vec<u8>, Failure> {
        let inner = at - self.storage_start;
        let (mut shot, mut want, mut steps) = (shot, want, 0usize);
        loop {
            let Some((file, kind)) = self.layer_of[shot] else {
                return Ok(vec![0; want as usize]);
            };
            if kind == Kind::Plain {
                let mut buf = vec![0u8; want as usize];
                let n = read_exact_at(&self.layers[file].file, &mut buf, inner)
                    .map_err(|e| refuse("libbfio_file_io_handle_read_buffer", e))?;
                buf.truncate(n);
                return Ok(buf);
            }
            let (block, _, bat) = self.layers[file].header()?;
            let block = *block;
            if block == 0 {
                return Err(refuse(
                    "libphdi_storage_image_get_block_descriptor_at_offset",
                    "invalid block size",
                ));
            }
            let index = (inner / block) as usize;
            let within = inner % block;
            want = (block - within).min(want);
            let entry = bat.get(index).copied().unwrap_or(0);
            if entry != 0 {
                let mut buf = vec![0u8; want as usize];
                let got = read_exact_at(
                    &self.layers[file].file,
                    &mut buf,
                    Sectors::bytes_of_u32(entry).get() + within,
                )
                .map_err(|e| refuse("libbfio_file_io_handle_read_buffer", e))?;
                buf.truncate(got);
                return Ok(buf);
            }
            match self.parents[shot] {
                Some(p) => {
                    steps += 1;
                    if steps > self.shots.len() {
                        return Err(Failure::Crashes("SIGSEGV".into()));
                    }
                    shot = p;
                }
                None => return Ok(vec![0; want as usize]),
            }
        }
    }
}

/// Opens as libphdi opens: `Ok(None)` never happens (kept for symmetry with a reader that
/// stops after the size).
fn open(opened: &Opened, out: &mut ReaderRun) -> Result<Option<Model>, Failure> {
    let text = descriptor_text(opened)?;
    let doc = roxmltree::Document::parse(text)
        .map_err(|_| refuse("libphdi_disk_descriptor_xml_file_read_data", "unable to parse XML"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Parallels_disk_image" {
        return Err(refuse(
            "libphdi_disk_descriptor_xml_file_read_data",
            "unsupported root tag",
        ));
    }
    let section = |name: &str| root.children().find(|c| c.is_element() && c.tag_name().name() == name);
    let media = match section("Disk_Parameters") {
        Some(params) => disk_parameters(params)?,
        None => 0,
    };
    let (storages, disk_kind) = match section("StorageData") {
        Some(data) => storage_data(data, opened)?,
        None => (Vec::new(), None),
    };
    let shots = match section("Snapshots") {
        Some(snaps) => snapshots(snaps)?,
        None => Vec::new(),
    };
    let (files, file_of, entries) = open_extents(&storages)?;
    let (layer_of, parents) = snapshot_layers(&shots, &storages, &files, &file_of, disk_kind.unwrap_or(Kind::Unknown))?;
    // pyphdi's media size is asked for after the extent files are open (the drivers do so).
    out.media_size = Some(media);
    out.top = shots
        .first()
        .and_then(|s| s.guid)
        .map(|g| crate::bundle::format_guid(uuid::Uuid::from_bytes(g)));
    let storage_start = storages
        .first()
        .map_or(0, |s| Sectors(s.start).saturating_bytes().get());
    let layers = files
        .into_iter()
        .zip(entries)
        .map(|(file, entry)| Layer {
            file,
            entry,
            header: None,
        })
        .collect();
    Ok(Some(Model {
        shots,
        parents,
        layer_of,
        layers,
        storage_start,
    }))
}

/// The descriptor's text, as UTF-8.
fn descriptor_text(opened: &Opened) -> Result<&str, Failure> {
    let text = opened.text.as_ref().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            refuse("libcfile_file_open_with_error_code", "no such file")
        } else {
            refuse("libcfile_file_open_with_error_code", e)
        }
    })?;
    std::str::from_utf8(text).map_err(|_| refuse("libphdi_disk_descriptor_xml_file_read_data", "unable to parse XML"))
}

/// `Disk_Parameters`: the media size in bytes, after the checks libphdi makes.
fn disk_parameters(params: roxmltree::Node<'_, '_>) -> Result<u64, Failure> {
    let mut media = 0u64;
    for e in params.children().filter(|c| c.is_element()) {
        let value = e.text().unwrap_or("");
        match e.tag_name().name() {
            "Disk_size" => {
                let v = number(value).unwrap_or(0);
                media = Sectors(v)
                    .checked_bytes()
                    .ok_or_else(|| refuse(F_PARAMS, "invalid media size value out of bounds"))?
                    .get();
            }
            // Both are kept as 32-bit numbers (the geometry is never used to read).
            "Cylinders" if number(value).unwrap_or(0) > u64::from(u32::MAX) => {
                return Err(refuse(F_PARAMS, "invalid number of cylinders value out of bounds"));
            }
            "Heads" if number(value).unwrap_or(0) > u64::from(u32::MAX) => {
                return Err(refuse(F_PARAMS, "invalid number of heads value out of bounds"));
            }
            "Padding" => {
                let v = number(value).unwrap_or(0);
                if v != 0 {
                    return Err(refuse(F_PARAMS, format!("unsupported padding: {v}")));
                }
            }
            _ => {}
        }
    }
    Ok(media)
}

/// `StorageData`: the storages, and the disk's kind (the first known image type).
fn storage_data(data: roxmltree::Node<'_, '_>, opened: &Opened) -> Result<(Vec<Storage>, Option<Kind>), Failure> {
    let mut storages = Vec::new();
    let mut disk_kind = None;
    for (i, s) in data.children().filter(|c| c.is_element()).enumerate() {
        if s.tag_name().name() != "Storage" {
            return Err(refuse(F_STORAGE, format!("unsupported storage tag: {i}")));
        }
        let mut storage = Storage {
            start: 0,
            end: 0,
            images: Vec::new(),
        };
        for e in s.children().filter(|c| c.is_element()) {
            let value = e.text().unwrap_or("");
            match e.tag_name().name() {
                "Blocksize" => {
                    let v = number(value).unwrap_or(0);
                    if v != 2048 {
                        return Err(refuse(F_STORAGE, format!("unsupported block size: {v}")));
                    }
                }
                "Start" => storage.start = number(value).unwrap_or(0),
                "End" => storage.end = number(value).unwrap_or(0),
                "Image" => {
                    let image = storage_image(e, opened);
                    if disk_kind.is_none() && image.kind != Kind::Unknown {
                        disk_kind = Some(image.kind);
                    }
                    storage.images.push(image);
                }
                _ => {}
            }
        }
        if storage.end <= storage.start {
            return Err(refuse(
                "libphdi_extent_values_set_range",
                "invalid end offset value out of bounds",
            ));
        }
        storages.push(storage);
    }
    Ok((storages, disk_kind))
}

/// One `Image` of a storage: its GUID, type and file, named as libphdi names it.
fn storage_image(e: roxmltree::Node<'_, '_>, opened: &Opened) -> Image {
    let kind = match child_text(e, "Type").map(str::trim) {
        Some("Plain") => Kind::Plain,
        Some("Compressed") => Kind::Compressed,
        _ => Kind::Unknown,
    };
    let name = child_text(e, "File").unwrap_or("").trim().to_string();
    // libphdi keeps the name after the last '/', but as many bytes of it as
    // there are before it, less one (its size is taken from the wrong end).
    let base = match name.rfind('/') {
        Some(i) => {
            let rest = &name.as_bytes()[i + 1..];
            String::from_utf8_lossy(&rest[..i.min(rest.len())]).into_owned()
        }
        None => name.clone(),
    };
    let file = opened.file(|dir| std::path::absolute(dir).unwrap_or(dir.to_path_buf()).join(&base));
    Image {
        guid: child_text(e, "GUID").and_then(guid_bytes),
        kind,
        file,
    }
}

/// `Snapshots`: each shot's GUID and parent's GUID.
fn snapshots(snaps: roxmltree::Node<'_, '_>) -> Result<Vec<Shot>, Failure> {
    let mut shots = Vec::new();
    for (i, s) in snaps.children().filter(|c| c.is_element()).enumerate() {
        if s.tag_name().name() != "Shot" {
            return Err(refuse(F_SNAPSHOTS, format!("unsupported snapshot tag: {i}")));
        }
        shots.push(Shot {
            guid: child_text(s, "GUID").and_then(guid_bytes),
            parent: child_text(s, "ParentGUID").and_then(guid_bytes),
        });
    }
    Ok(shots)
}

/// The extent data files opened: one pool slot per image index inside its storage. Returns the
/// files, per storage the file index of each image, and each file's pool slot.
#[allow(clippy::type_complexity)]
fn open_extents(storages: &[Storage]) -> Result<(Vec<File>, Vec<Vec<usize>>, Vec<usize>), Failure> {
    let mut files = Vec::new();
    let mut slots = std::collections::HashSet::new();
    let mut file_of = Vec::new();
    let mut entries = Vec::new();
    for s in storages {
        let mut row = Vec::new();
        for (k, im) in s.images.iter().enumerate() {
            let f = File::open(&im.file).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    refuse(
                        "libcfile_file_open_with_error_code",
                        format!("no such file: {}", im.file.display()),
                    )
                } else {
                    refuse("libcfile_file_open_with_error_code", e)
                }
            })?;
            if !slots.insert(k) {
                return Err(refuse(
                    "libbfio_pool_set_handle",
                    format!("invalid handle entry: {k} value already set"),
                ));
            }
            files.push(f);
            entries.push(k);
            row.push(files.len() - 1);
        }
        file_of.push(row);
    }
    Ok((files, file_of, entries))
}

/// The snapshots' extent tables: per shot, its image (a file index and its kind) and its
/// parent's index, after the checks libphdi makes of each extent.
#[allow(clippy::type_complexity)]
fn snapshot_layers(
    shots: &[Shot],
    storages: &[Storage],
    files: &[File],
    file_of: &[Vec<usize>],
    disk_kind: Kind,
) -> Result<(Vec<Option<(usize, Kind)>>, Vec<Option<usize>>), Failure> {
    let mut layer_of = vec![None; shots.len()];
    let mut parents = vec![None; shots.len()];
    for (si, shot) in shots.iter().enumerate() {
        parents[si] = shots.iter().position(|p| p.guid.is_some() && p.guid == shot.parent);
        for (e, s) in storages.iter().enumerate() {
            for (k, im) in s.images.iter().enumerate() {
                if im.guid.is_none() || im.guid != shot.guid {
                    continue;
                }
                let file = file_of[e][k];
                if im.kind != Kind::Unknown && im.kind != disk_kind {
                    return Err(refuse(
                        "libphdi_extent_table_append_extent",
                        "image type not supported for disk type",
                    ));
                }
                if im.kind == Kind::Plain {
                    let len = files[file].metadata().map(|m| m.len()).unwrap_or(0);
                    let offset = Sectors(s.start).saturating_bytes().get();
                    if offset >= len {
                        return Err(refuse(
                            "libphdi_extent_table_append_extent",
                            "invalid extent offset value out of bounds",
                        ));
                    }
                    if Sectors(s.end.saturating_sub(s.start)).saturating_bytes().get() > len - offset {
                        return Err(refuse(
                            "libphdi_extent_table_append_extent",
                            "invalid extent size value out of bounds",
                        ));
                    }
                }
                if layer_of[si].is_none() {
                    layer_of[si] = Some((file, im.kind));
                }
            }
        }
    }
    Ok((layer_of, parents))
}
