//! `prlimg mutate` and `prlimg corpus`: files for other programs' fuzzers. `mutate` writes
//! structure-aware variants of one image (the library's `Mutator`), `corpus` a reproducible seed
//! corpus (valid images of many shapes, every defect, variants); each writes a `manifest.json`
//! saying what every file is. Every file goes through the careful writer; nothing that exists is
//! replaced without `--force`, and that is checked for every file before the first is written.

use std::path::{Path, PathBuf};

use parallels_image::corpus::{self, FolderError};
use parallels_image::{mutate::MutateOptions, mutate::Mutator};
use serde::Serialize;

use crate::output::Failure;
use crate::Outcome;

/// Inputs are held in memory whole: larger ones are refused.
const MAX_INPUT: u64 = 256 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to vary (read only; held in memory, at most 256 MiB).
    input: PathBuf,
    /// The folder to write the variants and manifest.json into (created if missing).
    outdir: PathBuf,
    /// How many variants.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Variant i is made with seed SEED + i (so `--seed SEED+i --count 1` makes it alone).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Edits per variant: N or MIN-MAX.
    #[arg(long, default_value = "1-3", value_parser = crate::args::parse_edits)]
    edits: (usize, usize),
    /// Leave the extension's MD5 as the edits leave it (by default it is recomputed, so that
    /// readers get past it to the feature list).
    #[arg(long)]
    broken_checksum: bool,
    /// Replace files of the same names (regular files only).
    #[arg(long)]
    force: bool,
    /// The image's format, as `qemu-img -f` (`raw` is refused: a raw file has no structure to vary).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = crate::input::ReadFormat::Auto)]
    format: crate::input::ReadFormat,
}

#[derive(clap::Args, Debug)]
pub struct CorpusArgs {
    /// The folder to write the corpus and manifest.json into (created if missing).
    outdir: PathBuf,
    /// The same seed makes the same corpus.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace files of the same names (regular files only).
    #[arg(long)]
    force: bool,
}

/// A folder failure as a CLI failure (naming the folder or file).
fn failure(e: FolderError) -> Failure {
    match e {
        FolderError::Io { path, source } => Failure::io(&path, &source),
        FolderError::Write { path, source } => Failure::lib(&path, &source),
        other => Failure::plain(other.to_string()),
    }
}

/// Writes the manifest, as JSON, into `dir`.
fn manifest(dir: &Path, value: &impl Serialize, force: bool) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value).expect("the manifest serializes");
    text.push('\n');
    corpus::write_manifest(dir, text.as_bytes(), force).map_err(failure)
}

pub fn run(args: &Args) -> Outcome {
    crate::input::refuse_raw(
        &args.input,
        args.format,
        "mutate",
        "a raw file has no structure to vary",
    )?;
    let bytes = if args.input.as_os_str() == "-" {
        crate::input::read_stdin(&args.input, MAX_INPUT, "mutate")?
    } else {
        read_input(&args.input)?
    };
    let options = MutateOptions {
        fix_checksum: !args.broken_checksum,
        edits: args.edits.0..=args.edits.1,
        max_len: None,
    };
    let m = Mutator::new(&bytes, options.clone()).map_err(|e| Failure::lib(&args.input, &e))?;
    let input = args.input.display().to_string();
    let made = corpus::write_variants(&m, &options, input, &args.outdir, args.seed, args.count, args.force);
    manifest(&args.outdir, &made.map_err(failure)?, args.force)?;
    Ok(0)
}

pub fn run_corpus(args: &CorpusArgs) -> Outcome {
    let made = corpus::write_seed_corpus(&args.outdir, args.seed, args.force).map_err(failure)?;
    manifest(&args.outdir, &made, args.force)?;
    Ok(0)
}

/// A file's bytes, refused past [`MAX_INPUT`].
fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    let size = std::fs::metadata(path).map_err(|e| Failure::io(path, &e))?.len();
    if size > MAX_INPUT {
        return Err(Failure::at(
            path,
            format!("is {size} bytes; mutate holds its input in memory and takes at most {MAX_INPUT}"),
        ));
    }
    std::fs::read(path).map_err(|e| Failure::io(path, &e))
}
