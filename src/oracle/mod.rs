//! Running the real programs — `qemu-img info` / `check` ([`qemu`]) and the ploop oracle's
//! drivers ([`ploop`]) — with a timeout, reading what they did into typed observations, and
//! comparing those with this crate's predictions ([`crate::qemu::predict`],
//! [`crate::ploop::predict_ploop`]) into typed disagreements. `prlimg differential` and the tests that
//! hold the predictions to the real programs both use it (behind the `oracle` feature).
//!
//! A run ends in one of three ways ([`End`]): an exit status, a signal (an abort is SIGABRT,
//! which a shell shows as 134), or the timeout, after which the program and every process it
//! started (its process group) are killed. Output is read as it comes, a bounded number of lines
//! kept ([`Output`]): a hostile image can make `qemu-img check` print hundreds of millions of
//! lines.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::extension::ExtensionDigest;

pub mod campaign;
pub mod ploop;
pub mod qemu;
pub mod readers;

pub use readers::{Dissect, Libphdi, ReaderObservation};

/// How a run of a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it (6: SIGABRT, an assertion; 11: SIGSEGV).
    Signalled(i32),
    /// It was still running at the timeout, and was killed.
    TimedOut,
}

impl End {
    /// The status a shell reports: the exit status, or 128 + the signal; `None` for a timeout.
    pub fn shell_status(self) -> Option<i32> {
        match self {
            End::Exited(c) => Some(c),
            End::Signalled(s) => Some(128 + s),
            End::TimedOut => None,
        }
    }

    /// `"exit N"`, the signal's name (`"SIGABRT"`, `"SIGSEGV"`, …, `"signal N"`) or `"timeout"`.
    pub fn label(self) -> String {
        match self {
            End::Exited(c) => format!("exit {c}"),
            End::Signalled(s) => signal_name(s),
            End::TimedOut => "timeout".into(),
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// The name of signal `sig` as the ploop oracle's observations give it (`"SIGFPE"`,
/// `"SIGSEGV"`, `"SIGABRT"`, `"SIGBUS"`, else `"signal N"`).
pub fn signal_name(sig: i32) -> String {
    match sig {
        8 => "SIGFPE".into(),
        11 => "SIGSEGV".into(),
        6 => "SIGABRT".into(),
        7 => "SIGBUS".into(),
        s => format!("signal {s}"),
    }
}

/// A failure to run a program or to make sense of what it did (not a disagreement: there is
/// nothing to compare).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OracleError {
    /// The program could not be started.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading its output, waiting for it, or reading or copying the image failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A program that must leave its input alone changed it.
    #[error("{program} changed {} (it must leave the file alone)", path.display())]
    ChangedInput {
        /// The program and its arguments.
        program: String,
        /// The file.
        path: PathBuf,
    },
    /// The mount driver changed its copy in a way none of [`crate::ploop::MountEffect`]'s names.
    #[error("{program} changed {} in an unforeseen way", path.display())]
    OtherChange {
        /// The program and its arguments.
        program: String,
        /// The copy it changed.
        path: PathBuf,
    },
    /// The output lacks what the program always prints (its summary line, say).
    #[error("{program}: {what} is missing from its output: {text:?}")]
    Unparsable {
        /// The program and its arguments.
        program: String,
        /// What was looked for.
        what: &'static str,
        /// Its output (the lines kept).
        text: String,
    },
    /// The program ended in a way it never should (a usage error's exit status, say).
    #[error("{program} ended with {end}: {text:?}")]
    UnexpectedEnd {
        /// The program and its arguments.
        program: String,
        /// How it ended.
        end: End,
        /// Its output (the lines kept).
        text: String,
    },
    /// The program was still running at the timeout (and was killed).
    #[error("{program} did not finish in {limit:?}")]
    TimedOut {
        /// The program and its arguments.
        program: String,
        /// The timeout.
        limit: Duration,
    },
}

impl OracleError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        OracleError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The longest line kept whole; the rest of a longer line is dropped (and [`Output::cut`] set).
pub const MAX_LINE: usize = 64 << 10;
/// How many bytes of lines an [`Output`] keeps at most, whatever its line limit.
pub const MAX_KEPT_BYTES: usize = 64 << 20;
/// How many of the last lines an [`Output`] keeps besides its first ones.
pub const TAIL_LINES: usize = 8;

/// What a program printed on one stream, as lines (without their `\n` or `\r\n`): the first
/// ones up to a limit, the last [`TAIL_LINES`] after those, and how many there were.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Output {
    /// The first lines.
    pub head: Vec<String>,
    /// The last lines after [`Output::head`] (none when every line is in the head).
    pub tail: Vec<String>,
    /// How many lines were printed (a last line without `\n` counts).
    pub lines: u64,
    /// A line longer than [`MAX_LINE`] bytes was cut.
    pub cut: bool,
}

impl Output {
    /// Whether nothing was printed.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Whether every line printed is in [`Output::head`].
    pub fn is_complete(&self) -> bool {
        self.lines == self.head.len() as u64 && !self.cut
    }

