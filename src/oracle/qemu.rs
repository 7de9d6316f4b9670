//! `qemu-img info` and `qemu-img check` (read-only, `-f parallels --output=json`) and how what
//! they did compares with [`crate::qemu::predict`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{on_path, run, End, OracleError, Run, RunOptions};
use crate::qemu::{Prediction, QemuCheck, QemuOutcome, Version, MAX_ERROR_LINES};

/// The `qemu-img` program, and the QEMU version it is predicted as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuImg {
    program: PathBuf,
    version: Version,
}

/// A folder of QEMU tools (`qemu-img` …) and their version, found by `qemu-img --version`: the
/// 10.0.2 tools on `PATH`, or another build beside them, such as Debian 12's 7.2 package
/// unpacked with `dpkg -x` (`.ci/run` puts it in `~/.cache/qemu-7.2/usr/bin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuTools {
    /// The folder holding `qemu-img`.
    pub dir: PathBuf,
    /// Its version.
    pub version: Version,
}

/// Where `.ci/run` unpacks QEMU 7.2's tools: `$QEMU_7_2_DIR`, else `~/.cache/qemu-7.2/usr/bin`.
pub fn qemu_7_2_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("QEMU_7_2_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/qemu-7.2/usr/bin"))
}

impl QemuTools {
    /// The tools in `dir`, their version read from `qemu-img --version` (which must name a
    /// [`Version`] this crate predicts).
    pub fn detect(dir: impl Into<PathBuf>) -> Result<QemuTools, OracleError> {
        let dir = dir.into();
        let program = dir.join("qemu-img");
        let run = run(
            &program,
            &[OsStr::new("--version")],
            &RunOptions::new(Duration::from_secs(30)),
        )?;
        let first = run.stdout.head.first().cloned().unwrap_or_default();
        match Version::from_banner(&first) {
            Some(version) if run.end == End::Exited(0) => Ok(QemuTools { dir, version }),
            _ => Err(OracleError::Unparsable {
                program: run.command.clone(),
                what: "a QEMU version this crate predicts (7.2 or 10.0)",
                text: run.stdout.text(),
            }),
        }
    }

    /// The tools on `PATH` (the folder of the first `qemu-img` there), if any.
    pub fn on_path() -> Option<Result<QemuTools, OracleError>> {
        let program = on_path("qemu-img")?;
        let dir = program.parent().map(Path::to_path_buf).unwrap_or_default();
        Some(QemuTools::detect(dir))
    }

    /// Its `qemu-img`, predicted as this version.
    pub fn qemu_img(&self) -> QemuImg {
        QemuImg::new(self.dir.join("qemu-img")).with_version(self.version)
    }
}

/// Which `qemu-img` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuTool {
    /// `qemu-img info`.
    Info,
    /// `qemu-img check`.
    Check,
}

impl QemuTool {
    /// `"info"` or `"check"`.
    pub fn name(self) -> &'static str {
        match self {
            QemuTool::Info => "info",
            QemuTool::Check => "check",
        }
    }
}

impl QemuImg {
    /// `program` as `qemu-img`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        QemuImg {
            program: program.into(),
            version: Version::default(),
        }
    }

    /// The same program, predicted as QEMU `version` ([`QemuTools::detect`] reads it from the
    /// program; [`QemuImg::new`] assumes 10.0).
    pub fn with_version(self, version: Version) -> Self {
        QemuImg { version, ..self }
    }

    /// The QEMU version its runs are compared with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// `qemu-img` from `PATH`, if it is there.
    pub fn find() -> Option<Self> {
        on_path("qemu-img").map(QemuImg::new)
    }

    /// The program run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// `qemu-img TOOL -f parallels --output=json IMAGE`: QEMU opens the image read-only
    /// (`check` without `-r` repairs nothing). Standard error keeps its first
    /// [`MAX_ERROR_LINES`] lines (the ones a [`crate::qemu::CheckCounts`] keeps).
    pub fn run(&self, tool: QemuTool, image: &Path, timeout: Duration) -> Result<Run, OracleError> {
        let args = [
            OsStr::new(tool.name()),
            OsStr::new("-f"),
            OsStr::new("parallels"),
            OsStr::new("--output=json"),
            image.as_os_str(),
        ];
        let options = RunOptions {
            timeout,
            keep_lines: MAX_ERROR_LINES,
            merge: false,
        };
        run(&self.program, &args, &options)
    }

    /// `qemu-img info` of `image` ([`QemuImg::run`]).
    pub fn info(&self, image: &Path, timeout: Duration) -> Result<Run, OracleError> {
        self.run(QemuTool::Info, image, timeout)
    }

    /// `qemu-img check` of `image` ([`QemuImg::run`]).
    pub fn check(&self, image: &Path, timeout: Duration) -> Result<Run, OracleError> {
        self.run(QemuTool::Check, image, timeout)
    }
}

