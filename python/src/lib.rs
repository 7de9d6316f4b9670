//! The native half of the Python package `parallels_image`: conversions between the library's
//! typed values and Python objects, nothing else. The Pythonic surface (enums, the report and
//! image classes, `io.RawIOBase`, the Hypothesis strategies) is in `parallels_image/*.py`.
//!
//! No panic crosses into Python: every library error becomes an exception of the package
//! (`ParallelsImageError` and its subclasses, or `OSError` with the file name), and a
//! `KeyboardInterrupt` pending during a long call stops it between two pieces of work.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

mod buffer;
mod guest;

use guest::PyGuest;

use parallels_image as pi;
use pi::report::{check_path_with, BundleCheck, CheckError, CheckOptions, Checked, PathReport, ReadersBlock};
use pi::{bundle::Bundle, bundle::BundleError, Image, RuleMode};
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use pythonize::{depythonize, pythonize};

pyo3::create_exception!(
    _native,
    ParallelsImageError,
    PyException,
    "Base class of the errors of parallels_image."
);
pyo3::create_exception!(
    _native,
    InvalidImageError,
    ParallelsImageError,
    "The image breaks a rule of the format: `rule`, `severity`, `location`, `where`, `message`, `path`."
);
pyo3::create_exception!(
    _native,
    NotParallelsError,
    InvalidImageError,
    "The file is empty or not a Parallels image at all (rule R1): also `found`, `version` (None when not read), `expected`."
);
pyo3::create_exception!(
    _native,
    InvalidBundleError,
    ParallelsImageError,
    "The bundle's descriptor breaks a rule: `rule`, `message`, `path`."
);
pyo3::create_exception!(
    _native,
    BuildError,
    ParallelsImageError,
    "An image or bundle the format cannot express was asked for."
);
pyo3::create_exception!(
    _native,
    DefectError,
    ParallelsImageError,
    "A defect is unknown or cannot be planned on this image: `defect`, `needs` (None for an unknown defect), `path`."
);
pyo3::create_exception!(
    _native,
    OutputError,
    ParallelsImageError,
    "An output path may not be written (it exists, or is not a regular file): `path`."
);
pyo3::create_exception!(
    _native,
    BundleReadError,
    ParallelsImageError,
    "A bundle could not be read (no descriptor, a snapshot that is not there, ...): `path`."
);

/// A `KeyboardInterrupt` (or another signal handler's exception) seen inside a library callback,
/// which can only report an `io::Error`: the error stands for it, and `Interrupt::take` gives
/// the Python exception back.
struct Interrupt {
    pending: Option<PyErr>,
}

impl Interrupt {
    fn new() -> Self {
        Interrupt { pending: None }
    }

    /// Runs the signal handlers; an exception from them becomes an `Interrupted` I/O error.
    fn check(&mut self, py: Python<'_>) -> io::Result<()> {
        if self.pending.is_some() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        match py.check_signals() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending = Some(e);
                Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"))
            }
        }
    }

    /// The error to raise: the pending signal's exception, if there is one, else `other`.
    fn take(&mut self, other: PyErr) -> PyErr {
        self.pending.take().unwrap_or(other)
    }
}

fn set<'py>(err: &PyErr, py: Python<'py>, name: &str, value: impl IntoPyObject<'py>) {
    // Setting an attribute on a fresh exception instance does not fail.
    let _ = err.value(py).setattr(name, value);
}

fn os_error(_py: Python<'_>, path: Option<&Path>, e: &io::Error) -> PyErr {
    let filename = path.map(|p| p.display().to_string());
    match (e.raw_os_error(), filename) {
        // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError, ...).
        (Some(errno), Some(f)) => PyOSError::new_err((errno, strip_os(e), f)),
        (Some(errno), None) => PyOSError::new_err((errno, strip_os(e))),
        (None, Some(f)) => PyOSError::new_err(format!("{f}: {e}")),
        (None, None) => PyOSError::new_err(e.to_string()),
    }
}

