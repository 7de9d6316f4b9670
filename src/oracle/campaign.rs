//! A differential campaign (`prlimg differential`). Each case — a structure-aware variant of a
//! base image (by seed) or an image file given — goes to the real programs (`qemu-img info` and
//! `check`, read-only; the ploop oracle's drivers; libphdi and dissect.hypervisor when asked),
//! whose outcome is compared with the prediction ([`Oracles::examine_knowing`]). Cases run in
//! parallel; every case that disagrees, times out, fails, or where a program crashed or aborted
//! is kept in the output folder (its image and a JSON file with its edits, the prediction and
//! what was seen), and the whole campaign is summed up in a [`CampaignReport`] (`report.json`,
//! and one line for people).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::ploop::PloopDrivers;
use super::qemu::QemuTools;
use super::readers::{differences as reader_differences, Reader, RealReader};
use super::{Examination, OracleError, Oracles, Run, Verdict};
use crate::mutate::{Edit, MutateOptions, Mutator};
use crate::outfile::write_file_atomically;
use crate::readers::{dissect::predict_dissect_with, libphdi::predict_libphdi_with, Truth, READ_SIZE};

/// The report's schema version.
pub const SCHEMA: u32 = 1;

/// One case to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Case {
    /// The variant of the base for `seed`, a case of the campaign seed `campaign`.
    Variant {
        /// The campaign seed (`--seed`): its case i has seed `campaign + i`.
        campaign: u64,
        /// The variant's seed.
        seed: u64,
    },
    /// An image file, run as it is.
    File(PathBuf),
}

/// What a campaign runs and where it keeps what it finds.
pub struct Campaign {
    /// The programs run.
    pub oracles: Oracles,
    /// The real libphdi and dissect.hypervisor asked for.
    pub readers: Vec<RealReader>,
    /// The image varied and its name for the report (`"built-in"`, a path, `"recipe PATH"`);
    /// `None` when files are run as they are.
    pub base: Option<(String, Vec<u8>)>,
    /// The campaign seeds (with the fresh one, if any).
    pub seeds: Vec<u64>,
    /// The seed drawn for this campaign, if one was.
    pub fresh_seed: Option<u64>,
    /// Variants per seed.
    pub count: u64,
    /// How variants are made.
    pub options: MutateOptions,
    /// The paths given (files or folders), as the report names them.
    pub paths: Vec<PathBuf>,
    /// The image files to run when no base is varied (the paths, folders walked).
    pub files: Vec<PathBuf>,
    /// Cases run at once (`None`: the CPUs).
    pub jobs: Option<usize>,
    /// The folder for kept cases and `report.json`.
    pub out: PathBuf,
    /// Replace files of the same names in `out`.
    pub force: bool,
}

/// Why a campaign could not run.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The output folder could not be made or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// A file a campaign writes is in the output folder already (and `force` is off).
    #[error("{}: exists; nothing was run (use --force to replace, or another folder)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// No scratch folder could be made.
    #[error("a scratch folder: {0}")]
    Scratch(#[source] io::Error),
    /// The worker threads could not be started.
    #[error("threads: {0}")]
    Threads(String),
}

/// The counts of a campaign's cases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Cases per verdict name (`"agrees"`, `"disagrees"`, `"timed_out"`, `"failed"`).
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Cases where a program crashed or aborted.
    pub crashed: u64,
    /// Cases kept in the output folder.
    pub kept: u64,
    /// Per program, how often each outcome (`"exit 0"`, `"timeout"`, `"rc 5"`...).
    pub outcomes: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// How often each kind of disagreement (`"qemu check_leaks"`, `"ploop error"`...).
    pub disagreements: BTreeMap<String, u64>,
    /// The time each program ran, over all cases.
    pub run_time: BTreeMap<&'static str, Duration>,
}

impl Summary {
    fn add(&mut self, d: &Done) {
        *self.verdicts.entry(d.verdict.name()).or_default() += 1;
        self.crashed += u64::from(d.crashed);
        self.kept += u64::from(d.kept);
        for (program, what) in &d.outcomes {
            *self
                .outcomes
                .entry(program)
                .or_default()
                .entry(what.clone())
                .or_default() += 1;
        }
        for what in &d.disagreements {
            *self.disagreements.entry(what.clone()).or_default() += 1;
        }
        for (program, t) in &d.run_time {
            *self.run_time.entry(program).or_default() += *t;
        }
    }

