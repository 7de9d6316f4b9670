//! `prlimg repair IN OUT`: a plan of typed actions (the rule each fixes, the bytes it touches,
//! what is lost), then the repaired copy; the extension and its bitmaps are kept. Also
//! `prlimg check -r leaks|all IMAGE` (in place, as `qemu-img check -r` is spelled). On a bundle:
//! the descriptor repaired where the storage is intact, and each image by the image repair.

use std::path::PathBuf;

use parallels_image::repair::RepairLevel;

use crate::output::{repair_path, Failure};
use crate::Outcome;

/// `--output` for `repair`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Human,
    /// JSON: the plan as typed records.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The damaged image, or bundle (`NAME.hdd` folder or its DiskDescriptor.xml) (read only,
    /// unless --in-place). A bundle's descriptor is repaired where its storage is intact (the
    /// images prove the sizes, the block size, the top; GUIDs without braces, repeated Shots,
    /// geometry, version, padding, marker) and each of its images by the image repair at the
    /// same level; a missing image, two candidate parents or a cycle is refused, never guessed.
    input: PathBuf,
    /// The repaired copy to write (refused if it exists, unless --force; not with --in-place).
    /// For a bundle, a new bundle folder; --in-place replaces each repaired image, then
    /// DiskDescriptor.xml, each written aside and renamed over.
    #[arg(required_unless_present_any = ["in_place", "dry_run"], conflicts_with = "in_place")]
    output: Option<PathBuf>,
    /// Repair only what loses no guest byte and no bitmap (the default).
    #[arg(long, conflicts_with = "all")]
    leaks: bool,
    /// Also repair corruption, each fix losing the least (lost guest ranges and bitmaps are listed).
    #[arg(long)]
    all: bool,
    /// Print the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format of the plan.
    #[arg(long = "output", value_enum, default_value_t = Format::Human)]
    output_format: Format,
    /// Repair INPUT itself: the repaired image is written aside, flushed and renamed over it
    /// (its permissions kept). Refused on a device or a stream.
    #[arg(long)]
    in_place: bool,
    /// Replace OUTPUT if it is a regular file (a device, FIFO or folder is never replaced).
    #[arg(long)]
    force: bool,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no structure to repair).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
}

pub fn run(args: &Args) -> Outcome {
    crate::input::refuse_raw(
        &args.input,
        args.format,
        "repair",
        "a raw file has no structure to repair",
    )?;
    let level = if args.all { RepairLevel::All } else { RepairLevel::Leaks };
    let output = if args.in_place {
        None
    } else {
        match &args.output {
            Some(o) => Some(o.as_path()),
            None if args.dry_run => None,
            None => return Err(Failure::plain("repair needs OUTPUT, or --in-place")),
        }
    };
    repair_path(
        &args.input,
        output,
        level,
        args.dry_run,
        args.force,
        Some(args.output_format == Format::Json),
    )
}
