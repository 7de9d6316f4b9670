//! fox-it's dissect.hypervisor 3.21 (`dissect.hypervisor.disk.hdd`, with dissect.util 3.24's
//! aligned streams), modelled from its Python source and from runs of the real package
//! (`scripts/readers/dissect_driver.py`).
//!
//! What it does (`spec/readers.md` has a reproducer for each):
//! 1. The top is always `{5fbaabe3-…}`: a `TopGUID` element has no children, and an element
//!    without children is false in Python, so the `TopGUID` is never read. A bundle whose top is
//!    another snapshot is refused (`KeyError`) or read at the wrong snapshot.
//! 2. The chain is followed by `ParentGUID` up to the null GUID; a cycle loops forever (a hang,
//!    the list growing without bound).
//! 3. A `Plain` image ends the chain below it (its parents are dropped); a `Compressed` one is
//!    read through its BAT, with the v1 or the v2 magic, `Blocksize` and the header's other
//!    fields unchecked.
//! 4. The media size is the last storage's `End` × 512 (`Disk_size` is not read).
//! 5. Runs of clusters are merged by file offset, and a run of absent clusters is marked by the
//!    offset 0: an allocated cluster whose file offset equals the length of the absent run
//!    before it, inside one read, is merged into the absent run and read as zeros (or the
//!    parent's bytes). Which clusters that hits depends on the read size.
//! 6. Short files give short reads (no error).
//!
//! The message kept is Python's: `ExceptionType: text` (for an XML parse error only
//! `ParseError`, whose text is expat's).

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{classify, read_all, Failure, Input, Opened, ReaderPrediction, ReaderRun, Truth, DEFAULT_TOP};

/// The version modelled.
pub const DISSECT_VERSION: &str = "3.21";
/// dissect.util's stream buffer (io.DEFAULT_BUFFER_SIZE).
const ALIGN: u64 = 8192;
/// The largest offset a file on ext4 (4 KiB blocks) can be sought to: Python's `seek` past it
/// fails with EINVAL. (The readers were verified on ext4; other file systems have other limits.)
pub const EXT4_MAX_OFFSET: u64 = ((1 << 32) - 1) * 4096;

fn einval() -> Failure {
    err("OSError", "[Errno 22] Invalid argument")
}

/// What dissect.hypervisor does with the disk at `path` (a bundle or a lone image), compared
/// with the guest's bytes.
pub fn predict_dissect(path: &Path) -> ReaderPrediction {
    predict_dissect_with(path, Truth::of(path).as_ref(), super::READ_SIZE)
}

/// [`predict_dissect`] with the guest's bytes already read, and a read size.
pub fn predict_dissect_with(path: &Path, truth: Option<&Truth>, read_size: u64) -> ReaderPrediction {
    classify(&run(path, read_size), truth, read_size)
}

fn err(kind: &str, text: impl std::fmt::Display) -> Failure {
    Failure::Refuses(format!("{kind}: {text}"))
}

/// Python's `repr` of a str (quotes chosen as Python chooses them; ASCII only escaped simply).
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of bytes.
fn py_bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from("b");
    out.push(quote);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c as char == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(quote);
    out
}

/// `pathlib.Path(text)` as `str()` shows it.
fn py_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Python's `int(text)` for the descriptor's numbers.
fn py_int(text: Option<&str>) -> Result<i128, Failure> {
    let Some(text) = text else {
        return Err(err(
            "TypeError",
            "int() argument must be a string, a bytes-like object or a real number, not 'NoneType'",
        ));
    };
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let ok = !clean.is_empty()
        && clean.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__");
    match (ok, clean.parse::<i128>()) {
        (true, Ok(v)) => Ok(if t.starts_with('-') { -v } else { v }),
        _ => Err(err(
            "ValueError",
            format!("invalid literal for int() with base 10: {}", py_repr(text)),
        )),
    }
}

