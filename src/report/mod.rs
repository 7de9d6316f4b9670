//! Typed reports on a whole path, whatever it holds: an image file, a block device, a stream
//! (a FIFO, a character device), a bundle folder or its `DiskDescriptor.xml`. `prlimg check` and
//! the Python package both build on these.

mod batch;
mod bundle;
mod headline;
mod html;
mod image;
mod info;
mod readers;
mod repair;
mod text;

pub use batch::{
    batch_entries, failure_record, is_manifest, run_batch, verdict_line, BatchEntry, BatchError, BatchLine, BatchRun,
    BatchStatus, BatchSummary,
};
pub use bundle::{BundleInfo, ImageInfo, ShotInfo, StorageInfo};
pub use image::{check_image, CheckOptions, ImageCheck};
pub use info::{allocated_size, bitmap_line, gather, BitmapList, Info, InfoWarning, QemuImgInfo, RawInfo};
pub use readers::{not_predicted, too_many_clusters, Readers, ReadersBlock, MAX_PREDICTED_CLUSTERS};
pub use repair::{
    repair_bundle, repair_file, repair_path, AnyRepairRun, BundleRepairRun, RepairFileError, RepairRequest, RepairRun,
};
pub use text::{human_bytes, io_reason};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, BundleError, BundleFinding, BundleOptions, BundleReport, BundleRule};
use crate::check::Conformance;
use crate::error::Error;
use crate::image::{Image, RuleMode};
use crate::rule::{Rule, Severity};
use crate::source::{FileSource, Source};
use crate::stream::StreamSource;
use crate::validate::Verdict;

/// A rule of either catalogue: an image's `R` rule or a bundle's `D` rule. JSON and `Display`
/// give its code (`"R17"`, `"D7"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleCode {
    /// An image rule.
    Image(Rule),
    /// A bundle rule.
    Bundle(BundleRule),
}

impl RuleCode {
    /// `"R17"` or `"D7"`.
    pub fn code(self) -> &'static str {
        match self {
            RuleCode::Image(r) => r.code(),
            RuleCode::Bundle(r) => r.code(),
        }
    }

    /// The rule's severity.
    pub fn severity(self) -> Severity {
        match self {
            RuleCode::Image(r) => r.severity(),
            RuleCode::Bundle(r) => r.severity(),
        }
    }
}

impl std::fmt::Display for RuleCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for RuleCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// One finding of a bundle check, as `prlimg check --output json` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BundleCheckFinding {
    /// The rule (`"D7"` or `"R17"` in JSON).
    pub code: RuleCode,
    /// The severity's name (`"corruption"`, `"leak"`, `"non-canonical"`, `"note"`).
    #[cfg_attr(feature = "serde", serde(serialize_with = "severity_name"))]
    pub severity: Severity,
    /// The image file for an `R` finding, `None` for the descriptor.
    pub file: Option<String>,
    /// The storage of the image, for an `R` finding.
    pub storage: Option<usize>,
    /// The image's index in its storage, for an `R` finding.
    pub image: Option<usize>,
    /// The image location (`"BAT[3] @76"`) for an `R` finding, `None` for the descriptor.
    pub location: Option<String>,
    /// What the rule says about this bundle.
    pub message: String,
}

#[cfg(feature = "serde")]
fn severity_name<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

/// `prlimg check` of one bundle: the `D` rules and every image's `R` rules.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BundleCheck {
    /// The JSON layout's version ([`crate::JSON_SCHEMA`]).
    pub schema: u32,
    /// The path as given.
    pub filename: String,
    /// Always `"parallels-bundle"`.
    pub format: &'static str,
    /// The mode the rules ran in.
    pub mode: RuleMode,
    /// What the findings amount to.
    #[cfg_attr(feature = "serde", serde(rename = "result"))]
    pub verdict: Verdict,
    /// Findings that are corruption.
    pub corruptions: usize,
    /// Findings that are leaks.
    pub leaks: usize,
    /// Non-canonical findings.
    pub non_canonical: usize,
    /// Notes.
    pub notes: usize,
    /// Every rule broken, `D` and `R` codes, in the order first found.
    pub rules: Vec<RuleCode>,
    /// Every finding.
    pub findings: Vec<BundleCheckFinding>,
    /// What libphdi does with the bundle (`None` when it is not a file or folder).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub libphdi: Option<Box<crate::readers::ReaderPrediction>>,
    /// What dissect.hypervisor does with it.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub dissect: Option<Box<crate::readers::ReaderPrediction>>,
}

