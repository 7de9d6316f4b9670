//! `prlimg check` of many paths: the walk of the paths given (folders with `recursive`, a
//! folder holding a descriptor as one bundle), each path's line or JSON Lines record, and the
//! summary. The threads, the order of printing and the progress are the caller's.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::text::io_reason;
use super::{check_path_with, CheckError, CheckOptions, PathReport, RuleCode};
use crate::bundle::DESCRIPTOR_NAME;
use crate::error::Error;
use crate::rule::Severity;
use crate::validate::Verdict;

/// How many of the slowest images the summary names.
const SLOWEST: usize = 5;

/// What became of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BatchStatus {
    /// Checked: clean.
    Clean,
    /// Checked: leaks only.
    Leaks,
    /// Not a Parallels image at all.
    NotParallels,
    /// Could not be read.
    Unreadable,
    /// Checked: corrupt.
    Corrupt,
}

impl BatchStatus {
    const ALL: [BatchStatus; 5] = [
        BatchStatus::Clean,
        BatchStatus::Leaks,
        BatchStatus::Corrupt,
        BatchStatus::NotParallels,
        BatchStatus::Unreadable,
    ];

    /// `clean`, `leaks`, `corrupt`, `not-parallels`, `unreadable`.
    pub fn name(self) -> &'static str {
        match self {
            BatchStatus::Clean => "clean",
            BatchStatus::Leaks => "leaks",
            BatchStatus::Corrupt => "corrupt",
            BatchStatus::NotParallels => "not-parallels",
            BatchStatus::Unreadable => "unreadable",
        }
    }

    /// A path that could not be checked: not Parallels at all, or unreadable.
    pub fn of_error(e: &CheckError) -> BatchStatus {
        match e {
            CheckError::Image {
                source: Error::NotParallels { .. } | Error::EmptyFile,
                ..
            } => BatchStatus::NotParallels,
            _ => BatchStatus::Unreadable,
        }
    }

    fn of_verdict(v: Verdict) -> BatchStatus {
        match v {
            Verdict::Clean => BatchStatus::Clean,
            Verdict::Leaks => BatchStatus::Leaks,
            Verdict::Corrupt => BatchStatus::Corrupt,
        }
    }

    /// `prlimg check PATH`'s exit status for it.
    pub fn exit_code(self) -> u8 {
        match self {
            BatchStatus::Clean => 0,
            BatchStatus::Leaks => 3,
            BatchStatus::Corrupt => 2,
            BatchStatus::NotParallels | BatchStatus::Unreadable => 1,
        }
    }
}

/// One path to check, or one reported without being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchEntry {
    /// A file, a block device or a bundle folder.
    Check(PathBuf),
    /// Not checked, and why.
    Refused(PathBuf, String),
}

/// One path's result, rendered: what the printer and the summary need, no more.
#[derive(Clone, Debug)]
pub struct BatchLine {
    /// The path.
    pub path: PathBuf,
    /// What became of it.
    pub status: BatchStatus,
    /// The rules it breaks.
    pub rules: Vec<RuleCode>,
    /// The human line or the JSON Lines record, without its newline.
    pub line: String,
    /// How long its check took.
    pub elapsed: Duration,
}

impl BatchLine {
    /// Checks `path` as `prlimg check PATH` does and renders its line (`json`: its record, the
    /// single check's object with `"path"` first). `reason` words a path that cannot be checked
    /// as `prlimg check PATH` would.
    pub fn check(
        path: PathBuf,
        json: bool,
        options: &CheckOptions,
        reason: impl Fn(&CheckError) -> String,
    ) -> BatchLine {
        let start = std::time::Instant::now();
        let checked = check_path_with(&path, options);
        let elapsed = start.elapsed();
        match checked {
            Ok(c) => match render(&path, &c, json) {
                Ok(line) => BatchLine {
                    status: BatchStatus::of_verdict(c.verdict()),
                    rules: c.rules(),
                    line,
                    elapsed,
                    path,
                },
                Err(e) => BatchLine::failed(path, BatchStatus::Unreadable, format!("JSON: {e}"), json, elapsed),
            },
            Err(e) => BatchLine::failed(path, BatchStatus::of_error(&e), reason(&e), json, elapsed),
        }
    }

