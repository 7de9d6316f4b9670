//! An image opened over a [`Source`]: the header, a zero-copy view of the BAT, the extension
//! walk and the bitmaps. Only metadata is read: header, BAT, extension cluster, bitmap clusters.

use std::borrow::Cow;

use zerocopy::little_endian::U32;
use zerocopy::FromBytes;

use crate::bitmap::Bitmap;
use crate::error::{Error, Result, Severity};
use crate::extension::Extension;
use crate::header::Header;
use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::bitmap::BITMAP_HEADER_SIZE;
use crate::raw::feature::FEATURE_DIRTY_BITMAP;
use crate::raw::header::{RawHeader, HEADER_SIZE};
use crate::source::Source;
use crate::validate::{self, Report};

/// How strictly to treat what the format allows but this crate does not interpret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Unknown features and feature flags are corruption (QEMU's behaviour).
    #[default]
    Strict,
    /// Unknown features and features with flags are kept as opaque records (ploop's behaviour).
    Lenient,
}

/// A parsed image. Parsing checks only what is needed to interpret the rest (rules R1–R6); run
/// [`Image::validate`] for every rule, or use [`Image::open`] to do both.
pub struct Image<'s> {
    source: &'s (dyn Source + 's),
    file_len: u64,
    header: Header,
    bat: Cow<'s, [u8]>,
    extension: Option<Extension<'s>>,
    mode: Mode,
}

impl std::fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("file_len", &self.file_len)
            .field("header", &self.header)
            .field(
                "extension",
                &self.extension.as_ref().map(|e| (e.file_offset, e.features.len())),
            )
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'s> Image<'s> {
    /// Parses without validating beyond R1–R6, in strict mode.
    pub fn parse(source: &'s (dyn Source + 's)) -> Result<Image<'s>> {
        Self::parse_with(source, Mode::Strict)
    }

    /// Parses without validating beyond R1–R6.
    pub fn parse_with(source: &'s (dyn Source + 's), mode: Mode) -> Result<Image<'s>> {
        let file_len = source.size();
        let head = source.read_at(0, HEADER_SIZE as u64)?;
        let raw = RawHeader::read_padded(&head);
        let header = Header::decode(&raw)?;
        // Only the part of the BAT that is in the file is read; the rest reads as zeros.
        let bat_len = BAT_ENTRY_SIZE * u64::from(header.bat_entries);
        let mut bat = source.read_at(BAT_OFFSET, bat_len)?;
        let whole = bat.len() / 4 * 4;
        if whole != bat.len() {
            bat = match bat {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..whole]),
                Cow::Owned(mut v) => {
                    v.truncate(whole);
                    Cow::Owned(v)
                }
            };
        }
        let extension = match header.ext_offset() {
            None => None,
            Some(off) => {
                let bytes = source.read_at(off, header.cluster_size())?;
                Some(Extension::walk(off, header.cluster_size(), bytes))
            }
        };
        Ok(Image {
            source,
            file_len,
            header,
            bat,
            extension,
            mode,
        })
    }

    /// Parses and validates in strict mode; fails with the first corruption found.
    pub fn open(source: &'s (dyn Source + 's)) -> Result<Image<'s>> {
        Self::open_with(source, Mode::Strict)
    }

    /// Parses and validates; fails with the first corruption found.
    pub fn open_with(source: &'s (dyn Source + 's), mode: Mode) -> Result<Image<'s>> {
        let image = Self::parse_with(source, mode)?;
        let report = image.validate()?;
        if let Some(f) = report.findings.into_iter().find(|f| f.severity == Severity::Corruption) {
            return Err(Error::Invalid(f.violation));
        }
        Ok(image)
    }

    /// Runs every rule and reports all findings.
    pub fn validate(&self) -> Result<Report> {
        validate::validate(self)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The mode the image was parsed in.
    pub fn mode(&self) -> Mode {
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

    /// The BAT entries that are in the file, viewed in place. Entries past the end of the file
    /// (if the file is that short) are not included and read as 0 through [`Image::bat_entry`].
    pub fn bat(&self) -> &[U32] {
        <[U32]>::ref_from_bytes(&self.bat).expect("BAT bytes are a whole number of entries")
    }

    /// BAT entry `index` (0 past the end of the file or of the table).
    pub fn bat_entry(&self, index: u32) -> u32 {
        self.bat().get(index as usize).map_or(0, |e| e.get())
    }

    /// File offset of guest cluster `index`'s data, `None` if unallocated.
    pub fn cluster_offset(&self, index: u32) -> Option<u64> {
        self.header.bat_entry_offset(self.bat_entry(index))
    }

    /// Allocated (non-zero) BAT entries.
    pub fn allocated_clusters(&self) -> u64 {
        self.bat().iter().filter(|e| e.get() != 0).count() as u64
    }

    /// The extension cluster, if the header points at one.
    pub fn extension(&self) -> Option<&Extension<'s>> {
        self.extension.as_ref()
    }

    /// The dirty bitmaps: features with the bitmap magic, no flags and a complete 32-byte header.
    pub fn bitmaps(&self) -> Vec<Bitmap<'_>> {
        let Some(ext) = &self.extension else { return Vec::new() };
        ext.features
            .iter()
            .filter(|f| {
                f.header.magic.get() == FEATURE_DIRTY_BITMAP
                    && f.header.flags.get() == 0
                    && f.header.data_size.get() as usize >= BITMAP_HEADER_SIZE
            })
            .map(|f| Bitmap::new(self, ext, f))
            .collect()
    }

    /// The bitmap with this name (UUID string as QEMU prints it).
    pub fn bitmap(&self, name: &str) -> Option<Bitmap<'_>> {
        self.bitmaps().into_iter().find(|b| b.name() == name)
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
            match u32::try_from(index).ok().and_then(|i| self.cluster_offset(i)) {
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
