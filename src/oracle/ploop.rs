//! The ploop oracle's drivers (`shared/oracles/ploop/`: `pcheck --check-only`, `pcheck
//! --cbt-only`, both read-only, and `pmount_sim` on a copy), what they did as a
//! [`PloopObservation`], and how that compares with [`crate::ploop::predict_ploop`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{run, signal_name, End, OracleError, Output, Run, RunOptions};
use crate::ploop::{
    CbtOutcome, MountEffect, PloopCbt, PloopCheck, PloopMount, PloopPrediction, HEAP_OVERRUN, MAX_PLOOP_MESSAGES,
};
use crate::raw::header::RawHeader;

/// The folder holding the built drivers `pcheck` and `pmount_sim`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PloopDrivers {
    dir: PathBuf,
}

/// The drivers' names.
pub const DRIVERS: [&str; 2] = ["pcheck", "pmount_sim"];

impl PloopDrivers {
    /// Where `shared/oracles/ploop/build.sh` puts the drivers: `$PLOOP_ORACLE_DIR/bin`, else
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/ploop-oracle/bin`.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os("PLOOP_ORACLE_DIR") {
            Some(d) => PathBuf::from(d).join("bin"),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/nonexistent"))
                .join("ploop-oracle/bin"),
        }
    }

    /// The drivers in `dir`, when both are there.
    pub fn at(dir: &Path) -> Option<Self> {
        DRIVERS
            .iter()
            .all(|d| dir.join(d).is_file())
            .then(|| PloopDrivers { dir: dir.to_path_buf() })
    }

    /// The drivers in [`PloopDrivers::default_dir`], when both are there.
    pub fn find() -> Option<Self> {
        Self::at(&Self::default_dir())
    }

    /// Their folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the three drivers on the image at `path` (each killed at `timeout`): the two
    /// read-only ones on the file (which must be left unchanged), the mount on a copy next to
    /// it (`NAME.mount.hds`, removed afterwards). Messages naming the copy are given as naming
    /// `path`.
    pub fn observe(&self, path: &Path, timeout: Duration) -> Result<PloopObservation, OracleError> {
        self.observe_with_copy(path, &path.with_extension("mount.hds"), timeout)
    }

    /// [`PloopDrivers::observe`] with the mount driver's copy at `copy` (which must not exist:
    /// it is written, then removed).
    pub fn observe_with_copy(
        &self,
        path: &Path,
        copy: &Path,
        timeout: Duration,
    ) -> Result<PloopObservation, OracleError> {
        self.observe_timed(path, copy, timeout).0
    }

    /// [`PloopDrivers::observe_with_copy`], with how long each driver ran (those that ran: a
    /// failed step ends the observation).
    pub fn observe_timed(
        &self,
        path: &Path,
        copy: &Path,
        timeout: Duration,
    ) -> (Result<PloopObservation, OracleError>, PloopRunTimes) {
        let mut times = PloopRunTimes::default();
        let observed = self.observe_into(path, copy, timeout, &mut times);
        (observed, times)
    }

    fn observe_into(
        &self,
        path: &Path,
        copy: &Path,
        timeout: Duration,
        times: &mut PloopRunTimes,
    ) -> Result<PloopObservation, OracleError> {
        let before = read_file(path)?;
        let header = RawHeader::read_padded(&before);
        let input = Input {
            path,
            before: &before,
            ext_off: header.ext_off.get(),
            inuse: header.inuse.get(),
        };
        let pcheck = self.dir.join("pcheck");
        let (check, check_last) = input.check(&pcheck, timeout, times)?;
        let (cbt, cbt_words) = input.cbt(&pcheck, timeout, times)?;
        let mount = input.mount(&self.dir.join("pmount_sim"), copy, timeout, times)?;
        Ok(PloopObservation {
            check,
            check_last,
            cbt,
            cbt_words,
            mount,
        })
    }
}

fn read_file(p: &Path) -> Result<Vec<u8>, OracleError> {
    std::fs::read(p).map_err(|e| OracleError::io(format!("reading {}", p.display()), e))
}

/// The image the drivers run on, as it was before the first of them.
struct Input<'a> {
    path: &'a Path,
    before: &'a [u8],
    ext_off: u64,
    inuse: u32,
}

impl Input<'_> {
    /// A read-only driver must leave the file as it was.
    fn unchanged(&self, r: &Run) -> Result<(), OracleError> {
        if read_file(self.path)? != self.before {
            return Err(OracleError::ChangedInput {
                program: r.command.clone(),
                path: self.path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// `pcheck --check-only`: its messages are every line before the summary (stderr and stdout
    /// in the order written).
    fn check(
        &self,
        pcheck: &Path,
        timeout: Duration,
        times: &mut PloopRunTimes,
    ) -> Result<(PloopCheck, Option<String>), OracleError> {
        let options = RunOptions {
            timeout,
            keep_lines: MAX_PLOOP_MESSAGES,
            merge: true,
        };
        let r = run(pcheck, &[OsStr::new("--check-only"), self.path.as_os_str()], &options)?;
        times.check = Some(r.elapsed);
        finished(&r)?;
        self.unchanged(&r)?;
        let summary = find_line(&r.stdout, "CHECK rc=");
        let (rc, mut count) = match (r.end, summary) {
            (End::Exited(0), Some((at, line))) => (
                Some(summary_rc(line, "CHECK rc=").ok_or_else(|| unparsable(&r, "the CHECK rc= number"))?),
                at,
            ),
            (End::Exited(0), None) => return Err(unparsable(&r, "the CHECK rc= line")),
            (End::Signalled(_), _) => (None, r.stdout.lines),
            _ => return Err(unexpected(&r)),
        };
        let mut messages: Vec<String> = r.stdout.head[..(count as usize).min(r.stdout.head.len())]
            .iter()
            .map(|l| strip_prefix(l).to_string())
            .collect();
        let mut last = (count > 0)
            .then(|| line_at(&r.stdout, count - 1).map(|l| strip_prefix(l).to_string()))
            .flatten();
        if let End::Signalled(s) = r.end {
            // A check that dies of a signal: its name is the last message.
            let name = signal_name(s);
            if messages.len() < MAX_PLOOP_MESSAGES {
                messages.push(name.clone());
            }
            count += 1;
            last = Some(name);
        }
        let messages_omitted = count - messages.len() as u64;
        Ok((
            PloopCheck {
                rc,
                messages,
                messages_omitted,
            },
            last,
        ))
    }

    /// `pcheck --cbt-only`: the loader's outcome and the words of the bitmap it kept.
    #[allow(clippy::type_complexity)]
    fn cbt(
        &self,
        pcheck: &Path,
        timeout: Duration,
        times: &mut PloopRunTimes,
    ) -> Result<(PloopCbt, Vec<(u32, Vec<u64>)>), OracleError> {
        let options = RunOptions {
            timeout,
            keep_lines: 1 << 20,
            merge: false,
        };
        let r = run(pcheck, &[OsStr::new("--cbt-only"), self.path.as_os_str()], &options)?;
        times.cbt = Some(r.elapsed);
        finished(&r)?;
        self.unchanged(&r)?;
        let last_err = r.stderr.last().map(|l| strip_prefix(l).to_string());
        let uuid = r
            .stdout
            .head
            .iter()
            .chain(&r.stdout.tail)
            .find_map(|l| l.strip_prefix("uuid: "))
            .map(str::to_string);
        let (outcome, bitmap, rc, message) = match r.end {
            End::Signalled(s) => (CbtOutcome::Crashes, None, None, Some(signal_name(s))),
            End::Exited(0) => {
                let rc = find_line(&r.stdout, "CBTLOAD rc=")
                    .and_then(|(_, l)| summary_rc(l, "CBTLOAD rc="))
                    .ok_or_else(|| unparsable(&r, "the CBTLOAD rc= line"))?;
                match rc {
                    0 if uuid.is_some() => (CbtOutcome::Loads, uuid, Some(0), None),
                    0 if self.ext_off == 0 => (CbtOutcome::None, None, Some(0), None),
                    0 if self.inuse == 0 => (CbtOutcome::Ignores, None, Some(0), None),
                    0 => (CbtOutcome::Loads, None, Some(0), None),
                    rc => (CbtOutcome::Refuses, None, Some(rc), last_err),
                }
            }
            _ => return Err(unexpected(&r)),
        };
        if !r.stdout.is_complete() {
            return Err(unparsable(&r, "the whole bitmap dump (too long)"));
        }
        let words = parse_words(&r.stdout.head).ok_or_else(|| unparsable(&r, "a readable bitmap dump"))?;
        Ok((
            PloopCbt {
                outcome,
                bitmap,
                rc,
                message,
            },
            words,
        ))
    }

    /// `pmount_sim` on a copy at `copy` (written, then removed): what a mount does to the file.
    fn mount(
        &self,
        pmount_sim: &Path,
        copy: &Path,
        timeout: Duration,
        times: &mut PloopRunTimes,
    ) -> Result<PloopMount, OracleError> {
        std::fs::write(copy, self.before).map_err(|e| OracleError::io(format!("writing {}", copy.display()), e))?;
        let options = RunOptions {
            timeout,
            keep_lines: 10_000,
            merge: false,
        };
        let r = run(pmount_sim, &[copy.as_os_str()], &options);
        let after = std::fs::read(copy);
        let _ = std::fs::remove_file(copy);
        let r = r?;
        times.mount = Some(r.elapsed);
        finished(&r)?;
        let after = after.map_err(|e| OracleError::io(format!("reading {}", copy.display()), e))?;
        let after_header = RawHeader::read_padded(&after);
        let (after_ext, after_inuse) = (after_header.ext_off.get(), after_header.inuse.get());
        let (copy_name, name) = (copy.display().to_string(), self.path.display().to_string());
        let message = r.stderr.last().map(|l| strip_prefix(l).replace(&copy_name, &name));
        let (rc, effect, message) = match r.end {
            End::Signalled(s) => (None, MountEffect::Crashes, Some(signal_name(s))),
            End::Exited(0) => {
                let rc = find_line(&r.stdout, "MOUNTLOAD rc=")
                    .and_then(|(_, l)| summary_rc(l, "MOUNTLOAD rc="))
                    .ok_or_else(|| unparsable(&r, "the MOUNTLOAD rc= line"))?;
                let effect = if after.len() < self.before.len() {
                    MountEffect::Truncates
                } else if after_ext != self.ext_off && after_ext == 0 {
                    MountEffect::DropsExtension
                } else if after == self.before {
                    MountEffect::Unchanged
                } else {
                    return Err(OracleError::OtherChange {
                        program: r.command.clone(),
                        path: copy.to_path_buf(),
                    });
                };
                (Some(rc), effect, message)
            }
            _ => return Err(unexpected(&r)),
        };
        Ok(PloopMount {
            rc,
            effect,
            file_size: after.len() as u64,
            ext_off: after_ext,
            inuse: after_inuse,
            message,
        })
    }
}

/// A driver killed at the deadline is an error of the oracle, not an outcome.
fn finished(r: &Run) -> Result<(), OracleError> {
    match r.end {
        End::TimedOut => Err(OracleError::TimedOut {
            program: r.command.clone(),
            limit: r.elapsed,
        }),
        _ => Ok(()),
    }
}

fn unexpected(r: &Run) -> OracleError {
    OracleError::UnexpectedEnd {
        program: r.command.clone(),
        end: r.end,
        text: format!("{}\n{}", r.stdout.text(), r.stderr.text()),
    }
}

fn unparsable(r: &Run, what: &'static str) -> OracleError {
    OracleError::Unparsable {
        program: r.command.clone(),
        what,
        text: format!("{}\n{}", r.stdout.text(), r.stderr.text()),
    }
}

/// The first line starting with `tag`, with its number.
fn find_line<'a>(o: &'a Output, tag: &str) -> Option<(u64, &'a str)> {
    if let Some(i) = o.head.iter().position(|l| l.starts_with(tag)) {
        return Some((i as u64, &o.head[i]));
    }
    let first_tail = o.lines - o.tail.len() as u64;
    o.tail
        .iter()
        .position(|l| l.starts_with(tag))
        .map(|i| (first_tail + i as u64, o.tail[i].as_str()))
}

/// Line `n` (from 0), if it was kept.
fn line_at(o: &Output, n: u64) -> Option<&str> {
    let first_tail = o.lines - o.tail.len() as u64;
    if n < o.head.len() as u64 {
        Some(&o.head[n as usize])
    } else if n >= first_tail {
        o.tail.get((n - first_tail) as usize).map(String::as_str)
    } else {
        None
    }
}

/// ploop's error lines start with `Error in FUNCTION (FILE:LINE): `; the prediction carries the
/// text after it.
pub fn strip_prefix(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("Error in ") {
        if let Some(i) = rest.find("): ") {
            return &rest[i + 3..];
        }
    }
    line
}

/// The number after `tag` at the start of `line`.
fn summary_rc(line: &str, tag: &str) -> Option<i32> {
    line.strip_prefix(tag)?
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .next()?
        .parse()
        .ok()
}

/// The CBT loader's dump: `<i>` then `1`, or rows of `OFFSET word word ...` (hex); `None` when
/// a line that should be one of these is not.
fn parse_words(lines: &[String]) -> Option<Vec<(u32, Vec<u64>)>> {
    let mut chunks: Vec<(u32, Vec<u64>)> = Vec::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix('<') {
            let (idx, tail) = rest.split_once('>')?;
            let mut words = Vec::new();
            if tail.trim() == "1" {
                words.push(1);
            }
            chunks.push((idx.parse().ok()?, words));
        } else if let Some((_, words)) = chunks.last_mut() {
            let mut it = line.split_whitespace();
            if it
                .next()
                .is_some_and(|o| o.len() == 8 && u64::from_str_radix(o, 16).is_ok())
            {
                for w in it {
                    words.push(u64::from_str_radix(w, 16).ok()?);
                }
            }
        }
    }
    Some(chunks)
}

/// How long each driver ran on one image ([`Run::elapsed`]); `None` for a driver that did not
/// run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PloopRunTimes {
    /// `pcheck --check-only`.
    pub check: Option<Duration>,
    /// `pcheck --cbt-only`.
    pub cbt: Option<Duration>,
    /// `pmount_sim`.
    pub mount: Option<Duration>,
}

impl PloopRunTimes {
    /// `("ploop check", …)`, `("ploop cbt", …)`, `("ploop mount", …)` for the drivers that ran,
    /// in that order (the names of a campaign's report).
    pub fn named(&self) -> Vec<(&'static str, Duration)> {
        [
            ("ploop check", self.check),
            ("ploop cbt", self.cbt),
            ("ploop mount", self.mount),
        ]
        .into_iter()
        .filter_map(|(name, t)| Some((name, t?)))
        .collect()
    }
}

/// What the drivers did with one image, in the prediction's terms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PloopObservation {
    /// The check: its rc (`None` when it died of a signal, whose name is then its last message),
    /// its first [`MAX_PLOOP_MESSAGES`] messages (`Error in …: ` taken off) and how many more it
    /// gave.
    pub check: PloopCheck,
    /// The check's last message (also when it is past the ones kept).
    pub check_last: Option<String>,
    /// What the CBT loader did: the outcome, the bitmap it kept, its rc (`None` for a signal)
    /// and its message (a refusal's last line, or the signal).
    pub cbt: PloopCbt,
    /// The 64-bit words of the bitmap the CBT loader printed, by L1 index (`1` chunks as the
    /// single word 1).
    pub cbt_words: Vec<(u32, Vec<u64>)>,
    /// What the mount did: its rc (`None` for a signal), its effect on the file, the file's
    /// length, `ext_off` and `inuse` after it, and its last message.
    pub mount: PloopMount,
}

/// What a [`PloopDisagreement`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PloopField {
    /// The check's rc.
    CheckRc,
    /// The check's messages (the first [`MAX_PLOOP_MESSAGES`] and the count of the rest).
    CheckMessages,
    /// What the CBT loader did.
    CbtOutcome,
    /// The bitmap it kept.
    CbtBitmap,
    /// Its rc.
    CbtRc,
    /// Its message.
    CbtMessage,
    /// The mount's rc.
    MountRc,
    /// What it did to the file.
    MountEffect,
    /// The length it left.
    MountFileSize,
    /// The `ext_off` it left.
    MountExtOff,
    /// The `inuse` it left.
    MountInuse,
    /// Its last message.
    MountMessage,
}

impl PloopField {
    /// `"check rc"`, `"cbt outcome"`, `"mount file size"`, …
    pub fn name(self) -> &'static str {
        match self {
            PloopField::CheckRc => "check rc",
            PloopField::CheckMessages => "check messages",
            PloopField::CbtOutcome => "cbt outcome",
            PloopField::CbtBitmap => "cbt bitmap",
            PloopField::CbtRc => "cbt rc",
            PloopField::CbtMessage => "cbt message",
            PloopField::MountRc => "mount rc",
            PloopField::MountEffect => "mount effect",
            PloopField::MountFileSize => "mount file size",
            PloopField::MountExtOff => "mount ext_off",
            PloopField::MountInuse => "mount inuse",
            PloopField::MountMessage => "mount message",
        }
    }
}

/// One thing ploop did otherwise than predicted, both sides written out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PloopDisagreement {
    /// What.
    pub field: PloopField,
    /// The prediction.
    pub predicted: String,
    /// What ploop did.
    pub observed: String,
}

impl std::fmt::Display for PloopDisagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: predicted {}, ploop {}",
            self.field.name(),
            self.predicted,
            self.observed
        )
    }
}

/// Every way the observation differs from the prediction (empty: they agree).
pub fn differences(p: &PloopPrediction, o: &PloopObservation) -> Vec<PloopDisagreement> {
    let mut d = Vec::new();
    let mut same = |field: PloopField, predicted: String, observed: String| {
        if predicted != observed {
            d.push(PloopDisagreement {
                field,
                predicted,
                observed,
            });
        }
    };
    same(
        PloopField::CheckRc,
        format!("{:?}", p.check.rc),
        format!("{:?}", o.check.rc),
    );
    // A check that overruns its heap dies wherever glibc notices: only the crash is predicted.
    let crashed = p.check.rc.is_none() && o.check.rc.is_none();
    let heap = p.check.messages.last().is_some_and(|m| m == HEAP_OVERRUN)
        && o.check_last
            .as_deref()
            .is_some_and(|m| m == "SIGABRT" || m == "SIGSEGV");
    if !(crashed && heap) {
        same(
            PloopField::CheckMessages,
            format!("{:?} +{}", p.check.messages, p.check.messages_omitted),
            format!("{:?} +{}", o.check.messages, o.check.messages_omitted),
        );
    }
    same(
        PloopField::CbtOutcome,
        p.cbt.outcome.name().into(),
        o.cbt.outcome.name().into(),
    );
    same(
        PloopField::CbtBitmap,
        format!("{:?}", p.cbt.bitmap),
        format!("{:?}", o.cbt.bitmap),
    );
    same(PloopField::CbtRc, format!("{:?}", p.cbt.rc), format!("{:?}", o.cbt.rc));
    same(
        PloopField::CbtMessage,
        format!("{:?}", p.cbt.message),
        format!("{:?}", o.cbt.message),
    );
    same(
        PloopField::MountRc,
        format!("{:?}", p.mount.rc),
        format!("{:?}", o.mount.rc),
    );
    same(
        PloopField::MountEffect,
        p.mount.effect.name().into(),
        o.mount.effect.name().into(),
    );
    same(
        PloopField::MountFileSize,
        p.mount.file_size.to_string(),
        o.mount.file_size.to_string(),
    );
    same(
        PloopField::MountExtOff,
        p.mount.ext_off.to_string(),
        o.mount.ext_off.to_string(),
    );
    same(
        PloopField::MountInuse,
        format!("{:#x}", p.mount.inuse),
        format!("{:#x}", o.mount.inuse),
    );
    same(
        PloopField::MountMessage,
        format!("{:?}", p.mount.message),
        format!("{:?}", o.mount.message),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreeing() -> (PloopPrediction, PloopObservation) {
        let p = PloopPrediction {
            check: PloopCheck {
                rc: Some(0),
                messages: vec![],
                messages_omitted: 0,
            },
            cbt: PloopCbt {
                outcome: CbtOutcome::Loads,
                bitmap: Some("01010101-0101-0101-0101-010101010101".into()),
                rc: Some(0),
                message: None,
            },
            mount: PloopMount {
                rc: Some(0),
                effect: MountEffect::Truncates,
                file_size: 65536,
                ext_off: 128,
                inuse: 0x312e_3276,
                message: None,
            },
        };
        let o = PloopObservation {
            check: p.check.clone(),
            check_last: None,
            cbt: p.cbt.clone(),
            cbt_words: vec![],
            mount: p.mount.clone(),
        };
        (p, o)
    }

    #[test]
    fn each_field_that_differs_is_one_typed_disagreement() {
        let (p, o) = agreeing();
        assert_eq!(differences(&p, &o), vec![]);
        let mut other = o.clone();
        other.mount.message = Some("Drop optional header".into());
        other.mount.inuse = 0;
        let d = differences(&p, &other);
        assert_eq!(
            d,
            vec![
                PloopDisagreement {
                    field: PloopField::MountInuse,
                    predicted: "0x312e3276".into(),
                    observed: "0x0".into()
                },
                PloopDisagreement {
                    field: PloopField::MountMessage,
                    predicted: "None".into(),
                    observed: "Some(\"Drop optional header\")".into()
                },
            ]
        );
        assert_eq!(d[0].to_string(), "mount inuse: predicted 0x312e3276, ploop 0x0");
    }

    #[test]
    fn a_heap_overrun_agrees_with_either_signal_but_not_with_an_exit() {
        let (mut p, mut o) = agreeing();
        p.check = PloopCheck {
            rc: None,
            messages: vec!["BAT is too big".into(), HEAP_OVERRUN.into()],
            messages_omitted: 0,
        };
        o.check.rc = None;
        o.check.messages = vec!["something else".into(), "SIGSEGV".into()];
        o.check_last = Some("SIGSEGV".into());
        assert_eq!(differences(&p, &o), vec![]);
        o.check.rc = Some(11);
        o.check_last = Some("FATAL".into());
        let fields: Vec<PloopField> = differences(&p, &o).iter().map(|d| d.field).collect();
        assert_eq!(fields, [PloopField::CheckRc, PloopField::CheckMessages]);
    }

    #[test]
    fn the_summary_and_dump_parsers_take_what_the_drivers_print() {
        assert_eq!(
            summary_rc("CHECK rc=11 blocksize=128 cbt_allowed=1", "CHECK rc="),
            Some(11)
        );
        assert_eq!(summary_rc("CHECK rc=x", "CHECK rc="), None);
        assert_eq!(
            strip_prefix("Error in ploop_check (check.c:123): Block 1 is used"),
            "Block 1 is used"
        );
        let dump: Vec<String> = ["Size: 8", "<0>", "00000000 1 ff", "<3> 1", "not a row"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse_words(&dump), Some(vec![(0, vec![1, 0xff]), (3, vec![1])]));
        let bad: Vec<String> = ["<x>"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_words(&bad), None);
    }
}
