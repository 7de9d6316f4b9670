//! `prlimg repair` and `prlimg check -r`: the plan made, the repaired image written aside and
//! renamed into place, and the run's report (the plan, what is lost, the verdict after).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::text::line as outln;
use super::PathError;
use crate::bundle::{plan_bundle_repair, Bundle, BundleRepairError, BundleRepairPlan};
use crate::error::Error;
use crate::image::Image;
use crate::outfile::{write_atomically, OutputOptions};
use crate::repair::{plan_repair, RepairLevel, RepairPlan};
use crate::rule::Severity;
use crate::source::FileSource;
use crate::validate::{validate, Verdict};

/// Why a repair could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairFileError {
    /// The input or output may not be used so.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A path could not be read or written: the system refused, or the library did (an image
    /// that cannot be planned, an output that may not be written, a bundle that cannot be
    /// read). The same error as `check`'s.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The bundle's repair would have to guess (or one of its images cannot be repaired).
    #[error(transparent)]
    Bundle(Box<BundleRepairError>),
}

/// What to repair and how.
#[derive(Clone, Debug)]
pub struct RepairRequest<'a> {
    /// The image as named (`-`: standard input).
    pub input: &'a Path,
    /// The file to read it from (`/dev/stdin` for a redirected `-`).
    pub read: &'a Path,
    /// The repaired copy (`None`: in place).
    pub output: Option<&'a Path>,
    /// What may be repaired.
    pub level: RepairLevel,
    /// Plan only.
    pub dry_run: bool,
    /// Replace an existing output.
    pub force: bool,
}

/// A repair's report.
#[derive(Clone, Debug)]
pub struct RepairRun {
    /// The plan.
    pub plan: RepairPlan,
    /// The input as named.
    pub input: PathBuf,
    /// The output as named (`None`: in place).
    pub output: Option<PathBuf>,
    /// Planned only.
    pub dry_run: bool,
    /// Whether the repaired image was written.
    pub written: bool,
    /// `check`'s verdict of what was written (of the input when nothing was; `None` for a dry run).
    pub after: Option<Verdict>,
}

/// The plan and its outcome, as `--output json` prints them.
#[cfg(feature = "json")]
#[derive(serde::Serialize)]
struct PlanJson<'a> {
    schema: u32,
    input: String,
    output: Option<String>,
    level: RepairLevel,
    before: Verdict,
    dry_run: bool,
    written: bool,
    actions: &'a [crate::repair::RepairAction],
    unrepaired: &'a [crate::rule::Rule],
    kept_bitmaps: &'a [String],
    lost_bitmaps: Vec<String>,
    lost_guest: Vec<(u64, u64)>,
    output_len: u64,
    after: Option<Verdict>,
}

