//! An image opened over a [`Source`]: the header, a zero-copy view of the BAT, the extension
//! walk and the bitmaps. Only metadata is read: header, BAT, extension cluster, bitmap clusters.

use std::borrow::Cow;

use zerocopy::little_endian::U32;
use zerocopy::FromBytes;

use crate::bitmap::{Bitmap, BitmapGeometry};
use crate::error::{Error, Result, Violation};
use crate::extension::Extension;
use crate::header::Header;
use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::header::{RawHeader, HEADER_SIZE};
use crate::source::Source;

/// How strictly to treat what the format allows but this crate does not interpret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum RuleMode {
    /// Unknown features and feature flags are corruption (QEMU's behaviour).
    #[default]
    Strict,
    /// Unknown features and features with flags are kept as opaque records (ploop's behaviour).
    Lenient,
}

/// The BAT entries of an [`Image`] parsed whole, viewed in place ([`Image::bat`]).
#[derive(Clone, Copy)]
pub struct BatTable<'a>(&'a [U32]);

impl<'a> BatTable<'a> {
    /// Number of entries (those in the file).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (always, unless the image was parsed whole).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entry `index`, if present.
    pub fn get(&self, index: usize) -> Option<u32> {
        self.0.get(index).map(|e| e.get())
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        self.0.iter().map(|e| e.get())
    }
}

impl std::fmt::Debug for BatTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// How much of the BAT an [`Image`] keeps.
#[derive(Clone)]
enum Bat<'s> {
    /// The whole table as it is in the source (lent by a slice, read from a file).
    Whole(Cow<'s, [u8]>),
    /// Not held: every walk reads the table again from the source through a small buffer
    /// ([`Image::parse_compact`]), so memory does not grow with the table or its entries.
    Streamed,
    /// Not read ([`Image::parse_without_bat`]).
    Unread,
}

/// The BAT is read through a buffer of this many bytes by [`Image::parse_compact`]: small
/// enough to stay in the CPU's cache, large enough that reads cost little.
const BAT_READ_BLOCK: usize = 128 << 10;

