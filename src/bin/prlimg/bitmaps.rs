//! `prlimg bitmaps`: list the dirty bitmaps, or print one as `nbdinfo --map` prints the
//! `qemu:dirty-bitmap:NAME` context of `qemu-nbd -B NAME`, or write its serialized bits.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use parallels_image::{Bitmap, FileSource, Image, Mode};
use serde::Serialize;

use crate::output::{emit, human_bytes, print_json, Failure};
use crate::Outcome;

/// `--output` for `bitmaps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BitmapFormat {
    /// Text: a table of bitmaps, or `nbdinfo --map` lines.
    Human,
    /// JSON: an object listing the bitmaps, or `nbdinfo --map --json`'s array.
    Json,
    /// The serialized bitmap (one bit per granule, LSB first, 8-byte padded); needs NAME.
    Raw,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image.
    image: PathBuf,
    /// A bitmap name (UUID as QEMU prints it): print its extents instead of the list.
    name: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BitmapFormat::Human)]
    output: BitmapFormat,
}

/// One bitmap in `info` and `bitmaps` JSON.
#[derive(Serialize, Debug)]
pub struct BitmapSummary {
    pub name: String,
    /// Feature number in the extension cluster.
    pub feature: usize,
    /// Bytes.
    pub granularity: u64,
    /// Dirty bytes within the virtual size; null when the bitmap cannot be decoded.
    pub dirty_bytes: Option<u64>,
    pub l1_size: u32,
    /// Why the bitmap cannot be decoded, or null.
    pub error: Option<String>,
}

impl BitmapSummary {
    /// One line for people.
    pub fn human(&self) -> String {
        let dirty = match (self.dirty_bytes, &self.error) {
            (Some(d), _) => format!("{d} dirty bytes ({})", human_bytes(d)),
            (None, Some(e)) => format!("not decodable: {e}"),
            (None, None) => "not decodable".to_string(),
        };
        format!(
            "{}: granularity {} bytes ({}), {dirty}, l1_size {}",
            self.name,
            self.granularity,
            human_bytes(self.granularity),
            self.l1_size
        )
    }
}

/// Dirty bytes of a bitmap within the disk, without holding its extents in memory.
fn dirty_bytes(image: &Image<'_>, b: &Bitmap<'_>) -> parallels_image::Result<u64> {
    let mut total = 0u64;
    for_each_dirty_extent(image, b, |_, len| total += len)?;
    Ok(total)
}

/// Calls `f(offset, length)` for each dirty byte range, clipped to the virtual size, in order.
fn for_each_dirty_extent(
    image: &Image<'_>,
    b: &Bitmap<'_>,
    mut f: impl FnMut(u64, u64),
) -> parallels_image::Result<()> {
    let gb = b.granularity_bytes();
    let size = image.header().virtual_size();
    b.for_each_dirty_run(image, |s, l| {
        let start = s.saturating_mul(gb).min(size);
        let end = s.saturating_add(l).saturating_mul(gb).min(size);
        if end > start {
            f(start, end - start);
        }
    })
}

pub fn summarize(image: &Image<'_>, b: &Bitmap<'_>) -> BitmapSummary {
    let (dirty, error) = match dirty_bytes(image, b) {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e.to_string())),
    };
    BitmapSummary {
        name: b.name(),
        feature: b.feature,
        granularity: b.granularity_bytes(),
        dirty_bytes: dirty,
        l1_size: b.header.l1_size.get(),
        error,
    }
}

#[derive(Serialize)]
struct List {
    filename: String,
    bitmaps: Vec<BitmapSummary>,
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    let source = FileSource::open(path).map_err(|e| Failure::io(path, &e))?;
    // Bitmaps need the header and the extension only, not the BAT.
    let image = Image::parse_without_bat(&source, Mode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let Some(name) = &args.name else {
        let bitmaps: Vec<BitmapSummary> = image.bitmaps().iter().map(|b| summarize(&image, b)).collect();
        match args.output {
            BitmapFormat::Json => print_json(&List {
                filename: path.display().to_string(),
                bitmaps,
            })?,
            BitmapFormat::Human => emit(&bitmaps.iter().map(|b| b.human() + "\n").collect::<String>())?,
            BitmapFormat::Raw => return Err(Failure::plain("--output raw needs a bitmap NAME")),
        }
        return Ok(0);
    };
    let bitmap = image
        .bitmap(name)
        .ok_or_else(|| Failure::at(path, format!("no bitmap named {name:?}")))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = match args.output {
        BitmapFormat::Raw => match bitmap.write_serialized(&image, &mut out) {
            Ok(()) => Ok(()),
            Err(parallels_image::Error::Io(e)) => Err(e),
            Err(e) => return Err(Failure::lib(path, &e)),
        },
        BitmapFormat::Human | BitmapFormat::Json => {
            write_map(&image, &bitmap, args.output == BitmapFormat::Json, &mut out).map_err(|e| match e {
                MapError::Image(e) => Failure::lib(path, &e),
                MapError::Out(e) => Failure::stdout(&e),
            })?;
            Ok(())
        }
    };
    written.and_then(|()| out.flush()).map_err(|e| Failure::stdout(&e))?;
    Ok(0)
}

enum MapError {
    Image(parallels_image::Error),
    Out(io::Error),
}

/// Writes the whole disk, 0 to the virtual size, as alternating clean (type 0) and dirty
/// (type 1) extents, in `nbdinfo --map`'s text or `--json` layout.
fn write_map(image: &Image<'_>, b: &Bitmap<'_>, json: bool, out: &mut dyn Write) -> Result<(), MapError> {
    let size = image.header().virtual_size();
    let mut printer = MapPrinter {
        out,
        json,
        first: true,
        error: None,
    };
    if json {
        printer.raw("[\n");
    }
    let mut pos = 0u64;
    for_each_dirty_extent(image, b, |off, len| {
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
    if json {
        printer.raw("\n]\n");
    }
    match printer.error {
        Some(e) => Err(MapError::Out(e)),
        None => Ok(()),
    }
}

struct MapPrinter<'a> {
    out: &'a mut dyn Write,
    json: bool,
    first: bool,
    /// The first write error; later writes are skipped.
    error: Option<io::Error>,
}

impl MapPrinter<'_> {
    fn raw(&mut self, s: &str) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(s.as_bytes()) {
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
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(&line[..at + 8]) {
                self.error = Some(e);
            }
        }
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
