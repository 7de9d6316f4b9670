//! `prlimg differential`: a differential campaign. Each case — a structure-aware variant of a
//! base image (by seed) or an image file given — goes to the real programs (`qemu-img info` and
//! `check`, read-only; the ploop oracle's drivers), whose outcome is compared with the
//! prediction (the library's `oracle::Oracles::examine`). Cases run in parallel; every case that
//! disagrees, times out, fails, or where a program crashed or aborted is kept in the output
//! folder (its image and a JSON file with its edits, the prediction and what was seen), with a
//! `report.json` of the whole campaign.
//!
//! Exit status: 0 when every case agrees with the prediction (predicted crashes included), 4
//! when any case disagrees, timed out or could not be compared, 1 on an error of the campaign
//! itself (bad arguments, an output folder that is not empty).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parallels_image::oracle::ploop::PloopDrivers;
use parallels_image::oracle::qemu::QemuTools;
use parallels_image::oracle::readers::{differences as reader_differences, Reader, RealReader};
use parallels_image::oracle::{builtin_base, Examination, OracleError, Oracles, Run, Verdict};
use parallels_image::readers::{dissect::predict_dissect_with, libphdi::predict_libphdi_with, Truth, READ_SIZE};
use parallels_image::{
    mutate::Edit, mutate::MutateOptions, mutate::Mutator, outfile::write_file_atomically, recipe::Recipe,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::output::Failure;
use crate::Outcome;

/// The exit status when a case disagrees, times out or fails.
pub const DISAGREES: u8 = 4;
/// Inputs to vary are held in memory whole: larger ones are refused.
const MAX_BASE: u64 = 256 << 20;
/// The report's schema version.
const SCHEMA: u32 = 1;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image files or folders (walked) to run as they are, instead of generated variants.
    paths: Vec<PathBuf>,
    /// Vary this image (read only; at most 256 MiB) instead of the built-in base (a v2 image
    /// of 4 MiB, 64 KiB clusters, data and two bitmaps, inuse "v2.1").
    #[arg(long, conflicts_with_all = ["paths", "recipe"])]
    from: Option<PathBuf>,
    /// Vary the image this recipe (.toml or .json, as for `create`) builds.
    #[arg(long, conflicts_with = "paths")]
    recipe: Option<PathBuf>,
    /// Variants per seed.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// A campaign seed (repeatable): its case i is the variant of seed SEED + i, so that
    /// `--seed SEED+i --count 1` runs it alone. Without any, a fresh seed is drawn.
    #[arg(long)]
    seed: Vec<u64>,
    /// Also draw a fresh seed (printed on stderr and kept in report.json) besides the --seed ones.
    #[arg(long)]
    fresh_seed: bool,
    /// Edits per variant: N or MIN-MAX.
    #[arg(long, default_value = "1-3", value_parser = crate::mutate::parse_edits)]
    edits: (usize, usize),
    /// Run qemu-img (on PATH). Without --qemu or --ploop, both run when available.
    #[arg(long)]
    qemu: bool,
    /// Run the QEMU tools in DIR instead (implies --qemu): another QEMU build, such as QEMU 7.2
    /// unpacked into ~/.cache/qemu-7.2/usr/bin. Its version (`qemu-img --version`) picks the
    /// prediction (7.2 or 10.0).
    #[arg(long, value_name = "DIR")]
    qemu_dir: Option<PathBuf>,
    /// Run the ploop oracle's drivers (from where ../shared/oracles/ploop/build.sh puts them:
    /// $PLOOP_ORACLE_DIR/bin, else ~/.cache/ploop-oracle/bin).
    #[arg(long)]
    ploop: bool,
    /// Run the ploop drivers from DIR (implies --ploop).
    #[arg(long, value_name = "DIR")]
    ploop_dir: Option<PathBuf>,
    /// Also run libyal's libphdi (the venv of scripts/readers/venv.sh) on each case, wrapped
    /// in a minimal bundle, and compare it with `parallels_image::readers`'s prediction.
    #[arg(long)]
    libphdi: bool,
    /// Also run fox-it's dissect.hypervisor likewise.
    #[arg(long)]
    dissect: bool,
    /// Cases run at once (default: the CPUs).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// The timeout of each program run, in seconds (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The folder for kept cases and report.json (created if missing; must hold none of the
    /// files a campaign writes unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace files of the same names in the output folder.
    #[arg(long)]
    force: bool,
}

