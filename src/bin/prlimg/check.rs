//! `prlimg check`: every rule, with `qemu-img check`'s counters and exit statuses, and what
//! QEMU 10 and ploop would do with the image. Reads metadata only.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use parallels_image::qemu::Version;
use parallels_image::report::severity_tag;
use parallels_image::{
    check_versions, ploop::CbtOutcome, ploop::MountEffect, ploop::PloopPrediction, Conformance, Image, Mode, Severity,
    Source,
};

use crate::outln;
use crate::output::{emit, print_json, spinner, Failure, Format};
use crate::picture;
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
    repair: Option<crate::repair::Level>,
    /// Images checked at once in a batch [default: RAYON_NUM_THREADS, else the number of CPUs].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no metadata to check).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
    /// Which QEMU to predict: 10.0 (10.0.2), 7.2 (Debian 12's), or all (both: JSON adds
    /// "qemu_versions" with each one's "qemu", "qemu_check" and "qemu_read_write").
    #[arg(long, value_name = "VERSION", default_value = "10.0", value_parser = parse_qemu)]
    qemu: QemuChoice,
}

/// `--qemu`: one version, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuChoice {
    One(Version),
    All,
}

impl QemuChoice {
    /// The versions to predict, the one `prediction` holds first.
    fn versions(self) -> Vec<Version> {
        match self {
            QemuChoice::One(v) => vec![v],
            QemuChoice::All => {
                let mut all = vec![Version::default()];
                all.extend(Version::ALL.iter().copied().filter(|v| *v != Version::default()));
                all
            }
        }
    }
}

fn parse_qemu(s: &str) -> Result<QemuChoice, String> {
    if s == "all" {
        return Ok(QemuChoice::All);
    }
    s.parse::<Version>()
        .map(QemuChoice::One)
        .map_err(|e| format!("{e}, or all"))
}

/// One image's or bundle's report.
pub enum Checked {
    /// An `.hds` file (or device, or stream).
    Image(Box<Conformance>),
    /// A bundle (a folder or its descriptor).
    Bundle(parallels_image::report::BundleCheck),
}

impl Checked {
    /// `prlimg check`'s exit status for it: 0 clean, 2 corrupt, 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        match self {
            Checked::Image(c) => c.verdict().exit_code(),
            Checked::Bundle(b) => b.exit_code(),
        }
    }

    /// `"clean"`, `"leaks"` or `"corrupt"`.
    pub fn result(&self) -> &'static str {
        match self {
            Checked::Image(c) => c.verdict().name(),
            Checked::Bundle(b) => b.verdict.name(),
        }
    }

    /// The rules broken (`R` and `D` codes), in the order first found.
    pub fn rules(&self) -> Vec<&'static str> {
        match self {
            Checked::Image(c) => c.report.rules().iter().map(|r| r.code()).collect(),
            Checked::Bundle(b) => b.rules.clone(),
        }
    }

    /// The report as one line of JSON: the object `--output json` prints for this path alone.
    pub fn json_line(&self) -> Result<String, Failure> {
        match self {
            Checked::Image(c) => image_json(c).and_then(|v| serde_json::to_string(&v)),
            Checked::Bundle(b) => serde_json::to_string(b),
        }
        .map_err(|e| Failure::plain(format!("JSON: {e}")))
    }
}

fn mode(lenient: bool) -> Mode {
    if lenient {
        Mode::Lenient
    } else {
        Mode::Strict
    }
}

/// Checks the image at `path`, read from `source`. `spin`: a spinner on a terminal meanwhile.
fn check_image(
    path: &Path,
    source: &dyn Source,
    mode: Mode,
    spin: bool,
    qemu: &[Version],
) -> Result<Conformance, Failure> {
    let busy = if spin {
        spinner("checking")
    } else {
        ProgressBar::hidden()
    };
    let checked =
        check_versions(source, mode, &path.display().to_string(), qemu).map_err(|e| Failure::lib(path, &e))?;
    busy.finish_and_clear();
    Ok(checked)
}

