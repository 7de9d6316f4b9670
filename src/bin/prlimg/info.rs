//! `prlimg info`: every header field with its unit, the allocation and the bitmaps.

use std::path::PathBuf;

use parallels_image::report::{allocated_size, gather, BundleInfo, RawInfo};
use parallels_image::{bundle::Bundle, Image, RuleMode};

use crate::output::{emit_with, Failure, Format};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image.
    image: PathBuf,
    /// Output format.
    #[arg(long, value_parser = crate::output::text_format(), default_value = "human")]
    output: Format,
    /// Also draw the file's layout (with the validator's findings marked) and the guest view, as
    /// SVG, to this file (for a bundle: the guest view at the top snapshot, by snapshot).
    #[arg(long, value_name = "OUT.svg")]
    picture: Option<PathBuf>,
    /// Overwrite the --picture file if it exists.
    #[arg(long)]
    force: bool,
    /// The image's format (`raw`: the file is the guest's bytes).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    if args.format == crate::input::ReadFormat::Raw {
        return raw(args);
    }
    if parallels_image::bundle::is_bundle(path) {
        let bundle = Bundle::open(path).map_err(|e| crate::output::bundle_failure(&e))?;
        let info = BundleInfo::of(&bundle, path);
        match args.output {
            Format::Html => return Err(Failure::plain("--output html is for `prlimg check` of an image")),
            Format::Json => emit_with(|w| info.write_json(w))?,
            Format::Human => emit_with(|w| info.write_human(w))?,
        }
        if let Some(out) = &args.picture {
            crate::output::bundle_picture(path, out, args.force)?;
        }
        return Ok(0);
    }
    let input = crate::input::open(path)?;
    let image = Image::parse_compact(input.source(), RuleMode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let actual_size = if path.as_os_str() == "-" {
        None
    } else {
        allocated_size(path)
    };
    let info = gather(&image, path.display().to_string(), actual_size);
    if let Some(out) = &args.picture {
        let report = parallels_image::validate(&image).map_err(|e| Failure::lib(path, &e))?;
        crate::output::write_svg(out, args.force, &parallels_image::picture::layout_svg(&image, &report))?;
    }
    match args.output {
        Format::Json => emit_with(|w| info.write_json(w))?,
        Format::Human => emit_with(|w| info.write_human(w))?,
        Format::Html => return Err(Failure::plain("--output html is for `prlimg check`")),
    }
    Ok(0)
}

/// `info -f raw`: what `qemu-img info -f raw` says of a raw file: its size is the guest's, and
/// how much of it is stored (its data ranges; the rest are holes).
fn raw(args: &Args) -> Outcome {
    let path = &args.image;
    if args.picture.is_some() {
        return Err(Failure::plain(
            "--picture draws a Parallels image or bundle, not a raw file",
        ));
    }
    let (size, ranges) = crate::input::raw_ranges(path, "info")?;
    let info = RawInfo::new(path.display().to_string(), size, &ranges);
    match args.output {
        Format::Json => emit_with(|w| info.write_json(w))?,
        _ => emit_with(|w| info.write_human(w))?,
    }
    Ok(0)
}