/// Python's `uuid.UUID(text)`, as a lowercase hyphenated string.
fn py_uuid(text: Option<&str>) -> Result<String, Failure> {
    let Some(text) = text else {
        return Err(err(
            "TypeError",
            "one of the hex, bytes, bytes_le, fields, or int arguments must be given",
        ));
    };
    let hex = text.replace("urn:", "").replace("uuid:", "");
    let hex = hex.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("ValueError", "badly formed hexadecimal UUID string"));
    }
    let h = hex.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn find<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// `element.find(name).text`: AttributeError when there is no such child; `None` for no text.
fn text_of<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Result<Option<&'a str>, Failure> {
    match find(node, name) {
        None => Err(err("AttributeError", "'NoneType' object has no attribute 'text'")),
        Some(n) => Ok(n.first_child().filter(|c| c.is_text()).and_then(|c| c.text())),
    }
}

struct DImage {
    guid: String,
    kind: Option<String>,
    file: Option<String>,
}

struct DStorage {
    start: i128,
    end: i128,
    images: Vec<DImage>,
}

/// A stream in the model: an HDS (through an aligned stream) or a raw Python file.
enum Stream {
    Hds(Box<Hds>),
    File(RawFile),
}

struct RawFile {
    file: File,
    len: u64,
    pos: i128,
}

struct Hds {
    file: File,
    file_len: u64,
    parent: Option<Stream>,
    size: u64,
    cluster: u64,
    multiplier: u64,
    entries: u64,
    bat: Option<Vec<u32>>,
    pos: i128,
}

fn pread(file: &File, offset: u64, len: u64, file_len: u64) -> Result<Vec<u8>, Failure> {
    let n = len.min(file_len.saturating_sub(offset));
    let mut buf = vec![0u8; n as usize];
    let got = crate::bundle::read_some(file, &mut buf, offset).map_err(|e| err("OSError", e))?;
    buf.truncate(got);
    Ok(buf)
}

impl Stream {
    fn seek(&mut self, pos: i128) -> Result<(), Failure> {
        match self {
            Stream::Hds(h) => {
                if pos < 0 {
                    return Err(err("ValueError", format!("negative seek position {pos}")));
                }
                h.pos = pos;
            }
            Stream::File(f) => {
                if pos < 0 {
                    return Err(err("ValueError", format!("negative seek value {pos}")));
                }
                if pos > i128::from(EXT4_MAX_OFFSET) {
                    return Err(einval());
                }
                f.pos = pos;
            }
        }
        Ok(())
    }

    fn read(&mut self, n: i128) -> Result<Vec<u8>, Failure> {
        match self {
            Stream::File(f) => {
                let pos = f.pos as u64;
                let want = if n < 0 { f.len.saturating_sub(pos) } else { n as u64 };
                let data = pread(&f.file, pos, want, f.len)?;
                f.pos += data.len() as i128;
                Ok(data)
            }
            Stream::Hds(h) => {
                if n < -1 {
                    return Err(err("ValueError", "invalid number of bytes to read"));
                }
                let pos = h.pos as u64;
                let data = aligned_read(h.size, pos, n, |o, l| h.raw_read(o, l))?;
                h.pos = (pos + read_advance(h.size, pos, n)) as i128;
                Ok(data)
            }
        }
    }
}

/// How far an aligned stream's position moves on `read(n)` at `pos` (by what it asked for,
/// not by what came back).
fn read_advance(size: u64, pos: u64, n: i128) -> u64 {
    if size <= pos {
        return 0;
    }
    let remaining = size - pos;
    if n == -1 {
        remaining
    } else {
        (n as u64).min(remaining)
    }
}