/// The system's message without Rust's ` (os error N)`.
fn strip_os(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn violation_error(py: Python<'_>, path: Option<&Path>, v: &pi::Violation) -> PyErr {
    let err = invalid_error(py, path, v, v.to_string());
    if let pi::Violation::BadMagic { found } = v {
        // The header was not read past its magic: no version.
        set_not_parallels(py, &err, found, None);
    }
    err
}

/// An `InvalidImageError` (`NotParallelsError` for R1) with the violation's attributes and
/// `message`.
fn invalid_error(py: Python<'_>, path: Option<&Path>, v: &pi::Violation, message: String) -> PyErr {
    let location = v.location();
    let class = if matches!(v.rule(), pi::Rule::R1) {
        NotParallelsError::new_err(message.clone())
    } else {
        InvalidImageError::new_err(message.clone())
    };
    set(&class, py, "rule", v.rule().code());
    set(&class, py, "severity", v.severity().name());
    set(&class, py, "location", location.to_string());
    if let Ok(w) = pythonize(py, &location) {
        set(&class, py, "where", w);
    }
    set(&class, py, "message", message);
    set(&class, py, "path", path.map(|p| p.display().to_string()));
    class
}

/// A `NotParallelsError`'s own attributes: the bytes where the magic should be, the version
/// (None where it was not read) and the two magics.
fn set_not_parallels(py: Python<'_>, err: &PyErr, found: &[u8], version: Option<u32>) {
    set(err, py, "found", PyBytes::new(py, found));
    set(err, py, "version", version);
    set(
        err,
        py,
        "expected",
        (&b"WithoutFreeSpace"[..], &b"WithouFreSpacExt"[..]),
    );
}

/// A library error as a Python exception; `path` is the file it concerns.
fn lib_error(py: Python<'_>, path: Option<&Path>, e: &pi::Error) -> PyErr {
    let with_path = |err: PyErr| {
        set(&err, py, "path", path.map(|p| p.display().to_string()));
        err
    };
    match e {
        pi::Error::Io(io) if io.kind() == io::ErrorKind::AlreadyExists => {
            let name = path.map_or_else(String::new, |p| format!("{}: ", p.display()));
            with_path(OutputError::new_err(format!(
                "{name}already exists (force=True replaces it)"
            )))
        }
        pi::Error::Io(io) => os_error(py, path, io),
        pi::Error::Invalid(v) => violation_error(py, path, v),
        pi::Error::Build(b) => with_path(BuildError::new_err(b.to_string())),
        pi::Error::Plan(p) => {
            let err = DefectError::new_err(p.to_string());
            match p {
                // Every DefectError has both attributes (the stubs promise them).
                pi::PlanError::UnknownDefect { name } => {
                    set(&err, py, "defect", name.clone());
                    set(&err, py, "needs", None::<String>);
                }
                pi::PlanError::NotApplicable { defect, needs } => {
                    set(&err, py, "defect", defect.name());
                    set(&err, py, "needs", needs.to_string());
                }
                _ => {
                    set(&err, py, "defect", None::<String>);
                    set(&err, py, "needs", None::<String>);
                }
            }
            with_path(err)
        }
        pi::Error::Output(o) => with_path(OutputError::new_err(o.to_string())),
        pi::Error::EmptyFile | pi::Error::NotParallels { .. } => {
            // The same attributes as a header whose magic is wrong (R1), with this message and
            // what was found (b"" and no version for an empty file).
            let (found, version) = match e {
                pi::Error::NotParallels { found, version } => (&found[..], Some(*version)),
                _ => (&b""[..], None),
            };
            let mut magic = [0u8; 16];
            let n = found.len().min(16);
            magic[..n].copy_from_slice(&found[..n]);
            let v = pi::Violation::BadMagic { found: magic };
            let err = invalid_error(py, path, &v, e.to_string());
            set_not_parallels(py, &err, found, version);
            err
        }
        pi::Error::StreamTooLarge { limit, offset } => {
            let err = ParallelsImageError::new_err(e.to_string());
            set(&err, py, "limit", *limit);
            set(&err, py, "offset", *offset);
            with_path(err)
        }
        other => with_path(ParallelsImageError::new_err(other.to_string())),
    }
}

fn bundle_error(py: Python<'_>, e: &BundleError) -> PyErr {
    match e {
        BundleError::Io { path, source } => os_error(py, Some(path), source),
        BundleError::Image { path, source } => lib_error(py, Some(path), source),
        BundleError::Invalid { path, violation } => {
            let err = InvalidBundleError::new_err(violation.to_string());
            set(&err, py, "rule", violation.rule().code());
            set(&err, py, "severity", violation.rule().severity().name());
            set(&err, py, "message", violation.to_string());
            set(&err, py, "path", path.display().to_string());
            err
        }
        other => BundleReadError::new_err(other.to_string()),
    }
}

fn check_error(py: Python<'_>, e: &CheckError) -> PyErr {
    match e {
        CheckError::Io { path, source } => os_error(py, Some(path), source),
        CheckError::Image { path, source } => lib_error(py, Some(path), source),
        CheckError::Bundle(b) => bundle_error(py, b),
    }
}

fn mode(lenient: bool) -> RuleMode {
    if lenient {
        RuleMode::Lenient
    } else {
        RuleMode::Strict
    }
}

/// One path's or buffer's check, as the library types it, with an image's readers' block (a
/// bundle's report holds its own), predicted when first asked for: the predictions read the
/// guest (up to 1 GiB, an MD5 per MiB per reader), which costs far more than the check.
#[pyclass(frozen, module = "parallels_image._native", name = "Checked")]
struct PyChecked {
    inner: Checked,
    /// The image file the readers are handed (`None`: a buffer, a bundle).
    path: Option<PathBuf>,
    readers: std::sync::OnceLock<ReadersBlock>,
}

impl PyChecked {
    fn new(inner: Checked, path: Option<PathBuf>) -> PyChecked {
        PyChecked {
            inner,
            path,
            readers: std::sync::OnceLock::new(),
        }
    }

    fn bundle(b: BundleCheck) -> PyChecked {
        PyChecked::new(Checked::Bundle(b), None)
    }

    /// The readers' block of an image's report, as `prlimg check` makes it (same limits):
    /// predicted on the first call (interruptible), kept.
    fn readers_block(&self, py: Python<'_>) -> PyResult<&ReadersBlock> {
        if let Some(block) = self.readers.get() {
            return Ok(block);
        }
        let block = match &self.path {
            Some(path) => {
                let path = path.clone();
                interruptible(py, move || ReadersBlock::of(&path))?
            }
            None => ReadersBlock::Absent,
        };
        Ok(self.readers.get_or_init(|| block))
    }
}

/// One finding as a tuple: `(rule, severity, message, location, file, where)`.
type FindingTuple = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    Option<String>,
    Option<Py<PyAny>>,
);

