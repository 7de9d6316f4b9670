//! `prlimg repair IN OUT`: a plan of typed actions (the rule each fixes, the bytes it touches,
//! what is lost), then the repaired copy; the extension and its bitmaps are kept. Also
//! `prlimg check -r leaks|all IMAGE` (in place, as `qemu-img check -r` is spelled).

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use parallels_image::{repair::plan_repair, repair::RepairLevel, repair::RepairPlan, FileSource, Image, Severity};

use crate::outln;
use crate::output::{emit, output_options, print_json, Failure};
use crate::Outcome;

/// `--output` for `repair`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Human,
    /// JSON: the plan as typed records.
    Json,
}

/// What `check -r` and `repair` may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// Only what loses no guest byte and no bitmap.
    Leaks,
    /// Also corruption, each fix losing the least.
    All,
}

impl From<Level> for RepairLevel {
    fn from(l: Level) -> RepairLevel {
        match l {
            Level::Leaks => RepairLevel::Leaks,
            Level::All => RepairLevel::All,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The damaged image (read only, unless --in-place).
    input: PathBuf,
    /// The repaired copy to write (refused if it exists, unless --force; not with --in-place).
    #[arg(required_unless_present_any = ["in_place", "dry_run"], conflicts_with = "in_place")]
    output: Option<PathBuf>,
    /// Repair only what loses no guest byte and no bitmap (the default).
    #[arg(long, conflicts_with = "all")]
    leaks: bool,
    /// Also repair corruption, each fix losing the least (lost guest ranges and bitmaps are listed).
    #[arg(long)]
    all: bool,
    /// Print the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format of the plan.
    #[arg(long = "output", value_enum, default_value_t = Format::Human)]
    output_format: Format,
    /// Repair INPUT itself: the repaired image is written aside, flushed and renamed over it
    /// (its permissions kept). Refused on a device or a stream.
    #[arg(long)]
    in_place: bool,
    /// Replace OUTPUT if it is a regular file (a device, FIFO or folder is never replaced).
    #[arg(long)]
    force: bool,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no structure to repair).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
}

/// The plan and its outcome, as `--output json` prints them.
#[derive(serde::Serialize)]
struct PlanJson<'a> {
    schema: u32,
    input: String,
    output: Option<String>,
    level: RepairLevel,
    before: parallels_image::Verdict,
    dry_run: bool,
    written: bool,
    actions: &'a [parallels_image::repair::RepairAction],
    unrepaired: &'a [parallels_image::Rule],
    kept_bitmaps: &'a [String],
    lost_bitmaps: Vec<String>,
    lost_guest: Vec<(u64, u64)>,
    output_len: u64,
    /// `check`'s verdict of what was written (of the input when nothing was).
    after: Option<parallels_image::Verdict>,
}

/// Opens `path` for repair: a regular file (or, read-only, a block device).
fn open_input(path: &Path, in_place: bool) -> Result<(File, std::fs::Metadata), Failure> {
    if in_place && path.as_os_str() == "-" {
        return Err(Failure::at(
            path,
            "--in-place repairs a file by its name, not standard input (write a repaired copy instead)",
        ));
    }
    let path = &crate::input::seekable(path, "repair")?;
    let file = File::open(path).map_err(|e| Failure::io(path, &e))?;
    let meta = file.metadata().map_err(|e| Failure::io(path, &e))?;
    let ft = meta.file_type();
    if in_place && !ft.is_file() {
        return Err(Failure::at(
            path,
            "is not a regular file: --in-place repairs only regular files (write a repaired copy instead)",
        ));
    }
    if !ft.is_file() && !ft.is_block_device() {
        return Err(Failure::at(
            path,
            "repair reads its input at offsets: it must be a regular file or a block device, not a stream",
        ));
    }
    Ok((file, meta))
}

/// The verdict of the image at `path` (after writing).
fn verdict_of(path: &Path) -> Result<parallels_image::Verdict, Failure> {
    let source = FileSource::open(path).map_err(|e| Failure::io(path, &e))?;
    let image = Image::parse(&source).map_err(|e| Failure::lib(path, &e))?;
    let report = parallels_image::validate(&image).map_err(|e| Failure::lib(path, &e))?;
    Ok(report.verdict())
}