/// A parsed image. Parsing checks only what is needed to interpret the rest (rules R1–R6); run
/// [`crate::validate()`] for every rule, or use [`crate::open`] to do both.
#[derive(Clone)]
pub struct Image<'s> {
    source: &'s (dyn Source + 's),
    file_len: u64,
    header: Header,
    bat: Bat<'s>,
    extension: Option<Extension<'s>>,
    mode: RuleMode,
    /// The allocated entries, counted on first use.
    allocated: std::sync::Arc<std::sync::OnceLock<u64>>,
    /// The first read of a streamed BAT that failed (the walk stopped there); see
    /// [`Image::bat_status`]. Shared by clones, which read the same source.
    bat_error: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl std::fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("file_len", &self.file_len)
            .field("header", &self.header)
            .field(
                "extension",
                &self.extension.as_ref().map(|e| (e.file_offset, e.features().len())),
            )
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'s> Image<'s> {
    /// Parses without validating beyond R1–R6, in strict mode.
    pub fn parse(source: &'s (dyn Source + 's)) -> Result<Image<'s>> {
        Self::parse_with(source, RuleMode::Strict)
    }

    /// Parses without validating beyond R1–R6.
    pub fn parse_with(source: &'s (dyn Source + 's), mode: RuleMode) -> Result<Image<'s>> {
        Self::parse_inner(source, mode, Reading::Whole)
    }

    /// Parses like [`Image::parse_with`], but does not hold the BAT: each walk of its entries
    /// ([`Image::allocated_entries`]) reads it again from the source through a 128 KiB buffer.
    /// Memory then stays the same whatever the table and its allocated entries, where holding
    /// the table costs its whole size (64 MiB for a 1 TiB disk of 64 KiB clusters); a walk
    /// costs a read of the table from the page cache. [`Image::bat`] is empty; every other
    /// accessor ([`Image::bat_entry`], [`Image::allocated_entries`], [`crate::validate()`]…)
    /// answers as for the whole table. A read that fails during a walk ends the walk early and
    /// is reported by [`Image::bat_status`] (and by [`crate::validate()`]). This is what
    /// `prlimg check` and `prlimg info` use.
    ///
    /// ```
    /// use parallels_image::{GuestData, ImageBuilder};
    /// use parallels_image::{qemu, Image, RuleMode};
    ///
    /// let (bytes, _) = ImageBuilder::new(1 << 30)
    ///     .cluster_size(64 << 10)
    ///     .data(3 << 16, GuestData::Fill { len: 512, byte: 0xaa })
    ///     .to_vec()?;
    /// let whole = Image::parse(&bytes)?;
    /// let compact = Image::parse_compact(&bytes, RuleMode::Strict)?;
    /// assert_eq!((whole.bat().len(), compact.bat().len()), (16384, 0));
    /// // Header and BAT take 64 + 16384 * 4 bytes: the first data cluster is cluster 2.
    /// assert_eq!(compact.allocated_entries().collect::<Vec<_>>(), [(3, 2)]);
    /// assert_eq!((compact.bat_entry(3), compact.bat_entry(4)), (2, 0));
    /// assert_eq!(parallels_image::validate(&compact)?, parallels_image::validate(&whole)?);
    /// assert_eq!(qemu::predict_image(&compact), qemu::predict_image(&whole));
    /// # Ok::<(), parallels_image::Error>(())
    /// ```
    pub fn parse_compact(source: &'s (dyn Source + 's), mode: RuleMode) -> Result<Image<'s>> {
        Self::parse_inner(source, mode, Reading::Allocated)
    }

    /// Parses the header and the extension cluster but does not read the BAT, for callers that
    /// need only the bitmaps (the BAT of a 64 TiB image of 1 MiB clusters is 256 MiB).
    /// [`Image::bat`] is then empty and [`Image::bat_entry`], [`Image::cluster_offset`] and
    /// [`Image::allocated_clusters`] read as unallocated; [`crate::validate()`] and
    /// [`Image::read_guest`] still read the BAT they need from the source.
    ///
    /// ```
    /// use parallels_image::{BitmapSpec, GuestData, ImageBuilder};
    /// use parallels_image::{Image, RuleMode};
    ///
    /// let (bytes, _) = ImageBuilder::new(16 << 20)
    ///     .cluster_size(64 << 10)
    ///     .data(65536, GuestData::Fill { len: 512, byte: 0xaa })
    ///     .bitmap(BitmapSpec { id: [7; 16], granularity: 65536, extents: vec![(131072, 65536)] })
    ///     .to_vec()?;
    /// let full = Image::parse(&bytes)?;
    /// let lean = Image::parse_without_bat(&bytes, RuleMode::Strict)?;
    /// assert_eq!((full.bat().len(), lean.bat().len()), (256, 0));
    /// assert_eq!(lean.bitmaps()[0].dirty_extents()?, vec![(131072, 65536)]);
    /// let mut buf = [0u8; 2];
    /// lean.read_guest(65536 + 511, &mut buf)?;
    /// assert_eq!(buf, [0xaa, 0]);
    /// assert_eq!(parallels_image::validate(&lean)?, parallels_image::validate(&full)?);
    /// # Ok::<(), parallels_image::Error>(())
    /// ```
    pub fn parse_without_bat(source: &'s (dyn Source + 's), mode: RuleMode) -> Result<Image<'s>> {
        Self::parse_inner(source, mode, Reading::None)
    }

    fn parse_inner(source: &'s (dyn Source + 's), mode: RuleMode, reading: Reading) -> Result<Image<'s>> {
        let file_len = source.size();
        let head = source.read_at(0, HEADER_SIZE as u64)?;
        let raw = RawHeader::read_padded(&head);
        if file_len == 0 {
            return Err(Error::EmptyFile);
        }
        let header = match Header::decode(&raw) {
            Err(Violation::BadMagic { found }) if !crate::error::parallels_shaped(&found, raw.version.get()) => {
                return Err(Error::NotParallels {
                    found,
                    version: raw.version.get(),
                })
            }
            other => other?,
        };
        // Only the part of the BAT that is in the file is read; the rest reads as zeros.
        let in_file = entries_in_file(&header, file_len);
        let bat = match reading {
            Reading::Whole => {
                let mut bytes = source.read_at(BAT_OFFSET, u64::from(in_file) * BAT_ENTRY_SIZE)?;
                let whole = bytes.len() / 4 * 4;
                if whole != bytes.len() {
                    // The file shrank between `size()` and the read.
                    bytes = match bytes {
                        Cow::Borrowed(b) => Cow::Borrowed(&b[..whole]),
                        Cow::Owned(mut v) => {
                            v.truncate(whole);
                            Cow::Owned(v)
                        }
                    };
                }
                Bat::Whole(bytes)
            }
            Reading::Allocated => Bat::Streamed,
            Reading::None => Bat::Unread,
        };
        let extension = match header.ext_offset() {
            None => None,
            Some(off) => {
                let bytes = source.read_at(off, header.cluster_size())?;
                Some(Extension::new(off, header.cluster_size(), bytes))
            }
        };
        Ok(Image {
            source,
            file_len,
            header,
            bat,
            extension,
            mode,
            allocated: Default::default(),
            bat_error: Default::default(),
        })
    }

    /// This image with its BAT's entries read as [`Image::parse_compact`] reads them (again
    /// from the source at each walk) when it was parsed without the BAT; itself otherwise.
    /// Nothing is read here.
    pub fn with_bat(&self) -> Result<Cow<'_, Image<'s>>> {
        if self.bat_held() {
            return Ok(Cow::Borrowed(self));
        }
        Ok(Cow::Owned(Image {
            source: self.source,
            file_len: self.file_len,
            header: self.header,
            bat: Bat::Streamed,
            extension: self.extension.clone(),
            mode: self.mode,
            allocated: Default::default(),
            bat_error: self.bat_error.clone(),
        }))
    }

    /// Whether the BAT's entries are known: held whole, or read again at each walk (false
    /// after [`Image::parse_without_bat`]).
    pub fn bat_held(&self) -> bool {
        !matches!(self.bat, Bat::Unread)
    }

    /// The first failure to read the BAT again from the source during a walk of an image parsed
    /// with [`Image::parse_compact`] (the walk ended there, so what it computed is incomplete);
    /// `Ok` when every walk so far read the whole table, and always for other images. The
    /// failure is reported once.
    pub fn bat_status(&self) -> Result<()> {
        let mut slot = self.bat_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn record_bat_error(&self, e: std::io::Error) {
        let mut slot = self.bat_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    /// How many BAT entries are in the file: all of them unless the file ends inside the table
    /// (the entries past its end read as 0).
    pub fn bat_entries_in_file(&self) -> u32 {
        entries_in_file(&self.header, self.file_len)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The mode the image was parsed in.
    pub fn mode(&self) -> RuleMode {
        self.mode
    }

    /// File length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The source the image reads from.
    pub fn source(&self) -> &'s (dyn Source + 's) {
        self.source
    }

    /// The BAT entries that are in the file, viewed in place, when the whole table was read
    /// ([`Image::parse`]); empty after [`Image::parse_compact`] and
    /// [`Image::parse_without_bat`]. Entries past the end of the file (if the file is that
    /// short) are not included and read as 0 through [`Image::bat_entry`].
    pub fn bat(&self) -> BatTable<'_> {
        BatTable(self.bat_slice())
    }

    fn bat_slice(&self) -> &[U32] {
        match &self.bat {
            Bat::Whole(bytes) => <[U32]>::ref_from_bytes(bytes).expect("BAT bytes are a whole number of entries"),
            Bat::Streamed | Bat::Unread => &[],
        }
    }

    /// BAT entry `index` (0 past the end of the file or of the table, and for every entry after
    /// [`Image::parse_without_bat`]). After [`Image::parse_compact`] the entry is read from the
    /// source (a failure reads as 0 and is kept for [`Image::bat_status`]).
    pub fn bat_entry(&self, index: u32) -> u32 {
        match &self.bat {
            Bat::Whole(_) => self.bat_slice().get(index as usize).map_or(0, |e| e.get()),
            Bat::Streamed => self.read_bat_entry(index).unwrap_or_else(|e| {
                self.record_bat_error(e);
                0
            }),
            Bat::Unread => 0,
        }
    }

    /// Entry `index` read from the source; 0 past the table or the end of the file.
    fn read_bat_entry(&self, index: u32) -> std::io::Result<u32> {
        if index >= self.bat_entries_in_file() {
            return Ok(0);
        }
        let mut e = [0u8; 4];
        let got = self
            .source
            .read_into(BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(index), &mut e)?;
        // An entry cut short by the end of the file (it shrank) reads as 0.
        Ok(if got == 4 { u32::from_le_bytes(e) } else { 0 })
    }

    /// The allocated (non-zero) BAT entries as `(index, entry)`, in order. In a whole table,
    /// unallocated entries are skipped 16 at a time, so a sparse BAT costs little more than its
    /// reading.
    pub fn allocated_entries(&self) -> AllocatedEntries<'_> {
        match &self.bat {
            Bat::Whole(bytes) => AllocatedEntries(Entries::Scan(Scan::new(bytes, 0))),
            Bat::Streamed => AllocatedEntries(Entries::Stream(Stream::new(self))),
            Bat::Unread => AllocatedEntries(Entries::Scan(Scan::new(&[], 0))),
        }
    }

    /// Counts as `qemu-img check` does: the allocated clusters whose data ends by byte `end`,
    /// and how many of those do not directly follow on disk the cluster of the previous BAT
    /// index (an unallocated entry, or one ending past `end`, breaks the run).
    pub fn cluster_counts(&self, end: u64) -> (u64, u64) {
        let mut counter = ClusterCounter::new(&self.header, end);
        for (i, e) in self.allocated_entries() {
            counter.add(i, e);
        }
        counter.counts()
    }

    /// File offset of guest cluster `index`'s data, `None` if unallocated.
    pub fn cluster_offset(&self, index: u32) -> Option<u64> {
        self.header.bat_entry_offset(self.bat_entry(index))
    }

    /// Allocated (non-zero) BAT entries (counted by a walk of the table on first use after
    /// [`Image::parse_compact`]).
    pub fn allocated_clusters(&self) -> u64 {
        match &self.bat {
            Bat::Streamed => *self.allocated.get_or_init(|| self.allocated_entries().count() as u64),
            Bat::Whole(_) | Bat::Unread => self.bat_slice().iter().filter(|e| e.get() != 0).count() as u64,
        }
    }

    /// The extension cluster, if the header points at one.
    pub fn extension(&self) -> Option<&Extension<'s>> {
        self.extension.as_ref()
    }

    /// The dirty bitmaps: features with the bitmap magic, no flags and a complete 32-byte header.
    pub fn bitmaps(&self) -> Vec<Bitmap<'_>> {
        let Some(ext) = &self.extension else { return Vec::new() };
        ext.features()
            .iter()
            .filter(|f| f.is_bitmap())
            .map(|f| Bitmap::new(self.bitmap_geometry(), self.source, ext, f))
            .collect()
    }

    /// What the bitmaps need to know of this image.
    pub fn bitmap_geometry(&self) -> BitmapGeometry {
        BitmapGeometry {
            nb_sectors: self.header.nb_sectors,
            cluster_size: self.header.cluster_size(),
            file_len: self.file_len,
        }
    }

    /// The bitmap with this id (the UUID QEMU names it by, its 16 bytes in stored order).
    pub fn bitmap(&self, id: uuid::Uuid) -> Option<Bitmap<'_>> {
        self.bitmaps().into_iter().find(|b| b.id() == *id.as_bytes())
    }

    /// The bitmap named `name`, a UUID (as QEMU prints it, `e4f2eed0-37fe-4539-…`, or in any other
    /// spelling of a UUID); `None` when `name` is not a UUID or no bitmap has it.
    pub fn bitmap_named(&self, name: &str) -> Option<Bitmap<'_>> {
        self.bitmap(uuid::Uuid::try_parse(name).ok()?)
    }

    /// Reads guest bytes `[offset, offset + buf.len())` (unallocated clusters read as zeros).
    /// This is the one place that reads data clusters.
    pub fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.header.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / cs;
            let within = pos % cs;
            let n = ((cs - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let entry = match (u32::try_from(index), &self.bat) {
                (Ok(i), Bat::Whole(_)) => self.bat_entry(i),
                (Ok(i), Bat::Streamed | Bat::Unread) => self.read_bat_entry(i)?,
                (Err(_), _) => 0,
            };
            match self.header.bat_entry_offset(entry) {
                None => out.fill(0),
                Some(host) => {
                    let got = self.source.read_at(host + within, n as u64)?;
                    out[..got.len()].copy_from_slice(&got);
                    out[got.len()..].fill(0);
                }
            }
            done += n;
        }
        Ok(())
    }
}

