//! Shared output helpers: the `--output` formats, failures, progress bars and number formatting.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use parallels_image::{outfile::OutputError, outfile::OutputOptions, Error};
use serde::Serialize;

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

    /// A library error on `path`.
    pub fn lib(path: &Path, e: &Error) -> Self {
        match e {
            Error::Io(io) => Self::io(path, io),
            Error::Output(o) => Self::output(path, o),
            Error::NotParallels { .. } | Error::EmptyFile => Failure {
                not_parallels: true,
                ..Self::at(path, e.to_string())
            },
            other => Self::at(path, other.to_string()),
        }
    }

    /// An output path that may not be written.
    pub fn output(path: &Path, e: &OutputError) -> Self {
        match e {
            OutputError::Exists { .. } => Self::at(path, "already exists (use --force to replace it)"),
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

/// The message of an I/O error without Rust's " (os error N)" and what follows it (the
/// temporary file's name, for a failure inside an output's folder).
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Writes `value` as pretty JSON and a newline to stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::plain(format!("JSON: {e}")))?;
    emit(&(text + "\n"))
}

/// Writes `text` to stdout. A closed pipe (`prlimg ... | head`) ends the program quietly
/// with status 0 rather than with a panic.
pub fn emit(text: &str) -> Result<(), Failure> {
    if quiet() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::stdout(&e))
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

/// `1048576` -> `"1 MiB"`, `1536` -> `"1.5 KiB"`, `100` -> `"100 B"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && n >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let value = n as f64 / (1u64 << (10 * unit)) as f64;
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 30), "64 GiB");
        assert_eq!(human_bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn io_reason_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
        let e = io::Error::other("plain");
        assert_eq!(io_reason(&e), "plain");
        let e = io::Error::other("No such file or directory (os error 2) at path \"/x/.prlimg-1.tmp\"");
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