/// Plans and (unless `dry_run`) writes the repair of `input` to `output` (`None`: in place).
/// Prints the plan; returns the exit status: `check`'s of the result (0, 2, 3).
fn repair(
    input: &Path,
    output: Option<&Path>,
    level: RepairLevel,
    dry_run: bool,
    force: bool,
    format: Option<Format>,
) -> Outcome {
    let in_place = output.is_none();
    let (file, meta) = open_input(input, in_place && !dry_run)?;
    if let Some(out) = output {
        if let Ok(out_meta) = std::fs::metadata(out) {
            if out_meta.dev() == meta.dev() && out_meta.ino() == meta.ino() {
                return Err(Failure::at(
                    out,
                    "is the input image; write the repaired copy elsewhere, or use --in-place",
                ));
            }
        }
    }
    let source = FileSource::new(file).map_err(|e| Failure::io(input, &e))?;
    let plan = plan_repair(&source, level).map_err(|e| Failure::lib(input, &e))?;
    let write = !dry_run && !plan.is_empty();
    let target: PathBuf = match output {
        Some(o) => o.to_path_buf(),
        None if input.as_os_str() == "-" => input.to_path_buf(),
        None => input.canonicalize().map_err(|e| Failure::io(input, &e))?,
    };
    if write {
        let options = output_options(force || in_place, false, Some(meta.mode() & 0o7777));
        parallels_image::outfile::write_atomically(&target, &options, |f| plan.write(&source, f))
            .map_err(|e| Failure::lib(&target, &e))?;
    }
    let after = if write {
        Some(verdict_of(&target)?)
    } else if dry_run {
        None
    } else {
        Some(plan.before)
    };
    if let Some(format) = format {
        print_plan(&plan, input, output, dry_run, write, after, format)?;
    }
    // The status: the result's verdict; a dry run's, the plan's prediction.
    Ok(match after {
        Some(v) => v.exit_code(),
        None if plan.unrepaired.iter().any(|r| r.severity() == Severity::Corruption) => 2,
        None if plan.unrepaired.iter().any(|r| r.severity() == Severity::Leak) => 3,
        None => 0,
    })
}

fn print_plan(
    plan: &RepairPlan,
    input: &Path,
    output: Option<&Path>,
    dry_run: bool,
    written: bool,
    after: Option<parallels_image::Verdict>,
    format: Format,
) -> Result<(), Failure> {
    if format == Format::Json {
        return print_json(&PlanJson {
            schema: parallels_image::JSON_SCHEMA,
            input: input.display().to_string(),
            output: output.map(|o| o.display().to_string()),
            level: plan.level,
            before: plan.before,
            dry_run,
            written,
            actions: &plan.actions,
            unrepaired: &plan.unrepaired,
            kept_bitmaps: &plan.kept_bitmaps,
            lost_bitmaps: plan.lost_bitmaps(),
            lost_guest: plan.lost_guest(),
            output_len: plan.output_len,
            after,
        });
    }
    let mut out = String::new();
    let name = input.display();
    if plan.is_empty() {
        if plan.before == parallels_image::Verdict::Clean {
            outln!(out, "{name}: clean, nothing to repair; nothing written");
        } else {
            outln!(out, "{name}: nothing this level may repair; nothing written");
        }
    } else {
        let verb = if dry_run { "would repair" } else { "repaired" };
        outln!(out, "{name}: {} actions ({verb}):", plan.actions.len());
        for a in &plan.actions {
            outln!(out, "  {a}");
        }
        let lost_guest = plan.lost_guest();
        let lost_bitmaps = plan.lost_bitmaps();
        if lost_guest.is_empty() && lost_bitmaps.is_empty() {
            outln!(out, "lost: nothing");
        } else {
            let total: u64 = lost_guest.iter().map(|(_, l)| l).sum();
            outln!(
                out,
                "lost: {total} guest bytes in {} ranges; bitmaps: {}",
                lost_guest.len(),
                if lost_bitmaps.is_empty() {
                    "none".to_string()
                } else {
                    lost_bitmaps.join(", ")
                }
            );
        }
        outln!(
            out,
            "kept bitmaps: {}",
            if plan.kept_bitmaps.is_empty() {
                "none".to_string()
            } else {
                plan.kept_bitmaps.join(", ")
            }
        );
    }
    if !plan.unrepaired.is_empty() {
        let codes: Vec<&str> = plan.unrepaired.iter().map(|r| r.code()).collect();
        outln!(out, "left as they are: {}", codes.join(", "));
    }
    if let Some(v) = after {
        outln!(out, "result: {}", v.name());
    }
    emit(&out)
}

pub fn run(args: &Args) -> Outcome {
    crate::input::refuse_raw(
        &args.input,
        args.format,
        "repair",
        "a raw file has no structure to repair",
    )?;
    let level = if args.all { RepairLevel::All } else { RepairLevel::Leaks };
    let output = if args.in_place {
        None
    } else {
        match &args.output {
            Some(o) => Some(o.as_path()),
            None if args.dry_run => None,
            None => return Err(Failure::plain("repair needs OUTPUT, or --in-place")),
        }
    };
    repair(
        &args.input,
        output,
        level,
        args.dry_run,
        args.force,
        Some(args.output_format),
    )
}

/// `prlimg check -r LEVEL IMAGE`: repairs IMAGE in place and prints the plan (human output;
/// nothing with JSON, where the check's report follows alone); the caller then checks the result.
pub fn in_place(path: &Path, level: Level, json: bool) -> Result<(), Failure> {
    let format = (!json).then_some(Format::Human);
    repair(path, None, level.into(), false, true, format).map(|_| ())
}