/// [`Image::cluster_counts`] fed one allocated entry at a time, in index order, for walks of
/// the BAT that count on the way.
pub(crate) struct ClusterCounter<'h> {
    header: &'h Header,
    cs: u64,
    end: u64,
    prev: Option<u64>,
    next: u32,
    allocated: u64,
    fragmented: u64,
}

impl<'h> ClusterCounter<'h> {
    pub(crate) fn new(header: &'h Header, end: u64) -> Self {
        ClusterCounter {
            header,
            cs: header.cluster_size(),
            end,
            prev: None,
            next: 0,
            allocated: 0,
            fragmented: 0,
        }
    }

    /// Counts allocated entry `i` (after every lower one).
    #[inline]
    pub(crate) fn add(&mut self, i: u32, e: u32) {
        if i != self.next {
            self.prev = None;
        }
        self.next = i.wrapping_add(1);
        match self.header.bat_entry_offset(e) {
            Some(off) if off.saturating_add(self.cs) <= self.end => {
                if self.prev.is_some_and(|p| p + self.cs != off) {
                    self.fragmented += 1;
                }
                self.prev = Some(off);
                self.allocated += 1;
            }
            _ => self.prev = None,
        }
    }

    /// `(allocated, fragmented)`.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allocated, self.fragmented)
    }
}

