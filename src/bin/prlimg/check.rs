//! `prlimg check`: every rule, with `qemu-img check`'s counters and exit statuses, and what
//! QEMU 10 and ploop would do with the image. Reads metadata only.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use parallels_image::qemu::Versions;
use parallels_image::report::{
    failure_record, run_batch, BatchError, BatchRun, BatchStatus, CheckError, CheckOptions, CheckTarget, PathReport,
};
use parallels_image::RuleMode;

use crate::output::{check_failure, emit, emit_with, spinner, Failure, Format};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The images: files, bundles (a folder or its DiskDescriptor.xml) and, with --recursive,
    /// folders to walk. More than one (or --recursive) checks them as a batch: one line each and
    /// a summary.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Output format (a batch's JSON is JSON Lines: one report per image, then a summary).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Treat unknown features and feature flags as notes (ploop's reading), not corruption.
    #[arg(long)]
    lenient: bool,
    /// Also draw the file's layout with the findings marked and the guest view beside it, as SVG,
    /// to this file (for a bundle: the guest view at the top snapshot, by snapshot).
    #[arg(long, value_name = "OUT.svg")]
    picture: Option<PathBuf>,
    /// Overwrite the --picture file if it exists.
    #[arg(long)]
    force: bool,
    /// Walk folders: every file in them is checked, and every folder holding a
    /// DiskDescriptor.xml as one bundle (its images are not checked again on their own).
    #[arg(long, short = 'R')]
    recursive: bool,
    /// Repair the image in place first, as `qemu-img check -r` does (written aside and renamed
    /// over it; the extension and bitmaps kept: see `prlimg repair`), then check the result.
    #[arg(short = 'r', long = "repair", value_enum, value_name = "leaks|all")]
    repair: Option<crate::output::RepairArg>,
    /// Images checked at once in a batch [default: RAYON_NUM_THREADS, else the number of CPUs].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no metadata to check).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
    /// Which QEMU to predict: 10.0 (10.0.2), 7.2 (Debian 12's), or all (both: JSON adds
    /// "qemu_versions" with each one's "qemu", "qemu_check" and "qemu_read_write").
    #[arg(long, value_name = "VERSION", default_value = "10.0", value_parser = clap::value_parser!(Versions))]
    qemu: Versions,
}

fn mode(lenient: bool) -> RuleMode {
    if lenient {
        RuleMode::Lenient
    } else {
        RuleMode::Strict
    }
}