    /// How many lines are not in [`Output::head`].
    pub fn omitted(&self) -> u64 {
        self.lines - self.head.len() as u64
    }

    /// The last line printed.
    pub fn last(&self) -> Option<&str> {
        self.tail.last().or(self.head.last()).map(String::as_str)
    }

    /// The lines kept, joined by `\n`, with a note of how many are left out between the head
    /// and the tail.
    pub fn text(&self) -> String {
        let mut s = self.head.join("\n");
        let between = self.lines - (self.head.len() + self.tail.len()) as u64;
        if between > 0 {
            s.push_str(&format!("\n[... {between} more lines ...]"));
        }
        for l in &self.tail {
            s.push('\n');
            s.push_str(l);
        }
        s
    }

    fn push(&mut self, mut line: Vec<u8>, keep: usize, kept_bytes: &mut usize) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        self.lines += 1;
        if self.tail.is_empty() && self.head.len() < keep && *kept_bytes + line.len() <= MAX_KEPT_BYTES {
            *kept_bytes += line.len();
            self.head.push(line);
        } else {
            if self.tail.len() == TAIL_LINES {
                self.tail.remove(0);
            }
            self.tail.push(line);
        }
    }

    /// Reads `from` to its end, keeping the first `keep` lines.
    fn read(mut from: impl Read, keep: usize) -> io::Result<Output> {
        let mut out = Output::default();
        let mut buf = vec![0u8; 64 << 10];
        let (mut line, mut kept_bytes) = (Vec::new(), 0usize);
        let add = |line: &mut Vec<u8>, bytes: &[u8], cut: &mut bool| {
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&bytes[..bytes.len().min(room)]);
            *cut |= bytes.len() > room;
        };
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut rest = &buf[..n];
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                add(&mut line, &rest[..i], &mut out.cut);
                out.push(std::mem::take(&mut line), keep, &mut kept_bytes);
                rest = &rest[i + 1..];
            }
            add(&mut line, rest, &mut out.cut);
        }
        if !line.is_empty() {
            out.push(line, keep, &mut kept_bytes);
        }
        Ok(out)
    }
}

/// How to run a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Kill it (and its process group) when it runs longer.
    pub timeout: Duration,
    /// How many first lines of each stream to keep ([`Output::head`]).
    pub keep_lines: usize,
    /// Send standard error into the same pipe as standard output (in the order the program
    /// writes them), so that [`Run::stdout`] holds both and [`Run::stderr`] is empty.
    pub merge: bool,
}

impl RunOptions {
    /// A timeout, 10,000 lines kept, the streams apart.
    pub fn new(timeout: Duration) -> Self {
        RunOptions {
            timeout,
            keep_lines: 10_000,
            merge: false,
        }
    }
}