#[pymethods]
impl PyChecked {
    /// `"image"` or `"bundle"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.inner {
            Checked::Image(_) => "image",
            Checked::Bundle(_) => "bundle",
        }
    }

    #[getter]
    fn verdict(&self) -> &'static str {
        self.inner.verdict().name()
    }

    #[getter]
    fn exit_code(&self) -> u8 {
        self.inner.exit_code()
    }

    #[getter]
    fn filename(&self) -> String {
        match &self.inner {
            Checked::Image(c) => c.filename.clone(),
            Checked::Bundle(b) => b.filename.clone(),
        }
    }

    #[getter]
    fn lenient(&self) -> bool {
        let m = match &self.inner {
            Checked::Image(c) => c.mode,
            Checked::Bundle(b) => b.mode,
        };
        m == RuleMode::Lenient
    }

    /// `(total, allocated, fragmented, image_end_offset)` as `qemu-img check` counts them, or
    /// `None` (a bundle, or a header that cannot be interpreted).
    #[getter]
    fn statistics(&self) -> Option<(u64, u64, u64, u64)> {
        match &self.inner {
            Checked::Image(c) => c
                .statistics
                .map(|s| (s.total, s.allocated, s.fragmented, s.image_end_offset)),
            Checked::Bundle(_) => None,
        }
    }

    fn findings(&self, py: Python<'_>) -> PyResult<Vec<FindingTuple>> {
        match &self.inner {
            Checked::Image(c) => c
                .report
                .findings
                .iter()
                .map(|f| {
                    let location = f.violation.location();
                    let where_ = pythonize(py, &location).map_err(PyErr::from)?.unbind();
                    Ok((
                        f.violation.rule().code(),
                        f.severity.name(),
                        f.violation.to_string(),
                        Some(location.to_string()),
                        None,
                        Some(where_),
                    ))
                })
                .collect(),
            Checked::Bundle(b) => Ok(b
                .findings
                .iter()
                .map(|f| {
                    (
                        f.code.code(),
                        f.severity.name(),
                        f.message.clone(),
                        f.location.clone(),
                        f.file.clone(),
                        None,
                    )
                })
                .collect()),
        }
    }

    /// The report as `prlimg check --output json` prints it, as Python objects (built from the
    /// typed report through serde, with no JSON text in between).
    /// With `readers`, an image's report gets the keys `libphdi` and `dissect` as the CLI adds
    /// them: both predictions, both `None` for an image of too many clusters to predict,
    /// neither for an image that is not a file (a buffer, a stream).
    #[pyo3(signature = (readers = true))]
    fn to_dict<'py>(&self, py: Python<'py>, readers: bool) -> PyResult<Bound<'py, PyAny>> {
        let value = match &self.inner {
            Checked::Image(c) => pythonize(py, c.as_ref())?,
            Checked::Bundle(b) => return pythonize(py, b).map_err(PyErr::from),
        };
        if !readers {
            return Ok(value);
        }
        let dict = value.cast::<PyDict>()?;
        match self.readers_block(py)? {
            ReadersBlock::Absent => {}
            ReadersBlock::TooLarge(_) => {
                dict.set_item("libphdi", py.None())?;
                dict.set_item("dissect", py.None())?;
            }
            ReadersBlock::Predicted(r) => {
                dict.set_item("libphdi", pythonize(py, &r.libphdi)?)?;
                dict.set_item("dissect", pythonize(py, &r.dissect)?)?;
            }
        }
        Ok(value)
    }
}

/// Runs `work` (which only reads) on a thread of its own and waits for it without the GIL,
/// looking at the signal handlers every 20 ms: a `KeyboardInterrupt` raised meanwhile is
/// raised at once, and the thread's result, when it comes, is dropped.
fn interruptible<T: Send + 'static>(py: Python<'_>, work: impl FnOnce() -> T + Send + 'static) -> PyResult<T> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("parallels-image".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| os_error(py, None, &e))?;
    let mut rx = rx;
    loop {
        // The receiver goes into the closure and back (it may be sent, not shared).
        let (got, back) = py.detach(move || (rx.recv_timeout(std::time::Duration::from_millis(20)), rx));
        rx = back;
        match got {
            Ok(value) => return Ok(value),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ParallelsImageError::new_err(
                    "the check stopped without a result (a bug)",
                ))
            }
        }
    }
}

/// Checks the image, bundle folder, descriptor or device at `path`.
#[pyfunction]
#[pyo3(signature = (path, lenient = false))]
fn check_path(py: Python<'_>, path: PathBuf, lenient: bool) -> PyResult<PyChecked> {
    // Without the GIL (a FIFO's writer may be a Python thread of this process), on a thread
    // of its own so that Ctrl-C stops the wait. The readers' predictions are made when the
    // report is first asked for them (`to_dict`, `Report.libphdi`).
    let at = path.clone();
    let options = CheckOptions {
        readers: false,
        ..CheckOptions::new(mode(lenient))
    };
    interruptible(py, move || check_path_with(&at, &options))?
        .map(|report| match report {
            PathReport::Image(c) => PyChecked::new(Checked::Image(Box::new(c.conformance)), Some(path)),
            PathReport::Bundle(b) => PyChecked::bundle(*b),
        })
        .map_err(|e| check_error(py, &e))
}

