//! `prlimg map SRC`: where each guest extent's bytes are (which file, which host offset) or
//! that it reads as zeros, for an `.hds`, a bundle folder or its XML (`--snapshot GUID`).
//! `--output json` prints `qemu-img map --output json`'s shape, byte for byte.

use std::io::Write;
use std::path::PathBuf;

use parallels_image::bundle::Extent;
use parallels_image::guest::{raw_extents, write_map_human_from, write_map_json_from};
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
/// whatever the number of extents. A table that cannot be read ends it with the error.
fn print(args: &Args, files: &[PathBuf], extents: impl Iterator<Item = std::io::Result<Extent>>) -> Outcome {
    if crate::output::quiet() {
        // Nothing printed, but the map is still made (and a failure to make it reported).
        for e in extents {
            e.map_err(|e| Failure::io(&args.source, &e))?;
        }
        return Ok(0);
    }
    // A failure to read the source is told apart from one to write stdout.
    let mut read_error = None;
    let extents = extents.map_while(|e| match e {
        Ok(e) => Some(Ok(e)),
        Err(e) => {
            read_error = Some(e);
            None
        }
    });
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = match args.output {
        Format::Json => write_map_json_from(extents, &mut out),
        _ => write_map_human_from(files, extents, &mut out),
    };
    let written = written.and_then(|()| out.flush());
    if let Some(e) = read_error {
        return Err(Failure::io(&args.source, &e));
    }
    written.map_err(|e| Failure::stdout(&e))?;
    Ok(0)
}
