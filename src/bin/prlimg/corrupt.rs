//! `prlimg corrupt`: copy an image and break one rule of the format on purpose, to make test
//! images for validators. The input is opened read-only; the output is written through a
//! temporary file beside it and renamed into place.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parallels_image::corrupt::{plan, DefectKind};
use parallels_image::{bundle::Bundle, bundle::BundleDefect, Error, FileSource, Image, PlanError};

use crate::outln;
use crate::output::{bundle_failure, emit, output_options, progress, Failure};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The valid image to start from (read only).
    #[arg(required_unless_present_any = ["list", "list_bundle"])]
    input: Option<PathBuf>,
    /// The damaged copy to write (refused if it exists, unless --force).
    #[arg(required_unless_present_any = ["list", "list_bundle"])]
    output: Option<PathBuf>,
    /// Which defect (see --list).
    #[arg(long, required_unless_present_any = ["list", "list_bundle"])]
    defect: Option<String>,
    /// Picks among the places the defect can go (which BAT entry, feature, L1 entry).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace OUTPUT if it is a regular file (a device, FIFO or folder is never replaced).
    #[arg(long)]
    force: bool,
    /// If OUTPUT is a symbolic link, write the file it points to (else a link is refused).
    #[arg(long)]
    follow_symlink: bool,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no structure to damage).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
    /// List the defects: name, rule, summary.
    #[arg(long, conflicts_with_all = ["input", "output", "defect"])]
    list: bool,
    /// List the defects of bundles (DiskDescriptor.xml and folder): name, rule, summary.
    #[arg(long, conflicts_with_all = ["input", "output", "defect", "list"])]
    list_bundle: bool,
}

pub fn run(args: &Args) -> Outcome {
    if args.list_bundle {
        return list_bundle();
    }
    if args.list {
        let width = DefectKind::ALL.iter().map(|d| d.name().len()).max().unwrap_or(0);
        let mut out = String::new();
        for d in DefectKind::ALL {
            outln!(out, "{:width$}  {:<4}  {}", d.name(), d.rule().code(), d.summary());
        }
        emit(&out)?;
        return Ok(0);
    }
    let (Some(input), Some(output), Some(defect)) = (&args.input, &args.output, &args.defect) else {
        return Err(Failure::plain("corrupt needs INPUT, OUTPUT and --defect (or --list)"));
    };
    crate::input::refuse_raw(input, args.format, "corrupt", "a raw file has no structure to damage")?;
    let input = &crate::input::seekable(input, "corrupt")?;
    if parallels_image::bundle::is_bundle(input) {
        return bundle(input, output, defect, args.force);
    }
    let defect = match defect.parse::<DefectKind>() {
        Ok(d) => d,
        Err(PlanError::UnknownDefect { name }) => {
            return Err(Failure::plain(format!(
                "unknown defect {name:?} (prlimg corrupt --list shows them)"
            )))
        }
        Err(other) => return Err(Failure::plain(other.to_string())),
    };
    let file = File::open(input).map_err(|e| Failure::io(input, &e))?;
    let in_meta = file.metadata().map_err(|e| Failure::io(input, &e))?;
    if let Ok(out_meta) = std::fs::metadata(output) {
        if out_meta.dev() == in_meta.dev() && out_meta.ino() == in_meta.ino() {
            return Err(Failure::at(
                output,
                "is the input image; write the damaged copy elsewhere",
            ));
        }
    }
    let source = FileSource::new(file.try_clone().map_err(|e| Failure::io(input, &e))?).map_err(|e| {
        Failure::at(
            input,
            format!(
                "{}: corrupt reads its input at offsets, so it must be a file or a block device",
                crate::output::io_reason(&e)
            ),
        )
    })?;
    let image = Image::parse(&source).map_err(|e| Failure::lib(input, &e))?;
    let patch = plan(&image, defect, args.seed).map_err(|e| match e {
        Error::Plan(e @ PlanError::NotApplicable { .. }) => Failure::at(input, e.to_string()),
        other => Failure::lib(input, &other),
    })?;
    let len = parallels_image::Source::size(&source);
    // The copy keeps the input's permissions.
    let options = output_options(args.force, args.follow_symlink, Some(in_meta.mode() & 0o777));
    let result = parallels_image::outfile::write_atomically(output, &options, |tmp| {
        copy_sparse(&file, tmp, len).map_err(|e| Error::Io(annotate(e, input)))?;
        patch.apply_to_file(tmp)?;
        Ok(())
    });
    match result {
        Ok(()) => Ok(0),
        Err(e) => Err(Failure::lib(output, &e)),
    }
}

/// Marks a read error as the input's, so that the failure names the right file.
fn annotate(e: io::Error, input: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("reading {}: {}", input.display(), crate::output::io_reason(&e)),
    )
}

/// Copies the input sparsely, with a bar for a large one.
fn copy_sparse(from: &File, to: &File, len: u64) -> io::Result<()> {
    let bar = if len >= 64 << 20 {
        progress(len, "copying")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let copied = parallels_image::guest::copy_sparse(from, to, len, &|pos| bar.set_position(pos));
    bar.finish_and_clear();
    copied
}

/// `prlimg corrupt --list-bundle`: name, rule, summary.
fn list_bundle() -> Outcome {
    let width = BundleDefect::ALL.iter().map(|d| d.name().len()).max().unwrap_or(0);
    let mut out = String::new();
    for d in BundleDefect::ALL {
        outln!(out, "{:width$}  {:<4}  {}", d.name(), d.rule(), d.summary());
    }
    emit(&out)?;
    Ok(0)
}

/// `prlimg corrupt BUNDLE OUT --defect NAME`: a copy of the folder with one descriptor defect.
fn bundle(input: &Path, output: &Path, defect: &str, force: bool) -> Outcome {
    let Some(defect) = BundleDefect::from_name(defect) else {
        return Err(Failure::plain(format!(
            "unknown bundle defect {defect:?} (prlimg corrupt --list-bundle shows them)"
        )));
    };
    let bundle = Bundle::open(input).map_err(|e| bundle_failure(&e))?;
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(bundle.dir()), std::fs::canonicalize(output)) {
        if a == b {
            return Err(Failure::at(
                output,
                "is the input bundle; write the damaged copy elsewhere",
            ));
        }
    }
    match defect.apply(&bundle, output, force) {
        Ok(()) => Ok(0),
        Err(Error::Build(e)) => Err(Failure::at(input, e.to_string())),
        Err(e) => Err(Failure::lib(output, &e)),
    }
}
