//! `prlimg mutate` and `prlimg corpus`: files for other programs' fuzzers. `mutate` writes
//! structure-aware variants of one image (the library's `Mutator`), `corpus` a reproducible seed
//! corpus (valid images of many shapes, every defect, variants); each writes a `manifest.json`
//! saying what every file is. Every file goes through the careful writer; nothing that exists is
//! replaced without `--force`, and that is checked for every file before the first is written.

use std::io::Write;
use std::path::{Path, PathBuf};

use parallels_image::{
    mutate::seed_corpus, mutate::ChecksumState, mutate::CorpusKind, mutate::Edit, mutate::MutateOptions,
    mutate::Mutator, outfile::write_file_atomically,
};
use serde::Serialize;

use crate::output::Failure;
use crate::Outcome;

/// The manifest's name in the output folder.
const MANIFEST: &str = "manifest.json";
/// The manifests' schema version.
const SCHEMA: u32 = 1;
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
    #[arg(long, default_value = "1-3", value_parser = parse_edits)]
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

pub fn parse_edits(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let n = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not N or MIN-MAX"))
    };
    let (a, b) = (n(a)?, n(b)?);
    if a > b || b > 64 {
        return Err(format!("{s:?}: MIN must not exceed MAX, and MAX is at most 64"));
    }
    Ok((a, b))
}

#[derive(Serialize)]
struct MutantRecord<'a> {
    file: String,
    seed: u64,
    checksum: ChecksumState,
    edits: &'a [Edit],
}

#[derive(Serialize)]
struct MutateManifest<'a> {
    schema: u32,
    input: String,
    seed: u64,
    count: u64,
    edits: [usize; 2],
    fix_checksum: bool,
    mutants: Vec<MutantRecord<'a>>,
}

#[derive(Serialize)]
struct CorpusRecord<'a> {
    file: &'a str,
    #[serde(flatten)]
    kind: &'a CorpusKind,
}

#[derive(Serialize)]
struct CorpusManifest<'a> {
    schema: u32,
    seed: u64,
    files: Vec<CorpusRecord<'a>>,
}

/// Creates `dir` if missing, and refuses (without `force`) if any of `names` or the manifest
/// exists in it.
fn prepare(dir: &Path, names: impl Iterator<Item = String>, force: bool) -> Result<(), Failure> {
    if std::fs::symlink_metadata(dir).is_err() {
        // A folder made by this run: removed whole if the run is interrupted before its manifest.
        std::fs::create_dir_all(dir).map_err(|e| Failure::io(dir, &e))?;
        parallels_image::outfile::hold_output_folder(dir).map_err(|e| Failure::lib(dir, &e))?;
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Failure::io(dir, &e))?;
    if force {
        return Ok(());
    }
    for name in names.chain([MANIFEST.to_string()]) {
        let p = dir.join(&name);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Err(Failure::at(
                &p,
                "exists; nothing was written (use --force to replace, or another folder)",
            ));
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], force: bool) -> Result<(), Failure> {
    write_file_atomically(path, force, |f| Ok(f.write_all(bytes)?)).map_err(|e| Failure::lib(path, &e))
}

fn manifest(dir: &Path, value: &impl Serialize, force: bool) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value).expect("the manifest serializes");
    text.push('\n');
    write(&dir.join(MANIFEST), text.as_bytes(), force)?;
    parallels_image::outfile::release_output_folder(dir);
    Ok(())
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
    let m = Mutator::new(&bytes, options).map_err(|e| Failure::lib(&args.input, &e))?;
    let name = |i: u64| format!("mutant-{i:06}.hds");
    prepare(&args.outdir, (0..args.count).map(name), args.force)?;
    let mut made = Vec::new();
    // One buffer for every variant: only the bytes the last one's edits wrote are copied back.
    let mut buffer = m.buffer();
    for i in 0..args.count {
        let seed = args.seed.wrapping_add(i);
        let bytes = buffer.mutate(seed);
        write(&args.outdir.join(name(i)), bytes, args.force)?;
        made.push((name(i), seed, buffer.checksum(), buffer.edits().to_vec()));
    }
    let record = MutateManifest {
        schema: SCHEMA,
        input: args.input.display().to_string(),
        seed: args.seed,
        count: args.count,
        edits: [args.edits.0, args.edits.1],
        fix_checksum: !args.broken_checksum,
        mutants: made
            .iter()
            .map(|(file, seed, checksum, edits)| MutantRecord {
                file: file.clone(),
                seed: *seed,
                checksum: *checksum,
                edits,
            })
            .collect(),
    };
    manifest(&args.outdir, &record, args.force)?;
    Ok(0)
}

pub fn run_corpus(args: &CorpusArgs) -> Outcome {
    let corpus = seed_corpus(args.seed).map_err(|e| Failure::plain(format!("making the corpus: {e}")))?;
    prepare(&args.outdir, corpus.iter().map(|e| e.name.clone()), args.force)?;
    for e in &corpus {
        write(&args.outdir.join(&e.name), &e.bytes, args.force)?;
    }
    let record = CorpusManifest {
        schema: SCHEMA,
        seed: args.seed,
        files: corpus
            .iter()
            .map(|e| CorpusRecord {
                file: &e.name,
                kind: &e.kind,
            })
            .collect(),
    };
    manifest(&args.outdir, &record, args.force)?;
    Ok(0)
}

/// A file's bytes, refused past [`MAX_INPUT`].
fn read_input(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    let size = std::fs::metadata(path).map_err(|e| Failure::io(path, &e))?.len();
    if size > MAX_INPUT {
        return Err(Failure::at(
            path,
            format!("is {size} bytes; mutate holds its input in memory and takes at most {MAX_INPUT}"),
        ));
    }
    std::fs::read(path).map_err(|e| Failure::io(path, &e))
}