/// dissect.util's `AlignedStream.read(n)` at `pos` over `raw(offset, length)`.
fn aligned_read(
    size: u64,
    pos: u64,
    n: i128,
    mut raw: impl FnMut(u64, u64) -> Result<Vec<u8>, Failure>,
) -> Result<Vec<u8>, Failure> {
    let mut n = read_advance(size, pos, n);
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut pos = pos;
    let mut out = Vec::new();
    if !pos.is_multiple_of(ALIGN) {
        let start = pos - pos % ALIGN;
        let buf = raw(start, ALIGN)?;
        let at = (pos - start) as usize;
        let take = n.min(ALIGN - (pos - start));
        let end = (at + take as usize).min(buf.len());
        if at < end {
            out.extend_from_slice(&buf[at..end]);
        }
        n -= take;
        pos += take;
    }
    if n >= ALIGN {
        let len = n / ALIGN * ALIGN;
        out.extend(raw(pos, len)?);
        pos += len;
        n -= len;
    }
    if n > 0 {
        let buf = raw(pos, ALIGN)?;
        out.extend_from_slice(&buf[..(n as usize).min(buf.len())]);
    }
    Ok(out)
}

impl Hds {
    fn raw_read(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, Failure> {
        if self.bat.is_none() {
            let want = self.entries * 4;
            let got = pread(&self.file, 64, want, self.file_len)?;
            if (got.len() as u64) < want {
                return Err(err(
                    "EOFError",
                    format!("Read {} bytes, but expected {want}", got.len()),
                ));
            }
            self.bat = Some(
                got.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            );
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let (mut off, mut len) = (offset, length);
        let mut run: Option<(u64, u64)> = None;
        while off < self.size && len > 0 {
            if self.cluster == 0 {
                return Err(err("ZeroDivisionError", "integer division or modulo by zero"));
            }
            let (idx, within) = (off / self.cluster, off % self.cluster);
            let size = (self.cluster - within).min(len);
            let bat = self.bat.as_ref().unwrap();
            let Some(&entry) = bat.get(idx as usize) else {
                return Err(err("IndexError", "list index out of range"));
            };
            let read_offset = if entry == 0 {
                0
            } else {
                (u64::from(entry).saturating_mul(self.multiplier).saturating_mul(512)).saturating_add(within)
            };
            run = Some(match run {
                None => (read_offset, size),
                Some((ro, rs)) if read_offset == ro + rs || (ro == 0 && read_offset == 0) => (ro, rs + size),
                Some(prev) => {
                    runs.push(prev);
                    (read_offset, size)
                }
            });
            off += size;
            len -= size;
        }
        runs.extend(run);
        let mut out = Vec::new();
        let mut at = offset;
        for (ro, rs) in runs {
            if ro == 0 {
                match &mut self.parent {
                    Some(p) => {
                        p.seek(at as i128)?;
                        out.extend(p.read(rs as i128)?);
                    }
                    None => out.extend(std::iter::repeat_n(0u8, rs as usize)),
                }
            } else {
                if ro > EXT4_MAX_OFFSET {
                    return Err(einval());
                }
                out.extend(pread(&self.file, ro, rs, self.file_len)?);
            }
            at += rs;
        }
        Ok(out)
    }
}

fn open_hds(file: File, parent: Option<Stream>) -> Result<Hds, Failure> {
    let file_len = file.metadata().map_err(|e| err("OSError", e))?.len();
    let head = pread(&file, 0, 64, file_len)?;
    if head.len() < 64 {
        return Err(Failure::Refuses("EOFError:".into()));
    }
    let u32_at = |o: usize| u64::from(u32::from_le_bytes(head[o..o + 4].try_into().unwrap()));
    let magic = &head[..16];
    let tracks = u32_at(28);
    let (size, multiplier) = if magic == b"WithoutFreeSpace" {
        (u32_at(36), 1)
    } else if magic == b"WithouFreSpacExt" {
        (u64::from_le_bytes(head[36..44].try_into().unwrap()), tracks)
    } else {
        return Err(err(
            "InvalidHeaderError",
            format!("Invalid HDS header signature: {}", py_bytes_repr(magic)),
        ));
    };
    Ok(Hds {
        file,
        file_len,
        parent,
        size: size.saturating_mul(512),
        cluster: tracks.saturating_mul(512),
        multiplier,
        entries: u32_at(32),
        bat: None,
        pos: 0,
    })
}

struct Disk {
    /// Sorted by start: (start, end, stream).
    streams: Vec<(i128, i128, Stream)>,
    size: u64,
}

impl Disk {
    fn raw_read(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, Failure> {
        let mut sector = (offset / 512) as i128;
        let mut count = length.div_ceil(512) as i128;
        let mut out = Vec::new();
        let starts: Vec<i128> = self.streams.iter().map(|s| s.0).collect();
        let mut idx = starts.partition_point(|&s| s <= sector) as i64 - 1;
        let n = self.streams.len() as i64;
        while count > 0 && idx < n {
            let i = if idx < 0 { (idx + n) as usize } else { idx as usize };
            let (start, end, stream) = &mut self.streams[i];
            let remaining = *end - sector;
            let read = remaining.min(count);
            stream.seek((sector - *start) * 512)?;
            out.extend(stream.read(read * 512)?);
            sector += read;
            count -= read;
            idx += 1;
        }
        Ok(out)
    }
}

fn run(path: &Path, read_size: u64) -> ReaderRun {
    let mut out = ReaderRun::default();
    let opened = Opened::of(&Input::of(path));
    let mut disk = match open(&opened, path, &mut out) {
        Ok(d) => d,
        Err(f) => {
            out.failure = Some(f);
            return out;
        }
    };
    out.media_size = Some(disk.size);
    let size = disk.size;
    read_all(size, read_size, &mut out, |offset, len| {
        aligned_read(size, offset, len as i128, |o, l| disk.raw_read(o, l))
    });
    out
}

fn open(opened: &Opened, given: &Path, out: &mut ReaderRun) -> Result<Disk, Failure> {
    // HDD(path): a file stands for its folder.
    let root = match &opened.lone {
        Some(_) => opened.dir.clone(),
        None => {
            let p = py_path(given);
            if p.is_file() {
                py_path(p.parent().unwrap_or(Path::new(".")))
            } else {
                p
            }
        }
    };
    let text = match &opened.text {
        Ok(t) => t,
        Err(_) => {
            return Err(err(
                "ValueError",
                format!(
                    "Invalid Parallels HDD path: {} (missing DiskDescriptor.xml)",
                    root.display()
                ),
            ))
        }
    };
    let text = std::str::from_utf8(text).map_err(|_| err("UnicodeDecodeError", "utf-8"))?;
    let doc = roxmltree::Document::parse(text).map_err(|_| Failure::Refuses("ParseError".into()))?;
    let xml = doc.root_element();
    let Some(data) = find(xml, "StorageData") else {
        return Err(err("AttributeError", "'NoneType' object has no attribute 'tag'"));
    };
    let mut storages = Vec::new();
    for s in data
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "Storage")
    {
        let start = py_int(text_of(s, "Start")?)?;
        let end = py_int(text_of(s, "End")?)?;
        let mut images = Vec::new();
        for im in s
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Image")
        {
            let guid = py_uuid(text_of(im, "GUID")?)?;
            let kind = text_of(im, "Type")?.map(str::to_string);
            let file = text_of(im, "File")?.map(str::to_string);
            images.push(DImage { guid, kind, file });
        }
        storages.push(DStorage { start, end, images });
    }
    let Some(snaps) = find(xml, "Snapshots") else {
        return Err(err("AttributeError", "'NoneType' object has no attribute 'tag'"));
    };
    let mut shots = Vec::new();
    for s in snaps
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "Shot")
    {
        let guid = py_uuid(text_of(s, "GUID")?)?;
        let parent = py_uuid(text_of(s, "ParentGUID")?)?;
        shots.push((guid, parent));
    }
    // open(): the chain from the default top.
    let top = py_uuid(Some(DEFAULT_TOP))?;
    out.top = Some(DEFAULT_TOP.to_string());
    let null = "00000000-0000-0000-0000-000000000000";
    let find_shot = |g: &str| {
        shots
            .iter()
            .find(|s| s.0 == g)
            .ok_or_else(|| err("KeyError", py_repr(&format!("Shot GUID not found: {g}"))))
    };
    let mut shot = find_shot(&top)?;
    let mut chain = vec![shot.0.clone()];
    while shot.1 != null {
        shot = find_shot(&shot.1)?;
        chain.push(shot.0.clone());
        if chain.len() > shots.len() + 1 {
            return Err(Failure::Hangs(format!(
                "the parents of {} form a cycle: the chain grows without end",
                shot.0
            )));
        }
    }
    let mut streams = Vec::new();
    for s in &storages {
        let mut stream: Option<Stream> = None;
        for g in chain.iter().rev() {
            let Some(image) = s.images.iter().find(|i| &i.guid == g) else {
                return Err(err("KeyError", py_repr(&format!("Image GUID not found: {g}"))));
            };
            let path = match (&opened.lone, &image.file) {
                (Some(lone), _) => lone.clone(),
                (None, Some(f)) => resolve(&root, f),
                (None, None) => {
                    return Err(err(
                        "TypeError",
                        "expected str, bytes or os.PathLike object, not NoneType",
                    ))
                }
            };
            let file = open_file(&path)?;
            match image.kind.as_deref() {
                Some("Compressed") => stream = Some(Stream::Hds(Box::new(open_hds(file, stream.take())?))),
                Some("Plain") => {
                    let len = file.metadata().map_err(|e| err("OSError", e))?.len();
                    stream = Some(Stream::File(RawFile { file, len, pos: 0 }));
                }
                other => {
                    return Err(err(
                        "ValueError",
                        format!("Unsupported image type: {}", other.unwrap_or("None")),
                    ))
                }
            }
        }
        if let Some(st) = stream {
            streams.push((s.start, s.end, st));
        } else {
            return Err(err("AttributeError", "'NoneType' object has no attribute 'seek'"));
        }
    }
    streams.sort_by_key(|s| s.0);
    let size = u64::try_from(streams.last().map_or(0, |s| s.1).max(0).saturating_mul(512)).unwrap_or(u64::MAX);
    Ok(Disk { streams, size })
}

/// `HDD._open_image`: relative to the folder; an absolute path that does not exist is looked
/// for in the folder, beside it, and two levels up.
fn resolve(root: &Path, file: &str) -> PathBuf {
    let path = py_path(Path::new(file));
    if !path.is_absolute() {
        return root.join(path);
    }
    if path.exists() {
        return path;
    }
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    let c1 = root.join(&name);
    if c1.exists() {
        return c1;
    }
    let parent_name = path
        .parent()
        .and_then(Path::file_name)
        .map(PathBuf::from)
        .unwrap_or_default();
    let c2 = root.parent().unwrap_or(Path::new("")).join(&parent_name).join(&name);
    if c2.exists() {
        return c2;
    }
    let grand = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(PathBuf::from)
        .unwrap_or_default();
    root.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""))
        .join(grand)
        .join(parent_name)
        .join(name)
}

fn open_file(path: &Path) -> Result<File, Failure> {
    let shown = py_repr(&path.display().to_string());
    if path.is_dir() {
        return Err(err("IsADirectoryError", format!("[Errno 21] Is a directory: {shown}")));
    }
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => err(
            "FileNotFoundError",
            format!("[Errno 2] No such file or directory: {shown}"),
        ),
        io::ErrorKind::PermissionDenied => err("PermissionError", format!("[Errno 13] Permission denied: {shown}")),
        _ => err("OSError", e),
    })
}
