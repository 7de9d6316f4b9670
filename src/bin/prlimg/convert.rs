//! `prlimg convert SRC OUT`: the guest's bytes from an `.hds`, a bundle (folder or its
//! `DiskDescriptor.xml`, at its top or `--snapshot GUID`) or a raw file, into a raw file
//! (sparse: holes where nothing is allocated; with `--detect-zeros`, or from a raw file, also
//! where 4 KiB blocks of data are zeros), an expanding `.hds` image or a new bundle (all-zero
//! clusters left unallocated). The output is written beside its final
//! name and renamed; an existing output is replaced only with `--force`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parallels_image::bundle::BundleOptions;
use parallels_image::guest::{Guest, GuestError, SourceFormat, Target};
use uuid::Uuid;

use crate::args::{parse_snapshot, size};
use crate::output::{bundle_failure, progress, Failure};
use crate::Outcome;

/// What a path holds, for `-f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InFormat {
    /// A bundle if SRC is a folder or XML, a Parallels image if it has the magic, else raw.
    Auto,
    /// A raw disk image.
    Raw,
    /// A Parallels image or bundle.
    Parallels,
}

/// What to write, for `-O`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// From OUT's name: `.hds` an image, `.hdd` a bundle, anything else raw.
    Auto,
    /// A raw disk image (sparse).
    Raw,
    /// An expanding Parallels image (`.hds`).
    Parallels,
    /// A bundle folder (`NAME.hdd`) holding one expanding image.
    Bundle,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source: an .hds image, a bundle folder, its DiskDescriptor.xml, or a raw file.
    source: PathBuf,
    /// The output (refused if it exists, unless --force).
    output: PathBuf,
    /// Read this snapshot of a bundle instead of its top (GUID with or without braces).
    #[arg(long, value_name = "GUID", value_parser = parse_snapshot)]
    snapshot: Option<Uuid>,
    /// The source's format.
    #[arg(short = 'f', long = "format", value_enum, default_value_t = InFormat::Auto)]
    format: InFormat,
    /// The output's format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value_t = OutFormat::Auto)]
    output_format: OutFormat,
    /// Cluster size of a Parallels output.
    #[arg(long, allow_hyphen_values = true, value_parser = size, default_value = "1M")]
    cluster_size: u64,
    /// Follow a bundle's image paths that leave its folder.
    #[arg(long)]
    follow_outside: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Show the progress whatever the size (on a terminal the bar; else `    (P/100%)` lines
    /// after carriage returns, as `qemu-img convert -p` prints them).
    #[arg(short = 'p', long)]
    progress: bool,
    /// Into a raw file from an image or bundle: also leave the stored blocks of 4 KiB that are
    /// all zeros as holes (reads every byte; by default stored clusters are copied as they are,
    /// in the kernel where it can, and only what nothing stores is a hole).
    #[arg(long)]
    detect_zeros: bool,
}

fn out_format(args: &Args) -> OutFormat {
    if args.output_format != OutFormat::Auto {
        return args.output_format;
    }
    match args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("hds") => OutFormat::Parallels,
        Some("hdd") => OutFormat::Bundle,
        _ => OutFormat::Raw,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

pub fn run(args: &Args) -> Outcome {
    let out = &args.output;
    if args.source.as_os_str() != "-" && same_file(&args.source, out) {
        return Err(Failure::at(out, "is the source; write the copy elsewhere"));
    }
    if std::fs::symlink_metadata(out).is_ok() && !args.force {
        return Err(Failure::at(out, "already exists (use --force to replace it)"));
    }
    let source = crate::input::seekable(&args.source, "convert")?;
    let format = match args.format {
        InFormat::Auto => SourceFormat::Auto,
        InFormat::Raw => SourceFormat::Raw,
        InFormat::Parallels => SourceFormat::Parallels,
    };
    let options = BundleOptions {
        follow_outside: args.follow_outside,
    };
    let guest = Guest::open(&source, format, args.snapshot, options).map_err(|e| match e {
        GuestError::Io { path, source } => Failure::io(&path, &source),
        GuestError::RawSnapshot { path } => {
            Failure::at(&path, "a raw file has no snapshots (--snapshot needs a bundle)")
        }
        GuestError::Bundle(e) => bundle_failure(&e),
    })?;
    if let Guest::Disk(d) = &guest {
        if d.files().iter().any(|f| same_file(f, out)) || (out.is_dir() && d.files().iter().any(|f| f.starts_with(out)))
        {
            return Err(Failure::at(out, "holds the source's data; write the copy elsewhere"));
        }
    }
    let size = guest.size();
    let bar = if args.progress {
        crate::output::forced_progress(size, "converting")
    } else if size >= 256 << 20 {
        progress(size, "converting")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let ranges = guest.data_ranges().map_err(|e| Failure::io(&args.source, &e))?;
    let target = match out_format(args) {
        OutFormat::Raw | OutFormat::Auto => Target::Raw {
            detect_zeros: args.detect_zeros,
        },
        OutFormat::Parallels => Target::Parallels {
            cluster_size: args.cluster_size,
        },
        OutFormat::Bundle if size % 512 != 0 => {
            return Err(Failure::at(
                &args.source,
                format!("a bundle holds whole sectors; the source is {size} bytes"),
            ));
        }
        OutFormat::Bundle => Target::Bundle {
            cluster_size: args.cluster_size,
        },
    };
    let result = guest.write(target, &ranges, out, args.force, &|pos| bar.set_position(pos));
    if args.progress && result.is_ok() {
        bar.set_position(size);
        bar.finish();
        if !bar.is_hidden() && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    } else {
        bar.finish_and_clear();
    }
    match result {
        Ok(()) => Ok(0),
        Err(e) => Err(Failure::lib(out, &e)),
    }
}
