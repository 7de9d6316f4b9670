//! `prlimg info`: every header field with its unit, the allocation and the bitmaps.

use std::path::PathBuf;

use parallels_image::qemu::{self, QemuOutcome};
use parallels_image::{ploop::CbtOutcome, Bitmap, BitmapSummary, Header, Image, Mode, Variant, JSON_SCHEMA};
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
    /// (a wrong extension magic or checksum); where QEMU 7.2 opens or checks it otherwise than
    /// QEMU 10. Empty when all accept it alike.
    pub warnings: Vec<String>,
    /// qemu-img's own keys beside ours (`children`, `virtual-size`, `actual-size`), when
    /// `qemu-img info` opens the image.
    #[serde(flatten)]
    pub qemu_img: Option<QemuImgTop>,
    /// The whole object `qemu-img info -f parallels --output json` prints, or null when it
    /// cannot open the image.
    pub qemu_img_info: Option<QemuImgInfo>,
}

/// The keys of `qemu-img info --output json` that ours do not already hold.
#[derive(Serialize, Debug, Clone)]
pub struct QemuImgTop {
    children: Vec<QemuImgChild>,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", skip_serializing_if = "Option::is_none")]
    actual_size: Option<u64>,
}

/// `qemu-img info -f parallels --output json` (QEMU 10.0.2), keys in its order: the format
/// node (the guest's size, no cluster size or dirty flag: the driver reports neither) and its
/// one child, the file (its length, `format-specific` of type `file`, `dirty-flag` false).
/// `actual-size` is the space the file takes on its file system (`st_blocks` × 512).
#[derive(Serialize, Debug, Clone)]
pub struct QemuImgInfo {
    children: Vec<QemuImgChild>,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    filename: String,
    format: &'static str,
    #[serde(rename = "actual-size", skip_serializing_if = "Option::is_none")]
    actual_size: Option<u64>,
}

#[derive(Serialize, Debug, Clone)]
struct QemuImgChild {
    name: &'static str,
    info: QemuImgFile,
}

#[derive(Serialize, Debug, Clone)]
struct QemuImgFile {
    children: [(); 0],
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    filename: String,
    format: &'static str,
    #[serde(rename = "actual-size", skip_serializing_if = "Option::is_none")]
    actual_size: Option<u64>,
    #[serde(rename = "format-specific")]
    format_specific: FileSpecific,
    #[serde(rename = "dirty-flag")]
    dirty_flag: bool,
}

#[derive(Serialize, Debug, Clone)]
struct FileSpecific {
    r#type: &'static str,
    data: std::collections::BTreeMap<(), ()>,
}

/// What `qemu-img info` prints for the image at `filename` (`actual_size`: the file's
/// allocated bytes, when known), or `None` when QEMU 10 does not open it.
fn qemu_img_info(image: &Image<'_>, filename: &str, actual_size: Option<u64>) -> Option<QemuImgInfo> {
    if !matches!(qemu::predict_image(image).info, QemuOutcome::Opens { .. }) {
        return None;
    }
    let file = QemuImgFile {
        children: [],
        virtual_size: image.file_len().next_multiple_of(512),
        filename: filename.to_string(),
        format: "file",
        actual_size,
        format_specific: FileSpecific {
            r#type: "file",
            data: std::collections::BTreeMap::new(),
        },
        dirty_flag: false,
    };
    Some(QemuImgInfo {
        children: vec![QemuImgChild {
            name: "file",
            info: file,
        }],
        virtual_size: image.header().virtual_size(),
        filename: filename.to_string(),
        format: "parallels",
        actual_size,
    })
}

/// The space a regular file or block device takes (`st_blocks` × 512, as QEMU's `actual-size`).
#[cfg(unix)]
pub fn allocated_size(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() || crate::input::is_block_device(&meta)).then(|| meta.blocks() * 512)
}

#[cfg(not(unix))]
pub fn allocated_size(_: &std::path::Path) -> Option<u64> {
    None
}