impl BundleCheck {
    /// `prlimg check`'s exit status: 0 clean, 2 corrupt, 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        self.verdict.exit_code()
    }
}

fn bundle_finding(f: &BundleFinding) -> BundleCheckFinding {
    match f {
        BundleFinding::Descriptor(v) => BundleCheckFinding {
            code: RuleCode::Bundle(v.rule()),
            severity: v.rule().severity(),
            file: None,
            storage: None,
            image: None,
            location: None,
            message: v.to_string(),
        },
        BundleFinding::Image {
            file,
            storage,
            image,
            finding,
        } => BundleCheckFinding {
            code: RuleCode::Image(finding.violation.rule()),
            severity: finding.severity,
            file: Some(file.display().to_string()),
            storage: Some(*storage),
            image: Some(*image),
            location: Some(finding.violation.location().to_string()),
            message: finding.violation.to_string(),
        },
    }
}

/// Checks the bundle at `path` (a folder or its descriptor): the `D` rules and every image's `R`
/// rules. A descriptor that breaks a rule before the bundle can be read is a report of that one
/// finding; errors are I/O failures.
pub fn check_bundle(path: &Path, mode: RuleMode) -> Result<BundleCheck, BundleError> {
    let report = match Bundle::open_with(path, BundleOptions::default()) {
        Ok(bundle) => bundle.validate_with(mode),
        Err(BundleError::Invalid { violation, .. }) => BundleReport {
            findings: vec![BundleFinding::Descriptor(violation)],
        },
        Err(e) => return Err(e),
    };
    let readers = std::fs::metadata(path)
        .is_ok_and(|m| m.is_file() || m.is_dir())
        .then(|| crate::readers::predict_readers(path));
    let mut check = BundleCheck {
        schema: crate::check::JSON_SCHEMA,
        filename: path.display().to_string(),
        format: "parallels-bundle",
        mode,
        verdict: report.verdict(),
        corruptions: report.count(Severity::Corruption),
        leaks: report.count(Severity::Leak),
        non_canonical: report.count(Severity::NonCanonical),
        notes: report.count(Severity::Note),
        rules: Vec::new(),
        findings: report.findings.iter().map(bundle_finding).collect(),
        libphdi: readers.as_ref().map(|r| Box::new(r.0.clone())),
        dissect: readers.map(|r| Box::new(r.1)),
    };
    for f in &check.findings {
        if !check.rules.contains(&f.code) {
            check.rules.push(f.code);
        }
    }
    Ok(check)
}

/// An opened image to read: a file or block device read at offsets, or a stream read once
/// (its data left out).
pub enum Input {
    /// Read where metadata is.
    File(FileSource),
    /// Read once, metadata held.
    Stream(StreamSource),
}