/// Checks one path as `prlimg check PATH` does: a bundle (by [`parallels_image::bundle::is_bundle`]) or
/// an image.
pub fn check_one(path: &Path, lenient: bool) -> Result<Checked, Failure> {
    if parallels_image::bundle::is_bundle(path) {
        return crate::bundle::check_report(path, lenient).map(Checked::Bundle);
    }
    let input = crate::input::open(path)?;
    check_image(path, input.source(), mode(lenient), false, &[Version::default()]).map(|c| Checked::Image(Box::new(c)))
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
        crate::repair::in_place(&args.images[0], level, args.output == Format::Json)?;
    }
    if args.images.len() > 1 || args.recursive {
        if args.qemu != QemuChoice::One(Version::default()) {
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
        let options = crate::batch::Options {
            output: args.output,
            lenient: args.lenient,
            recursive: args.recursive,
            jobs: args.jobs.map(usize::from),
        };
        return crate::batch::run(&args.images, &options);
    }
    let path = &args.images[0];
    // With --output json, a path that cannot be checked still gets its JSON record on stdout.
    let json_failure = |f: Failure| {
        if args.output == Format::Json {
            if let Err(out) = crate::batch::print_failure_json(path, &f) {
                return out;
            }
        }
        f
    };
    if parallels_image::bundle::is_bundle(path) {
        let report = crate::bundle::check_report(path, args.lenient).map_err(json_failure)?;
        let code = crate::bundle::print_check(&report, args.output)?;
        if let Some(out) = &args.picture {
            picture::bundle(path, out, args.force)?;
        }
        return Ok(code);
    }
    let input = crate::input::open(path).map_err(json_failure)?;
    let source = input.source();
    let mode = mode(args.lenient);
    let checked = check_image(path, source, mode, true, &args.qemu.versions()).map_err(json_failure)?;
    // The pictures need the parsed image; an uninterpretable header has nothing to draw.
    let image = Image::parse_compact(source, mode).ok();
    if let Some(out) = &args.picture {
        let image = image
            .as_ref()
            .ok_or_else(|| Failure::at(path, "no picture: the header cannot be interpreted"))?;
        picture::write(out, args.force, &picture::layout(image, &checked.report))?;
    }
    match args.output {
        Format::Json => print_json(&image_json(&checked).map_err(|e| Failure::plain(format!("JSON: {e}")))?)?,
        Format::Human => emit(&(print_human(&checked) + &readers_human(&checked)))?,
        Format::Html => {
            let qemu_title = match args.qemu {
                QemuChoice::One(v) => format!("QEMU {}", v.label()),
                QemuChoice::All => "QEMU 10 and 7.2".to_string(),
            };
            let sections = [
                ("headline", "In QEMU and ploop", print_headline(&checked)),
                ("summary", "Summary", print_summary(&checked)),
                ("qemu", qemu_title.as_str(), print_qemu(&checked)),
                ("ploop", "ploop", print_ploop(&checked.ploop)),
                ("readers", "libphdi and dissect.hypervisor", readers_human(&checked)),
            ];
            emit(&picture::html(&checked, &sections, image.as_ref()))?
        }
    }
    Ok(checked.verdict().exit_code())
}

/// The image's JSON report with the keys `libphdi` and `dissect` added (when the image is a
/// file the readers can be handed).
fn image_json(c: &Conformance) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(c)?;
    let path = Path::new(&c.filename);
    if crate::readers::too_many_clusters(path).is_some() {
        if let Some(m) = value.as_object_mut() {
            m.insert("libphdi".into(), serde_json::Value::Null);
            m.insert("dissect".into(), serde_json::Value::Null);
        }
    } else if let Some(r) = crate::readers::Readers::of(path) {
        r.add_to(&mut value);
    }
    Ok(value)
}