/// What QEMU did, as a disagreement shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Seen {
    /// How it ended.
    pub end: End,
    /// The first lines of standard error.
    pub stderr: Vec<String>,
    /// How many more lines of standard error there were.
    pub stderr_omitted: u64,
}

impl Seen {
    fn of(run: &Run) -> Self {
        Seen {
            end: run.end,
            stderr: run.stderr.head.clone(),
            stderr_omitted: run.stderr.omitted(),
        }
    }
}

/// The figures of a `qemu-img check` report compared as one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckFigures {
    /// Exit status.
    pub exit: i32,
    /// `corruptions`.
    pub corruptions: u64,
    /// `leaks`.
    pub leaks: u64,
    /// `check-errors`.
    pub check_errors: u64,
    /// `image-end-offset`.
    pub image_end_offset: u64,
    /// `total-clusters`.
    pub total_clusters: u64,
    /// `allocated-clusters`.
    pub allocated_clusters: u64,
    /// `fragmented-clusters`.
    pub fragmented_clusters: u64,
}

/// One way QEMU did not do what was predicted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum QemuDisagreement {
    /// The run was still going at the timeout (nothing predicts a hang).
    TimedOut {
        /// Which command.
        tool: QemuTool,
        /// The timeout.
        limit: Duration,
    },
    /// `qemu-img info` ended otherwise, or printed other lines on standard error.
    Info {
        /// The exit status predicted (128 + signal for a crash).
        exit: i32,
        /// The standard error predicted.
        stderr: Vec<String>,
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img info` succeeded without printing JSON.
    InfoNotJson {
        /// Its standard output (the lines kept).
        stdout: String,
    },
    /// `qemu-img check`'s open was predicted to fail so (the message of `info`'s).
    CheckOpen {
        /// The exit status predicted.
        exit: i32,
        /// The standard error predicted.
        stderr: Vec<String>,
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img check` was predicted to fail with `Check failed: Device or resource busy`.
    CheckBusy {
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img check` was predicted to abort on this assertion (exit 134).
    CheckAborts {
        /// The last line predicted: `qemu-img: ASSERTION`.
        last: String,
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img check` was predicted to report, and printed no JSON.
    CheckNotJson {
        /// The exit status predicted.
        exit: i32,
        /// Its standard output (the lines kept).
        stdout: String,
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img check`'s report differs.
    CheckFigures {
        /// Predicted.
        predicted: CheckFigures,
        /// QEMU's.
        observed: CheckFigures,
        /// What QEMU did.
        seen: Seen,
    },
    /// `qemu-img check`'s ERROR lines differ.
    CheckErrors {
        /// The first lines predicted.
        predicted: Vec<String>,
        /// How many more were predicted.
        predicted_omitted: u64,
        /// What QEMU did.
        seen: Seen,
    },
}

impl QemuDisagreement {
    /// The command it is about.
    pub fn tool(&self) -> QemuTool {
        match self {
            QemuDisagreement::TimedOut { tool, .. } => *tool,
            QemuDisagreement::Info { .. } | QemuDisagreement::InfoNotJson { .. } => QemuTool::Info,
            _ => QemuTool::Check,
        }
    }

    /// A short name of its kind (`"timed_out"`, `"info"`, `"check_figures"`, …) as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            QemuDisagreement::TimedOut { .. } => "timed_out",
            QemuDisagreement::Info { .. } => "info",
            QemuDisagreement::InfoNotJson { .. } => "info_not_json",
            QemuDisagreement::CheckOpen { .. } => "check_open",
            QemuDisagreement::CheckBusy { .. } => "check_busy",
            QemuDisagreement::CheckAborts { .. } => "check_aborts",
            QemuDisagreement::CheckNotJson { .. } => "check_not_json",
            QemuDisagreement::CheckFigures { .. } => "check_figures",
            QemuDisagreement::CheckErrors { .. } => "check_errors",
        }
    }
}

fn status(end: End) -> String {
    end.shell_status()
        .map_or_else(|| "timed out".to_string(), |c| format!("exit {c}"))
}

impl std::fmt::Display for QemuDisagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let qemu = |s: &Seen| {
            format!(
                "QEMU {} stderr {:?}{}",
                status(s.end),
                s.stderr,
                if s.stderr_omitted > 0 {
                    format!(" (+{} more)", s.stderr_omitted)
                } else {
                    String::new()
                }
            )
        };
        match self {
            QemuDisagreement::TimedOut { tool, limit } => {
                write!(f, "{}: still running after {limit:?} (killed)", tool.name())
            }
            QemuDisagreement::Info { exit, stderr, seen } => {
                write!(f, "info: predicted exit {exit} stderr {stderr:?}, {}", qemu(seen))
            }
            QemuDisagreement::InfoNotJson { stdout } => write!(f, "info: exit 0 without JSON: {stdout}"),
            QemuDisagreement::CheckOpen { exit, stderr, seen } => write!(
                f,
                "check: predicted open failure exit {exit} stderr {stderr:?}; {}",
                qemu(seen)
            ),
            QemuDisagreement::CheckBusy { seen } => write!(
                f,
                "check: predicted 'Check failed: Device or resource busy'; {}",
                qemu(seen)
            ),
            QemuDisagreement::CheckAborts { last, seen } => {
                write!(f, "check: predicted abort {last:?}; {}", qemu(seen))
            }
            QemuDisagreement::CheckNotJson { exit, stdout, seen } => write!(
                f,
                "check: predicted a report (exit {exit}), got no JSON {stdout:?}; {}",
                qemu(seen)
            ),
            QemuDisagreement::CheckFigures {
                predicted,
                observed,
                seen,
            } => write!(f, "check: predicted {predicted:?}, QEMU {observed:?}; {}", qemu(seen)),
            QemuDisagreement::CheckErrors {
                predicted,
                predicted_omitted,
                seen,
            } => write!(
                f,
                "check: predicted ERROR lines {predicted:?} (+{predicted_omitted} more); {}",
                qemu(seen)
            ),
        }
    }
}

/// Where `qemu-img info`'s run differs from the prediction, if it does. A timeout always
/// does; otherwise an [`QemuOutcome::Undefined`] prediction (QEMU reads past its buffer) has
/// nothing to compare.
pub fn info_disagreement(predicted: &QemuOutcome, run: &Run, path: &str) -> Option<QemuDisagreement> {
    if run.end == End::TimedOut {
        return Some(QemuDisagreement::TimedOut {
            tool: QemuTool::Info,
            limit: run.elapsed,
        });
    }
    let exit = predicted.exit_code()?;
    let stderr: Vec<String> = predicted.stderr_line(path).into_iter().collect();
    if run.end.shell_status() != Some(exit) || !run.stderr.is_complete() || run.stderr.head != stderr {
        return Some(QemuDisagreement::Info {
            exit,
            stderr,
            seen: Seen::of(run),
        });
    }
    if exit == 0 && !(run.stdout.is_complete() && serde_json::from_str::<serde_json::Value>(&run.stdout.text()).is_ok())
    {
        return Some(QemuDisagreement::InfoNotJson {
            stdout: run.stdout.text(),
        });
    }
    None
}

/// A counter of `qemu-img check --output=json` (an absent key is 0).
fn field(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Where `qemu-img check`'s run differs from the prediction, if it does (a timeout always does).
pub fn check_disagreement(predicted: &QemuCheck, run: &Run, path: &str) -> Option<QemuDisagreement> {
    if run.end == End::TimedOut {
        return Some(QemuDisagreement::TimedOut {
            tool: QemuTool::Check,
            limit: run.elapsed,
        });
    }
    let seen = || Seen::of(run);
    let code = run.end.shell_status();
    match predicted {
        QemuCheck::OpenFails(o) => {
            let exit = o.exit_code()?;
            let stderr: Vec<String> = o.stderr_line(path).into_iter().collect();
            if code != Some(exit) || !run.stderr.is_complete() || run.stderr.head != stderr || !run.stdout.is_empty() {
                return Some(QemuDisagreement::CheckOpen {
                    exit,
                    stderr,
                    seen: seen(),
                });
            }
        }
        QemuCheck::Fails => {
            if code != Some(1) || run.stderr.last() != Some("qemu-img: Check failed: Device or resource busy") {
                return Some(QemuDisagreement::CheckBusy { seen: seen() });
            }
        }
        QemuCheck::Aborts { assertion } => {
            let last = format!("qemu-img: {assertion}");
            if code != Some(134) || run.stderr.last() != Some(last.as_str()) {
                return Some(QemuDisagreement::CheckAborts { last, seen: seen() });
            }
        }
        QemuCheck::Completes(c) => {
            let exit = predicted.exit_code().unwrap_or(0);
            let json = if run.stdout.is_complete() {
                serde_json::from_str::<serde_json::Value>(&run.stdout.text()).ok()
            } else {
                None
            };
            let Some(v) = json else {
                return Some(QemuDisagreement::CheckNotJson {
                    exit,
                    stdout: run.stdout.text(),
                    seen: seen(),
                });
            };
            let observed = CheckFigures {
                exit: code.unwrap_or(-1),
                corruptions: field(&v, "corruptions"),
                leaks: field(&v, "leaks"),
                check_errors: field(&v, "check-errors"),
                image_end_offset: field(&v, "image-end-offset"),
                total_clusters: field(&v, "total-clusters"),
                allocated_clusters: field(&v, "allocated-clusters"),
                fragmented_clusters: field(&v, "fragmented-clusters"),
            };
            let want = CheckFigures {
                exit,
                corruptions: c.corruptions,
                leaks: c.leaks,
                check_errors: 0,
                image_end_offset: c.image_end_offset,
                total_clusters: c.total_clusters,
                allocated_clusters: c.allocated_clusters,
                fragmented_clusters: c.fragmented_clusters,
            };
            if observed != want {
                return Some(QemuDisagreement::CheckFigures {
                    predicted: want,
                    observed,
                    seen: seen(),
                });
            }
            // The head holds the first MAX_ERROR_LINES lines, as the prediction does.
            let same_lines = run.stderr.head.len() == c.errors.len()
                && run
                    .stderr
                    .head
                    .iter()
                    .zip(&c.errors)
                    .all(|(seen, line)| *seen == line.to_string());
            if !same_lines || run.stderr.omitted() != c.errors_omitted {
                return Some(QemuDisagreement::CheckErrors {
                    predicted: c.errors.iter().map(ToString::to_string).collect(),
                    predicted_omitted: c.errors_omitted,
                    seen: seen(),
                });
            }
        }
    }
    None
}

/// Every way the runs of `qemu-img info` and `check` on the image at `path` (as it was given
/// to them) differ from `prediction` (empty: QEMU did what was predicted).
pub fn disagreements(prediction: &Prediction, info: &Run, check: &Run, path: &str) -> Vec<QemuDisagreement> {
    info_disagreement(&prediction.info, info, path)
        .into_iter()
        .chain(check_disagreement(&prediction.check, check, path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::Output;
    use crate::qemu::{CheckCounts, CheckLine, QemuReason};

    fn run(end: End, stdout: &[&str], stderr: &[&str]) -> Run {
        let out = |l: &[&str]| Output {
            head: l.iter().map(|s| s.to_string()).collect(),
            tail: Vec::new(),
            lines: l.len() as u64,
            cut: false,
        };
        Run {
            command: "qemu-img".into(),
            end,
            stdout: out(stdout),
            stderr: out(stderr),
            elapsed: Duration::from_millis(5),
        }
    }

    fn rejects(message: &str) -> QemuOutcome {
        QemuOutcome::Rejects {
            reason: QemuReason::ExtensionChecksum,
            message: message.into(),
        }
    }

    #[test]
    fn another_message_is_an_info_disagreement_with_both_texts() {
        let r = run(
            End::Exited(1),
            &[],
            &["qemu-img: Could not open 'a.hds': Something else"],
        );
        let d = info_disagreement(&rejects("Wrong checksum"), &r, "a.hds").unwrap();
        assert_eq!(
            d,
            QemuDisagreement::Info {
                exit: 1,
                stderr: vec!["qemu-img: Could not open 'a.hds': Wrong checksum".into()],
                seen: Seen {
                    end: End::Exited(1),
                    stderr: vec!["qemu-img: Could not open 'a.hds': Something else".into()],
                    stderr_omitted: 0
                }
            }
        );
        assert_eq!(
            d.to_string(),
            "info: predicted exit 1 stderr [\"qemu-img: Could not open 'a.hds': Wrong checksum\"], QEMU exit 1 \
             stderr [\"qemu-img: Could not open 'a.hds': Something else\"]"
        );
        let same = run(
            End::Exited(1),
            &[],
            &["qemu-img: Could not open 'a.hds': Wrong checksum"],
        );
        assert_eq!(info_disagreement(&rejects("Wrong checksum"), &same, "a.hds"), None);
    }

    #[test]
    fn a_crash_an_abort_and_a_timeout_are_told_apart_from_a_prediction() {
        let opens = QemuOutcome::Opens { bitmaps: vec![] };
        let segv = run(End::Signalled(11), &[], &[]);
        assert_eq!(info_disagreement(&opens, &segv, "a").map(|d| d.kind()), Some("info"));
        let crash = QemuOutcome::Crashes {
            reason: QemuReason::OverRead,
            signal: 11,
        };
        assert_eq!(info_disagreement(&crash, &segv, "a"), None);
        let hung = run(End::TimedOut, &[], &[]);
        assert_eq!(
            info_disagreement(&opens, &hung, "a"),
            Some(QemuDisagreement::TimedOut {
                tool: QemuTool::Info,
                limit: Duration::from_millis(5)
            })
        );
        // Exit 0 with no JSON is its own disagreement, the text kept.
        assert_eq!(
            info_disagreement(&opens, &run(End::Exited(0), &["{ not json"], &[]), "a"),
            Some(QemuDisagreement::InfoNotJson {
                stdout: "{ not json".into()
            })
        );
        let abort = QemuCheck::Aborts {
            assertion: "x.c:1: f: Assertion `0' failed.".into(),
        };
        let aborted = run(
            End::Signalled(6),
            &[],
            &["ERROR a", "qemu-img: x.c:1: f: Assertion `0' failed."],
        );
        assert_eq!(check_disagreement(&abort, &aborted, "a"), None);
        assert_eq!(
            check_disagreement(&abort, &run(End::Exited(0), &["{}"], &[]), "a").map(|d| d.kind()),
            Some("check_aborts")
        );
    }

    #[test]
    fn other_check_figures_and_error_lines_are_check_disagreements() {
        let counts = CheckCounts {
            corruptions: 1,
            image_end_offset: 4096,
            total_clusters: 16,
            allocated_clusters: 1,
            errors: vec![CheckLine::Outside { index: 3 }],
            ..CheckCounts::default()
        };
        let pred = QemuCheck::Completes(counts);
        let json = r#"{"corruptions": 1, "image-end-offset": 4096, "total-clusters": 16, "allocated-clusters": 1}"#;
        let good = run(End::Exited(2), &[json], &["ERROR cluster 3 is outside image"]);
        assert_eq!(check_disagreement(&pred, &good, "a"), None);
        let other_line = run(End::Exited(2), &[json], &["ERROR cluster 4 is outside image"]);
        assert_eq!(
            check_disagreement(&pred, &other_line, "a"),
            Some(QemuDisagreement::CheckErrors {
                predicted: vec!["ERROR cluster 3 is outside image".into()],
                predicted_omitted: 0,
                seen: Seen {
                    end: End::Exited(2),
                    stderr: vec!["ERROR cluster 4 is outside image".into()],
                    stderr_omitted: 0
                }
            })
        );
        let leaks = r#"{"corruptions": 1, "leaks": 2, "image-end-offset": 4096, "total-clusters": 16, "allocated-clusters": 1}"#;
        let Some(QemuDisagreement::CheckFigures {
            predicted, observed, ..
        }) = check_disagreement(&pred, &run(End::Exited(2), &[leaks], &[]), "a")
        else {
            panic!("not a figures disagreement")
        };
        assert_eq!((predicted.leaks, observed.leaks, observed.exit), (0, 2, 2));
    }
}
