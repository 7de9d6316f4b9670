//! Shared output helpers: the `--output` formats, failures, progress bars and number formatting.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use parallels_image::{outfile::OutputError, outfile::OutputOptions, repair::RepairLevel, Error};

/// `--output` for `info` and `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Human,
    /// JSON with stable snake_case keys.
    Json,
    /// One self-contained HTML page with pictures (`check` only).
    Html,
}

/// Why an output that exists is not written: what [`Failure::lib`] and [`Failure::output`] say.
const EXISTS: &str = "already exists (use --force to replace it)";

/// A failure: printed as `prlimg: <path>: <reason>`, exit status `code`.
#[derive(Debug)]
pub struct Failure {
    pub path: Option<PathBuf>,
    pub reason: String,
    pub code: u8,
    /// The input is not a Parallels image at all (a batch check counts these apart).
    pub not_parallels: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "prlimg: {}: {}", p.display(), self.reason),
            None => write!(f, "prlimg: {}", self.reason),
        }
    }
}

impl Failure {
    /// A failure about `path`.
    pub fn at(path: &Path, reason: impl Into<String>) -> Self {
        Failure {
            path: Some(path.to_path_buf()),
            reason: reason.into(),
            code: 1,
            not_parallels: false,
        }
    }

    /// A failure not tied to one file.
    pub fn plain(reason: impl Into<String>) -> Self {
        Failure {
            path: None,
            reason: reason.into(),
            code: 1,
            not_parallels: false,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, e: &io::Error) -> Self {
        Self::at(path, io_reason(e))
    }

    /// A failed write to stdout. When the reader went away (`prlimg ... | head`), the program
    /// ends quietly with status 0: the reader took what it wanted, as with `yes | head`.
    pub fn stdout(e: &io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Failure {
                path: None,
                reason: String::new(),
                code: 0,
                not_parallels: false,
            };
        }
        Failure {
            path: None,
            reason: format!("stdout: {}", io_reason(e)),
            code: 1,
            not_parallels: false,
        }
    }

    /// A library error on `path`. An `Error::Io` of kind `AlreadyExists` is an output the
    /// library created with `create_new` and found there: `path` is the path the write was to,
    /// and the reason says that `--force` replaces it.
    pub fn lib(path: &Path, e: &Error) -> Self {
        match e {
            Error::Io(io) if io.kind() == io::ErrorKind::AlreadyExists => Self::at(path, EXISTS),
            Error::Io(io) => Self::io(path, io),
            Error::Output(o) => Self::output(path, o),
            Error::NotParallels { .. } | Error::EmptyFile => Failure {
                not_parallels: true,
                ..Self::at(path, e.to_string())
            },
            other => Self::at(path, other.to_string()),
        }
    }

    /// A library error from a command that reads `input` and writes `output`: an output that
    /// exists is named at `output` (as [`Failure::lib`] names it); any other error at `input`.
    pub fn lib_writing(input: &Path, output: &Path, e: &Error) -> Self {
        match e {
            Error::Io(io) if io.kind() == io::ErrorKind::AlreadyExists => Self::lib(output, e),
            _ => Self::lib(input, e),
        }
    }

    /// An output path that may not be written.
    pub fn output(path: &Path, e: &OutputError) -> Self {
        match e {
            OutputError::Exists { .. } => Self::at(path, EXISTS),
            OutputError::NotRegular { path: at, kind } if at == path => Self::at(
                path,
                format!("is a {kind}, not a regular file; refusing to replace it, even with --force"),
            ),
            OutputError::NotRegular { path: at, kind } => Self::at(
                path,
                format!(
                    "leads to {}, a {kind}, not a regular file; refusing to replace it, even with --force",
                    at.display()
                ),
            ),
            OutputError::Symlink { target, .. } => Self::at(
                path,
                format!(
                    "is a symbolic link to {}; refusing to replace it (--follow-symlink writes the file it points to)",
                    target.display()
                ),
            ),
            other => Self::at(path, other.to_string()),
        }
    }
}

/// The options for writing an output: `--force`, `--follow-symlink`, and the mode to give it
/// (`None`: as the umask says).
pub fn output_options(force: bool, follow_symlink: bool, mode: Option<u32>) -> OutputOptions {
    OutputOptions {
        overwrite: force,
        follow_symlink,
        mode,
    }
}

pub use parallels_image::report::io_reason;

/// Writes `text` to stdout. A closed pipe (`prlimg ... | head`) ends the program quietly
/// with status 0 rather than with a panic.
pub fn emit(text: &str) -> Result<(), Failure> {
    emit_bytes(text.as_bytes())
}

/// Writes what `render` writes to stdout, as [`emit`] does (nothing under `-q`).
pub fn emit_with(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), Failure> {
    let mut text = Vec::new();
    render(&mut text).map_err(|e| Failure::plain(format!("report: {e}")))?;
    emit_bytes(&text)
}

fn emit_bytes(text: &[u8]) -> Result<(), Failure> {
    if quiet() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::stdout(&e))
}

/// Writes `svg` to `path` (aside, then renamed); refuses an existing file unless `force`.
pub fn write_svg(path: &Path, force: bool, svg: &str) -> Result<(), Failure> {
    parallels_image::outfile::write_file_atomically(path, force, |f| Ok(f.write_all(svg.as_bytes())?))
        .map_err(|e| Failure::lib(path, &e))
}