    /// The cases of the verdict named `name`.
    pub fn count(&self, name: &str) -> u64 {
        self.verdicts.get(name).copied().unwrap_or(0)
    }
}

/// A whole campaign: what it ran and the counts (`report.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignReport {
    /// The base's name; `None` when files were run.
    pub base: Option<String>,
    /// The paths given.
    pub paths: Vec<String>,
    /// The campaign seeds (none when files were run).
    pub seeds: Vec<u64>,
    /// The seed drawn for this campaign, if one was.
    pub fresh_seed: Option<u64>,
    /// Variants per seed (`None` when files were run).
    pub count_per_seed: Option<u64>,
    /// Edits per variant, at least and at most.
    pub edits: [usize; 2],
    /// The `qemu-img` run, its version's name, and the ploop drivers' folder.
    pub programs: [Option<String>; 3],
    /// Cases run at once.
    pub jobs: usize,
    /// The timeout of each program run.
    pub timeout: Duration,
    /// Cases run.
    pub cases: u64,
    /// Their counts.
    pub summary: Summary,
    /// The campaign's time.
    pub wall: Duration,
    /// The output folder.
    pub out: PathBuf,
}

impl CampaignReport {
    /// Whether every case agreed with the prediction (predicted crashes included).
    pub fn all_agree(&self) -> bool {
        self.summary.count("agrees") == self.cases
    }

    /// The report as `report.json` holds it.
    pub fn to_json(&self) -> Value {
        let (s, n, wall) = (&self.summary, self.cases, self.wall);
        let [qemu, qemu_version, ploop] = &self.programs;
        json!({
            "schema": SCHEMA,
            "base": self.base,
            "paths": self.paths,
            "seeds": self.seeds,
            "fresh_seed": self.fresh_seed,
            "count_per_seed": self.count_per_seed,
            "edits": self.edits,
            "programs": { "qemu": qemu, "qemu_version": qemu_version, "ploop": ploop },
            "jobs": self.jobs,
            "timeout_seconds": self.timeout.as_secs_f64(),
            "cases": n,
            "verdicts": s.verdicts,
            "crashed": s.crashed,
            "kept": s.kept,
            "outcomes": s.outcomes,
            "disagreements": s.disagreements,
            "seconds": wall.as_secs_f64(),
            "cases_per_second": if wall.is_zero() { 0.0 } else { n as f64 / wall.as_secs_f64() },
            "run_seconds": s.run_time.iter().map(|(k, d)| (k.to_string(), d.as_secs_f64())).collect::<BTreeMap<_, _>>(),
        })
    }

    /// `report.json`: the JSON, pretty, and a newline.
    pub fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(&self.to_json()).map_err(io::Error::other)?;
        text.push('\n');
        w.write_all(text.as_bytes())
    }

    /// One line for people: the cases, the time, each verdict's count, the crashes, what was kept.
    pub fn write_human(&self, w: &mut dyn Write) -> io::Result<()> {
        let (s, n, secs) = (&self.summary, self.cases, self.wall.as_secs_f64());
        writeln!(
            w,
            "{n} cases in {secs:.1} s ({:.1}/s, {} jobs): {} agree, {} disagree, {} timed out, {} failed; {} crashed; {} kept in {}",
            n as f64 / secs.max(1e-9),
            self.jobs,
            s.count("agrees"),
            s.count("disagrees"),
            s.count("timed_out"),
            s.count("failed"),
            s.crashed,
            s.kept,
            self.out.display()
        )
    }
}