/// What one run of a program did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    /// The program and its arguments, as one line for people.
    pub command: String,
    /// How it ended.
    pub end: End,
    /// Its standard output (with standard error, when merged).
    pub stdout: Output,
    /// Its standard error.
    pub stderr: Output,
    /// From start to end (or to the kill).
    pub elapsed: Duration,
}

/// The command line `program args` for messages.
fn command_line(program: &Path, args: &[&OsStr]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The process groups (led by the programs [`run`] started) still running, for [`kill_running`].
#[cfg(target_os = "linux")]
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Kills every program [`run`] has started and not yet seen end, each with its process group.
/// For a signal handler about to end the process: the programs run in their own process groups,
/// so the terminal's Ctrl-C does not reach them, and no one would kill them at their timeout.
/// The runs cut short end as signalled (SIGKILL). A no-op on systems other than Linux.
pub fn kill_running() {
    #[cfg(target_os = "linux")]
    for &pid in RUNNING.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// Records a started program's process group in [`RUNNING`] until dropped.
struct Running(#[cfg_attr(not(target_os = "linux"), allow(dead_code))] u32);

impl Running {
    fn new(child: &Child) -> Self {
        #[cfg(target_os = "linux")]
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Running(child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != self.0);
    }
}

/// Kills the child's process group (it leads one), or the child alone where that is not possible.
fn kill(child: &mut Child) {
    #[cfg(target_os = "linux")]
    {
        let group = rustix::process::Pid::from_child(child);
        if rustix::process::kill_process_group(group, rustix::process::Signal::KILL).is_ok() {
            return;
        }
    }
    let _ = child.kill();
}

#[cfg(unix)]
fn end_of(status: ExitStatus, killed: bool) -> End {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => End::Exited(c),
        (None, Some(9)) if killed => End::TimedOut,
        (None, Some(s)) => End::Signalled(s),
        (None, None) => End::Exited(-1),
    }
}

#[cfg(not(unix))]
fn end_of(status: ExitStatus, killed: bool) -> End {
    match status.code() {
        _ if killed => End::TimedOut,
        Some(c) => End::Exited(c),
        None => End::Exited(-1),
    }
}

/// Runs `program args` with standard input empty, reading its output as it comes, and kills it
/// (with every process of its group) at `options.timeout`.
pub fn run(program: &Path, args: &[&OsStr], options: &RunOptions) -> Result<Run, OracleError> {
    let command = command_line(program, args);
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let merged = if options.merge {
        let (reader, writer) = io::pipe().map_err(|e| OracleError::io("making a pipe", e))?;
        let second = writer.try_clone().map_err(|e| OracleError::io("making a pipe", e))?;
        cmd.stdout(writer).stderr(second);
        Some(reader)
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        None
    };
    let start = Instant::now();
    let spawned = cmd.spawn();
    // The command holds the merged pipe's writing ends: they must close here for the reader
    // to see the end.
    drop(cmd);
    let mut child = spawned.map_err(|source| OracleError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    // Until the child is reaped: its pid (and group id) cannot be reused before that.
    let running = Running::new(&child);
    let keep = options.keep_lines;
    type Stream = Option<Box<dyn Read + Send>>;
    // Each reader says when its stream has ended: the program's end is then noticed at once,
    // not at the next of a polling loop's naps.
    let (ended, stream_ended) = mpsc::channel::<()>();
    let reader = |r: Stream| {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let out = match r {
                Some(r) => Output::read(r, keep),
                None => Ok(Output::default()),
            };
            let _ = ended.send(());
            out
        })
    };
    let (out, err): (Stream, Stream) = match merged {
        Some(r) => (Some(Box::new(r)), None),
        None => (
            child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
            child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
        ),
    };
    let (out, err) = (reader(out), reader(err));
    drop(ended);
    let deadline = start + options.timeout;
    // Both streams end when the program exits (or closes them); until the deadline at most.
    let mut open = 2;
    while open > 0 {
        match stream_ended.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            // A reader panicked: the join below says so.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut nap = Duration::from_micros(50);
    let (status, killed) = loop {
        match child.try_wait() {
            Ok(Some(s)) => break (s, false),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                let _ = child.wait();
                return Err(OracleError::io(format!("waiting for {command}"), e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill(&mut child);
            let s = child
                .wait()
                .map_err(|e| OracleError::io(format!("waiting for {command}"), e))?;
            break (s, true);
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(1));
    };
    let elapsed = start.elapsed();
    if open > 0 && !killed && Instant::now() >= deadline {
        // The program exited, but another process of its group still holds its output open at
        // the deadline: that one is killed too, or the readers would wait for it.
        kill(&mut child);
    }
    // Only now, after the last kill of the group: until here `kill_running` must reach a
    // process of the group that outlives the program.
    drop(running);
    let join = |h: std::thread::JoinHandle<io::Result<Output>>| {
        h.join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread panicked")))
            .map_err(|e| OracleError::io(format!("reading the output of {command}"), e))
    };
    let (stdout, stderr) = (join(out)?, join(err)?);
    Ok(Run {
        end: end_of(status, killed),
        command,
        stdout,
        stderr,
        elapsed,
    })
}

/// Whether `tool` is a file in one of the folders of `PATH`; its path if so.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The image `prlimg differential` varies unless told otherwise: a v2 image of a 4 MiB disk
/// with 64 KiB clusters (ploop opens 32 KiB to 64 MiB), data at its start and middle, two
/// bitmaps of different granularities (64 KiB and 512 bytes), closed by ploop's version
/// (`inuse` "v2.1"), so that QEMU opens it and ploop loads its bitmap.
pub fn builtin_base() -> crate::Result<Vec<u8>> {
    use crate::builder::{BitmapSpec, GuestData, ImageBuilder};
    let disk = 4 << 20;
    let bitmap = |id: u8, granularity: u64, extents: Vec<(u64, u64)>| BitmapSpec {
        id: [id; 16],
        granularity,
        extents,
    };
    let (bytes, _) = ImageBuilder::new(disk)
        .cluster_size(64 << 10)
        .inuse(crate::raw::header::INUSE_CLOSED_V21)
        .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
        .data(
            disk / 2,
            GuestData::Fill {
                len: 70_000,
                byte: 0xbb,
            },
        )
        .bitmap(bitmap(1, 64 << 10, vec![(0, 1), (disk / 4, 300_000)]))
        .bitmap(bitmap(2, 512, vec![(0, disk)]))
        .to_vec()?;
    Ok(bytes)
}

/// The programs a campaign runs, and the timeout of each run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oracles {
    /// `qemu-img` (`info` and `check`), if run.
    pub qemu: Option<qemu::QemuImg>,
    /// The ploop drivers, if run.
    pub ploop: Option<ploop::PloopDrivers>,
    /// The timeout of each run.
    pub timeout: Duration,
}

/// What QEMU did with one image, against the prediction.
#[derive(Debug)]
pub struct QemuExamination {
    /// The prediction.
    pub prediction: crate::qemu::Prediction,
    /// `qemu-img info`.
    pub info: Result<Run, OracleError>,
    /// `qemu-img check`.
    pub check: Result<Run, OracleError>,
    /// Where they differ from the prediction.
    pub disagreements: Vec<qemu::QemuDisagreement>,
}

/// What ploop did with one image, against the prediction.
#[derive(Debug)]
pub struct PloopExamination {
    /// The prediction.
    pub prediction: crate::ploop::PloopPrediction,
    /// What the drivers did.
    pub observation: Result<ploop::PloopObservation, OracleError>,
    /// How long each driver ran.
    pub run_times: ploop::PloopRunTimes,
    /// Where that differs from the prediction.
    pub disagreements: Vec<ploop::PloopDisagreement>,
}

/// What the programs did with one image, against the predictions.
#[derive(Debug)]
pub struct Examination {
    /// QEMU's part (when run).
    pub qemu: Option<QemuExamination>,
    /// ploop's part (when run).
    pub ploop: Option<PloopExamination>,
}

/// The class of an [`Examination`], worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A program could not be run, or did something that makes no sense (its output lacks
    /// its summary, say): nothing could be compared.
    Failed,
    /// A program was still running at the timeout.
    TimedOut,
    /// A program did otherwise than predicted.
    Disagrees,
    /// Every program did what was predicted.
    Agrees,
}

impl Verdict {
    /// `"failed"`, `"timed_out"`, `"disagrees"` or `"agrees"`, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Failed => "failed",
            Verdict::TimedOut => "timed_out",
            Verdict::Disagrees => "disagrees",
            Verdict::Agrees => "agrees",
        }
    }
}