/// The guest view of the bundle at `path` (its top snapshot), by snapshot, written to `out`.
pub fn bundle_picture(path: &Path, out: &Path, force: bool) -> Result<(), Failure> {
    let bundle = parallels_image::bundle::Bundle::open(path).map_err(|e| bundle_failure(&e))?;
    let svg = bundle.guest_svg(None).map_err(|e| bundle_failure(&e))?;
    write_svg(out, force, &svg)
}

/// What `check -r` and `repair` may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairArg {
    /// Only what loses no guest byte and no bitmap.
    Leaks,
    /// Also corruption, each fix losing the least.
    All,
}

/// Plans and (unless `dry_run`) writes the repair of `input` to `output` (`None`: in place);
/// prints the plan (`json`: as JSON; `None`: not at all). Returns the exit status: `check`'s of
/// the result (0, 2, 3).
pub fn repair_path(
    input: &Path,
    output: Option<&Path>,
    level: RepairLevel,
    dry_run: bool,
    force: bool,
    json: Option<bool>,
) -> Result<u8, Failure> {
    use parallels_image::report::{repair_path as repair, RepairRequest};
    if output.is_none() && !dry_run && input.as_os_str() == "-" {
        return Err(Failure::at(
            input,
            "--in-place repairs a file by its name, not standard input (write a repaired copy instead)",
        ));
    }
    let read = crate::input::seekable(input, "repair")?;
    let request = RepairRequest {
        input,
        read: &read,
        output,
        level,
        dry_run,
        force,
    };
    let run = repair(&request).map_err(|e| repair_failure(&e))?;
    match json {
        Some(true) => emit_with(|w| run.write_json(w))?,
        Some(false) => emit_with(|w| run.write_human(w))?,
        None => {}
    }
    Ok(run.exit_code())
}

/// `prlimg check -r LEVEL IMAGE`: repairs IMAGE in place and prints the plan (human output;
/// nothing with JSON, where the check's report follows alone); the caller then checks the result.
pub fn repair_in_place(path: &Path, level: RepairArg, json: bool) -> Result<(), Failure> {
    let level = match level {
        RepairArg::Leaks => RepairLevel::Leaks,
        RepairArg::All => RepairLevel::All,
    };
    repair_path(path, None, level, false, true, (!json).then_some(false)).map(|_| ())
}

/// A repair that could not be made: a path that could not be read or written as `check` says it.
pub fn repair_failure(e: &parallels_image::report::RepairFileError) -> Failure {
    use parallels_image::report::RepairFileError;
    match e {
        RepairFileError::Refused { path, reason } => Failure::at(path, *reason),
        RepairFileError::Path(p) => check_failure(p),
        other => Failure::plain(other.to_string()),
    }
}

/// A path that could not be checked, as `prlimg check PATH` says it.
pub fn check_failure(e: &parallels_image::report::CheckError) -> Failure {
    use parallels_image::report::CheckError;
    match e {
        CheckError::Io { path, source } => Failure::io(path, source),
        CheckError::Image { path, source } => Failure::lib(path, source),
        CheckError::Bundle(b) => bundle_failure(b),
    }
}

/// Appends a formatted line to a `String` (formatting into a `String` cannot fail).
#[macro_export]
macro_rules! outln {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// `-q`: print nothing but errors (no report on stdout, no progress, no notes).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets `-q` for the whole run.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// `--output` of the commands that print text or JSON but no HTML (`info`, `map`): `human` or
/// `json` (`html` is not offered).
pub fn text_format() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["human", "json"]).map(|s| match s.as_str() {
        "json" => Format::Json,
        _ => Format::Human,
    })
}

/// `convert -p` where stderr is not a terminal: the bar's lines written as they are, each
/// drawing starting with a carriage return (as `qemu-img convert -p` prints to a file or pipe).
#[derive(Debug)]
struct PlainStderr;

impl indicatif::TermLike for PlainStderr {
    fn width(&self) -> u16 {
        80
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        io::stderr().write_all(s.as_bytes())
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        io::stderr().write_all(s.as_bytes())
    }
    fn clear_line(&self) -> io::Result<()> {
        io::stderr().write_all(b"\r")
    }
    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `convert -p`: the progress of `len` units shown whatever its size: the bar on a terminal,
/// else `    (P/100%)` lines, each after a carriage return, the last one `    (100/100%)` and
/// a newline once [`ProgressBar::finish`] is called. Hidden under `-q`.
pub fn forced_progress(len: u64, what: &str) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    if io::stderr().is_terminal() {
        return progress(len, what);
    }
    let target = indicatif::ProgressDrawTarget::term_like(Box::new(PlainStderr));
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("    ({percent}/100%)") {
        bar.set_style(style);
    }
    bar
}

/// A progress bar of `len` units on stderr, or a hidden one when stderr is not a terminal (or
/// under `-q`).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() || quiet() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A spinner on stderr for work of unknown length, hidden when stderr is not a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() || quiet() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bundle failure as a CLI failure (its message names the file).
pub fn bundle_failure(e: &parallels_image::bundle::BundleError) -> Failure {
    match e {
        parallels_image::bundle::BundleError::Io { path, source }
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
        parallels_image::bundle::BundleError::Io { path, source } => Failure::io(path, source),
        parallels_image::bundle::BundleError::Image { path, source } => Failure::lib(path, source),
        other => Failure::plain(other.to_string()),
    }
}
