//! The real libphdi and dissect.hypervisor, run through the drivers in `scripts/readers/` with
//! the Python of a virtual environment (`.ci/run` makes it: `~/.cache/prlimg-readers-venv`),
//! each in its own process with a timeout: a signal is a crash, the timeout a hang. What they
//! print is read into a [`ReaderRun`] and compared with the guest's bytes as the predictions
//! are ([`crate::readers::classify`]), so a prediction and an observation are compared field by
//! field.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{run, End, OracleError, RunOptions};
use crate::readers::{classify, Failure, ReaderOutcome, ReaderPrediction, ReaderRun, Truth, MAX_BYTES};

/// The folder of the virtual environment: `$PRLIMG_READERS_VENV`, else
/// `~/.cache/prlimg-readers-venv`.
pub fn default_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("PRLIMG_READERS_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/prlimg-readers-venv")
}

/// The drivers' folder: `$PRLIMG_READERS_DRIVERS`, else `scripts/readers` of this source tree.
pub fn default_drivers() -> PathBuf {
    if let Some(v) = std::env::var_os("PRLIMG_READERS_DRIVERS") {
        return PathBuf::from(v);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/readers")
}

/// Which reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reader {
    /// libyal's libphdi (pyphdi).
    Libphdi,
    /// fox-it's dissect.hypervisor.
    Dissect,
}

impl Reader {
    /// `"libphdi"` or `"dissect"`: the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Reader::Libphdi => "libphdi",
            Reader::Dissect => "dissect",
        }
    }

    fn driver(self) -> &'static str {
        match self {
            Reader::Libphdi => "libphdi_driver.py",
            Reader::Dissect => "dissect_driver.py",
        }
    }
}

/// One real reader, ready to run.
#[derive(Clone, Debug)]
pub struct RealReader {
    reader: Reader,
    python: PathBuf,
    driver: PathBuf,
}

/// libphdi, run by its driver.
pub type Libphdi = RealReader;
/// dissect.hypervisor, run by its driver.
pub type Dissect = RealReader;

/// What a real reader did, and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderObservation {
    /// Compared with the guest's bytes, as a prediction is.
    pub outcome: ReaderPrediction,
    /// The version the driver printed.
    pub version: Option<String>,
    /// The lone image was wrapped in a minimal bundle.
    pub wrapped: bool,
    /// How the process ended.
    pub end: End,
}

impl RealReader {
    /// The reader in the default venv with the default drivers, if both are there.
    pub fn find(reader: Reader) -> Option<RealReader> {
        Self::at(reader, &default_venv(), &default_drivers())
    }

    /// libphdi, if found ([`RealReader::find`]).
    pub fn libphdi() -> Option<RealReader> {
        Self::find(Reader::Libphdi)
    }

    /// dissect.hypervisor, if found ([`RealReader::find`]).
    pub fn dissect() -> Option<RealReader> {
        Self::find(Reader::Dissect)
    }

    /// The reader with the venv and drivers given, if its Python and its driver exist.
    pub fn at(reader: Reader, venv: &Path, drivers: &Path) -> Option<RealReader> {
        let python = venv.join("bin/python");
        let driver = drivers.join(reader.driver());
        (python.is_file() && driver.is_file()).then_some(RealReader { reader, python, driver })
    }

    /// Which reader.
    pub fn reader(&self) -> Reader {
        self.reader
    }