impl Input {
    /// Opens `path`: a regular file or block device is read at offsets; a folder is refused
    /// (`EISDIR`); anything else (a FIFO, a character device) is read once as a stream, up to
    /// [`StreamSource::DEFAULT_LIMIT`] bytes of metadata held.
    pub fn open(path: &Path) -> Result<Input, CheckError> {
        let file = File::open(path).map_err(|source| CheckError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Input::from_file(file, path)
    }

    /// Opens `path` as `prlimg` names an input: `-` is standard input (a file or block device
    /// redirected to it is read at offsets, a pipe once as a stream), anything else as
    /// [`Input::open`] does.
    pub fn open_or_stdin(path: &Path) -> Result<Input, CheckError> {
        if !is_stdin(path) {
            return Input::open(path);
        }
        match stdin_file() {
            Some(f) => Input::from_file(f, path),
            None => Input::from_stream(io::stdin().lock(), path),
        }
    }

    /// An opened `file` (named `path` in errors), read as [`Input::open`] says.
    pub fn from_file(file: File, path: &Path) -> Result<Input, CheckError> {
        let io_err = |source| CheckError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_file() || is_block_device(&meta) {
            return FileSource::new(file).map(Input::File).map_err(io_err);
        }
        if meta.is_dir() {
            return Err(io_err(io::Error::from_raw_os_error(21)));
        }
        Input::from_stream(file, path)
    }

    /// A stream (named `path` in errors) read once, up to [`StreamSource::DEFAULT_LIMIT`]
    /// bytes of metadata held.
    pub fn from_stream(reader: impl io::Read, path: &Path) -> Result<Input, CheckError> {
        StreamSource::read(reader, StreamSource::DEFAULT_LIMIT)
            .map(Input::Stream)
            .map_err(|source| CheckError::Image {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The bytes, for the parser.
    pub fn source(&self) -> &dyn Source {
        match self {
            Input::File(f) => f,
            Input::Stream(s) => s,
        }
    }
}

/// Whether `path` is `-`, standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Standard input as a file of its own (a duplicate of descriptor 0), to learn what it is.
#[cfg(unix)]
fn stdin_file() -> Option<File> {
    use std::os::fd::AsFd;
    io::stdin().as_fd().try_clone_to_owned().ok().map(File::from)
}

#[cfg(not(unix))]
fn stdin_file() -> Option<File> {
    None
}

#[cfg(unix)]
fn is_block_device(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
}

#[cfg(not(unix))]
fn is_block_device(_: &std::fs::Metadata) -> bool {
    false
}

/// A path that could not be read or written: why `check` could not check it (a path that
/// breaks rules is a report, not an error), and why `repair` could not read or write it
/// ([`RepairFileError::Path`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The path could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Reading the image failed (an I/O error while parsing, a stream too large).
    #[error("{}: {source}", path.display())]
    Image {
        /// The path.
        path: PathBuf,
        /// The library's error.
        source: Error,
    },
    /// The bundle could not be read.
    #[error("{0}")]
    Bundle(#[from] BundleError),
}

/// [`CheckError`] by what it is: a path that could not be read or written, for `check` and
/// `repair` alike.
pub type PathError = CheckError;

/// One path's report: an image's or a bundle's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// An image (a file, a device, a stream).
    Image(Box<Conformance>),
    /// A bundle (a folder or its descriptor).
    Bundle(BundleCheck),
}

impl Checked {
    /// What the findings amount to.
    pub fn verdict(&self) -> Verdict {
        match self {
            Checked::Image(c) => c.verdict(),
            Checked::Bundle(b) => b.verdict,
        }
    }

    /// `prlimg check`'s exit status: 0 clean, 2 corrupt, 3 leaks only.
    pub fn exit_code(&self) -> u8 {
        self.verdict().exit_code()
    }
}

/// Checks `path` as `prlimg check PATH` does, whatever it is: a bundle (by
/// [`crate::bundle::is_bundle`]) or an image (a file, a device, a stream).
///
/// ```
/// use parallels_image::report::{check_path, Checked};
/// use parallels_image::{ImageBuilder, RuleMode, Verdict};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("a.hds");
/// ImageBuilder::new(1 << 20).create_file(&path, false)?;
/// let checked = check_path(&path, RuleMode::Strict)?;
/// assert_eq!(checked.verdict(), Verdict::Clean);
/// assert!(matches!(checked, Checked::Image(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_path(path: &Path, mode: RuleMode) -> Result<Checked, CheckError> {
    let options = CheckOptions {
        readers: false,
        ..CheckOptions::new(mode)
    };
    Ok(match check_path_with(path, &options)? {
        PathReport::Image(c) => Checked::Image(Box::new(c.conformance)),
        PathReport::Bundle(b) => Checked::Bundle(*b),
    })
}

/// One path's full report: an image's (with the readers' block) or a bundle's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathReport {
    /// An image (a file, a device, a stream).
    Image(Box<ImageCheck>),
    /// A bundle (a folder or its descriptor).
    Bundle(Box<BundleCheck>),
}

/// A path ready to be checked: a bundle (by [`crate::bundle::is_bundle`]), or an image opened
/// for reading (a file, a device, a stream; `-` is standard input).
pub enum CheckTarget {
    /// A bundle: a folder or its descriptor.
    Bundle(PathBuf),
    /// An image and its opened bytes.
    Image {
        /// The path as given (`-` for standard input).
        path: PathBuf,
        /// Its bytes.
        input: Input,
    },
}

impl CheckTarget {
    /// Opens `path` for [`CheckTarget::check`]: `-` is standard input (an image), a bundle is
    /// found by [`crate::bundle::is_bundle`], anything else is opened as [`Input::open`] says.
    pub fn open(path: &Path) -> Result<CheckTarget, CheckError> {
        if !is_stdin(path) && crate::bundle::is_bundle(path) {
            return Ok(CheckTarget::Bundle(path.to_path_buf()));
        }
        Ok(CheckTarget::Image {
            path: path.to_path_buf(),
            input: Input::open_or_stdin(path)?,
        })
    }