pub fn run(args: &Args) -> Outcome {
    crate::input::refuse_raw(
        &args.images[0],
        args.format,
        "check",
        "a raw file has no metadata to check",
    )?;
    if let Some(level) = args.repair {
        if args.images.len() > 1 || args.recursive {
            return Err(Failure::plain(
                "-r/--repair repairs one image: not with several paths or --recursive",
            ));
        }
        crate::output::repair_in_place(&args.images[0], level, args.output == Format::Json)?;
    }
    if args.images.len() > 1 || args.recursive {
        if args.qemu != Versions::default() {
            return Err(Failure::plain(
                "--qemu 7.2 or all is for `prlimg check` of one image (a batch predicts QEMU 10.0)",
            ));
        }
        if args.picture.is_some() {
            return Err(Failure::plain(
                "--picture draws one image: not with several paths or --recursive",
            ));
        }
        if args.output == Format::Html {
            return Err(Failure::plain("--output html is for `prlimg check` of one image"));
        }
        return batch(args);
    }
    let path = &args.images[0];
    // With --output json, a path that cannot be checked still gets its JSON record on stdout.
    let json_failure = |f: Failure| {
        if args.output == Format::Json {
            let status = if f.not_parallels {
                BatchStatus::NotParallels
            } else {
                BatchStatus::Unreadable
            };
            if let Err(out) = emit(&(failure_record(path, status, &f.reason) + "\n")) {
                return out;
            }
        }
        f
    };
    let options = CheckOptions {
        qemu: args.qemu.list(),
        ..CheckOptions::new(mode(args.lenient))
    };
    // The library's one entry point for a path: a bundle or an image (`-`: standard input).
    let target = CheckTarget::open(path).map_err(|e| json_failure(check_failure(&e)))?;
    let busy = spinner("checking");
    let (report, image) = target.check(&options).map_err(|e| json_failure(check_failure(&e)))?;
    busy.finish_and_clear();
    let checked = match report {
        PathReport::Bundle(report) => {
            match args.output {
                Format::Html => return Err(Failure::plain("--output html is for `prlimg check` of an image")),
                Format::Json => emit_with(|w| report.write_json(w))?,
                Format::Human => emit_with(|w| report.write_human(w))?,
            }
            if let Some(out) = &args.picture {
                crate::output::bundle_picture(path, out, args.force)?;
            }
            return Ok(report.exit_code());
        }
        PathReport::Image(checked) => checked,
    };
    if let Some(out) = &args.picture {
        // An uninterpretable header has nothing to draw.
        let image = image
            .as_ref()
            .ok_or_else(|| Failure::at(path, "no picture: the header cannot be interpreted"))?;
        crate::output::write_svg(
            out,
            args.force,
            &parallels_image::picture::layout_svg(image, &checked.conformance.report),
        )?;
    }
    match args.output {
        Format::Json => emit_with(|w| checked.write_json(w))?,
        Format::Human => emit_with(|w| checked.write_human(w))?,
        Format::Html => emit_with(|w| checked.write_html(w, &args.qemu.title(), image.as_ref()))?,
    }
    Ok(checked.conformance.verdict().exit_code())
}

/// Checks every path (walking folders with `--recursive`) on `--jobs` threads, in bounded
/// memory ([`run_batch`]); prints a line (or JSON Lines record) per image in the order found,
/// then the summary. The exit status is the worst image's: corrupt (2) over could not check (1)
/// over leaks (3) over clean (0).
fn batch(args: &Args) -> Outcome {
    let run = BatchRun {
        paths: &args.images,
        recursive: args.recursive,
        jobs: args.jobs.map(usize::from),
        json: args.output == Format::Json,
        options: CheckOptions::new(mode(args.lenient)),
    };
    let bar = progress_bar();
    let start = Instant::now();
    let mut out = BufWriter::new(io::stdout().lock());
    let reason = |e: &CheckError| check_failure(e).reason;
    let result = run_batch(
        &run,
        reason,
        || bar.inc_length(1),
        |done| {
            bar.inc(1);
            write_line(&mut out, &bar, &done.line)
        },
    );
    bar.finish_and_clear();
    let (summary, threads) = result.map_err(|e| match e {
        BatchError::Write(e) => Failure::stdout(&e),
        other => Failure::plain(other.to_string()),
    })?;
    let elapsed = start.elapsed();
    let text = if run.json {
        summary
            .json(elapsed, threads)
            .map_err(|e| Failure::plain(format!("JSON: {e}")))?
    } else {
        summary.human(elapsed, threads)
    };
    write_line(&mut out, &bar, &text).map_err(|e| Failure::stdout(&e))?;
    out.flush().map_err(|e| Failure::stdout(&e))?;
    Ok(summary.exit_code())
}

/// Writes a line, above the bar at once when there is one (nothing with `-q`).
fn write_line(out: &mut impl Write, bar: &ProgressBar, line: &str) -> io::Result<()> {
    if crate::output::quiet() {
        return Ok(());
    }
    let mut write = || -> io::Result<()> {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        if !bar.is_hidden() {
            out.flush()?;
        }
        Ok(())
    };
    if bar.is_hidden() {
        write()
    } else {
        bar.suspend(write)
    }
}

/// A bar of images done out of images found (the count grows as the walk goes on), on a
/// terminal only.
fn progress_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("checking [{bar:40}] {pos}/{len} images ({per_sec}) {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
