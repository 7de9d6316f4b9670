//! `prlimg info`: every header field with its unit, the allocation and the bitmaps.

use std::path::PathBuf;

use parallels_image::raw::header::{FLAG_EMPTY, FLAG_FORMAT_CONVERSION, INUSE_CLOSED, INUSE_CLOSED_V21, INUSE_OPEN};
use parallels_image::{FileSource, Image, Mode, Variant};
use serde::Serialize;

use crate::bitmaps::{summarize, BitmapSummary};
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
}

/// `info --output json`. Sizes are bytes unless the key says sectors.
#[derive(Serialize, Debug)]
pub struct Info {
    pub filename: String,
    pub format: &'static str,
    /// File length in bytes.
    pub file_size: u64,
    /// `"v1"` (`WithoutFreeSpace`) or `"v2"` (`WithouFreSpacExt`).
    pub variant: &'static str,
    pub magic: String,
    pub version: u32,
    pub heads: u32,
    pub cylinders: u32,
    /// Cluster size in sectors.
    pub tracks: u32,
    pub cluster_size: u64,
    pub bat_entries: u32,
    /// As stored (a v1 reader uses only the low 32 bits).
    pub nb_sectors: u64,
    /// Bytes, as readers see it.
    pub virtual_size: u64,
    pub inuse: u32,
    /// `"closed"`, `"closed-v2.1"`, `"open"` or `"unknown"`.
    pub inuse_state: &'static str,
    /// Sectors, as stored.
    pub data_off: u32,
    /// Bytes: where the data area starts (a v1 `data_off` of 0 means the end of the BAT).
    pub data_offset: u64,
    pub flags: u32,
    /// Names of the known bits set: `"empty"`, `"format-conversion"`.
    pub flag_names: Vec<&'static str>,
    /// Sectors, as stored; 0 = no extension.
    pub ext_off: u64,
    /// Bytes, or null.
    pub ext_offset: Option<u64>,
    pub allocated_clusters: u64,
    pub extension: bool,
    pub bitmaps: Vec<BitmapSummary>,
}

fn inuse_state(inuse: u32) -> (&'static str, &'static str) {
    match inuse {
        INUSE_CLOSED => ("closed", "closed"),
        INUSE_CLOSED_V21 => ("closed-v2.1", "closed, \"v2.1\""),
        INUSE_OPEN => ("open", "\"Ynot\": open or not closed cleanly"),
        _ => ("unknown", "unknown value"),
    }
}

pub fn gather(image: &Image<'_>, filename: String) -> Info {
    let h = image.header();
    let raw = &h.raw;
    let flags = raw.flags.get();
    let mut flag_names = Vec::new();
    if flags & FLAG_EMPTY != 0 {
        flag_names.push("empty");
    }
    if flags & FLAG_FORMAT_CONVERSION != 0 {
        flag_names.push("format-conversion");
    }
    Info {
        filename,
        format: "parallels",
        file_size: image.file_len(),
        variant: match h.variant {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
        },
        magic: String::from_utf8_lossy(&raw.magic).into_owned(),
        version: raw.version.get(),
        heads: raw.heads.get(),
        cylinders: raw.cylinders.get(),
        tracks: raw.tracks.get(),
        cluster_size: h.cluster_size(),
        bat_entries: h.bat_entries,
        nb_sectors: raw.nb_sectors.get(),
        virtual_size: h.virtual_size(),
        inuse: raw.inuse.get(),
        inuse_state: inuse_state(raw.inuse.get()).0,
        data_off: raw.data_off.get(),
        data_offset: h.data_start(),
        flags,
        flag_names,
        ext_off: h.ext_off,
        ext_offset: h.ext_offset(),
        allocated_clusters: image.allocated_clusters(),
        extension: image.extension().is_some(),
        bitmaps: image.bitmaps().iter().map(|b| summarize(image, b)).collect(),
    }
}

pub fn run(args: &Args) -> Outcome {
    let path = &args.image;
    let source = FileSource::open(path).map_err(|e| Failure::io(path, &e))?;
    let image = Image::parse_compact(&source, Mode::Strict).map_err(|e| Failure::lib(path, &e))?;
    let info = gather(&image, path.display().to_string());
    match args.output {
        Format::Json => print_json(&info)?,
        Format::Human => emit(&print_human(&info, image.header().raw.inuse.get()))?,
    }
    Ok(0)
}

fn print_human(i: &Info, inuse: u32) -> String {
    let mut out = String::new();
    outln!(out, "image: {}", i.filename);
    outln!(out, "file format: {}", i.format);
    outln!(out, "file size: {} bytes ({})", i.file_size, human_bytes(i.file_size));
    outln!(out, "magic: {} ({})", i.magic, i.variant);
    outln!(out, "version: {}", i.version);
    outln!(out, "heads: {}", i.heads);
    outln!(out, "cylinders: {}", i.cylinders);
    outln!(out, "tracks: {} sectors", i.tracks);
    outln!(
        out,
        "cluster size: {} bytes ({})",
        i.cluster_size,
        human_bytes(i.cluster_size)
    );
    outln!(out, "bat_entries: {}", i.bat_entries);
    outln!(out, "nb_sectors: {} sectors", i.nb_sectors);
    outln!(
        out,
        "virtual size: {} bytes ({})",
        i.virtual_size,
        human_bytes(i.virtual_size)
    );
    outln!(out, "inuse: {:#010x} ({})", i.inuse, inuse_state(inuse).1);
    outln!(
        out,
        "data_off: {} sectors (data starts at byte {})",
        i.data_off,
        i.data_offset
    );
    if i.flag_names.is_empty() {
        outln!(out, "flags: {:#010x}", i.flags);
    } else {
        outln!(out, "flags: {:#010x} ({})", i.flags, i.flag_names.join(", "));
    }
    match i.ext_offset {
        Some(b) => outln!(out, "ext_off: {} sectors (byte {b})", i.ext_off),
        None => outln!(out, "ext_off: 0 (no extension)"),
    }
    outln!(out, "allocated clusters: {} of {}", i.allocated_clusters, i.bat_entries);
    outln!(out, "extension: {}", if i.extension { "present" } else { "absent" });
    if i.bitmaps.is_empty() {
        outln!(out, "bitmaps: none");
    } else {
        outln!(out, "bitmaps:");
        for b in &i.bitmaps {
            outln!(out, "    {}", b.human());
        }
    }
    out
}