fn refused(path: &Path, reason: &'static str) -> RepairFileError {
    RepairFileError::Refused {
        path: path.to_path_buf(),
        reason,
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> RepairFileError + '_ {
    move |source| {
        RepairFileError::Path(PathError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn lib_at(path: &Path) -> impl Fn(Error) -> RepairFileError + '_ {
    move |source| {
        RepairFileError::Path(PathError::Image {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Opens `path` for repair: a regular file (or, read-only, a block device).
fn open_input(path: &Path, in_place: bool) -> Result<(File, std::fs::Metadata), RepairFileError> {
    let file = File::open(path).map_err(io_at(path))?;
    let meta = file.metadata().map_err(io_at(path))?;
    let ft = meta.file_type();
    if in_place && !ft.is_file() {
        return Err(refused(
            path,
            "is not a regular file: --in-place repairs only regular files (write a repaired copy instead)",
        ));
    }
    if !ft.is_file() && !is_block_device(&ft) {
        return Err(refused(
            path,
            "repair reads its input at offsets: it must be a regular file or a block device, not a stream",
        ));
    }
    Ok((file, meta))
}

#[cfg(unix)]
fn is_block_device(ft: &std::fs::FileType) -> bool {
    std::os::unix::fs::FileTypeExt::is_block_device(ft)
}

#[cfg(not(unix))]
fn is_block_device(_: &std::fs::FileType) -> bool {
    false
}

/// Whether `a` and `b` are one file: the same device and inode (elsewhere than unix, the same
/// canonical path).
#[cfg(unix)]
fn same_file(_: &Path, a: &std::fs::Metadata, _: &Path, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Path, _: &std::fs::Metadata, b: &Path, _: &std::fs::Metadata) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The input's permission bits, for the repaired file (elsewhere than unix: the default).
#[cfg(unix)]
fn permissions(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.mode() & 0o7777)
}

#[cfg(not(unix))]
fn permissions(_: &std::fs::Metadata) -> Option<u32> {
    None
}

/// The verdict of the image at `path` (after writing).
fn verdict_of(path: &Path) -> Result<Verdict, RepairFileError> {
    let source = FileSource::open(path).map_err(io_at(path))?;
    let image = Image::parse(&source).map_err(lib_at(path))?;
    Ok(validate(&image).map_err(lib_at(path))?.verdict())
}

/// Plans and (unless a dry run) writes the repair.
pub fn repair_file(r: &RepairRequest<'_>) -> Result<RepairRun, RepairFileError> {
    let (input, in_place) = (r.input, r.output.is_none());
    let (file, meta) = open_input(r.read, in_place && !r.dry_run)?;
    if let Some(out) = r.output {
        if let Ok(out_meta) = std::fs::metadata(out) {
            if same_file(out, &out_meta, r.read, &meta) {
                return Err(refused(
                    out,
                    "is the input image; write the repaired copy elsewhere, or use --in-place",
                ));
            }
        }
    }
    let source = FileSource::new(file).map_err(io_at(input))?;
    let plan = plan_repair(&source, r.level).map_err(lib_at(input))?;
    let write = !r.dry_run && !plan.is_empty();
    let target: PathBuf = match r.output {
        Some(o) => o.to_path_buf(),
        None if input.as_os_str() == "-" => input.to_path_buf(),
        None => input.canonicalize().map_err(io_at(input))?,
    };
    if write {
        let options = OutputOptions {
            overwrite: r.force || in_place,
            follow_symlink: false,
            mode: permissions(&meta),
        };
        write_atomically(&target, &options, |f| plan.write(&source, f)).map_err(lib_at(&target))?;
    }
    let after = if write {
        Some(verdict_of(&target)?)
    } else if r.dry_run {
        None
    } else {
        Some(plan.before)
    };
    Ok(RepairRun {
        plan,
        input: input.to_path_buf(),
        output: r.output.map(Path::to_path_buf),
        dry_run: r.dry_run,
        written: write,
        after,
    })
}

/// A repair's status: the verdict of what was written (or of the input when nothing was);
/// for a dry run, from what the plan leaves: 2 with corruption, 3 with leaks only, else 0.
fn run_status(after: Option<Verdict>, left: impl Iterator<Item = Severity>) -> u8 {
    if let Some(v) = after {
        return v.exit_code();
    }
    let mut status = 0;
    for severity in left {
        match severity {
            Severity::Corruption => return 2,
            Severity::Leak => status = 3,
            _ => {}
        }
    }
    status
}

impl RepairRun {
    /// The status: the result's verdict; a dry run's, the plan's prediction.
    pub fn exit_code(&self) -> u8 {
        run_status(self.after, self.plan.unrepaired.iter().map(|r| r.severity()))
    }

    /// The plan as typed records, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        let plan = &self.plan;
        let json = PlanJson {
            schema: crate::check::JSON_SCHEMA,
            input: self.input.display().to_string(),
            output: self.output.as_ref().map(|o| o.display().to_string()),
            level: plan.level,
            before: plan.before,
            dry_run: self.dry_run,
            written: self.written,
            actions: &plan.actions,
            unrepaired: &plan.unrepaired,
            kept_bitmaps: &plan.kept_bitmaps,
            lost_bitmaps: plan.lost_bitmaps(),
            lost_guest: plan.lost_guest(),
            output_len: plan.output_len,
            after: self.after,
        };
        serde_json::to_writer_pretty(&mut *out, &json)?;
        out.write_all(b"\n")
    }

    /// The plan for people: each action, what is lost and kept, what is left, the result.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = String::new();
        let name = self.input.display();
        if self.plan.is_empty() {
            if self.plan.before == Verdict::Clean {
                outln!(out, "{name}: clean, nothing to repair; nothing written");
            } else {
                outln!(out, "{name}: nothing this level may repair; nothing written");
            }
        } else {
            let verb = if self.dry_run { "would repair" } else { "repaired" };
            outln!(out, "{name}: {} actions ({verb}):", self.plan.actions.len());
            for a in &self.plan.actions {
                outln!(out, "  {a}");
            }
            let lost_guest = self.plan.lost_guest();
            let lost_bitmaps = self.plan.lost_bitmaps();
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
                if self.plan.kept_bitmaps.is_empty() {
                    "none".to_string()
                } else {
                    self.plan.kept_bitmaps.join(", ")
                }
            );
        }
        if !self.plan.unrepaired.is_empty() {
            let codes: Vec<&str> = self.plan.unrepaired.iter().map(|r| r.code()).collect();
            outln!(out, "left as they are: {}", codes.join(", "));
        }
        if let Some(v) = self.after {
            outln!(out, "result: {}", v.name());
        }
        w.write_all(out.as_bytes())
    }
}

/// A bundle repair's report.
#[derive(Clone, Debug)]
pub struct BundleRepairRun {
    /// The plan.
    pub plan: BundleRepairPlan,
    /// The bundle as named.
    pub input: PathBuf,
    /// The new bundle folder as named (`None`: in place).
    pub output: Option<PathBuf>,
    /// Planned only.
    pub dry_run: bool,
    /// Whether anything was written.
    pub written: bool,
    /// `check`'s verdict of what was written (of the input when nothing was; `None` for a dry run).
    pub after: Option<Verdict>,
}

/// The image plan of one image of a bundle, as `--output json` prints it.
#[cfg(feature = "json")]
#[derive(serde::Serialize)]
struct ImagePlanJson<'a> {
    storage: usize,
    image: usize,
    file: &'a str,
    actions: &'a [crate::repair::RepairAction],
    unrepaired: &'a [crate::rule::Rule],
    kept_bitmaps: &'a [String],
    lost_bitmaps: Vec<String>,
    lost_guest: Vec<(u64, u64)>,
}

/// A bundle repair's plan and outcome, as `--output json` prints them.
#[cfg(feature = "json")]
#[derive(serde::Serialize)]
struct BundlePlanJson<'a> {
    schema: u32,
    format: &'static str,
    input: String,
    output: Option<String>,
    level: RepairLevel,
    before: Verdict,
    dry_run: bool,
    written: bool,
    actions: &'a [crate::bundle::BundleRepairAction],
    images: Vec<ImagePlanJson<'a>>,
    unrepaired: &'a [String],
    after: Option<Verdict>,
}

/// Plans and (unless a dry run) writes the repair of the bundle `r.input` (its folder or its
/// descriptor): a new bundle folder `r.output`, or the bundle itself (`None`). The descriptor is
/// repaired where the storage is intact, and each image by the image repair at the same level.
pub fn repair_bundle(r: &RepairRequest<'_>) -> Result<BundleRepairRun, RepairFileError> {
    let input = r.input;
    let plan = plan_bundle_repair(input, r.level).map_err(|e| match e {
        BundleRepairError::Bundle(b) => RepairFileError::Path(PathError::Bundle(b)),
        other => RepairFileError::Bundle(Box::new(other)),
    })?;
    let dir = Bundle::open(input).map_or_else(|_| folder_of(input), |b| b.dir().to_path_buf());
    if let Some(out) = r.output {
        if matches!((out.canonicalize(), dir.canonicalize()), (Ok(a), Ok(b)) if a == b) {
            return Err(refused(
                out,
                "is the input bundle; write the repaired copy elsewhere, or use --in-place",
            ));
        }
    }
    let write = !r.dry_run && !plan.is_empty();
    if write {
        match r.output {
            Some(out) => plan.write_to(out, r.force).map_err(lib_at(out))?,
            None => plan.write_in_place().map_err(lib_at(input))?,
        }
    }
    let after = if write {
        let target = r.output.unwrap_or(input);
        let bundle = Bundle::open(target).map_err(|b| RepairFileError::Path(PathError::Bundle(b)))?;
        Some(bundle.validate().verdict())
    } else if r.dry_run {
        None
    } else {
        Some(plan.before)
    };
    Ok(BundleRepairRun {
        plan,
        input: input.to_path_buf(),
        output: r.output.map(Path::to_path_buf),
        dry_run: r.dry_run,
        written: write,
        after,
    })
}

/// The folder of a bundle named by its descriptor (or the folder itself).
fn folder_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl BundleRepairRun {
    /// The status: the result's verdict; a dry run's, 2 when corruption is left, 3 when leaks
    /// are, else 0.
    pub fn exit_code(&self) -> u8 {
        let severity = |code: &String| {
            crate::bundle::BundleRule::from_code(code)
                .map(|r| r.severity())
                .or_else(|| crate::rule::Rule::from_code(code).map(|r| r.severity()))
        };
        run_status(self.after, self.plan.unrepaired.iter().filter_map(severity))
    }

    /// The plan as typed records, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        let plan = &self.plan;
        let json = BundlePlanJson {
            schema: crate::check::JSON_SCHEMA,
            format: "parallels-bundle",
            input: self.input.display().to_string(),
            output: self.output.as_ref().map(|o| o.display().to_string()),
            level: plan.level,
            before: plan.before,
            dry_run: self.dry_run,
            written: self.written,
            actions: &plan.actions,
            images: plan
                .images
                .iter()
                .map(|i| ImagePlanJson {
                    storage: i.storage,
                    image: i.image,
                    file: &i.file,
                    actions: &i.plan.actions,
                    unrepaired: &i.plan.unrepaired,
                    kept_bitmaps: &i.plan.kept_bitmaps,
                    lost_bitmaps: i.plan.lost_bitmaps(),
                    lost_guest: i.plan.lost_guest(),
                })
                .collect(),
            unrepaired: &plan.unrepaired,
            after: self.after,
        };
        serde_json::to_writer_pretty(&mut *out, &json)?;
        out.write_all(b"\n")
    }

    /// The plan for people: the descriptor's actions, then each image's, what is lost, what is
    /// left, the result.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut out = String::new();
        let name = self.input.display();
        let plan = &self.plan;
        if plan.is_empty() {
            if plan.before == Verdict::Clean {
                outln!(out, "{name}: clean, nothing to repair; nothing written");
            } else {
                outln!(out, "{name}: nothing this level may repair; nothing written");
            }
        } else {
            let verb = if self.dry_run { "would repair" } else { "repaired" };
            outln!(
                out,
                "{name}: {} descriptor actions, {} images ({verb}):",
                plan.actions.len(),
                plan.images.len()
            );
            for a in &plan.actions {
                outln!(out, "  {a}");
            }
            for i in &plan.images {
                outln!(out, "  image {}: {} actions", i.file, i.plan.actions.len());
                for a in &i.plan.actions {
                    outln!(out, "    {a}");
                }
                let lost = i.plan.lost_guest();
                let bitmaps = i.plan.lost_bitmaps();
                if !lost.is_empty() || !bitmaps.is_empty() {
                    let total: u64 = lost.iter().map(|(_, l)| l).sum();
                    outln!(
                        out,
                        "    lost: {total} guest bytes in {} ranges; bitmaps: {}",
                        lost.len(),
                        if bitmaps.is_empty() {
                            "none".to_string()
                        } else {
                            bitmaps.join(", ")
                        }
                    );
                }
            }
        }
        if !plan.unrepaired.is_empty() {
            outln!(out, "left as they are: {}", plan.unrepaired.join(", "));
        }
        if let Some(v) = self.after {
            outln!(out, "result: {}", v.name());
        }
        w.write_all(out.as_bytes())
    }
}