/// One case to run.
enum Input {
    /// Variant of the base for `seed` (campaign seed `campaign`).
    Variant { campaign: u64, seed: u64 },
    /// An image file.
    File(PathBuf),
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

fn base(args: &Args) -> Result<(String, Vec<u8>), Failure> {
    if let Some(from) = &args.from {
        if from.as_os_str() == "-" {
            let bytes = crate::input::read_stdin(from, MAX_BASE, "differential")?;
            return Ok((from.display().to_string(), bytes));
        }
        let size = std::fs::metadata(from).map_err(|e| Failure::io(from, &e))?.len();
        if size > MAX_BASE {
            return Err(Failure::at(
                from,
                format!("is {size} bytes; at most {MAX_BASE} can be varied"),
            ));
        }
        let bytes = std::fs::read(from).map_err(|e| Failure::io(from, &e))?;
        return Ok((from.display().to_string(), bytes));
    }
    if let Some(recipe) = &args.recipe {
        let parsed: Recipe = crate::create::read_recipe(recipe)?;
        let (bytes, _) = parsed
            .to_builder()
            .and_then(|b| b.to_vec())
            .map_err(|e| Failure::at(recipe, e.to_string()))?;
        return Ok((format!("recipe {}", recipe.display()), bytes));
    }
    let bytes = builtin_base().map_err(|e| Failure::plain(format!("the built-in base: {e}")))?;
    Ok(("built-in".into(), bytes))
}

/// A seed nobody chose: the process's hash keys mixed with the clock.
fn fresh_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// Every file under the paths given (folders walked, sorted by name, links not followed).
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Failure::io(p, &e))?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
            let entry = entry.map_err(|e| Failure::at(p, e.to_string()))?;
            if entry.file_type().is_file() && !parallels_image::report::is_manifest(entry.path()) {
                out.push(entry.into_path());
            }
        }
    }
    Ok(out)
}

fn oracles(args: &Args) -> Result<Oracles, Failure> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| Failure::plain(format!("--timeout {}: not a positive number of seconds", args.timeout)))?;
    let want_ploop = args.ploop || args.ploop_dir.is_some();
    let want_qemu = args.qemu || args.qemu_dir.is_some();
    let both = !want_qemu && !want_ploop && !args.libphdi && !args.dissect;
    let qemu = if let Some(dir) = &args.qemu_dir {
        let tools = QemuTools::detect(dir).map_err(|e| Failure::at(dir, format!("--qemu-dir: {e}")))?;
        Some(tools.qemu_img())
    } else if want_qemu || both {
        match QemuTools::on_path() {
            Some(Ok(tools)) => Some(tools.qemu_img()),
            Some(Err(e)) => return Err(Failure::plain(format!("differential: qemu-img on PATH: {e}"))),
            None if want_qemu => return Err(Failure::plain("--qemu: qemu-img is not on PATH")),
            None => {
                eprintln!("prlimg: differential: qemu-img is not on PATH: QEMU is not run");
                None
            }
        }
    } else {
        None
    };
    if let Some(q) = &qemu {
        eprintln!(
            "prlimg: differential: QEMU {} ({}), predicted as QEMU {}",
            q.version(),
            q.program().display(),
            q.version()
        );
    }
    let ploop = match want_ploop {
        true => {
            let dir = args.ploop_dir.clone().unwrap_or_else(PloopDrivers::default_dir);
            Some(PloopDrivers::at(&dir).ok_or_else(|| {
                Failure::at(
                    &dir,
                    "holds no ploop drivers (pcheck, pmount_sim): ../shared/oracles/ploop/build.sh builds them",
                )
            })?)
        }
        false if both => {
            let found = PloopDrivers::find();
            if found.is_none() {
                eprintln!(
                    "prlimg: differential: the ploop drivers are missing from {} \
                     (../shared/oracles/ploop/build.sh builds them): ploop is not run",
                    PloopDrivers::default_dir().display()
                );
            }
            found
        }
        false => None,
    };
    if qemu.is_none() && ploop.is_none() && !args.libphdi && !args.dissect {
        return Err(Failure::plain(
            "differential: neither qemu-img nor the ploop drivers are available",
        ));
    }
    Ok(Oracles { qemu, ploop, timeout })
}

