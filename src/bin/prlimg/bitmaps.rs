//! `prlimg bitmaps`: list the dirty bitmaps, or print one as `nbdinfo --map` prints the
//! `qemu:dirty-bitmap:NAME` context of `qemu-nbd -B NAME`, or write its serialized bits.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use parallels_image::report::BitmapList;
use parallels_image::{
    edit::edit_bitmaps_file, edit::BitmapEdit, Bitmap, BitmapSpec, Error, Image, MapError, MapFormat, RuleMode,
};

use crate::output::{emit_with, Failure};
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// Change the bitmaps: write a copy of an image with a bitmap added or removed, or none.
    #[command(subcommand)]
    edit: Option<Edit>,
    /// The image.
    #[arg(required = true)]
    image: Option<PathBuf>,
    /// A bitmap name (UUID as QEMU prints it): print its extents instead of the list.
    name: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BitmapFormat::Human)]
    output: BitmapFormat,
    /// Draw the dirty map (of NAME, or of every bitmap side by side) as SVG to this file
    /// instead of printing.
    #[arg(long, value_name = "OUT.svg")]
    picture: Option<PathBuf>,
    /// Overwrite the --picture file if it exists.
    #[arg(long)]
    force: bool,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no bitmaps).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
}

/// `bitmaps add|remove|clear`: the data clusters are copied as they are, the new extension and
/// bitmap clusters go after them; never in place unless `--in-place` (then atomically).
#[derive(clap::Subcommand, Debug)]
pub enum Edit {
    /// Copy IN to OUT with one more bitmap.
    Add {
        #[command(flatten)]
        io: EditIo,
        /// The bitmap: UUID:GRANULARITY:OFFSET+LEN,... (dirty ranges may be empty).
        #[arg(long, value_name = "UUID:GRANULARITY:OFFSET+LEN,...", value_parser = crate::args::parse_bitmap)]
        bitmap: BitmapSpec,
    },
    /// Copy IN to OUT without the bitmap NAME: `remove IN OUT NAME`, or `remove IN NAME --in-place`.
    Remove {
        /// IN OUT NAME (or IN NAME with --in-place).
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
        /// Replace IN itself (written aside, then renamed over it).
        #[arg(long)]
        in_place: bool,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        /// Also set the header's inuse (v2.1: ploop loads the bitmaps).
        #[arg(long, value_parser = crate::args::parse_inuse)]
        inuse: Option<u32>,
    },
    /// Copy IN to OUT without any bitmap (and without the extension).
    Clear {
        #[command(flatten)]
        io: EditIo,
    },
}

#[derive(clap::Args, Debug)]
pub struct EditIo {
    /// The image to read.
    input: PathBuf,
    /// The image to write (omitted with --in-place).
    #[arg(required_unless_present = "in_place")]
    output: Option<PathBuf>,
    /// Replace IN itself (written aside, then renamed over it).
    #[arg(long, conflicts_with = "output")]
    in_place: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Also set the header's inuse (v2.1: ploop loads the bitmaps).
    #[arg(long, value_parser = crate::args::parse_inuse)]
    inuse: Option<u32>,
}

fn run_edit(edit: &Edit) -> Outcome {
    let (input, output, what, force, inuse) = match edit {
        Edit::Add { io, bitmap } => (
            io.input.clone(),
            io.output.clone(),
            BitmapEdit::Add(bitmap.clone()),
            io.force,
            io.inuse,
        ),
        Edit::Clear { io } => (
            io.input.clone(),
            io.output.clone(),
            BitmapEdit::Clear,
            io.force,
            io.inuse,
        ),
        Edit::Remove {
            args,
            in_place,
            force,
            inuse,
        } => {
            let (input, output, name) = match (&args[..], in_place) {
                ([i, o, n], false) => (PathBuf::from(i), Some(PathBuf::from(o)), n),
                ([i, n], true) => (PathBuf::from(i), None, n),
                (_, false) => return Err(Failure::plain("remove takes IN OUT NAME (or IN NAME with --in-place)")),
                (_, true) => return Err(Failure::plain("with --in-place, remove takes IN NAME")),
            };
            let id = uuid::Uuid::parse_str(name)
                .map_err(|e| Failure::plain(format!("invalid bitmap name {name:?}: {e}")))?;
            (input, output, BitmapEdit::Remove(*id.as_bytes()), *force, *inuse)
        }
    };
    let target = output.clone().unwrap_or_else(|| input.clone());
    match edit_bitmaps_file(&input, &target, &what, inuse, force) {
        Ok(_) => Ok(0),
        Err(Error::Build(e)) => Err(Failure::at(&input, e.to_string())),
        Err(e) => Err(Failure::lib_writing(&input, &target, &e)),
    }
}

pub fn run(args: &Args) -> Outcome {
    if let Some(edit) = &args.edit {
        return run_edit(edit);
    }
    let path = args.image.as_ref().expect("clap requires IMAGE without a subcommand");
    crate::input::refuse_raw(path, args.format, "bitmaps", "a raw file has no bitmaps")?;
    let input = crate::input::open(path)?;
    // Bitmaps need the header and the extension only, not the BAT.
    let image = Image::parse_without_bat(input.source(), RuleMode::Strict).map_err(|e| Failure::lib(path, &e))?;
    if let Some(out) = &args.picture {
        let chosen: Vec<Bitmap<'_>> = match &args.name {
            Some(name) => vec![image
                .bitmap_named(name)
                .ok_or_else(|| Failure::at(path, format!("no bitmap named {name:?}")))?],
            None => image.bitmaps(),
        };
        crate::output::write_svg(out, args.force, &parallels_image::picture::bitmaps_svg(&image, &chosen))?;
        return Ok(0);
    }
    let Some(name) = &args.name else {
        let list = BitmapList::of(&image, path.display().to_string());
        match args.output {
            BitmapFormat::Json => emit_with(|w| list.write_json(w))?,
            BitmapFormat::Human => emit_with(|w| list.write_human(w))?,
            BitmapFormat::Raw => return Err(Failure::plain("--output raw needs a bitmap NAME")),
        }
        return Ok(0);
    };
    let bitmap = image
        .bitmap_named(name)
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
