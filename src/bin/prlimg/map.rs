//! `prlimg map SRC`: where each guest extent's bytes are (which file, which host offset) or
//! that it reads as zeros, for an `.hds`, a bundle folder or its XML (`--snapshot GUID`).
//! `--output json` prints `qemu-img map --output json`'s shape, byte for byte.

use std::io::Write;
use std::path::PathBuf;

use parallels_image::bundle::Extent;
use parallels_image::guest::{raw_extents, write_map, MapOutputError};
use parallels_image::{bundle::BundleOptions, bundle::GuestDisk};
use uuid::Uuid;

use crate::args::parse_snapshot;
use crate::input::ReadFormat;
use crate::output::{bundle_failure, Failure, Format};
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
    if args.output == Format::Html {
        return Err(Failure::plain("--output html is for `prlimg check` of an image"));
    }
    if args.format == ReadFormat::Raw {
        // The file's data ranges map to themselves, its holes read as zeros.
        if args.snapshot.is_some() {
            return Err(Failure::at(
                &args.source,
                "a raw file has no snapshots (--snapshot needs a bundle)",
            ));
        }
        let (size, ranges) = crate::input::raw_ranges(&args.source, "map")?;
        let extents = raw_extents(size, &ranges);
        return print(args, std::slice::from_ref(&args.source), extents.into_iter().map(Ok));
    }
    let source = crate::input::seekable(&args.source, "map")?;
    let options = BundleOptions {
        follow_outside: args.follow_outside,
    };
    let disk = GuestDisk::open(&source, args.snapshot, options).map_err(|e| bundle_failure(&e))?;
    print(args, disk.files(), disk.extent_iter())
}

/// Prints the map as the extents come (the tables are read as it goes): memory stays the same
/// whatever the number of extents. A table that cannot be read ends it with the error; with
/// `-q` nothing is printed, but the map is still made (and a failure to make it reported).
fn print(args: &Args, files: &[PathBuf], extents: impl Iterator<Item = std::io::Result<Extent>>) -> Outcome {
    let mut out: Box<dyn Write> = match crate::output::quiet() {
        true => Box::new(std::io::sink()),
        false => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())),
    };
    write_map(files, extents, args.output == Format::Json, &mut out).map_err(|e| match e {
        MapOutputError::Read(e) => Failure::io(&args.source, &e),
        MapOutputError::Write(e) => Failure::stdout(&e),
    })?;
    Ok(0)
}
