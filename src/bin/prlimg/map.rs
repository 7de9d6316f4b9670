//! `prlimg map SRC`: where each guest extent's bytes are (which file, which host offset) or
//! that it reads as zeros, for an `.hds`, a bundle folder or its XML (`--snapshot GUID`).
//! `--output json` prints `qemu-img map --output json`'s shape, byte for byte.

use std::path::PathBuf;

use parallels_image::{bundle::BundleOptions, bundle::Extent, bundle::GuestDisk, bundle::Mapping};
use uuid::Uuid;

use crate::convert::{bundle_failure, parse_snapshot};
use crate::input::ReadFormat;
use crate::outln;
use crate::output::{emit, Format};
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
    if args.format == ReadFormat::Raw {
        return raw(args);
    }
    let source = crate::input::seekable(&args.source, "map")?;
    let disk = GuestDisk::open(
        &source,
        args.snapshot,
        BundleOptions {
            follow_outside: args.follow_outside,
        },
    )
    .map_err(|e| bundle_failure(&e))?;
    let extents = disk.extents();
    let text = match args.output {
        Format::Json => json(&extents),
        Format::Human => human(disk.files(), &extents),
        Format::Html => {
            return Err(crate::output::Failure::plain(
                "--output html is for `prlimg check` of an image",
            ))
        }
    };
    emit(&text)?;
    Ok(0)
}

/// `qemu-img map --output json`: one object per line, keys in its order, `offset` only for data.
pub fn json(extents: &[Extent]) -> String {
    let mut out = String::from("[");
    for (i, e) in extents.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        let data = e.data.is_some();
        out.push_str(&format!(
            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {data}, \"zero\": {}, \"data\": {data}, \"compressed\": false",
            e.start, e.length, e.depth, !data
        ));
        if let Some(m) = &e.data {
            out.push_str(&format!(", \"offset\": {}", m.offset));
        }
        out.push('}');
    }
    out.push_str("]\n");
    out
}

fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

/// `qemu-img map`'s table: only extents with data, with the file holding them.
fn human(files: &[PathBuf], extents: &[Extent]) -> String {
    let mut out = String::new();
    outln!(out, "{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to");
    for e in extents {
        if let Some(m) = &e.data {
            outln!(
                out,
                "{:<16}{:<16}{:<16}{}",
                hex(e.start),
                hex(e.length),
                hex(m.offset),
                files[m.file].display()
            );
        }
    }
    out
}

/// `map -f raw`: the file's data ranges map to themselves, its holes read as zeros.
fn raw(args: &Args) -> Outcome {
    if args.snapshot.is_some() {
        return Err(crate::output::Failure::at(
            &args.source,
            "a raw file has no snapshots (--snapshot needs a bundle)",
        ));
    }
    let (size, ranges) = crate::input::raw_ranges(&args.source, "map")?;
    let mut extents = Vec::new();
    let mut at = 0;
    for (start, len) in ranges {
        let (start, end) = (start.min(size), start.saturating_add(len).min(size));
        if start > at {
            extents.push(Extent {
                start: at,
                length: start - at,
                depth: 0,
                data: None,
            });
        }
        if end > start {
            extents.push(Extent {
                start,
                length: end - start,
                depth: 0,
                data: Some(Mapping { file: 0, offset: start }),
            });
        }
        at = at.max(end);
    }
    if size > at {
        extents.push(Extent {
            start: at,
            length: size - at,
            depth: 0,
            data: None,
        });
    }
    let text = match args.output {
        Format::Json => json(&extents),
        _ => human(std::slice::from_ref(&args.source), &extents),
    };
    emit(&text)?;
    Ok(0)
}