/// What one case left for the report.
struct Done {
    verdict: Verdict,
    crashed: bool,
    kept: bool,
    outcomes: Vec<(&'static str, String)>,
    disagreements: Vec<String>,
    run_time: Vec<(&'static str, Duration)>,
}

/// The scratch folder of the campaign running, for [`abandon`].
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// For a signal handler, before the process dies: kills the programs running (they run in
/// their own process groups, out of the terminal's reach) and removes the scratch folder.
pub fn abandon() {
    super::kill_running();
    if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A seed nobody chose: the process's hash keys mixed with the clock.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// Creates `out` if missing (held: [`crate::outfile::abandon_outputs`] removes it whole if the
/// run is interrupted before the caller's [`crate::outfile::release_output_folder`], once
/// `report.json` is written) and, without `force`, refuses it when it holds a file a campaign
/// writes (`case-*`, `report.json`).
pub fn prepare(out: &Path, force: bool) -> Result<(), CampaignError> {
    let io = |source| CampaignError::Io {
        path: out.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(out).is_err() {
        crate::outfile::hold_output_folder(out).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    }
    std::fs::create_dir_all(out).map_err(io)?;
    if force {
        return Ok(());
    }
    for entry in std::fs::read_dir(out).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "report.json" || name.starts_with("case-") {
            return Err(CampaignError::Exists { path: entry.path() });
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    write_file_atomically(path, force, |f| Ok(f.write_all(bytes)?)).map_err(|e| format!("{}: {e}", path.display()))
}

impl Campaign {
    /// The cases: each seed's `count` variants, or the files.
    pub fn cases(&self) -> Vec<Case> {
        if self.base.is_none() {
            return self.files.iter().cloned().map(Case::File).collect();
        }
        let count = self.count;
        let variants = |campaign: u64| {
            (0..count).map(move |i| Case::Variant {
                campaign,
                seed: campaign.wrapping_add(i),
            })
        };
        self.seeds.iter().flat_map(|&c| variants(c)).collect()
    }

    /// Runs `cases` in a scratch folder (removed at the end), keeping in [`Campaign::out`] the
    /// cases that must be; `done` is told of each case finished, `note` of each case that could
    /// not be run or kept (one line, naming the case). The output folder must have been
    /// [`prepare`]d. `report.json` is the caller's to write.
    pub fn run(
        &self,
        cases: &[Case],
        done: &(dyn Fn() + Sync),
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<CampaignReport, CampaignError> {
        let scratch = tempfile::Builder::new()
            .prefix("prlimg-differential")
            .tempdir()
            .map_err(CampaignError::Scratch)?;
        *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(scratch.path().to_path_buf());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.jobs.unwrap_or(0))
            .build()
            .map_err(|e| CampaignError::Threads(e.to_string()))?;
        let jobs = pool.current_num_threads();
        let summary = Mutex::new(Summary::default());
        let start = Instant::now();
        // Each worker takes the next case when it is done with one, in order: a long case (a 2
        // GiB extension cluster, hashed for seconds by every program) holds up its worker alone.
        // (A parallel iterator hands out runs of cases, and a run that holds a long case can
        // leave the other CPUs idle for seconds at the end.)
        let next = AtomicUsize::new(0);
        pool.scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|_| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let d = self.one(i, case, scratch.path(), note);
                    summary.lock().unwrap_or_else(|e| e.into_inner()).add(&d);
                    done();
                });
            }
        });
        let generated = self.base.is_some();
        Ok(CampaignReport {
            base: self.base.as_ref().map(|(name, _)| name.clone()),
            paths: self.paths.iter().map(|p| p.display().to_string()).collect(),
            seeds: if generated { self.seeds.clone() } else { Vec::new() },
            fresh_seed: self.fresh_seed,
            count_per_seed: generated.then_some(self.count),
            edits: [*self.options.edits.start(), *self.options.edits.end()],
            programs: [
                self.oracles.qemu.as_ref().map(|q| q.program().display().to_string()),
                self.oracles.qemu.as_ref().map(|q| q.version().name().to_string()),
                self.oracles.ploop.as_ref().map(|p| p.dir().display().to_string()),
            ],
            jobs,
            timeout: self.oracles.timeout,
            cases: cases.len() as u64,
            summary: summary.into_inner().unwrap_or_else(|e| e.into_inner()),
            wall: start.elapsed(),
            out: self.out.clone(),
        })
    }

