//! `prlimg create`: build an image from options or a recipe, reproducibly.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

use parallels_image::Error;
use parallels_image::{BitmapSpec, ImageBuilder};
use parallels_image::{DataRecipe, Recipe};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::output::{progress, Failure};
use crate::size::parse_size;
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to create (refused if it exists, unless --force).
    out: PathBuf,
    /// Virtual size: bytes or K, M, G, T, P, E (powers of 1024).
    #[arg(long, value_parser = parse_size, required_unless_present = "recipe")]
    size: Option<u64>,
    /// Cluster size (a multiple of 512).
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    cluster_size: u64,
    /// Use the v1 magic `WithoutFreeSpace` (BAT in sectors).
    #[arg(long)]
    v1: bool,
    /// Guest data: LEN copies of BYTE at OFFSET (sizes with suffixes; BYTE decimal or 0x..).
    #[arg(long, value_name = "OFFSET:LEN:BYTE", value_parser = parse_data)]
    data: Vec<DataRecipe>,
    /// A bitmap: its UUID, its granularity and its dirty ranges (may be empty after the last colon).
    #[arg(long, value_name = "UUID:GRANULARITY:OFFSET+LEN,...", value_parser = parse_bitmap)]
    bitmap: Vec<BitmapSpec>,
    /// Add a bitmap with this fraction (0.0 to 1.0) of granules dirty, in random runs.
    #[arg(long, value_name = "DENSITY", value_parser = parse_density)]
    random_bitmap: Option<f64>,
    /// Granularity of the --random-bitmap.
    #[arg(long, value_parser = parse_size, default_value = "64K", requires = "random_bitmap")]
    random_granularity: u64,
    /// Seed of the --random-bitmap generator (ChaCha8).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Build from a recipe (.json or .toml) instead of the options above.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["size", "cluster_size", "v1", "data", "bitmap", "random_bitmap"])]
    recipe: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid byte {s:?} (expected 0..255 or 0x00..0xff)"))
}

fn parse_data(s: &str) -> Result<DataRecipe, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [offset, len, byte] = parts[..] else {
        return Err(format!("invalid data {s:?} (expected OFFSET:LEN:BYTE)"));
    };
    Ok(DataRecipe {
        offset: parse_size(offset)?,
        len: parse_size(len)?,
        byte: parse_byte(byte)?,
    })
}

fn parse_bitmap(s: &str) -> Result<BitmapSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [id, granularity, extents] = parts[..] else {
        return Err(format!(
            "invalid bitmap {s:?} (expected UUID:GRANULARITY:OFFSET+LEN,...)"
        ));
    };
    let id = uuid::Uuid::parse_str(id).map_err(|e| format!("invalid bitmap id {id:?}: {e}"))?;
    let mut list = Vec::new();
    for e in extents.split(',').filter(|e| !e.is_empty()) {
        let (o, l) = e
            .split_once('+')
            .ok_or_else(|| format!("invalid dirty range {e:?} (expected OFFSET+LEN)"))?;
        list.push((parse_size(o)?, parse_size(l)?));
    }
    Ok(BitmapSpec {
        id: *id.as_bytes(),
        granularity: parse_size(granularity)?,
        extents: list,
    })
}

fn parse_density(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if (0.0..=1.0).contains(&d) => Ok(d),
        _ => Err(format!("invalid density {s:?} (expected a number from 0.0 to 1.0)")),
    }
}

/// At most this many dirty runs in a random bitmap, whatever the disk size.
const MAX_RUNS: u64 = 4096;

/// A random bitmap over `granules` granules with `round(density * granules)` dirty ones, in at
/// most [`MAX_RUNS`] runs: the dirty count is split into `k` random positive run lengths and
/// the clean count into `k + 1` random gaps (the outer two may be empty). Work and memory grow
/// with `k`, not with the disk size. Returns dirty `(first granule, count)` runs in order.
pub fn random_runs(rng: &mut ChaCha8Rng, granules: u64, density: f64) -> Vec<(u64, u64)> {
    let dirty = ((granules as f64 * density).round() as u64).min(granules);
    let clean = granules - dirty;
    if dirty == 0 {
        return Vec::new();
    }
    // About as many runs as independent coin flips would give, within what fits.
    let expected = (granules as f64 * density * (1.0 - density)).round() as u64;
    let k = expected.clamp(1, MAX_RUNS.min(dirty).min(clean + 1));
    let runs = composition(rng, dirty, k);
    let mut gaps = composition(rng, clean + 2, k + 1);
    gaps[0] -= 1;
    gaps[k as usize] -= 1;
    let mut out = Vec::with_capacity(k as usize);
    let mut at = 0u64;
    for (i, len) in runs.into_iter().enumerate() {
        at += gaps[i];
        out.push((at, len));
        at += len;
    }
    out
}

