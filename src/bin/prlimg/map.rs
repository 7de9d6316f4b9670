//! `prlimg map SRC`: where each guest extent's bytes are (which file, which host offset) or
//! that it reads as zeros, for an `.hds`, a bundle folder or its XML (`--snapshot GUID`).
//! `--output json` prints `qemu-img map --output json`'s shape, byte for byte.

use std::path::PathBuf;

use parallels_image::guest::{raw_extents, write_map_human, write_map_json};
use parallels_image::{bundle::BundleOptions, bundle::GuestDisk};
use uuid::Uuid;

use crate::args::parse_snapshot;
use crate::input::ReadFormat;
use crate::output::{bundle_failure, emit, Failure, Format};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An .hds image, a bundle folder or its DiskDescriptor.xml.
    source: PathBuf,
    /// Map this snapshot of a bundle instead of its top (GUID with or without braces).
    #[arg(long, value_name = "GUID", value_parser = parse_snapshot)]
    snapshot: Option<Uuid>,
    /// Output format.
    #[arg(long, value_parser = crate::output::text_format(), default_value = "human")]
    output: Format,
    /// Follow a bundle's image paths that leave its folder.
    #[arg(long)]
    follow_outside: bool,
    /// The source's format (`raw`: the file is the guest's bytes, its holes zeros).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = ReadFormat::Auto)]
    format: ReadFormat,
}

pub fn run(args: &Args) -> Outcome {
    let (files, extents) = if args.format == ReadFormat::Raw {
        // The file's data ranges map to themselves, its holes read as zeros.
        if args.snapshot.is_some() {
            return Err(Failure::at(
                &args.source,
                "a raw file has no snapshots (--snapshot needs a bundle)",
            ));
        }
        let (size, ranges) = crate::input::raw_ranges(&args.source, "map")?;
        (vec![args.source.clone()], raw_extents(size, &ranges))
    } else {
        let source = crate::input::seekable(&args.source, "map")?;
        let options = BundleOptions {
            follow_outside: args.follow_outside,
        };
        let disk = GuestDisk::open(&source, args.snapshot, options).map_err(|e| bundle_failure(&e))?;
        let extents = disk.try_extents().map_err(|e| Failure::io(&args.source, &e))?;
        (disk.files().to_vec(), extents)
    };
    // Text for a terminal or a pipe: written to memory first (writing to a Vec cannot fail).
    let mut text = Vec::new();
    let _ = match args.output {
        Format::Json => write_map_json(&extents, &mut text),
        Format::Human => write_map_human(&files, &extents, &mut text),
        Format::Html => return Err(Failure::plain("--output html is for `prlimg check` of an image")),
    };
    emit(&String::from_utf8_lossy(&text))?;
    Ok(0)
}