    /// Runs one case in `scratch`: writes it (a variant), examines it, keeps it when it must be.
    fn one(&self, index: usize, case: &Case, scratch: &Path, note: &(dyn Fn(&str) + Sync)) -> Done {
        let name = format!("case-{index:06}");
        let failed = |why: String| {
            note(&format!("{name}: {why}"));
            Done {
                verdict: Verdict::Failed,
                crashed: false,
                kept: false,
                outcomes: Vec::new(),
                disagreements: vec!["could not run".into()],
                run_time: Vec::new(),
            }
        };
        let (path, label, edits, digest) = match case {
            Case::Variant { campaign, seed } => {
                let base = self.base.as_ref().map_or(&[][..], |(_, bytes)| bytes);
                let m = match Mutator::new(base, self.options.clone()) {
                    Ok(m) => m.mutant(*seed),
                    Err(e) => return failed(format!("the base: {e}")),
                };
                let path = scratch.join(format!("{name}.hds"));
                if let Err(e) = std::fs::write(&path, &m.bytes) {
                    return failed(format!("{}: {e}", path.display()));
                }
                let label = json!({ "index": index, "campaign_seed": campaign, "seed": seed, "checksum": m.checksum });
                // The file holds the bytes the mutator hashed: the predictions need not hash them again.
                (path, label, Some(m.edits), m.digest)
            }
            Case::File(p) => {
                let label = json!({ "index": index, "file": p.display().to_string() });
                (p.clone(), label, None, None)
            }
        };
        let copy = scratch.join(format!("{name}.mount.hds"));
        let done = match self.oracles.examine_knowing(&path, &copy, digest.as_ref()) {
            Err(e) => failed(format!("{}: {e}", path.display())),
            Ok(e) => {
                let (mut done, readers) = self.compare(&e, &path);
                if done.kept {
                    let mut record = case_json(&label, edits.as_deref(), &e, &path.display().to_string());
                    for (name, r) in readers {
                        record[name] = r;
                    }
                    if let Err(why) = self.keep(&name, &path, &record) {
                        note(&format!("keeping {name}: {why}"));
                        done.verdict = Verdict::Failed;
                        done.disagreements.push("keeping the case failed".into());
                    }
                }
                done
            }
        };
        if let Case::Variant { .. } = case {
            let _ = std::fs::remove_file(&path);
        }
        done
    }