/// `n` split into `k` positive parts (`1 <= k <= n`), uniformly among all such splits: the cut
/// points are `k - 1` distinct values of `1..n`, drawn with Floyd's algorithm.
fn composition(rng: &mut ChaCha8Rng, n: u64, k: u64) -> Vec<u64> {
    let mut cuts = std::collections::BTreeSet::new();
    let m = k - 1;
    // Floyd: for j in (N - m)..N pick t in 0..=j; take t, or j if t is taken. Here N = n - 1
    // values 1..=n-1, shifted by 1.
    for j in (n - 1 - m)..(n - 1) {
        let t = rng.random_range(0..=j);
        if !cuts.insert(t + 1) {
            cuts.insert(j + 1);
        }
    }
    let mut parts = Vec::with_capacity(k as usize);
    let mut prev = 0u64;
    for c in cuts {
        parts.push(c - prev);
        prev = c;
    }
    parts.push(n - prev);
    parts
}

/// The random bitmap's spec: its id comes from the same generator (a version 4 UUID).
fn random_bitmap(seed: u64, virtual_size: u64, granularity: u64, density: f64) -> Result<BitmapSpec, String> {
    if granularity < 512 || !granularity.is_power_of_two() {
        return Err(format!(
            "random bitmap granularity {granularity} is not a power of two of at least 512"
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let id = *uuid::Builder::from_random_bytes(id).into_uuid().as_bytes();
    let granules = virtual_size.div_ceil(512).div_ceil(granularity / 512);
    let extents = random_runs(&mut rng, granules, density)
        .into_iter()
        .map(|(g, n)| (g * granularity, n * granularity))
        .collect();
    Ok(BitmapSpec {
        id,
        granularity,
        extents,
    })
}

fn builder_from_args(args: &Args) -> Result<ImageBuilder, Failure> {
    if let Some(recipe) = &args.recipe {
        let text = std::fs::read_to_string(recipe).map_err(|e| Failure::io(recipe, &e))?;
        let parsed: Recipe = match recipe.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text).map_err(|e| Failure::at(recipe, one_line(&e.to_string())))?,
            Some("json") => serde_json::from_str(&text).map_err(|e| Failure::at(recipe, e.to_string()))?,
            _ => return Err(Failure::at(recipe, "a recipe file name must end in .json or .toml")),
        };
        return parsed.to_builder().map_err(|e| Failure::at(recipe, e.to_string()));
    }
    let size = args.size.ok_or_else(|| Failure::plain("--size is required"))?;
    // The options are a recipe whose bitmaps are already parsed.
    let recipe = Recipe {
        size,
        cluster_size: args.cluster_size,
        v1: args.v1,
        data: args.data.clone(),
        bitmaps: Vec::new(),
    };
    let mut b = recipe.to_builder().map_err(|e| Failure::plain(e.to_string()))?;
    for spec in &args.bitmap {
        b = b.bitmap(spec.clone());
    }
    if let Some(density) = args.random_bitmap {
        let spec = random_bitmap(args.seed, size, args.random_granularity, density).map_err(Failure::plain)?;
        b = b.bitmap(spec);
    }
    Ok(b)
}

/// toml's errors span several lines with a source excerpt; keep the first.
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Counts bytes written, for the progress bar.
struct Counting<'a> {
    file: &'a mut std::fs::File,
    bar: indicatif::ProgressBar,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.bar.set_position(self.written);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Counting<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Bytes of data clusters the builder will write (each touched cluster once).
fn data_bytes(args: &Args, cluster_size: u64) -> u64 {
    if cluster_size == 0 {
        return 0;
    }
    let mut ranges: Vec<(u64, u64)> = args
        .data
        .iter()
        .filter(|d| d.len > 0)
        .map(|d| {
            (
                d.offset / cluster_size,
                d.offset.saturating_add(d.len - 1) / cluster_size + 1,
            )
        })
        .collect();
    ranges.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for (s, e) in ranges {
        let s = s.max(end);
        if e > s {
            total += e - s;
            end = e;
        }
    }
    total.saturating_mul(cluster_size)
}

pub fn run(args: &Args) -> Outcome {
    let out = &args.out;
    let builder = builder_from_args(args)?;
    if !args.force && out.exists() {
        return Err(Failure::at(out, "already exists (use --force to replace it)"));
    }
    let expected = data_bytes(args, args.cluster_size);
    let bar = if expected >= 64 << 20 {
        progress(expected, "writing")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = parallels_image::write_file_atomically(out, args.force, |file| {
        let mut w = Counting {
            file,
            bar: bar.clone(),
            written: 0,
        };
        builder.write_to(&mut w)
    });
    bar.finish_and_clear();
    match result {
        Ok(_) => Ok(0),
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Failure::at(out, "already exists (use --force to replace it)"))
        }
        Err(Error::Build(msg)) => Err(Failure::at(out, format!("cannot build this image: {msg}"))),
        Err(e) => Err(Failure::lib(out, &e)),
    }
}