/// Checks an image held in a buffer (`bytes`, `bytearray`, `memoryview`, ...).
#[pyfunction]
#[pyo3(signature = (data, lenient = false, filename = "<bytes>"))]
fn check_buffer(py: Python<'_>, data: &Bound<'_, PyAny>, lenient: bool, filename: &str) -> PyResult<PyChecked> {
    let checked = if let Ok(bytes) = data.cast::<PyBytes>() {
        pi::check(&bytes.as_bytes(), mode(lenient), filename)
    } else {
        buffer::with_bytes(data, |bytes| Ok(pi::check(&bytes, mode(lenient), filename)))?
    };
    checked
        .map(|c| PyChecked::new(Checked::Image(Box::new(c)), None))
        .map_err(|e| lib_error(py, None, &e))
}

/// Bytes held by an opened image.
enum Held {
    File(pi::FileSource),
    Bytes(Vec<u8>),
}

impl Held {
    fn source(&self) -> &dyn pi::Source {
        match self {
            Held::File(f) => f,
            Held::Bytes(b) => b,
        }
    }
}

/// A bitmap as a tuple: `(name, granularity in bytes, feature index, id)`.
type BitmapTuple = (String, u64, usize, [u8; 16]);

/// An opened image: its header, its BAT (bytes in the file's order, little-endian `u32`s), its
/// bitmaps.
#[pyclass(frozen, module = "parallels_image._native", name = "Image")]
struct PyImage {
    held: Held,
    path: Option<PathBuf>,
    mode: RuleMode,
    #[pyo3(get)]
    bat: Py<PyBytes>,
}

impl PyImage {
    fn parse(&self) -> pi::Result<Image<'_>> {
        Image::parse_compact(self.held.source(), self.mode)
    }

    fn err(&self, py: Python<'_>, e: &pi::Error) -> PyErr {
        lib_error(py, self.path.as_deref(), e)
    }

    fn from_held(py: Python<'_>, held: Held, path: Option<PathBuf>, lenient: bool) -> PyResult<PyImage> {
        let mode = mode(lenient);
        let bat = {
            let image = Image::parse_with(held.source(), mode).map_err(|e| lib_error(py, path.as_deref(), &e))?;
            let table = image.bat();
            let mut bytes = Vec::with_capacity(table.len() * 4);
            for entry in table.iter() {
                bytes.extend_from_slice(&entry.to_le_bytes());
            }
            PyBytes::new(py, &bytes).unbind()
        };
        Ok(PyImage { held, path, mode, bat })
    }
}

#[pymethods]
impl PyImage {
    #[staticmethod]
    #[pyo3(signature = (path, lenient = false))]
    fn open(py: Python<'_>, path: PathBuf, lenient: bool) -> PyResult<PyImage> {
        let file = File::open(&path).map_err(|e| os_error(py, Some(&path), &e))?;
        let source = pi::FileSource::new(file).map_err(|e| os_error(py, Some(&path), &e))?;
        PyImage::from_held(py, Held::File(source), Some(path), lenient)
    }

    #[staticmethod]
    #[pyo3(signature = (data, lenient = false))]
    fn from_bytes(py: Python<'_>, data: Vec<u8>, lenient: bool) -> PyResult<PyImage> {
        PyImage::from_held(py, Held::Bytes(data), None, lenient)
    }

    /// The header: a dict of its fields as stored, and what they mean.
    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let image = self.parse().map_err(|e| self.err(py, &e))?;
        let h = image.header();
        let r = &h.raw;
        let d = PyDict::new(py);
        d.set_item("magic", PyBytes::new(py, &r.magic))?;
        d.set_item("version", r.version.get())?;
        d.set_item("heads", r.heads.get())?;
        d.set_item("cylinders", r.cylinders.get())?;
        d.set_item("tracks", r.tracks.get())?;
        d.set_item("bat_entries", r.bat_entries.get())?;
        d.set_item("nb_sectors", r.nb_sectors.get())?;
        d.set_item("inuse", r.inuse.get())?;
        d.set_item("data_off", r.data_off.get())?;
        d.set_item("flags", r.flags.get())?;
        d.set_item("ext_off", r.ext_off.get())?;
        d.set_item(
            "variant",
            match h.variant {
                pi::Variant::V1 => "v1",
                pi::Variant::V2 => "v2",
            },
        )?;
        d.set_item("cluster_size", h.cluster_size())?;
        d.set_item("virtual_size", h.virtual_size())?;
        d.set_item("file_size", image.file_len())?;
        Ok(d)
    }

    /// The bitmaps: `(name, granularity in bytes, feature index, id as 16 bytes)`.
    fn bitmaps(&self, py: Python<'_>) -> PyResult<Vec<BitmapTuple>> {
        let image = self.parse().map_err(|e| self.err(py, &e))?;
        Ok(image
            .bitmaps()
            .iter()
            .map(|b| (b.name(), b.granularity_bytes(), b.feature, b.id()))
            .collect())
    }

    /// The dirty extents `(offset, length)` in guest bytes of the bitmap of feature `feature`.
    fn dirty_extents(&self, py: Python<'_>, feature: usize) -> PyResult<Vec<(u64, u64)>> {
        let image = self.parse().map_err(|e| self.err(py, &e))?;
        let bitmaps = image.bitmaps();
        let bitmap = bitmaps
            .iter()
            .find(|b| b.feature == feature)
            .ok_or_else(|| PyValueError::new_err(format!("no bitmap at feature {feature}")))?;
        bitmap.dirty_extents().map_err(|e| self.err(py, &e))
    }

    /// Reads guest bytes at `offset` into a new `bytes` object.
    fn read(&self, py: Python<'_>, offset: u64, length: usize) -> PyResult<Py<PyBytes>> {
        let image = self.parse().map_err(|e| self.err(py, &e))?;
        let mut buf = vec![0u8; length];
        image.read_guest(offset, &mut buf).map_err(|e| self.err(py, &e))?;
        Ok(PyBytes::new(py, &buf).unbind())
    }
}