/// How many of the header's BAT entries a file of `file_len` bytes holds whole.
fn entries_in_file(header: &Header, file_len: u64) -> u32 {
    let whole = file_len.saturating_sub(BAT_OFFSET) / BAT_ENTRY_SIZE;
    whole.min(u64::from(header.bat_entries)) as u32
}

/// What [`Image::parse_inner`] does with the BAT.
#[derive(Clone, Copy)]
enum Reading {
    Whole,
    Allocated,
    None,
}

/// The allocated entries of a BAT, from [`Image::allocated_entries`].
#[derive(Clone, Debug)]
pub struct AllocatedEntries<'a>(Entries<'a>);

#[derive(Clone, Debug)]
enum Entries<'a> {
    /// Scanning a whole table.
    Scan(Scan<'a>),
    /// Reading the table again from the source ([`Image::parse_compact`]).
    Stream(Stream<'a>),
}

impl Iterator for AllocatedEntries<'_> {
    type Item = (u32, u32);

    #[inline(always)]
    fn next(&mut self) -> Option<(u32, u32)> {
        match &mut self.0 {
            Entries::Scan(s) => s.next(),
            Entries::Stream(s) => s.next(),
        }
    }
}

/// The non-zero little-endian 32-bit entries of a table's bytes, as `(index, entry)`. The table
/// is taken in blocks of 16 entries: a block of zeros is passed over after one test of its 64
/// bytes, any other gets a mask of its non-zero entries, which are then yielded by
/// counting trailing zeros. Sparse tables go at memory speed, dense ones without a test per entry.
#[derive(Clone, Debug)]
struct Scan<'a> {
    bytes: &'a [u8],
    at: ScanState,
}