/// A repair of whatever the request names: an image file (or standard input), or a bundle.
#[derive(Debug)]
pub enum AnyRepairRun {
    /// An image's repair ([`repair_file`]).
    Image(RepairRun),
    /// A bundle's repair ([`repair_bundle`]).
    Bundle(BundleRepairRun),
}

impl AnyRepairRun {
    /// The status, as [`RepairRun::exit_code`] or [`BundleRepairRun::exit_code`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Image(r) => r.exit_code(),
            Self::Bundle(r) => r.exit_code(),
        }
    }

    /// The plan and its result as JSON records.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Self::Image(r) => r.write_json(out),
            Self::Bundle(r) => r.write_json(out),
        }
    }

    /// The plan and its result for people.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Self::Image(r) => r.write_human(out),
            Self::Bundle(r) => r.write_human(out),
        }
    }
}

/// Repairs what `r.input` is: a bundle (a `NAME.hdd` folder or its descriptor) through
/// [`repair_bundle`], anything else as an image through [`repair_file`].
pub fn repair_path(r: &RepairRequest<'_>) -> Result<AnyRepairRun, RepairFileError> {
    if crate::bundle::is_bundle(r.input) {
        repair_bundle(r).map(AnyRepairRun::Bundle)
    } else {
        repair_file(r).map(AnyRepairRun::Image)
    }
}
