//! `prlimg map SRC`: where each guest extent's bytes are (which file, which host offset) or
//! that it reads as zeros, for an `.hds`, a bundle folder or its XML (`--snapshot GUID`).
//! `--output json` prints `qemu-img map --output json`'s shape, byte for byte.

use std::path::PathBuf;

use parallels_image::{BundleOptions, Extent, GuestDisk};
use uuid::Uuid;

use crate::convert::{bundle_failure, parse_snapshot};
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
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Follow a bundle's image paths that leave its folder.
    #[arg(long)]
    follow_outside: bool,
}

pub fn run(args: &Args) -> Outcome {
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
        Format::Human => human(&disk, &extents),
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
fn human(disk: &GuestDisk, extents: &[Extent]) -> String {
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
                disk.files()[m.file].display()
            );
        }
    }
    out
}
