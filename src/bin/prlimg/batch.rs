//! `prlimg check` of many paths at once: files, bundles and (with `--recursive`) folders, checked
//! in parallel, one line (or one JSON Lines record) per image in the order the paths were given
//! and found, then a summary.
//!
//! Each image is checked exactly as `prlimg check PATH` checks it alone
//! ([`crate::check::check_one`]). The walk is lazy and at most `window` images are in flight or
//! waiting for an earlier one to be printed, so memory stays bounded by those, whatever the
//! number of images: results are printed in input order (a slow image holds back the lines after
//! it, not the work on them).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::check::{check_one, Checked};
use crate::output::{emit, io_reason, Failure, Format};
use crate::Outcome;

/// How to check a batch.
pub struct Options {
    pub output: Format,
    pub lenient: bool,
    pub recursive: bool,
    /// Threads; `None`: rayon's default (`RAYON_NUM_THREADS`, else the CPUs).
    pub jobs: Option<usize>,
}

/// How many of the slowest images the summary names.
const SLOWEST: usize = 5;

/// What became of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Status {
    Clean,
    Leaks,
    NotParallels,
    Unreadable,
    Corrupt,
}

impl Status {
    const ALL: [Status; 5] = [
        Status::Clean,
        Status::Leaks,
        Status::Corrupt,
        Status::NotParallels,
        Status::Unreadable,
    ];

    fn name(self) -> &'static str {
        match self {
            Status::Clean => "clean",
            Status::Leaks => "leaks",
            Status::Corrupt => "corrupt",
            Status::NotParallels => "not-parallels",
            Status::Unreadable => "unreadable",
        }
    }

    /// How a path that could not be checked is counted.
    fn of_failure(f: &Failure) -> Status {
        if f.not_parallels {
            Status::NotParallels
        } else {
            Status::Unreadable
        }
    }

    /// `prlimg check PATH`'s exit status for it.
    fn exit_code(self) -> u8 {
        match self {
            Status::Clean => 0,
            Status::Leaks => 3,
            Status::Corrupt => 2,
            Status::NotParallels | Status::Unreadable => 1,
        }
    }
}

/// One path to check, or one that is reported without being read.
enum Entry {
    Check(PathBuf),
    Refused(PathBuf, String),
}

/// One path's result, rendered in the worker: what the printer and the summary need, no more.
struct Done {
    path: PathBuf,
    outcome: Status,
    rules: Vec<&'static str>,
    /// The human line or the JSON Lines record, without its newline.
    line: String,
    elapsed: Duration,
}

/// Checks every path (walking folders with `--recursive`), prints a line per image and the
/// summary; the exit status is the worst image's: corrupt (2) over could not check (1) over
/// leaks (3) over clean (0).
pub fn run(paths: &[PathBuf], options: &Options) -> Outcome {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.unwrap_or(0))
        .build()
        .map_err(|e| Failure::plain(format!("threads: {e}")))?;
    let threads = pool.current_num_threads();
    let window = 16 * threads.max(2);
    let bar = progress_bar();
    let start = Instant::now();
    let mut printer = Printer {
        out: BufWriter::new(io::stdout().lock()),
        bar: &bar,
        summary: Summary::default(),
        next: 0,
        waiting: BTreeMap::new(),
    };
    let (tx, rx) = mpsc::channel::<(usize, Done)>();
    let mut in_flight = 0usize;
    let result = (|| -> Result<(), Failure> {
        for (index, entry) in entries(paths, options.recursive).enumerate() {
            bar.inc_length(1);
            let tx = tx.clone();
            let (output, lenient) = (options.output, options.lenient);
            match entry {
                Entry::Check(path) => pool.spawn(move || {
                    let _ = tx.send((index, check_entry(path, output, lenient)));
                }),
                Entry::Refused(path, reason) => {
                    let _ = tx.send((index, failed(path, Status::Unreadable, reason, output, Duration::ZERO)));
                }
            }
            in_flight += 1;
            while in_flight >= window {
                let (i, done) = rx.recv().map_err(|_| Failure::plain("a checking thread died"))?;
                in_flight -= 1;
                printer.take(i, done)?;
            }
        }
        while in_flight > 0 {
            let (i, done) = rx.recv().map_err(|_| Failure::plain("a checking thread died"))?;
            in_flight -= 1;
            printer.take(i, done)?;
        }
        Ok(())
    })();
    bar.finish_and_clear();
    result?;
    let summary = std::mem::take(&mut printer.summary);
    let elapsed = start.elapsed();
    let text = match options.output {
        Format::Human | Format::Html => summary.human(elapsed, threads),
        Format::Json => summary.json(elapsed, threads)?,
    };
    printer.write_line(&text)?;
    printer.out.flush().map_err(|e| Failure::stdout(&e))?;
    Ok(summary.exit_code())
}