/// Warnings for `info`: whether QEMU 10 opens the image (and QEMU 7.2 alike, with the same
/// `qemu-img check` exit) and ploop loads its bitmaps.
fn warnings(image: &Image<'_>) -> Vec<String> {
    let p = qemu::predict_image(image);
    let mut w = Vec::new();
    match &p.info {
        QemuOutcome::Opens { .. } => {}
        QemuOutcome::Rejects { message, .. } => w.push(format!("QEMU 10 refuses this image: {message}")),
        QemuOutcome::Aborts { assertion, .. } => w.push(format!("QEMU 10 aborts on this image: {assertion}")),
        QemuOutcome::Crashes { signal, .. } => w.push(format!("QEMU 10 crashes on this image (signal {signal})")),
        _ => w.push("QEMU 10 cannot open this image (prlimg check says why)".to_string()),
    }
    // Where QEMU 7.2 (Debian 12's) does otherwise.
    let old = qemu::predict_image_for(image, qemu::Version::V7_2);
    if old.info != p.info {
        let what = match &old.info {
            QemuOutcome::Opens { .. } => "opens this image".to_string(),
            QemuOutcome::Rejects { message, .. } => format!("refuses this image: {message}"),
            QemuOutcome::Aborts { assertion, .. } => format!("aborts on this image: {assertion}"),
            QemuOutcome::Crashes { signal, .. } => format!("crashes on this image (signal {signal})"),
            _ => "cannot open this image".to_string(),
        };
        w.push(format!("QEMU 7.2 differs from QEMU 10: it {what}"));
    }
    let (exit, old_exit) = (p.check.exit_code(), old.check.exit_code());
    if exit != old_exit && matches!(old.info, QemuOutcome::Opens { .. }) {
        let code = |c: Option<i32>| c.map_or("?".to_string(), |c| c.to_string());
        w.push(format!(
            "qemu-img check exits {} with QEMU 7.2 and {} with QEMU 10 (prlimg check --qemu all says why)",
            code(old_exit),
            code(exit)
        ));
    }
    // ploop's CBT loader alone: its check's walk of the table is not needed here.
    if let Ok(cbt) = parallels_image::ploop::predict_ploop_cbt(image.source(), "") {
        if matches!(cbt.outcome, CbtOutcome::Refuses | CbtOutcome::Crashes) {
            w.push("ploop does not load the bitmaps of this extension (prlimg check says why)".to_string());
        }
    }
    w
}

/// [`Info`] of `image`, named `filename`; `actual_size` as qemu-img's (`None`: not a file QEMU
/// opens by name).
pub fn gather(image: &Image<'_>, filename: String, actual_size: Option<u64>) -> Info {
    let qemu_img_info = qemu_img_info(image, &filename, actual_size);
    Info {
        qemu_img: qemu_img_info.as_ref().map(|q| QemuImgTop {
            children: q.children.clone(),
            virtual_size: q.virtual_size,
            actual_size: q.actual_size,
        }),
        qemu_img_info,
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
    if args.format == crate::input::ReadFormat::Raw {
        return raw(args);
    }
    if parallels_image::bundle::is_bundle(path) {
        let code = crate::bundle::info(path, args.output)?;
        if let Some(out) = &args.picture {
            crate::picture::bundle(path, out, args.force)?;
        }
        return Ok(code);
    }
    let input = crate::input::open(path)?;
    let image = Image::parse_compact(input.source(), Mode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let actual_size = if path.as_os_str() == "-" {
        None
    } else {
        allocated_size(path)
    };
    let info = gather(&image, path.display().to_string(), actual_size);
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
    let stored: u64 = ranges.iter().map(|r| r.1).sum();
    match args.output {
        Format::Json => print_json(&serde_json::json!({
            "schema": JSON_SCHEMA,
            "filename": path.display().to_string(),
            "format": "raw",
            "virtual_size": size,
            "data_bytes": stored,
        }))?,
        _ => {
            let mut out = String::new();
            outln!(out, "image: {}", path.display());
            outln!(out, "file format: raw");
            outln!(out, "virtual size: {} ({size} bytes)", human_bytes(size));
            outln!(
                out,
                "data: {} ({stored} bytes; the rest are holes)",
                human_bytes(stored)
            );
            emit(&out)?;
        }
    }
    Ok(0)
}