/// For tests of the bin: the spec `--random-bitmap` adds.
#[cfg(test)]
fn spec_for(seed: u64, size: u64, density: f64) -> BitmapSpec {
    random_bitmap(seed, size, 65536, density).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirty(runs: &[(u64, u64)]) -> u64 {
        runs.iter().map(|r| r.1).sum()
    }

    fn check_shape(runs: &[(u64, u64)], granules: u64) {
        for w in runs.windows(2) {
            assert!(w[0].0 + w[0].1 < w[1].0, "runs {w:?} touch or overlap");
        }
        for r in runs {
            assert!(r.1 > 0);
        }
        if let Some(last) = runs.last() {
            assert!(last.0 + last.1 <= granules);
        }
    }

    #[test]
    fn density_is_exact_and_runs_are_separate() {
        for (g, d) in [
            (1000u64, 0.5),
            (1000, 0.01),
            (7, 0.5),
            (1, 1.0),
            (64, 0.999),
            (1 << 30, 0.25),
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            let runs = random_runs(&mut rng, g, d);
            assert_eq!(dirty(&runs), (g as f64 * d).round() as u64, "g={g} d={d}");
            check_shape(&runs, g);
            assert!(runs.len() as u64 <= MAX_RUNS);
        }
    }

    #[test]
    fn extremes() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(random_runs(&mut rng, 100, 0.0), vec![]);
        assert_eq!(random_runs(&mut rng, 100, 1.0), vec![(0, 100)]);
        assert_eq!(random_runs(&mut rng, 0, 0.5), vec![]);
    }

    #[test]
    fn a_64_tib_disk_is_bounded() {
        // 2^30 granules of 64 KiB: the run count, not the disk, bounds the work.
        let spec = spec_for(7, 64 << 40, 0.5);
        assert_eq!(spec.extents.len() as u64, MAX_RUNS);
        let total: u64 = spec.extents.iter().map(|e| e.1).sum();
        assert_eq!(total, 32 << 40);
    }

    #[test]
    fn reproducible_by_seed() {
        assert_eq!(spec_for(1, 1 << 30, 0.3), spec_for(1, 1 << 30, 0.3));
        assert_ne!(spec_for(1, 1 << 30, 0.3), spec_for(2, 1 << 30, 0.3));
        // The id is a version 4 UUID drawn from the same generator.
        let id = uuid::Uuid::from_bytes(spec_for(1, 1 << 30, 0.3).id);
        assert_eq!(id.get_version_num(), 4);
    }

    #[test]
    fn composition_parts_are_positive_and_sum_to_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (n, k) in [(10u64, 10u64), (10, 1), (5, 3), (1000, 999)] {
            let parts = composition(&mut rng, n, k);
            assert_eq!(parts.len() as u64, k);
            assert_eq!(parts.iter().sum::<u64>(), n);
            assert!(parts.iter().all(|&p| p >= 1));
        }
    }

    #[test]
    fn option_parsers() {
        let d = parse_data("1M:64K:0xaa").unwrap();
        assert_eq!((d.offset, d.len, d.byte), (1 << 20, 65536, 0xaa));
        assert_eq!(parse_data("0:1:255").unwrap().byte, 255);
        assert!(parse_data("0:1:256").is_err());
        assert!(parse_data("0:1").is_err());
        let b = parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:0+128K,1M+64K").unwrap();
        assert_eq!(b.granularity, 65536);
        assert_eq!(b.extents, vec![(0, 131072), (1 << 20, 65536)]);
        assert_eq!(b.id[..4], [0xe4, 0xf2, 0xee, 0xd0]);
        assert_eq!(
            parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:512:")
                .unwrap()
                .extents,
            vec![]
        );
        assert!(parse_bitmap("nope:64K:").is_err());
        assert!(parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:5").is_err());
        assert_eq!(parse_density("0.25"), Ok(0.25));
        assert!(parse_density("1.5").is_err());
        assert!(parse_density("NaN").is_err());
    }
}