/// Where a [`Scan`] is in its bytes (kept apart from them, so that [`Stream`] can refill its
/// buffer under it).
#[derive(Clone, Debug, Default)]
struct ScanState {
    /// Byte offset of the next block to load.
    next: usize,
    /// Byte offset of the block `mask` describes.
    block: usize,
    /// Bit `j`: entry `j` of that block is non-zero and not yet yielded.
    mask: u32,
    /// The entries of that block.
    entries: [u32; 16],
    /// Index of the entry at byte 0.
    first: u32,
}

/// Bytes of the blocks [`Scan`] tests at once: 16 entries.
const SCAN_BLOCK: usize = 64;

impl<'a> Scan<'a> {
    fn new(bytes: &'a [u8], first: u32) -> Self {
        Scan {
            bytes: &bytes[..bytes.len() / 4 * 4],
            at: ScanState {
                first,
                ..ScanState::default()
            },
        }
    }
}

impl Iterator for Scan<'_> {
    type Item = (u32, u32);

    #[inline]
    fn next(&mut self) -> Option<(u32, u32)> {
        self.at.next(self.bytes)
    }
}

impl ScanState {
    /// The next non-zero entry of `bytes` (a whole number of entries): from the block loaded
    /// last while it has one (the common, inlined path), else from the next block that has one.
    #[inline(always)]
    fn next(&mut self, bytes: &[u8]) -> Option<(u32, u32)> {
        if self.mask == 0 && !self.load(bytes) {
            return None;
        }
        let j = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some((self.first + (self.block / 4 + j) as u32, self.entries[j & 15]))
    }