fn parse_snapshot(text: &str) -> PyResult<uuid::Uuid> {
    pi::bundle::parse_guid_loose(text).ok_or_else(|| PyValueError::new_err(format!("snapshot {text:?} is not a GUID")))
}

/// An opened bundle.
#[pyclass(frozen, module = "parallels_image._native", name = "Bundle")]
struct PyBundle {
    bundle: Bundle,
}

#[pymethods]
impl PyBundle {
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<PyBundle> {
        Bundle::open(&path)
            .map(|bundle| PyBundle { bundle })
            .map_err(|e| bundle_error(py, &e))
    }

    #[getter]
    fn dir(&self) -> String {
        self.bundle.dir().display().to_string()
    }

    #[getter]
    fn descriptor_path(&self) -> String {
        self.bundle.descriptor_path().display().to_string()
    }

    /// The guest's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.bundle.disk_size()
    }

    /// The top snapshot's GUID (`{...}`), or `None` when the TopGUID is not valid.
    #[getter]
    fn top(&self) -> Option<String> {
        self.bundle.top().ok().map(pi::bundle::format_guid)
    }

    /// `(guid, parent)` of each snapshot, as the descriptor lists them.
    fn snapshots(&self) -> Vec<(String, String)> {
        self.bundle
            .descriptor()
            .snapshots
            .shots
            .iter()
            .map(|s| (s.guid.clone(), s.parent.clone()))
            .collect()
    }

    /// The storages: `(start, end, blocksize, [(guid, type, file)])`, sectors.
    #[allow(clippy::type_complexity)]
    fn storages(&self) -> Vec<(u64, u64, u64, Vec<(String, &'static str, String)>)> {
        self.bundle
            .descriptor()
            .storages
            .iter()
            .map(|s| {
                let images = s
                    .images
                    .iter()
                    .map(|im| (im.guid.clone(), im.kind.name(), im.file.clone()))
                    .collect();
                (s.start, s.end, s.blocksize, images)
            })
            .collect()
    }

    /// The snapshot chain from `snapshot` (the top if `None`) down to the root.
    #[pyo3(signature = (snapshot = None))]
    fn chain(&self, py: Python<'_>, snapshot: Option<&str>) -> PyResult<Vec<String>> {
        let snapshot = snapshot.map(parse_snapshot).transpose()?;
        self.bundle
            .chain(snapshot)
            .map(|c| c.into_iter().map(pi::bundle::format_guid).collect())
            .map_err(|e| bundle_error(py, &e))
    }

    #[pyo3(signature = (snapshot = None))]
    fn guest(&self, py: Python<'_>, snapshot: Option<&str>) -> PyResult<PyGuest> {
        let snapshot = snapshot.map(parse_snapshot).transpose()?;
        self.bundle
            .disk(snapshot)
            .map(PyGuest::new)
            .map_err(|e| bundle_error(py, &e))
    }

    #[pyo3(signature = (lenient = false))]
    fn check(&self, py: Python<'_>, lenient: bool) -> PyResult<PyChecked> {
        let path = self.bundle.descriptor_path().to_path_buf();
        interruptible(py, move || pi::report::check_bundle(&path, mode(lenient)))?
            .map(PyChecked::bundle)
            .map_err(|e| bundle_error(py, &e))
    }
}

/// A header `inuse`: a number, or a four-letter tag (`"v2.1"`, `"Ynot"`).
fn parse_inuse(value: &Bound<'_, PyAny>) -> PyResult<u32> {
    if let Ok(n) = value.extract::<u32>() {
        return Ok(n);
    }
    let text: String = value.extract()?;
    match text.as_bytes() {
        tag @ [_, _, _, _] if tag.iter().all(u8::is_ascii_graphic) => {
            Ok(u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]))
        }
        _ => Err(PyValueError::new_err(format!(
            "invalid inuse {text:?} (expected a number, or a 4-letter tag such as v2.1 or Ynot)"
        ))),
    }
}

/// A bitmap id: a UUID string, a `uuid.UUID`, or 16 bytes.
fn parse_id(value: &Bound<'_, PyAny>) -> PyResult<[u8; 16]> {
    if let Ok(bytes) = value.extract::<[u8; 16]>() {
        return Ok(bytes);
    }
    let text = value.str()?.to_string();
    uuid::Uuid::parse_str(&text)
        .map(|u| *u.as_bytes())
        .map_err(|e| PyValueError::new_err(format!("invalid bitmap id {text:?}: {e}")))
}

/// Bitmaps as the package takes them: `(id, granularity, [(offset, length), ...])`.
type BitmapArg<'py> = (Bound<'py, PyAny>, u64, Vec<(u64, u64)>);

