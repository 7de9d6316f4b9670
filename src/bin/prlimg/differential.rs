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

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use parallels_image::oracle::campaign::{prepare, Campaign, CampaignError, Wanted};
use parallels_image::oracle::readers::{Reader, RealReader};
use parallels_image::oracle::{builtin_base, Oracles};
use parallels_image::{mutate::MutateOptions, mutate::Mutator, outfile::write_file_atomically, recipe::Recipe};

use crate::output::Failure;
use crate::Outcome;

/// The exit status when a case disagrees, times out or fails.
pub const DISAGREES: u8 = 4;
/// Inputs to vary are held in memory whole: larger ones are refused.
const MAX_BASE: u64 = 256 << 20;

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
    #[arg(long, default_value = "1-3", value_parser = crate::args::parse_edits)]
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
        let parsed: Recipe = crate::args::read_recipe(recipe)?;
        let (bytes, _) = parsed
            .to_builder()
            .and_then(|b| b.to_vec())
            .map_err(|e| Failure::at(recipe, e.to_string()))?;
        return Ok((format!("recipe {}", recipe.display()), bytes));
    }
    let bytes = builtin_base().map_err(|e| Failure::plain(format!("the built-in base: {e}")))?;
    Ok(("built-in".into(), bytes))
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

/// The programs to run and the readers.
fn oracles(args: &Args) -> Result<(Oracles, Vec<RealReader>), Failure> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| Failure::plain(format!("--timeout {}: not a positive number of seconds", args.timeout)))?;
    let wanted = Wanted {
        qemu: args.qemu,
        qemu_dir: args.qemu_dir.clone(),
        ploop: args.ploop,
        ploop_dir: args.ploop_dir.clone(),
        readers: [(args.libphdi, Reader::Libphdi), (args.dissect, Reader::Dissect)]
            .into_iter()
            .filter_map(|(wanted, reader)| wanted.then_some(reader))
            .collect(),
    };
    let note = |line: &str| eprintln!("prlimg: differential: {line}");
    wanted.choose(timeout, &note).map_err(|e| Failure::plain(e.to_string()))
}

pub fn run(args: &Args) -> Outcome {
    let (oracles, readers) = oracles(args)?;
    let generated = args.paths.is_empty();
    let mut seeds = args.seed.clone();
    let mut fresh = None;
    if generated && (seeds.is_empty() || args.fresh_seed) {
        let s = parallels_image::oracle::campaign::fresh_seed();
        eprintln!("prlimg: differential: fresh seed {s} (--seed {s} runs these cases again)");
        seeds.push(s);
        fresh = Some(s);
    }
    let options = MutateOptions {
        edits: args.edits.0..=args.edits.1,
        ..MutateOptions::default()
    };
    let base = if generated {
        let (name, bytes) = base(args)?;
        Mutator::new(&bytes, options.clone()).map_err(|e| Failure::plain(format!("the base ({name}): {e}")))?;
        Some((name, bytes))
    } else {
        None
    };
    let files = if generated { Vec::new() } else { files(&args.paths)? };
    let failure = |e: CampaignError| match e {
        CampaignError::Io { path, source } => Failure::io(&path, &source),
        other => Failure::plain(other.to_string()),
    };
    prepare(&args.out, args.force).map_err(failure)?;
    let campaign = Campaign {
        oracles,
        readers,
        base,
        seeds,
        fresh_seed: fresh,
        count: args.count,
        options,
        paths: args.paths.clone(),
        files,
        jobs: args.jobs,
        out: args.out.clone(),
        force: args.force,
    };
    let cases = campaign.cases();
    let bar = progress_bar(cases.len() as u64);
    let note = |line: &str| eprintln!("prlimg: differential: {line}");
    let report = campaign.run(&cases, &|| bar.inc(1), &note).map_err(failure)?;
    bar.finish_and_clear();
    let path = args.out.join("report.json");
    write_file_atomically(&path, args.force, |f| Ok(report.write_json(f)?))
        .map_err(|e| Failure::plain(format!("{}: {e}", path.display())))?;
    parallels_image::outfile::release_output_folder(&args.out);
    let mut line = b"prlimg: differential: ".to_vec();
    let _ = report.write_human(&mut line);
    let _ = io::stderr().write_all(&line);
    Ok(if report.all_agree() { 0 } else { DISAGREES })
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