    /// Loads the next block of `bytes` with a non-zero entry; false when there is none.
    fn load(&mut self, bytes: &[u8]) -> bool {
        loop {
            let start = self.next;
            let Some(block) = bytes.get(start..(start + SCAN_BLOCK).min(bytes.len())) else {
                return false;
            };
            if block.is_empty() {
                return false;
            }
            self.next = start + block.len();
            let mut mask = 0u32;
            if let Ok(whole) = <&[u8; SCAN_BLOCK]>::try_from(block) {
                if crate::raw::all_zero(whole) {
                    continue;
                }
                for j in 0..16 {
                    let e = u32::from_le_bytes([whole[4 * j], whole[4 * j + 1], whole[4 * j + 2], whole[4 * j + 3]]);
                    self.entries[j] = e;
                    mask |= u32::from(e != 0) << j;
                }
            } else {
                for (j, e) in block.chunks_exact(4).enumerate() {
                    let e = u32::from_le_bytes(e.try_into().expect("4 bytes"));
                    self.entries[j] = e;
                    mask |= u32::from(e != 0) << j;
                }
            }
            if mask != 0 {
                self.block = start;
                self.mask = mask;
                return true;
            }
        }
    }
}

/// The allocated entries of a BAT read again from its image's source through a
/// [`BAT_READ_BLOCK`] buffer, for [`Image::parse_compact`]. The buffer is the only memory a walk
/// takes, whatever the table holds. A failed read ends the walk and is kept for
/// [`Image::bat_status`]; a file that shrank since it was opened reads as zeros past its end.
struct Stream<'a> {
    image: &'a Image<'a>,
    buf: Vec<u8>,
    /// Bytes of `buf` holding entries.
    filled: usize,
    /// Byte offset in the table of the next read.
    done: u64,
    /// Bytes of the table in the file.
    total: u64,
    /// Byte offset in the table up to which the source said it may hold data; past it, the
    /// source is asked where its next data is before reading.
    data_end: u64,
    scan: ScanState,
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("done", &self.done)
            .field("total", &self.total)
            .finish()
    }
}

impl Clone for Stream<'_> {
    fn clone(&self) -> Self {
        Stream {
            image: self.image,
            buf: self.buf.clone(),
            filled: self.filled,
            done: self.done,
            total: self.total,
            data_end: self.data_end,
            scan: self.scan.clone(),
        }
    }
}

impl<'a> Stream<'a> {
    fn new(image: &'a Image<'a>) -> Self {
        let total = u64::from(image.bat_entries_in_file()) * BAT_ENTRY_SIZE;
        Stream {
            image,
            buf: vec![0u8; (total as usize).min(BAT_READ_BLOCK)],
            filled: 0,
            done: 0,
            total,
            data_end: 0,
            scan: ScanState::default(),
        }
    }