/// Prints results in input order and keeps the summary.
struct Printer<'a, W: Write> {
    out: W,
    bar: &'a ProgressBar,
    summary: Summary,
    /// The index of the next result to print.
    next: usize,
    /// Results that came before an earlier one.
    waiting: BTreeMap<usize, Done>,
}

impl<W: Write> Printer<'_, W> {
    fn take(&mut self, index: usize, done: Done) -> Result<(), Failure> {
        self.waiting.insert(index, done);
        while let Some(done) = self.waiting.remove(&self.next) {
            self.next += 1;
            self.write_line(&done.line)?;
            self.bar.inc(1);
            self.summary.add(done);
        }
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> Result<(), Failure> {
        if crate::output::quiet() {
            return Ok(());
        }
        let (out, bar) = (&mut self.out, self.bar);
        let mut write = || -> io::Result<()> {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            if !bar.is_hidden() {
                // Above the bar, at once.
                out.flush()?;
            }
            Ok(())
        };
        if bar.is_hidden() { write() } else { bar.suspend(write) }.map_err(|e| Failure::stdout(&e))
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

/// The paths to check, in order: each path given, and with `recursive` each folder's contents
/// sorted by name, depth first. A folder holding a `DiskDescriptor.xml` is one bundle and is not
/// entered; symbolic links to folders are not followed (files they lead to are checked).
fn entries(paths: &[PathBuf], recursive: bool) -> impl Iterator<Item = Entry> + '_ {
    paths.iter().flat_map(move |path| -> Box<dyn Iterator<Item = Entry>> {
        if path.as_os_str() == "-" {
            return one(Entry::Refused(
                path.clone(),
                "standard input cannot be part of a batch; check it alone".into(),
            ));
        }
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return one(Entry::Refused(path.clone(), io_reason(&e))),
        };
        if meta.is_dir() && !is_bundle_folder(path) {
            if !recursive {
                return one(Entry::Refused(
                    path.clone(),
                    "a folder without DiskDescriptor.xml (--recursive checks the files in it)".into(),
                ));
            }
            return Box::new(walk(path));
        }
        one(classify(path.clone(), &meta))
    })
}

fn one(entry: Entry) -> Box<dyn Iterator<Item = Entry>> {
    Box::new(std::iter::once(entry))
}

fn is_bundle_folder(path: &Path) -> bool {
    fs::symlink_metadata(path.join(parallels_image::bundle::DESCRIPTOR_NAME)).is_ok()
}

/// A path that exists: checked if a folder (a bundle), a regular file or a block device; any
/// other kind (a FIFO, a socket, a character device) is refused without being opened, since
/// opening or reading it could block or never end.
fn classify(path: PathBuf, meta: &fs::Metadata) -> Entry {
    if meta.is_dir() || meta.is_file() {
        return Entry::Check(path);
    }
    match special_kind(meta) {
        None => Entry::Check(path),
        Some(kind) => Entry::Refused(path, format!("is a {kind}, not a file; not read in a batch")),
    }
}

#[cfg(unix)]
fn special_kind(meta: &fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_block_device() {
        None
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::Metadata) -> Option<&'static str> {
    Some("special file")
}

/// A folder's contents, depth first and sorted by name.
fn walk(root: &Path) -> impl Iterator<Item = Entry> {
    let root = root.to_path_buf();
    let mut it = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    std::iter::from_fn(move || loop {
        let entry = match it.next()? {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(&root).to_path_buf();
                let reason = e.io_error().map_or_else(|| e.to_string(), io_reason);
                return Some(Entry::Refused(path, reason));
            }
        };
        let path = entry.into_path();
        let t = match fs::symlink_metadata(&path) {
            Ok(m) => m.file_type(),
            Err(e) => return Some(Entry::Refused(path, io_reason(&e))),
        };
        if t.is_dir() {
            if is_bundle_folder(&path) {
                it.skip_current_dir();
                return Some(Entry::Check(path));
            }
            continue;
        }
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return Some(Entry::Refused(path, io_reason(&e))),
        };
        if meta.is_dir() {
            // A symbolic link to a folder: not followed (it may lead back up).
            continue;
        }
        if is_manifest(&path) {
            // What `mutate` and `corpus` write beside the images: not an image.
            continue;
        }
        return Some(classify(path, &meta));
    })
}