#[allow(clippy::too_many_arguments)]
fn builder(
    size: u64,
    cluster_size: u64,
    data: Vec<(u64, u64, u8)>,
    bitmaps: Vec<BitmapArg<'_>>,
    v1: bool,
    inuse: Option<&Bound<'_, PyAny>>,
    density: Option<f64>,
    seed: u64,
    granularity: u64,
) -> PyResult<pi::ImageBuilder> {
    let recipe = pi::recipe::Recipe {
        size,
        cluster_size,
        v1,
        data: data
            .into_iter()
            .map(|(offset, len, byte)| pi::recipe::DataRecipe { offset, len, byte })
            .collect(),
        bitmaps: Vec::new(),
    };
    let build_err = |e: pi::Error| BuildError::new_err(e.to_string());
    let mut b = recipe.to_builder().map_err(build_err)?;
    for (id, granularity, extents) in bitmaps {
        b = b.bitmap(pi::BitmapSpec {
            id: parse_id(&id)?,
            granularity,
            extents,
        });
    }
    if let Some(density) = density {
        if !(0.0..=1.0).contains(&density) {
            return Err(PyValueError::new_err(format!(
                "density {density} is not between 0.0 and 1.0"
            )));
        }
        let spec =
            pi::BitmapSpec::random(seed, size, granularity, density).map_err(|e| BuildError::new_err(e.to_string()))?;
        b = b.bitmap(spec);
    }
    if let Some(inuse) = inuse {
        b = b.inuse(parse_inuse(inuse)?);
    }
    Ok(b)
}

/// Writes a new image at `path` (refused if it exists, unless `force`).
#[pyfunction]
#[pyo3(signature = (path, size, cluster_size, data, bitmaps, v1, inuse, density, seed, granularity, force))]
#[allow(clippy::too_many_arguments)]
fn create(
    py: Python<'_>,
    path: PathBuf,
    size: u64,
    cluster_size: u64,
    data: Vec<(u64, u64, u8)>,
    bitmaps: Vec<BitmapArg<'_>>,
    v1: bool,
    inuse: Option<Bound<'_, PyAny>>,
    density: Option<f64>,
    seed: u64,
    granularity: u64,
    force: bool,
) -> PyResult<u64> {
    let b = builder(
        size,
        cluster_size,
        data,
        bitmaps,
        v1,
        inuse.as_ref(),
        density,
        seed,
        granularity,
    )?;
    b.create_file(&path, force)
        .map(|layout| layout.file_len)
        .map_err(|e| lib_error(py, Some(&path), &e))
}

/// The bytes of a new image.
#[pyfunction]
#[pyo3(signature = (size, cluster_size, data, bitmaps, v1, inuse, density, seed, granularity))]
#[allow(clippy::too_many_arguments)]
fn build(
    py: Python<'_>,
    size: u64,
    cluster_size: u64,
    data: Vec<(u64, u64, u8)>,
    bitmaps: Vec<BitmapArg<'_>>,
    v1: bool,
    inuse: Option<Bound<'_, PyAny>>,
    density: Option<f64>,
    seed: u64,
    granularity: u64,
) -> PyResult<Py<PyBytes>> {
    let b = builder(
        size,
        cluster_size,
        data,
        bitmaps,
        v1,
        inuse.as_ref(),
        density,
        seed,
        granularity,
    )?;
    let (bytes, _) = b.to_vec().map_err(|e| lib_error(py, None, &e))?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

/// Writes a bundle from a recipe (the dict form of `prlimg create --bundle --recipe`).
#[pyfunction]
#[pyo3(signature = (path, recipe, force = false))]
fn create_bundle(py: Python<'_>, path: PathBuf, recipe: &Bound<'_, PyAny>, force: bool) -> PyResult<()> {
    let recipe: pi::bundle::BundleRecipe =
        depythonize(recipe).map_err(|e| PyValueError::new_err(format!("bundle recipe: {e}")))?;
    let b = recipe.to_builder().map_err(|e| lib_error(py, Some(&path), &e))?;
    b.create(&path, force)
        .map(|_| ())
        .map_err(|e| lib_error(py, Some(&path), &e))
}

/// The defects: `(name, rule, summary)`; a bundle's with `bundle`.
#[pyfunction]
#[pyo3(signature = (bundle = false))]
fn defects(bundle: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    if bundle {
        pi::bundle::BundleDefect::ALL
            .iter()
            .map(|d| (d.name(), d.rule().code(), d.summary()))
            .collect()
    } else {
        pi::corrupt::DefectKind::ALL
            .iter()
            .map(|d| (d.name(), d.rule().code(), d.summary()))
            .collect()
    }
}

/// Copies the image `src` to `dst` with one defect (see `defects`); a bundle with a bundle's.
#[pyfunction]
#[pyo3(signature = (src, dst, defect, seed = 0, force = false))]
fn corrupt(py: Python<'_>, src: PathBuf, dst: PathBuf, defect: &str, seed: u64, force: bool) -> PyResult<()> {
    if pi::bundle::is_bundle(&src) {
        let kind = pi::bundle::BundleDefect::from_name(defect).ok_or_else(|| {
            let err = DefectError::new_err(format!("unknown bundle defect {defect:?}"));
            set(&err, py, "defect", defect.to_string());
            set(&err, py, "needs", None::<String>);
            set(&err, py, "path", Some(src.display().to_string()));
            err
        })?;
        let bundle = Bundle::open(&src).map_err(|e| bundle_error(py, &e))?;
        return kind
            .apply(&bundle, &dst, force)
            .map_err(|e| lib_error(py, Some(&dst), &e));
    }
    let kind: pi::corrupt::DefectKind = defect
        .parse()
        .map_err(|e: pi::PlanError| lib_error(py, None, &pi::Error::Plan(e)))?;
    let file = File::open(&src).map_err(|e| os_error(py, Some(&src), &e))?;
    let source = pi::FileSource::new(file.try_clone().map_err(|e| os_error(py, Some(&src), &e))?)
        .map_err(|e| os_error(py, Some(&src), &e))?;
    let image = Image::parse(&source).map_err(|e| lib_error(py, Some(&src), &e))?;
    let patch = pi::corrupt::plan(&image, kind, seed).map_err(|e| lib_error(py, Some(&src), &e))?;
    let mut interrupt = Interrupt::new();
    let result = pi::outfile::write_file_atomically(&dst, force, |out| {
        let mut from = &file;
        let mut pos = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            interrupt.check(py)?;
            let n = io::Read::read(&mut from, &mut buf)?;
            if n == 0 {
                break;
            }
            std::os::unix::fs::FileExt::write_all_at(&*out, &buf[..n], pos)?;
            pos += n as u64;
        }
        patch.apply_to_file(out)?;
        Ok(())
    });
    result.map_err(|e| interrupt.take(lib_error(py, Some(&dst), &e)))
}

