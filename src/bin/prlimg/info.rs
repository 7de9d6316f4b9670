//! `prlimg info`: every header field with its unit, the allocation and the bitmaps.

use std::path::PathBuf;

use parallels_image::qemu::{self, QemuOutcome};
use parallels_image::{Bitmap, BitmapSummary, CbtOutcome, Header, Image, Mode, Variant, JSON_SCHEMA};
use serde::Serialize;

use crate::bitmaps::human;
use crate::outln;
use crate::output::{emit, human_bytes, print_json, Failure, Format};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image.
    image: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Also draw the file's layout (with the validator's findings marked) and the guest view, as
    /// SVG, to this file (for a bundle: the guest view at the top snapshot, by snapshot).
    #[arg(long, value_name = "OUT.svg")]
    picture: Option<PathBuf>,
    /// Overwrite the --picture file if it exists.
    #[arg(long)]
    force: bool,
}

/// `info --output json`: the header's fields (see [`Header`]'s JSON), the file, the allocation
/// and the bitmaps. Sizes are bytes unless the key says sectors.
#[derive(Serialize, Debug)]
pub struct Info {
    pub schema: u32,
    pub filename: String,
    pub format: &'static str,
    /// File length in bytes.
    pub file_size: u64,
    #[serde(flatten)]
    pub header: Header,
    pub allocated_clusters: u64,
    pub extension: bool,
    pub bitmaps: Vec<BitmapSummary>,
    /// What readers will refuse: QEMU 10 not opening the image, ploop not loading the bitmaps
    /// (a wrong extension magic or checksum). Empty when both accept it.
    pub warnings: Vec<String>,
}

/// Warnings for `info`: whether QEMU 10 opens the image and ploop loads its bitmaps.
fn warnings(image: &Image<'_>) -> Vec<String> {
    // Only the open's outcome and ploop's CBT loader: neither walks the BAT.
    let info = qemu::predict_info(image);
    let mut w = Vec::new();
    match &info {
        QemuOutcome::Opens { .. } => {}
        QemuOutcome::Rejects { message, .. } => w.push(format!("QEMU 10 refuses this image: {message}")),
        QemuOutcome::Aborts { assertion, .. } => w.push(format!("QEMU 10 aborts on this image: {assertion}")),
        QemuOutcome::Crashes { signal, .. } => w.push(format!("QEMU 10 crashes on this image (signal {signal})")),
        _ => w.push("QEMU 10 cannot open this image (prlimg check says why)".to_string()),
    }
    if let Ok(cbt) = parallels_image::predict_ploop_cbt(image.source(), "") {
        if matches!(cbt.outcome, CbtOutcome::Refuses | CbtOutcome::Crashes) {
            w.push("ploop does not load the bitmaps of this extension (prlimg check says why)".to_string());
        }
    }
    w
}

pub fn gather(image: &Image<'_>, filename: String) -> Info {
    Info {
        schema: JSON_SCHEMA,
        filename,
        format: "parallels",
        file_size: image.file_len(),
        header: *image.header(),
        allocated_clusters: image.allocated_clusters(),
        extension: image.extension().is_some(),
        bitmaps: image.bitmaps().iter().map(Bitmap::summary).collect(),
        warnings: warnings(image),
    }
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    if parallels_image::is_bundle(path) {
        let code = crate::bundle::info(path, args.output)?;
        if let Some(out) = &args.picture {
            crate::picture::bundle(path, out, args.force)?;
        }
        return Ok(code);
    }
    let input = crate::input::open(path)?;
    let image = Image::parse_compact(input.source(), Mode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let info = gather(&image, path.display().to_string());
    if let Some(out) = &args.picture {
        let report = parallels_image::validate(&image).map_err(|e| Failure::lib(path, &e))?;
        crate::picture::write(out, args.force, &crate::picture::layout(&image, &report))?;
    }
    match args.output {
        Format::Json => print_json(&info)?,
        Format::Human => emit(&print_human(&info))?,
        Format::Html => return Err(Failure::plain("--output html is for `prlimg check`")),
    }
    Ok(0)
}

fn print_human(i: &Info) -> String {
    let mut out = String::new();
    let h = &i.header;
    let raw = &h.raw;
    let variant = match h.variant {
        Variant::V1 => "v1",
        Variant::V2 => "v2",
    };
    outln!(out, "image: {}", i.filename);
    outln!(out, "file format: {}", i.format);
    outln!(out, "file size: {} bytes ({})", i.file_size, human_bytes(i.file_size));
    outln!(out, "magic: {} ({variant})", String::from_utf8_lossy(&raw.magic));
    outln!(out, "version: {}", raw.version.get());
    outln!(out, "heads: {}", raw.heads.get());
    outln!(out, "cylinders: {}", raw.cylinders.get());
    outln!(out, "tracks: {} sectors", raw.tracks.get());
    outln!(
        out,
        "cluster size: {} bytes ({})",
        h.cluster_size(),
        human_bytes(h.cluster_size())
    );
    outln!(out, "bat_entries: {}", h.bat_entries);
    outln!(out, "nb_sectors: {} sectors", raw.nb_sectors.get());
    // In qemu-img's order: "virtual size: 64 GiB (68719476736 bytes)".
    outln!(
        out,
        "virtual size: {} ({} bytes)",
        human_bytes(h.virtual_size()),
        h.virtual_size()
    );
    outln!(out, "inuse: {:#010x} ({})", raw.inuse.get(), h.inuse().description());
    outln!(
        out,
        "data_off: {} sectors (data starts at byte {})",
        raw.data_off.get(),
        h.data_start()
    );
    let flag_names = h.flag_names();
    if flag_names.is_empty() {
        outln!(out, "flags: {:#010x}", raw.flags.get());
    } else {
        outln!(out, "flags: {:#010x} ({})", raw.flags.get(), flag_names.join(", "));
    }
    match h.ext_offset() {
        Some(b) => outln!(out, "ext_off: {} sectors (byte {b})", h.ext_off),
        None => outln!(out, "ext_off: 0 (no extension)"),
    }
    outln!(out, "allocated clusters: {} of {}", i.allocated_clusters, h.bat_entries);
    outln!(out, "extension: {}", if i.extension { "present" } else { "absent" });
    for w in &i.warnings {
        outln!(out, "warning: {w}");
    }
    if i.bitmaps.is_empty() {
        outln!(out, "bitmaps: none");
    } else {
        outln!(out, "bitmaps:");
        for b in &i.bitmaps {
            outln!(out, "    {}", human(b));
        }
    }
    out
}