/// Checks one path as `prlimg check PATH` would and renders its line.
fn check_entry(path: PathBuf, output: Format, lenient: bool) -> Done {
    let start = Instant::now();
    let checked = check_one(&path, lenient);
    let elapsed = start.elapsed();
    match checked {
        Ok(c) => match render(&path, &c, output) {
            Ok(line) => Done {
                outcome: match c.exit_code() {
                    0 => Status::Clean,
                    3 => Status::Leaks,
                    _ => Status::Corrupt,
                },
                rules: c.rules(),
                line,
                elapsed,
                path,
            },
            Err(f) => failed(path, Status::Unreadable, f.reason, output, elapsed),
        },
        Err(f) => {
            let outcome = Status::of_failure(&f);
            failed(path, outcome, f.reason, output, elapsed)
        }
    }
}

/// `PATH: corrupt (R17, R20), notes: R42`, or the JSON report with `"path"` first.
fn render(path: &Path, c: &Checked, output: Format) -> Result<String, Failure> {
    match output {
        Format::Human | Format::Html => Ok(format!("{}: {}", path.display(), verdict_line(c))),
        Format::Json => {
            let object = c.json_line()?;
            let key = json_string(&path.display().to_string())?;
            // The single check's object, `"path"` added as its first key.
            Ok(format!("{{\"path\":{key},{}", &object[1..]))
        }
    }
}

fn json_string(s: &str) -> Result<String, Failure> {
    serde_json::to_string(s).map_err(|e| Failure::plain(format!("JSON: {e}")))
}

/// A path that could not be checked: `PATH: unreadable: REASON` (the reason `prlimg check PATH`
/// prints after `prlimg: PATH: `), or its JSON record.
fn failed(path: PathBuf, outcome: Status, reason: String, output: Format, elapsed: Duration) -> Done {
    let line = match output {
        Format::Human | Format::Html => format!("{}: {}: {reason}", path.display(), outcome.name()),
        Format::Json => failure_record(&path, outcome, &reason),
    };
    Done {
        path,
        outcome,
        rules: Vec::new(),
        line,
        elapsed,
    }
}

/// The JSON record of a path that could not be checked: `{"path", "result", "error"}`.
fn failure_record(path: &Path, outcome: Status, reason: &str) -> String {
    #[derive(Serialize)]
    struct Record<'a> {
        path: String,
        result: &'static str,
        error: &'a str,
    }
    serde_json::to_string(&Record {
        path: path.display().to_string(),
        result: outcome.name(),
        error: reason,
    })
    .unwrap_or_default()
}

/// `prlimg check PATH --output json` when PATH cannot be checked: the batch's record for it on
/// stdout (the failure itself still goes to stderr, with exit status 1).
pub fn print_failure_json(path: &Path, f: &Failure) -> Result<(), Failure> {
    emit(&(failure_record(path, Status::of_failure(f), &f.reason) + "\n"))
}

/// Counts over the batch.
#[derive(Default)]
struct Summary {
    images: usize,
    by_outcome: HashMap<Status, usize>,
    /// Images in which each rule was found.
    by_rule: HashMap<&'static str, usize>,
    /// The slowest images, slowest first, at most [`SLOWEST`].
    slowest: Vec<(Duration, PathBuf)>,
    worst: Option<Status>,
}

#[derive(Serialize)]
struct RuleCount {
    rule: &'static str,
    images: usize,
}

#[derive(Serialize)]
struct Slow {
    path: String,
    seconds: f64,
}

#[derive(Serialize)]
struct SummaryJson {
    images: usize,
    clean: usize,
    leaks: usize,
    corrupt: usize,
    not_parallels: usize,
    unreadable: usize,
    rules: Vec<RuleCount>,
    slowest: Vec<Slow>,
    seconds: f64,
    threads: usize,
    exit_code: u8,
}

impl Summary {
    fn add(&mut self, done: Done) {
        self.images += 1;
        *self.by_outcome.entry(done.outcome).or_default() += 1;
        for rule in done.rules {
            *self.by_rule.entry(rule).or_default() += 1;
        }
        self.worst = self.worst.max(Some(done.outcome));
        if done.elapsed > Duration::ZERO {
            let at = self.slowest.partition_point(|(d, _)| *d >= done.elapsed);
            if at < SLOWEST {
                self.slowest.insert(at, (done.elapsed, done.path));
                self.slowest.truncate(SLOWEST);
            }
        }
    }