impl Oracles {
    /// Predicts what each program does with the image at `path` and runs it there (QEMU
    /// read-only; ploop's mount on a copy at `mount_copy`, which must not exist), comparing.
    /// An I/O error reading the image for the predictions is the only `Err`.
    pub fn examine(&self, path: &Path, mount_copy: &Path) -> io::Result<Examination> {
        self.examine_knowing(path, mount_copy, None)
    }

    /// [`Oracles::examine`] of a file whose extension cluster's MD5 the caller already has: a
    /// variant's, from the digest its checksum was fixed with ([`crate::mutate::Mutant::digest`]), the
    /// caller vouching that the file holds the bytes that were hashed (it wrote them). A
    /// prediction takes `known` only if it covers the very cluster that prediction would hash
    /// (same offset, cluster size and file length) and hashes the cluster itself otherwise.
    ///
    /// Both predictions are made before any program runs, and the digest of the one serves the
    /// other: the cluster is hashed at most once per examination (QEMU's prediction hashes it
    /// where QEMU would; ploop's takes that digest when its block is the same cluster).
    pub fn examine_knowing(
        &self,
        path: &Path,
        mount_copy: &Path,
        known: Option<&ExtensionDigest>,
    ) -> io::Result<Examination> {
        let source = crate::source::FileSource::open(path)?;
        let shown = path.display().to_string();
        let mut known = known.copied();
        let qemu_prediction = match &self.qemu {
            None => None,
            Some(_) => {
                let (prediction, digest) = crate::qemu::predict_knowing_for(
                    &source,
                    known.as_ref(),
                    self.qemu.as_ref().map_or_else(Default::default, |q| q.version()),
                )?;
                known = digest.or(known);
                Some(prediction)
            }
        };
        let ploop_prediction = match &self.ploop {
            None => None,
            Some(_) => Some(crate::ploop::predict_ploop_knowing(&source, &shown, known.as_ref())?),
        };
        let qemu = match (&self.qemu, qemu_prediction) {
            (Some(q), Some(prediction)) => {
                let info = q.info(path, self.timeout);
                let check = q.check(path, self.timeout);
                let mut disagreements = Vec::new();
                if let Ok(r) = &info {
                    disagreements.extend(qemu::info_disagreement(&prediction.info, r, &shown));
                }
                if let Ok(r) = &check {
                    disagreements.extend(qemu::check_disagreement(&prediction.check, r, &shown));
                }
                Some(QemuExamination {
                    prediction,
                    info,
                    check,
                    disagreements,
                })
            }
            _ => None,
        };
        let ploop = match (&self.ploop, ploop_prediction) {
            (Some(p), Some(prediction)) => {
                let (observation, run_times) = p.observe_timed(path, mount_copy, self.timeout);
                let disagreements = match &observation {
                    Ok(o) => ploop::differences(&prediction, o),
                    Err(_) => Vec::new(),
                };
                Some(PloopExamination {
                    prediction,
                    observation,
                    run_times,
                    disagreements,
                })
            }
            _ => None,
        };
        Ok(Examination { qemu, ploop })
    }
}