/// `data` with one defect, planned as `corrupt` plans it (for images held in memory).
#[pyfunction]
#[pyo3(signature = (data, defect, seed = 0))]
fn corrupt_bytes(py: Python<'_>, data: &[u8], defect: &str, seed: u64) -> PyResult<Py<PyBytes>> {
    let kind: pi::corrupt::DefectKind = defect
        .parse()
        .map_err(|e: pi::PlanError| lib_error(py, None, &pi::Error::Plan(e)))?;
    let patch = {
        let image = Image::parse(&data).map_err(|e| lib_error(py, None, &e))?;
        pi::corrupt::plan(&image, kind, seed).map_err(|e| lib_error(py, None, &e))?
    };
    let mut out = data.to_vec();
    patch.apply_to_vec(&mut out);
    Ok(PyBytes::new(py, &out).unbind())
}

/// Variants of `input` for the seeds `first_seed ..= first_seed + count - 1`, made one after
/// another in one buffer: `(bytes, [edit, ...])` each.
#[pyfunction]
#[pyo3(signature = (input, first_seed, count, max_edits = 3, fix_checksum = true))]
fn mutate_batch(
    py: Python<'_>,
    input: &[u8],
    first_seed: u64,
    count: usize,
    max_edits: usize,
    fix_checksum: bool,
) -> PyResult<Vec<(Py<PyBytes>, Vec<String>)>> {
    let options = pi::mutate::MutateOptions {
        fix_checksum,
        edits: 1..=max_edits.max(1),
        ..pi::mutate::MutateOptions::default()
    };
    let mutator = pi::mutate::Mutator::new(input, options).map_err(|e| lib_error(py, None, &e))?;
    let mut buffer = mutator.buffer();
    let mut out = Vec::with_capacity(count);
    for i in 0..count as u64 {
        py.check_signals()?;
        let bytes = PyBytes::new(py, buffer.mutate(first_seed.wrapping_add(i))).unbind();
        let edits = buffer.edits().iter().map(ToString::to_string).collect();
        out.push((bytes, edits));
    }
    Ok(out)
}