    fn count(&self, o: Status) -> usize {
        self.by_outcome.get(&o).copied().unwrap_or(0)
    }

    fn exit_code(&self) -> u8 {
        self.worst.map_or(0, Status::exit_code)
    }

    /// Rules by code: the letter, then the number (`D2` before `R1`, `R2` before `R10`).
    fn rules(&self) -> Vec<RuleCount> {
        let mut rules: Vec<RuleCount> = self
            .by_rule
            .iter()
            .map(|(&rule, &images)| RuleCount { rule, images })
            .collect();
        rules.sort_by_key(|r| (r.rule.as_bytes()[0], r.rule[1..].parse::<u32>().unwrap_or(u32::MAX)));
        rules
    }

    fn human(&self, elapsed: Duration, threads: usize) -> String {
        let secs = elapsed.as_secs_f64();
        let counts: Vec<String> = Status::ALL
            .iter()
            .filter(|o| self.count(**o) > 0)
            .map(|o| format!("{} {}", self.count(*o), o.name()))
            .collect();
        let mut out = format!(
            "\n{} {} checked in {secs:.2} s ({:.1} per second, {threads} {}): {}",
            self.images,
            if self.images == 1 { "image" } else { "images" },
            self.images as f64 / secs.max(1e-9),
            if threads == 1 { "thread" } else { "threads" },
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        );
        let rules = self.rules();
        if !rules.is_empty() {
            let rules: Vec<String> = rules.iter().map(|r| format!("{} {}", r.rule, r.images)).collect();
            out += &format!("\nrules (images): {}", rules.join(", "));
        }
        if !self.slowest.is_empty() {
            let slow: Vec<String> = self
                .slowest
                .iter()
                .map(|(d, p)| format!("{} {:.1} ms", p.display(), d.as_secs_f64() * 1e3))
                .collect();
            out += &format!("\nslowest: {}", slow.join(", "));
        }
        out
    }

    fn json(&self, elapsed: Duration, threads: usize) -> Result<String, Failure> {
        #[derive(Serialize)]
        struct Record {
            summary: SummaryJson,
        }
        let record = Record {
            summary: SummaryJson {
                images: self.images,
                clean: self.count(Status::Clean),
                leaks: self.count(Status::Leaks),
                corrupt: self.count(Status::Corrupt),
                not_parallels: self.count(Status::NotParallels),
                unreadable: self.count(Status::Unreadable),
                rules: self.rules(),
                slowest: self
                    .slowest
                    .iter()
                    .map(|(d, p)| Slow {
                        path: p.display().to_string(),
                        seconds: d.as_secs_f64(),
                    })
                    .collect(),
                seconds: elapsed.as_secs_f64(),
                threads,
                exit_code: self.exit_code(),
            },
        };
        serde_json::to_string(&record).map_err(|e| Failure::plain(format!("JSON: {e}")))
    }
}

/// The verdict and the rules by severity: the verdict's own rules in parentheses (`corrupt
/// (R17)`, `leaks (R9)`), the others after it by kind (`clean, non-canonical: R30, notes: R42`).
fn verdict_line(c: &Checked) -> String {
    let found: Vec<(&'static str, &'static str)> = match c {
        Checked::Image(i) => i
            .report
            .findings
            .iter()
            .map(|f| (f.violation.rule().code(), f.severity.name()))
            .collect(),
        Checked::Bundle(b) => b.severities(),
    };
    let own = match c.result() {
        "corrupt" => Some("corruption"),
        "leaks" => Some("leak"),
        _ => None,
    };
    let codes = |severity: &str| {
        let mut v: Vec<&str> = Vec::new();
        for &(code, s) in &found {
            if s == severity && !v.contains(&code) {
                v.push(code);
            }
        }
        v
    };
    let mut line = c.result().to_string();
    if let Some(own) = own {
        let v = codes(own);
        if !v.is_empty() {
            line += &format!(" ({})", v.join(", "));
        }
    }
    for (severity, label) in [
        ("corruption", "corruptions"),
        ("leak", "leaks"),
        ("non-canonical", "non-canonical"),
        ("note", "notes"),
    ] {
        if Some(severity) == own {
            continue;
        }
        let v = codes(severity);
        if !v.is_empty() {
            line += &format!(", {label}: {}", v.join(", "));
        }
    }
    line
}

/// `manifest.json`, the list `prlimg mutate` and `prlimg corpus` write into a folder of images:
/// a walk of the folder (a batch, `differential`) skips it.
pub fn is_manifest(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "manifest.json")
}