    /// Checks it as `options` say (a bundle always with its readers' predictions; standard
    /// input never, the readers needing a file), and gives back an image's parse (`None` for a
    /// bundle, or when the header cannot be interpreted) so pictures need no second parse.
    pub fn check(&self, options: &CheckOptions) -> Result<(PathReport, Option<Image<'_>>), CheckError> {
        match self {
            CheckTarget::Bundle(path) => Ok((PathReport::Bundle(Box::new(check_bundle(path, options.mode)?)), None)),
            CheckTarget::Image { path, input } => {
                let options = CheckOptions {
                    readers: options.readers && !is_stdin(path),
                    ..options.clone()
                };
                check_image(input.source(), path, &options)
                    .map(|(c, image)| (PathReport::Image(Box::new(c)), image))
                    .map_err(|source| CheckError::Image {
                        path: path.to_path_buf(),
                        source,
                    })
            }
        }
    }
}

/// The one entry point for a whole path, whatever it is: a bundle (by [`crate::bundle::is_bundle`],
/// always with its readers' predictions) or an image (a file, a device, a stream, `-` for
/// standard input), checked as `options` say: [`CheckTarget::open`] then
/// [`CheckTarget::check`], which also keeps an image's parse. [`check_image`] checks an image
/// already opened.
pub fn check_path_with(path: &Path, options: &CheckOptions) -> Result<PathReport, CheckError> {
    CheckTarget::open(path)?.check(options).map(|(report, _)| report)
}

impl PathReport {
    /// What the findings amount to.
    pub fn verdict(&self) -> Verdict {
        match self {
            PathReport::Image(c) => c.conformance.verdict(),
            PathReport::Bundle(b) => b.verdict,
        }
    }

    /// The rules broken (`R` and `D` rules), in the order first found.
    pub fn rules(&self) -> Vec<RuleCode> {
        match self {
            PathReport::Image(c) => c.conformance.report.rules().into_iter().map(RuleCode::Image).collect(),
            PathReport::Bundle(b) => b.rules.clone(),
        }
    }

    /// Each finding's rule and severity, in the order found.
    pub fn findings(&self) -> Vec<(RuleCode, Severity)> {
        match self {
            PathReport::Image(c) => c
                .conformance
                .report
                .findings
                .iter()
                .map(|f| (RuleCode::Image(f.violation.rule()), f.severity))
                .collect(),
            PathReport::Bundle(b) => b.findings.iter().map(|f| (f.code, f.severity)).collect(),
        }
    }

    /// The report as one line of JSON: the object `--output json` prints for this path alone.
    #[cfg(feature = "json")]
    pub fn json_line(&self) -> serde_json::Result<String> {
        match self {
            PathReport::Image(c) => serde_json::to_string(&c.json_value()?),
            PathReport::Bundle(b) => serde_json::to_string(b),
        }
    }

    /// The human report.
    pub fn write_human(&self, out: &mut dyn io::Write) -> io::Result<()> {
        match self {
            PathReport::Image(c) => c.write_human(out),
            PathReport::Bundle(b) => b.write_human(out),
        }
    }

    /// The JSON report, pretty, and a newline.
    #[cfg(feature = "json")]
    pub fn write_json(&self, out: &mut dyn io::Write) -> io::Result<()> {
        match self {
            PathReport::Image(c) => c.write_json(out),
            PathReport::Bundle(b) => b.write_json(out),
        }
    }
}

/// The word a human report starts a finding's line with, as `qemu-img check` and `prlimg check`
/// print it: `ERROR`, `Leaked`, `Non-canonical` or `Note`.
pub fn severity_tag(severity: Severity) -> &'static str {
    match severity {
        Severity::Corruption => "ERROR",
        Severity::Leak => "Leaked",
        Severity::NonCanonical => "Non-canonical",
        Severity::Note => "Note",
    }
}