    /// The case's verdict and counts, the readers (run here) included, with their records.
    fn compare(&self, e: &Examination, path: &Path) -> (Done, Vec<(&'static str, Value)>) {
        let crashed = e.crashed();
        let mut done = Done {
            verdict: e.verdict(),
            crashed,
            kept: e.verdict() != Verdict::Agrees || crashed,
            outcomes: outcomes(e),
            disagreements: disagreements(e),
            run_time: run_times(e),
        };
        let mut records = Vec::new();
        if self.readers.is_empty() {
            return (done, records);
        }
        let truth = Truth::of(path);
        for real in &self.readers {
            let name = real.reader().name();
            let predicted = match real.reader() {
                Reader::Libphdi => predict_libphdi_with(path, truth.as_ref(), READ_SIZE),
                Reader::Dissect => predict_dissect_with(path, truth.as_ref(), READ_SIZE),
            };
            let started = Instant::now();
            let observed = real.observe(path, truth.as_ref(), READ_SIZE, self.oracles.timeout);
            done.run_time.push((name, started.elapsed()));
            let record = match &observed {
                Ok(o) => {
                    let diffs = reader_differences(&predicted, o);
                    done.outcomes.push((name, o.outcome.outcome.name().to_string()));
                    if !diffs.is_empty() {
                        done.verdict = Verdict::Disagrees;
                        done.kept = true;
                        done.disagreements
                            .extend(diffs.iter().map(|d| format!("{name} {}", d.field)));
                    }
                    json!({
                        "predicted": predicted,
                        "observed": o.outcome,
                        "disagreements_text": diffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                }
                Err(err) => {
                    done.verdict = Verdict::Failed;
                    done.kept = true;
                    done.outcomes.push((name, "error".into()));
                    done.disagreements.push(format!("{name} error"));
                    json!({ "predicted": predicted, "observed": { "error": err.to_string() } })
                }
            };
            records.push((name, record));
        }
        (done, records)
    }

    /// Keeps the case: its image and its record, in the output folder.
    fn keep(&self, name: &str, path: &Path, record: &Value) -> Result<(), String> {
        let mut text = serde_json::to_string_pretty(record).unwrap_or_default();
        text.push('\n');
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        write(&self.out.join(format!("{name}.hds")), &bytes, self.force)?;
        write(&self.out.join(format!("{name}.json")), text.as_bytes(), self.force)
    }
}

/// The disagreements of the programs the oracles ran, in a few words each, for the counts.
fn disagreements(e: &Examination) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(q) = &e.qemu {
        out.extend(q.disagreements.iter().map(|d| format!("qemu {}", d.kind())));
        for (tool, r) in [("info", &q.info), ("check", &q.check)] {
            match r {
                Err(OracleError::TimedOut { .. }) => out.push(format!("qemu {tool} timed out")),
                Err(_) => out.push(format!("qemu {tool} error")),
                Ok(_) => {}
            }
        }
    }
    if let Some(p) = &e.ploop {
        out.extend(p.disagreements.iter().map(|d| format!("ploop {}", d.field.name())));
        match &p.observation {
            Err(OracleError::TimedOut { .. }) => out.push("ploop timed out".into()),
            Err(_) => out.push("ploop error".into()),
            Ok(_) => {}
        }
    }
    out
}

fn run_json(r: &Result<Run, OracleError>) -> Value {
    match r {
        Ok(r) => json!({
            "command": r.command,
            "end": r.end.label(),
            "seconds": r.elapsed.as_secs_f64(),
            "stdout": r.stdout.text(),
            "stderr": r.stderr.text(),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The record of a kept case.
fn case_json(label: &Value, edits: Option<&[Edit]>, e: &Examination, path: &str) -> Value {
    let mut v = json!({
        "case": label,
        "verdict": e.verdict().name(),
        "crashed": e.crashed(),
        "edits": edits,
    });
    if let Some(q) = &e.qemu {
        v["qemu"] = json!({
            "predicted": q.prediction.render(path),
            "info": run_json(&q.info),
            "check": run_json(&q.check),
            "disagreements": q.disagreements,
            "disagreements_text": q.disagreements.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
    }
    if let Some(p) = &e.ploop {
        v["ploop"] = json!({
            "predicted": p.prediction,
            "observed": match &p.observation {
                Ok(o) => serde_json::to_value(o).unwrap_or(Value::Null),
                Err(err) => json!({ "error": err.to_string() }),
            },
            "seconds": {
                "check": p.run_times.check.map(|d| d.as_secs_f64()),
                "cbt": p.run_times.cbt.map(|d| d.as_secs_f64()),
                "mount": p.run_times.mount.map(|d| d.as_secs_f64()),
            },
            "disagreements": p.disagreements,
            "disagreements_text": p.disagreements.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
    }
    v
}

/// What each program did, in a few words, for the report's counts.
fn outcomes(e: &Examination) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let end = |r: &Result<Run, OracleError>| match r {
        Ok(r) => r.end.label(),
        Err(OracleError::TimedOut { .. }) => "timeout".into(),
        Err(_) => "error".into(),
    };
    if let Some(q) = &e.qemu {
        out.push(("qemu-img info", end(&q.info)));
        out.push(("qemu-img check", end(&q.check)));
    }
    if let Some(p) = &e.ploop {
        match &p.observation {
            Ok(o) => {
                let check = o
                    .check
                    .rc
                    .map_or_else(|| o.check_last.clone().unwrap_or_default(), |rc| format!("rc {rc}"));
                out.push(("ploop check", check));
                out.push(("ploop cbt", o.cbt.outcome.name().to_string()));
                out.push(("ploop mount", o.mount.effect.name().to_string()));
            }
            Err(OracleError::TimedOut { .. }) => out.push(("ploop", "timeout".into())),
            Err(_) => out.push(("ploop", "error".into())),
        }
    }
    out
}

fn run_times(e: &Examination) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    if let Some(q) = &e.qemu {
        for (name, r) in [("qemu-img info", &q.info), ("qemu-img check", &q.check)] {
            if let Ok(r) = r {
                out.push((name, r.elapsed));
            }
        }
    }
    if let Some(p) = &e.ploop {
        out.extend(p.run_times.named());
    }
    out
}

/// The programs a campaign is asked to run (`prlimg differential --qemu ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `qemu-img` on `PATH`.
    pub qemu: bool,
    /// The QEMU tools in this folder instead (implies `qemu`).
    pub qemu_dir: Option<PathBuf>,
    /// The ploop drivers, from [`PloopDrivers::default_dir`].
    pub ploop: bool,
    /// The ploop drivers in this folder instead (implies `ploop`).
    pub ploop_dir: Option<PathBuf>,
    /// The real libphdi and dissect.hypervisor (from [`super::readers::default_venv`]). When
    /// nothing at all is asked for, QEMU and ploop both run, each if found.
    pub readers: Vec<Reader>,
}

/// Why the programs asked for cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// The folder given holds no QEMU tools that run.
    #[error("{}: --qemu-dir: {source}", dir.display())]
    QemuDir {
        /// The folder.
        dir: PathBuf,
        /// What running its `qemu-img --version` did.
        #[source]
        source: OracleError,
    },
    /// The `qemu-img` on `PATH` does not run.
    #[error("differential: qemu-img on PATH: {0}")]
    QemuOnPath(#[source] OracleError),
    /// QEMU was asked for and `qemu-img` is not on `PATH`.
    #[error("--qemu: qemu-img is not on PATH")]
    NoQemu,
    /// ploop was asked for and the folder lacks its drivers.
    #[error("{}: holds no ploop drivers (pcheck, pmount_sim): ../shared/oracles/ploop/build.sh builds them", dir.display())]
    NoPloop {
        /// The folder.
        dir: PathBuf,
    },
    /// A reader was asked for and its venv is missing.
    #[error("--{}: no venv at {} (scripts/readers/venv.sh makes it)", reader.name(), venv.display())]
    NoVenv {
        /// The reader.
        reader: Reader,
        /// Where its venv was looked for.
        venv: PathBuf,
    },
    /// Nothing was asked for, and neither QEMU nor ploop is there.
    #[error("differential: neither qemu-img nor the ploop drivers are available")]
    Nothing,
}

impl Wanted {
    /// The oracles asked for, each run with `timeout`, and the readers; `note` is told which QEMU
    /// runs and what is not run for want of its program.
    pub fn choose(&self, timeout: Duration, note: &dyn Fn(&str)) -> Result<(Oracles, Vec<RealReader>), ChoiceError> {
        let want_ploop = self.ploop || self.ploop_dir.is_some();
        let want_qemu = self.qemu || self.qemu_dir.is_some();
        let both = !want_qemu && !want_ploop && self.readers.is_empty();
        let qemu = if let Some(dir) = &self.qemu_dir {
            let tools = QemuTools::detect(dir).map_err(|source| ChoiceError::QemuDir {
                dir: dir.clone(),
                source,
            })?;
            Some(tools.qemu_img())
        } else if want_qemu || both {
            match QemuTools::on_path() {
                Some(Ok(tools)) => Some(tools.qemu_img()),
                Some(Err(e)) => return Err(ChoiceError::QemuOnPath(e)),
                None if want_qemu => return Err(ChoiceError::NoQemu),
                None => {
                    note("qemu-img is not on PATH: QEMU is not run");
                    None
                }
            }
        } else {
            None
        };
        if let Some(q) = &qemu {
            let v = q.version();
            note(&format!("QEMU {v} ({}), predicted as QEMU {v}", q.program().display()));
        }
        let ploop = match (want_ploop, &self.ploop_dir) {
            (true, dir) => {
                let dir = dir.clone().unwrap_or_else(PloopDrivers::default_dir);
                Some(PloopDrivers::at(&dir).ok_or(ChoiceError::NoPloop { dir })?)
            }
            (false, _) if both => {
                let found = PloopDrivers::find();
                if found.is_none() {
                    note(&format!(
                        "the ploop drivers are missing from {} (../shared/oracles/ploop/build.sh builds them): ploop is not run",
                        PloopDrivers::default_dir().display()
                    ));
                }
                found
            }
            (false, _) => None,
        };
        if qemu.is_none() && ploop.is_none() && self.readers.is_empty() {
            return Err(ChoiceError::Nothing);
        }
        let readers = self.readers.iter().map(|&reader| {
            RealReader::find(reader).ok_or_else(|| ChoiceError::NoVenv {
                reader,
                venv: super::readers::default_venv(),
            })
        });
        Ok((Oracles { qemu, ploop, timeout }, readers.collect::<Result<_, _>>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(verdict: Verdict, crashed: bool, info: &str, why: &[&str], millis: u64) -> Done {
        Done {
            verdict,
            crashed,
            kept: verdict != Verdict::Agrees || crashed,
            outcomes: vec![("qemu-img info", info.to_string())],
            disagreements: why.iter().map(ToString::to_string).collect(),
            run_time: vec![("qemu-img info", Duration::from_millis(millis))],
        }
    }

    #[test]
    fn a_campaigns_report_renders_for_people_and_as_report_json() {
        let mut summary = Summary::default();
        summary.add(&done(Verdict::Agrees, false, "exit 0", &[], 250));
        summary.add(&done(Verdict::Disagrees, true, "signal 6", &["qemu check_leaks"], 750));
        summary.add(&done(Verdict::Agrees, false, "exit 0", &[], 500));
        let report = CampaignReport {
            base: Some("built-in".into()),
            paths: Vec::new(),
            seeds: vec![7],
            fresh_seed: None,
            count_per_seed: Some(3),
            edits: [1, 3],
            programs: [Some("/usr/bin/qemu-img".into()), Some("10.0".into()), None],
            jobs: 2,
            timeout: Duration::from_secs(30),
            cases: 3,
            summary,
            wall: Duration::from_secs(3),
            out: PathBuf::from("out"),
        };
        assert!(!report.all_agree());
        let mut human = Vec::new();
        report.write_human(&mut human).unwrap();
        assert_eq!(
            String::from_utf8(human).unwrap(),
            "3 cases in 3.0 s (1.0/s, 2 jobs): 2 agree, 1 disagree, 0 timed out, 0 failed; 1 crashed; 1 kept in out\n"
        );
        let expected = json!({
            "schema": 1,
            "base": "built-in",
            "paths": [],
            "seeds": [7],
            "fresh_seed": null,
            "count_per_seed": 3,
            "edits": [1, 3],
            "programs": { "qemu": "/usr/bin/qemu-img", "qemu_version": "10.0", "ploop": null },
            "jobs": 2,
            "timeout_seconds": 30.0,
            "cases": 3,
            "verdicts": { "agrees": 2, "disagrees": 1 },
            "crashed": 1,
            "kept": 1,
            "outcomes": { "qemu-img info": { "exit 0": 2, "signal 6": 1 } },
            "disagreements": { "qemu check_leaks": 1 },
            "seconds": 3.0,
            "cases_per_second": 1.0,
            "run_seconds": { "qemu-img info": 1.5 },
        });
        assert_eq!(report.to_json(), expected);
        let mut text = Vec::new();
        report.write_json(&mut text).unwrap();
        assert_eq!(text.last(), Some(&b'\n'));
        assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), expected);
    }

    #[test]
    fn variants_are_the_seeds_cases_in_order_and_files_are_run_as_given() {
        let mut campaign = Campaign {
            oracles: Oracles {
                qemu: None,
                ploop: None,
                timeout: Duration::from_secs(1),
            },
            readers: Vec::new(),
            base: Some(("built-in".into(), Vec::new())),
            seeds: vec![10, u64::MAX],
            fresh_seed: None,
            count: 2,
            options: MutateOptions::default(),
            paths: Vec::new(),
            files: vec![PathBuf::from("a.hds")],
            jobs: None,
            out: PathBuf::from("out"),
            force: false,
        };
        let variant = |campaign, seed| Case::Variant { campaign, seed };
        assert_eq!(
            campaign.cases(),
            vec![
                variant(10, 10),
                variant(10, 11),
                variant(u64::MAX, u64::MAX),
                variant(u64::MAX, 0)
            ]
        );
        campaign.base = None;
        assert_eq!(campaign.cases(), vec![Case::File(PathBuf::from("a.hds"))]);
    }

    #[test]
    fn an_output_folder_holding_a_campaigns_file_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new");
        prepare(&out, false).unwrap();
        std::fs::write(out.join("notes.txt"), b"kept").unwrap();
        prepare(&out, false).unwrap();
        std::fs::write(out.join("case-000003.json"), b"{}").unwrap();
        match prepare(&out, false) {
            Err(CampaignError::Exists { path }) => assert_eq!(path, out.join("case-000003.json")),
            other => panic!("{other:?}"),
        }
        prepare(&out, true).unwrap();
    }
}
