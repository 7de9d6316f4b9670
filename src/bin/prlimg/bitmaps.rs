//! `prlimg bitmaps`: list the dirty bitmaps, or print one as `nbdinfo --map` prints the
//! `qemu:dirty-bitmap:NAME` context of `qemu-nbd -B NAME`, or write its serialized bits.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use parallels_image::{Bitmap, BitmapSummary, Image, MapError, MapFormat, Mode, JSON_SCHEMA};
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

/// One line for people.
pub fn human(b: &BitmapSummary) -> String {
    let dirty = match (b.dirty_bytes, &b.error) {
        (Some(d), _) => format!("{d} dirty bytes ({})", human_bytes(d)),
        (None, Some(e)) => format!("not decodable: {e}"),
        (None, None) => "not decodable".to_string(),
    };
    format!(
        "{}: granularity {} bytes ({}), {dirty}, l1_size {}",
        b.name,
        b.granularity,
        human_bytes(b.granularity),
        b.l1_size
    )
}

#[derive(Serialize)]
struct List {
    schema: u32,
    filename: String,
    bitmaps: Vec<BitmapSummary>,
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    let input = crate::input::open(path)?;
    // Bitmaps need the header and the extension only, not the BAT.
    let image = Image::parse_without_bat(input.source(), Mode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let Some(name) = &args.name else {
        let bitmaps: Vec<BitmapSummary> = image.bitmaps().iter().map(Bitmap::summary).collect();
        match args.output {
            BitmapFormat::Json => print_json(&List {
                schema: JSON_SCHEMA,
                filename: path.display().to_string(),
                bitmaps,
            })?,
            BitmapFormat::Human if bitmaps.is_empty() => emit(if image.extension().is_some() {
                "no bitmaps (the Format Extension holds none)\n"
            } else {
                "no bitmaps (the image has no Format Extension)\n"
            })?,
            BitmapFormat::Human => emit(&bitmaps.iter().map(|b| human(b) + "\n").collect::<String>())?,
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
        BitmapFormat::Raw => match bitmap.write_serialized(&mut out) {
            Ok(()) => Ok(()),
            Err(parallels_image::Error::Io(e)) => Err(e),
            Err(e) => return Err(Failure::lib(path, &e)),
        },
        BitmapFormat::Human | BitmapFormat::Json => {
            let format = if args.output == BitmapFormat::Json {
                MapFormat::Json
            } else {
                MapFormat::Text
            };
            bitmap.write_map(format, &mut out).map_err(|e| match e {
                MapError::Image(e) => Failure::lib(path, &e),
                MapError::Output(e) => Failure::stdout(&e),
            })?;
            Ok(())
        }
    };
    written.and_then(|()| out.flush()).map_err(|e| Failure::stdout(&e))?;
    Ok(0)
}