    /// Runs the reader on `path` (a bundle or a lone image), reading in reads of `read_size`
    /// bytes, and compares what it read with `truth` (see [`Truth::of`]).
    pub fn observe(
        &self,
        path: &Path,
        truth: Option<&Truth>,
        read_size: u64,
        timeout: Duration,
    ) -> Result<ReaderObservation, OracleError> {
        let read = read_size.to_string();
        let max = MAX_BYTES.to_string();
        let args: [&OsStr; 6] = [
            self.driver.as_os_str(),
            path.as_os_str(),
            OsStr::new("--read-size"),
            OsStr::new(&read),
            OsStr::new("--max-bytes"),
            OsStr::new(&max),
        ];
        let mut options = RunOptions::new(timeout);
        options.keep_lines = 1 << 20;
        let r = run(&self.python, &args, &options)?;
        let mut out = ReaderRun::default();
        let mut version = None;
        let mut wrapped = false;
        let mut done = false;
        for line in &r.stdout.head {
            let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if done {
                break;
            }
            match word {
                "reader" => version = rest.split(' ').nth(1).map(str::to_string),
                "wrapped" => wrapped = true,
                // Python's sizes have no bound: past u64 they are kept as u64::MAX, as the
                // models keep them.
                "media_size" => {
                    out.media_size = rest.parse::<u128>().ok().map(|v| u64::try_from(v).unwrap_or(u64::MAX))
                }
                "mib" => {
                    let w: Vec<&str> = rest.split(' ').collect();
                    if let (Some(len), Some(hex)) = (w.get(1).and_then(|l| l.parse().ok()), w.get(2)) {
                        let mut d = [0u8; 16];
                        for (i, b) in d.iter_mut().enumerate() {
                            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16).unwrap_or(0);
                        }
                        out.mibs.push((len, d));
                    }
                }
                "short" => out.short = rest.parse().ok(),
                "refuses" => out.failure = Some(Failure::Refuses(self.message(rest))),
                // dissect's further snapshots are not compared (yet): the top's lines end here.
                "snapshot" | "done" => done = true,
                _ => {}
            }
        }
        match r.end {
            End::Exited(0) if done || out.failure.is_some() => {}
            End::Exited(_) => {
                return Err(OracleError::UnexpectedEnd {
                    program: r.command.clone(),
                    end: r.end,
                    text: r.stderr.text(),
                })
            }
            End::Signalled(s) => out.failure = Some(Failure::Crashes(super::signal_name(s))),
            End::TimedOut => out.failure = Some(Failure::Hangs(format!("no end in {timeout:?}"))),
        }
        // A reader that ran out of memory in a loop without end hangs (the driver's limit).
        if let Some(Failure::Refuses(m)) = &out.failure {
            if m.starts_with("MemoryError") {
                out.failure = Some(Failure::Hangs(m.clone()));
            }
        }
        let top = match self.reader {
            Reader::Dissect if out.media_size.is_some() => Some(crate::readers::DEFAULT_TOP.to_string()),
            _ => None,
        };
        let mut outcome = classify(&out, truth, read_size);
        // The top is not printed by the drivers: it is the model's to say, and not compared.
        outcome.top = top;
        Ok(ReaderObservation {
            outcome,
            version,
            wrapped,
            end: r.end,
        })
    }

    /// The part of the reader's error text that is compared: libphdi's first cause (after
    /// pyphdi's own), dissect's `Type: text` (a `ParseError` by its name alone).
    fn message(&self, text: &str) -> String {
        match self.reader {
            Reader::Libphdi => libphdi_cause(text),
            Reader::Dissect => {
                if text.starts_with("ParseError:") {
                    "ParseError".to_string()
                } else {
                    text.to_string()
                }
            }
        }
    }
}

/// libyal's chain `OSError: pyphdi_f: text. libphdi_g: cause. …` → `libphdi_g: cause`.
pub fn libphdi_cause(text: &str) -> String {
    let body = text.strip_prefix("OSError: ").unwrap_or(text);
    // Causes are `function: text.` joined by spaces; a function name is [a-z0-9_]+.
    let mut starts = vec![0];
    let bytes = body.as_bytes();
    for i in 0..bytes.len().saturating_sub(2) {
        if bytes[i] == b'.' && bytes[i + 1] == b' ' {
            let rest = &body[i + 2..];
            if let Some((name, _)) = rest.split_once(": ") {
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    starts.push(i + 2);
                }
            }
        }
    }
    let pick = if starts.len() > 1 { 1 } else { 0 };
    let from = starts[pick];
    let to = starts.get(pick + 1).map_or(body.len(), |&e| e - 1);
    body[from..to].trim_end_matches('.').to_string()
}

/// A field of a reader's prediction that the real reader did otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderDisagreement {
    /// `"outcome"`, `"message"`, `"media_size"` or `"misread_mib"`.
    pub field: &'static str,
    /// The prediction's value.
    pub predicted: String,
    /// The real reader's.
    pub observed: String,
}

impl std::fmt::Display for ReaderDisagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: predicted {}, observed {}",
            self.field, self.predicted, self.observed
        )
    }
}

/// Where the prediction and the real reader differ (empty when they agree).
pub fn differences(p: &ReaderPrediction, o: &ReaderObservation) -> Vec<ReaderDisagreement> {
    let o = &o.outcome;
    let mut d = Vec::new();
    let mut field = |field, a: String, b: String| {
        if a != b {
            d.push(ReaderDisagreement {
                field,
                predicted: a,
                observed: b,
            })
        }
    };
    field("outcome", p.outcome.name().into(), o.outcome.name().into());
    // A hang's message says what the model saw loop, or the timeout: not compared.
    if !(p.outcome == ReaderOutcome::Hangs && o.outcome == ReaderOutcome::Hangs) {
        field("message", format!("{:?}", p.message), format!("{:?}", o.message));
    }
    field(
        "media_size",
        format!("{:?}", p.media_size),
        format!("{:?}", o.media_size),
    );
    field(
        "misread_mib",
        format!("{:?} (+{})", p.misread_mib, p.misread_mib_omitted),
        format!("{:?} (+{})", o.misread_mib, o.misread_mib_omitted),
    );
    d
}