/// The readers' lines of the human report (none for a stream).
fn readers_human(c: &Conformance) -> String {
    let path = Path::new(&c.filename);
    match crate::readers::too_many_clusters(path) {
        Some(n) => crate::readers::not_predicted(n),
        None => crate::readers::Readers::of(path).map_or_else(String::new, |r| r.human()),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The human report: whether QEMU and ploop take the image (a sentence each), the summary,
/// then the QEMU and the ploop predictions.
fn print_human(c: &Conformance) -> String {
    print_headline(c) + &print_summary(c) + &print_qemu(c) + &print_ploop(&c.ploop)
}

/// One sentence per other program, then a blank line.
fn print_headline(c: &Conformance) -> String {
    crate::headline::headline(c) + "\n"
}

/// The findings, their counts and `qemu-img check`'s statistics.
fn print_summary(c: &Conformance) -> String {
    let mut out = String::new();
    let r = &c.report;
    for f in &r.findings {
        let v = &f.violation;
        outln!(
            out,
            "{} {} at {}: {}",
            severity_tag(f.severity),
            v.rule(),
            v.location(),
            v
        );
    }
    let corruptions = r.count(Severity::Corruption);
    let leaks = r.count(Severity::Leak);
    if corruptions > 0 {
        outln!(
            out,
            "\n{} found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
            plural(corruptions, "error was", "errors were")
        );
    }
    if leaks > 0 {
        outln!(
            out,
            "\n{} ({} bytes) {} found on the image.\nThis means waste of disk space, but no harm to data.",
            plural(leaks, "leak", "leaks"),
            r.leaked_bytes(),
            if leaks == 1 { "was" } else { "were" }
        );
    }
    if corruptions == 0 && leaks == 0 {
        outln!(out, "No errors were found on the image.");
    }
    let (non_canonical, notes) = (r.count(Severity::NonCanonical), r.count(Severity::Note));
    if non_canonical > 0 || notes > 0 {
        outln!(
            out,
            "{} and {} (the image is still valid).",
            plural(non_canonical, "non-canonical finding", "non-canonical findings"),
            plural(notes, "note", "notes")
        );
    }
    if let Some(s) = &c.statistics {
        if s.total != 0 && s.allocated != 0 {
            outln!(
                out,
                "{}/{} = {:.2}% allocated, {:.2}% fragmented, 0.00% compressed clusters",
                s.allocated,
                s.total,
                s.allocated as f64 * 100.0 / s.total as f64,
                s.fragmented as f64 * 100.0 / s.allocated as f64
            );
        }
        outln!(out, "Image end offset: {}", s.image_end_offset);
    }
    out
}

/// What QEMU does (the library's whole prediction, of each version asked): `qemu-img info`,
/// `qemu-img check` with its first ERROR lines, a read-write open.
fn print_qemu(c: &Conformance) -> String {
    let mut out = String::new();
    let all = std::slice::from_ref(&c.prediction);
    let predictions = if c.qemu_versions.is_empty() {
        all
    } else {
        &c.qemu_versions[..]
    };
    for p in predictions {
        for line in p.render(&c.filename) {
            outln!(out, "{line}");
        }
    }
    out
}

/// ploop in two lines: its check and CBT loader, then what a mount does to the file.
fn print_ploop(p: &PloopPrediction) -> String {
    let mut out = String::new();
    let first = p
        .check
        .messages
        .iter()
        .find(|m| !matches!(m.as_str(), "Skipped" | "FATAL"));
    let check = match (p.check.rc, first) {
        (Some(rc), Some(first)) => format!("check exit {rc} ({first})"),
        (Some(rc), None) => format!("check exit {rc}"),
        (None, _) => format!("check crashes ({})", p.check.messages.last().map_or("", |m| m.as_str())),
    };
    let c = &p.cbt;
    let message = c.message.as_deref().unwrap_or("");
    let cbt = match (c.outcome, &c.bitmap) {
        (CbtOutcome::None, _) => "has no extension to load".to_string(),
        (CbtOutcome::Ignores, _) => "ignores the extension (inuse is 0)".to_string(),
        (CbtOutcome::Loads, Some(id)) => format!("loads bitmap {id}"),
        (CbtOutcome::Loads, None) => "loads the extension (no bitmap)".to_string(),
        (CbtOutcome::Refuses, _) => format!("refuses the extension (rc {}: {message})", c.rc.unwrap_or(0)),
        (CbtOutcome::Crashes, _) => format!("crashes ({message})"),
    };
    outln!(out, "ploop: {check}; CBT {cbt}");
    let m = &p.mount;
    let message = m.message.as_deref().unwrap_or("");
    match m.effect {
        MountEffect::Truncates => outln!(
            out,
            "ploop mount: cuts the file to {} bytes, ext_off left past the end",
            m.file_size
        ),
        MountEffect::DropsExtension => {
            outln!(out, "ploop mount: rewrites the header with ext_off = 0 ({message})")
        }
        MountEffect::Crashes => outln!(out, "ploop mount: crashes ({message})"),
        MountEffect::Unchanged => {}
    }
    out
}