/// The file names a campaign may write: `case-*` and report.json. Without `force`, none may
/// be there already.
fn prepare(out: &Path, force: bool) -> Result<(), Failure> {
    std::fs::create_dir_all(out).map_err(|e| Failure::io(out, &e))?;
    if force {
        return Ok(());
    }
    for entry in std::fs::read_dir(out).map_err(|e| Failure::io(out, &e))? {
        let entry = entry.map_err(|e| Failure::io(out, &e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "report.json" || name.starts_with("case-") {
            return Err(Failure::at(
                &entry.path(),
                "exists; nothing was run (use --force to replace, or another folder)",
            ));
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    write_file_atomically(path, force, |f| Ok(f.write_all(bytes)?)).map_err(|e| format!("{}: {e}", path.display()))
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
        Err(e) => match e {
            OracleError::TimedOut { .. } => "timeout".into(),
            _ => "error".into(),
        },
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

/// Runs one case in `scratch`: writes it (a variant), examines it, keeps it when it must be.
fn one(index: usize, input: &Input, ctx: &Context) -> Done {
    let name = format!("case-{index:06}");
    let failed = |why: String| {
        eprintln!("prlimg: differential: {name}: {why}");
        Done {
            verdict: Verdict::Failed,
            crashed: false,
            kept: false,
            outcomes: Vec::new(),
            disagreements: vec!["could not run".into()],
            run_time: Vec::new(),
        }
    };
    let (path, label, edits, digest) = match input {
        Input::Variant { campaign, seed } => {
            let m = match Mutator::new(&ctx.base, ctx.options.clone()) {
                Ok(m) => m.mutant(*seed),
                Err(e) => return failed(format!("the base: {e}")),
            };
            let path = ctx.scratch.join(format!("{name}.hds"));
            if let Err(e) = std::fs::write(&path, &m.bytes) {
                return failed(format!("{}: {e}", path.display()));
            }
            (
                path,
                json!({ "index": index, "campaign_seed": campaign, "seed": seed, "checksum": m.checksum }),
                Some(m.edits),
                // The file holds the bytes the mutator hashed: the predictions need not hash them again.
                m.digest,
            )
        }
        Input::File(p) => (
            p.clone(),
            json!({ "index": index, "file": p.display().to_string() }),
            None,
            None,
        ),
    };
    let copy = ctx.scratch.join(format!("{name}.mount.hds"));
    let examined = ctx.oracles.examine_knowing(&path, &copy, digest.as_ref());
    let done = match examined {
        Err(e) => failed(format!("{}: {e}", path.display())),
        Ok(e) => {
            let verdict = e.verdict();
            let crashed = e.crashed();
            let kept = verdict != Verdict::Agrees || crashed;
            let mut disagreements: Vec<String> = Vec::new();
            if let Some(q) = &e.qemu {
                disagreements.extend(q.disagreements.iter().map(|d| format!("qemu {}", d.kind())));
                for (tool, r) in [("info", &q.info), ("check", &q.check)] {
                    match r {
                        Err(OracleError::TimedOut { .. }) => disagreements.push(format!("qemu {tool} timed out")),
                        Err(_) => disagreements.push(format!("qemu {tool} error")),
                        Ok(_) => {}
                    }
                }
            }
            if let Some(p) = &e.ploop {
                disagreements.extend(p.disagreements.iter().map(|d| format!("ploop {}", d.field.name())));
                match &p.observation {
                    Err(OracleError::TimedOut { .. }) => disagreements.push("ploop timed out".into()),
                    Err(_) => disagreements.push("ploop error".into()),
                    Ok(_) => {}
                }
            }
            let (mut verdict, mut kept, mut outcomes, mut run_time) = (verdict, kept, outcomes(&e), run_times(&e));
            let mut reader_records = Vec::new();
            if !ctx.readers.is_empty() {
                let truth = Truth::of(&path);
                for real in &ctx.readers {
                    let name = real.reader().name();
                    let predicted = match real.reader() {
                        Reader::Libphdi => predict_libphdi_with(&path, truth.as_ref(), READ_SIZE),
                        Reader::Dissect => predict_dissect_with(&path, truth.as_ref(), READ_SIZE),
                    };
                    let started = Instant::now();
                    let observed = real.observe(&path, truth.as_ref(), READ_SIZE, ctx.oracles.timeout);
                    run_time.push((name, started.elapsed()));
                    let record = match &observed {
                        Ok(o) => {
                            let diffs = reader_differences(&predicted, o);
                            outcomes.push((name, o.outcome.outcome.name().to_string()));
                            if !diffs.is_empty() {
                                verdict = Verdict::Disagrees;
                                kept = true;
                                disagreements.extend(diffs.iter().map(|d| format!("{name} {}", d.field)));
                            }
                            json!({
                                "predicted": predicted,
                                "observed": o.outcome,
                                "disagreements_text": diffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            })
                        }
                        Err(err) => {
                            verdict = Verdict::Failed;
                            kept = true;
                            outcomes.push((name, "error".into()));
                            disagreements.push(format!("{name} error"));
                            json!({ "predicted": predicted, "observed": { "error": err.to_string() } })
                        }
                    };
                    reader_records.push((name, record));
                }
            }
            let mut done = Done {
                verdict,
                crashed,
                kept,
                outcomes,
                disagreements,
                run_time,
            };
            if kept {
                let mut record = case_json(&label, edits.as_deref(), &e, &path.display().to_string());
                for (name, r) in reader_records {
                    record[name] = r;
                }
                let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
                text.push('\n');
                let image = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()));
                let written = image.and_then(|bytes| {
                    write(&ctx.out.join(format!("{name}.hds")), &bytes, ctx.force)?;
                    write(&ctx.out.join(format!("{name}.json")), text.as_bytes(), ctx.force)
                });
                if let Err(why) = written {
                    eprintln!("prlimg: differential: keeping {name}: {why}");
                    done.verdict = Verdict::Failed;
                    done.disagreements.push("keeping the case failed".into());
                }
            }
            done
        }
    };
    if let Input::Variant { .. } = input {
        let _ = std::fs::remove_file(&path);
    }
    done
}

struct Context {
    oracles: Oracles,
    /// The real libphdi and dissect.hypervisor asked for.
    readers: Vec<RealReader>,
    /// The image varied (empty when files are run).
    base: Vec<u8>,
    options: MutateOptions,
    scratch: PathBuf,
    out: PathBuf,
    force: bool,
}

/// The scratch folder of the campaign running, for [`abandon`].
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// For the signal handler, before the process dies: kills the programs running (they run in
/// their own process groups, out of the terminal's reach) and removes the scratch folder.
pub fn abandon() {
    parallels_image::oracle::kill_running();
    if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn run(args: &Args) -> Outcome {
    let oracles = oracles(args)?;
    let generated = args.paths.is_empty();
    let mut seeds = args.seed.clone();
    let mut fresh = None;
    if generated && (seeds.is_empty() || args.fresh_seed) {
        let s = fresh_seed();
        eprintln!("prlimg: differential: fresh seed {s} (--seed {s} runs these cases again)");
        seeds.push(s);
        fresh = Some(s);
    }
    let options = MutateOptions {
        edits: args.edits.0..=args.edits.1,
        ..MutateOptions::default()
    };
    let (base_name, base_bytes) = if generated {
        let (name, bytes) = base(args)?;
        Mutator::new(&bytes, options.clone()).map_err(|e| Failure::plain(format!("the base ({name}): {e}")))?;
        (Some(name), bytes)
    } else {
        (None, Vec::new())
    };
    let inputs: Vec<Input> = if generated {
        seeds
            .iter()
            .flat_map(|&campaign| {
                (0..args.count).map(move |i| Input::Variant {
                    campaign,
                    seed: campaign.wrapping_add(i),
                })
            })
            .collect()
    } else {
        files(&args.paths)?.into_iter().map(Input::File).collect()
    };
    prepare(&args.out, args.force)?;
    let scratch = tempfile::Builder::new()
        .prefix("prlimg-differential")
        .tempdir()
        .map_err(|e| Failure::plain(format!("a scratch folder: {e}")))?;
    *SCRATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(scratch.path().to_path_buf());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(0))
        .build()
        .map_err(|e| Failure::plain(format!("threads: {e}")))?;
    let jobs = pool.current_num_threads();
    let mut readers = Vec::new();
    for (wanted, reader) in [(args.libphdi, Reader::Libphdi), (args.dissect, Reader::Dissect)] {
        if wanted {
            readers.push(RealReader::find(reader).ok_or_else(|| {
                Failure::plain(format!(
                    "--{}: no venv at {} (scripts/readers/venv.sh makes it)",
                    reader.name(),
                    parallels_image::oracle::readers::default_venv().display()
                ))
            })?);
        }
    }
    let ctx = Context {
        oracles,
        readers,
        base: base_bytes,
        options,
        scratch: scratch.path().to_path_buf(),
        out: args.out.clone(),
        force: args.force,
    };
    let bar = progress_bar(inputs.len() as u64);
    let summary = Mutex::new(Summary::default());
    let start = Instant::now();
    // Each worker takes the next case when it is done with one, in order: a long case (a 2 GiB
    // extension cluster, hashed for seconds by every program) holds up its worker alone. (A
    // parallel iterator hands out runs of cases, and a run that holds a long case can leave the
    // other CPUs idle for seconds at the end.)
    let next = AtomicUsize::new(0);
    pool.scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(input) = inputs.get(i) else { break };
                let done = one(i, input, &ctx);
                summary.lock().unwrap_or_else(|e| e.into_inner()).add(&done);
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let wall = start.elapsed();
    let s = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    let n = inputs.len() as u64;
    let report = json!({
        "schema": SCHEMA,
        "base": base_name,
        "paths": args.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "seeds": if generated { seeds.clone() } else { Vec::new() },
        "fresh_seed": fresh,
        "count_per_seed": if generated { Some(args.count) } else { None },
        "edits": [args.edits.0, args.edits.1],
        "programs": {
            "qemu": ctx.oracles.qemu.as_ref().map(|q| q.program().display().to_string()),
            "qemu_version": ctx.oracles.qemu.as_ref().map(|q| q.version().name()),
            "ploop": ctx.oracles.ploop.as_ref().map(|p| p.dir().display().to_string()),
        },
        "jobs": jobs,
        "timeout_seconds": ctx.oracles.timeout.as_secs_f64(),
        "cases": n,
        "verdicts": s.verdicts,
        "crashed": s.crashed,
        "kept": s.kept,
        "outcomes": s.outcomes,
        "disagreements": s.disagreements,
        "seconds": wall.as_secs_f64(),
        "cases_per_second": if wall.is_zero() { 0.0 } else { n as f64 / wall.as_secs_f64() },
        "run_seconds": s.run_time.iter().map(|(k, d)| (k.to_string(), d.as_secs_f64())).collect::<BTreeMap<_, _>>(),
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
    text.push('\n');
    let report_path = args.out.join("report.json");
    write(&report_path, text.as_bytes(), args.force).map_err(Failure::plain)?;
    let agree = s.verdicts.get("agrees").copied().unwrap_or(0);
    eprintln!(
        "prlimg: differential: {n} cases in {:.1} s ({:.1}/s, {jobs} jobs): {agree} agree, {} disagree, {} timed out, {} failed; {} crashed; {} kept in {}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64().max(1e-9),
        s.verdicts.get("disagrees").copied().unwrap_or(0),
        s.verdicts.get("timed_out").copied().unwrap_or(0),
        s.verdicts.get("failed").copied().unwrap_or(0),
        s.crashed,
        s.kept,
        args.out.display()
    );
    Ok(if agree == n { 0 } else { DISAGREES })
}

#[derive(Default, Serialize)]
struct Summary {
    verdicts: BTreeMap<&'static str, u64>,
    crashed: u64,
    kept: u64,
    outcomes: BTreeMap<&'static str, BTreeMap<String, u64>>,
    disagreements: BTreeMap<String, u64>,
    run_time: BTreeMap<&'static str, Duration>,
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
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("differential [{bar:40}] {pos}/{len} cases ({per_sec}) {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