    /// Reads the next block of the table; false at its end or on a failed read. Holes of the
    /// source (entries known to be zeros: [`Source::next_data`]) are passed over unread.
    fn refill(&mut self) -> bool {
        if self.done >= self.total {
            return false;
        }
        if self.done >= self.data_end {
            match self.image.source.next_data(BAT_OFFSET + self.done) {
                Ok((start, end)) => {
                    // Whole entries only: the run's start rounded down, its end up.
                    let start = (start.saturating_sub(BAT_OFFSET) / BAT_ENTRY_SIZE * BAT_ENTRY_SIZE).max(self.done);
                    self.done = start.min(self.total);
                    self.data_end = end
                        .saturating_sub(BAT_OFFSET)
                        .next_multiple_of(BAT_ENTRY_SIZE)
                        .max(start + 1);
                    if self.done >= self.total {
                        return false;
                    }
                }
                Err(e) => {
                    self.image.record_bat_error(e);
                    self.done = self.total;
                    return false;
                }
            }
        }
        let want = ((self.total - self.done) as usize).min(self.buf.len());
        match self
            .image
            .source
            .read_into(BAT_OFFSET + self.done, &mut self.buf[..want])
        {
            Ok(got) => {
                let got = got / 4 * 4;
                self.scan = ScanState {
                    first: (self.done / BAT_ENTRY_SIZE) as u32,
                    ..ScanState::default()
                };
                self.filled = got;
                // A short read: the file shrank since `size()`, and the rest reads as 0.
                self.done = if got < want {
                    self.total
                } else {
                    self.done + want as u64
                };
                true
            }
            Err(e) => {
                self.image.record_bat_error(e);
                self.done = self.total;
                false
            }
        }
    }
}

impl Iterator for Stream<'_> {
    type Item = (u32, u32);

    #[inline(always)]
    fn next(&mut self) -> Option<(u32, u32)> {
        if self.scan.mask != 0 {
            return self.scan.next(&[]);
        }
        self.next_block()
    }
}

impl Stream<'_> {
    /// [`Iterator::next`] when the block in hand has nothing left: loads blocks, reading the
    /// table on, until one has an allocated entry.
    fn next_block(&mut self) -> Option<(u32, u32)> {
        loop {
            if self.scan.load(&self.buf[..self.filled]) {
                return self.scan.next(&[]);
            }
            if !self.refill() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scan;

    /// The naive reading: every entry, keeping the non-zero ones.
    fn naive(bytes: &[u8], first: u32) -> Vec<(u32, u32)> {
        bytes
            .chunks_exact(4)
            .enumerate()
            .map(|(i, e)| (first + i as u32, u32::from_le_bytes(e.try_into().unwrap())))
            .filter(|p| p.1 != 0)
            .collect()
    }

    #[test]
    fn scan_finds_every_allocated_entry_in_whole_and_partial_blocks() {
        // Tables of 0 to 80 entries (blocks of 16 plus a remainder, and a trailing partial
        // entry), each with one allocated entry at every position in turn, then with a byte set
        // in every byte position (high bytes included).
        for n in 0..80usize {
            for extra in [0usize, 2] {
                for at in 0..n * 4 {
                    let mut bytes = vec![0u8; n * 4 + extra];
                    bytes[at] = 0x80;
                    let got: Vec<_> = Scan::new(&bytes, 7).collect();
                    assert_eq!(got, naive(&bytes, 7), "{n} entries, byte {at}");
                    assert_eq!(got, [(7 + (at / 4) as u32, 0x80 << (8 * (at % 4)))]);
                }
                let mut bytes = vec![0u8; n * 4 + extra];
                bytes.iter_mut().skip(2).step_by(13).for_each(|b| *b = 1);
                assert_eq!(Scan::new(&bytes, 0).collect::<Vec<_>>(), naive(&bytes, 0));
            }
        }
    }
}