impl Examination {
    /// Its class: [`Verdict::Failed`] if any run failed, else [`Verdict::TimedOut`] if any
    /// timed out, else [`Verdict::Disagrees`] if anything differs from the prediction.
    pub fn verdict(&self) -> Verdict {
        let mut v = Verdict::Agrees;
        let mut worst = |w: Verdict| v = v.min(w);
        let error = |e: &OracleError| match e {
            OracleError::TimedOut { .. } => Verdict::TimedOut,
            _ => Verdict::Failed,
        };
        if let Some(q) = &self.qemu {
            for r in [&q.info, &q.check] {
                match r {
                    Err(e) => worst(error(e)),
                    Ok(r) if r.end == End::TimedOut => worst(Verdict::TimedOut),
                    Ok(_) => {}
                }
            }
            if !q.disagreements.is_empty() {
                worst(Verdict::Disagrees);
            }
        }
        if let Some(p) = &self.ploop {
            if let Err(e) = &p.observation {
                worst(error(e));
            }
            if !p.disagreements.is_empty() {
                worst(Verdict::Disagrees);
            }
        }
        v
    }

    /// Whether a program died of a signal (a crash or an abort), predicted or not.
    pub fn crashed(&self) -> bool {
        let qemu = self.qemu.as_ref().is_some_and(|q| {
            [&q.info, &q.check]
                .iter()
                .any(|r| matches!(r, Ok(r) if matches!(r.end, End::Signalled(_))))
        });
        let ploop = self.ploop.as_ref().is_some_and(|p| {
            matches!(&p.observation, Ok(o) if o.check.rc.is_none()
                || o.cbt.outcome == crate::ploop::CbtOutcome::Crashes
                || o.mount.effect == crate::ploop::MountEffect::Crashes)
        });
        qemu || ploop
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Held by every test that starts programs: `kill_running` kills whatever runs.
    static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn sh(script: &str, timeout: Duration, merge: bool) -> Run {
        let _alone = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let options = RunOptions {
            timeout,
            keep_lines: 3,
            merge,
        };
        run(Path::new("/bin/sh"), &[OsStr::new("-c"), OsStr::new(script)], &options).unwrap()
    }

    #[test]
    fn an_exit_a_signal_and_a_timeout_are_told_apart() {
        let r = sh("echo out; echo err >&2; exit 3", Duration::from_secs(20), false);
        assert_eq!(r.end, End::Exited(3));
        assert_eq!(
            (r.stdout.head.clone(), r.stderr.head.clone()),
            (vec!["out".to_string()], vec!["err".to_string()])
        );
        assert_eq!(
            sh("kill -ABRT $$", Duration::from_secs(20), false).end,
            End::Signalled(6)
        );
        assert_eq!(
            sh("kill -SEGV $$", Duration::from_secs(20), false).end,
            End::Signalled(11)
        );
        // The sleeping grandchild holds the pipes: it is killed with its parent's group, or the
        // run would wait 30 s for the end of the output.
        let t0 = Instant::now();
        let r = sh("sleep 30 & echo started; wait", Duration::from_millis(200), false);
        assert_eq!(r.end, End::TimedOut);
        assert_eq!(r.stdout.head, vec!["started".to_string()]);
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert_eq!(
            (
                End::Signalled(6).shell_status(),
                End::TimedOut.shell_status(),
                End::Signalled(11).label()
            ),
            (Some(134), None, "SIGSEGV".to_string())
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kill_running_ends_every_program_started_with_its_group() {
        let _alone = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let t0 = Instant::now();
        let running = std::thread::spawn(|| {
            let script = [OsStr::new("-c"), OsStr::new("sleep 30 & echo started; wait")];
            run(Path::new("/bin/sh"), &script, &RunOptions::new(Duration::from_secs(60)))
        });
        while RUNNING.lock().unwrap().is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(20), "the program never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        kill_running();
        let r = running.join().unwrap().unwrap();
        // Killed, not timed out; and the sleeping grandchild, which holds the pipes, with it.
        assert_eq!(r.end, End::Signalled(9));
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert!(RUNNING.lock().unwrap().is_empty());
    }

    #[test]
    fn a_program_that_leaves_its_output_to_a_background_process_ends_by_its_exit() {
        // The shell exits at once; the sleep it leaves behind holds the pipes until the
        // deadline, when it is killed with the group, so the run ends then, by the exit status.
        let t0 = Instant::now();
        let r = sh("sleep 30 & echo started; exit 5", Duration::from_millis(300), false);
        assert_eq!(r.end, End::Exited(5));
        assert_eq!((r.stdout.head, r.stderr.lines), (vec!["started".to_string()], 0));
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }

    #[test]
    fn output_keeps_its_first_and_last_lines_and_counts_all() {
        let r = sh(
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo $i; done; printf 'x\\r\\nlast'",
            Duration::from_secs(20),
            false,
        );
        let o = r.stdout;
        assert_eq!(o.head, ["1", "2", "3"]);
        assert_eq!(o.tail, ["7", "8", "9", "10", "11", "12", "x", "last"]);
        assert_eq!(
            (o.lines, o.omitted(), o.last(), o.is_complete()),
            (14, 11, Some("last"), false)
        );
        assert_eq!(
            o.text(),
            "1\n2\n3\n[... 3 more lines ...]\n7\n8\n9\n10\n11\n12\nx\nlast"
        );
        // Merged streams keep the order of the writes.
        let r = sh("echo a; echo b >&2; echo c", Duration::from_secs(20), true);
        assert_eq!(
            (r.stdout.head, r.stderr.lines),
            (vec!["a".to_string(), "b".into(), "c".into()], 0)
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(
            Path::new("/nonexistent/prog"),
            &[],
            &RunOptions::new(Duration::from_secs(1)),
        )
        .unwrap_err();
        assert!(
            matches!(e, OracleError::Spawn { ref program, .. } if program == Path::new("/nonexistent/prog")),
            "{e}"
        );
    }
}

#[cfg(test)]
mod known_digest {
    use crate::builder::{BitmapSpec, ImageBuilder};
    use crate::extension::ExtensionDigest;
    use crate::mutate::{ChecksumState, MutateOptions, Mutator};
    use crate::qemu::{predict, predict_knowing, QemuOutcome, QemuReason};
    use crate::{ploop::predict_ploop, ploop::predict_ploop_knowing, raw::extension::checksum_padded, Image};

    fn bases() -> Vec<Vec<u8>> {
        let one_mib = ImageBuilder::new(16 << 20)
            .cluster_size(1 << 20)
            .inuse(crate::raw::header::INUSE_CLOSED_V21)
            .bitmap(BitmapSpec {
                id: [3; 16],
                granularity: 64 << 10,
                extents: vec![(0, 1 << 20), (9 << 20, 70_000)],
            })
            .to_vec()
            .unwrap()
            .0;
        vec![super::builtin_base().unwrap(), one_mib]
    }

    /// For each variant: the predictions that take the mutator's digest (and QEMU's, for ploop)
    /// are the predictions that hash; the mutator's digest is the very MD5 QEMU's prediction
    /// computes where both cover the same cluster. Most of them do (about 7 in 8), and most of
    /// ploop's blocks are that cluster: the digests are used, not only offered.
    #[test]
    fn a_known_digest_gives_the_predictions_hashing_gives() {
        for (b, base) in bases().iter().enumerate() {
            let m = Mutator::new(base, MutateOptions::default()).unwrap();
            let (mut same_cluster, mut ploop_takes) = (0, 0);
            let count = if b == 0 { 200 } else { 40 };
            for seed in 0..count {
                let v = m.mutant(seed);
                assert_eq!(v.digest.is_some(), v.checksum == ChecksumState::Fixed, "seed {seed}");
                let bytes = v.bytes.as_slice();
                let (honest, hashed) = predict_knowing(&bytes, None).unwrap();
                let (taking, digest) = predict_knowing(&bytes, v.digest.as_ref()).unwrap();
                assert_eq!(taking, honest, "base {b} seed {seed}: {:?}", v.edits);
                if let (Some(h), Some(d)) = (hashed, v.digest) {
                    if h.covers(d.offset, d.cluster_size, d.file_len) {
                        assert_eq!(h, d, "base {b} seed {seed}: {:?}", v.edits);
                        same_cluster += 1;
                    }
                }
                // What the campaign hands to ploop's prediction: QEMU's digest, else the mutator's.
                let known = digest.or(v.digest);
                let ploop = predict_ploop(&bytes, "x").unwrap();
                assert_eq!(
                    predict_ploop_knowing(&bytes, "x", known.as_ref()).unwrap(),
                    ploop,
                    "base {b} seed {seed}: {:?}",
                    v.edits
                );
                let h = crate::raw::header::RawHeader::read_padded(bytes);
                let (off, bs) = (h.ext_off.get().wrapping_mul(512), u64::from(h.tracks.get()) * 512);
                if known.is_some_and(|k| k.covers(off, bs, bytes.len() as u64)) && off + bs <= bytes.len() as u64 {
                    ploop_takes += 1;
                }
            }
            assert!(same_cluster >= count * 3 / 4, "base {b}: {same_cluster} of {count}");
            assert!(ploop_takes >= count * 3 / 4, "base {b}: {ploop_takes} of {count}");
        }
    }

    /// A digest is taken only when it covers the very cluster: one with the same offset, cluster
    /// size and file length is taken as it is (a wrong MD5 there makes both predictions see a
    /// wrong checksum, as for a file whose stored checksum is wrong); one that differs in any of
    /// the three is not, and the predictions hash.
    #[test]
    fn a_digest_is_taken_only_for_the_very_cluster() {
        let base = super::builtin_base().unwrap();
        let image = Image::parse(&base).unwrap();
        let ext = image.extension().unwrap();
        let (off, cs, len) = (ext.file_offset, ext.cluster_size, base.len() as u64);
        let right = ExtensionDigest {
            offset: off,
            cluster_size: cs,
            file_len: len,
            md5: checksum_padded(&base[off as usize + 24..(off + cs) as usize], 0),
        };
        assert_eq!(predict_knowing(&base.as_slice(), None).unwrap().1, Some(right));
        let wrong = ExtensionDigest {
            md5: [0x5a; 16],
            ..right
        };
        let mut broken = base.clone();
        broken[off as usize + 8..off as usize + 24].copy_from_slice(&[0x5a; 16]);
        let (taken, digest) = predict_knowing(&base.as_slice(), Some(&wrong)).unwrap();
        assert_eq!(digest, Some(wrong));
        assert!(
            matches!(
                &taken.info,
                QemuOutcome::Rejects {
                    reason: QemuReason::ExtensionChecksum,
                    ..
                }
            ),
            "{:?}",
            taken.info
        );
        assert_eq!(taken, predict(&broken.as_slice()).unwrap());
        let ploop_taken = predict_ploop_knowing(&base.as_slice(), "x", Some(&wrong)).unwrap();
        assert_ne!(ploop_taken, predict_ploop(&base.as_slice(), "x").unwrap());
        assert_eq!(ploop_taken, predict_ploop(&broken.as_slice(), "x").unwrap());

        let honest = (
            predict(&base.as_slice()).unwrap(),
            predict_ploop(&base.as_slice(), "x").unwrap(),
        );
        for other in [
            ExtensionDigest {
                offset: off + 512,
                ..wrong
            },
            ExtensionDigest {
                cluster_size: cs * 2,
                ..wrong
            },
            ExtensionDigest {
                file_len: len + 1,
                ..wrong
            },
        ] {
            let (p, digest) = predict_knowing(&base.as_slice(), Some(&other)).unwrap();
            assert_eq!(digest, Some(right), "{other:?}");
            assert_eq!(
                (p, predict_ploop_knowing(&base.as_slice(), "x", Some(&other)).unwrap()),
                honest,
                "{other:?}"
            );
        }
    }
}