    /// A path that could not be checked: `PATH: unreadable: REASON`, or its JSON record.
    pub fn failed(path: PathBuf, status: BatchStatus, reason: String, json: bool, elapsed: Duration) -> BatchLine {
        let line = if json {
            failure_record(&path, status, &reason)
        } else {
            format!("{}: {}: {reason}", path.display(), status.name())
        };
        BatchLine {
            path,
            status,
            rules: Vec::new(),
            line,
            elapsed,
        }
    }
}

/// `PATH: corrupt (R17, R20), notes: R42`, or the JSON report with `"path"` first.
fn render(path: &Path, c: &PathReport, json: bool) -> Result<String, String> {
    if !json {
        return Ok(format!("{}: {}", path.display(), verdict_line(c)));
    }
    #[cfg(feature = "json")]
    {
        let object = c.json_line().map_err(|e| e.to_string())?;
        let key = serde_json::to_string(&path.display().to_string()).map_err(|e| e.to_string())?;
        // The single check's object, `"path"` added as its first key.
        Ok(format!("{{\"path\":{key},{}", &object[1..]))
    }
    #[cfg(not(feature = "json"))]
    Err("built without JSON".into())
}

/// The JSON record of a path that could not be checked: `{"path", "result", "error"}`.
pub fn failure_record(path: &Path, status: BatchStatus, reason: &str) -> String {
    #[cfg(feature = "json")]
    {
        #[derive(serde::Serialize)]
        struct Record<'a> {
            path: String,
            result: &'static str,
            error: &'a str,
        }
        serde_json::to_string(&Record {
            path: path.display().to_string(),
            result: status.name(),
            error: reason,
        })
        .unwrap_or_default()
    }
    #[cfg(not(feature = "json"))]
    {
        let _ = (path, status, reason);
        String::new()
    }
}

