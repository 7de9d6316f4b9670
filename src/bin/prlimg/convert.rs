//! `prlimg convert SRC OUT`: the guest's bytes from an `.hds`, a bundle (folder or its
//! `DiskDescriptor.xml`, at its top or `--snapshot GUID`) or a raw file, into a raw file
//! (sparse: holes where nothing is allocated; with `--detect-zeros`, or from a raw file, also
//! where 4 KiB blocks of data are zeros), an expanding `.hds` image or a new bundle (all-zero
//! clusters left unallocated). The output is written beside its final
//! name and renamed; an existing output is replaced only with `--force`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use parallels_image::{
    bundle::is_bundle, bundle::parse_guid_loose, bundle::write_expanding_ranges, bundle::write_raw,
    bundle::BundleBuilder, bundle::BundleError, bundle::BundleOptions, bundle::GuestDisk, bundle::GuestReader, Error,
};
use uuid::Uuid;

use crate::output::{progress, Failure};
fn parse_size(text: &str) -> Result<u64, String> {
    parallels_image::parse_size(text).map_err(|e| e.to_string())
}
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
    #[arg(long, allow_hyphen_values = true, value_parser = parse_size, default_value = "1M")]
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

pub fn parse_snapshot(text: &str) -> Result<Uuid, String> {
    parse_guid_loose(text).ok_or_else(|| format!("{text:?} is not a GUID"))
}

/// The guest's bytes, from wherever they are.
pub enum Guest {
    Disk(GuestDisk),
    Raw { file: File, size: u64 },
}

impl Guest {
    pub fn size(&self) -> u64 {
        match self {
            Guest::Disk(d) => d.size(),
            Guest::Raw { size, .. } => *size,
        }
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Guest::Disk(d) => d.read_at(offset, buf),
            Guest::Raw { file, size } => {
                let n = (size.saturating_sub(offset)).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], offset)?;
                buf[n..].fill(0);
                Ok(())
            }
        }
    }

    /// Guest ranges that may hold data (the rest is known zeros): what the chain stores, or a
    /// raw file's data (not its holes).
    fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        match self {
            Guest::Disk(d) => Ok(d.data_ranges()),
            Guest::Raw { file, .. } => parallels_image::bundle::file_data_ranges(file),
        }
    }
}

/// A bundle failure as a CLI failure (its message names the file).
pub fn bundle_failure(e: &BundleError) -> Failure {
    match e {
        BundleError::Io { path, source }
            if source.kind() == io::ErrorKind::NotFound
                && path
                    .file_name()
                    .is_some_and(|n| n == parallels_image::bundle::DESCRIPTOR_NAME)
                && path.parent().is_some_and(Path::is_dir) =>
        {
            let dir = path.parent().unwrap_or(path);
            Failure::at(
                dir,
                format!(
                    "is a folder without {}: not a bundle (to check the images in it: prlimg check --recursive {})",
                    parallels_image::bundle::DESCRIPTOR_NAME,
                    dir.display()
                ),
            )
        }
        BundleError::Io { path, source } => Failure::io(path, source),
        BundleError::Image { path, source } => Failure::lib(path, source),
        other => Failure::plain(other.to_string()),
    }
}

fn has_parallels_magic(path: &Path) -> io::Result<bool> {
    let f = File::open(path)?;
    let mut magic = [0u8; 16];
    let n = f.read_at(&mut magic, 0)?;
    Ok(n == 16 && (&magic == b"WithoutFreeSpace" || &magic == b"WithouFreSpacExt"))
}

/// Opens SRC as a guest disk.
pub fn open_guest(
    source: &Path,
    format: InFormat,
    snapshot: Option<Uuid>,
    follow_outside: bool,
) -> Result<Guest, Failure> {
    let raw = match format {
        InFormat::Raw => true,
        InFormat::Parallels => false,
        InFormat::Auto => !is_bundle(source) && !has_parallels_magic(source).map_err(|e| Failure::io(source, &e))?,
    };
    if raw {
        if snapshot.is_some() {
            return Err(Failure::at(
                source,
                "a raw file has no snapshots (--snapshot needs a bundle)",
            ));
        }
        let file = File::open(source).map_err(|e| Failure::io(source, &e))?;
        let size = file.metadata().map_err(|e| Failure::io(source, &e))?.len();
        return Ok(Guest::Raw { file, size });
    }
    GuestDisk::open(source, snapshot, BundleOptions { follow_outside })
        .map(Guest::Disk)
        .map_err(|e| bundle_failure(&e))
}

/// How the writers read `guest`: a raw file as itself (its bytes are then copied file to file,
/// shared where the file system can), a disk through `read`, on a second thread.
fn reader<'r>(
    guest: &'r Guest,
    read: &'r mut (dyn FnMut(u64, &mut [u8]) -> io::Result<()> + Send),
    progress: &'r mut (dyn FnMut(u64) + Send),
) -> GuestReader<'r> {
    match guest {
        Guest::Raw { file, .. } => GuestReader::RawFile(file, progress),
        Guest::Disk(_) => GuestReader::Shared(read),
    }
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
    let guest = open_guest(&source, args.format, args.snapshot, args.follow_outside)?;
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
    let mut read = |off: u64, buf: &mut [u8]| {
        bar.set_position(off);
        guest.read_at(off, buf)
    };
    let mut progress = |off: u64| bar.set_position(off);
    let ranges = guest.data_ranges().map_err(|e| Failure::io(&args.source, &e))?;
    let result = match out_format(args) {
        OutFormat::Raw | OutFormat::Auto => {
            parallels_image::outfile::write_file_atomically(out, args.force, |f| match &guest {
                Guest::Disk(d) if !args.detect_zeros => d
                    .write_raw_to(f, &mut |pos| bar.set_position(pos))
                    .map(|_| ())
                    .map_err(Error::Io),
                _ => write_raw(reader(&guest, &mut read, &mut progress), &ranges, size, f).map(|_| ()),
            })
        }
        OutFormat::Parallels => parallels_image::outfile::write_file_atomically(out, args.force, |f| {
            write_expanding_ranges(
                reader(&guest, &mut read, &mut progress),
                &ranges,
                size,
                args.cluster_size,
                f,
            )
            .map(|_| ())
        }),
        OutFormat::Bundle => {
            if size % 512 != 0 {
                return Err(Failure::at(
                    &args.source,
                    format!("a bundle holds whole sectors; the source is {size} bytes"),
                ));
            }
            BundleBuilder::new(size)
                .cluster_size(args.cluster_size)
                .create_from(out, args.force, &mut read)
                .map(|_| ())
        }
    };
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
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Failure::at(out, "already exists (use --force to replace it)"))
        }
        Err(e) => Err(Failure::lib(out, &e)),
    }
}