/// Writes the guest data of `src` (an image, a bundle folder or descriptor; at `snapshot`) to
/// `dst` as `"raw"` (sparse), `"parallels"` (an expanding `.hds`) or `"bundle"`.
#[pyfunction]
#[pyo3(signature = (src, dst, format, snapshot = None, cluster_size = 1 << 20, force = false))]
fn convert(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    format: &str,
    snapshot: Option<&str>,
    cluster_size: u64,
    force: bool,
) -> PyResult<()> {
    let snapshot = snapshot.map(parse_snapshot).transpose()?;
    let disk = pi::bundle::GuestDisk::open(&src, snapshot, pi::bundle::BundleOptions::default())
        .map_err(|e| bundle_error(py, &e))?;
    if disk.files().iter().any(|f| same_file(f, &dst)) {
        let err = OutputError::new_err(format!(
            "{}: holds the source's data; write the copy elsewhere",
            dst.display()
        ));
        set(&err, py, "path", dst.display().to_string());
        return Err(err);
    }
    let size = disk.size();
    let mut interrupt = Interrupt::new();
    let ranges = disk.data_ranges();
    let result = {
        let mut read = |off: u64, buf: &mut [u8]| -> io::Result<()> {
            interrupt.check(py)?;
            disk.read_at(off, buf)
        };
        match format {
            "raw" => pi::outfile::write_file_atomically(&dst, force, |f| {
                pi::bundle::write_raw(pi::bundle::GuestReader::Local(&mut read), &ranges, size, f).map(|_| ())
            }),
            "parallels" => pi::outfile::write_file_atomically(&dst, force, |f| {
                pi::bundle::write_expanding_ranges(
                    pi::bundle::GuestReader::Local(&mut read),
                    &ranges,
                    size,
                    cluster_size,
                    f,
                )
                .map(|_| ())
            }),
            "bundle" => pi::bundle::BundleBuilder::new(size)
                .cluster_size(cluster_size)
                .create_from(&dst, force, &mut read)
                .map(|_| ()),
            other => {
                return Err(PyValueError::new_err(format!(
                    "format {other:?}: expected \"raw\", \"parallels\" or \"bundle\""
                )))
            }
        }
    };
    result.map_err(|e| interrupt.take(lib_error(py, Some(&dst), &e)))
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Repairs the image `src` into `dst` (or in place): the library's plan (`prlimg repair`),
/// written aside and renamed; returns the plan as a dict, with `written` and the `after` verdict.
#[pyfunction]
#[pyo3(signature = (src, dst = None, all = false, dry_run = false, force = false, in_place = false))]
fn repair<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: Option<PathBuf>,
    all: bool,
    dry_run: bool,
    force: bool,
    in_place: bool,
) -> PyResult<Bound<'py, PyDict>> {
    use std::os::unix::fs::MetadataExt;
    let target = match (&dst, in_place) {
        (Some(_), true) => return Err(PyValueError::new_err("dst and in_place=True exclude each other")),
        (Some(d), false) => Some(d.clone()),
        (None, true) => Some(src.canonicalize().map_err(|e| os_error(py, Some(&src), &e))?),
        (None, false) if dry_run => None,
        (None, false) => return Err(PyValueError::new_err("repair needs dst, in_place=True or dry_run=True")),
    };
    if let (Some(d), false) = (&dst, in_place) {
        if same_file(&src, d) {
            let err = OutputError::new_err(format!(
                "{}: is the input image; write the repaired copy elsewhere, or use in_place=True",
                d.display()
            ));
            set(&err, py, "path", d.display().to_string());
            return Err(err);
        }
    }
    let file = File::open(&src).map_err(|e| os_error(py, Some(&src), &e))?;
    let meta = file.metadata().map_err(|e| os_error(py, Some(&src), &e))?;
    let source = pi::FileSource::new(file).map_err(|e| os_error(py, Some(&src), &e))?;
    let level = if all {
        pi::repair::RepairLevel::All
    } else {
        pi::repair::RepairLevel::Leaks
    };
    let plan = pi::repair::plan_repair(&source, level).map_err(|e| lib_error(py, Some(&src), &e))?;
    let write = !dry_run && !plan.is_empty();
    let mut after = if dry_run { None } else { Some(plan.before) };
    if let (true, Some(target)) = (write, &target) {
        let options = pi::outfile::OutputOptions {
            overwrite: force || in_place,
            follow_symlink: false,
            mode: Some(meta.mode() & 0o7777),
        };
        pi::outfile::write_atomically(target, &options, |f| plan.write(&source, f).map(|_| ()))
            .map_err(|e| lib_error(py, Some(target), &e))?;
        let checked = pi::report::check_path(target, RuleMode::Strict).map_err(|e| check_error(py, &e))?;
        after = Some(checked.verdict());
    }
    let d = PyDict::new(py);
    d.set_item("level", if all { "all" } else { "leaks" })?;
    d.set_item("before", plan.before.name())?;
    d.set_item("after", after.map(|v| v.name()))?;
    d.set_item("written", write)?;
    d.set_item("actions", pythonize(py, &plan.actions).map_err(PyErr::from)?)?;
    d.set_item(
        "unrepaired",
        plan.unrepaired.iter().map(|r| r.code()).collect::<Vec<_>>(),
    )?;
    d.set_item("kept_bitmaps", plan.kept_bitmaps.clone())?;
    d.set_item("output_len", plan.output_len)?;
    Ok(d)
}

/// Every rule: `(code, title, severity)`, image rules (`R`) then bundle rules (`D`).
#[pyfunction]
fn rules() -> Vec<(&'static str, &'static str, &'static str)> {
    let image = pi::Rule::ALL.iter().map(|r| (r.code(), r.title(), r.severity().name()));
    let bundle = pi::bundle::BundleRule::ALL
        .iter()
        .map(|r| (r.code(), r.title(), r.severity().name()));
    image.chain(bundle).collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ParallelsImageError", py.get_type::<ParallelsImageError>())?;
    m.add("InvalidImageError", py.get_type::<InvalidImageError>())?;
    m.add("NotParallelsError", py.get_type::<NotParallelsError>())?;
    m.add("InvalidBundleError", py.get_type::<InvalidBundleError>())?;
    m.add("BuildError", py.get_type::<BuildError>())?;
    m.add("DefectError", py.get_type::<DefectError>())?;
    m.add("OutputError", py.get_type::<OutputError>())?;
    m.add("BundleReadError", py.get_type::<BundleReadError>())?;
    m.add("JSON_SCHEMA", pi::JSON_SCHEMA)?;
    m.add("__version__", PyString::new(py, env!("CARGO_PKG_VERSION")))?;
    m.add_class::<PyChecked>()?;
    m.add_class::<PyImage>()?;
    m.add_class::<PyGuest>()?;
    m.add_class::<PyBundle>()?;
    m.add_function(wrap_pyfunction!(check_path, m)?)?;
    m.add_function(wrap_pyfunction!(check_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(create_bundle, m)?)?;
    m.add_function(wrap_pyfunction!(defects, m)?)?;
    m.add_function(wrap_pyfunction!(corrupt, m)?)?;
    m.add_function(wrap_pyfunction!(mutate_batch, m)?)?;
    m.add_function(wrap_pyfunction!(corrupt_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(rules, m)?)?;
    m.add_function(wrap_pyfunction!(repair, m)?)?;
    Ok(())
}