/// The verdict and the rules by severity: the verdict's own rules in parentheses (`corrupt
/// (R17)`, `leaks (R9)`), the others after it by kind (`clean, non-canonical: R30, notes: R42`).
pub fn verdict_line(c: &PathReport) -> String {
    let found = c.findings();
    let verdict = c.verdict();
    let own = match verdict {
        Verdict::Corrupt => Some(Severity::Corruption),
        Verdict::Leaks => Some(Severity::Leak),
        Verdict::Clean => None,
    };
    let codes = |severity: Severity| {
        let mut v: Vec<&str> = Vec::new();
        for &(code, s) in &found {
            if s == severity && !v.contains(&code.code()) {
                v.push(code.code());
            }
        }
        v
    };
    let mut line = verdict.name().to_string();
    if let Some(own) = own {
        let v = codes(own);
        if !v.is_empty() {
            line += &format!(" ({})", v.join(", "));
        }
    }
    for (severity, label) in [
        (Severity::Corruption, "corruptions"),
        (Severity::Leak, "leaks"),
        (Severity::NonCanonical, "non-canonical"),
        (Severity::Note, "notes"),
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

/// The paths to check, in order: each path given, and with `recursive` each folder's contents
/// sorted by name, depth first. A folder holding a `DiskDescriptor.xml` is one bundle and is not
/// entered; symbolic links to folders are not followed (files they lead to are checked);
/// `manifest.json` files in folders are skipped.
pub fn batch_entries(paths: &[PathBuf], recursive: bool) -> impl Iterator<Item = BatchEntry> + '_ {
    paths
        .iter()
        .flat_map(move |path| -> Box<dyn Iterator<Item = BatchEntry>> {
            if path.as_os_str() == "-" {
                return one(BatchEntry::Refused(
                    path.clone(),
                    "standard input cannot be part of a batch; check it alone".into(),
                ));
            }
            let meta = match fs::metadata(path) {
                Ok(m) => m,
                Err(e) => return one(BatchEntry::Refused(path.clone(), io_reason(&e))),
            };
            if meta.is_dir() && !is_bundle_folder(path) {
                if !recursive {
                    return one(BatchEntry::Refused(
                        path.clone(),
                        "a folder without DiskDescriptor.xml (--recursive checks the files in it)".into(),
                    ));
                }
                return Box::new(walk(path));
            }
            one(classify(path.clone(), &meta))
        })
}

fn one(entry: BatchEntry) -> Box<dyn Iterator<Item = BatchEntry>> {
    Box::new(std::iter::once(entry))
}

fn is_bundle_folder(path: &Path) -> bool {
    fs::symlink_metadata(path.join(DESCRIPTOR_NAME)).is_ok()
}

/// A path that exists: checked if a folder (a bundle), a regular file or a block device; any
/// other kind (a FIFO, a socket, a character device) is refused without being opened, since
/// opening or reading it could block or never end.
fn classify(path: PathBuf, meta: &fs::Metadata) -> BatchEntry {
    if meta.is_dir() || meta.is_file() {
        return BatchEntry::Check(path);
    }
    match special_kind(meta) {
        None => BatchEntry::Check(path),
        Some(kind) => BatchEntry::Refused(path, format!("is a {kind}, not a file; not read in a batch")),
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

/// A folder's names, sorted, or why it cannot be listed.
fn sorted_children(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// A folder's contents, depth first and sorted by name, read one folder at a time.
fn walk(root: &Path) -> impl Iterator<Item = BatchEntry> {
    // Each open folder's children not yet visited, in reverse order (the next one last).
    let mut stack: Vec<Vec<PathBuf>> = Vec::new();
    let mut pending_root = Some(root.to_path_buf());
    std::iter::from_fn(move || loop {
        if let Some(dir) = pending_root.take() {
            match sorted_children(&dir) {
                Ok(mut children) => {
                    children.reverse();
                    stack.push(children);
                }
                Err(e) => return Some(BatchEntry::Refused(dir, io_reason(&e))),
            }
        }
        let top = stack.last_mut()?;
        let Some(path) = top.pop() else {
            stack.pop();
            continue;
        };
        let t = match fs::symlink_metadata(&path) {
            Ok(m) => m.file_type(),
            Err(e) => return Some(BatchEntry::Refused(path, io_reason(&e))),
        };
        if t.is_dir() {
            if is_bundle_folder(&path) {
                return Some(BatchEntry::Check(path));
            }
            pending_root = Some(path);
            continue;
        }
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return Some(BatchEntry::Refused(path, io_reason(&e))),
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

/// Counts over the batch.
#[derive(Debug, Default)]
pub struct BatchSummary {
    images: usize,
    by_outcome: HashMap<BatchStatus, usize>,
    /// Images in which each rule was found.
    by_rule: HashMap<RuleCode, usize>,
    /// The slowest images, slowest first, at most [`SLOWEST`].
    slowest: Vec<(Duration, PathBuf)>,
    worst: Option<BatchStatus>,
}

#[cfg_attr(feature = "json", derive(serde::Serialize))]
struct RuleCount {
    rule: RuleCode,
    images: usize,
}

#[cfg(feature = "json")]
#[derive(serde::Serialize)]
struct Slow {
    path: String,
    seconds: f64,
}

#[cfg(feature = "json")]
#[derive(serde::Serialize)]
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

impl BatchSummary {
    /// Counts one path's result.
    pub fn add(&mut self, done: BatchLine) {
        self.images += 1;
        *self.by_outcome.entry(done.status).or_default() += 1;
        for rule in done.rules {
            *self.by_rule.entry(rule).or_default() += 1;
        }
        self.worst = self.worst.max(Some(done.status));
        if done.elapsed > Duration::ZERO {
            let at = self.slowest.partition_point(|(d, _)| *d >= done.elapsed);
            if at < SLOWEST {
                self.slowest.insert(at, (done.elapsed, done.path));
                self.slowest.truncate(SLOWEST);
            }
        }
    }

    fn count(&self, o: BatchStatus) -> usize {
        self.by_outcome.get(&o).copied().unwrap_or(0)
    }

    /// The worst path's exit status: corrupt (2) over could not check (1) over leaks (3)
    /// over clean (0).
    pub fn exit_code(&self) -> u8 {
        self.worst.map_or(0, BatchStatus::exit_code)
    }

    /// Rules by code: the letter, then the number (`D2` before `R1`, `R2` before `R10`).
    fn rules(&self) -> Vec<RuleCount> {
        let mut rules: Vec<RuleCount> = self
            .by_rule
            .iter()
            .map(|(&rule, &images)| RuleCount { rule, images })
            .collect();
        rules.sort_by_key(|r| {
            let code = r.rule.code();
            (code.as_bytes()[0], code[1..].parse::<u32>().unwrap_or(u32::MAX))
        });
        rules
    }

    /// The summary for people, after a blank line.
    pub fn human(&self, elapsed: Duration, threads: usize) -> String {
        let secs = elapsed.as_secs_f64();
        let counts: Vec<String> = BatchStatus::ALL
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

    /// The summary's JSON Lines record: `{"summary": {...}}`.
    #[cfg(feature = "json")]
    pub fn json(&self, elapsed: Duration, threads: usize) -> serde_json::Result<String> {
        #[cfg(feature = "json")]
        #[derive(serde::Serialize)]
        struct Record {
            summary: SummaryJson,
        }
        let record = Record {
            summary: SummaryJson {
                images: self.images,
                clean: self.count(BatchStatus::Clean),
                leaks: self.count(BatchStatus::Leaks),
                corrupt: self.count(BatchStatus::Corrupt),
                not_parallels: self.count(BatchStatus::NotParallels),
                unreadable: self.count(BatchStatus::Unreadable),
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
        serde_json::to_string(&record)
    }
}

/// How [`run_batch`] checks: the paths, `--recursive`, the threads (`None`: one per core), the
/// records (`json`: JSON Lines) and the check's options.
pub struct BatchRun<'a> {
    /// The paths given (files, devices, bundles, folders).
    pub paths: &'a [PathBuf],
    /// Walk folders (that are not bundles).
    pub recursive: bool,
    /// How many threads check (`None`: one per core).
    pub jobs: Option<usize>,
    /// JSON Lines records instead of human lines.
    pub json: bool,
    /// The options of each check.
    pub options: CheckOptions,
}

/// What went wrong in [`run_batch`] itself (a check that fails is a line, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The thread pool could not be built.
    #[error("threads: {0}")]
    Threads(String),
    /// A checking thread ended without sending its result.
    #[error("a checking thread died")]
    ThreadDied,
    /// Writing a line failed (`line`'s error, as it was).
    #[error(transparent)]
    Write(#[from] io::Error),
}

/// Checks every path of `run` (walking folders with `recursive`) on its threads, with at most a
/// window of images in flight or waiting for an earlier one to be written, so memory stays
/// bounded whatever the number of images. `found` is told of each path as the walk finds it;
/// `line` gets each result in the order found. Returns the summary and the number of threads.
/// `reason` words a path that cannot be checked, as [`BatchLine::check`] says.
pub fn run_batch(
    run: &BatchRun<'_>,
    reason: fn(&CheckError) -> String,
    mut found: impl FnMut(),
    mut line: impl FnMut(&BatchLine) -> io::Result<()>,
) -> Result<(BatchSummary, usize), BatchError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(run.jobs.unwrap_or(0))
        .build()
        .map_err(|e| BatchError::Threads(e.to_string()))?;
    let threads = pool.current_num_threads();
    let window = 16 * threads.max(2);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, BatchLine)>();
    let mut summary = BatchSummary::default();
    let mut next = 0usize;
    let mut waiting = std::collections::BTreeMap::new();
    let mut in_flight = 0usize;
    let mut take = |in_flight: &mut usize| -> Result<(), BatchError> {
        let (index, done) = rx.recv().map_err(|_| BatchError::ThreadDied)?;
        *in_flight -= 1;
        waiting.insert(index, done);
        while let Some(done) = waiting.remove(&next) {
            next += 1;
            line(&done)?;
            summary.add(done);
        }
        Ok(())
    };
    for (index, entry) in batch_entries(run.paths, run.recursive).enumerate() {
        found();
        let tx = tx.clone();
        let json = run.json;
        match entry {
            BatchEntry::Check(path) => {
                let options = run.options.clone();
                pool.spawn(move || {
                    let _ = tx.send((index, BatchLine::check(path, json, &options, reason)));
                })
            }
            BatchEntry::Refused(path, why) => {
                let done = BatchLine::failed(path, BatchStatus::Unreadable, why, json, Duration::ZERO);
                let _ = tx.send((index, done));
            }
        }
        in_flight += 1;
        while in_flight >= window {
            take(&mut in_flight)?;
        }
    }
    while in_flight > 0 {
        take(&mut in_flight)?;
    }
    Ok((summary, threads))
}
